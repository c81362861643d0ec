//! The audit log: append-only, each entry chained to the one before by a MAC whose key
//! the database does not hold, the chain's head kept beside it and every head also
//! written to a checkpoint file (`anchor`), so editing, deleting, re-hashing or
//! truncating is found by `verify` (`fieldgate-cloud audit verify`), which names the
//! first broken entry.

use super::anchor::Anchor;
use crate::args;
use crate::cloud::sql::{Db, DbError, Exec, Row};
use sha2::{Digest, Sha256};

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

/// The bytes an entry's link covers: the one before it, then every field with its
/// length.
fn covered(prev: &[u8], e: &Entry) -> Vec<u8> {
    let mut b = prev.to_vec();
    b.extend(e.ts_ns.to_be_bytes());
    for f in [
        &e.actor,
        &e.action,
        &e.resource,
        &e.source,
        &e.outcome,
        &e.reason,
    ] {
        b.extend((f.len() as u64).to_be_bytes());
        b.extend(f.as_bytes());
    }
    b
}

/// An entry's link: HMAC-SHA256 under the anchor's key; entries written before the key
/// existed (`legacy`) carry a plain SHA-256.
fn chain(key: Option<&[u8; 32]>, prev: &[u8], e: &Entry) -> Vec<u8> {
    let bytes = covered(prev, e);
    match key {
        Some(k) => {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
            ring::hmac::sign(&k, &bytes).as_ref().to_vec()
        }
        None => Sha256::digest(&bytes).to_vec(),
    }
}

/// The chain's head: (id, link) of its last entry.
pub fn head(db: &Db) -> Result<Option<(i64, Vec<u8>)>, DbError> {
    match db.query_opt("SELECT id, hash FROM audit_head WHERE one = 1", &[])? {
        Some(r) => Ok(Some((r.int(0)?, r.blob(1)?))),
        None => Ok(None),
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact { entries: u64 },
    Broken { id: i64, why: String },
}

/// Appends to the chain are serialized across servers by this lock (PostgreSQL's
/// advisory lock; SQLite's write lock).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;

/// Appends `e` to the chain (in one transaction with the head). The transaction takes
/// the write lock before it reads the head: on SQLite a deferred one that read first
/// could not wait for another connection's write ("database is locked" at once); on
/// PostgreSQL two servers would both extend the same head.
pub fn append(db: &Db, anchor: &Anchor, e: &Entry) -> Result<i64, DbError> {
    let e = e.clone();
    let key = *anchor.key();
    let (id, mac) = db.serialized(CHAIN_LOCK, move |tx| {
        let (last, prev) = match tx.query_opt("SELECT id, hash FROM audit_head WHERE one = 1", &[])? {
            Some(r) => (r.int(0)?, r.blob(1)?),
            None => (0, vec![0u8; 32]),
        };
        let hash = chain(Some(&key), &prev, &e);
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
            args![id, hash.clone()],
        )?;
        Ok((id, hash))
    })?;
    anchor.checkpoint(id, &mac);
    Ok(id)
}

/// Appends a decision about a resource of `tenant` and, for a refusal, raises the
/// security events it calls for: a key used from outside its networks at once, and a
/// burst of refusals for one actor or from one address (once per window).
pub fn record(db: &Db, anchor: &Anchor, tenant: &str, e: &Entry) -> Result<(), DbError> {
    append(db, anchor, e)?;
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

/// Walks the chain from the start, each link checked with the anchor's key, then the
/// anchor's checkpoints against it.
pub fn verify(db: &Db, anchor: &Anchor) -> Result<Verdict, super::anchor::AnchorError> {
    let rows = db.query(
        "SELECT id, ts_ns, actor, action, resource, source, outcome, reason, prev, hash FROM audit ORDER BY id",
        &[],
    )?;
    let mut links = std::collections::HashMap::new();
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
        let key = (id > anchor.keyed_after()).then_some(anchor.key());
        if chain(key, &prev, &e) != stored_hash {
            return Ok(Verdict::Broken {
                id,
                why: "its content was changed after it was written (or its link made without the audit key)".into(),
            });
        }
        links.insert(id, stored_hash.clone());
        prev = stored_hash;
        expect_id += 1;
    }
    let last = expect_id - 1;
    // The checkpoints outside the database: each names an entry that must be there.
    let mut checkpoints = anchor.checkpoints()?;
    checkpoints.sort();
    if let Some((id, _)) = checkpoints.iter().rev().find(|(id, _)| *id > last) {
        return Ok(Verdict::Broken {
            id: last + 1,
            why: format!(
                "entries {} to {id} were removed from the end (a checkpoint names entry {id})",
                last + 1
            ),
        });
    }
    if let Some((id, _)) = checkpoints
        .iter()
        .find(|(id, mac)| links.get(id) != Some(mac))
    {
        return Ok(Verdict::Broken {
            id: *id,
            why: "it is not the entry its checkpoint recorded".into(),
        });
    }
    match head(db)? {
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

    /// Ten entries, anchored in a directory of their own.
    fn filled() -> (Db, Anchor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::memory().unwrap();

        let anchor = Anchor::open(dir.path(), &db).unwrap();
        for i in 1..=10 {
            append(&db, &anchor, &entry(i)).unwrap();
        }
        (db, anchor, dir)
    }

    fn broken_at(db: &Db, anchor: &Anchor) -> (i64, String) {
        match verify(db, anchor).unwrap() {
            Verdict::Broken { id, why } => (id, why),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (db, anchor, _dir) = filled();
        assert_eq!(
            verify(&db, &anchor).unwrap(),
            Verdict::Intact { entries: 10 }
        );
    }

    #[test]
    fn edits_deletions_and_truncation_name_the_first_broken_entry() {
        let (db, anchor, _dir) = filled();
        db.execute("UPDATE audit SET outcome = 'allowed' WHERE id = 6", &[])
            .unwrap();
        assert_eq!(broken_at(&db, &anchor).0, 6);

        let (db, anchor, _dir) = filled();
        db.execute("DELETE FROM audit WHERE id = 4", &[]).unwrap();
        assert_eq!(broken_at(&db, &anchor).0, 4);

        let (db, anchor, _dir) = filled();
        db.execute("DELETE FROM audit WHERE id >= 9", &[]).unwrap();
        let (id, why) = broken_at(&db, &anchor);
        assert_eq!(id, 9);
        assert!(why.contains("removed from the end"), "{why}");
    }

    /// Finding 7 (issue 11): with unkeyed hashes and the head in the same database,
    /// whoever could write the database re-hashed the rest of the chain after an edit,
    /// or cut the tail and reset the head, and the chain verified. The key is not in
    /// the database, and the checkpoints outside it name the entries that must be there.
    #[test]
    fn a_database_writer_can_neither_rehash_nor_truncate_unseen() {
        // Re-hashing everything after an edit, as the attacker can (unkeyed).
        let (db, anchor, _dir) = filled();
        db.execute("UPDATE audit SET outcome = 'allowed' WHERE id = 3", &[])
            .unwrap();
        let rows = db
            .query(
                "SELECT id, ts_ns, actor, action, resource, source, outcome, reason FROM audit ORDER BY id",
                &[],
            )
            .unwrap();
        let mut prev = vec![0u8; 32];
        for r in &rows {
            let link = chain(None, &prev, &entry_row(r).unwrap());
            db.execute(
                "UPDATE audit SET prev = $1, hash = $2 WHERE id = $3",
                args![prev.clone(), link.clone(), r.int(0).unwrap()],
            )
            .unwrap();
            prev = link;
        }
        db.execute("UPDATE audit_head SET hash = $1", args![prev])
            .unwrap();
        assert_eq!(
            broken_at(&db, &anchor).0,
            1,
            "no link verifies without the key"
        );

        // Cutting the tail and resetting the head to the new last entry.
        let (db, anchor, _dir) = filled();
        let eight = db
            .query_opt("SELECT hash FROM audit WHERE id = 8", &[])
            .unwrap()
            .unwrap()
            .blob(0)
            .unwrap();
        db.execute("DELETE FROM audit WHERE id > 8", &[]).unwrap();
        db.execute("UPDATE audit_head SET id = 8, hash = $1", args![eight])
            .unwrap();
        let (id, why) = broken_at(&db, &anchor);
        assert_eq!(id, 9);
        assert!(why.contains("a checkpoint names entry 10"), "{why}");
    }

    /// A chain written by the previous release (unkeyed) keeps verifying once the key
    /// is made, and new entries are keyed.
    #[test]
    fn a_chain_from_before_the_key_verifies_and_continues_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::memory().unwrap();

        let mut prev = vec![0u8; 32];
        for i in 1..=3 {
            let link = chain(None, &prev, &entry(i));
            let e = entry(i);
            db.execute(
                "INSERT INTO audit(id, ts_ns, actor, action, resource, source, outcome, reason, prev, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                args![i, e.ts_ns, &e.actor, &e.action, &e.resource, &e.source, &e.outcome, &e.reason, prev.clone(), link.clone()],
            )
            .unwrap();
            prev = link;
        }
        db.execute(
            "INSERT INTO audit_head(one, id, hash) VALUES (1, 3, $1)",
            args![prev],
        )
        .unwrap();
        let anchor = Anchor::open(dir.path(), &db).unwrap();
        append(&db, &anchor, &entry(4)).unwrap();
        assert_eq!(
            verify(&db, &anchor).unwrap(),
            Verdict::Intact { entries: 4 }
        );
        // The same database under another key: the keyed entry fails.
        let other = tempfile::tempdir().unwrap();
        db.execute("UPDATE audit_head SET id = 4", &[]).unwrap();
        let stranger = Anchor::open(other.path(), &db).unwrap();
        assert!(matches!(
            verify(&db, &stranger).unwrap(),
            Verdict::Broken { .. }
        ));
    }
}
