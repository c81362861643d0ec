//! The project's one place that builds rustls configurations from PEM files.

use rustls::{
    pki_types::{
        pem::{self, PemObject},
        CertificateDer, PrivateKeyDer,
    },
    ClientConfig, RootCertStore, ServerConfig,
};
use std::{path::Path, sync::Arc};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCert { path: String },
    #[error("{path}: no PEM private key found (expected PKCS#8, SEC1 or RSA)")]
    NoKey { path: String },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// Reads all certificates of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.display().to_string(),
        },
        e => TlsError::Invalid {
            path: path.display().to_string(),
            why: e.to_string(),
        },
    })
}

/// A root store holding the certificates of one CA file.
pub fn root_store(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| TlsError::Invalid {
            path: ca.display().to_string(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A TLS 1.2/1.3 client configuration that trusts only `ca` and presents `cert` and `key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    crate::install_crypto_provider();
    let cfg = ClientConfig::builder()
        .with_root_certificates(root_store(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(Arc::new(cfg))
}

/// A server configuration that requires a client certificate issued by `client_ca`.
pub fn mtls_server_config(
    client_ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(client_ca, cert, key, false)
}

/// A server configuration that verifies client certificates of `client_ca` when they
/// are presented; with `optional`, clients without one are let in too (the handlers
/// then decide: enrollment needs none, renewal does).
pub fn server_config(
    client_ca: &Path,
    cert: &Path,
    key: &Path,
    optional: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    crate::install_crypto_provider();
    let builder = rustls::server::WebPkiClientVerifier::builder(Arc::new(root_store(client_ca)?));
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder.build().map_err(|e| TlsError::Invalid {
        path: client_ca.display().to_string(),
        why: e.to_string(),
    })?;
    let cfg = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(Arc::new(cfg))
}
