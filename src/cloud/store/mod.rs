//! The cloud's sample store: every sample exactly once per (device, sequence number),
//! gap records, device state, and rejected payloads kept for inspection. On SQLite for a
//! single node (`sqlite`), on PostgreSQL for the scale-out mode (`postgres`); both pass
//! the same suite (tests/storage.rs).

mod postgres;
pub mod resolution;
mod sqlite;

pub use self::postgres::PgStore;
pub use self::sqlite::SqliteStore;
use crate::protocol::{Batch, Gap, StateMessage};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sample store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// With the causes (the client's own message is a bare "db error").
    #[error("sample store (PostgreSQL): {0}")]
    Postgres(String),
    #[error("sample store (PostgreSQL): {0}")]
    Closed(String),
}

/// One stored sample, as `fieldgate-cloud query` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub device: String,
    pub seq: u64,
    pub point: String,
    pub ts_ns: i64,
    pub value: serde_json::Value,
    pub quality: String,
    pub time: String,
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        StoreError::Postgres(crate::cloud::sql::with_causes(&e))
    }
}

impl From<crate::cloud::sql::DbError> for StoreError {
    fn from(e: crate::cloud::sql::DbError) -> StoreError {
        match e {
            crate::cloud::sql::DbError::Sqlite(e) => StoreError::Sqlite(e),
            crate::cloud::sql::DbError::Postgres(text) => StoreError::Postgres(text),
            other => StoreError::Closed(other.to_string()),
        }
    }
}

/// A datastream's history: raw samples or aggregated buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum History {
    Raw(Vec<Row>),
    Buckets(Vec<Bucket>),
}

/// The numeric samples of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub ts_ns: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// Withheld (0, not sent) from keys limited to a resolution.
    #[serde(skip_serializing_if = "count_withheld")]
    pub count: u64,
}

fn count_withheld(count: &u64) -> bool {
    *count == 0
}

/// What one insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    pub new: usize,
    pub duplicates: usize,
    pub gaps: usize,
}

/// The sample store of one process: SQLite or PostgreSQL.
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// The SQLite store in the file at `path` (made on first use).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path)?))
    }

    /// The PostgreSQL store at `url` (`postgres://user@host:port/db?sslmode=require`;
    /// tables made on first use); the server's certificate must chain to the system's
    /// roots or to `ca`.
    pub fn postgres(url: &str, ca: Option<&Path>) -> Result<Store, StoreError> {
        Ok(Store::Postgres(PgStore::connect(url, ca)?))
    }

    /// Opens `location`: a `postgres://` or `postgresql://` URL (TLS trusting `ca` too),
    /// or a SQLite file.
    pub fn open_location(location: &str, ca: Option<&Path>) -> Result<Store, StoreError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Store::postgres(location, ca)
        } else {
            Store::open(Path::new(location))
        }
    }

    /// Stores a batch from `device` in one transaction; repeats are ignored.
    pub fn insert(&mut self, device: &str, batch: &Batch) -> Result<Inserted, StoreError> {
        each!(self, s => s.insert(device, batch))
    }

    pub fn set_state(&self, device: &str, state: &StateMessage) -> Result<(), StoreError> {
        each!(self, s => s.set_state(device, state))
    }

    pub fn state(&self, device: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.state(device))
    }

    /// Keeps a refused payload (truncated to 64 KiB) with the reason, so nothing is lost
    /// silently.
    pub fn reject(
        &self,
        device: Option<&str>,
        topic: &str,
        reason: &str,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        each!(self, s => s.reject(device, topic, reason, payload))
    }

    /// Reasons of refused payloads, newest first: (device, topic, reason).
    #[allow(clippy::type_complexity)]
    pub fn rejections(
        &self,
        limit: usize,
    ) -> Result<Vec<(Option<String>, String, String)>, StoreError> {
        each!(self, s => s.rejections(limit))
    }

    /// Samples of `device` (of one point), from `since_ns`, in time order.
    pub fn query(
        &self,
        device: &str,
        point: Option<&str>,
        since_ns: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        each!(self, s => s.query(device, point, since_ns, limit))
    }

    /// The datastreams of a device: (point id, samples stored, time of the latest).
    pub fn streams(&self, device: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        each!(self, s => s.streams(device))
    }

    /// The latest sample of each datastream of a device.
    pub fn latest(&self, device: &str) -> Result<Vec<Row>, StoreError> {
        each!(self, s => s.latest(device))
    }

    /// One datastream between `from_ns` and `to_ns` (inclusive), at most `limit` points:
    /// raw samples, or with `bucket_ns` the average, minimum, maximum and count of the
    /// numeric samples in each bucket (buckets start at multiples of `bucket_ns`).
    pub fn history(
        &self,
        device: &str,
        stream: &str,
        from_ns: i64,
        to_ns: i64,
        bucket_ns: Option<i64>,
        limit: usize,
    ) -> Result<History, StoreError> {
        each!(self, s => s.history(device, stream, from_ns, to_ns, bucket_ns, limit))
    }

    /// History as a key whose finest resolution is `floor_ns` may see it (see
    /// `resolution`): whole buckets of at least `floor_ns`, their extremes taken over
    /// the floor's averages (`resolution::Window` says which buckets).
    pub fn history_limited(
        &self,
        device: &str,
        stream: &str,
        window: resolution::Window,
    ) -> Result<History, StoreError> {
        let fine = self.history(
            device,
            stream,
            window.from_ns,
            window.to_ns,
            Some(window.floor_ns),
            usize::MAX,
        )?;
        Ok(match fine {
            History::Buckets(fine) => {
                History::Buckets(resolution::roll_up(&fine, window.bucket_ns))
            }
            History::Raw(_) => History::Buckets(Vec::new()),
        })
    }

    /// Samples that arrived after `after_received_ns`, across all devices, in arrival
    /// order, with their arrival time (for `demo` and tails).
    pub fn tail(
        &self,
        after_received_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Row)>, StoreError> {
        each!(self, s => s.tail(after_received_ns, limit))
    }

    /// The sequence ranges the gateway reported as dropped, less what was stored anyway:
    /// a gateway short of disk may drop a sample it had already sent (its PUBACK still
    /// on the way), and a sample that arrived is not lost.
    pub fn gaps(&self, device: &str) -> Result<Vec<Gap>, StoreError> {
        each!(self, s => s.gaps(device))
    }

    /// Whether the device's identity was revoked: it is refused at connect.
    pub fn revoked(&self, device: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.revoked(device))
    }

    /// Records a refused connection beside the enrollments (see `registry`).
    pub fn record_refusal(&self, device: &str, detail: &str, peer: &str) -> Result<(), StoreError> {
        each!(self, s => s.record_refusal(device, detail, peer))
    }

    /// The device watch (`cloud::watch`): `device` connected from `peer`. Done by the
    /// embedded ingest, which sees devices' addresses; behind a broker the workers do
    /// not (the broker's own connection log is the place to watch there).
    pub fn watch_connect(&self, device: &str, peer: std::net::IpAddr) -> Result<(), StoreError> {
        each!(self, s => s.watch_connect(device, peer))
    }

    /// The device watch: `device` sent `live` live samples now.
    pub fn watch_samples(&self, device: &str, live: u64) -> Result<(), StoreError> {
        each!(self, s => s.watch_samples(device, live))
    }

    /// How many samples of `device` are stored.
    pub fn count(&self, device: &str) -> Result<u64, StoreError> {
        each!(self, s => s.count(device))
    }
}

/// The reported gaps less the sequence numbers `stored_in(gap)` finds stored, in order.
fn subtract_stored(
    reported: Vec<Gap>,
    mut stored_in: impl FnMut(&Gap) -> Result<Vec<u64>, StoreError>,
) -> Result<Vec<Gap>, StoreError> {
    let mut out: Vec<Gap> = Vec::new();
    for g in reported {
        let mut from = g.first;
        for s in stored_in(&g)?
            .into_iter()
            .chain(std::iter::once(g.last + 1))
        {
            if s > from {
                out.push(Gap {
                    first: from,
                    last: s - 1,
                });
            }
            from = s + 1;
        }
    }
    Ok(out)
}

/// The quality as stored (JSON) in the words `Quality` prints.
fn quality_text(stored: String) -> String {
    serde_json::from_str::<crate::sample::Quality>(&stored)
        .map(|q| q.to_string())
        .unwrap_or(stored)
}
