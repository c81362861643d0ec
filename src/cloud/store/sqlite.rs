//! The sample store on SQLite (single node): one file beside the registry and IAM.

use super::{quality_text, subtract_stored, Bucket, History, Inserted, Row, StoreError};
use crate::protocol::{Batch, Gap, StateMessage};
use crate::sample::Value;
use rusqlite::{params, Connection};
use std::path::Path;

pub struct SqliteStore {
    conn: Connection,
}

/// A `Row` from the columns seq, point, ts_ns, kind, value, quality, time.
fn row(device: &str, r: &rusqlite::Row) -> rusqlite::Result<Row> {
    let kind: String = r.get(3)?;
    let quality: String = r.get(5)?;
    Ok(Row {
        device: device.to_string(),
        seq: r.get::<_, i64>(0)? as u64,
        point: r.get(1)?,
        ts_ns: r.get(2)?,
        value: to_json(&kind, r.get(4)?),
        quality: quality_text(quality),
        time: r.get(6)?,
    })
}

fn kind_and_value(v: &Value) -> (&'static str, rusqlite::types::Value) {
    use rusqlite::types::Value as V;
    match v {
        Value::Float(f) => ("float", V::Real(*f)),
        Value::Int(i) => ("int", V::Integer(*i)),
        Value::UInt(u) => ("uint", V::Integer(*u as i64)),
        Value::Bool(b) => ("bool", V::Integer(*b as i64)),
        Value::Str(s) => ("str", V::Text(s.clone())),
        Value::Bytes(b) => ("bytes", V::Blob(b.clone())),
        Value::Empty => ("empty", V::Null),
    }
}

fn to_json(kind: &str, v: rusqlite::types::Value) -> serde_json::Value {
    use rusqlite::types::Value as V;
    match (kind, v) {
        ("uint", V::Integer(i)) => serde_json::json!(i as u64),
        ("bool", V::Integer(i)) => serde_json::json!(i != 0),
        (_, V::Integer(i)) => serde_json::json!(i),
        (_, V::Real(f)) => serde_json::json!(f),
        (_, V::Text(s)) => serde_json::json!(s),
        (_, V::Blob(b)) => {
            serde_json::json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        (_, V::Null) => serde_json::Value::Null,
    }
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The ingest acknowledges a batch only after this commit is on disk.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS samples(
                 device TEXT NOT NULL, seq INTEGER NOT NULL, point TEXT NOT NULL,
                 ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, value, quality TEXT NOT NULL,
                 time TEXT NOT NULL, received_ns INTEGER NOT NULL,
                 PRIMARY KEY(device, seq)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS samples_by_point ON samples(device, point, ts_ns);
             CREATE TABLE IF NOT EXISTS gaps(
                 device TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
                 received_ns INTEGER NOT NULL, PRIMARY KEY(device, first, last)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS device_state(
                 device TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT, updated_ns INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS rejected(
                 id INTEGER PRIMARY KEY, device TEXT, topic TEXT, reason TEXT NOT NULL,
                 payload BLOB, received_ns INTEGER NOT NULL);",
        )?;
        conn.execute_batch(crate::cloud::registry::SCHEMA)?;
        conn.execute_batch(crate::cloud::iam::audit::SCHEMA)?;
        conn.execute_batch(crate::cloud::iam::devices::SCHEMA)?;
        conn.execute_batch(crate::cloud::watch::SCHEMA)?;
        Ok(SqliteStore { conn })
    }

    /// Stores a batch from `device` in one transaction; repeats are ignored.
    pub fn insert(&mut self, device: &str, batch: &Batch) -> Result<Inserted, StoreError> {
        let now = crate::sample::now_ns();
        let tx = self.conn.transaction()?;
        let mut n = Inserted::default();
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO samples(device, seq, point, ts_ns, kind, value, quality, time, received_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for s in &batch.samples {
                let (kind, value) = kind_and_value(&s.sample.value);
                let changed = ins.execute(params![
                    device,
                    s.seq as i64,
                    s.sample.point,
                    s.sample.ts_ns,
                    kind,
                    value,
                    serde_json::to_string(&s.sample.quality).unwrap_or_default(),
                    s.sample.time.to_string(),
                    now
                ])?;
                if changed == 1 {
                    n.new += 1;
                } else {
                    n.duplicates += 1;
                }
            }
            let mut g = tx.prepare_cached(
                "INSERT OR IGNORE INTO gaps(device, first, last, received_ns) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for gap in &batch.gaps {
                n.gaps += g.execute(params![device, gap.first as i64, gap.last as i64, now])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub fn set_state(&self, device: &str, state: &StateMessage) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO device_state(device, state, detail, updated_ns) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device) DO UPDATE SET state = ?2, detail = ?3, updated_ns = ?4",
            params![
                device,
                state.state,
                serde_json::to_string(state).unwrap_or_default(),
                crate::sample::now_ns()
            ],
        )?;
        Ok(())
    }

    pub fn state(&self, device: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT state FROM device_state WHERE device = ?1",
                [device],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Keeps a refused payload (truncated to 64 KiB) with the reason, so nothing is lost silently.
    pub fn reject(
        &self,
        device: Option<&str>,
        topic: &str,
        reason: &str,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO rejected(device, topic, reason, payload, received_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device, topic, reason, &payload[..payload.len().min(65536)], crate::sample::now_ns()],
        )?;
        Ok(())
    }

    /// Reasons of refused payloads, newest first.
    pub fn rejections(
        &self,
        limit: usize,
    ) -> Result<Vec<(Option<String>, String, String)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT device, topic, reason FROM rejected ORDER BY id DESC LIMIT ?1")?;
        let rows = q.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn query(
        &self,
        device: &str,
        point: Option<&str>,
        since_ns: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT seq, point, ts_ns, kind, value, quality, time FROM samples
             WHERE device = ?1 AND (?2 IS NULL OR point = ?2) AND ts_ns >= ?3
             ORDER BY ts_ns, seq LIMIT ?4",
        )?;
        let rows = q.query_map(
            params![device, point, since_ns.unwrap_or(i64::MIN), limit as i64],
            |r| row(device, r),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The datastreams of a device: (point id, samples stored, time of the latest).
    pub fn streams(&self, device: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT point, count(*), max(ts_ns) FROM samples WHERE device = ?1 GROUP BY point ORDER BY point",
        )?;
        let rows = q.query_map([device], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest sample of each datastream of a device.
    pub fn latest(&self, device: &str) -> Result<Vec<Row>, StoreError> {
        // SQLite takes the bare columns from the row that holds the max().
        let mut q = self.conn.prepare_cached(
            "SELECT seq, point, max(ts_ns), kind, value, quality, time FROM samples
             WHERE device = ?1 GROUP BY point ORDER BY point",
        )?;
        let rows = q.query_map([device], |r| row(device, r))?;
        Ok(rows.collect::<Result<_, _>>()?)
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
            let mut q = self.conn.prepare_cached(
                "SELECT seq, point, ts_ns, kind, value, quality, time FROM samples
                 WHERE device = ?1 AND point = ?2 AND ts_ns BETWEEN ?3 AND ?4
                 ORDER BY ts_ns, seq LIMIT ?5",
            )?;
            let rows = q.query_map(params![device, stream, from_ns, to_ns, limit as i64], |r| {
                row(device, r)
            })?;
            return Ok(History::Raw(rows.collect::<Result<_, _>>()?));
        };
        let mut q = self.conn.prepare_cached(
            "SELECT (ts_ns / ?5) * ?5 AS t, avg(value), min(value), max(value), count(*) FROM samples
             WHERE device = ?1 AND point = ?2 AND ts_ns BETWEEN ?3 AND ?4
               AND kind IN ('float', 'int', 'uint', 'bool')
             GROUP BY t ORDER BY t LIMIT ?6",
        )?;
        let rows = q.query_map(
            params![device, stream, from_ns, to_ns, bucket, limit as i64],
            |r| {
                Ok(Bucket {
                    ts_ns: r.get(0)?,
                    avg: r.get(1)?,
                    min: r.get(2)?,
                    max: r.get(3)?,
                    count: r.get::<_, i64>(4)? as u64,
                })
            },
        )?;
        Ok(History::Buckets(rows.collect::<Result<_, _>>()?))
    }

    /// Samples with `seq > after` across all devices, in arrival order (for `demo` and tails).
    pub fn tail(
        &self,
        after_received_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Row)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT seq, point, ts_ns, kind, value, quality, time, device, received_ns FROM samples
             WHERE received_ns > ?1 ORDER BY received_ns, device, seq LIMIT ?2",
        )?;
        let rows = q.query_map(params![after_received_ns, limit as i64], |r| {
            let device: String = r.get(7)?;
            Ok((r.get(8)?, row(&device, r)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sequence ranges the gateway reported as dropped, less what was stored anyway:
    /// a gateway short of disk may drop a sample it had already sent (its PUBACK still
    /// on the way), and a sample that arrived is not lost.
    pub fn gaps(&self, device: &str) -> Result<Vec<Gap>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT first, last FROM gaps WHERE device = ?1 ORDER BY first")?;
        let reported: Vec<Gap> = q
            .query_map([device], |r| {
                Ok(Gap {
                    first: r.get::<_, i64>(0)? as u64,
                    last: r.get::<_, i64>(1)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stored_in = self.conn.prepare(
            "SELECT seq FROM samples WHERE device = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
        )?;
        subtract_stored(reported, |g| {
            Ok(stored_in
                .query_map(params![device, g.first as i64, g.last as i64], |r| {
                    r.get::<_, i64>(0).map(|v| v as u64)
                })?
                .collect::<Result<_, _>>()?)
        })
    }

    /// Whether the device's identity was revoked: it is refused at connect.
    pub fn revoked(&self, device: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT reason FROM revoked WHERE device = ?1",
                [device],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a refused connection beside the enrollments (see `registry`).
    pub fn record_refusal(&self, device: &str, detail: &str, peer: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO identity_events(ts_ns, device, event, detail, peer) VALUES (?1, ?2, 'refused', ?3, ?4)",
            rusqlite::params![crate::sample::now_ns(), device, detail, peer],
        )?;
        Ok(())
    }

    pub fn watch_connect(&self, device: &str, peer: std::net::IpAddr) -> Result<(), StoreError> {
        Ok(crate::cloud::watch::connected(
            &mut crate::cloud::sql::Lite(&self.conn),
            device,
            peer,
            crate::sample::now_ns(),
        )?)
    }

    pub fn watch_samples(&self, device: &str, live: u64) -> Result<(), StoreError> {
        Ok(crate::cloud::watch::samples(
            &mut crate::cloud::sql::Lite(&self.conn),
            device,
            live,
            crate::sample::now_ns(),
        )?)
    }

    /// How many samples of `device` are stored.
    pub fn count(&self, device: &str) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM samples WHERE device = ?1",
            [device],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}
