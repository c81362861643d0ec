//! The wire format between gateway and cloud, version 1 (see docs/protocol.md).
//!
//! Pure encoding and decoding, no I/O: a `Batch` of samples (and gap records) is one
//! MQTT payload, encoded with postcard (a stable, documented varint format).

use crate::ids::DeviceId;
use crate::sample::{Quality, Sample, TimeQuality, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The version this code writes and reads.
pub const VERSION: u8 = 1;
/// No payload above this size is sent or accepted.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Every topic starts with this, followed by the device id.
pub const TOPIC_ROOT: &str = "fg/v1";

/// The topic a device publishes its data batches on.
pub fn data_topic(device: &str) -> String {
    format!("{TOPIC_ROOT}/{device}/data")
}

/// The topic of a device's birth and last-will state messages (JSON, retained).
pub fn state_topic(device: &str) -> String {
    format!("{TOPIC_ROOT}/{device}/state")
}

/// What a topic says: which device and which stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Topic {
    Data(DeviceId),
    State(DeviceId),
    /// Replies to downlink commands (`crate::downlink`).
    Reply(DeviceId),
    /// Progress of a long command (`crate::downlink::Progress`).
    Progress(DeviceId),
}

/// Splits `fg/v1/{device}/{data|state|reply|progress}`, the topics a device publishes on; None
/// for anything else (a device never publishes on its command topic).
pub fn parse_topic(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
    let (device, kind) = rest.rsplit_once('/')?;
    let device = DeviceId::parse(device).ok()?;
    match kind {
        "data" => Some(Topic::Data(device)),
        "state" => Some(Topic::State(device)),
        "reply" => Some(Topic::Reply(device)),
        "progress" => Some(Topic::Progress(device)),
        _ => None,
    }
}

/// A sample with its per-gateway sequence number, as the buffer hands it to the uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequenced {
    pub seq: u64,
    pub sample: Sample,
}

/// An inclusive range of sequence numbers that the gateway had to drop and will never send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub first: u64,
    pub last: u64,
}

/// One payload on the data topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireBatch {
    version: u8,
    base_seq: u64,
    base_ts_ns: i64,
    points: Vec<String>,
    samples: Vec<WireSample>,
    gaps: Vec<Gap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSample {
    /// Sequence number minus the previous sample's (the first: minus `base_seq`).
    dseq: u64,
    /// Index into `points`.
    point: u32,
    /// Timestamp minus `base_ts_ns`.
    dts_ns: i64,
    value: Value,
    quality: Quality,
    time: TimeQuality,
}

/// A decoded data payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub samples: Vec<Sequenced>,
    pub gaps: Vec<Gap>,
}

/// Why a payload was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("payload of {0} bytes is over the limit of {MAX_PAYLOAD} bytes")]
    TooLarge(usize),
    #[error("empty payload")]
    Empty,
    #[error("unsupported wire format version {0} (this build reads version {VERSION})")]
    Version(u8),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("sample {index} names point #{point}, but the batch has {points} points")]
    BadPointIndex {
        index: usize,
        point: u32,
        points: usize,
    },
    #[error("sequence numbers overflow at sample {0}")]
    SeqOverflow(usize),
    #[error("sequence numbers must increase; sample {0} repeats or goes back")]
    SeqNotIncreasing(usize),
    #[error("gap {first}..={last} is inverted")]
    BadGap { first: u64, last: u64 },
}

impl Batch {
    /// Encodes the batch. Samples must be in increasing sequence order.
    pub fn encode(&self) -> Vec<u8> {
        let base_seq = self.samples.first().map(|s| s.seq).unwrap_or(0);
        let base_ts_ns = self.samples.first().map(|s| s.sample.ts_ns).unwrap_or(0);
        let mut points: Vec<String> = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut prev = base_seq;
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let p = *index.entry(s.sample.point.as_str()).or_insert_with(|| {
                    points.push(s.sample.point.clone());
                    (points.len() - 1) as u32
                });
                let w = WireSample {
                    dseq: s.seq - prev,
                    point: p,
                    dts_ns: s.sample.ts_ns.wrapping_sub(base_ts_ns),
                    value: s.sample.value.clone(),
                    quality: s.sample.quality.clone(),
                    time: s.sample.time,
                };
                prev = s.seq;
                w
            })
            .collect();
        let wire = WireBatch {
            version: VERSION,
            base_seq,
            base_ts_ns,
            points,
            samples,
            gaps: self.gaps.clone(),
        };
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes and checks a payload from the network; never panics.
    pub fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let Some(&version) = payload.first() else {
            return Err(DecodeError::Empty);
        };
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let wire: WireBatch =
            postcard::from_bytes(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let mut seq = wire.base_seq;
        let mut samples = Vec::with_capacity(wire.samples.len());
        for (i, w) in wire.samples.into_iter().enumerate() {
            if i > 0 && w.dseq == 0 {
                return Err(DecodeError::SeqNotIncreasing(i));
            }
            seq = seq.checked_add(w.dseq).ok_or(DecodeError::SeqOverflow(i))?;
            let point = wire
                .points
                .get(w.point as usize)
                .ok_or(DecodeError::BadPointIndex {
                    index: i,
                    point: w.point,
                    points: wire.points.len(),
                })?
                .clone();
            samples.push(Sequenced {
                seq,
                sample: Sample {
                    point,
                    ts_ns: wire.base_ts_ns.wrapping_add(w.dts_ns),
                    value: w.value,
                    quality: w.quality,
                    time: w.time,
                },
            });
        }
        for g in &wire.gaps {
            if g.first > g.last {
                return Err(DecodeError::BadGap {
                    first: g.first,
                    last: g.last,
                });
            }
        }
        Ok(Batch {
            samples,
            gaps: wire.gaps,
        })
    }
}

/// The birth message, published retained on the state topic after each connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMessage {
    /// `online` or `offline` (the last will).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_depth: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(point: &str, ts: i64, v: Value) -> Sample {
        Sample {
            point: point.into(),
            ts_ns: ts,
            value: v,
            quality: Quality::Good,
            time: TimeQuality::Synced,
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let b = Batch {
            samples: vec![
                Sequenced {
                    seq: 1000,
                    sample: sample(
                        "meter/voltage",
                        1_700_000_000_000_000_000,
                        Value::Float(230.5),
                    ),
                },
                Sequenced {
                    seq: 1001,
                    sample: sample(
                        "meter/count",
                        1_700_000_000_100_000_000,
                        Value::UInt(u64::MAX),
                    ),
                },
                Sequenced {
                    seq: 1005,
                    sample: Sample {
                        quality: Quality::Exception(2),
                        time: TimeQuality::Corrected,
                        ..sample("meter/voltage", 1_699_999_999_000_000_000, Value::Empty)
                    },
                },
            ],
            gaps: vec![Gap {
                first: 1002,
                last: 1004,
            }],
        };
        let bytes = b.encode();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
    }

    #[test]
    fn byte_literal_of_a_one_sample_batch() {
        let b = Batch {
            samples: vec![Sequenced {
                seq: 1,
                sample: sample("a", 0, Value::Bool(true)),
            }],
            gaps: vec![],
        };
        // version, base_seq, base_ts, points["a"], samples[{dseq, point, dts, Bool(true), Good, Synced}], gaps[]
        assert_eq!(
            b.encode(),
            vec![1, 1, 0, 1, 1, b'a', 1, 0, 0, 0, 3, 1, 0, 0, 0]
        );
    }

    #[test]
    fn hostile_payloads_are_refused_cleanly() {
        assert_eq!(Batch::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Batch::decode(&[9, 0]), Err(DecodeError::Version(9)));
        assert!(matches!(
            Batch::decode(&[1, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Batch::decode(&vec![1; MAX_PAYLOAD + 1]),
            Err(DecodeError::TooLarge(_))
        ));
        // a sample that points at a point the batch does not have
        let bad = postcard::to_stdvec(&WireBatch {
            version: 1,
            base_seq: 0,
            base_ts_ns: 0,
            points: vec![],
            samples: vec![WireSample {
                dseq: 0,
                point: 7,
                dts_ns: 0,
                value: Value::Int(1),
                quality: Quality::Good,
                time: TimeQuality::Synced,
            }],
            gaps: vec![],
        })
        .unwrap();
        assert!(matches!(
            Batch::decode(&bad),
            Err(DecodeError::BadPointIndex { .. })
        ));
        // random garbage never panics
        let mut x: u32 = 12345;
        for len in 0..400 {
            let mut buf = vec![1u8];
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                buf.push((x >> 16) as u8);
            }
            let _ = Batch::decode(&buf);
        }
    }

    #[test]
    fn topics() {
        let gw = || DeviceId::parse("gw-1").unwrap();
        assert_eq!(parse_topic("fg/v1/gw-1/data"), Some(Topic::Data(gw())));
        assert_eq!(parse_topic("fg/v1/gw-1/state"), Some(Topic::State(gw())));
        assert_eq!(parse_topic("fg/v1/gw/1/data"), None);
        assert_eq!(parse_topic("fg/v1/+/data"), None);
        assert_eq!(parse_topic("fg/v2/gw/data"), None);
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// The figure quoted in docs/protocol.md: bytes per sample on the wire for a typical
    /// batch (50 points polled every second, floats), against plain JSON of the same.
    #[test]
    fn bytes_per_sample_against_json() {
        let mut samples = Vec::new();
        for i in 0..1000u64 {
            samples.push(Sequenced {
                seq: 1_000_000 + i,
                sample: Sample {
                    point: format!("meter{}/voltage_l{}", i % 10, i % 5),
                    ts_ns: 1_763_800_000_000_000_000
                        + (i / 50) as i64 * 1_000_000_000
                        + (i % 50) as i64 * 1_000_000,
                    value: Value::Float(230.0 + (i % 7) as f64 * 0.1),
                    quality: Quality::Good,
                    time: TimeQuality::Synced,
                },
            });
        }
        let wire = Batch {
            samples: samples.clone(),
            gaps: vec![],
        }
        .encode()
        .len();
        let json: usize = samples
            .iter()
            .map(|s| {
                serde_json::json!({"seq": s.seq, "point": s.sample.point, "ts_ns": s.sample.ts_ns,
                    "value": s.sample.value.as_f64(), "quality": "good", "time": "synced"})
                .to_string()
                .len()
            })
            .sum();
        let per = wire as f64 / 1000.0;
        println!(
            "wire: {per:.1} bytes/sample; JSON: {:.1} bytes/sample",
            json as f64 / 1000.0
        );
        assert!(per < 20.0, "{per}");
        assert!(json > wire * 5);
    }
}
