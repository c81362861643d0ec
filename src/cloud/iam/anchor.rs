//! What anchors the audit chain outside the database's reach: a MAC key the database
//! does not hold (`audit.key` in the data directory, 0600, shared by the API servers
//! of one cloud like its CA), and checkpoints (`audit.checkpoints`: the id and MAC of
//! every head the server wrote, one line each, to be shipped away by the operator).
//! Someone who can write the database but not these files can neither re-hash edited
//! entries (they lack the key) nor cut the tail and reset the head (the checkpoints
//! name entries that must be there). docs/iam.md says what is left to them.

use crate::cloud::sql::{Db, DbError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KEY_FORMAT: &str = "fieldgate-audit-key v1";
const CHECKPOINT_FORMAT: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: not an audit key of this format ({KEY_FORMAT}): {why}")]
    Format { path: String, why: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The audit chain's key and checkpoint file.
pub struct Anchor {
    key: [u8; 32],
    /// Entries up to this id were written before the key existed (an older release):
    /// they are checked with the unkeyed hash.
    keyed_after: i64,
    checkpoints: Option<PathBuf>,
    writer: Mutex<Option<std::fs::File>>,
}

impl Anchor {
    /// The anchor in `dir`, made on first use (entries already in `db` stay checked as
    /// they were written). Servers starting together agree on one key.
    pub fn open(dir: &Path, db: &Db) -> Result<Anchor, AnchorError> {
        let path = dir.join("audit.key");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |error| AnchorError::Io { path, error }
        };
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let head = super::audit::head(db)?.map_or(0, |(id, _)| id);
            let key: [u8; 32] = rand::random();
            let text = format!(
                "{KEY_FORMAT}\nkey {}\nkeyed-after {head}\n",
                crate::hex::encode(&key)
            );
            let tmp = dir.join(format!("audit.key.{}", std::process::id()));
            write_private(&tmp, &text).map_err(io(&tmp))?;
            // Atomic, and refused if another server made it first: then theirs is used.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let (key, keyed_after) = parse_key(&text).map_err(|why| AnchorError::Format {
            path: path.display().to_string(),
            why,
        })?;
        Ok(Anchor {
            key,
            keyed_after,
            checkpoints: Some(dir.join("audit.checkpoints")),
            writer: Mutex::new(None),
        })
    }

    /// A key of this process only and no checkpoints (unit tests, benches).
    pub fn ephemeral() -> Anchor {
        Anchor {
            key: rand::random(),
            keyed_after: 0,
            checkpoints: None,
            writer: Mutex::new(None),
        }
    }

    pub(super) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    pub(super) fn keyed_after(&self) -> i64 {
        self.keyed_after
    }

    /// Records the head `id` with `mac` (best effort: a full disk must not stop
    /// decisions; a missing checkpoint only weakens truncation detection).
    pub(super) fn checkpoint(&self, id: i64, mac: &[u8]) {
        let Some(path) = &self.checkpoints else {
            return;
        };
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok();
        }
        let line = format!("{CHECKPOINT_FORMAT} {id} {}\n", crate::hex::encode(mac));
        // One write per line: lines of servers sharing the file do not interleave.
        if let Some(f) = w.as_mut() {
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "audit checkpoint not written");
            }
        }
    }

    /// Every checkpoint on file: (id, MAC). A torn or foreign line is skipped.
    pub(super) fn checkpoints(&self) -> Result<Vec<(i64, Vec<u8>)>, AnchorError> {
        let Some(path) = &self.checkpoints else {
            return Ok(Vec::new());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(AnchorError::Io {
                    path: path.display().to_string(),
                    error,
                })
            }
        };
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                (f.next()? == CHECKPOINT_FORMAT).then_some(())?;
                let id = f.next()?.parse().ok()?;
                let mac = crate::hex::decode(f.next()?)?;
                (mac.len() == 32).then_some((id, mac))
            })
            .collect())
    }
}

fn parse_key(text: &str) -> Result<([u8; 32], i64), String> {
    let mut lines = text.lines();
    if lines.next() != Some(KEY_FORMAT) {
        return Err("the first line differs".into());
    }
    let key = lines
        .next()
        .and_then(|l| l.strip_prefix("key "))
        .and_then(crate::hex::decode)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("no 32-byte `key` line")?;
    let after = lines
        .next()
        .and_then(|l| l.strip_prefix("keyed-after "))
        .and_then(|n| n.parse().ok())
        .ok_or("no `keyed-after` line")?;
    Ok((key, after))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
