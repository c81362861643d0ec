//! The anti-rollback floor: the lowest `rollback_index` a release may carry to be
//! installed here. It only goes up, and it does not live in the state directory, so
//! wiping that directory does not open the way back to an older release.
//!
//! - `tpm`: a TPM NV counter (monotonic in the TPM itself: nothing, not even the owner,
//!   can make it go down). A new counter starts at the highest value any counter of that
//!   TPM ever had, so its value at creation is kept beside it in a small NV index, and
//!   the floor is the difference.
//! - `file`: a root-only file outside the state directory (development hosts, and
//!   gateways without a TPM): as strong as the file system's permissions.

use std::path::{Path, PathBuf};

/// The counter's handle (owner NV range) and the one holding its value at creation.
pub const COUNTER_HANDLE: u32 = 0x0150_0F47;
pub const BASE_HANDLE: u32 = 0x0150_0F48;
/// The most a floor is raised at once: NV writes wear a real TPM, and release indices
/// grow by one or a few per release.
pub const MAX_STEP: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("the rollback floor {path}: {error}")]
    File {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("the rollback floor {path} is not a floor file of this release: {why}")]
    Malformed { path: String, why: String },
    #[error("the rollback floor in the TPM ({tcti}): {message}")]
    Tpm { tcti: String, message: String },
    #[error("raising the rollback floor from {from} to {to} is more than {MAX_STEP} at once: check the release's rollback_index")]
    TooFar { from: u64, to: u64 },
    #[error("this build has no TPM support (feature `tpm`)")]
    NoTpm,
}

/// Where the floor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Floor {
    File(PathBuf),
    /// The TCTI of the TPM.
    Tpm(String),
}

const HEADER: &str = "fieldgate-rollback-floor v1";

impl Floor {
    /// The floor now (0 where none was ever set).
    pub fn read(&self) -> Result<u64, FloorError> {
        match self {
            Floor::File(p) => read_file(p),
            #[cfg(feature = "tpm")]
            Floor::Tpm(tcti) => tpm::read(tcti),
            #[cfg(not(feature = "tpm"))]
            Floor::Tpm(_) => Err(FloorError::NoTpm),
        }
    }

    /// Raises the floor to `to` (nothing if it is there already; never lowers it).
    /// Returns the floor after.
    pub fn raise(&self, to: u64) -> Result<u64, FloorError> {
        let now = self.read()?;
        if to <= now {
            return Ok(now);
        }
        if to - now > MAX_STEP {
            return Err(FloorError::TooFar { from: now, to });
        }
        match self {
            Floor::File(p) => write_file(p, to)?,
            #[cfg(feature = "tpm")]
            Floor::Tpm(tcti) => tpm::raise(tcti, to - now)?,
            #[cfg(not(feature = "tpm"))]
            Floor::Tpm(_) => return Err(FloorError::NoTpm),
        }
        let after = self.read()?;
        tracing::info!(from = now, to = after, "rollback floor raised");
        Ok(after)
    }
}

fn read_file(path: &Path) -> Result<u64, FloorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => {
            return Err(FloorError::File {
                path: path.display().to_string(),
                error,
            })
        }
    };
    let malformed = |why: &str| FloorError::Malformed {
        path: path.display().to_string(),
        why: why.into(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(malformed(&format!("the first line is not `{HEADER}`")));
    }
    lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("the second line is not a number"))
}

/// Written whole, synced, then renamed over the old one: a power cut leaves the old
/// floor or the new one.
fn write_file(path: &Path, floor: u64) -> Result<(), FloorError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |error| FloorError::File {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(format!("{HEADER}\n{floor}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(feature = "tpm")]
mod tpm {
    use super::{FloorError, BASE_HANDLE, COUNTER_HANDLE};
    use std::str::FromStr;
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::constants::nv_index_type::NvIndexType;
    use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};
    use tss_esapi::tcti_ldr::TctiNameConf;
    use tss_esapi::Context;

    fn fail(tcti: &str, e: impl std::fmt::Display) -> FloorError {
        FloorError::Tpm {
            tcti: tcti.to_string(),
            message: e.to_string(),
        }
    }

    fn context(tcti: &str) -> Result<Context, FloorError> {
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| fail(tcti, format!("`{tcti}` is not a TCTI string ({e})")))?;
        let mut ctx =
            Context::new(conf).map_err(|e| fail(tcti, crate::identity::tpm::explain(e)))?;
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        Ok(ctx)
    }

    fn defined(ctx: &mut Context, tcti: &str, handle: u32) -> Result<bool, FloorError> {
        let list = tss_esapi::abstraction::nv::list(ctx)
            .map_err(|e| fail(tcti, crate::identity::tpm::explain(e)))?;
        Ok(list.iter().any(|(p, _)| u32::from(p.nv_index()) == handle))
    }

    fn handle(ctx: &mut Context, tcti: &str, h: u32) -> Result<NvIndexHandle, FloorError> {
        let tpm = NvIndexTpmHandle::new(h).map_err(|e| fail(tcti, e))?;
        ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(tpm)))
            .map(NvIndexHandle::from)
            .map_err(|e| fail(tcti, crate::identity::tpm::explain(e)))
    }

    fn read_u64(ctx: &mut Context, tcti: &str, h: u32) -> Result<u64, FloorError> {
        let nv = handle(ctx, tcti, h)?;
        let data = ctx.nv_read(NvAuth::Owner, nv, 8, 0).map_err(|e| {
            fail(
                tcti,
                format!(
                    "reading NV index {h:#x}: {}",
                    crate::identity::tpm::explain(e)
                ),
            )
        })?;
        let bytes: [u8; 8] = data
            .to_vec()
            .try_into()
            .map_err(|_| fail(tcti, format!("NV index {h:#x} does not hold 8 bytes")))?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn define(
        ctx: &mut Context,
        tcti: &str,
        h: u32,
        kind: NvIndexType,
    ) -> Result<NvIndexHandle, FloorError> {
        let attributes = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_owner_read(true)
            .with_nv_index_type(kind)
            .build()
            .map_err(|e| fail(tcti, e))?;
        let public = NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(h).map_err(|e| fail(tcti, e))?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(8)
            .build()
            .map_err(|e| fail(tcti, e))?;
        ctx.nv_define_space(Provision::Owner, None, public)
            .map_err(|e| {
                fail(
                    tcti,
                    format!(
                        "defining NV index {h:#x}: {}",
                        crate::identity::tpm::explain(e)
                    ),
                )
            })
    }

    pub fn read(tcti: &str) -> Result<u64, FloorError> {
        let mut ctx = context(tcti)?;
        if !defined(&mut ctx, tcti, COUNTER_HANDLE)? || !defined(&mut ctx, tcti, BASE_HANDLE)? {
            return Ok(0);
        }
        let counter = read_u64(&mut ctx, tcti, COUNTER_HANDLE)?;
        let base = read_u64(&mut ctx, tcti, BASE_HANDLE)?;
        Ok(counter.saturating_sub(base))
    }

    /// Increments the counter `by` times, defining it (and recording its start) first.
    pub fn raise(tcti: &str, by: u64) -> Result<(), FloorError> {
        let mut ctx = context(tcti)?;
        // Both looked up before any handle is opened: listing the NV indices opens and
        // closes a handle for each, which would close ours too.
        let has_counter = defined(&mut ctx, tcti, COUNTER_HANDLE)?;
        let has_base = defined(&mut ctx, tcti, BASE_HANDLE)?;
        let counter = if has_counter {
            handle(&mut ctx, tcti, COUNTER_HANDLE)?
        } else {
            define(&mut ctx, tcti, COUNTER_HANDLE, NvIndexType::Counter)?
        };
        if !has_base {
            // A counter reads only after its first increment, which sets it to the
            // highest count this TPM ever had; that is the floor's zero.
            ctx.nv_increment(NvAuth::Owner, counter).map_err(|e| {
                fail(
                    tcti,
                    format!("first increment: {}", crate::identity::tpm::explain(e)),
                )
            })?;
            let start = read_u64(&mut ctx, tcti, COUNTER_HANDLE)?;
            let base = define(&mut ctx, tcti, BASE_HANDLE, NvIndexType::Ordinary)?;
            let data =
                MaxNvBuffer::try_from(start.to_be_bytes().to_vec()).map_err(|e| fail(tcti, e))?;
            ctx.nv_write(NvAuth::Owner, base, data, 0).map_err(|e| {
                fail(
                    tcti,
                    format!(
                        "writing NV index {BASE_HANDLE:#x}: {}",
                        crate::identity::tpm::explain(e)
                    ),
                )
            })?;
        }
        for _ in 0..by {
            ctx.nv_increment(NvAuth::Owner, counter).map_err(|e| {
                fail(
                    tcti,
                    format!(
                        "incrementing NV index {COUNTER_HANDLE:#x}: {}",
                        crate::identity::tpm::explain(e)
                    ),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_floor_only_goes_up_and_survives_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let f = Floor::File(dir.path().join("floor"));
        assert_eq!(f.read().unwrap(), 0);
        assert_eq!(f.raise(3).unwrap(), 3);
        assert_eq!(f.raise(2).unwrap(), 3, "never lowered");
        assert_eq!(Floor::File(dir.path().join("floor")).read().unwrap(), 3);
        assert!(matches!(f.raise(5000), Err(FloorError::TooFar { .. })));
        std::fs::write(dir.path().join("floor"), "7\n").unwrap();
        assert!(matches!(f.read(), Err(FloorError::Malformed { .. })));
    }
}
