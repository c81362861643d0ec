//! The cloud's HTTPS API (axum over rustls): enrollment of new gateways and renewal of
//! their certificates. TLS client certificates are optional at the handshake; a handler
//! that needs one (renewal) refuses without it. Every request body is size-limited and
//! every refusal is JSON with a stable code.

use super::enroll::Enrollment;
use crate::enrollment::{ActivateRequest, ApiError, EnrollRequest, RenewRequest, MAX_BODY};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The device id its client certificate proves, if it presented one.
    pub device: Option<String>,
}

/// An API refusal.
pub struct Refusal(pub StatusCode, pub ApiError);

impl Refusal {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal(
            status,
            ApiError {
                error: code.into(),
                message: message.into(),
            },
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

async fn enroll(
    State(e): State<Arc<Enrollment>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let req: EnrollRequest = parse(&body)?;
    let e2 = e.clone();
    let out = tokio::task::spawn_blocking(move || e2.enroll(&req, &peer.addr.to_string()))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "enrollment failed",
            )
        })??;
    Ok(Json(out).into_response())
}

async fn activate(
    State(e): State<Arc<Enrollment>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let req: ActivateRequest = parse(&body)?;
    let out = tokio::task::spawn_blocking(move || e.activate(&req, &peer.addr.to_string()))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "activation failed",
            )
        })??;
    Ok(Json(out).into_response())
}

async fn renew(
    State(e): State<Arc<Enrollment>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let Some(device) = peer.device.clone() else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "certificate_required",
            "renewal needs the current certificate as the TLS client certificate",
        ));
    };
    let req: RenewRequest = parse(&body)?;
    let out = tokio::task::spawn_blocking(move || e.renew(&device, &req, &peer.addr.to_string()))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "renewal failed",
            )
        })??;
    Ok(Json(out).into_response())
}

async fn not_found() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/protocol.md",
    )
}

pub fn router(enrollment: Arc<Enrollment>) -> Router {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/activate", post(activate))
        .route("/v1/renew", post(renew))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(enrollment)
}

/// Serves `app` over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
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
