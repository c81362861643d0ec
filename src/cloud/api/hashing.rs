//! Password hashing and checking (argon2id: tens of milliseconds of CPU each) happen
//! off the IAM lock, at most `AT_ONCE` at a time across the server: a flood of
//! registrations or logins waits its turn, and past `WAIT` is told to come back
//! (503 `busy`), while every request that needs no password goes on meanwhile.

use super::Refusal;
use crate::cloud::code::Code;
use crate::cloud::iam::access::Denied;
use crate::cloud::iam::users::{hash_password, verify_password, PasswordHashed, UserError};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// As many as the small servers the cloud runs on have cores.
pub const AT_ONCE: usize = 2;
/// How long a request waits for a turn.
pub const WAIT: Duration = Duration::from_secs(5);

/// The password work of one API server: its turns, and the accounts being checked.
pub struct Passwords {
    slots: Semaphore,
    checking: Mutex<HashSet<String>>,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords {
            slots: Semaphore::new(AT_ONCE),
            checking: Mutex::new(HashSet::new()),
        }
    }
}

/// An account's password check in progress; the account is free again when dropped.
pub struct OnePerAccount<'a> {
    email: String,
    passwords: &'a Passwords,
}

impl Passwords {
    /// A turn to hash or check a password; hold it for the work.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, Refusal> {
        match tokio::time::timeout(WAIT, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::new(
                Code::Busy,
                "too many password checks at once: try again in a few seconds",
            )),
        }
    }

    /// Hashes `password` in turn, off the async threads and the IAM lock.
    pub async fn hash(&self, password: &str) -> Result<PasswordHashed, Refusal> {
        let _turn = self.slot().await?;
        let password = password.to_string();
        super::blocking(move || {
            hash_password(&password).map_err(|e| Refusal::from(Denied::from(e)))
        })
        .await
    }

    /// Checks `password` against the PHC string `stored`, in turn.
    pub async fn verify(
        &self,
        password: &str,
        stored: &str,
    ) -> Result<Result<(), UserError>, Refusal> {
        let _turn = self.slot().await?;
        let (password, stored) = (password.to_string(), stored.to_string());
        super::blocking(move || Ok(verify_password(&password, &stored))).await
    }

    /// Claims the account's one password check at a time, or refuses (429) while
    /// another is in progress: a burst of guesses would otherwise all pass the login
    /// throttle before the first refusal is recorded.
    pub fn one_per_account(&self, email: &str) -> Result<OnePerAccount<'_>, Refusal> {
        let email = email.to_lowercase();
        let mut set = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(email.clone()) {
            return Err(Refusal::new(
                Code::TooManyAttempts,
                "a sign-in of this account is being checked: one at a time",
            ));
        }
        Ok(OnePerAccount {
            email,
            passwords: self,
        })
    }
}

impl Drop for OnePerAccount<'_> {
    fn drop(&mut self) {
        let mut set = self
            .passwords
            .checking
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.remove(&self.email);
    }
}
