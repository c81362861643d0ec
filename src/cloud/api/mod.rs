//! The cloud's HTTPS API (axum over rustls), JSON under `/v1`, described by the OpenAPI
//! document it serves at `/v1/openapi.json`: enrollment and renewal for gateways
//! (`enrollment`), sessions, tenants, users, devices and keys for people and programs
//! (`access`), and datastreams, gaps and the audit log (`data`).
//!
//! TLS client certificates are optional at the handshake; a handler that needs one
//! (renewal) refuses without it. Every request body is size-limited, and every refusal,
//! the framework's own included, is JSON with a stable code.

mod access;
mod commands;
mod data;
mod embed;
mod enrollment;
mod hashing;
mod images;
mod rollouts;
pub mod webhook;

use super::code::{Code, Refused};
use super::enroll::Enrollment;
use super::iam::access::{Caller, Iam, Origin};
use super::store::Store;
use crate::enrollment::{ApiError, MAX_BODY};
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The device id its client certificate proves, if it presented one.
    pub device: Option<crate::ids::DeviceId>,
}

/// The API's connections to the cloud's database, one per part that must not wait for
/// another.
pub struct Connections {
    /// Identity and access.
    pub iam: crate::cloud::sql::Db,
    /// Reads of samples and gaps.
    pub reads: Store,
    pub commands: crate::cloud::sql::Db,
    pub releases: crate::cloud::sql::Db,
    pub rollouts: crate::cloud::sql::Db,
}

/// What the API works on.
pub struct Api {
    pub enrollment: Arc<Enrollment>,
    /// Identity and access, on its own connection to the cloud's database.
    pub iam: Mutex<Iam>,
    /// Reads of samples and gaps, on another connection (WAL: readers do not wait for
    /// the ingest).
    pub reads: Mutex<Store>,
    /// Where tenants' webhooks may point.
    pub webhook: webhook::Policy,
    /// Password hashing and checks: off the IAM lock, a few at a time.
    pub passwords: hashing::Passwords,
    /// Commands to gateways, on their own connection (an ingest sends them).
    pub downlink: crate::cloud::downlink::Downlink,
    /// Releases tenants publish, and their images.
    pub releases: crate::cloud::releases::Releases,
    /// Rollouts of releases, on their own connection (an ingest moves them on).
    pub rollouts: crate::cloud::rollouts::Rollouts,
}

impl Api {
    /// Over its connections to the cloud's database; makes the tables if they are
    /// missing.
    pub fn open(
        enrollment: Arc<Enrollment>,
        c: Connections,
        webhook: webhook::Policy,
        data_dir: &std::path::Path,
    ) -> Result<Api, crate::cloud::CloudError> {
        let db = c.iam;
        let anchor = Arc::new(crate::cloud::iam::anchor::Anchor::open(data_dir, &db)?);
        let rollouts = crate::cloud::rollouts::Rollouts::with(c.rollouts, anchor.clone());
        let downlink = crate::cloud::downlink::Downlink::with(c.commands);
        let releases = crate::cloud::releases::Releases::with(c.releases, data_dir);
        let reads = c.reads;
        let iam = Iam::with(db, anchor)?;
        Ok(Api {
            enrollment,
            iam: Mutex::new(iam),
            reads: Mutex::new(reads),
            webhook,
            passwords: Default::default(),
            downlink,
            releases,
            rollouts,
        })
    }

    fn iam(&self) -> std::sync::MutexGuard<'_, Iam> {
        self.iam.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, Store> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An API refusal: the one place where a `Code` becomes an HTTP status and a JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn internal(what: &str) -> Refusal {
        Refusal::new(Code::Internal, what)
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Refusal {
        Refusal::new(r.code, r.message)
    }
}

impl From<super::store::StoreError> for Refusal {
    fn from(e: super::store::StoreError) -> Refusal {
        Refusal::internal(&e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // What failed inside (a database's words, a path) is for the log, not the caller.
        let message = if self.code == Code::Internal {
            tracing::error!(message = %self.message, "API request failed");
            "the cloud could not complete the request; its log says why".to_string()
        } else {
            self.message
        };
        let body = ApiError {
            error: self.code.as_str().into(),
            message,
        };
        (status, Json(body)).into_response()
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let bad = |why: String| Refusal::new(Code::BadRequest, why);
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not the expected JSON: {e}")))?;
    if has_nul(&value) {
        return Err(bad("text in the body may not contain NUL characters".into()));
    }
    serde_json::from_value(value)
        .map_err(|e| bad(format!("the body is not the expected JSON: {e}")))
}

/// Whether any string (or key) in `v` holds a NUL character, which no name, password or
/// URL has and PostgreSQL cannot store.
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Refuses a request whose path or query holds an encoded NUL (`%00`), before any
/// handler takes it for a name.
async fn no_nul(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let encoded = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("");
    if encoded.contains("%00") {
        return Refusal::new(
            Code::BadRequest,
            "the path or query may not contain NUL characters (%00)",
        )
        .into_response();
    }
    next.run(req).await
}

/// What every request brings: the peer, its bearer token and its web origin.
#[derive(Clone)]
pub struct Ctx {
    pub peer: Peer,
    pub bearer: Option<String>,
    pub origin: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, Refusal> {
        let peer = parts
            .extensions
            .get::<Peer>()
            .cloned()
            .ok_or_else(|| Refusal::internal("no peer"))?;
        let text = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let bearer = match text(header::AUTHORIZATION) {
            None => None,
            Some(v) => match v.strip_prefix("Bearer ") {
                Some(t) => Some(t.trim().to_string()),
                None => {
                    return Err(Refusal::new(
                        Code::Unauthenticated,
                        "the Authorization header must be `Bearer TOKEN`",
                    ))
                }
            },
        };
        Ok(Ctx {
            peer,
            bearer,
            origin: text(header::ORIGIN),
        })
    }
}

impl Ctx {
    fn from(&self) -> Origin<'_> {
        Origin {
            source: self.peer.addr.ip(),
            web: self.origin.as_deref(),
            now_ns: crate::sample::now_ns(),
        }
    }

    /// Who is calling (a wrong token is refused and audited).
    fn caller(&self, iam: &mut Iam) -> Result<Caller, Refusal> {
        Ok(iam.authenticate(
            self.bearer.as_deref(),
            self.peer.device.as_deref(),
            self.from(),
        )?)
    }
}

/// Runs `f` on a blocking thread (SQLite, argon2).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Refusal::internal("the request's worker failed"))?
}

async fn not_found() -> Refusal {
    Refusal::new(Code::NotFound, "no such endpoint; see GET /v1/openapi.json")
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// Turns the framework's own plain-text refusals (a bad path or query, a wrong method,
/// an oversize body) into the API's JSON with a stable code.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    // The framework's own refusals (its routing and extractors): every other 4xx it
    // makes is a request it could not read.
    let code = match status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        s if s.is_server_error() => Code::Internal,
        _ => Code::BadRequest,
    };
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut out = Refusal::new(code, String::from_utf8_lossy(&text).trim()).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// Cross-origin use from web pages. Credentials here are bearer tokens, never cookies, so
/// a page can only use a key it was given; the key's own origin list decides (a key with
/// origins is refused from any other). Preflights are answered for GET with an
/// `Authorization` header; answers carry the asking origin back.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    match origin {
        Some(o) if preflight => (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, o),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    axum::http::HeaderValue::from_static("GET"),
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    axum::http::HeaderValue::from_static("authorization"),
                ),
                (
                    header::ACCESS_CONTROL_MAX_AGE,
                    axum::http::HeaderValue::from_static("600"),
                ),
                (header::VARY, axum::http::HeaderValue::from_static("Origin")),
            ],
        )
            .into_response(),
        Some(o) => {
            let mut res = next.run(req).await;
            res.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            res.headers_mut()
                .append(header::VARY, axum::http::HeaderValue::from_static("Origin"));
            res
        }
        None => next.run(req).await,
    }
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .merge(enrollment::routes())
        .merge(access::routes())
        .merge(data::routes())
        .merge(commands::routes())
        .merge(images::routes())
        .merge(rollouts::routes())
        .merge(embed::routes())
        .merge(webhook::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_nul))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(cors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves `app` over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut pause = crate::backoff::AcceptPause::default();
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { pause.accepted(); x }
                Err(e) => { pause.failed("API", &e).await; continue }
            },
            _ = shutdown.cancelled() => return,
        };
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let device = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::ingest::device_id_of(c.as_ref()));
            let svc = app.layer(Extension(Peer { addr, device }));
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
