//! The audit log: append-only, each entry hash-chained to the one before, and the chain's
//! head kept beside it, so editing, deleting or truncating is found by `verify`
//! (`fieldgate-cloud audit verify`), which names the first broken entry.

use crate::args;
use crate::cloud::sql::{Db, DbError, Exec, Row};
use sha2::{Digest, Sha256};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
    prev BLOB NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head(one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS security_events(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL,
    actor TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL);";

/// Refusals from one actor or one address within `BURST_WINDOW_NS` that make a burst.
pub const BURST_THRESHOLD: i64 = 5;
pub const BURST_WINDOW_NS: i64 = 60_000_000_000;

/// A security event: something an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityEvent {
    pub id: i64,
    pub ts_ns: i64,
    /// The tenant whose resource was asked for (empty: none named).
    pub tenant: String,
    /// `failure_burst`, `key_outside_cidr`, `device_new_network`, `data_rate_anomaly`.
    pub kind: String,
    pub actor: String,
    pub source: String,
    pub detail: String,
}

/// One access decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ts_ns: i64,
    /// Who: `key:ID`, `user:NAME`, `device:ID`, `admin`.
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// The source address.
    pub source: String,
    /// `allowed` or `refused`.
    pub outcome: String,
    pub reason: String,
}

fn chain(prev: &[u8], e: &Entry) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(e.ts_ns.to_be_bytes());
    for f in [
        &e.actor,
        &e.action,
        &e.resource,
        &e.source,
        &e.outcome,
        &e.reason,
    ] {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().to_vec()
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact { entries: u64 },
    Broken { id: i64, why: String },
}

pub fn open(db: &Db) -> Result<(), DbError> {
    db.schema(SCHEMA)
}

/// Appends to the chain are serialized across servers by this lock (PostgreSQL's
/// advisory lock; SQLite's write lock).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;

/// Appends `e` to the chain (in one transaction with the head). The transaction takes
/// the write lock before it reads the head: on SQLite a deferred one that read first
/// could not wait for another connection's write ("database is locked" at once); on
/// PostgreSQL two servers would both extend the same head.
pub fn append(db: &Db, e: &Entry) -> Result<i64, DbError> {
    let e = e.clone();
    db.serialized(CHAIN_LOCK, move |tx| {
        let (last, prev) = match tx.query_opt("SELECT id, hash FROM audit_head WHERE one = 1", &[])? {
            Some(r) => (r.int(0)?, r.blob(1)?),
            None => (0, vec![0u8; 32]),
        };
        let hash = chain(&prev, &e);
        let id = last + 1;
        tx.execute(
            "INSERT INTO audit(id, ts_ns, actor, action, resource, source, outcome, reason, prev, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            args![
                id, e.ts_ns, &e.actor, &e.action, &e.resource, &e.source, &e.outcome, &e.reason,
                prev, hash.clone()
            ],
        )?;
        tx.execute(
            "INSERT INTO audit_head(one, id, hash) VALUES (1, $1, $2)
             ON CONFLICT(one) DO UPDATE SET id = excluded.id, hash = excluded.hash",
            args![id, hash],
        )?;
        Ok(id)
    })
}

/// Appends a decision about a resource of `tenant` and, for a refusal, raises the
/// security events it calls for: a key used from outside its networks at once, and a
/// burst of refusals for one actor or from one address (once per window).
pub fn record(db: &Db, tenant: &str, e: &Entry) -> Result<(), DbError> {
    append(db, e)?;
    let mut db = db;
    if e.outcome == "allowed" {
        return Ok(());
    }
    let event = |kind: &str, detail: &str| SecurityEvent {
        id: 0,
        ts_ns: e.ts_ns,
        tenant: tenant.into(),
        kind: kind.into(),
        actor: e.actor.clone(),
        source: e.source.clone(),
        detail: detail.into(),
    };
    if e.reason == "key_source_refused" {
        raise(
            &mut db,
            &event(
                "key_outside_cidr",
                "a key was used from outside its networks",
            ),
        )?;
    }
    let since = e.ts_ns - BURST_WINDOW_NS;
    for (column, who) in [("actor", &e.actor), ("source", &e.source)] {
        let n = count(
            db,
            &format!("SELECT count(*) FROM audit WHERE outcome = 'refused' AND ts_ns > $1 AND {column} = $2"),
            since,
            who,
        )?;
        let before = count(
            db,
            &format!("SELECT count(*) FROM security_events WHERE kind = 'failure_burst' AND ts_ns > $1 AND {column} = $2"),
            since,
            who,
        )?;
        if n >= BURST_THRESHOLD && before == 0 {
            let detail = format!("{n} refusals within a minute for {column} {who}");
            raise(&mut db, &event("failure_burst", &detail))?;
        }
    }
    Ok(())
}

/// The count `sql` answers for a time and a name.
fn count(db: &Db, sql: &str, since: i64, who: &str) -> Result<i64, DbError> {
    match db.query_opt(sql, args![since, who])? {
        Some(r) => r.int(0),
        None => Ok(0),
    }
}

/// Writes a security event (its `id` is given by the table) and logs it.
pub fn raise(db: &mut dyn Exec, e: &SecurityEvent) -> Result<(), DbError> {
    tracing::warn!(
        kind = e.kind,
        actor = e.actor,
        source = e.source,
        tenant = e.tenant,
        detail = e.detail,
        "security event"
    );
    db.execute(
        "INSERT INTO security_events(ts_ns, tenant, kind, actor, source, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        args![e.ts_ns, &e.tenant, &e.kind, &e.actor, &e.source, &e.detail],
    )?;
    Ok(())
}

/// Security events after `after_id`, oldest first (for webhooks).
pub fn events_after(db: &Db, after_id: i64) -> Result<Vec<SecurityEvent>, DbError> {
    db.query(
        "SELECT id, ts_ns, tenant, kind, actor, source, detail FROM security_events
         WHERE id > $1 ORDER BY id LIMIT 1000",
        args![after_id],
    )?
    .iter()
    .map(event_row)
    .collect()
}

fn event_row(r: &Row) -> Result<SecurityEvent, DbError> {
    Ok(SecurityEvent {
        id: r.int(0)?,
        ts_ns: r.int(1)?,
        tenant: r.text(2)?,
        kind: r.text(3)?,
        actor: r.text(4)?,
        source: r.text(5)?,
        detail: r.text(6)?,
    })
}

/// Security events, of one tenant or all, oldest first.
pub fn security_events(db: &Db, tenant: Option<&str>) -> Result<Vec<SecurityEvent>, DbError> {
    db.query(
        "SELECT id, ts_ns, tenant, kind, actor, source, detail FROM security_events
         WHERE CAST($1 AS TEXT) IS NULL OR tenant = $1 ORDER BY id",
        args![tenant],
    )?
    .iter()
    .map(event_row)
    .collect()
}

/// The latest `limit` entries about resources of `tenant` (newest first).
pub fn entries(db: &Db, tenant: &str, limit: u32) -> Result<Vec<(i64, Entry)>, DbError> {
    let prefix = format!("{tenant}/");
    db.query(
        "SELECT id, ts_ns, actor, action, resource, source, outcome, reason FROM audit
         WHERE resource = $1 OR substr(resource, 1, $2) = $3
         ORDER BY id DESC LIMIT $4",
        args![tenant, prefix.chars().count() as i64, prefix, limit],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, entry_row(r)?)))
    .collect()
}

/// An entry from the columns id, ts_ns, actor, action, resource, source, outcome, reason.
fn entry_row(r: &Row) -> Result<Entry, DbError> {
    Ok(Entry {
        ts_ns: r.int(1)?,
        actor: r.text(2)?,
        action: r.text(3)?,
        resource: r.text(4)?,
        source: r.text(5)?,
        outcome: r.text(6)?,
        reason: r.text(7)?,
    })
}

/// Walks the chain from the start.
pub fn verify(db: &Db) -> Result<Verdict, DbError> {
    let rows = db.query(
        "SELECT id, ts_ns, actor, action, resource, source, outcome, reason, prev, hash FROM audit ORDER BY id",
        &[],
    )?;
    let mut expect_id = 1i64;
    let mut prev = vec![0u8; 32];
    for r in &rows {
        let id = r.int(0)?;
        let e = entry_row(r)?;
        let (stored_prev, stored_hash) = (r.blob(8)?, r.blob(9)?);
        if id != expect_id {
            return Ok(Verdict::Broken {
                id: expect_id,
                why: format!("entry {expect_id} is missing (the next one is {id})"),
            });
        }
        if stored_prev != prev {
            return Ok(Verdict::Broken {
                id,
                why: "it does not follow the entry before it".into(),
            });
        }
        if chain(&prev, &e) != stored_hash {
            return Ok(Verdict::Broken {
                id,
                why: "its content was changed after it was written".into(),
            });
        }
        prev = stored_hash;
        expect_id += 1;
    }
    let head = match db.query_opt("SELECT id, hash FROM audit_head WHERE one = 1", &[])? {
        Some(r) => Some((r.int(0)?, r.blob(1)?)),
        None => None,
    };
    let last = expect_id - 1;
    match head {
        Some((id, hash)) if id == last && hash == prev => Ok(Verdict::Intact {
            entries: last as u64,
        }),
        Some((id, _)) if id > last => Ok(Verdict::Broken {
            id: last + 1,
            why: format!("entries {} to {id} were removed from the end", last + 1),
        }),
        None if last == 0 => Ok(Verdict::Intact { entries: 0 }),
        _ => Ok(Verdict::Broken {
            id: last,
            why: "the chain's head does not match its last entry".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: i64) -> Entry {
        Entry {
            ts_ns: 1_700_000_000_000_000_000 + i,
            actor: format!("key:{i:04}"),
            action: "read".into(),
            resource: "tenant-a/dev-1/temp".into(),
            source: "192.0.2.7".into(),
            outcome: if i % 3 == 0 { "refused" } else { "allowed" }.into(),
            reason: String::new(),
        }
    }

    fn filled() -> Db {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        open(&db).unwrap();
        for i in 1..=10 {
            append(&db, &entry(i)).unwrap();
        }
        db
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&filled()).unwrap(), Verdict::Intact { entries: 10 });
    }

    #[test]
    fn edits_deletions_and_truncation_name_the_first_broken_entry() {
        let db = filled();
        db.execute("UPDATE audit SET outcome = 'allowed' WHERE id = 6", &[])
            .unwrap();
        assert!(matches!(
            verify(&db).unwrap(),
            Verdict::Broken { id: 6, .. }
        ));

        let db = filled();
        db.execute("DELETE FROM audit WHERE id = 4", &[]).unwrap();
        assert!(matches!(
            verify(&db).unwrap(),
            Verdict::Broken { id: 4, .. }
        ));

        let db = filled();
        db.execute("DELETE FROM audit WHERE id >= 9", &[]).unwrap();
        match verify(&db).unwrap() {
            Verdict::Broken { id: 9, why } => {
                assert!(why.contains("removed from the end"), "{why}")
            }
            other => panic!("{other:?}"),
        }

        // A forger who rewrites a row and its hash still breaks the next link.
        let db = filled();
        let forged = Entry {
            outcome: "allowed".into(),
            ..entry(3)
        };
        let prev = db
            .query_opt("SELECT prev FROM audit WHERE id = 3", &[])
            .unwrap()
            .unwrap()
            .blob(0)
            .unwrap();
        db.execute(
            "UPDATE audit SET outcome = 'allowed', hash = $1 WHERE id = 3",
            args![chain(&prev, &forged)],
        )
        .unwrap();
        assert!(matches!(
            verify(&db).unwrap(),
            Verdict::Broken { id: 4, .. }
        ));
    }
}
