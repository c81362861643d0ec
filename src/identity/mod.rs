//! The gateway's identity: an ECC P-256 signing key behind one interface, held in the
//! TPM (`tpm`) or, on development hosts only, in a PEM file (`file`); the certificate
//! that names it; CSRs signed by it; and the rustls signer that makes the TLS handshake
//! sign inside the TPM.

pub mod enroll;
pub mod file;
pub mod renewal;
pub mod signer;
#[cfg(feature = "tpm")]
pub mod tpm;

pub use crate::config::identity::{default_handle, default_tcti, Backend, IdentityConfig};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("TPM ({tcti}): {message}")]
    Tpm { tcti: String, message: String },
    #[error("key file {path}: {message}")]
    File { path: String, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("key rotation needs the TPM backend{0}")]
    NoTpm(&'static str),
    #[error("renewal with the new key: {0}")]
    Renewal(#[from] enroll::EnrollError),
}

/// The gateway's key, opened on first use (a TPM key is made then, the first time) and
/// shared by everything that signs: the uplink's handshakes, renewals, CSRs.
pub struct Holder {
    pub config: IdentityConfig,
    pub key_file: Option<std::path::PathBuf>,
    /// The certificate, which names the current key when keys rotate.
    pub cert: Option<std::path::PathBuf>,
    slot: std::sync::Mutex<Option<Arc<dyn Key>>>,
}

impl Holder {
    pub fn new(config: IdentityConfig, key_file: Option<std::path::PathBuf>) -> Holder {
        Holder {
            config,
            key_file,
            cert: None,
            slot: std::sync::Mutex::new(None),
        }
    }

    pub fn with_cert(mut self, cert: std::path::PathBuf) -> Holder {
        self.cert = Some(cert);
        self
    }

    /// Renewal with a new key: made in the other slot, certified (the request goes over
    /// mutual TLS with the current key), then put in use; the old key is removed last.
    pub async fn rotate(
        &self,
        device_id: &str,
        url: &str,
        ca: &std::path::Path,
        cert: &std::path::Path,
    ) -> Result<(), IdentityError> {
        #[cfg(not(feature = "tpm"))]
        return {
            let _ = (device_id, url, ca, cert);
            Err(IdentityError::NoTpm(", and this build has no TPM support"))
        };
        #[cfg(feature = "tpm")]
        self.rotate_tpm(device_id, url, ca, cert).await
    }

    #[cfg(feature = "tpm")]
    async fn rotate_tpm(
        &self,
        device_id: &str,
        url: &str,
        ca: &std::path::Path,
        cert: &std::path::Path,
    ) -> Result<(), IdentityError> {
        let current = self.key()?;
        let Some(old) = current.tpm() else {
            return Err(IdentityError::NoTpm(""));
        };
        let next_handle = if old.handle() == self.config.handle {
            self.config.handle + 1
        } else {
            self.config.handle
        };
        let old_handle = old.handle();
        let cfg = IdentityConfig {
            handle: next_handle,
            ..self.config.clone()
        };
        let fresh: Arc<dyn Key> = Arc::new(tpm::TpmKey::open_mode(&cfg, tpm::Mode::Fresh)?);
        enroll::renew_with(device_id, current.clone(), fresh.clone(), url, ca, cert).await?;
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        tracing::info!(old = format!("{old_handle:#x}"), new = format!("{next_handle:#x}"), fingerprint = %fingerprint(fresh.as_ref()), "key rotated");
        if let Some(t) = current.tpm() {
            if let Err(e) = t.evict() {
                tracing::warn!(error = %e, "could not remove the old key; it is replaced at the next rotation");
            }
        }
        Ok(())
    }

    pub fn key(&self) -> Result<Arc<dyn Key>, IdentityError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = open_for(
            &self.config,
            self.key_file.as_deref(),
            self.cert.as_deref(),
            true,
        )?;
        tracing::info!(backend = %k.backend(), key = %k.location(), fingerprint = %fingerprint(k.as_ref()), "identity key ready");
        *slot = Some(k.clone());
        Ok(k)
    }
}

/// An ECC P-256 signing key. Signatures are ECDSA over SHA-256, DER-encoded.
pub trait Key: Send + Sync {
    /// The uncompressed public point (0x04 || x || y).
    fn public_point(&self) -> &[u8];
    /// Signs `message` (hashed with SHA-256 here, signed where the key lives).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError>;
    /// `tpm` or `file`.
    fn backend(&self) -> Backend;
    /// Where the key lives, for people (`TPM swtpm:… handle 0x81000f47`, a file path).
    fn location(&self) -> String;
    /// The TPM behind the key, for enrollment with TPM proof.
    #[cfg(feature = "tpm")]
    fn tpm(&self) -> Option<&tpm::TpmKey> {
        None
    }
}

/// Recovers a credential the cloud made for the TPM behind `key` (enrollment with TPM
/// proof, TPM2_ActivateCredential).
#[cfg(feature = "tpm")]
pub fn activate_credential(
    key: &dyn Key,
    blob: Vec<u8>,
    secret: Vec<u8>,
) -> Result<Vec<u8>, IdentityError> {
    key.tpm()
        .ok_or_else(|| IdentityError::Tpm {
            tcti: key.location(),
            message: "the cloud asks for TPM proof, but this key is not in a TPM".into(),
        })?
        .activate_credential(blob, secret)
}

#[cfg(not(feature = "tpm"))]
pub fn activate_credential(
    key: &dyn Key,
    _blob: Vec<u8>,
    _secret: Vec<u8>,
) -> Result<Vec<u8>, IdentityError> {
    Err(IdentityError::Tpm {
        tcti: key.location(),
        message: "the cloud asks for TPM proof, and this build has no TPM support".into(),
    })
}

/// The EK's point and the key's public area (TPMT_PUBLIC).
pub type Evidence = (Vec<u8>, Vec<u8>);

/// What a key in a TPM shows of itself for enrollment; None for a key outside a TPM.
#[cfg(feature = "tpm")]
pub fn tpm_evidence(key: &dyn Key) -> Result<Option<Evidence>, IdentityError> {
    match key.tpm() {
        Some(t) => Ok(Some((t.ek_point()?, t.key_public()?))),
        None => Ok(None),
    }
}

#[cfg(not(feature = "tpm"))]
pub fn tpm_evidence(_key: &dyn Key) -> Result<Option<Evidence>, IdentityError> {
    Ok(None)
}

/// The SubjectPublicKeyInfo (DER) of a P-256 public point.
pub fn spki_der(point: &[u8]) -> Vec<u8> {
    crate::der::p256_spki(point)
}

/// SHA-256 of the SubjectPublicKeyInfo, as hex: the key's fingerprint.
pub fn fingerprint(key: &dyn Key) -> String {
    use sha2::Digest;
    crate::hex::encode(&sha2::Sha256::digest(spki_der(key.public_point())))
}

/// Opens the configured key; with `create`, a TPM key that does not exist yet is made.
pub fn open(
    cfg: &IdentityConfig,
    key_file: Option<&std::path::Path>,
    create: bool,
) -> Result<Arc<dyn Key>, IdentityError> {
    open_for(cfg, key_file, None, create)
}

/// With key rotation the TPM key is in one of two slots (`handle`, `handle + 1`): the
/// one the certificate at `cert` names. Without a certificate, or without rotation, the
/// key is at `handle`.
pub fn open_for(
    cfg: &IdentityConfig,
    key_file: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    create: bool,
) -> Result<Arc<dyn Key>, IdentityError> {
    match cfg.backend {
        Backend::Tpm => open_tpm(cfg, cert, create),
        Backend::File => {
            let path = key_file.ok_or_else(|| IdentityError::File {
                path: "(none)".into(),
                message: "the file backend needs `uplink.key`".into(),
            })?;
            Ok(Arc::new(file::FileKey::load(path)?))
        }
    }
}

#[cfg(feature = "tpm")]
fn open_tpm(
    cfg: &IdentityConfig,
    cert: Option<&std::path::Path>,
    create: bool,
) -> Result<Arc<dyn Key>, IdentityError> {
    if cfg.rotate_key {
        if let Some(spki) = cert.and_then(cert_spki) {
            for handle in [cfg.handle, cfg.handle + 1] {
                let c = IdentityConfig {
                    handle,
                    ..cfg.clone()
                };
                if let Ok(k) = tpm::TpmKey::open(&c, false) {
                    if spki_der(k.public_point()) == spki {
                        return Ok(Arc::new(k));
                    }
                }
            }
        }
    }
    Ok(Arc::new(tpm::TpmKey::open(cfg, create)?))
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(
    cfg: &IdentityConfig,
    _cert: Option<&std::path::Path>,
    _create: bool,
) -> Result<Arc<dyn Key>, IdentityError> {
    Err(IdentityError::Tpm {
        tcti: cfg.tcti.clone(),
        message: "this fieldgate was built without TPM support (the `tpm` feature): use a build with it, or `identity.backend = \"file\"` on a development host".into(),
    })
}

/// The SubjectPublicKeyInfo of the first certificate in a PEM file.
#[cfg(feature = "tpm")]
fn cert_spki(path: &std::path::Path) -> Option<Vec<u8>> {
    let certs = crate::tls::load_certs(path).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(certs[0].as_ref()).ok()?;
    Some(c.public_key().raw.to_vec())
}

/// A CSR (PEM) for `device_id`, signed by `key`.
pub fn csr_pem(key: Arc<dyn Key>, device_id: &str) -> Result<String, IdentityError> {
    let kp = rcgen::KeyPair::from_remote(Box::new(signer::RcgenKey(key)))
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device_id);
    params
        .serialize_request(&kp)
        .and_then(|c| c.pem())
        .map_err(|e| IdentityError::Sign(e.to_string()))
}
