//! The gateway's identity: an ECC P-256 signing key behind one interface, held in the
//! TPM (`tpm`) or, on development hosts only, in a PEM file (`file`); the certificate
//! that names it; CSRs signed by it; and the rustls signer that makes the TLS handshake
//! sign inside the TPM.

pub mod enroll;
pub mod file;
pub mod renewal;
pub mod signer;
pub mod tpm;

use serde::Deserialize;
use std::sync::Arc;

/// `[identity]` in the gateway config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `tpm`, or `file` (development hosts: the key is `uplink.key`).
    #[serde(default)]
    pub backend: Backend,
    /// How to reach the TPM: `device:/dev/tpmrm0` (the kernel's resource manager), or
    /// `swtpm:host=127.0.0.1,port=2321` for the simulator.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The persistent handle of the key, in the owner range 0x81000000-0x817FFFFF.
    #[serde(default = "default_handle")]
    pub handle: u32,
    /// An auth value the key requires for every signature (none by default).
    #[serde(default)]
    pub auth: Option<String>,
    /// The cloud's HTTPS API (`https://cloud.example.net:8443`): enrollment on first
    /// power-on (with `token_file`) and renewal at two thirds of the certificate's life.
    #[serde(default)]
    pub enroll_url: Option<String>,
    /// The one-time bootstrap token, for the first enrollment.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    File,
    Tpm,
}

pub fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}

/// The handle fieldgate uses unless told otherwise: in the owner's persistent range,
/// away from 0x81000001 (the usual storage root key) and 0x81010001 (the EK).
pub fn default_handle() -> u32 {
    0x8100_0F47
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            backend: Backend::File,
            tcti: default_tcti(),
            handle: default_handle(),
            auth: None,
            enroll_url: None,
            token_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("TPM ({tcti}): {message}")]
    Tpm { tcti: String, message: String },
    #[error("key file {path}: {message}")]
    File { path: String, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The gateway's key, opened on first use (a TPM key is made then, the first time) and
/// shared by everything that signs: the uplink's handshakes, renewals, CSRs.
pub struct Holder {
    pub config: IdentityConfig,
    pub key_file: Option<std::path::PathBuf>,
    slot: std::sync::Mutex<Option<Arc<dyn Key>>>,
}

impl Holder {
    pub fn new(config: IdentityConfig, key_file: Option<std::path::PathBuf>) -> Holder {
        Holder {
            config,
            key_file,
            slot: std::sync::Mutex::new(None),
        }
    }

    pub fn key(&self) -> Result<Arc<dyn Key>, IdentityError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = open(&self.config, self.key_file.as_deref(), true)?;
        tracing::info!(backend = k.backend(), key = %k.location(), fingerprint = %fingerprint(k.as_ref()), "identity key ready");
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
    fn backend(&self) -> &'static str;
    /// Where the key lives, for people (`TPM swtpm:… handle 0x81000f47`, a file path).
    fn location(&self) -> String;
    /// The TPM behind the key, for enrollment with TPM proof.
    fn tpm(&self) -> Option<&tpm::TpmKey> {
        None
    }
}

/// The SubjectPublicKeyInfo (DER) of a P-256 public point.
pub fn spki_der(point: &[u8]) -> Vec<u8> {
    crate::der::p256_spki(point)
}

/// SHA-256 of the SubjectPublicKeyInfo, as hex: the key's fingerprint.
pub fn fingerprint(key: &dyn Key) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(spki_der(key.public_point()))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens the configured key; with `create`, a TPM key that does not exist yet is made.
pub fn open(
    cfg: &IdentityConfig,
    key_file: Option<&std::path::Path>,
    create: bool,
) -> Result<Arc<dyn Key>, IdentityError> {
    match cfg.backend {
        Backend::Tpm => Ok(Arc::new(tpm::TpmKey::open(cfg, create)?)),
        Backend::File => {
            let path = key_file.ok_or_else(|| IdentityError::File {
                path: "(none)".into(),
                message: "the file backend needs `uplink.key`".into(),
            })?;
            Ok(Arc::new(file::FileKey::load(path)?))
        }
    }
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
