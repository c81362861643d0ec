//! Why the cloud refuses a request: one stable code per reason, with its HTTP status.
//! Library code refuses with a `Code` and a sentence; the API's edge (`api::Refusal`) is
//! the one place that turns it into a status and a JSON body. docs/api.md's error table
//! lists exactly these (a test checks it).

use std::fmt;

macro_rules! codes {
    ($($variant:ident = $text:literal, $status:literal;)*) => {
        /// A refusal's stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order of docs/api.md's table.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as the JSON body's `error` carries it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }
        }
    };
}

codes! {
    BadRequest = "bad_request", 400;
    BadDeviceId = "bad_device_id", 400;
    TokenInvalid = "token_invalid", 400;
    CsrInvalid = "csr_invalid", 400;
    TpmKeyInvalid = "tpm_key_invalid", 400;
    EkInvalid = "ek_invalid", 400;
    Unauthenticated = "unauthenticated", 401;
    KeyUnknown = "key_unknown", 401;
    CertificateRequired = "certificate_required", 401;
    Forbidden = "forbidden", 403;
    KeyRevoked = "key_revoked", 403;
    KeyExpired = "key_expired", 403;
    KeyNotYetValid = "key_not_yet_valid", 403;
    KeySourceRefused = "key_source_refused", 403;
    KeyOriginRefused = "key_origin_refused", 403;
    ActionNotGranted = "action_not_granted", 403;
    ResolutionTooFine = "resolution_too_fine", 403;
    ScopeWidened = "scope_widened", 403;
    DelegationRefused = "delegation_refused", 403;
    Revoked = "revoked", 403;
    DeviceUnclaimed = "device_unclaimed", 403;
    CsrDeviceMismatch = "csr_device_mismatch", 403;
    TokenUnknown = "token_unknown", 403;
    TokenDeviceMismatch = "token_device_mismatch", 403;
    TokenUsed = "token_used", 403;
    TokenExpired = "token_expired", 403;
    TpmProofRequired = "tpm_proof_required", 403;
    EkUnknown = "ek_unknown", 403;
    EkMismatch = "ek_mismatch", 403;
    ChallengeUnknown = "challenge_unknown", 403;
    ActivationFailed = "activation_failed", 403;
    NotFound = "not_found", 404;
    MethodNotAllowed = "method_not_allowed", 405;
    Conflict = "conflict", 409;
    PayloadTooLarge = "http_413", 413;
    UnsupportedMediaType = "unsupported_media_type", 415;
    RangeNotSatisfiable = "range_not_satisfiable", 416;
    TooManyAttempts = "too_many_attempts", 429;
    Internal = "internal", 500;
    Busy = "busy", 503;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a code and a sentence for the caller (never a database's own text: an
/// `Internal` refusal's sentence is logged and replaced at the edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

impl Refused {
    pub fn new(code: Code, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!((400..600).contains(&c.status()), "{c}");
        }
    }

    /// docs/api.md's error table: each row's status and the codes in backquotes.
    #[test]
    fn the_documented_table_is_the_enum() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
        let table = doc
            .split("| status | codes |")
            .nth(1)
            .expect("the error table");
        let mut documented = Vec::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.split('|').collect();
            let status: u16 = cells[1].trim()[..3].parse().unwrap();
            // The codes are the cell's leading backquoted words, before any explanation.
            let list = cells[2].split(':').next().unwrap_or("");
            for code in list.split('`').skip(1).step_by(2) {
                documented.push((status, code.to_string()));
            }
        }
        let mut actual: Vec<(u16, String)> = Code::ALL
            .iter()
            .map(|c| (c.status(), c.as_str().to_string()))
            .collect();
        documented.sort();
        actual.sort();
        assert_eq!(documented, actual);
    }
}
