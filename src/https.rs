//! The project's one HTTP client: one request on a fresh connection (TLS by the caller's
//! rustls configuration, or plain where a caller allows it), with time limits on each
//! step and a bounded answer, or a body read as it arrives. The gateway's enrollment,
//! renewal and update downloads and the cloud's webhooks use it.

use http_body_util::{BodyExt, Full, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The host name (for the TLS name and the Host header) and port.
    pub host: &'a str,
    pub port: u16,
    /// Connect to this address instead of resolving `host` (an address checked before).
    pub addr: Option<SocketAddr>,
    /// TLS with this configuration; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: http::Method,
    /// The path and query.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// The most of the answer's body read.
    pub limit: usize,
    /// For the connection (TCP and TLS) and for the answer, each.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Exchange(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request: {0}")]
    Request(String),
}

/// An answer whose body is read as it arrives (a download): the caller reads frames
/// with its own time limits. The connection lives as long as this.
pub struct Streaming {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: hyper::body::Incoming,
    _driver: Driver,
}

/// The connection's task, stopped with the answer.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `req` to `to`; the status and the body (at most `req.limit` bytes).
pub async fn request(to: &Target<'_>, req: Request<'_>) -> Result<(u16, Vec<u8>), HttpError> {
    let (limit, timeout) = (req.limit, req.timeout);
    let answer = async {
        let s = open(to, req).await?;
        let body = Limited::new(s.body, limit)
            .collect()
            .await
            .map_err(|e| HttpError::Exchange(format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok((s.status, body))
    };
    // Connecting, the handshake and the answer each have `timeout` (as before).
    tokio::time::timeout(timeout * 3, answer)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

/// Sends `req` to `to` and returns once the answer's head is in (each step within
/// `req.timeout`); the body is the caller's to read.
pub async fn open(to: &Target<'_>, req: Request<'_>) -> Result<Streaming, HttpError> {
    let tcp = match to.addr {
        Some(addr) => tokio::time::timeout(req.timeout, tokio::net::TcpStream::connect(addr)).await,
        None => {
            tokio::time::timeout(
                req.timeout,
                tokio::net::TcpStream::connect((to.host, to.port)),
            )
            .await
        }
    }
    .map_err(|_| HttpError::Connect(format!("timed out after {:?}", req.timeout)))?
    .map_err(|e| HttpError::Connect(e.to_string()))?;
    let mut builder = http::Request::builder()
        .method(req.method)
        .uri(req.path)
        .header(http::header::HOST, format!("{}:{}", to.host, to.port));
    if req.body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in req.headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(bytes::Bytes::from(req.body.unwrap_or_default())))
        .map_err(|e| HttpError::Request(e.to_string()))?;
    match &to.tls {
        Some(tls) => {
            crate::install_crypto_provider();
            let name = rustls::pki_types::ServerName::try_from(to.host.to_string())
                .map_err(|e| HttpError::Request(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            let stream = tokio::time::timeout(req.timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| HttpError::Tls("handshake timed out".into()))?
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            exchange(hyper_util::rt::TokioIo::new(stream), request, req.timeout).await
        }
        None => exchange(hyper_util::rt::TokioIo::new(tcp), request, req.timeout).await,
    }
}

async fn exchange<T>(
    io: T,
    req: http::Request<Full<bytes::Bytes>>,
    timeout: Duration,
) -> Result<Streaming, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let head = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| HttpError::Timeout(timeout));
    let resp = match head {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            driver.abort();
            // hyper's own message is terse; the cause (often a TLS alert) says more.
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            return Err(HttpError::Exchange(format!("{e}{cause}")));
        }
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let (parts, body) = resp.into_parts();
    Ok(Streaming {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        _driver: Driver(driver),
    })
}
