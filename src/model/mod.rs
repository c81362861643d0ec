//! The gateway's shared vocabulary, below every part that uses it: what a sample on its
//! way into the buffer is, its priority class, where sources hand samples, the register
//! types a point is read as, and the liveness beat every long-running task keeps.
//! `config`, `field`, `buffer`, `uplink` and `identity` depend on it; it depends on none
//! of them.

pub mod liveness;
pub mod registers;

use crate::sample::Sample;
use serde::Deserialize;

pub use registers::{DataType, Function, WordOrder};

/// Priority class of a point's samples in the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Dropped first when the buffer is full.
    #[default]
    Telemetry,
    /// Kept while any telemetry can still be dropped.
    Alarm,
}

impl Class {
    pub fn rank(self) -> u8 {
        self as u8
    }
}

/// A sample on its way into the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sample: Sample,
    /// Priority class at the cap.
    pub class: Class,
    /// The boot clock when it was taken, to correct `sample.ts_ns` if the wall clock
    /// was not yet synchronised.
    pub mono_ns: i64,
}

/// Where samples go (the buffer in the daemon; a channel in tests and benches).
pub trait SampleSink: Send + Sync {
    fn accept(&self, samples: Vec<Entry>) -> impl std::future::Future<Output = ()> + Send;
}

impl SampleSink for tokio::sync::mpsc::Sender<Vec<Entry>> {
    async fn accept(&self, samples: Vec<Entry>) {
        let _ = self.send(samples).await;
    }
}
