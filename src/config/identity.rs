//! `[identity]`: where the gateway's key lives and how it enrolls.

use serde::Deserialize;

/// `[identity]` in the gateway config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `tpm`, or `file` (development hosts: the key is `uplink.key`).
    #[serde(default)]
    pub backend: Backend,
    /// How to reach the TPM: `device:/dev/tpmrm0` (the kernel's resource manager), or
    /// `swtpm:host=127.0.0.1,port=2321` for the simulator.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The persistent handle of the key, in the owner range 0x81000000-0x817FFFFF.
    #[serde(default = "default_handle")]
    pub handle: u32,
    /// An auth value the key requires for every signature (none by default).
    #[serde(default)]
    pub auth: Option<String>,
    /// The cloud's HTTPS API (`https://cloud.example.net:8443`): enrollment on first
    /// power-on (with `token_file`) and renewal at two thirds of the certificate's life.
    #[serde(default)]
    pub enroll_url: Option<String>,
    /// The one-time bootstrap token, for the first enrollment.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Make a new TPM key at each renewal (it alternates between `handle` and
    /// `handle + 1`; the old key is removed once the new certificate is stored).
    #[serde(default)]
    pub rotate_key: bool,
}

/// Where the key is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    File,
    Tpm,
}

pub fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}

/// The handle fieldgate uses unless told otherwise: in the owner's persistent range,
/// away from 0x81000001 (the usual storage root key) and 0x81010001 (the EK).
pub fn default_handle() -> u32 {
    0x8100_0F47
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            backend: Backend::File,
            tcti: default_tcti(),
            handle: default_handle(),
            auth: None,
            enroll_url: None,
            token_file: None,
            rotate_key: false,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::File => "file",
            Backend::Tpm => "tpm",
        })
    }
}
