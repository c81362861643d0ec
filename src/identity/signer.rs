//! Adapters from [`Key`] to what rustls (client authentication in the handshake) and
//! rcgen (CSRs) expect, so that both sign wherever the key lives.

use super::Key;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// The key as rustls sees it: ECDSA P-256 with SHA-256 only.
#[derive(Clone)]
pub struct TlsKey(pub Arc<dyn Key>);

impl std::fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsKey({} {})", self.0.backend(), self.0.location())
    }
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for TlsKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// A rustls client configuration that trusts `roots` and authenticates with `chain` and
/// a key that may live in the TPM.
pub fn client_config(
    roots: rustls::RootCertStore,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Arc<dyn Key>,
) -> Arc<rustls::ClientConfig> {
    crate::install_crypto_provider();
    let certified = rustls::sign::CertifiedKey::new(chain, Arc::new(TlsKey(key)));
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))),
    )
}

/// The key as rcgen sees it, for CSRs.
pub struct RcgenKey(pub Arc<dyn Key>);

impl rcgen::RemoteKeyPair for RcgenKey {
    fn public_key(&self) -> &[u8] {
        self.0.public_point()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}
