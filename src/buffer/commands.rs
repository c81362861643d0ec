//! The gateway's journal of downlink commands, in the buffer's database: an id is
//! written before its PUBACK, so each command is done at most once whatever is
//! redelivered, and its reply stays until the cloud has it. A command that was taking
//! place when the gateway stopped is not started again: it is answered as failed.

use super::OutboxError;
use rusqlite::{params, Connection, OptionalExtension};

/// What the journal knew of a command id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: it is journaled now, to be done.
    New,
    /// Done (or failed) before: its reply, to send again.
    Replied(Vec<u8>),
    /// Received and still being done.
    InProgress,
}

/// Journals `id` if it is new; says what was known of it.
pub fn receive(conn: &Connection, id: &str, kind: &str, now_ns: i64) -> Result<Seen, OutboxError> {
    let known: Option<Option<Vec<u8>>> = conn
        .query_row("SELECT reply FROM commands WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match known {
        Some(Some(reply)) => Seen::Replied(reply),
        Some(None) => Seen::InProgress,
        None => {
            conn.execute(
                "INSERT INTO commands(id, kind, received_ns) VALUES (?1, ?2, ?3)",
                params![id, kind, now_ns],
            )?;
            Seen::New
        }
    })
}

/// The reply of `id`, kept until `sent`.
pub fn reply(conn: &Connection, id: &str, reply: &[u8]) -> Result<(), OutboxError> {
    conn.execute(
        "UPDATE commands SET reply = ?1, reply_sent = 0 WHERE id = ?2",
        params![reply, id],
    )?;
    Ok(())
}

/// The cloud acknowledged the reply of `id`.
/// Entries whose reply the cloud has are kept this long (nanoseconds), then dropped.
const KEEP_NS: i64 = 30 * 86_400 * 1_000_000_000;

pub fn sent(conn: &Connection, id: &str, now_ns: i64) -> Result<(), OutboxError> {
    conn.execute("UPDATE commands SET reply_sent = 1 WHERE id = ?1", [id])?;
    conn.execute(
        "DELETE FROM commands WHERE reply_sent = 1 AND received_ns < ?1",
        [now_ns - KEEP_NS],
    )?;
    Ok(())
}

/// Replies the cloud has not acknowledged, oldest first.
pub fn unsent(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
    let mut q = conn.prepare(
        "SELECT id, reply FROM commands WHERE reply IS NOT NULL AND reply_sent = 0 ORDER BY received_ns",
    )?;
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Commands received but never answered (the gateway stopped while doing them): each
/// is answered by `answer`, not started again.
pub fn interrupted(
    conn: &Connection,
    answer: impl Fn(&str) -> Vec<u8>,
) -> Result<usize, OutboxError> {
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM commands WHERE reply IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        reply(conn, id, &answer(id))?;
    }
    Ok(ids.len())
}
