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
}

/// `POST /v1/renew` over mutual TLS with the current certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr: String,
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
