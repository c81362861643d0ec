//! The gateway's side of enrollment and renewal: a CSR signed by its key, sent over
//! HTTPS to the cloud (whose certificate must chain to the configured CA), and the
//! certificate that comes back written atomically next to the old one.

use super::Key;
use crate::enrollment::{
    ActivateRequest, ApiError, CertResponse, Challenge, EnrollAnswer, EnrollRequest, RenewRequest,
    TpmEvidence,
};
use crate::hex::{decode as unhex, encode as hex};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("`{0}` is not an https://host[:port] URL")]
    Url(String),
    #[error("cannot reach {url}: {why}")]
    Connect { url: String, why: String },
    #[error("the cloud refused ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("{0}")]
    Local(String),
}

/// A client certificate chain and the key that signs for it.
pub type ClientAuth = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    Arc<dyn Key>,
);

/// POSTs JSON to `url` + `path`; the server must be certified by `ca`; with `client`,
/// the TLS handshake is authenticated by that chain and key (renewal).
async fn post(
    url: &str,
    path: &str,
    ca: &Path,
    client: Option<ClientAuth>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), EnrollError> {
    https_request(http::Method::POST, url, path, ca, client, &[], Some(body)).await
}

/// One HTTPS request to `url` + `path` (which may carry a query) with `headers` and, if
/// given, a JSON `body`; the server must be certified by `ca`; with `client`, the TLS
/// handshake is authenticated by that chain and key. Returns the status and the body
/// (at most 1 MiB).
pub async fn https_request(
    method: http::Method,
    url: &str,
    path: &str,
    ca: &Path,
    client: Option<ClientAuth>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), EnrollError> {
    let uri: http::Uri = url.parse().map_err(|_| EnrollError::Url(url.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(EnrollError::Url(url.into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| EnrollError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let roots = crate::tls::root_store(ca).map_err(|e| EnrollError::Local(e.to_string()))?;
    let tls = match client {
        Some((chain, key)) => super::signer::client_config(roots, chain, key),
        None => {
            crate::install_crypto_provider();
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
    };
    let target = format!("{}{path}", url.trim_end_matches('/'))
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.to_string()))
        .unwrap_or(path.to_string());
    crate::https::request(
        &crate::https::Target {
            host: &host,
            port,
            addr: None,
            tls: Some(tls),
        },
        crate::https::Request {
            method,
            path: &target,
            headers,
            body,
            limit: 1 << 20,
            timeout: std::time::Duration::from_secs(30),
        },
    )
    .await
    .map_err(|e| match e {
        crate::https::HttpError::Request(why) => EnrollError::Url(format!("{url}: {why}")),
        e => EnrollError::Connect {
            url: url.into(),
            why: e.to_string(),
        },
    })
}

fn answer<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, EnrollError> {
    if status == 200 {
        return serde_json::from_slice(body).map_err(|e| {
            EnrollError::Local(format!("the cloud's answer is not what was expected: {e}"))
        });
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => Err(EnrollError::Refused {
            code: e.error,
            message: e.message,
        }),
        Err(_) => Err(EnrollError::Refused {
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        }),
    }
}

/// Writes the new certificate (leaf, then the CA) via a temporary file and a rename,
/// so the old one stays whole until the new one is complete.
pub fn store_certificate(path: &Path, got: &CertResponse) -> Result<(), EnrollError> {
    let leaf = got.certificate.trim_end();
    let text = format!("{leaf}\n{}\n", got.ca.trim_end());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| EnrollError::Local(format!("{}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("crt.new");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| EnrollError::Local(format!("writing {}: {e}", path.display())))
}

/// Sends an enrollment request as it is (tests use it for forged ones).
pub async fn post_enroll(
    url: &str,
    ca: &Path,
    req: &EnrollRequest,
) -> Result<EnrollAnswer, EnrollError> {
    let body = serde_json::to_vec(req).map_err(|e| EnrollError::Local(e.to_string()))?;
    let (status, body) = post(url, "/v1/enroll", ca, None, body).await?;
    answer(status, &body)
}

/// Sends the credential of a challenge (tests use it for forged ones).
pub async fn post_activate(
    url: &str,
    ca: &Path,
    req: &ActivateRequest,
) -> Result<CertResponse, EnrollError> {
    let body = serde_json::to_vec(req).map_err(|e| EnrollError::Local(e.to_string()))?;
    let (status, body) = post(url, "/v1/enroll/activate", ca, None, body).await?;
    answer(status, &body)
}

/// Answers a TPM challenge with the TPM behind `key`.
pub async fn answer_challenge(
    key: &dyn Key,
    url: &str,
    ca: &Path,
    ch: &Challenge,
) -> Result<CertResponse, EnrollError> {
    let (Some(blob), Some(secret)) = (unhex(&ch.credential_blob), unhex(&ch.encrypted_secret))
    else {
        return Err(EnrollError::Local(
            "the cloud's challenge is not hex".into(),
        ));
    };
    let credential = super::activate_credential(key, blob, secret)
        .map_err(|e| EnrollError::Local(e.to_string()))?;
    post_activate(
        url,
        ca,
        &ActivateRequest {
            challenge: ch.challenge.clone(),
            credential: hex(&credential),
        },
    )
    .await
}

/// What a TPM key can show about itself: its EK and its public area.
pub fn evidence(key: &dyn Key) -> Result<Option<TpmEvidence>, EnrollError> {
    let shown = super::tpm_evidence(key).map_err(|e| EnrollError::Local(e.to_string()))?;
    Ok(shown.map(|(ek, key_public)| TpmEvidence {
        ek: hex(&ek),
        key_public: hex(&key_public),
    }))
}

/// First enrollment: CSR plus one-time token; the certificate is written to `cert`.
pub async fn enroll(
    device_id: &str,
    key: Arc<dyn Key>,
    url: &str,
    token: &str,
    ca: &Path,
    cert: &Path,
) -> Result<(), EnrollError> {
    let csr =
        super::csr_pem(key.clone(), device_id).map_err(|e| EnrollError::Local(e.to_string()))?;
    let req = EnrollRequest {
        device_id: device_id.into(),
        csr,
        token: token.trim().into(),
        tpm: evidence(key.as_ref())?,
    };
    let got = match post_enroll(url, ca, &req).await? {
        EnrollAnswer::Certificate(c) => c,
        EnrollAnswer::Challenge(ch) => answer_challenge(key.as_ref(), url, ca, &ch).await?,
    };
    store_certificate(cert, &got)
}

/// Renewal over mutual TLS with the current certificate; the new one replaces it.
pub async fn renew(
    device_id: &str,
    key: Arc<dyn Key>,
    url: &str,
    ca: &Path,
    cert: &Path,
) -> Result<(), EnrollError> {
    renew_with(device_id, key.clone(), key, url, ca, cert).await
}

/// Renewal for `new_key` (a rotation) authenticated by the current `key`.
pub async fn renew_with(
    device_id: &str,
    key: Arc<dyn Key>,
    new_key: Arc<dyn Key>,
    url: &str,
    ca: &Path,
    cert: &Path,
) -> Result<(), EnrollError> {
    let chain = crate::tls::load_certs(cert).map_err(|e| EnrollError::Local(e.to_string()))?;
    let csr = super::csr_pem(new_key.clone(), device_id)
        .map_err(|e| EnrollError::Local(e.to_string()))?;
    let req = RenewRequest {
        csr,
        tpm: evidence(new_key.as_ref())?,
    };
    let body = serde_json::to_vec(&req).map_err(|e| EnrollError::Local(e.to_string()))?;
    let (status, body) = post(url, "/v1/renew", ca, Some((chain, key)), body).await?;
    // A new key of a device that must prove its TPM is certified by credential
    // activation, as at enrollment.
    let got = match answer(status, &body)? {
        EnrollAnswer::Certificate(c) => c,
        EnrollAnswer::Challenge(ch) => answer_challenge(new_key.as_ref(), url, ca, &ch).await?,
    };
    store_certificate(cert, &got)
}

/// When the certificate at `path` should be renewed (two thirds into its lifetime) and
/// when it expires, as Unix seconds.
pub fn renewal_due(path: &Path) -> Result<(i64, i64), EnrollError> {
    let certs = crate::tls::load_certs(path).map_err(|e| EnrollError::Local(e.to_string()))?;
    let (_, c) = x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| {
        EnrollError::Local(format!("{}: not a valid certificate: {e}", path.display()))
    })?;
    let (from, to) = (
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    );
    Ok((from + (to - from) * 2 / 3, to))
}
