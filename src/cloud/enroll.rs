//! Enrollment and renewal: the checks behind `/v1/enroll` and `/v1/renew`, each outcome
//! recorded in the registry with the peer's address.

use super::code::{Code, Refused};
use super::pki::{CsrProblem, Pki};
use super::registry::{Registry, Spent, TokenProblem};
use crate::enrollment::{
    ActivateRequest, CertResponse, Challenge, EnrollAnswer, EnrollRequest, RenewRequest,
    TpmEvidence,
};
use crate::hex::{decode as unhex, encode as hex};
use std::time::Duration;

pub struct Enrollment {
    pub pki: Pki,
    /// Shared by every request; it takes its own lock per statement.
    pub registry: Registry,
    /// Lifetime of the certificates issued.
    pub lifetime: Duration,
    /// Refuse enrollments without proof that the key lives in the registered TPM.
    pub require_tpm: bool,
}

impl Enrollment {
    /// Records a refusal and returns it.
    fn refuse(&self, device: &str, peer: &str, code: Code, message: String) -> Refused {
        tracing::warn!(device, peer, %code, %message, "identity request refused");
        let _ = self
            .registry
            .record(device, "refused", &format!("{code}: {message}"), peer);
        Refused::new(code, message)
    }

    /// A CSR refused: unreadable, or naming another device than `device`.
    fn refuse_csr(&self, device: &str, peer: &str, problem: CsrProblem) -> Refused {
        match problem {
            CsrProblem::Invalid(why) => self.refuse(device, peer, Code::CsrInvalid, why),
            CsrProblem::OtherDevice(cn) => self.refuse(
                device,
                peer,
                Code::CsrDeviceMismatch,
                format!("the CSR names `{cn}`, not `{device}`"),
            ),
        }
    }

    fn refuse_if_revoked(&self, device: &str, peer: &str) -> Result<(), Refused> {
        match self.registry.revoked(device) {
            Ok(Some(reason)) => Err(self.refuse(
                device,
                peer,
                Code::Revoked,
                format!("{device} is revoked ({reason})"),
            )),
            _ => Ok(()),
        }
    }

    /// The one place of the rule "this device must prove its TPM": with
    /// `--require-tpm` every device must, and so must any device whose endorsement key
    /// was registered, whatever its request says. `Some(registered EK)` (or
    /// `Some(None)` under `--require-tpm` when none is registered: the challenge then
    /// refuses with `ek_unknown`) when the proof is due; `None` when a token is enough.
    fn tpm_proof(&self, device: &str) -> Result<Option<Option<Vec<u8>>>, Refused> {
        let registered = self.registry.ek(device).map_err(|e| {
            tracing::error!(device, error = %e, "registry read failed");
            Refused::new(Code::Internal, "the registry failed; see the cloud's log")
        })?;
        Ok((self.require_tpm || registered.is_some()).then_some(registered))
    }

    fn issue(
        &self,
        device: &str,
        csr: &str,
        peer: &str,
        event: &str,
    ) -> Result<CertResponse, Refused> {
        let (cert, serial, fingerprint) = self
            .pki
            .sign_csr(csr, device, self.lifetime)
            .map_err(|p| self.refuse_csr(device, peer, p))?;
        let ca = std::fs::read_to_string(self.pki.ca_cert()).unwrap_or_default();
        let not_after = crate::sample::now_ns().saturating_add(self.lifetime.as_nanos() as i64);
        let reg = &self.registry;
        let _ = reg.add_certificate(&serial, device, &fingerprint, not_after);
        let _ = reg.mark_enrolled(device);
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

    pub fn enroll(&self, req: &EnrollRequest, peer: &str) -> Result<EnrollAnswer, Refused> {
        let device = crate::ids::DeviceId::parse(&req.device_id)
            .map_err(|e| Refused::new(Code::BadDeviceId, e.to_string()))?;
        let device = device.as_str();
        self.refuse_if_revoked(device, peer)?;
        if self.registry.lifecycle(device).as_deref() == Some("registered") {
            return Err(self.refuse(device, peer, Code::DeviceUnclaimed,
                format!("{device} is registered but no tenant has claimed it yet: claim it with the code on its label first"),
            ));
        }
        if let Some(registered_ek) = self.tpm_proof(device)? {
            return self
                .challenge(
                    device,
                    &req.csr,
                    req.tpm.as_ref(),
                    Some(&req.token),
                    registered_ek,
                    peer,
                )
                .map(EnrollAnswer::Challenge);
        }
        let csr_key = self.csr_key(device, &req.csr, peer)?;
        let spent = self.registry.spend_token(&req.token, device, &csr_key);
        let event = self.token_outcome(device, peer, spent)?;
        self.issue(device, &req.csr, peer, event)
            .map(EnrollAnswer::Certificate)
    }

    /// The public key of a CSR for `device`, or a recorded refusal. Checked before
    /// the token, so a bad CSR does not spend it.
    fn csr_key(&self, device: &str, csr: &str, peer: &str) -> Result<Vec<u8>, Refused> {
        let (cn, key) = Pki::inspect_csr(csr).map_err(|p| self.refuse_csr(device, peer, p))?;
        if cn != device {
            return Err(self.refuse_csr(device, peer, CsrProblem::OtherDevice(cn)));
        }
        Ok(key)
    }

    /// The event a good token makes (`enrolled`, or `enrolled-again` when the key that
    /// spent it asks again), or a recorded refusal.
    fn token_outcome(
        &self,
        device: &str,
        peer: &str,
        outcome: Result<Result<Spent, TokenProblem>, super::registry::RegistryError>,
    ) -> Result<&'static str, Refused> {
        match outcome {
            Ok(Ok(Spent::First)) => Ok("enrolled"),
            Ok(Ok(Spent::Again)) => Ok("enrolled-again"),
            Ok(Err(p)) => {
                let (code, msg) = match p {
                    TokenProblem::Unknown => (
                        Code::TokenUnknown,
                        "the token is not one this cloud issued".to_string(),
                    ),
                    TokenProblem::OtherDevice(_) => (
                        Code::TokenDeviceMismatch,
                        format!("the token was issued for another device, not {device}"),
                    ),
                    TokenProblem::Used => (
                        Code::TokenUsed,
                        "the token was used already, by another key: tokens work once".to_string(),
                    ),
                    TokenProblem::Expired => (
                        Code::TokenExpired,
                        "the token has expired: issue a new one".to_string(),
                    ),
                };
                Err(self.refuse(device, peer, code, msg))
            }
            Err(e) => Err(Refused::new(Code::Internal, e.to_string())),
        }
    }

    /// Step one with TPM proof: everything is checked except the TPM itself, then a
    /// credential is made that only the TPM with the registered EK can recover, and
    /// only for the key named in the evidence (which must be the CSR's key, made in a
    /// TPM, signing only).
    fn challenge(
        &self,
        device: &str,
        csr: &str,
        tpm: Option<&TpmEvidence>,
        token: Option<&str>,
        registered: Option<Vec<u8>>,
        peer: &str,
    ) -> Result<Challenge, Refused> {
        let forbid = |code: Code, msg: String| self.refuse(device, peer, code, msg);
        let Some(ev) = tpm else {
            return Err(forbid(Code::TpmProofRequired, "this cloud requires proof that the key lives in the device's TPM: enroll with `identity.backend = \"tpm\"`".into()));
        };
        let Some(registered) = registered else {
            return Err(forbid(Code::EkUnknown, format!("no endorsement key is registered for {device}: register it at manufacture (`fieldgate identity ek` on the device, `fieldgate-cloud register {device} --ek …`)")));
        };
        if unhex(&ev.ek).as_deref() != Some(registered.as_slice()) {
            return Err(forbid(Code::EkMismatch, format!("this TPM's endorsement key is not the one registered for {device}: another box, or another TPM")));
        }
        let csr_key = self.csr_key(device, csr, peer)?;
        // Enrollment pays with a token; renewal is authenticated by the current
        // certificate instead.
        if let Some(token) = token {
            let outcome = self.registry.check_token(token, device, &csr_key);
            self.token_outcome(device, peer, outcome)?;
        }
        use super::credential::{attr, make_credential, parse_ecc_public};
        let public = unhex(&ev.key_public)
            .ok_or(super::credential::BadPublic("not hex"))
            .and_then(|b| parse_ecc_public(&b))
            .map_err(|why| {
                self.refuse(
                    device,
                    peer,
                    Code::TpmKeyInvalid,
                    format!("the key's public area: {why}"),
                )
            })?;
        if public.point != csr_key {
            return Err(forbid(
                Code::TpmKeyInvalid,
                "the TPM key in the evidence is not the CSR's key".into(),
            ));
        }
        let need = attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::SIGN;
        if public.attributes & need != need || public.attributes & attr::DECRYPT != 0 {
            return Err(forbid(Code::TpmKeyInvalid, format!("the key's attributes {:#x} do not say: made in the TPM, bound to it, signing only", public.attributes)));
        }
        let credential: [u8; 32] = rand::random();
        let (blob, secret) = make_credential(&registered, &public.name, &credential)
            .map_err(|why| self.refuse(device, peer, Code::EkInvalid, why))?;
        let id = hex(&rand::random::<[u8; 16]>());
        let reg = &self.registry;
        reg.put_challenge(&id, device, &credential, csr, token)
            .map_err(|e| Refused::new(Code::Internal, e.to_string()))?;
        let _ = reg.record(
            device,
            "challenged",
            &format!("credential for key {}", hex(&public.name[2..10])),
            peer,
        );
        Ok(Challenge {
            challenge: id,
            credential_blob: hex(&blob),
            encrypted_secret: hex(&secret),
        })
    }

    /// Step two: the credential the TPM recovered; the token is spent only now.
    pub fn activate(&self, req: &ActivateRequest, peer: &str) -> Result<CertResponse, Refused> {
        let taken = self
            .registry
            .take_challenge(&req.challenge)
            .map_err(|e| Refused::new(Code::Internal, e.to_string()))?;
        let Some((device, want, csr, token_hash)) = taken else {
            return Err(Refused::new(
                Code::ChallengeUnknown,
                "no such challenge, or it expired (five minutes) or was answered already",
            ));
        };
        use sha2::Digest;
        let got = unhex(&req.credential).map(|c| sha2::Sha256::digest(c).to_vec());
        if got.as_deref() != Some(want.as_slice()) {
            return Err(self.refuse(
                &device,
                peer,
                Code::ActivationFailed,
                "the credential is wrong: the key is not in the TPM the endorsement key belongs to"
                    .into(),
            ));
        }
        // Revoked while the challenge was open: nothing is issued.
        self.refuse_if_revoked(&device, peer)?;
        let csr_key = self.csr_key(&device, &csr, peer)?;
        // A renewal's challenge carries no token.
        if token_hash.is_empty() {
            return self.issue(&device, &csr, peer, "renewed");
        }
        let outcome = self
            .registry
            .spend_token_hash(&token_hash, &device, &csr_key);
        let event = self.token_outcome(&device, peer, outcome)?;
        self.issue(&device, &csr, peer, event)
    }

    /// Renewal over mutual TLS. A device that must prove its TPM keeps its proven key,
    /// or proves the new one by credential activation (a challenge, answered at
    /// `/v1/enroll/activate`): one use of a stolen TPM key must not yield an exportable
    /// key renewed for ever.
    pub fn renew(
        &self,
        device: &str,
        req: &RenewRequest,
        peer: &str,
    ) -> Result<EnrollAnswer, Refused> {
        self.refuse_if_revoked(device, peer)?;
        if let Some(registered) = self.tpm_proof(device)? {
            let fingerprint =
                Pki::csr_fingerprint(&req.csr).map_err(|p| self.refuse_csr(device, peer, p))?;
            let current = self
                .registry
                .certificates(device)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.key_fingerprint);
            if current.as_deref() != Some(fingerprint.as_str()) {
                return self
                    .challenge(device, &req.csr, req.tpm.as_ref(), None, registered, peer)
                    .map(EnrollAnswer::Challenge);
            }
        }
        self.issue(device, &req.csr, peer, "renewed")
            .map(EnrollAnswer::Certificate)
    }
}
