//! How far the system clock can be trusted. Gateways often boot without a real-time
//! clock: until it is synchronised, samples are stamped `Unsynced` with the monotonic
//! boot clock beside them, and corrected in the buffer once the clock is set.

use crate::sample::TimeQuality;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the daemon tells that the system clock is right.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncCheck {
    /// The kernel's NTP status (adjtimex), kept by chrony, ntpd or systemd-timesyncd.
    #[default]
    Kernel,
    /// Always trusted: hosts with a battery-backed RTC and no NTP client.
    Always,
    /// Synchronised once this file exists (systemd-timesyncd writes
    /// `/run/systemd/timesync/synchronized`).
    File(PathBuf),
}

/// When a sample was taken, by both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub wall_ns: i64,
    /// CLOCK_BOOTTIME: monotonic, counts suspend, restarts at boot.
    pub mono_ns: i64,
    pub time: TimeQuality,
}

pub struct Clock {
    check: SyncCheck,
    synced: AtomicBool,
    /// This boot's id: boot-clock readings of another boot cannot be corrected.
    pub boot_id: String,
}

impl Clock {
    pub fn new(check: SyncCheck) -> Clock {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| format!("unknown-{}", std::process::id()));
        let c = Clock {
            synced: AtomicBool::new(false),
            check,
            boot_id,
        };
        c.synced.store(c.probe(), Ordering::SeqCst);
        c
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Reads both clocks now.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            wall_ns: crate::sample::now_ns(),
            mono_ns: boot_ns(),
            time: if self.is_synced() {
                TimeQuality::Synced
            } else {
                TimeQuality::Unsynced
            },
        }
    }

    /// Wall clock minus boot clock, now: added to a boot-clock reading it gives wall time.
    pub fn offset_ns(&self) -> i64 {
        crate::sample::now_ns() - boot_ns()
    }

    /// Checks the clock again; true when it has just become synchronised.
    pub fn refresh(&self) -> bool {
        let now = self.probe();
        let was = self.synced.swap(now, Ordering::SeqCst);
        now && !was
    }

    fn probe(&self) -> bool {
        match &self.check {
            SyncCheck::Always => true,
            SyncCheck::File(p) => p.exists(),
            SyncCheck::Kernel => kernel_synced(),
        }
    }
}

/// CLOCK_BOOTTIME in nanoseconds.
pub fn boot_ns() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
        .unwrap_or(0)
}

/// Whether the kernel considers the clock synchronised (adjtimex does not return TIME_ERROR).
#[allow(unsafe_code)]
fn kernel_synced() -> bool {
    // SAFETY: `timex` is plain data; zeroed means modes = 0, a read-only query, and the
    // kernel writes only inside the struct we pass.
    let state = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        libc::adjtimex(&mut tx)
    };
    state >= 0 && state != libc::TIME_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_check_and_transition() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("synchronized");
        let c = Clock::new(SyncCheck::File(flag.clone()));
        assert!(!c.is_synced());
        assert_eq!(c.stamp().time, TimeQuality::Unsynced);
        std::fs::write(&flag, "").unwrap();
        assert!(c.refresh(), "becomes synced");
        assert!(!c.refresh(), "only once");
        assert_eq!(c.stamp().time, TimeQuality::Synced);
        let off = c.offset_ns();
        let s = c.stamp();
        assert!((s.mono_ns + off - s.wall_ns).abs() < 50_000_000);
        assert!(!c.boot_id.is_empty());
        // the kernel check answers without failing
        let _ = kernel_synced();
    }
}
