//! The cloud's record of device identities: one-time bootstrap tokens (stored as
//! SHA-256 hashes only), every enrollment, renewal and refusal, and revocations. In the
//! same database as the samples (a SQLite file, or PostgreSQL in the scale-out mode).

use crate::args;
use crate::cloud::sql::{Db, DbError, Row};

#[derive(Debug, thiserror::Error)]
#[error("registry: {0}")]
pub struct RegistryError(#[from] DbError);

/// A token accepted: spent now, or spent before by the same key (a gateway that lost
/// power between the cloud's answer and storing its certificate asks again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    First,
    Again,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    OtherDevice(String),
    /// Spent by another key.
    Used,
    Expired,
}

type TokenOutcome = Result<Result<Spent, TokenProblem>, RegistryError>;

/// One recorded identity event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub ts_ns: i64,
    pub device: String,
    /// `enrolled`, `renewed`, `refused`, `revoked`, `token-issued`.
    pub event: String,
    pub detail: String,
    pub peer: String,
}

/// A certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Certificate {
    pub serial: String,
    pub key_fingerprint: String,
    pub issued_ns: i64,
    pub not_after_ns: i64,
}

/// Safe to share between threads: every method takes the connection for its own
/// statements only and gives it back before it returns, so no caller can hold it
/// across another call (a guard held by a caller while a callee took it again once
/// deadlocked enrollment for everyone).
pub struct Registry {
    db: std::sync::Mutex<Db>,
}

fn hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.trim().as_bytes()).to_vec()
}

fn key_hash(key: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(key).to_vec()
}

impl Registry {
    /// Makes the tables if they are missing.
    pub fn with(db: Db) -> Result<Registry, RegistryError> {
        Ok(Registry {
            db: std::sync::Mutex::new(db),
        })
    }

    /// The connection, for one statement: callers never keep the guard.
    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new one-time token for `device`, valid for `ttl`. Only its hash is kept.
    pub fn create_token(
        &self,
        device: &str,
        ttl: std::time::Duration,
    ) -> Result<String, RegistryError> {
        let bytes: [u8; 24] = rand::random();
        let token: String = crate::hex::encode(&bytes);
        let now = crate::sample::now_ns();
        self.db().execute(
            "INSERT INTO enroll_tokens(token_hash, device, created_ns, expires_ns) VALUES ($1, $2, $3, $4)",
            args![hash(&token), device, now, now.saturating_add(ttl.as_nanos() as i64)],
        )?;
        self.record(
            device,
            "token-issued",
            &format!("valid for {}", humantime::format_duration(ttl)),
            "admin",
        )?;
        Ok(token)
    }

    /// Checks `token` for `device` and the CSR's public `key` without spending it.
    /// Tokens are good once, except that the key that spent one may ask again until
    /// the token's own expiry.
    pub fn check_token(&self, token: &str, device: &str, key: &[u8]) -> TokenOutcome {
        self.check_token_hash(&hash(token), device, key)
    }

    fn check_token_hash(&self, token_hash: &[u8], device: &str, key: &[u8]) -> TokenOutcome {
        let row = self.db().query_opt(
            "SELECT device, expires_ns, used_ns, spent_key FROM enroll_tokens WHERE token_hash = $1",
            args![token_hash],
        )?;
        let Some(r) = row else {
            return Ok(Err(TokenProblem::Unknown));
        };
        // (device, expires, used, the hash of the key that spent it)
        let (owner, expires, used, spent_key) =
            (r.text(0)?, r.int(1)?, r.opt_int(2)?, r.opt_blob(3)?);
        Ok(if owner != device {
            Err(TokenProblem::OtherDevice(owner))
        } else if expires < crate::sample::now_ns() {
            Err(TokenProblem::Expired)
        } else if used.is_none() {
            Ok(Spent::First)
        } else if spent_key.as_deref() == Some(key_hash(key).as_slice()) {
            Ok(Spent::Again)
        } else {
            Err(TokenProblem::Used)
        })
    }

    /// Registers a device's endorsement key (at manufacture).
    pub fn register_ek(&self, device: &str, ek: &[u8]) -> Result<(), RegistryError> {
        self.db().execute(
            "INSERT INTO device_ek(device, ek, registered_ns) VALUES ($1, $2, $3)
             ON CONFLICT(device) DO UPDATE SET ek = excluded.ek, registered_ns = excluded.registered_ns",
            args![device, ek, crate::sample::now_ns()],
        )?;
        self.record(
            device,
            "ek-registered",
            &crate::hex::encode(&ek[..ek.len().min(9)]),
            "admin",
        )
    }

    pub fn ek(&self, device: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.one(
            "SELECT ek FROM device_ek WHERE device = $1",
            device,
            Row::blob,
        )
    }

    /// Keeps an open credential challenge for five minutes.
    pub fn put_challenge(
        &self,
        id: &str,
        device: &str,
        credential: &[u8],
        csr: &str,
        token: Option<&str>,
    ) -> Result<(), RegistryError> {
        use sha2::Digest;
        // A renewal's challenge carries no token: an empty hash.
        let token_hash = token.map(hash).unwrap_or_default();
        self.db().execute(
            "INSERT INTO challenges(id, device, credential_hash, csr, token_hash, expires_ns) VALUES ($1, $2, $3, $4, $5, $6)",
            args![id, device, sha2::Sha256::digest(credential).to_vec(), csr, token_hash, crate::sample::now_ns() + 300_000_000_000],
        )?;
        Ok(())
    }

    /// Takes (and removes) a challenge: (device, SHA-256 of the credential, CSR, token
    /// hash), or None if unknown or expired. One answer per challenge.
    #[allow(clippy::type_complexity)]
    pub fn take_challenge(
        &self,
        id: &str,
    ) -> Result<Option<(String, Vec<u8>, String, Vec<u8>)>, RegistryError> {
        let row = self.db().query_opt(
            "DELETE FROM challenges WHERE id = $1
             RETURNING device, credential_hash, csr, token_hash, expires_ns",
            args![id],
        )?;
        let now = crate::sample::now_ns();
        self.db()
            .execute("DELETE FROM challenges WHERE expires_ns < $1", args![now])?;
        match row {
            Some(r) if r.int(4)? >= now => {
                Ok(Some((r.text(0)?, r.blob(1)?, r.text(2)?, r.blob(3)?)))
            }
            _ => Ok(None),
        }
    }

    /// Spends `token` for `device` and the CSR's public `key`: it must exist, name
    /// this device, be unexpired, and be unused or spent by this same key. Spending is
    /// atomic: of two keys racing for one token, one wins.
    pub fn spend_token(&self, token: &str, device: &str, key: &[u8]) -> TokenOutcome {
        self.spend_token_hash(&hash(token), device, key)
    }

    /// `spend_token` by the token's hash (kept with an open challenge).
    pub fn spend_token_hash(&self, token_hash: &[u8], device: &str, key: &[u8]) -> TokenOutcome {
        match self.check_token_hash(token_hash, device, key)? {
            Ok(Spent::First) => {}
            other => return Ok(other),
        }
        let n = self.db().execute(
            "UPDATE enroll_tokens SET used_ns = $1, spent_key = $2 WHERE token_hash = $3 AND used_ns IS NULL",
            args![crate::sample::now_ns(), key_hash(key), token_hash],
        )?;
        Ok(if n == 1 {
            Ok(Spent::First)
        } else {
            Err(TokenProblem::Used)
        })
    }

    pub fn record(
        &self,
        device: &str,
        event: &str,
        detail: &str,
        peer: &str,
    ) -> Result<(), RegistryError> {
        self.db().execute(
            "INSERT INTO identity_events(ts_ns, device, event, detail, peer) VALUES ($1, $2, $3, $4, $5)",
            args![crate::sample::now_ns(), device, event, detail, peer],
        )?;
        Ok(())
    }

    pub fn events(&self, device: Option<&str>) -> Result<Vec<Event>, RegistryError> {
        let rows = self.db().query(
            "SELECT ts_ns, device, event, detail, peer FROM identity_events
             WHERE CAST($1 AS TEXT) IS NULL OR device = $1 ORDER BY id",
            args![device],
        )?;
        let event = |r: &Row| {
            Ok(Event {
                ts_ns: r.int(0)?,
                device: r.text(1)?,
                event: r.text(2)?,
                detail: r.text(3)?,
                peer: r.text(4)?,
            })
        };
        Ok(rows.iter().map(event).collect::<Result<_, DbError>>()?)
    }

    pub fn revoke(&self, device: &str, reason: &str) -> Result<(), RegistryError> {
        self.db().execute(
            "INSERT INTO revoked(device, ts_ns, reason) VALUES ($1, $2, $3)
             ON CONFLICT(device) DO UPDATE SET ts_ns = excluded.ts_ns, reason = excluded.reason",
            args![device, crate::sample::now_ns(), reason],
        )?;
        self.record(device, "revoked", reason, "admin")
    }

    /// The reason a device was revoked, if it was.
    pub fn revoked(&self, device: &str) -> Result<Option<String>, RegistryError> {
        self.one(
            "SELECT reason FROM revoked WHERE device = $1",
            device,
            Row::text,
        )
    }

    /// The one column of the row `sql` finds for `device`, if any.
    fn one<T>(
        &self,
        sql: &str,
        device: &str,
        column: impl Fn(&Row, usize) -> Result<T, DbError>,
    ) -> Result<Option<T>, RegistryError> {
        let row = self.db().query_opt(sql, args![device])?;
        match row {
            Some(r) => Ok(Some(column(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// The device's place in the lifecycle (`registered`, `claimed`, `enrolled`,
    /// `revoked`), if it was registered at manufacture.
    pub fn lifecycle(&self, device: &str) -> Option<String> {
        super::iam::devices::Devices::new(&self.db())
            .state(device)
            .ok()
            .flatten()
    }

    /// A claimed device got its certificate.
    pub fn mark_enrolled(&self, device: &str) -> Result<(), RegistryError> {
        self.db().execute(
            "UPDATE devices SET state = 'enrolled', updated_ns = $2 WHERE device = $1 AND state = 'claimed'",
            args![device, crate::sample::now_ns()],
        )?;
        Ok(())
    }

    /// The certificates issued to `device`, newest first.
    pub fn certificates(&self, device: &str) -> Result<Vec<Certificate>, RegistryError> {
        let rows = self.db().query(
            "SELECT serial, key_fingerprint, issued_ns, not_after_ns FROM certificates
             WHERE device = $1 ORDER BY issued_ns DESC",
            args![device],
        )?;
        let certificate = |r: &Row| {
            Ok(Certificate {
                serial: r.text(0)?,
                key_fingerprint: r.text(1)?,
                issued_ns: r.int(2)?,
                not_after_ns: r.int(3)?,
            })
        };
        Ok(rows
            .iter()
            .map(certificate)
            .collect::<Result<_, DbError>>()?)
    }

    pub fn add_certificate(
        &self,
        serial: &str,
        device: &str,
        key_fingerprint: &str,
        not_after_ns: i64,
    ) -> Result<(), RegistryError> {
        self.db().execute(
            "INSERT INTO certificates(serial, device, key_fingerprint, not_after_ns, issued_ns) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(serial) DO UPDATE SET device = excluded.device,
                 key_fingerprint = excluded.key_fingerprint, not_after_ns = excluded.not_after_ns,
                 issued_ns = excluded.issued_ns",
            args![serial, device, key_fingerprint, not_after_ns, crate::sample::now_ns()],
        )?;
        Ok(())
    }
}
