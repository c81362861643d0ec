//! The cloud's own CA: created on first start, it issues the ingest's server certificate
//! and development certificates for gateways (`fieldgate-cloud dev-cert`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// The files of the CA and the server identity in a data directory.
pub struct Pki {
    pub dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

/// The SHA-256 of the CSR's SubjectPublicKeyInfo.
fn spki_fingerprint(csr: &rcgen::CertificateSigningRequestParams) -> String {
    use sha2::Digest;
    let raw = rcgen::PublicKeyData::der_bytes(&csr.public_key);
    let spki = if csr.public_key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
        crate::der::p256_spki(raw)
    } else {
        raw.to_vec()
    };
    crate::hex::encode(&sha2::Sha256::digest(&spki))
}

fn write(path: &Path, data: &str, private: bool) -> Result<(), PkiError> {
    let io = |error| PkiError::Io {
        path: path.display().to_string(),
        error,
    };
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // A private key is never readable by others, not even for the moment between
    // writing it and setting its mode: the file is made 0600.
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    if private {
        // An older file of the same name keeps its mode through `open`.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(data.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|error| PkiError::Io {
        path: path.display().to_string(),
        error,
    })
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Opens the CA in `dir`, creating it and a server certificate for `server_names`
    /// (DNS names or IP addresses) on first use.
    pub fn open_or_create(dir: &Path, server_names: &[String]) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|error| PkiError::Io {
            path: dir.display().to_string(),
            error,
        })?;
        let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let pki = if ca_crt.exists() && ca_key.exists() {
            let ca_key = KeyPair::from_pem(&read(&ca_key)?)?;
            let ca_params = CertificateParams::from_ca_cert_pem(&read(&ca_crt)?)?;
            Pki {
                dir: dir.to_path_buf(),
                ca_params,
                ca_key,
            }
        } else {
            let ca_key_pair = KeyPair::generate()?;
            let mut p = CertificateParams::default();
            p.distinguished_name
                .push(DnType::CommonName, "fieldgate cloud CA");
            p.distinguished_name
                .push(DnType::OrganizationName, "fieldgate");
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            p.not_after = OffsetDateTime::now_utc() + Duration::days(365 * 20);
            let cert = p.clone().self_signed(&ca_key_pair)?;
            write(&ca_crt, &cert.pem(), false)?;
            write(&ca_key, &ca_key_pair.serialize_pem(), true)?;
            tracing::info!(dir = %dir.display(), "created the cloud CA");
            Pki {
                dir: dir.to_path_buf(),
                ca_params: p,
                ca_key: ca_key_pair,
            }
        };
        if !pki.server_cert().exists() || !pki.server_key().exists() {
            let (crt, key) = pki.issue(&server_names.join(","), server_names, false)?;
            write(&pki.server_cert(), &crt, false)?;
            write(&pki.server_key(), &key, true)?;
        }
        Ok(pki)
    }

    /// Issues a certificate and key (PEM): a client certificate with CN = `cn`, or a
    /// server certificate with `names` as subject alternative names.
    pub fn issue(
        &self,
        cn: &str,
        names: &[String],
        client: bool,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        if client {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for n in names {
                p.subject_alt_names
                    .push(match n.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(n.clone().try_into()?),
                    });
            }
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(if client { 365 } else { 825 });
        let issuer = self.ca_params.clone().self_signed(&self.ca_key)?;
        let cert = p.signed_by(&key, &issuer, &self.ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CN and the raw public key of a CSR whose signature verifies.
    pub fn inspect_csr(csr_pem: &str) -> Result<(String, Vec<u8>), CsrProblem> {
        let (csr, cn) = parse_csr(csr_pem)?;
        Ok((
            cn,
            rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec(),
        ))
    }

    /// The SHA-256 fingerprint of a CSR's public key, as certificates record it.
    pub fn csr_fingerprint(csr_pem: &str) -> Result<String, CsrProblem> {
        let (csr, _) = parse_csr(csr_pem)?;
        Ok(spki_fingerprint(&csr))
    }

    /// Signs a gateway's CSR (PEM) as a client certificate for `device_id`, valid for
    /// `lifetime`: the CSR's signature must verify and its CN must be `device_id`.
    /// Returns the certificate (PEM), its serial (hex) and the SHA-256 fingerprint of
    /// its public key.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        device_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<(String, String, String), CsrProblem> {
        let (mut csr, cn) = parse_csr(csr_pem)?;
        if cn != device_id {
            return Err(CsrProblem::OtherDevice(cn));
        }
        let fingerprint = spki_fingerprint(&csr);
        let serial: [u8; 16] = rand::random();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, device_id);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        // Backdated a little for clocks behind ours, but not so much that a short
        // lifetime's renewal point (two thirds in) moves into the past.
        let secs = lifetime.as_secs().min(i64::MAX as u64 / 2) as i64;
        p.not_before = OffsetDateTime::now_utc() - Duration::seconds((secs / 4).min(300));
        p.not_after = OffsetDateTime::now_utc() + Duration::seconds(secs);
        csr.params = p;
        let issuer = self
            .ca_params
            .clone()
            .self_signed(&self.ca_key)
            .map_err(|e| CsrProblem::Invalid(e.to_string()))?;
        let cert = csr
            .signed_by(&issuer, &self.ca_key)
            .map_err(|e| CsrProblem::Invalid(e.to_string()))?;
        let serial_hex = crate::hex::encode(&serial);
        Ok((cert.pem(), serial_hex, fingerprint))
    }

    /// Writes `device.crt`, `device.key` and `ca.crt` for a gateway into `out`.
    pub fn dev_cert(&self, device_id: &crate::ids::DeviceId, out: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(out).map_err(|error| PkiError::Io {
            path: out.display().to_string(),
            error,
        })?;
        let (crt, key) = self.issue(device_id, &[], true)?;
        write(&out.join("device.crt"), &crt, false)?;
        write(&out.join("device.key"), &key, true)?;
        write(&out.join("ca.crt"), &read(&self.ca_cert())?, false)?;
        Ok(())
    }
}

/// Why a CSR was not signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrProblem {
    Invalid(String),
    /// The CSR names another device (its CN).
    OtherDevice(String),
}

/// A CSR whose signature verifies, and its CN.
fn parse_csr(
    csr_pem: &str,
) -> Result<(rcgen::CertificateSigningRequestParams, String), CsrProblem> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        CsrProblem::Invalid(format!("not a valid, self-signed PKCS#10 request: {e}"))
    })?;
    let cn = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .map(dn_text)
        .unwrap_or_default();
    Ok((csr, cn))
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    /// From reading (issue 11): `ca.key` and `server.key` were written world-readable
    /// (umask) and only then made 0600; a key file is now 0600 from its first byte, and
    /// an older file of the same name is narrowed too.
    #[test]
    fn private_files_are_never_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write(&path, "secret", true).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
        let pki =
            super::Pki::open_or_create(&dir.path().join("pki"), &["localhost".into()]).unwrap();
        for f in [pki.dir.join("ca.key"), pki.server_key()] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}
