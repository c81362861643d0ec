//! The downlink's wire format, version 1 (docs/protocol.md, "Commands"): the cloud
//! speaks to a gateway only over the MQTT session the gateway opened. A command goes to
//! `fg/v1/{device}/cmd` (only that device may read it), its reply comes back on
//! `fg/v1/{device}/reply`; both are JSON, QoS 1. A command is done once per id: a
//! gateway that sees an id again answers with the reply it stored, and does nothing.

use crate::protocol::TOPIC_ROOT;
use serde::{Deserialize, Serialize};

/// The version of commands and replies this code writes and reads.
pub const VERSION: u8 = 1;
/// No command or reply above this size is sent or accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The topic a device reads its commands on.
pub fn command_topic(device: &str) -> String {
    format!("{TOPIC_ROOT}/{device}/cmd")
}

/// The topic a device answers on.
pub fn reply_topic(device: &str) -> String {
    format!("{TOPIC_ROOT}/{device}/reply")
}

/// The topic a device reports the progress of a long command on (an update).
pub fn progress_topic(device: &str) -> String {
    format!("{TOPIC_ROOT}/{device}/progress")
}

/// One command to one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The format version ([`VERSION`]).
    pub v: u8,
    /// Unique per command, made by the cloud: the gateway does each id once.
    pub id: String,
    /// What to do: `ping` so far (`update.offer` follows); a gateway answers a kind it
    /// does not know with an error naming it, so an old gateway says it is old.
    pub kind: String,
    /// The kind's arguments.
    #[serde(default)]
    pub body: serde_json::Value,
}

/// A gateway's answer to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub v: u8,
    /// The command's id.
    pub id: String,
    /// `done`, or `failed` with `error`.
    pub status: Status,
    /// What came of it (the kind's result), when done.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub outcome: serde_json::Value,
    /// Why it failed, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

/// Why a command or reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    #[error("{0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("not a command or reply of format {VERSION}: {0}")]
    Malformed(String),
    #[error("format version {0} is newer than {VERSION}, the newest this release reads")]
    Newer(u8),
    #[error("the id must be 1 to 64 characters of A-Z a-z 0-9 - _ .")]
    BadId,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    version: impl Fn(&T) -> u8,
    id: impl Fn(&T) -> &str,
) -> Result<T, BadMessage> {
    if bytes.len() > MAX_MESSAGE {
        return Err(BadMessage::TooLarge(bytes.len()));
    }
    if let Some(v) = crate::schema::json_format(bytes).filter(|v| *v > VERSION) {
        return Err(BadMessage::Newer(v));
    }
    let m: T = serde_json::from_slice(bytes).map_err(|e| BadMessage::Malformed(e.to_string()))?;
    if version(&m) != VERSION {
        return Err(BadMessage::Malformed(format!("version {}", version(&m))));
    }
    if !valid_id(id(&m)) {
        return Err(BadMessage::BadId);
    }
    Ok(m)
}

impl Command {
    pub fn new(id: &str, kind: &str, body: serde_json::Value) -> Command {
        Command {
            v: VERSION,
            id: id.to_string(),
            kind: kind.to_string(),
            body,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, BadMessage> {
        decode(bytes, |c: &Command| c.v, |c| &c.id)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Reply {
    pub fn done(id: &str, outcome: serde_json::Value) -> Reply {
        Reply {
            v: VERSION,
            id: id.to_string(),
            status: Status::Done,
            outcome,
            error: None,
        }
    }

    pub fn failed(id: &str, error: String) -> Reply {
        Reply {
            v: VERSION,
            id: id.to_string(),
            status: Status::Failed,
            outcome: serde_json::Value::Null,
            error: Some(error),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Reply, BadMessage> {
        decode(bytes, |r: &Reply| r.v, |r| &r.id)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Where a long command (an update) stands, as its gateway last said: sent at every
/// change of phase, while downloading, and at every connection; the whole history
/// travels each time, so the cloud records every step even after an outage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub v: u8,
    /// The command's id.
    pub id: String,
    /// The phase now: for an update `downloading`, `verified`, `installing`,
    /// `restarting`, `healthy`, `committed`, `failed`, `rolled_back`.
    pub phase: String,
    /// The version offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it failed or was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes so far of `total`, while downloading.
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub total: u64,
    /// Every phase so far, oldest first (at most `MAX_STEPS`).
    #[serde(default)]
    pub history: Vec<Step>,
}

/// One phase reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub phase: String,
    pub at_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The most steps one progress message carries.
pub const MAX_STEPS: usize = 32;

impl Progress {
    pub fn decode(bytes: &[u8]) -> Result<Progress, BadMessage> {
        let p = decode(bytes, |p: &Progress| p.v, |p| &p.id)?;
        if p.history.len() > MAX_STEPS {
            return Err(BadMessage::Malformed(format!(
                "{} steps, at most {MAX_STEPS}",
                p.history.len()
            )));
        }
        Ok(p)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip_and_refuse_what_they_cannot_read() {
        let c = Command::new("c-1", "ping", serde_json::json!({}));
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        let r = Reply::done("c-1", serde_json::json!({"pong": true}));
        assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        let f = Reply::failed("c-1", "no".into());
        assert_eq!(Reply::decode(&f.encode()).unwrap(), f);
        assert_eq!(
            Command::decode(br#"{"v":2,"id":"x","kind":"ping","later":1}"#),
            Err(BadMessage::Newer(2))
        );
        assert!(matches!(
            Command::decode(br#"{"v":1,"id":"x"}"#),
            Err(BadMessage::Malformed(_))
        ));
        assert_eq!(
            Command::decode(br#"{"v":1,"id":"a/b","kind":"ping"}"#),
            Err(BadMessage::BadId)
        );
        assert!(matches!(
            Command::decode(&vec![b' '; MAX_MESSAGE + 1]),
            Err(BadMessage::TooLarge(_))
        ));
        assert!(matches!(
            Reply::decode(b"\xff"),
            Err(BadMessage::Malformed(_))
        ));
    }
}
