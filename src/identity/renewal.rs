//! Renewal: at two thirds of the certificate's lifetime the gateway asks for a new one
//! over mutual TLS with the current one. A failed attempt is retried with backoff; the
//! working certificate is only ever replaced by a complete new one.

use super::Holder;
use crate::model::liveness::Beat;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(
    identity: Arc<Holder>,
    device_id: String,
    url: String,
    ca: PathBuf,
    cert: PathBuf,
    beat: Beat,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let now = crate::sample::now_ns() / 1_000_000_000;
        let wait = match super::enroll::renewal_due(&cert) {
            Ok((due, _)) if failures == 0 => {
                Duration::from_secs(due.saturating_sub(now).max(0) as u64)
            }
            Ok(_) => crate::backoff::backoff(
                Duration::from_secs(5),
                Duration::from_secs(3600),
                failures - 1,
            ),
            // Not enrolled yet: the uplink enrolls; look again shortly.
            Err(_) => Duration::from_secs(5),
        };
        tokio::select! {
            _ = beat.sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        if super::enroll::renewal_due(&cert).is_err() {
            continue;
        }
        let result = if identity.config.rotate_key {
            identity.rotate(&device_id, &url, &ca, &cert).await
        } else {
            match identity.key() {
                Ok(key) => super::enroll::renew(&device_id, key, &url, &ca, &cert)
                    .await
                    .map_err(super::IdentityError::from),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => {
                failures = 0;
                let expiry = super::enroll::renewal_due(&cert)
                    .map(|(_, to)| to)
                    .unwrap_or(0);
                tracing::info!(cert = %cert.display(), expires_unix = expiry, "certificate renewed");
            }
            Err(e) => {
                failures += 1;
                if super::enroll::renewal_due(&cert)
                    .is_ok_and(|(_, to)| to <= crate::sample::now_ns() / 1_000_000_000)
                {
                    tracing::error!(cert = %cert.display(), "the certificate has expired: it cannot renew itself; enroll again with a new token (`fieldgate enroll`)");
                }
                tracing::warn!(error = %e, failures, "certificate renewal failed; the current certificate stays in use, retrying");
            }
        }
    }
}
