//! `[update]`: how this gateway takes signed updates (docs/updates.md). Without the
//! section, offers are answered with an error that says so.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[update]` in the gateway config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The first trusted root of the release keys, installed with the gateway
    /// (`fieldgate release root`); later roots arrive with offers, as a chain.
    pub root: PathBuf,
    /// This gateway's hardware compatibility string: a release names the one it is for.
    pub hardware: String,
    /// How a release is installed.
    #[serde(default)]
    pub backend: UpdateBackend,
    /// Where the anti-rollback floor lives: `"tpm"` (an NV counter of `[identity] tcti`),
    /// or a file outside the state directory (`/var/lib/fieldgate-floor/floor`).
    #[serde(default = "default_floor")]
    pub floor: String,
    /// How long a new version has to become healthy (connected, buffer written and read
    /// back, every source running) before it is rolled back.
    #[serde(default = "default_health_window", with = "humantime_serde")]
    pub health_window: Duration,
    /// No byte for this long: the download attempt is given up and resumed.
    #[serde(default = "default_stall", with = "humantime_serde")]
    pub stall: Duration,
    /// Below this many bytes a second over a minute: slow retrieval, resumed.
    #[serde(default = "default_min_rate")]
    pub min_rate: u64,
}

/// How a release is installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateBackend {
    /// The daemon replaces its own binary (state_dir/update/slots, started through
    /// `fieldgate-launch`, which rolls a crashing version back by itself).
    #[default]
    Binary,
    /// A RAUC bundle on an A/B system; `rauc status mark-good` after the health check.
    Rauc,
}

fn default_floor() -> String {
    "/var/lib/fieldgate-floor/floor".into()
}
fn default_health_window() -> Duration {
    Duration::from_secs(120)
}
fn default_stall() -> Duration {
    Duration::from_secs(30)
}
fn default_min_rate() -> u64 {
    1024
}

impl std::fmt::Display for UpdateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateBackend::Binary => "binary",
            UpdateBackend::Rauc => "rauc",
        })
    }
}
