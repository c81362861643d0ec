//! The development backend: a P-256 key in a PKCS#8 PEM file. Anyone who can read the
//! file can copy the identity; the daemon says so at every start.

use super::{Backend, IdentityError, Key};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::path::{Path, PathBuf};

pub struct FileKey {
    path: PathBuf,
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl FileKey {
    pub fn load(path: &Path) -> Result<FileKey, IdentityError> {
        let err = |message: String| IdentityError::File {
            path: path.display().to_string(),
            message,
        };
        let der = match crate::tls::load_key(path).map_err(|e| err(e.to_string()))? {
            rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => {
                return Err(err(
                    "not a PKCS#8 key (the file backend takes ECC P-256 keys in PKCS#8 PEM)".into(),
                ))
            }
        };
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
            .map_err(|e| err(format!("not an ECC P-256 key: {e}")))?;
        Ok(FileKey {
            path: path.to_path_buf(),
            key,
            rng,
        })
    }
}

impl Key for FileKey {
    fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| IdentityError::Sign(e.to_string()))
    }

    fn backend(&self) -> Backend {
        Backend::File
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
