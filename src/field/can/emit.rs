//! Emission policies: which decoded values become samples. A 1 kHz signal must not
//! flood the uplink, and a value that does not change need not be sent every frame.

use crate::config::can::EmitPolicy;

/// The emission state of one point.
#[derive(Debug, Default, Clone)]
pub struct EmitState {
    frames: u64,
    /// The last emitted value and when.
    last: Option<(f64, i64)>,
}

impl EmitState {
    /// Whether to emit `value` seen at `ts_ns`; remembers it if so. Order: decimation
    /// (every n-th frame), the minimum interval, the heartbeat, then on-change and the
    /// deadband, both measured against the last value emitted (so a slow drift still
    /// comes out once it has added up).
    pub fn admit(&mut self, p: &EmitPolicy, value: f64, ts_ns: i64) -> bool {
        self.frames += 1;
        if p.decimate > 1 && (self.frames - 1) % p.decimate as u64 != 0 {
            return false;
        }
        let emit = match self.last {
            None => true,
            Some((last, at)) => {
                let since = ts_ns.saturating_sub(at);
                if p.min_interval.is_some_and(|m| since < m.as_nanos() as i64) {
                    false
                } else if p.heartbeat.is_some_and(|h| since >= h.as_nanos() as i64) {
                    true
                } else if let Some(db) = p.deadband {
                    (value - last).abs() > db || value.is_nan() != last.is_nan()
                } else if p.on_change {
                    value != last && !(value.is_nan() && last.is_nan())
                } else {
                    true
                }
            }
        };
        if emit {
            self.last = Some((value, ts_ns));
        }
        emit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Class;
    use std::time::Duration;

    fn policy() -> EmitPolicy {
        EmitPolicy {
            on_change: true,
            deadband: None,
            min_interval: None,
            heartbeat: None,
            decimate: 1,
            ignore: false,
            class: Class::Telemetry,
        }
    }
    const MS: i64 = 1_000_000;

    /// A 1 kHz signal for one second under a policy: how many samples come out.
    fn count(p: &EmitPolicy, value: impl Fn(i64) -> f64) -> usize {
        let mut s = EmitState::default();
        (0..1000).filter(|&i| s.admit(p, value(i), i * MS)).count()
    }

    #[test]
    fn on_change_deadband_interval_decimation_heartbeat() {
        let constant = |_| 5.0;
        let ramp = |i: i64| i as f64 * 0.01; // 10 units per second
        assert_eq!(count(&policy(), constant), 1, "on change: a constant once");
        assert_eq!(count(&policy(), ramp), 1000, "on change: every step");
        let every = EmitPolicy {
            on_change: false,
            ..policy()
        };
        assert_eq!(count(&every, constant), 1000);
        let deadband = EmitPolicy {
            deadband: Some(0.5),
            ..policy()
        };
        // steps of 0.01: emitted each time the drift exceeds 0.5 (every 51 frames)
        assert_eq!(count(&deadband, ramp), 20);
        let interval = EmitPolicy {
            min_interval: Some(Duration::from_millis(100)),
            ..policy()
        };
        assert_eq!(count(&interval, ramp), 10, "at most every 100 ms");
        let decimate = EmitPolicy {
            decimate: 10,
            on_change: false,
            ..policy()
        };
        assert_eq!(count(&decimate, ramp), 100, "every 10th frame");
        let heartbeat = EmitPolicy {
            heartbeat: Some(Duration::from_millis(250)),
            ..policy()
        };
        assert_eq!(count(&heartbeat, constant), 4, "0, 250, 500, 750 ms");
    }
}
