//! The shared data model: one `Sample` type from the field bus to the cloud store.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One measured value of one point at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Which point this is, `device/point`, unique within a gateway.
    pub point: String,
    /// When it was taken: UTC, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// The decoded value (scale and offset applied).
    pub value: Value,
    /// Whether the value can be trusted, and if not, why.
    pub quality: Quality,
    /// How far the timestamp can be trusted (gateways often boot without a real-time clock).
    pub time: TimeQuality,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    /// No value could be read; the quality says why.
    Empty,
}

impl Value {
    /// The value as a float, for deadbands and downsampling; None for text and bytes.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::Int(v) => Some(v as f64),
            Value::UInt(v) => Some(v as f64),
            Value::Bool(v) => Some(if v { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Very large or very small magnitudes in exponent form, not 300 digits.
            Value::Float(v) if v.is_finite() && *v != 0.0 && !(1e-6..1e15).contains(&v.abs()) => {
                write!(f, "{v:e}")
            }
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => {
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            Value::Empty => write!(f, "-"),
        }
    }
}

/// Whether a value is good, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quality {
    Good,
    /// The device answered with a Modbus exception code.
    Exception(u8),
    /// The device did not answer in time.
    Timeout,
    /// The bus or connection is down.
    Disconnected,
    /// The device answered, but the answer could not be decoded.
    Invalid(String),
}

impl Quality {
    pub fn is_good(&self) -> bool {
        *self == Quality::Good
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Good => write!(f, "good"),
            Quality::Exception(code) => {
                write!(f, "exception {code:#04x} ({})", exception_name(*code))
            }
            Quality::Timeout => write!(f, "timeout"),
            Quality::Disconnected => write!(f, "disconnected"),
            Quality::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// The name the Modbus specification gives an exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// How far a sample's timestamp can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeQuality {
    /// Taken while the system clock was synchronised.
    Synced,
    /// Taken before the clock was synchronised and later corrected from the monotonic clock.
    Corrected,
    /// Taken before the clock was synchronised and never corrected (e.g. the gateway
    /// rebooted before the clock was set): the timestamp may be far off.
    Unsynced,
}

impl fmt::Display for TimeQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeQuality::Synced => "synced",
            TimeQuality::Corrected => "corrected",
            TimeQuality::Unsynced => "unsynced",
        })
    }
}

/// Nanoseconds since the Unix epoch, now, by the system clock.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_readably_at_any_magnitude() {
        assert_eq!(Value::Float(21.5).to_string(), "21.5");
        assert_eq!(Value::Float(0.0).to_string(), "0");
        assert_eq!(Value::Float(1.5e300).to_string(), "1.5e300");
        assert_eq!(Value::Float(-2.5e-300).to_string(), "-2.5e-300");
        assert!(Value::Float(f64::MAX).to_string().len() < 30);
    }
}
