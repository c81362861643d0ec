//! The cloud's side of the downlink: commands to gateways, kept in `commands` until the
//! gateway replies, sent over the session the gateway opened (the embedded endpoint's
//! own sessions, or the broker behind the bridge), and sent again at every birth and
//! every `RESEND` until the reply comes. The gateway does each id once, so sending again
//! is always safe; that is what makes a lost PUBACK, a restart on either side or a
//! broker that dropped an offline device's message harmless.
//!
//! Commands are rows first: an API server in another process issues one by inserting
//! it, and whichever ingest holds the device's session picks it up at its next pump.

use super::sql::{Db, DbError, Row};
use crate::args;
use crate::downlink::{Command, Reply};
use crate::ids::DeviceId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How long a sent command waits for its reply before it is sent again.
pub const RESEND: Duration = Duration::from_secs(30);
/// How often the ingest looks for commands to send.
pub const PUMP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a command body is at most {} bytes", crate::downlink::MAX_MESSAGE / 2)]
    TooLarge,
    #[error("command kinds are 1 to 64 characters of a-z 0-9 . -")]
    BadKind,
}

/// A command as the cloud keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Record {
    pub id: String,
    pub device: String,
    pub kind: String,
    pub body: serde_json::Value,
    /// Who issued it (an API key, a person, `admin`).
    pub issued_by: String,
    pub issued_ns: i64,
    /// `pending` until the reply, then `done` or `failed`.
    pub state: String,
    /// When it was last sent, if it was.
    pub sent_ns: Option<i64>,
    /// How many times it was sent.
    pub sends: i64,
    pub replied_ns: Option<i64>,
    pub outcome: serde_json::Value,
    pub error: Option<String>,
}

/// What a reply came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replied {
    /// It settled a pending command.
    Settled,
    /// A repeat of a reply already recorded, or for an id this device was not sent.
    Ignored,
}

/// Where commands go: the embedded endpoint's live sessions, or the broker's client.
#[derive(Default)]
struct Sinks {
    sessions: HashMap<DeviceId, UnboundedSender<Command>>,
    broker: Option<UnboundedSender<(DeviceId, Command)>>,
}

pub struct Downlink {
    db: Mutex<Db>,
    sinks: Mutex<Sinks>,
}

/// A fresh command id.
pub fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("cmd-{}", crate::hex::encode(&bytes))
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

const COLUMNS: &str = "id, device, kind, body, issued_by, issued_ns, state, sent_ns, sends, replied_ns, outcome, error";

fn record(r: &Row) -> Result<Record, DbError> {
    let json = |s: Option<String>| {
        s.and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    Ok(Record {
        id: r.text(0)?,
        device: r.text(1)?,
        kind: r.text(2)?,
        body: json(r.opt_text(3)?),
        issued_by: r.text(4)?,
        issued_ns: r.int(5)?,
        state: r.text(6)?,
        sent_ns: r.opt_int(7)?,
        sends: r.int(8)?,
        replied_ns: r.opt_int(9)?,
        outcome: json(r.opt_text(10)?),
        error: r.opt_text(11)?,
    })
}

impl Downlink {
    pub fn with(db: Db) -> Downlink {
        Downlink {
            db: Mutex::new(db),
            sinks: Mutex::default(),
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a command for `device`; it is sent at the next pump if the device is
    /// connected, else when it next connects. Returns its id.
    pub fn issue(
        &self,
        device: &DeviceId,
        kind: &str,
        body: &serde_json::Value,
        issued_by: &str,
    ) -> Result<String, DownlinkError> {
        self.issue_as(&new_id(), device, kind, body, issued_by)
    }

    /// `issue` with an id made by the caller (`new_id`), for callers that record it first.
    pub fn issue_as(
        &self,
        id: &str,
        device: &DeviceId,
        kind: &str,
        body: &serde_json::Value,
        issued_by: &str,
    ) -> Result<String, DownlinkError> {
        if !valid_kind(kind) {
            return Err(DownlinkError::BadKind);
        }
        let body = serde_json::to_string(body).unwrap_or_default();
        if body.len() > crate::downlink::MAX_MESSAGE / 2 {
            return Err(DownlinkError::TooLarge);
        }
        let id = id.to_string();
        self.db().execute(
            "INSERT INTO commands(id, device, kind, body, issued_by, issued_ns, state, sends)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0)",
            args![
                id.as_str(),
                device.as_str(),
                kind,
                body,
                issued_by,
                crate::sample::now_ns()
            ],
        )?;
        tracing::info!(%device, kind, id, issued_by, "command queued");
        Ok(id)
    }

    /// One command.
    pub fn get(&self, id: &str) -> Result<Option<Record>, DownlinkError> {
        let row = self.db().query_opt(
            &format!("SELECT {COLUMNS} FROM commands WHERE id = $1"),
            args![id],
        )?;
        Ok(row.map(|r| record(&r)).transpose()?)
    }

    /// A device's commands, newest first.
    pub fn list(&self, device: &str, limit: i64) -> Result<Vec<Record>, DownlinkError> {
        let rows = self.db().query(
            &format!(
                "SELECT {COLUMNS} FROM commands WHERE device = $1 ORDER BY issued_ns DESC LIMIT $2"
            ),
            args![device, limit],
        )?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    /// The device said it is online (its birth): what it was sent and did not answer
    /// goes again at the next pump, whatever became of the earlier send.
    pub fn rearm(&self, device: &str) -> Result<(), DownlinkError> {
        self.db().execute(
            "UPDATE commands SET sent_ns = NULL WHERE device = $1 AND state = 'pending'",
            args![device],
        )?;
        Ok(())
    }

    /// A reply from `device` (the transport proved who sent it).
    pub fn replied(&self, device: &str, reply: &Reply) -> Result<Replied, DownlinkError> {
        let outcome = (!reply.outcome.is_null()).then(|| reply.outcome.to_string());
        let n = self.db().execute(
            "UPDATE commands SET state = $1, outcome = $2, error = $3, replied_ns = $4
             WHERE id = $5 AND device = $6 AND state = 'pending'",
            args![
                reply.status.as_str(),
                outcome,
                reply.error.clone(),
                crate::sample::now_ns(),
                reply.id.as_str(),
                device
            ],
        )?;
        if n == 0 {
            return Ok(Replied::Ignored);
        }
        tracing::info!(device, id = %reply.id, status = reply.status.as_str(), error = ?reply.error, "command replied");
        Ok(Replied::Settled)
    }

    /// An embedded session of `device` takes its commands on `tx` from now on.
    pub fn attach(&self, device: &DeviceId, tx: UnboundedSender<Command>) {
        self.sinks().sessions.insert(device.clone(), tx);
    }

    /// The session of `device` ended (only if `tx` is still the one attached: a newer
    /// session of the same device may have replaced it).
    pub fn detach(&self, device: &DeviceId, tx: &UnboundedSender<Command>) {
        let mut s = self.sinks();
        if s.sessions.get(device).is_some_and(|t| t.same_channel(tx)) {
            s.sessions.remove(device);
        }
    }

    /// Behind a broker: every command goes to its client.
    pub fn attach_broker(&self, tx: UnboundedSender<(DeviceId, Command)>) {
        self.sinks().broker = Some(tx);
    }

    /// Sends what is due: pending commands never sent (or rearmed), and those sent
    /// more than `RESEND` ago without a reply, to devices it has a way to. Returns how
    /// many were sent. Blocks on the database.
    pub fn pump(&self) -> Result<usize, DownlinkError> {
        let now = crate::sample::now_ns();
        let rows = self.db().query(
            &format!(
                "SELECT {COLUMNS} FROM commands WHERE state = 'pending'
                 AND (sent_ns IS NULL OR sent_ns < $1) ORDER BY issued_ns LIMIT 1000"
            ),
            args![now - RESEND.as_nanos() as i64],
        )?;
        let mut sent = Vec::new();
        {
            let sinks = self.sinks();
            for r in rows.iter().map(record) {
                let r = r?;
                let Ok(device) = DeviceId::parse(&r.device) else {
                    continue;
                };
                let cmd = Command::new(&r.id, &r.kind, r.body.clone());
                let ok = match (sinks.sessions.get(&device), &sinks.broker) {
                    (Some(tx), _) => tx.send(cmd).is_ok(),
                    (None, Some(b)) => b.send((device, cmd)).is_ok(),
                    (None, None) => false,
                };
                if ok {
                    sent.push(r.id);
                }
            }
        }
        for id in &sent {
            self.db().execute(
                "UPDATE commands SET sent_ns = $1, sends = sends + 1 WHERE id = $2",
                args![now, id.as_str()],
            )?;
        }
        Ok(sent.len())
    }
}
