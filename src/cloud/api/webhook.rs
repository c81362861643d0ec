//! Security events pushed to a tenant's webhook: an admin sets one HTTPS URL per tenant
//! and gets a secret, shown once; every event about the tenant is POSTed there as JSON
//! with `X-Fieldgate-Signature: sha256=HEX` (HMAC-SHA256 of the body with that secret),
//! retried with backoff for about a minute. Plain `http://` targets are refused unless
//! the cloud runs with `--webhook-allow-http` (a lab without certificates).

use super::access::grant;
use super::{blocking, parse, Api, Ctx, Refusal};
use crate::args;
use crate::cloud::iam::access::{Op, Target};
use crate::cloud::iam::audit::SecurityEvent;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks(
    tenant TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, updated_ns INTEGER NOT NULL);";

pub fn routes() -> Router<Arc<Api>> {
    Router::new().route(
        "/v1/tenants/{tenant}/webhook",
        get(show).put(set).delete(remove),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWebhook {
    url: String,
}

#[derive(Serialize)]
struct Webhook {
    url: String,
    /// The signing secret: in the answer to PUT only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn check_url(url: &str, allow_http: bool) -> Result<(), Refusal> {
    let bad = |why: &str| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", why);
    let uri: http::Uri = url.parse().map_err(|_| bad("the URL does not parse"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => return Err(bad("webhooks must be https:// URLs")),
        _ => return Err(bad("webhooks must be https:// URLs")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    Ok(())
}

async fn set(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Webhook>, Refusal> {
    let r: SetWebhook = parse(&body)?;
    check_url(&r.url, api.webhook_allow_http)?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        let secret = crate::enrollment::hex(&rand::random::<[u8; 24]>());
        iam.db()
            .execute(
                "INSERT INTO webhooks(tenant, url, secret, updated_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(tenant) DO UPDATE SET url = excluded.url, secret = excluded.secret,
                     updated_ns = excluded.updated_ns",
                args![g.tenant(), &r.url, &secret, crate::sample::now_ns()],
            )
            .map_err(|e| Refusal::internal(&e.to_string()))?;
        Ok(Json(Webhook {
            url: r.url,
            secret: Some(secret),
        }))
    })
    .await
}

async fn show(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Webhook>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        let url = iam
            .db()
            .query_opt(
                "SELECT url FROM webhooks WHERE tenant = $1",
                args![g.tenant()],
            )
            .and_then(|r| r.map(|r| r.text(0)).transpose())
            .map_err(|e| Refusal::internal(&e.to_string()))?
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "not_found", "no webhook is set"))?;
        Ok(Json(Webhook { url, secret: None }))
    })
    .await
}

async fn remove(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<StatusCode, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        iam.db()
            .execute("DELETE FROM webhooks WHERE tenant = $1", args![g.tenant()])
            .map_err(|e| Refusal::internal(&e.to_string()))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Delivers the security events raised from now on (by the API's decision point and by
/// the ingest's device watch), until `shutdown`.
pub async fn deliver(api: Arc<Api>, shutdown: CancellationToken) {
    let a = api.clone();
    let mut seen: i64 = tokio::task::spawn_blocking(move || {
        a.iam()
            .db()
            .query_opt("SELECT coalesce(max(id), 0) FROM security_events", &[])
            .ok()
            .flatten()
            .and_then(|r| r.int(0).ok())
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
        let a = api.clone();
        let (due, last) = tokio::task::spawn_blocking(move || {
            let iam = a.iam();
            let events = crate::cloud::iam::audit::events_after(iam.db(), seen).unwrap_or_default();
            let last = events.last().map(|e| e.id).unwrap_or(seen);
            let mut due = Vec::new();
            for e in events {
                let hook = iam
                    .db()
                    .query_opt(
                        "SELECT url, secret FROM webhooks WHERE tenant = $1",
                        args![&e.tenant],
                    )
                    .ok()
                    .flatten()
                    .and_then(|r| Some((r.text(0).ok()?, r.text(1).ok()?)));
                if let Some((url, secret)) = hook {
                    due.push((url, secret, e));
                }
            }
            (due, last)
        })
        .await
        .unwrap_or((Vec::new(), seen));
        seen = last;
        for (url, secret, event) in due {
            tokio::spawn(send_with_retries(url, secret, event));
        }
    }
}

async fn send_with_retries(url: String, secret: String, event: SecurityEvent) {
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let signature = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        crate::enrollment::hex(ring::hmac::sign(&key, &body).as_ref())
    };
    for attempt in 0..6u32 {
        match post(&url, &signature, body.clone()).await {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => {
                tracing::warn!(url, status, attempt, "webhook refused the event")
            }
            Err(e) => tracing::warn!(url, error = %e, attempt, "webhook unreachable"),
        }
        tokio::time::sleep(crate::backoff::backoff(
            Duration::from_secs(1),
            Duration::from_secs(30),
            attempt,
        ))
        .await;
    }
    tracing::error!(
        url,
        kind = event.kind,
        "webhook: event given up after 6 attempts"
    );
}

/// One POST; https with the system's roots, or plain http where allowed.
async fn post(url: &str, signature: &str, body: Vec<u8>) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let req = http::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-fieldgate-signature", format!("sha256={signature}"))
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        if https {
            crate::install_crypto_provider();
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            send(hyper_util::rt::TokioIo::new(stream), req).await
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), req).await
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "no answer within 20 s".to_string())?
}

async fn send<T>(io: T, req: http::Request<Full<bytes::Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(status)
}
