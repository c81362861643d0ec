//! Exponential backoff with jitter, shared by every reconnecting loop.

use std::time::Duration;

/// Exponential backoff with jitter: between half and all of min * 2^failures, capped.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let base = min.saturating_mul(1u32 << failures.min(16)).min(max);
    let jitter: f64 = rand::random_range(0.5..=1.0);
    base.mul_f64(jitter)
}

/// Pacing of an accept loop: after a failed accept(2) (out of descriptors, most often)
/// the loop waits, longer each time in a row, instead of spinning until connections end.
#[derive(Debug, Default)]
pub struct AcceptPause {
    failures: u32,
}

impl AcceptPause {
    /// A connection was accepted.
    pub fn accepted(&mut self) {
        self.failures = 0;
    }

    /// Accepting failed with `e`: logs it and waits.
    pub async fn failed(&mut self, listener: &str, e: &std::io::Error) {
        tracing::warn!(listener, error = %e, failures = self.failures, "accept failed");
        let d = backoff(
            Duration::from_millis(20),
            Duration::from_secs(1),
            self.failures,
        );
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for f in 0..30 {
            let d = backoff(min, max, f);
            let full = min.saturating_mul(1 << f.min(16)).min(max);
            assert!(d >= full / 2 && d <= full, "{f}: {d:?}");
        }
    }
}
