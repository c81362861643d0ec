//! The `binary` backend's files, under `state_dir/update` (docs/updates.md):
//!
//! - `slots/{version}-{sha}/fieldgate`: each installed binary, with `release.json`
//!   (its version and hash) beside it, written before any link points at it;
//! - `active`, `previous`: symbolic links to slots; no `active` means the factory
//!   binary (the one the package installed) runs;
//! - `trial`: present while a new version is on trial; `fieldgate-launch` (the
//!   service's ExecStart) counts starts in it and, after `MAX_STARTS` starts without a
//!   commit, moves `previous` back over `active` by itself: a binary that crashes
//!   before it runs a line of ours is rolled back too.
//!
//! Every change is one rename (atomic) or the removal of a link; each step can be done
//! again after a power cut with the same result.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Starts of a version on trial that may end without a commit before
/// `fieldgate-launch` puts the previous one back (also written in that script).
pub const MAX_STARTS: u32 = 3;
/// The environment variable `fieldgate-launch` sets to the update directory.
pub const LAUNCHED_BY: &str = "FIELDGATE_UPDATE_DIR";
const FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct SlotError {
    path: String,
    #[source]
    error: std::io::Error,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SlotError + '_ {
    move |error| SlotError {
        path: path.display().to_string(),
        error,
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotRelease {
    pub v: u8,
    pub version: String,
    pub sha256: String,
}

pub struct Slots {
    dir: PathBuf,
}

impl Slots {
    /// The slots of the update directory `dir` (`state_dir/update`).
    pub fn new(dir: &Path) -> Slots {
        Slots {
            dir: dir.to_path_buf(),
        }
    }

    /// A slot's name: its version and the start of its hash.
    pub fn name(version: &str, sha256: &str) -> String {
        format!("{version}-{}", &sha256[..sha256.len().min(12)])
    }

    fn slot(&self, name: &str) -> PathBuf {
        self.dir.join("slots").join(name)
    }

    /// The slot a link points at (None: no link, the factory binary).
    pub fn link(&self, which: &str) -> Option<String> {
        let target = std::fs::read_link(self.dir.join(which)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The version of the binary at `exe`: its slot's, or None for one outside the
    /// slots (the factory binary, whose version is the one it was built as).
    pub fn version_of(&self, exe: &Path) -> Option<String> {
        let exe = std::fs::canonicalize(exe).ok()?;
        let slot = exe.parent()?;
        let slots = std::fs::canonicalize(self.dir.join("slots")).ok()?;
        if std::fs::canonicalize(slot.parent()?).ok()? != slots {
            return None;
        }
        let text = std::fs::read(slot.join("release.json")).ok()?;
        let r: SlotRelease = serde_json::from_slice(&text).ok()?;
        Some(r.version)
    }

    /// Puts the verified image `staging` in its slot (once), marks the trial, and points
    /// `previous` at `previous` (None: the factory binary) and `active` at the new slot.
    pub fn install(
        &self,
        staging: &Path,
        version: &str,
        sha256: &str,
        previous: Option<&str>,
    ) -> Result<(), SlotError> {
        let name = Slots::name(version, sha256);
        let slot = self.slot(&name);
        let bin = slot.join("fieldgate");
        if !bin.exists() {
            std::fs::create_dir_all(&slot).map_err(io(&slot))?;
            let part = slot.join("fieldgate.part");
            std::fs::copy(staging, &part).map_err(io(&part))?;
            set_mode(&part, 0o755)?;
            sync(&part)?;
            let meta = slot.join("release.json");
            let r = SlotRelease {
                v: FORMAT,
                version: version.into(),
                sha256: sha256.into(),
            };
            write_synced(&meta, &serde_json::to_vec(&r).unwrap_or_default())?;
            std::fs::rename(&part, &bin).map_err(io(&bin))?;
            sync(&slot)?;
        }
        write_synced(&self.dir.join("trial"), b"0\n")?;
        self.point("previous", previous)?;
        self.point("active", Some(&name))?;
        sync(&self.dir)
    }

    /// Puts `previous` back as the active binary and ends the trial.
    pub fn roll_back(&self, previous: Option<&str>) -> Result<(), SlotError> {
        self.point("active", previous)?;
        self.end_trial()?;
        sync(&self.dir)
    }

    /// The trial ended well: no more start counting; slots neither active nor previous
    /// are removed.
    pub fn commit(&self) -> Result<(), SlotError> {
        self.end_trial()?;
        let keep = [self.link("active"), self.link("previous")];
        let slots = self.dir.join("slots");
        if let Ok(entries) = std::fs::read_dir(&slots) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.iter().flatten().any(|k| *k == name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        sync(&self.dir)
    }

    /// Starts counted by `fieldgate-launch` in this trial, if one is on.
    pub fn trial_starts(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("trial")).ok()?;
        Some(text.trim().parse().unwrap_or(0))
    }

    fn end_trial(&self) -> Result<(), SlotError> {
        let t = self.dir.join("trial");
        match std::fs::remove_file(&t) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&t)(e)),
            _ => Ok(()),
        }
    }

    /// Points the link `which` at slot `to` (one rename), or removes it.
    fn point(&self, which: &str, to: Option<&str>) -> Result<(), SlotError> {
        let link = self.dir.join(which);
        match to {
            Some(name) => {
                let tmp = self.dir.join(format!(".{which}.new"));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(Path::new("slots").join(name), &tmp)
                    .map_err(io(&tmp))?;
                std::fs::rename(&tmp, &link).map_err(io(&link))
            }
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&link)(e)),
                _ => Ok(()),
            },
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SlotError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn sync(path: &Path) -> Result<(), SlotError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SlotError> {
    let tmp = path.with_extension("new");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_roll_back_and_commit_move_only_links() {
        let dir = tempfile::tempdir().unwrap();
        let s = Slots::new(dir.path());
        let img = dir.path().join("staging");
        std::fs::write(&img, b"#!/bin/sh\n").unwrap();
        s.install(&img, "1.5.0", &"ab".repeat(32), None).unwrap();
        let name = Slots::name("1.5.0", &"ab".repeat(32));
        assert_eq!(s.link("active").as_deref(), Some(name.as_str()));
        assert_eq!(s.link("previous"), None);
        assert_eq!(s.trial_starts(), Some(0));
        let exe = dir.path().join("active/fieldgate");
        assert_eq!(s.version_of(&exe).as_deref(), Some("1.5.0"));
        assert_eq!(s.version_of(&img), None, "outside the slots: factory");
        // Installing again after a cut is the same install.
        s.install(&img, "1.5.0", &"ab".repeat(32), None).unwrap();
        s.roll_back(None).unwrap();
        assert_eq!((s.link("active"), s.trial_starts()), (None, None));

        s.install(&img, "1.5.0", &"ab".repeat(32), None).unwrap();
        s.commit().unwrap();
        s.install(&img, "1.6.0", &"cd".repeat(32), Some(&name))
            .unwrap();
        assert_eq!(s.link("previous").as_deref(), Some(name.as_str()));
        s.commit().unwrap();
        let left = std::fs::read_dir(dir.path().join("slots")).unwrap().count();
        assert_eq!(left, 2, "active and previous kept");
    }
}
