//! Report-by-exception: decide whether a new reading is worth a sample.

use crate::sample::{Quality, Value};

/// The filter of one point.
#[derive(Debug, Clone)]
pub struct ReportFilter {
    /// Report only when the value moved by more than this (None: report every reading).
    deadband: Option<f64>,
    /// Report at least this often (ns) even when nothing changed, so silence means trouble.
    heartbeat_ns: Option<i64>,
    last: Option<(Value, Quality, i64)>,
}

impl ReportFilter {
    pub fn new(deadband: Option<f64>, heartbeat_ns: Option<i64>) -> ReportFilter {
        ReportFilter {
            deadband,
            heartbeat_ns,
            last: None,
        }
    }

    /// For a bad reading: emit only when the quality changes, so a dead device does not
    /// flood the buffer with one bad sample per poll.
    pub fn admit_bad(&mut self, quality: &Quality, ts_ns: i64) -> bool {
        let emit = self.last.as_ref().is_none_or(|(_, q, _)| q != quality);
        if emit {
            self.last = Some((Value::Empty, quality.clone(), ts_ns));
        }
        emit
    }

    /// Whether to emit this reading; remembers it if so.
    pub fn admit(&mut self, value: &Value, quality: &Quality, ts_ns: i64) -> bool {
        let emit = match (&self.last, self.deadband) {
            (None, _) | (_, None) => true,
            (Some((lv, lq, lt)), Some(db)) => {
                lq != quality
                    || self.heartbeat_ns.is_some_and(|h| ts_ns - lt >= h)
                    || match (lv.as_f64(), value.as_f64()) {
                        (Some(a), Some(b)) => (a - b).abs() > db || a.is_nan() != b.is_nan(),
                        _ => lv != value,
                    }
            }
        };
        if emit {
            self.last = Some((value.clone(), quality.clone(), ts_ns));
        }
        emit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadband_and_quality_changes() {
        let mut f = ReportFilter::new(Some(0.5), Some(10_000));
        let g = Quality::Good;
        assert!(f.admit(&Value::Float(10.0), &g, 0));
        assert!(!f.admit(&Value::Float(10.4), &g, 1));
        assert!(f.admit(&Value::Float(10.6), &g, 2));
        assert!(f.admit(&Value::Empty, &Quality::Timeout, 3));
        assert!(f.admit(&Value::Float(10.6), &g, 4));
        assert!(!f.admit(&Value::Float(10.6), &g, 5));
        assert!(f.admit(&Value::Float(10.6), &g, 10_004), "heartbeat");
        let mut all = ReportFilter::new(None, None);
        assert!(all.admit(&Value::Int(1), &g, 0));
        assert!(all.admit(&Value::Int(1), &g, 1));
    }
}
