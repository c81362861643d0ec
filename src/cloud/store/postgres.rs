//! The sample store on PostgreSQL (scale-out): the same tables and answers as the SQLite
//! store, shared by any number of stateless ingest workers. A batch is one transaction
//! of multi-row inserts (`UNNEST` of arrays) with `ON CONFLICT DO NOTHING`, so two
//! workers that receive the same batch store it once; the commit is durable
//! (`synchronous_commit` on) before the worker acknowledges to the broker.
//!
//! The client lives on a thread of its own (`sql::Link`).

use super::{quality_text, subtract_stored, Bucket, History, Inserted, Row, StoreError};
use crate::cloud::sql::{pg_serialized, postgres_ddl, postgres_schema, Link, Pg};
use crate::protocol::{Batch, Gap, StateMessage};
use crate::sample::Value;
use postgres::Client;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples(
    device TEXT NOT NULL, seq BIGINT NOT NULL, point TEXT NOT NULL, ts_ns BIGINT NOT NULL,
    kind TEXT NOT NULL, fval DOUBLE PRECISION, ival BIGINT, sval TEXT, bval BYTEA,
    quality TEXT NOT NULL, time TEXT NOT NULL, received_ns BIGINT NOT NULL,
    PRIMARY KEY(device, seq));
CREATE INDEX IF NOT EXISTS samples_by_point ON samples(device, point, ts_ns);
CREATE INDEX IF NOT EXISTS samples_by_arrival ON samples(received_ns);
CREATE TABLE IF NOT EXISTS gaps(
    device TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL,
    received_ns BIGINT NOT NULL, PRIMARY KEY(device, first, last));
CREATE TABLE IF NOT EXISTS device_state(
    device TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT, updated_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected(
    id BIGSERIAL PRIMARY KEY, device TEXT, topic TEXT, reason TEXT NOT NULL, payload BYTEA,
    received_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked(
    device TEXT PRIMARY KEY, ts_ns BIGINT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity_events(
    id BIGSERIAL PRIMARY KEY, ts_ns BIGINT NOT NULL, device TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL, peer TEXT NOT NULL);";

/// The columns a `Row` is read from, in order.
const ROW: &str = "seq, point, ts_ns, kind, fval, ival, sval, bval, quality, time";

pub struct PgStore {
    link: Link,
}

fn row(device: &str, r: &postgres::Row) -> Row {
    let kind: String = r.get(3);
    let (f, i, s, b): (Option<f64>, Option<i64>, Option<String>, Option<Vec<u8>>) =
        (r.get(4), r.get(5), r.get(6), r.get(7));
    let value = match (kind.as_str(), f, i, s, b) {
        ("uint", _, Some(i), _, _) => serde_json::json!(i as u64),
        ("bool", _, Some(i), _, _) => serde_json::json!(i != 0),
        (_, Some(f), _, _, _) => serde_json::json!(f),
        (_, _, Some(i), _, _) => serde_json::json!(i),
        (_, _, _, Some(s), _) => serde_json::json!(s),
        (_, _, _, _, Some(b)) => serde_json::json!(crate::enrollment::hex(&b)),
        _ => serde_json::Value::Null,
    };
    Row {
        device: device.to_string(),
        seq: r.get::<_, i64>(0) as u64,
        point: r.get(1),
        ts_ns: r.get(2),
        value,
        quality: quality_text(r.get(8)),
        time: r.get(9),
    }
}

/// The value in the column its kind uses: (kind, float, integer, text, bytes).
#[allow(clippy::type_complexity)]
fn columns(
    v: &Value,
) -> (
    &'static str,
    Option<f64>,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
) {
    match v {
        Value::Float(f) => ("float", Some(*f), None, None, None),
        Value::Int(i) => ("int", None, Some(*i), None, None),
        Value::UInt(u) => ("uint", None, Some(*u as i64), None, None),
        Value::Bool(b) => ("bool", None, Some(*b as i64), None, None),
        Value::Str(s) => ("str", None, None, Some(s.clone()), None),
        Value::Bytes(b) => ("bytes", None, None, None, Some(b.clone())),
        Value::Empty => ("empty", None, None, None, None),
    }
}

impl PgStore {
    /// Connects to `url` and makes the tables (once, under an advisory lock: several
    /// workers may start together). TLS as the URL's `sslmode` says (`require` to insist);
    /// the server's certificate must chain to the system's roots or to `ca`.
    pub fn connect(url: &str, ca: Option<&std::path::Path>) -> Result<PgStore, StoreError> {
        let link = Link::connect(url, ca, |db| {
            postgres_schema(db, SCHEMA)?;
            // What the device watch reads and writes.
            for ddl in [
                crate::cloud::watch::SCHEMA,
                crate::cloud::iam::audit::SCHEMA,
                crate::cloud::iam::devices::SCHEMA,
            ] {
                postgres_schema(db, &postgres_ddl(ddl))?;
            }
            Ok(())
        })?;
        Ok(PgStore { link })
    }

    /// Runs `f` with the client on its thread and waits for the answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.link.run(f)
    }

    pub fn insert(&mut self, device: &str, batch: &Batch) -> Result<Inserted, StoreError> {
        let now = crate::sample::now_ns();
        let n = batch.samples.len();
        let (mut seq, mut point, mut ts, mut kind) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut fv, mut iv, mut sv, mut bv) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut quality, mut time) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for s in &batch.samples {
            let (k, f, i, t, b) = columns(&s.sample.value);
            seq.push(s.seq as i64);
            point.push(s.sample.point.clone());
            ts.push(s.sample.ts_ns);
            kind.push(k);
            fv.push(f);
            iv.push(i);
            sv.push(t);
            bv.push(b);
            quality.push(serde_json::to_string(&s.sample.quality).unwrap_or_default());
            time.push(s.sample.time.to_string());
        }
        let device = device.to_string();
        let gap_rows: Vec<(i64, i64)> = batch
            .gaps
            .iter()
            .map(|g| (g.first as i64, g.last as i64))
            .collect();
        self.run(move |db| {
        let mut tx = db.transaction()?;
        let new = tx.execute(
            "INSERT INTO samples(device, seq, point, ts_ns, kind, fval, ival, sval, bval, quality, time, received_ns)
             SELECT $1::TEXT, *, $12::BIGINT FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[],
                 $6::FLOAT8[], $7::BIGINT[], $8::TEXT[], $9::BYTEA[], $10::TEXT[], $11::TEXT[])
             ON CONFLICT DO NOTHING",
            &[
                &device, &seq, &point, &ts, &kind, &fv, &iv, &sv, &bv, &quality, &time, &now,
            ],
        )? as usize;
        let mut gaps = 0;
        for (first, last) in &gap_rows {
            gaps += tx.execute(
                "INSERT INTO gaps(device, first, last, received_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&device, first, last, &now],
            )? as usize;
        }
        tx.commit()?;
        Ok(Inserted {
            new,
            duplicates: n - new,
            gaps,
        })
        })
    }

    pub fn set_state(&self, device: &str, state: &StateMessage) -> Result<(), StoreError> {
        let (device, name) = (device.to_string(), state.state.clone());
        let detail = serde_json::to_string(state).unwrap_or_default();
        self.run(move |db| {
            db.execute(
                "INSERT INTO device_state(device, state, detail, updated_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(device) DO UPDATE SET state = $2, detail = $3, updated_ns = $4",
                &[&device, &name, &detail, &crate::sample::now_ns()],
            )?;
            Ok(())
        })
    }

    pub fn state(&self, device: &str) -> Result<Option<String>, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            Ok(db
                .query_opt(
                    "SELECT state FROM device_state WHERE device = $1",
                    &[&device],
                )?
                .map(|r| r.get(0)))
        })
    }

    pub fn reject(
        &self,
        device: Option<&str>,
        topic: &str,
        reason: &str,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        let (device, topic, reason) = (
            device.map(str::to_string),
            topic.to_string(),
            reason.to_string(),
        );
        let payload = payload[..payload.len().min(65536)].to_vec();
        self.run(move |db| {
            db.execute(
                "INSERT INTO rejected(device, topic, reason, payload, received_ns) VALUES ($1, $2, $3, $4, $5)",
                &[&device, &topic, &reason, &payload, &crate::sample::now_ns()],
            )?;
            Ok(())
        })
    }

    #[allow(clippy::type_complexity)]
    pub fn rejections(
        &self,
        limit: usize,
    ) -> Result<Vec<(Option<String>, String, String)>, StoreError> {
        self.run(move |db| {
            Ok(db
                .query(
                    "SELECT device, topic, reason FROM rejected ORDER BY id DESC LIMIT $1",
                    &[&clamp(limit)],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    pub fn query(
        &self,
        device: &str,
        point: Option<&str>,
        since_ns: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let (device, point) = (device.to_string(), point.map(str::to_string));
        self.run(move |db| {
            let rows = db.query(
                &format!(
                    "SELECT {ROW} FROM samples
                     WHERE device = $1 AND ($2::TEXT IS NULL OR point = $2) AND ts_ns >= $3
                     ORDER BY ts_ns, seq LIMIT $4"
                ),
                &[
                    &device,
                    &point,
                    &since_ns.unwrap_or(i64::MIN),
                    &clamp(limit),
                ],
            )?;
            Ok(rows.iter().map(|r| row(&device, r)).collect())
        })
    }

    pub fn streams(&self, device: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            Ok(db
                .query(
                    "SELECT point, count(*), max(ts_ns) FROM samples WHERE device = $1
                     GROUP BY point ORDER BY point",
                    &[&device],
                )?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
                .collect())
        })
    }

    pub fn latest(&self, device: &str) -> Result<Vec<Row>, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            let rows = db.query(
                &format!(
                    "SELECT DISTINCT ON (point) {ROW} FROM samples WHERE device = $1
                     ORDER BY point, ts_ns DESC, seq DESC"
                ),
                &[&device],
            )?;
            Ok(rows.iter().map(|r| row(&device, r)).collect())
        })
    }

    pub fn history(
        &self,
        device: &str,
        stream: &str,
        from_ns: i64,
        to_ns: i64,
        bucket_ns: Option<i64>,
        limit: usize,
    ) -> Result<History, StoreError> {
        let (device, stream, limit) = (device.to_string(), stream.to_string(), clamp(limit));
        self.run(move |db| {
            let Some(bucket) = bucket_ns.filter(|b| *b > 0) else {
                let rows = db.query(
                    &format!(
                        "SELECT {ROW} FROM samples
                         WHERE device = $1 AND point = $2 AND ts_ns BETWEEN $3 AND $4
                         ORDER BY ts_ns, seq LIMIT $5"
                    ),
                    &[&device, &stream, &from_ns, &to_ns, &limit],
                )?;
                return Ok(History::Raw(rows.iter().map(|r| row(&device, r)).collect()));
            };
            let rows = db.query(
                "SELECT (ts_ns / $5::BIGINT) * $5::BIGINT AS t, avg(coalesce(fval, ival::FLOAT8)),
                        min(coalesce(fval, ival::FLOAT8)), max(coalesce(fval, ival::FLOAT8)), count(*)
                 FROM samples
                 WHERE device = $1 AND point = $2 AND ts_ns BETWEEN $3 AND $4
                   AND kind IN ('float', 'int', 'uint', 'bool')
                 GROUP BY t ORDER BY t LIMIT $6",
                &[&device, &stream, &from_ns, &to_ns, &bucket, &limit],
            )?;
            Ok(History::Buckets(
                rows.iter()
                    .map(|r| Bucket {
                        ts_ns: r.get(0),
                        avg: r.get(1),
                        min: r.get(2),
                        max: r.get(3),
                        count: r.get::<_, i64>(4) as u64,
                    })
                    .collect(),
            ))
        })
    }

    pub fn tail(
        &self,
        after_received_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Row)>, StoreError> {
        self.run(move |db| {
            let rows = db.query(
                &format!(
                    "SELECT {ROW}, received_ns, device FROM samples WHERE received_ns > $1
                     ORDER BY received_ns, device, seq LIMIT $2"
                ),
                &[&after_received_ns, &clamp(limit)],
            )?;
            Ok(rows
                .iter()
                .map(|r| (r.get(10), row(r.get::<_, &str>(11), r)))
                .collect())
        })
    }

    pub fn gaps(&self, device: &str) -> Result<Vec<Gap>, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            let reported: Vec<Gap> = db
                .query(
                    "SELECT first, last FROM gaps WHERE device = $1 ORDER BY first",
                    &[&device],
                )?
                .iter()
                .map(|r| Gap {
                    first: r.get::<_, i64>(0) as u64,
                    last: r.get::<_, i64>(1) as u64,
                })
                .collect();
            subtract_stored(reported, |g| {
                Ok(db
                    .query(
                        "SELECT seq FROM samples WHERE device = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                        &[&device, &(g.first as i64), &(g.last as i64)],
                    )?
                    .iter()
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .collect())
            })
        })
    }

    pub fn revoked(&self, device: &str) -> Result<Option<String>, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            Ok(db
                .query_opt("SELECT reason FROM revoked WHERE device = $1", &[&device])?
                .map(|r| r.get(0)))
        })
    }

    pub fn record_refusal(&self, device: &str, detail: &str, peer: &str) -> Result<(), StoreError> {
        let (device, detail, peer) = (device.to_string(), detail.to_string(), peer.to_string());
        self.run(move |db| {
            db.execute(
                "INSERT INTO identity_events(ts_ns, device, event, detail, peer) VALUES ($1, $2, 'refused', $3, $4)",
                &[&crate::sample::now_ns(), &device, &detail, &peer],
            )?;
            Ok(())
        })
    }

    /// The device watch (`cloud::watch`): a connection from `peer`.
    pub fn watch_connect(&self, device: &str, peer: std::net::IpAddr) -> Result<(), StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            let now = crate::sample::now_ns();
            Ok(crate::cloud::watch::connected(
                &mut Pg(db),
                &device,
                peer,
                now,
            )?)
        })
    }

    /// The device watch: `live` live samples now. Serialized across workers, which may
    /// each hold a share of one device's batches.
    pub fn watch_samples(&self, device: &str, live: u64) -> Result<(), StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            let now = crate::sample::now_ns();
            Ok(pg_serialized(db, crate::cloud::watch::RATE_LOCK, |tx| {
                crate::cloud::watch::samples(tx, &device, live, now)
            })?)
        })
    }

    pub fn count(&self, device: &str) -> Result<u64, StoreError> {
        let device = device.to_string();
        self.run(move |db| {
            Ok(db
                .query_one("SELECT count(*) FROM samples WHERE device = $1", &[&device])?
                .get::<_, i64>(0) as u64)
        })
    }
}

/// A row limit as PostgreSQL takes it.
fn clamp(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}
