//! Exponential backoff with jitter, shared by every reconnecting loop.

use std::time::Duration;

/// Exponential backoff with jitter: between half and all of min * 2^failures, capped.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let base = min.saturating_mul(1u32 << failures.min(16)).min(max);
    let jitter: f64 = rand::random_range(0.5..=1.0);
    base.mul_f64(jitter)
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
