//! `[[can]]`: CAN buses, read from a SocketCAN interface or replayed from a candump log,
//! decoded with DBC files, and emitted by per-signal policies.

use super::validate::Checker;
use super::{Class, Spanned};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// One CAN bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanBusConfig {
    pub name: String,
    /// The SocketCAN interface, e.g. `can0`. Its bitrate is the system's to set
    /// (systemd-networkd or `ip link`), not the gateway's.
    #[serde(default)]
    pub interface: Option<String>,
    /// Or: play a candump log through the pipeline.
    #[serde(default)]
    pub replay: Option<ReplayConfig>,
    /// DBC files describing the messages (relative paths: to the config file).
    pub dbc: Vec<PathBuf>,
    /// J1939: match DBC messages by PGN whatever the source address, keep the source
    /// address in the point id, reassemble transport-protocol transfers, report DM1.
    #[serde(default)]
    pub j1939: bool,
    /// Refuse DBC files with any faulty message, instead of skipping (and reporting)
    /// what cannot be decoded.
    #[serde(default)]
    pub strict_dbc: bool,
    /// The messages to decode, by DBC name; all of the DBC files' when empty. Only
    /// these reach the daemon: the kernel filters the rest.
    #[serde(default)]
    pub messages: Vec<String>,
    /// The emission policy of every signal unless a `[[can.signal]]` says otherwise.
    #[serde(default)]
    pub emit: EmitConfig,
    #[serde(default)]
    pub signal: Vec<Spanned<SignalConfig>>,
    /// Buffer class of the bus's signals (bus state and DM1 codes are always alarms).
    #[serde(default)]
    pub class: Class,
    /// The DBC files as validation loaded them (once: the bus decodes with these, so
    /// a file changed after the check cannot make the two disagree). Equal when the
    /// files' texts are, so a reload restarts the bus when they change.
    #[serde(skip)]
    pub db: std::sync::Arc<crate::dbc::CanDb>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    pub file: PathBuf,
    #[serde(default)]
    pub speed: ReplaySpeed,
    /// Only the frames logged on this interface (a log may hold several).
    #[serde(default)]
    pub interface: Option<String>,
    /// Start again at the end (realtime only).
    #[serde(default)]
    pub repeat: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplaySpeed {
    /// Frames keep their original spacing and are stamped with the time they are played.
    #[default]
    Realtime,
    /// As fast as the pipeline takes them, stamped with the log's own timestamps.
    Fast,
}

/// Emission settings; unset fields fall back to the bus's `[can.emit]`, then to the
/// defaults of [`EmitPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitConfig {
    #[serde(default)]
    pub on_change: Option<bool>,
    #[serde(default)]
    pub deadband: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    #[serde(default)]
    pub decimate: Option<u32>,
}

/// Settings for the signals a pattern matches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// `Message.Signal`; `*` matches any run of characters (`EEC1.*`, `*.Temp*`).
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub on_change: Option<bool>,
    #[serde(default)]
    pub deadband: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    #[serde(default)]
    pub decimate: Option<u32>,
    /// Leave the matched signals out entirely.
    #[serde(default)]
    pub ignore: bool,
    #[serde(default)]
    pub class: Option<Class>,
}

/// The resolved emission policy of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct EmitPolicy {
    /// Emit only when the value differs from the last one emitted (default true).
    pub on_change: bool,
    /// Emit only when the value moved by more than this from the last one emitted.
    pub deadband: Option<f64>,
    /// Emit at most once per this interval (default 100 ms).
    pub min_interval: Option<Duration>,
    /// Emit at least this often while frames arrive, changed or not (default 60 s).
    pub heartbeat: Option<Duration>,
    /// Look at only every n-th frame of the message (default 1: all).
    pub decimate: u32,
    pub ignore: bool,
    pub class: Class,
}

impl CanBusConfig {
    /// The policy of `message.signal`: the last matching `[[can.signal]]` entry wins
    /// field by field over earlier ones, then `[can.emit]`, then the defaults.
    pub fn policy(&self, message: &str, signal: &str) -> EmitPolicy {
        let name = format!("{message}.{signal}");
        let mut p = EmitPolicy {
            on_change: self.emit.on_change.unwrap_or(true),
            deadband: self.emit.deadband,
            min_interval: self.emit.min_interval.or(Some(Duration::from_millis(100))),
            heartbeat: self.emit.heartbeat.or(Some(Duration::from_secs(60))),
            decimate: self.emit.decimate.unwrap_or(1),
            ignore: false,
            class: self.class,
        };
        for s in &self.signal {
            let s = s.get_ref();
            if !glob(&s.pattern, &name) {
                continue;
            }
            p.on_change = s.on_change.unwrap_or(p.on_change);
            p.deadband = s.deadband.or(p.deadband);
            p.min_interval = s.min_interval.or(p.min_interval);
            p.heartbeat = s.heartbeat.or(p.heartbeat);
            p.decimate = s.decimate.unwrap_or(p.decimate);
            p.ignore = s.ignore;
            p.class = s.class.unwrap_or(p.class);
        }
        // A zero duration switches the limit off.
        p.min_interval = p.min_interval.filter(|d| !d.is_zero());
        p.heartbeat = p.heartbeat.filter(|d| !d.is_zero());
        p
    }
}

pub use crate::pattern::glob;

/// Checks emission settings; `inline` names the key holding them when they are an
/// inline table (`emit = { ... }`), so the error points at that line.
fn emit_fields(
    c: &mut Checker<'_>,
    span: &std::ops::Range<usize>,
    path: &str,
    inline: Option<&str>,
    deadband: Option<f64>,
    decimate: Option<u32>,
) {
    let mut report = |key: &str, message: &str| {
        let (k, m) = match inline {
            Some(table) => (table, format!("{key}: {message}")),
            None => (key, message.to_string()),
        };
        c.err(span.clone(), path, k, m);
    };
    if deadband.is_some_and(|d| !(d >= 0.0 && d.is_finite())) {
        report("deadband", "must be a number of 0 or more");
    }
    if decimate == Some(0) {
        report("decimate", "must be 1 (every frame) or more");
    }
}

/// Checks the `[[can]]` tables; loads their DBC files (a broken DBC is reported at its
/// own file and line). Fills in `db`.
pub(super) fn check(
    c: &mut Checker<'_>,
    buses: &mut [Spanned<CanBusConfig>],
    names: &mut HashSet<String>,
) {
    for (i, bus) in buses.iter_mut().enumerate() {
        let span = bus.span();
        let b = bus.get_mut();
        let path = format!("can[{i}] ({})", b.name);
        c.bus_name(&span, &path, &b.name, names);
        match (&b.interface, &b.replay) {
            (Some(_), Some(_)) | (None, None) => c.err(
                span.clone(),
                &path,
                "",
                "a CAN bus needs exactly one of `interface = \"can0\"` or `replay = { file = \"capture.log\" }`".into(),
            ),
            (Some(ifname), None) => {
                if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
                    c.err(
                        span.clone(),
                        &path,
                        "interface",
                        format!("`{ifname}` is not an interface name (1 to 15 characters, e.g. `can0`)"),
                    );
                }
            }
            (None, Some(r)) => {
                if r.repeat && r.speed == ReplaySpeed::Fast {
                    c.err(
                        span.clone(),
                        &path,
                        "replay",
                        "`repeat` needs `speed = \"realtime\"`: a fast replay would repeat the log's timestamps".into(),
                    );
                }
            }
        }
        emit_fields(
            c,
            &span,
            &path,
            Some("emit"),
            b.emit.deadband,
            b.emit.decimate,
        );
        for (si, s) in b.signal.iter().enumerate() {
            let sp = format!("{path}.signal[{si}]");
            let g = s.get_ref();
            emit_fields(c, &s.span(), &sp, None, g.deadband, g.decimate);
        }
        if b.dbc.is_empty() {
            c.err(
                span.clone(),
                &path,
                "dbc",
                "at least one DBC file is needed, e.g. [\"engine.dbc\"]".into(),
            );
            continue;
        }
        check_dbc(c, &span, &path, b);
    }
}

fn check_dbc(c: &mut Checker<'_>, span: &std::ops::Range<usize>, path: &str, b: &mut CanBusConfig) {
    let mode = if b.strict_dbc {
        crate::dbc::Strictness::Strict
    } else {
        crate::dbc::Strictness::Lenient
    };
    let db = match crate::dbc::CanDb::load_all(&b.dbc, mode) {
        Ok(db) => db,
        Err(e) => {
            c.err(span.clone(), path, "dbc", e.to_string());
            return;
        }
    };
    for m in &b.messages {
        if !db.messages().any(|d| &d.name == m) {
            c.err(
                span.clone(),
                path,
                "messages",
                format!("no message `{m}` in the DBC files"),
            );
        }
    }
    for (si, s) in b.signal.iter().enumerate() {
        let pattern = &s.get_ref().pattern;
        let hit = db.messages().any(|m| {
            m.signals
                .iter()
                .any(|sig| glob(pattern, &format!("{}.{}", m.name, sig.name)))
        });
        if !hit {
            c.err(
                s.span(),
                &format!("{path}.signal[{si}]"),
                "match",
                format!("`{pattern}` matches no signal of the DBC files (write Message.Signal; `*` is a wildcard)"),
            );
        }
    }
    b.db = std::sync::Arc::new(db);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("EEC1.*", "EEC1.EngSpeed"));
        assert!(glob("*.Temp*", "ET1.TempCoolant"));
        assert!(glob("*", "x"));
        assert!(!glob("EEC1.*", "EEC2.EngSpeed"));
        assert!(glob("A.B", "A.B"));
        assert!(!glob("A.B", "A.BC"));
    }
}
