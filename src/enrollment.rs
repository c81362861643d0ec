//! The enrollment API's messages, shared by the gateway (client) and the cloud (server):
//! JSON over HTTPS under `/v1`, written down in docs/protocol.md.

use serde::{Deserialize, Serialize};

/// `POST /v1/enroll`: a gateway's first certificate, paid for with a one-time token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub device_id: String,
    /// PKCS#10 request (PEM) signed by the gateway's key; its CN must be `device_id`.
    pub csr: String,
    /// The one-time bootstrap token issued for this device id.
    pub token: String,
    /// Evidence that the key lives in a TPM (sent by gateways with a TPM key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEvidence>,
}

/// The TPM's endorsement key and the signing key's public area, hex-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpmEvidence {
    /// The EK's uncompressed P-256 point (as registered at manufacture).
    pub ek: String,
    /// The key's TPMT_PUBLIC: its attributes, its point, and (hashed) its name.
    pub key_public: String,
}

/// The answer to `/v1/enroll`: a certificate, or (when the cloud requires TPM proof) a
/// challenge only the TPM holding the EK and the key can answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnrollAnswer {
    Certificate(CertResponse),
    Challenge(Challenge),
}

/// TPM2_MakeCredential's output for the gateway's TPM (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub challenge: String,
    pub credential_blob: String,
    pub encrypted_secret: String,
}

/// `POST /v1/enroll/activate`: the credential TPM2_ActivateCredential recovered (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub challenge: String,
    pub credential: String,
}

/// `POST /v1/renew` over mutual TLS with the current certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr: String,
    /// Evidence that a new key lives in the TPM: a device that must prove its TPM
    /// renews for a key other than its current one only through credential activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEvidence>,
}

/// The answer to both: the new certificate and the CA that issued it (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertResponse {
    pub certificate: String,
    pub ca: String,
}

/// Every refusal: a stable code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub message: String,
}

/// Largest request body the enrollment endpoints read.
pub const MAX_BODY: usize = 64 * 1024;
