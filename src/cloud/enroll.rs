//! Enrollment and renewal: the checks behind `/v1/enroll` and `/v1/renew`, each outcome
//! recorded in the registry with the peer's address.

use super::api::Refusal;
use super::pki::{CsrProblem, Pki};
use super::registry::{Registry, TokenProblem};
use crate::enrollment::{CertResponse, EnrollRequest, RenewRequest};
use axum::http::StatusCode;
use std::sync::Mutex;
use std::time::Duration;

pub struct Enrollment {
    pub pki: Pki,
    pub registry: Mutex<Registry>,
    /// Lifetime of the certificates issued.
    pub lifetime: Duration,
}

impl Enrollment {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a refusal and returns it.
    fn refuse(
        &self,
        device: &str,
        peer: &str,
        status: StatusCode,
        code: &str,
        message: String,
    ) -> Refusal {
        tracing::warn!(device, peer, code, %message, "identity request refused");
        let _ = self
            .registry()
            .record(device, "refused", &format!("{code}: {message}"), peer);
        Refusal::new(status, code, message)
    }

    fn issue(
        &self,
        device: &str,
        csr: &str,
        peer: &str,
        event: &str,
    ) -> Result<CertResponse, Refusal> {
        let (cert, serial, fingerprint) = match self.pki.sign_csr(csr, device, self.lifetime) {
            Ok(x) => x,
            Err(CsrProblem::Invalid(why)) => {
                return Err(self.refuse(device, peer, StatusCode::BAD_REQUEST, "csr_invalid", why))
            }
            Err(CsrProblem::OtherDevice(cn)) => {
                return Err(self.refuse(
                    device,
                    peer,
                    StatusCode::FORBIDDEN,
                    "csr_device_mismatch",
                    format!("the CSR names `{cn}`, not `{device}`"),
                ))
            }
        };
        let ca = std::fs::read_to_string(self.pki.ca_cert()).unwrap_or_default();
        let not_after = crate::sample::now_ns().saturating_add(self.lifetime.as_nanos() as i64);
        let reg = self.registry();
        let _ = reg.add_certificate(&serial, device, &fingerprint, not_after);
        let _ = reg.record(
            device,
            event,
            &format!("serial {serial}, key {fingerprint}"),
            peer,
        );
        tracing::info!(device, peer, serial, event, "certificate issued");
        Ok(CertResponse {
            certificate: cert,
            ca,
        })
    }

    pub fn enroll(&self, req: &EnrollRequest, peer: &str) -> Result<CertResponse, Refusal> {
        let device = req.device_id.as_str();
        if !crate::protocol::valid_device_id(device) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_device_id",
                format!("`{device}` is not a valid device id"),
            ));
        }
        if let Ok(Some(reason)) = self.registry().revoked(device) {
            return Err(self.refuse(
                device,
                peer,
                StatusCode::FORBIDDEN,
                "revoked",
                format!("{device} is revoked ({reason})"),
            ));
        }
        let spent = self.registry().spend_token(&req.token, device);
        match spent {
            Ok(Ok(())) => {}
            Ok(Err(p)) => {
                let (code, msg) = match p {
                    TokenProblem::Unknown => (
                        "token_unknown",
                        "the token is not one this cloud issued".to_string(),
                    ),
                    TokenProblem::OtherDevice(_) => (
                        "token_device_mismatch",
                        format!("the token was issued for another device, not {device}"),
                    ),
                    TokenProblem::Used => (
                        "token_used",
                        "the token was used already: tokens work once".to_string(),
                    ),
                    TokenProblem::Expired => (
                        "token_expired",
                        "the token has expired: issue a new one".to_string(),
                    ),
                };
                return Err(self.refuse(device, peer, StatusCode::FORBIDDEN, code, msg));
            }
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                ))
            }
        }
        self.issue(device, &req.csr, peer, "enrolled")
    }

    pub fn renew(
        &self,
        device: &str,
        req: &RenewRequest,
        peer: &str,
    ) -> Result<CertResponse, Refusal> {
        if let Ok(Some(reason)) = self.registry().revoked(device) {
            return Err(self.refuse(
                device,
                peer,
                StatusCode::FORBIDDEN,
                "revoked",
                format!("{device} is revoked ({reason})"),
            ));
        }
        self.issue(device, &req.csr, peer, "renewed")
    }
}
