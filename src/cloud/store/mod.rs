//! The cloud's sample store: every sample exactly once per (device, sequence number),
//! gap records, device state, and rejected payloads kept for inspection. One
//! implementation over `sql::Db`, the same statements on SQLite (a single node) and on
//! PostgreSQL (the scale-out mode, any number of ingest workers); both pass one suite
//! (tests/storage.rs). The tables are this module's (`cloud::schema`).

pub mod resolution;

use crate::args;
use crate::cloud::sql::{self, Db, DbError};
use crate::protocol::{Batch, Gap, StateMessage};
use crate::sample::Value;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("sample store: {0}")]
pub struct StoreError(#[from] DbError);

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

/// The columns a `Row` is read from, in order.
const ROW: &str = "seq, point, ts_ns, kind, fval, ival, sval, bval, quality, time";

/// Samples in one multi-row INSERT (12 parameters each; PostgreSQL takes 65,535).
const INSERT_CHUNK: usize = 256;

/// The sample store of one process, over its own connection.
pub struct Store {
    db: Db,
}

/// The value in the column its kind uses: kind, float, integer, text, bytes.
fn columns(v: &Value) -> [sql::Value; 5] {
    use sql::Value as V;
    let kind = |k: &str| V::Text(k.into());
    match v {
        Value::Float(f) => [kind("float"), V::Real(*f), V::Null, V::Null, V::Null],
        Value::Int(i) => [kind("int"), V::Null, V::Int(*i), V::Null, V::Null],
        Value::UInt(u) => [kind("uint"), V::Null, V::Int(*u as i64), V::Null, V::Null],
        Value::Bool(b) => [kind("bool"), V::Null, V::Int(*b as i64), V::Null, V::Null],
        Value::Str(s) => [kind("str"), V::Null, V::Null, V::Text(s.clone()), V::Null],
        Value::Bytes(b) => [kind("bytes"), V::Null, V::Null, V::Null, V::Blob(b.clone())],
        Value::Empty => [kind("empty"), V::Null, V::Null, V::Null, V::Null],
    }
}

/// A `Row` of `device` from the `ROW` columns starting at `at`.
fn row(device: &str, r: &sql::Row) -> Result<Row, DbError> {
    let kind = r.text(3)?;
    let value = match (kind.as_str(), r.opt_int(5)?) {
        ("uint", Some(i)) => serde_json::json!(i as u64),
        ("bool", Some(i)) => serde_json::json!(i != 0),
        (_, Some(i)) => serde_json::json!(i),
        (_, None) => match (r.opt_real(4)?, r.opt_text(6)?, r.opt_blob(7)?) {
            (Some(f), _, _) => serde_json::json!(f),
            (_, Some(s), _) => serde_json::json!(s),
            (_, _, Some(b)) => serde_json::json!(crate::hex::encode(&b)),
            _ => serde_json::Value::Null,
        },
    };
    Ok(Row {
        device: device.to_string(),
        seq: r.int(0)? as u64,
        point: r.text(1)?,
        ts_ns: r.int(2)?,
        value,
        quality: quality_text(r.text(8)?),
        time: r.text(9)?,
    })
}

fn rows(device: &str, found: Vec<sql::Row>) -> Result<Vec<Row>, StoreError> {
    Ok(found
        .iter()
        .map(|r| row(device, r))
        .collect::<Result<_, _>>()?)
}

/// A row limit as the databases take it.
fn clamp(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

/// A statement and its parameters.
type Statement = (String, Vec<sql::Value>);

/// The statements that store `batch` of `device`: the samples' (multi-row inserts), then
/// the gaps'.
fn insert_statements(device: &str, batch: &Batch, now: i64) -> (Vec<Statement>, Vec<Statement>) {
    let mut samples = Vec::new();
    for chunk in batch.samples.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO samples(device, seq, point, ts_ns, kind, fval, ival, sval, bval, quality, time, received_ns) VALUES ",
        );
        let mut args = Vec::with_capacity(chunk.len() * 12);
        for (i, s) in chunk.iter().enumerate() {
            let at = i * 12;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(
                &(1..=12)
                    .map(|n| format!("${}", at + n))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            sql.push(')');
            args.push(sql::Value::from(device));
            args.push(sql::Value::Int(s.seq as i64));
            args.push(sql::Value::from(s.sample.point.as_str()));
            args.push(sql::Value::Int(s.sample.ts_ns));
            args.extend(columns(&s.sample.value));
            args.push(sql::Value::Text(
                serde_json::to_string(&s.sample.quality).unwrap_or_default(),
            ));
            args.push(sql::Value::Text(s.sample.time.to_string()));
            args.push(sql::Value::Int(now));
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        samples.push((sql, args));
    }
    let gaps = batch
        .gaps
        .iter()
        .map(|g| {
            (
                "INSERT INTO gaps(device, first, last, received_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING"
                    .to_string(),
                args![device, g.first as i64, g.last as i64, now].to_vec(),
            )
        })
        .collect();
    (samples, gaps)
}

impl Store {
    /// Over `db` (its schema brought up to date by `Db`'s opening).
    pub fn with(db: Db) -> Store {
        Store { db }
    }

    /// The SQLite store in the file at `path` (made on first use).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::with(Db::sqlite(path)?))
    }

    /// The PostgreSQL store at `url` (`postgres://user@host:port/db?sslmode=require`);
    /// the server's certificate must chain to the system's roots or to `ca`.
    pub fn postgres(url: &str, ca: Option<&Path>) -> Result<Store, StoreError> {
        Ok(Store::with(Db::postgres(url, ca)?))
    }

    /// Opens `location`: a `postgres://` or `postgresql://` URL (TLS trusting `ca` too),
    /// or a SQLite file.
    pub fn open_location(location: &str, ca: Option<&Path>) -> Result<Store, StoreError> {
        Ok(Store::with(Db::open(location, ca)?))
    }

    /// Stores a batch from `device` in one transaction (durable before it returns);
    /// repeats are ignored, so two workers that receive the same batch store it once.
    pub fn insert(&mut self, device: &str, batch: &Batch) -> Result<Inserted, StoreError> {
        let (samples, gaps) = insert_statements(device, batch, crate::sample::now_ns());
        let total = batch.samples.len();
        Ok(self.db.transaction(move |tx| {
            let mut n = Inserted::default();
            for (sql, args) in &samples {
                n.new += tx.execute(sql, args)? as usize;
            }
            for (sql, args) in &gaps {
                n.gaps += tx.execute(sql, args)? as usize;
            }
            n.duplicates = total - n.new;
            Ok(n)
        })?)
    }

    pub fn set_state(&self, device: &str, state: &StateMessage) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO device_state(device, state, detail, updated_ns) VALUES ($1, $2, $3, $4)
             ON CONFLICT(device) DO UPDATE SET state = excluded.state, detail = excluded.detail,
                 updated_ns = excluded.updated_ns",
            args![
                device,
                &state.state,
                serde_json::to_string(state).unwrap_or_default(),
                crate::sample::now_ns()
            ],
        )?;
        Ok(())
    }

    pub fn state(&self, device: &str) -> Result<Option<String>, StoreError> {
        let r = self.db.query_opt(
            "SELECT state FROM device_state WHERE device = $1",
            args![device],
        )?;
        Ok(r.map(|r| r.text(0)).transpose()?)
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
        self.db.execute(
            "INSERT INTO rejected(device, topic, reason, payload, received_ns) VALUES ($1, $2, $3, $4, $5)",
            args![
                device,
                topic,
                reason,
                &payload[..payload.len().min(65536)],
                crate::sample::now_ns()
            ],
        )?;
        Ok(())
    }

    /// Reasons of refused payloads, newest first: (device, topic, reason).
    #[allow(clippy::type_complexity)]
    pub fn rejections(
        &self,
        limit: usize,
    ) -> Result<Vec<(Option<String>, String, String)>, StoreError> {
        let found = self.db.query(
            "SELECT device, topic, reason FROM rejected ORDER BY id DESC LIMIT $1",
            args![clamp(limit)],
        )?;
        Ok(found
            .iter()
            .map(|r| {
                Ok((
                    r.opt_text(0)?,
                    r.opt_text(1)?.unwrap_or_default(),
                    r.text(2)?,
                ))
            })
            .collect::<Result<_, DbError>>()?)
    }

    /// Samples of `device` (of one point), from `since_ns`, in time order.
    pub fn query(
        &self,
        device: &str,
        point: Option<&str>,
        since_ns: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let found = self.db.query(
            &format!(
                "SELECT {ROW} FROM samples
                 WHERE device = $1 AND (CAST($2 AS TEXT) IS NULL OR point = $2) AND ts_ns >= $3
                 ORDER BY ts_ns, seq LIMIT $4"
            ),
            args![device, point, since_ns.unwrap_or(i64::MIN), clamp(limit)],
        )?;
        rows(device, found)
    }

    /// The newest `limit` samples of `device` (of one point), newest first.
    pub fn newest(
        &self,
        device: &str,
        point: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let found = self.db.query(
            &format!(
                "SELECT {ROW} FROM samples
                 WHERE device = $1 AND (CAST($2 AS TEXT) IS NULL OR point = $2)
                 ORDER BY ts_ns DESC, seq DESC LIMIT $3"
            ),
            args![device, point, clamp(limit)],
        )?;
        rows(device, found)
    }

    /// The datastreams of a device: (point id, samples stored, time of the latest).
    pub fn streams(&self, device: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let found = self.db.query(
            "SELECT point, count(*), max(ts_ns) FROM samples WHERE device = $1
             GROUP BY point ORDER BY point",
            args![device],
        )?;
        Ok(found
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)? as u64, r.int(2)?)))
            .collect::<Result<_, DbError>>()?)
    }

    /// The latest sample of each datastream of a device.
    pub fn latest(&self, device: &str) -> Result<Vec<Row>, StoreError> {
        let found = self.db.query(
            &format!(
                "SELECT {ROW} FROM (
                     SELECT {ROW}, row_number() OVER (PARTITION BY point ORDER BY ts_ns DESC, seq DESC) AS n
                     FROM samples WHERE device = $1) newest
                 WHERE n = 1 ORDER BY point"
            ),
            args![device],
        )?;
        rows(device, found)
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
        let Some(bucket) = bucket_ns.filter(|b| *b > 0) else {
            let found = self.db.query(
                &format!(
                    "SELECT {ROW} FROM samples
                     WHERE device = $1 AND point = $2 AND ts_ns BETWEEN $3 AND $4
                     ORDER BY ts_ns, seq LIMIT $5"
                ),
                args![device, stream, from_ns, to_ns, clamp(limit)],
            )?;
            return Ok(History::Raw(rows(device, found)?));
        };
        let found = self.db.query(
            "SELECT (ts_ns / CAST($5 AS BIGINT)) * CAST($5 AS BIGINT) AS t,
                    avg(coalesce(fval, CAST(ival AS DOUBLE PRECISION))),
                    min(coalesce(fval, CAST(ival AS DOUBLE PRECISION))),
                    max(coalesce(fval, CAST(ival AS DOUBLE PRECISION))), count(*)
             FROM samples
             WHERE device = $1 AND point = $2 AND ts_ns BETWEEN $3 AND $4
               AND kind IN ('float', 'int', 'uint', 'bool')
             GROUP BY t ORDER BY t LIMIT $6",
            args![device, stream, from_ns, to_ns, bucket, clamp(limit)],
        )?;
        Ok(History::Buckets(
            found
                .iter()
                .map(|r| {
                    Ok(Bucket {
                        ts_ns: r.int(0)?,
                        avg: r.opt_real(1)?.unwrap_or(f64::NAN),
                        min: r.opt_real(2)?.unwrap_or(f64::NAN),
                        max: r.opt_real(3)?.unwrap_or(f64::NAN),
                        count: r.int(4)? as u64,
                    })
                })
                .collect::<Result<_, DbError>>()?,
        ))
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
        let found = self.db.query(
            &format!(
                "SELECT {ROW}, received_ns, device FROM samples WHERE received_ns > $1
                 ORDER BY received_ns, device, seq LIMIT $2"
            ),
            args![after_received_ns, clamp(limit)],
        )?;
        Ok(found
            .iter()
            .map(|r| Ok((r.int(10)?, row(&r.text(11)?, r)?)))
            .collect::<Result<_, DbError>>()?)
    }

    /// The sequence ranges the gateway reported as dropped, less what was stored anyway:
    /// a gateway short of disk may drop a sample it had already sent (its PUBACK still
    /// on the way), and a sample that arrived is not lost.
    pub fn gaps(&self, device: &str) -> Result<Vec<Gap>, StoreError> {
        let reported = self
            .db
            .query(
                "SELECT first, last FROM gaps WHERE device = $1 ORDER BY first",
                args![device],
            )?
            .iter()
            .map(|r| {
                Ok(Gap {
                    first: r.int(0)? as u64,
                    last: r.int(1)? as u64,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        subtract_stored(reported, |g| {
            Ok(self
                .db
                .query(
                    "SELECT seq FROM samples WHERE device = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                    args![device, g.first as i64, g.last as i64],
                )?
                .iter()
                .map(|r| r.int(0).map(|v| v as u64))
                .collect::<Result<_, DbError>>()?)
        })
    }

    /// The device watch (`cloud::watch`): `device` connected from `peer`. Done by the
    /// embedded ingest, which sees devices' addresses; behind a broker the workers do
    /// not (the broker's own connection log is the place to watch there).
    pub fn watch_connect(&self, device: &str, peer: std::net::IpAddr) -> Result<(), StoreError> {
        let device = device.to_string();
        let now = crate::sample::now_ns();
        Ok(self
            .db
            .transaction(move |tx| crate::cloud::watch::connected(tx, &device, peer, now))?)
    }

    /// The device watch: `device` sent `live` live samples now. Serialized across
    /// workers, which may each hold a share of one device's batches.
    pub fn watch_samples(&self, device: &str, live: u64) -> Result<(), StoreError> {
        let device = device.to_string();
        let now = crate::sample::now_ns();
        Ok(self
            .db
            .serialized(crate::cloud::watch::RATE_LOCK, move |tx| {
                crate::cloud::watch::samples(tx, &device, live, now)
            })?)
    }

    /// How many samples of `device` are stored.
    pub fn count(&self, device: &str) -> Result<u64, StoreError> {
        let r = self.db.query_opt(
            "SELECT count(*) FROM samples WHERE device = $1",
            args![device],
        )?;
        Ok(r.map(|r| r.int(0)).transpose()?.unwrap_or(0) as u64)
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
