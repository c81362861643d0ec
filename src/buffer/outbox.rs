//! The durable outbox: samples committed to SQLite (WAL, synchronous=FULL) with a
//! per-gateway sequence number, deleted only once the cloud has acknowledged them.
//!
//! Synchronous and single-threaded; `buffer::Buffer` runs it on its own thread.

use super::Entry;
use crate::protocol::{Gap, Sequenced};
use crate::sample::{Quality, Sample, TimeQuality, Value};
use crate::schema::{Migration, Schema, Step};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// Fixed cost of a row beside its payload (key, index entry, page overhead), for the cap.
const ROW_OVERHEAD: u64 = 40;
/// The write-ahead log is checkpointed every 256 pages and truncated to this size, so it
/// stays small beside the database.
const WAL_LIMIT: u64 = 1 << 20;
/// Space held back in `buffer.reserve` and released when the disk fills up, so that
/// acknowledged samples can still be deleted (a delete needs room in the WAL, and a
/// checkpoint needs room for up to WAL_LIMIT in the database).
const RESERVE_BYTES: u64 = 2 * WAL_LIMIT;
/// After the reserve was released, try to take it back at most this often.
const RESERVE_RETRY: std::time::Duration = std::time::Duration::from_secs(10);
/// Free space the buffer leaves on its filesystem (room for the WAL and a margin): below
/// it, the oldest samples of the lowest class make room as at the cap, with gap records.
const DISK_FLOOR: u64 = WAL_LIMIT + (1 << 20);

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the disk is full: {0} (the samples of this group are not accepted; committed data is intact)")]
    DiskFull(String),
    #[error("buffer database {path}: {error}")]
    Open {
        path: String,
        error: rusqlite::Error,
    },
    #[error("buffer database: {0}")]
    Sql(rusqlite::Error),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    #[error("cannot start the buffer thread: {0}")]
    Thread(String),
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => OutboxError::DiskFull(e.to_string()),
            _ => OutboxError::Sql(e),
        }
    }
}

/// The outbox's schema: one numbered list of migrations, forward only (`schema`).
/// A rollback to the previous release must still deliver what this one buffered: every
/// migration here is one that release can read (docs/storage.md).
pub const SCHEMA: Schema = Schema {
    name: "gateway buffer",
    migrations: &[
        Migration {
            version: 1,
            what: "the outbox of release 0.1: samples, gap records, counters",
            older_can_read: false,
            steps: &[Step {
                owner: "buffer::outbox",
                sql: "CREATE TABLE IF NOT EXISTS outbox(
                          seq   INTEGER PRIMARY KEY AUTOINCREMENT,
                          class INTEGER NOT NULL,
                          ts_ns INTEGER NOT NULL,
                          mono_ns INTEGER NOT NULL,
                          boot  TEXT NOT NULL,
                          tq    INTEGER NOT NULL,
                          point TEXT NOT NULL,
                          body  BLOB NOT NULL,
                          size  INTEGER NOT NULL);
                      CREATE INDEX IF NOT EXISTS outbox_by_class ON outbox(class, seq);
                      CREATE TABLE IF NOT EXISTS gaps(first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
                      CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
                postgres: None,
            }],
        },
        Migration {
            version: 2,
            what: "each row says how its body is encoded (release 0.1's rows: format 1)",
            older_can_read: true,
            steps: &[Step {
                owner: "buffer::outbox",
                sql: "ALTER TABLE outbox ADD COLUMN format INTEGER NOT NULL DEFAULT 1;",
                postgres: None,
            }],
        },
        Migration {
            version: 3,
            what: "the downlink's commands, each done once, and their replies until sent",
            older_can_read: true,
            steps: &[Step {
                owner: "buffer::commands",
                sql: "CREATE TABLE commands(
                          id TEXT PRIMARY KEY,
                          kind TEXT NOT NULL,
                          received_ns INTEGER NOT NULL,
                          reply BLOB,
                          reply_sent INTEGER NOT NULL DEFAULT 0);",
                postgres: None,
            }],
        },
    ],
};

/// The encodings of a row's body this release reads: 1, postcard of `Body`.
/// A release that adds one writes it only once its update is committed, so the release
/// before it never meets a row it cannot read (docs/storage.md).
const BODY_FORMAT: i64 = 1;

/// What is stored per row beside the point and timestamps (body format 1; its fields
/// and their order are fixed: postcard has no field names).
#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    value: Value,
    quality: Quality,
}

fn tq_code(t: TimeQuality) -> i64 {
    match t {
        TimeQuality::Synced => 0,
        TimeQuality::Corrected => 1,
        TimeQuality::Unsynced => 2,
    }
}

fn tq_of(code: i64) -> TimeQuality {
    match code {
        0 => TimeQuality::Synced,
        1 => TimeQuality::Corrected,
        _ => TimeQuality::Unsynced,
    }
}

/// Depth and health of the buffer, for status and the birth message.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Samples waiting for the cloud's acknowledgement.
    pub depth: u64,
    /// Bytes they take by the cap's accounting.
    pub bytes: u64,
    /// Timestamp of the oldest waiting sample.
    pub oldest_ts_ns: Option<i64>,
    /// Samples dropped at the cap or by age since the buffer was created.
    pub dropped: u64,
    /// The last sequence number given out.
    pub last_seq: u64,
    /// Gap records not yet acknowledged by the cloud.
    pub pending_gaps: u64,
    /// Samples received and waiting for their commit group (not yet accepted).
    #[serde(default)]
    pub uncommitted: u64,
}

pub struct Outbox {
    conn: Connection,
    max_bytes: u64,
    max_age_ns: Option<i64>,
    bytes: u64,
    /// This boot's id, stored with each row so boot-clock readings are corrected only
    /// within the boot they were taken in.
    boot: String,
    /// The reserve file, and when it was last released (None while it is in place).
    reserve: std::path::PathBuf,
    released_at: Option<std::time::Instant>,
    /// When the last "filesystem nearly full" warning was logged (once a minute at most).
    warned_room: Option<std::time::Instant>,
}

impl Outbox {
    /// The connection, for the other tables of this database (`buffer::commands`).
    /// Writes `value` under the `probe` counter and reads it back: the health check of
    /// a new version (a row of the counters table, no schema change).
    pub(super) fn probe(&mut self, value: i64) -> Result<(), OutboxError> {
        self.conn.execute(
            "INSERT INTO counters(name, value) VALUES ('probe', ?1)
             ON CONFLICT(name) DO UPDATE SET value = ?1",
            [value],
        )?;
        let back: i64 =
            self.conn
                .query_row("SELECT value FROM counters WHERE name = 'probe'", [], |r| {
                    r.get(0)
                })?;
        if back != value {
            return Err(OutboxError::Sql(rusqlite::Error::QueryReturnedNoRows));
        }
        Ok(())
    }

    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_age_ns: Option<i64>,
        boot: &str,
    ) -> Result<Outbox, OutboxError> {
        let open_err = |error| OutboxError::Open {
            path: path.display().to_string(),
            error,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL with synchronous=FULL: a commit is on disk (fsync of the WAL) before it
        // returns, so it survives a power cut, not only a crash.
        // Incremental auto-vacuum lets freed pages go back to the filesystem, so the
        // disk-full reserve can be taken back after a drain. (Only takes effect on a new file.)
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_LIMIT / 4096)
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
            .map_err(open_err)?;
        SCHEMA.migrate_sqlite(&mut conn, &path.display().to_string())?;
        let bytes: i64 = conn
            .query_row("SELECT COALESCE(SUM(size), 0) FROM outbox", [], |r| {
                r.get(0)
            })
            .map_err(open_err)?;
        Ok(Outbox {
            conn,
            max_bytes,
            max_age_ns,
            bytes: bytes as u64,
            boot: boot.to_string(),
            reserve: path.with_extension("reserve"),
            released_at: None,
            warned_room: None,
        })
        .map(|mut o| {
            o.take_reserve();
            o
        })
    }

    /// Makes sure the reserve file is in place; gives up quietly if there is no room.
    fn take_reserve(&mut self) {
        let have = std::fs::metadata(&self.reserve)
            .map(|m| m.len())
            .unwrap_or(0);
        if have >= RESERVE_BYTES {
            self.released_at = None;
            return;
        }
        let r = std::fs::File::create(&self.reserve).and_then(|mut f| {
            use std::io::Write;
            let zeros = vec![0u8; 64 * 1024];
            for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
                f.write_all(&zeros)?;
            }
            f.sync_all()
        });
        match r {
            Ok(()) => self.released_at = None,
            Err(e) => {
                let _ = std::fs::remove_file(&self.reserve);
                self.released_at = Some(std::time::Instant::now());
                tracing::warn!(error = %e, path = %self.reserve.display(), "cannot set aside the disk-full reserve");
            }
        }
    }

    /// The disk is full: release the reserve and checkpoint the WAL so that deletes (and
    /// then new samples, in the freed pages) fit again. True if there was a reserve.
    fn release_reserve(&mut self) -> bool {
        if std::fs::remove_file(&self.reserve).is_err() {
            return false;
        }
        self.released_at = Some(std::time::Instant::now());
        tracing::warn!(
            "the disk is full: released the {} reserve so acknowledged samples can be deleted",
            crate::bytesize::ByteSize(RESERVE_BYTES)
        );
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        true
    }

    /// Runs `op`; on a full disk releases the reserve and tries once more.
    fn with_reserve<T>(
        &mut self,
        op: impl Fn(&mut Self) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        match op(self) {
            Err(OutboxError::DiskFull(_)) if self.release_reserve() => op(self),
            r => r,
        }
    }

    /// Limits the database file to `pages` pages (tests use this to fill the "disk").
    pub fn set_max_pages(&self, pages: u64) -> Result<(), OutboxError> {
        self.conn.pragma_update(None, "max_page_count", pages)?;
        Ok(())
    }

    /// Commits a group of samples in one transaction (one fsync); returns their sequence
    /// numbers. Applies the size and age caps in the same transaction.
    /// (The reserve is kept for deletes: a full disk fails the append, not the drain.)
    pub fn append(&mut self, entries: &[Entry], now_ns: i64) -> Result<Vec<u64>, OutboxError> {
        let room = self.disk_room();
        let tx = self.conn.transaction()?;
        let mut seqs = Vec::with_capacity(entries.len());
        let mut added = 0u64;
        let mut dropped: Vec<u64> = Vec::new();
        let incoming: u64 = entries
            .iter()
            .map(|e| e.sample.point.len() as u64 + ROW_OVERHEAD + 16)
            .sum();
        let mut bytes = self.bytes;
        if let Some(room) = room.filter(|r| *r < incoming) {
            // The filesystem is nearly full: make room first, so the inserts below reuse
            // the freed pages instead of growing the file.
            let target = (bytes + room).saturating_sub(incoming);
            trim(&tx, &mut bytes, target, &mut dropped)?;
            if self
                .warned_room
                .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60))
            {
                tracing::warn!(dropped = dropped.len(), "the filesystem of the buffer is nearly full: the oldest samples make room (reported as gaps)");
                self.warned_room = Some(std::time::Instant::now());
            }
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox(class, ts_ns, mono_ns, boot, tq, point, body, size, format)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for e in entries {
                let s = &e.sample;
                let body = postcard::to_stdvec(&Body {
                    value: s.value.clone(),
                    quality: s.quality.clone(),
                })
                .unwrap_or_default();
                let size = body.len() as u64 + s.point.len() as u64 + ROW_OVERHEAD;
                ins.execute(params![
                    e.class.rank(),
                    s.ts_ns,
                    e.mono_ns,
                    self.boot,
                    tq_code(s.time),
                    s.point,
                    body,
                    size as i64,
                    BODY_FORMAT
                ])?;
                seqs.push(tx.last_insert_rowid() as u64);
                added += size;
            }
        }
        bytes += added;
        if let Some(age) = self.max_age_ns {
            let cutoff = now_ns.saturating_sub(age);
            // Unsynced timestamps say nothing about age; they wait for their correction.
            let mut q =
                tx.prepare_cached("SELECT seq, size FROM outbox WHERE ts_ns < ?1 AND tq != 2")?;
            let rows: Vec<(u64, u64)> = q
                .query_map([cutoff], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<_, _>>()?;
            for (seq, size) in rows {
                dropped.push(seq);
                bytes -= size.min(bytes);
            }
            tx.execute("DELETE FROM outbox WHERE ts_ns < ?1 AND tq != 2", [cutoff])?;
        }
        trim(&tx, &mut bytes, self.max_bytes, &mut dropped)?;
        if !dropped.is_empty() {
            dropped.sort_unstable();
            let mut ins =
                tx.prepare_cached("INSERT OR REPLACE INTO gaps(first, last) VALUES (?1, ?2)")?;
            for g in ranges(&dropped) {
                ins.execute(params![g.first as i64, g.last as i64])?;
            }
            tx.execute(
                "INSERT INTO counters(name, value) VALUES ('dropped', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = value + ?1",
                [dropped.len() as i64],
            )?;
        }
        tx.commit()?;
        self.bytes = bytes;
        Ok(seqs)
    }

    /// Up to `limit` samples with `after < seq <= upto`, in sequence order. Rows in a body
    /// format this release does not know (a newer release's, after a rollback) stay in
    /// the outbox for the release that wrote them.
    pub fn fetch(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Sequenced>, OutboxError> {
        let mut q = self.conn.prepare_cached(
            "SELECT seq, ts_ns, point, body, tq FROM outbox
             WHERE seq > ?1 AND seq <= ?2 AND format <= ?4 ORDER BY seq LIMIT ?3",
        )?;
        let rows = q.query_map(
            params![
                after.min(i64::MAX as u64) as i64,
                upto.min(i64::MAX as u64) as i64,
                limit as i64,
                BODY_FORMAT
            ],
            |r| {
                let body: Vec<u8> = r.get(3)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    body,
                    r.get::<_, i64>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, ts_ns, point, body, tq) = row?;
            let b: Body = postcard::from_bytes(&body).unwrap_or(Body {
                value: Value::Empty,
                quality: Quality::Invalid("buffer row could not be decoded".into()),
            });
            out.push(Sequenced {
                seq,
                sample: Sample {
                    point,
                    ts_ns,
                    value: b.value,
                    quality: b.quality,
                    time: tq_of(tq),
                },
            });
        }
        Ok(out)
    }

    /// The clock of this boot is now synchronised: samples taken before, in this boot, get
    /// `boot clock + offset` as their timestamp and are marked corrected. Samples of
    /// earlier boots cannot be corrected and stay marked unsynced. Returns how many.
    pub fn correct_clock(&mut self, offset_ns: i64) -> Result<usize, OutboxError> {
        Ok(self.conn.execute(
            "UPDATE outbox SET ts_ns = mono_ns + ?1, tq = 1 WHERE tq = 2 AND boot = ?2",
            params![offset_ns, self.boot],
        )?)
    }

    /// The cloud acknowledged these samples and gaps: forget them.
    pub fn ack(&mut self, seqs: &[Gap], gaps: &[Gap]) -> Result<(), OutboxError> {
        self.with_reserve(|o| o.ack_once(seqs, gaps))?;
        if self
            .released_at
            .is_some_and(|t| t.elapsed() > RESERVE_RETRY)
        {
            // Give the freed pages back to the filesystem, then set the reserve aside again.
            let _ = self
                .conn
                .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);");
            self.take_reserve();
        }
        Ok(())
    }

    /// Bytes the buffer may still grow by on its filesystem (free space above the floor
    /// plus free pages inside the file); None if it cannot be measured.
    fn disk_room(&self) -> Option<u64> {
        let dir = self
            .reserve
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        let inside: u64 = self
            .conn
            .query_row(
                "SELECT freelist_count * page_size FROM pragma_freelist_count, pragma_page_size",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0) as u64;
        Some(free.saturating_sub(DISK_FLOOR) + inside)
    }

    fn ack_once(&mut self, seqs: &[Gap], gaps: &[Gap]) -> Result<(), OutboxError> {
        let tx = self.conn.transaction()?;
        let mut freed = 0u64;
        for r in seqs {
            let (f, l) = (r.first as i64, r.last as i64);
            freed += tx.query_row(
                "SELECT COALESCE(SUM(size), 0) FROM outbox WHERE seq BETWEEN ?1 AND ?2",
                [f, l],
                |row| row.get::<_, i64>(0),
            )? as u64;
            tx.execute("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2", [f, l])?;
        }
        for g in gaps {
            tx.execute("DELETE FROM gaps WHERE first = ?1", [g.first as i64])?;
        }
        tx.commit()?;
        self.bytes -= freed.min(self.bytes);
        Ok(())
    }

    /// Gap records waiting to be sent.
    pub fn gaps(&self, limit: usize) -> Result<Vec<Gap>, OutboxError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT first, last FROM gaps ORDER BY first LIMIT ?1")?;
        let rows = q.query_map([limit as i64], |r| {
            Ok(Gap {
                first: r.get::<_, i64>(0)? as u64,
                last: r.get::<_, i64>(1)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest sequence number in the buffer (0 when empty).
    pub fn max_seq(&self) -> Result<u64, OutboxError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn stats(&self) -> Result<Stats, OutboxError> {
        let (depth, oldest): (i64, Option<i64>) =
            self.conn
                .query_row("SELECT COUNT(*), MIN(ts_ns) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let dropped: i64 = self
            .conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'dropped'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let last_seq: i64 = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let pending_gaps: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM gaps", [], |r| r.get(0))?;
        Ok(Stats {
            depth: depth as u64,
            bytes: self.bytes,
            oldest_ts_ns: oldest,
            dropped: dropped as u64,
            last_seq: last_seq as u64,
            pending_gaps: pending_gaps as u64,
            uncommitted: 0,
        })
    }
}

/// Deletes the oldest samples of the lowest class present until `bytes <= target`,
/// recording what it dropped.
fn trim(
    tx: &rusqlite::Transaction<'_>,
    bytes: &mut u64,
    target: u64,
    dropped: &mut Vec<u64>,
) -> Result<(), OutboxError> {
    while *bytes > target {
        let mut q = tx.prepare_cached(
            "SELECT seq, size FROM outbox WHERE class = (SELECT MIN(class) FROM outbox)
             ORDER BY seq LIMIT 512",
        )?;
        let rows: Vec<(u64, u64)> = q
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            break;
        }
        let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for (seq, size) in rows {
            if *bytes <= target {
                break;
            }
            del.execute([seq as i64])?;
            dropped.push(seq);
            *bytes -= size.min(*bytes);
        }
    }
    Ok(())
}

/// Folds sorted sequence numbers into inclusive ranges.
pub fn ranges(sorted: &[u64]) -> Vec<Gap> {
    let mut out: Vec<Gap> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some(g) if g.last + 1 == s => g.last = s,
            Some(g) if g.last >= s => {}
            _ => out.push(Gap { first: s, last: s }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Class;

    fn e(sample: Sample, class: Class) -> Entry {
        Entry {
            sample,
            class,
            mono_ns: 0,
        }
    }

    fn s(point: &str, ts: i64, v: f64) -> Sample {
        Sample {
            point: point.into(),
            ts_ns: ts,
            value: Value::Float(v),
            quality: Quality::Good,
            time: TimeQuality::Synced,
        }
    }

    #[test]
    fn sequence_numbers_survive_reopen_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.db");
        let mut o = Outbox::open(&p, 1 << 30, None, "b1").unwrap();
        let a = o
            .append(
                &[
                    e(s("x", 1, 1.0), Class::Telemetry),
                    e(s("x", 2, 2.0), Class::Telemetry),
                ],
                0,
            )
            .unwrap();
        assert_eq!(a, vec![1, 2]);
        o.ack(&[Gap { first: 1, last: 2 }], &[]).unwrap();
        drop(o);
        let mut o = Outbox::open(&p, 1 << 30, None, "b1").unwrap();
        assert_eq!(o.stats().unwrap().depth, 0);
        assert_eq!(
            o.append(&[e(s("x", 3, 3.0), Class::Telemetry)], 0).unwrap(),
            vec![3]
        );
        let got = o.fetch(0, u64::MAX, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].sample, s("x", 3, 3.0));
    }

    #[test]
    fn the_cap_drops_oldest_telemetry_first_and_records_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("b.db"), 100_000, None, "b1").unwrap();
        for round in 0..40i64 {
            let mut group = Vec::new();
            for i in 0..50 {
                group.push(e(s("t", round * 100 + i, 0.0), Class::Telemetry));
            }
            group.push(e(s("alarm", round * 100 + 99, 1.0), Class::Alarm));
            o.append(&group, 0).unwrap();
        }
        let st = o.stats().unwrap();
        assert!(st.bytes <= 100_000, "{st:?}");
        assert!(st.dropped > 0);
        let kept = o.fetch(0, u64::MAX, 100_000).unwrap();
        assert_eq!(
            kept.iter().filter(|k| k.sample.point == "alarm").count(),
            40,
            "every alarm survives"
        );
        let gaps = o.gaps(10_000).unwrap();
        let lost: u64 = gaps.iter().map(|g| g.last - g.first + 1).sum();
        assert_eq!(lost, st.dropped);
        // every sequence number is either kept or inside exactly one gap
        for seq in 1..=st.last_seq {
            let in_gap = gaps
                .iter()
                .filter(|g| g.first <= seq && seq <= g.last)
                .count();
            let kept_n = kept.iter().filter(|k| k.seq == seq).count();
            assert_eq!(in_gap + kept_n, 1, "seq {seq}");
        }
        // the oldest went first: the kept telemetry is the newest
        let oldest_kept_t = kept.iter().find(|k| k.sample.point == "t").unwrap().seq;
        assert!(gaps
            .iter()
            .all(|g| g.last < oldest_kept_t || g.first > oldest_kept_t));
    }

    #[test]
    fn age_cap_drops_old_samples() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("b.db"), 1 << 30, Some(1000), "b1").unwrap();
        o.append(&[e(s("a", 0, 0.0), Class::Alarm)], 0).unwrap();
        o.append(&[e(s("a", 5000, 0.0), Class::Alarm)], 5000)
            .unwrap();
        assert_eq!(o.gaps(10).unwrap(), vec![Gap { first: 1, last: 1 }]);
        assert_eq!(o.stats().unwrap().depth, 1);
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.db");
        let mut o = Outbox::open(&p, 1 << 30, None, "b1").unwrap();
        o.append(&[e(s("a", 1, 1.0), Class::Telemetry)], 0).unwrap();
        let pages: u64 = o
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        o.set_max_pages(pages + 1).unwrap();
        let big: Vec<_> = (0..5000)
            .map(|i| {
                e(
                    s("a-long-point-name-to-fill-pages", i, 1.0),
                    Class::Telemetry,
                )
            })
            .collect();
        let err = o.append(&big, 0).unwrap_err();
        assert!(matches!(err, OutboxError::DiskFull(_)), "{err}");
        assert!(err.to_string().contains("disk is full"));
        drop(o);
        let o = Outbox::open(&p, 1 << 30, None, "b1").unwrap();
        let ok: String = o
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        assert_eq!(o.fetch(0, u64::MAX, 10).unwrap().len(), 1);
    }

    #[test]
    fn unsynced_samples_of_this_boot_are_corrected_others_stay_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.db");
        let unsynced = |mono| Entry {
            sample: Sample {
                time: TimeQuality::Unsynced,
                ..s("a", 86_400_000_000_000, 1.0)
            },
            class: Class::Telemetry,
            mono_ns: mono,
        };
        let mut old_boot = Outbox::open(&p, 1 << 30, Some(1_000_000), "boot-1").unwrap();
        old_boot.append(&[unsynced(5)], 0).unwrap();
        drop(old_boot);
        let mut o = Outbox::open(&p, 1 << 30, Some(1_000_000), "boot-2").unwrap();
        // the age cap does not judge unsynced timestamps (they may say 1970)
        o.append(
            &[
                unsynced(7_000),
                e(s("a", 2_000_000_000_000_000_000, 2.0), Class::Telemetry),
            ],
            2_000_000_000_000_000_000,
        )
        .unwrap();
        assert_eq!(o.stats().unwrap().depth, 3);
        assert_eq!(o.correct_clock(1_700_000_000_000_000_000).unwrap(), 1);
        let rows = o.fetch(0, u64::MAX, 10).unwrap();
        assert_eq!(
            rows[0].sample.time,
            TimeQuality::Unsynced,
            "another boot's reading cannot be corrected"
        );
        assert_eq!(rows[1].sample.time, TimeQuality::Corrected);
        assert_eq!(rows[1].sample.ts_ns, 1_700_000_000_000_007_000);
        assert_eq!(rows[2].sample.time, TimeQuality::Synced);
    }

    #[test]
    fn ranges_fold() {
        assert_eq!(
            ranges(&[1, 2, 3, 7, 9, 10]),
            vec![
                Gap { first: 1, last: 3 },
                Gap { first: 7, last: 7 },
                Gap { first: 9, last: 10 }
            ]
        );
    }
}
