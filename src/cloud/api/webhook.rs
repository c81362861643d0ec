//! Security events pushed to a tenant's webhook: an admin sets one HTTPS URL per tenant
//! and gets a secret, shown once; every event about the tenant is POSTed there as JSON
//! with `X-Fieldgate-Signature: sha256=HEX` (HMAC-SHA256 of the body with that secret),
//! retried with backoff for about a minute. Plain `http://` targets are refused unless
//! the cloud runs with `--webhook-allow-http` (a lab without certificates).
//!
//! A webhook is the cloud connecting where a tenant says: it reaches public addresses
//! only. A name is resolved when the webhook is set and again at every delivery, and
//! the connection goes to an address that was checked (no second lookup a DNS answer
//! could change in between); loopback, private, link-local (cloud metadata included),
//! shared and reserved addresses are refused unless the operator allowed their network
//! (`--webhook-allow-net`). Redirects are never followed.

use super::access::grant;
use super::{blocking, parse, Api, Ctx, Refusal};
use crate::args;
use crate::cloud::code::Code;
use crate::cloud::iam::access::{Op, Target};
use crate::cloud::iam::audit::SecurityEvent;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

/// Where tenants' webhooks may point: the operator's settings.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Plain http:// targets (a lab without certificates).
    pub allow_http: bool,
    /// Networks reachable although not public.
    pub allow_nets: Vec<ipnet::IpNet>,
}

/// Whether a webhook may connect to `ip`: a public unicast address, or one in a network
/// the operator allowed.
pub fn reachable(ip: IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    allowed.iter().any(|n| n.contains(&ip)) || public(ip)
}

fn public(ip: IpAddr) -> bool {
    let in_net = |net: &str| {
        net.parse::<ipnet::IpNet>()
            .is_ok_and(|n: ipnet::IpNet| n.contains(&ip))
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || [
                    "0.0.0.0/8",
                    "100.64.0.0/10",
                    "192.0.0.0/24",
                    "198.18.0.0/15",
                    "240.0.0.0/4",
                ]
                .into_iter()
                .any(in_net))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let o = v6.octets();
            if in_net("64:ff9b::/96") {
                return public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            // 6to4 carries an IPv4 address in its prefix.
            if in_net("2002::/16") {
                return public(IpAddr::V4(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5])));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || [
                    "fc00::/7",
                    "fe80::/10",
                    "fec0::/10",
                    "2001:db8::/32",
                    "64:ff9b:1::/48",
                    "::/96",
                    "100::/64",
                ]
                .into_iter()
                .any(in_net))
        }
    }
}

/// The first address of `host:port` a webhook may connect to, resolved now.
async fn resolve(host: &str, port: u16, allowed: &[ipnet::IpNet]) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| format!("{host} did not resolve within 10 s"))?
    .map_err(|e| format!("{host} does not resolve: {e}"))?
    .collect();
    addrs
        .iter()
        .copied()
        .find(|a| reachable(a.ip(), allowed))
        .ok_or_else(|| match addrs.first() {
            Some(a) => format!(
                "{host} is {}, which webhooks may not reach (loopback, private, link-local or reserved; the operator may allow a network with --webhook-allow-net)",
                a.ip()
            ),
            None => format!("{host} resolves to no address"),
        })
}

/// The host (without brackets) and port of a webhook URL.
fn host_port(uri: &http::Uri) -> Option<(String, u16)> {
    let host = uri.host()?.trim_matches(['[', ']']).to_string();
    let https = uri.scheme_str() == Some("https");
    Some((host, uri.port_u16().unwrap_or(if https { 443 } else { 80 })))
}

fn bad_url(why: &str) -> Refusal {
    Refusal::new(Code::BadRequest, why)
}

fn check_url(url: &str, allow_http: bool) -> Result<(), Refusal> {
    let bad = bad_url;
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
    check_url(&r.url, api.webhook.allow_http)?;
    let uri: http::Uri = r
        .url
        .parse()
        .map_err(|_| bad_url("the URL does not parse"))?;
    let (host, port) = host_port(&uri).ok_or_else(|| bad_url("the URL has no host"))?;
    // Who asks is decided before the cloud resolves anything for them.
    let (a, c, t) = (api.clone(), ctx.clone(), tenant.clone());
    blocking(move || {
        grant(&mut a.iam(), &c, Op::ReadAudit, Target::tenant(&t))?;
        Ok(())
    })
    .await?;
    resolve(&host, port, &api.webhook.allow_nets)
        .await
        .map_err(|why| bad_url(&why))?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        let secret = crate::hex::encode(&rand::random::<[u8; 24]>());
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
            .ok_or_else(|| Refusal::new(Code::NotFound, "no webhook is set"))?;
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
            tokio::spawn(send_with_retries(
                url,
                secret,
                event,
                api.webhook.allow_nets.clone(),
            ));
        }
    }
}

async fn send_with_retries(
    url: String,
    secret: String,
    event: SecurityEvent,
    allowed: Vec<ipnet::IpNet>,
) {
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let signature = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        crate::hex::encode(ring::hmac::sign(&key, &body).as_ref())
    };
    for attempt in 0..6u32 {
        match post(&url, &signature, body.clone(), &allowed).await {
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

/// The system's CA roots for webhooks, loaded once.
fn system_tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        crate::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    })
    .clone()
}

/// One POST to an address checked now; https with the system's roots, or plain http
/// where allowed.
async fn post(
    url: &str,
    signature: &str,
    body: Vec<u8>,
    allowed: &[ipnet::IpNet],
) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let (host, port) = host_port(&uri).ok_or("no host")?;
    let https = uri.scheme_str() == Some("https");
    let addr = resolve(&host, port, allowed).await?;
    let signature = format!("sha256={signature}");
    let (status, _) = crate::https::request(
        &crate::https::Target {
            host: &host,
            port,
            addr: Some(addr),
            tls: https.then(system_tls),
        },
        crate::https::Request {
            method: http::Method::POST,
            path: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            headers: &[("x-fieldgate-signature", &signature)],
            body: Some(body),
            limit: 64 * 1024,
            timeout: Duration::from_secs(10),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!reachable(ip.parse().unwrap(), &[]), "{ip}");
        }
        for ip in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "::ffff:93.184.215.14",
        ] {
            assert!(reachable(ip.parse().unwrap(), &[]), "{ip}");
        }
        let lab: Vec<ipnet::IpNet> = vec!["10.9.0.0/16".parse().unwrap()];
        assert!(reachable("10.9.1.1".parse().unwrap(), &lab));
        assert!(!reachable("10.8.1.1".parse().unwrap(), &lab));
    }

    /// Delivery checks again (a name that resolved elsewhere when the webhook was set,
    /// then to loopback: DNS rebinding): nothing connects to a listener on loopback.
    #[tokio::test]
    async fn delivery_never_connects_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for url in [
            format!("http://localhost:{port}/"),
            format!("http://127.0.0.1:{port}/"),
        ] {
            let e = post(&url, "sig", b"{}".to_vec(), &[]).await.unwrap_err();
            assert!(e.contains("webhooks may not reach"), "{e}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }
}
