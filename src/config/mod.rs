//! Gateway configuration: TOML parsed into typed structs, then checked as a whole.
//!
//! Every error names the file, the line and the field, and says what would be valid.

pub mod can;
pub mod device_id;
pub mod identity;
pub mod update;
mod validate;

use crate::bytesize::ByteSize;
use crate::model::{Class, DataType, Function, WordOrder};
pub use can::CanBusConfig;
use serde::Deserialize;
use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};
pub use toml::Spanned;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field's path, e.g. `bus[0].device[1].point[3].address`; empty for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// All the problems of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub buffer: BufferConfig,
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    /// Where the gateway's key lives (`[identity]`): the TPM, or a file on development hosts.
    #[serde(default)]
    pub identity: identity::IdentityConfig,
    /// Signed updates (`[update]`); none without it.
    #[serde(default)]
    pub update: Option<update::UpdateConfig>,
    #[serde(default)]
    pub bus: Vec<Spanned<BusConfig>>,
    #[serde(default)]
    pub can: Vec<Spanned<CanBusConfig>>,
    /// Where the file was read from; relative paths in it are relative to its folder.
    #[serde(skip)]
    pub source: PathBuf,
    /// SHA-256 of the file's text, reported in the birth message.
    #[serde(skip)]
    pub hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// This gateway's id: the name in its certificate and in every topic. Or from the
    /// hardware: `auto:serial`, `auto:mac:eth0`, `auto:machine-id` (see `device_id`).
    pub device_id: String,
    /// Where the buffer and other state live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The local status socket behind `fieldgate status` (unix socket, mode 0660).
    #[serde(default)]
    pub status_socket: Option<PathBuf>,
    /// `host:port` serving Prometheus metrics at `/metrics` (e.g. `127.0.0.1:9464`).
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/fieldgate")
}

/// The store-and-forward buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Most bytes of samples kept on disk; at the cap the oldest of the lowest class go first.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Samples older than this are dropped (and reported as a gap); none if unset.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Longest a sample waits in memory before its group is committed.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

fn default_max_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: default_max_bytes(),
            max_age: None,
            commit_interval: default_commit_interval(),
        }
    }
}

/// How the system clock is trusted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// `"kernel"` (NTP status via adjtimex, the default), `"always"`, or
    /// `{ file = "/run/systemd/timesync/synchronized" }`.
    #[serde(default)]
    pub synced: crate::clock::SyncCheck,
}

/// The MQTT uplink to the cloud.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Brokers as `host:port`, tried in order; the first that answers is used.
    pub brokers: Vec<String>,
    /// CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// This gateway's certificate (its CN is the device id).
    pub cert: PathBuf,
    /// The certificate's private key, with `identity.backend = "file"` (development hosts).
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default = "default_batch_max_samples")]
    pub batch_max_samples: usize,
    #[serde(default = "default_batch_max_age", with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Batches published but not yet acknowledged, at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Samples per second at which an old backlog drains behind live data.
    #[serde(default = "default_backlog_rate")]
    pub backlog_rate: u32,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
}

fn default_batch_max_samples() -> usize {
    1000
}
fn default_batch_max_age() -> Duration {
    Duration::from_millis(500)
}
fn default_max_in_flight() -> usize {
    8
}
fn default_backlog_rate() -> u32 {
    5000
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}

/// One field bus: a Modbus TCP endpoint or a serial line, polled by its own task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: String,
    #[serde(default)]
    pub tcp: Option<TcpBus>,
    #[serde(default)]
    pub rtu: Option<RtuBus>,
    /// How long to wait for one answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after a timeout before the points are marked bad.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub device: Vec<Spanned<DeviceConfig>>,
}

fn default_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_retries() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpBus {
    /// `host:port`.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuBus {
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub port: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// One Modbus device (unit id) on a bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest run of unmapped registers one request may bridge.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per request (125 by the protocol; some devices take fewer).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    #[serde(default)]
    pub point: Vec<Spanned<PointConfig>>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_gap() -> u16 {
    8
}
fn default_max_registers() -> u16 {
    125
}

/// One value read from a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    pub function: Function,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default)]
    pub order: WordOrder,
    /// For `type = "bit"`: which bit, 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `type = "string"`: how many registers.
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, for people (`V`, `kWh`, `°C`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Poll this point at its own interval instead of the device's.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Report only changes larger than this.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// With a deadband: report at least this often anyway.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    /// Priority class in the buffer: alarms survive the cap longer than telemetry.
    #[serde(default)]
    pub class: Class,
}

fn one() -> f64 {
    1.0
}

impl PointConfig {
    /// Registers or bits this point takes.
    pub fn width(&self) -> u16 {
        self.data_type.width(self.length.unwrap_or(0))
    }
}

impl GatewayConfig {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let file = path.display().to_string();
        let mut cfg: GatewayConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line,
                column,
                field: String::new(),
                message: hint(e.message().trim()),
            }])
        })?;
        cfg.source = path.to_path_buf();
        cfg.hash = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(text.as_bytes());
            crate::hex::encode(&d[..8])
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.uplink.ca, &mut cfg.uplink.cert]
            .into_iter()
            .chain(cfg.uplink.key.as_mut())
        {
            *p = base.join(&*p);
        }
        cfg.gateway.state_dir = base.join(&cfg.gateway.state_dir);
        let mut id_error = None;
        match device_id::resolve(&cfg.gateway.device_id) {
            Some(Ok(id)) => cfg.gateway.device_id = id,
            Some(Err(e)) => id_error = Some(e),
            None => {}
        }
        if let Some(t) = cfg.identity.token_file.as_mut() {
            *t = base.join(&*t);
        }
        if let Some(u) = cfg.update.as_mut() {
            u.root = base.join(&u.root);
            if u.floor != "tpm" {
                u.floor = base.join(&u.floor).display().to_string();
            }
        }
        if let Some(s) = cfg.gateway.status_socket.as_mut() {
            *s = base.join(&*s);
        }
        if let crate::clock::SyncCheck::File(f) = &mut cfg.clock.synced {
            *f = base.join(&*f);
        }
        for bus in cfg.can.iter_mut() {
            let b = bus.get_mut();
            for d in b.dbc.iter_mut() {
                *d = base.join(&*d);
            }
            if let Some(r) = b.replay.as_mut() {
                r.file = base.join(&r.file);
            }
        }
        let mut errors = validate::check(&mut cfg, text, &file);
        if let Some(message) = id_error {
            let at = text.find("device_id").unwrap_or(0);
            let (line, column) = line_col(text, at);
            errors.retain(|e| e.field != "gateway.device_id");
            errors.insert(
                0,
                ConfigError {
                    file: file.clone(),
                    line,
                    column,
                    field: "gateway.device_id".into(),
                    message,
                },
            );
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The SQLite file of the buffer.
    pub fn buffer_path(&self) -> PathBuf {
        self.gateway.state_dir.join("buffer.db")
    }
}

/// Adds what would be valid where the parser's own message does not say it.
fn hint(message: &str) -> String {
    if message.is_empty() {
        "invalid TOML here: a control character or a broken value".to_string()
    } else if message.ends_with("expected a duration") {
        format!("{message} such as \"500ms\", \"2s\", \"5min\" or \"1h\"")
    } else {
        message.to_string()
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

#[cfg(test)]
mod tests;
pub use validate::split_host_port;
