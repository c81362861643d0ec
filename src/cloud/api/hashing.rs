//! Password hashing and checking (argon2id: tens of milliseconds of CPU each) happen
//! off the IAM lock, at most `AT_ONCE` at a time across the server: a flood of
//! registrations or logins waits its turn, and past `WAIT` is told to come back
//! (503 `busy`), while every request that needs no password goes on meanwhile.

use super::Refusal;
use axum::http::StatusCode;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// As many as the small servers the cloud runs on have cores.
pub const AT_ONCE: usize = 2;
/// How long a request waits for a turn.
pub const WAIT: Duration = Duration::from_secs(5);

static SLOTS: Semaphore = Semaphore::const_new(AT_ONCE);

/// A turn to hash or check a password; hold it for the work.
pub async fn slot() -> Result<SemaphorePermit<'static>, Refusal> {
    match tokio::time::timeout(WAIT, SLOTS.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many password checks at once: try again in a few seconds",
        )),
    }
}
