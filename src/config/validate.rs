//! Semantic checks of a parsed gateway config, each error located at its line.

use super::{ConfigError, GatewayConfig, Spanned};
use crate::model::DataType;
use std::collections::HashSet;

/// Collects errors with the location of the table they occur in.
pub(super) struct Checker<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// Records an error on `key` inside the table at `span` (or the table itself).
    pub(super) fn err(
        &mut self,
        span: std::ops::Range<usize>,
        path: &str,
        key: &str,
        message: String,
    ) {
        let offset = find_key(self.text, &span, key).unwrap_or(span.start);
        let (line, column) = super::line_col(self.text, offset);
        let field = if key.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{key}")
        };
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message,
        });
    }
}

impl Checker<'_> {
    /// A bus name: valid characters, and unique among all buses (Modbus and CAN).
    pub(super) fn bus_name(
        &mut self,
        span: &std::ops::Range<usize>,
        path: &str,
        name: &str,
        names: &mut HashSet<String>,
    ) {
        if !valid_name(name) {
            self.err(
                span.clone(),
                path,
                "name",
                format!("`{name}` is not a valid name: use A-Z, a-z, 0-9, `-`, `_`"),
            );
        }
        if !names.insert(name.to_string()) {
            self.err(
                span.clone(),
                path,
                "name",
                format!("bus name `{name}` is used twice"),
            );
        }
    }
}

/// The offset of the line `key = ...` inside `span`, if written there.
fn find_key(text: &str, span: &std::ops::Range<usize>, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let region = text.get(span.clone())?;
    let mut pos = 0;
    for line in region.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(span.start + pos + (line.len() - t.len()));
            }
        }
        pos += line.len();
    }
    None
}

pub(super) fn check(cfg: &mut GatewayConfig, text: &str, file: &str) -> Vec<ConfigError> {
    let mut c = Checker {
        text,
        file,
        errors: Vec::new(),
    };
    let whole = 0..text.len();
    if let Err(e) = crate::ids::DeviceId::parse(&cfg.gateway.device_id) {
        c.err(whole.clone(), "gateway", "device_id", e.to_string());
    }
    if let Some(m) = &cfg.gateway.metrics_listen {
        if split_host_port(m).is_none() {
            c.err(
                whole.clone(),
                "gateway",
                "metrics_listen",
                format!("`{m}` is not `host:port` (e.g. `127.0.0.1:9464`)"),
            );
        }
    }
    let u = &cfg.uplink;
    match (cfg.identity.backend, &u.key) {
        (super::identity::Backend::File, None) => c.err(
            whole.clone(),
            "uplink",
            "key",
            "the file identity needs `key = \"device.key\"`; or set `[identity] backend = \"tpm\"`"
                .into(),
        ),
        (super::identity::Backend::Tpm, Some(_)) => c.err(
            whole.clone(),
            "uplink",
            "key",
            "with `identity.backend = \"tpm\"` the key lives in the TPM: remove `key`".into(),
        ),
        _ => {}
    }
    if !(0x8100_0000..=0x817F_FFFF).contains(&cfg.identity.handle) {
        c.err(
            whole.clone(),
            "identity",
            "handle",
            format!(
                "{:#x} is not a persistent handle of the owner hierarchy; valid: 0x81000000 to 0x817fffff",
                cfg.identity.handle
            ),
        );
    }
    if u.brokers.is_empty() {
        c.err(
            whole.clone(),
            "uplink",
            "brokers",
            "at least one broker is needed, e.g. [\"cloud.example.com:8883\"]".into(),
        );
    }
    for b in &u.brokers {
        if split_host_port(b).is_none() {
            c.err(
                whole.clone(),
                "uplink",
                "brokers",
                format!("`{b}` is not `host:port` (e.g. `cloud.example.com:8883`)"),
            );
        }
    }
    if u.batch_max_samples == 0 || u.batch_max_samples > 10_000 {
        c.err(
            whole.clone(),
            "uplink",
            "batch_max_samples",
            format!("{} is out of range; valid: 1 to 10000", u.batch_max_samples),
        );
    }
    if u.max_in_flight == 0 || u.max_in_flight > 1000 {
        c.err(
            whole.clone(),
            "uplink",
            "max_in_flight",
            format!("{} is out of range; valid: 1 to 1000", u.max_in_flight),
        );
    }
    if u.backlog_rate == 0 {
        c.err(
            whole.clone(),
            "uplink",
            "backlog_rate",
            "must be at least 1 sample per second".into(),
        );
    }
    if u.reconnect_min.is_zero() || u.reconnect_min > u.reconnect_max {
        c.err(
            whole.clone(),
            "uplink",
            "reconnect_min",
            "must be above zero and at most reconnect_max".into(),
        );
    }
    if cfg.buffer.max_bytes.0 < 64 * 1024 {
        c.err(
            whole.clone(),
            "buffer",
            "max_bytes",
            format!("{} is too small; at least 64 KiB", cfg.buffer.max_bytes),
        );
    }
    if cfg.buffer.commit_interval.is_zero() || cfg.buffer.commit_interval.as_secs() > 10 {
        c.err(
            whole.clone(),
            "buffer",
            "commit_interval",
            "valid: more than 0 and at most 10s".into(),
        );
    }

    let mut bus_names = HashSet::new();
    let mut device_names = HashSet::new();
    for (bi, bus) in cfg.bus.iter().enumerate() {
        let bspan = bus.span();
        let bpath = format!("bus[{bi}] ({})", bus.get_ref().name);
        let b = bus.get_ref();
        c.bus_name(&bspan, &bpath, &b.name, &mut bus_names);
        match (&b.tcp, &b.rtu) {
            (Some(_), Some(_)) | (None, None) => c.err(
                bspan.clone(),
                &bpath,
                "",
                "a bus needs exactly one of `tcp = { address = \"host:502\" }` or `rtu = { port = \"/dev/ttyUSB0\" }`".into(),
            ),
            (Some(t), None) => {
                if split_host_port(&t.address).is_none() {
                    c.err(bspan.clone(), &bpath, "tcp", format!("address `{}` is not `host:port`", t.address));
                }
            }
            (None, Some(r)) => {
                if !(5..=8).contains(&r.data_bits) {
                    c.err(bspan.clone(), &bpath, "rtu", format!("data_bits {} is invalid; valid: 5 to 8", r.data_bits));
                }
                if !(1..=2).contains(&r.stop_bits) {
                    c.err(bspan.clone(), &bpath, "rtu", format!("stop_bits {} is invalid; valid: 1 or 2", r.stop_bits));
                }
                if r.baud == 0 {
                    c.err(bspan.clone(), &bpath, "rtu", "baud must be above 0".into());
                }
            }
        }
        if b.timeout.is_zero() {
            c.err(
                bspan.clone(),
                &bpath,
                "timeout",
                "must be above zero, e.g. \"500ms\"".into(),
            );
        }
        let rtu = b.rtu.is_some();
        let mut units = HashSet::new();
        for (di, dev) in b.device.iter().enumerate() {
            check_device(
                &mut c,
                dev,
                &format!("{bpath}.device[{di}]"),
                rtu,
                &mut units,
                &mut device_names,
            );
        }
    }
    super::can::check(&mut c, &mut cfg.can, &mut bus_names);
    c.errors
}

fn check_device(
    c: &mut Checker<'_>,
    dev: &Spanned<super::DeviceConfig>,
    path: &str,
    rtu: bool,
    units: &mut HashSet<u8>,
    device_names: &mut HashSet<String>,
) {
    let span = dev.span();
    let d = dev.get_ref();
    let path = format!("{path} ({})", d.name);
    if !valid_name(&d.name) {
        c.err(
            span.clone(),
            &path,
            "name",
            format!(
                "`{}` is not a valid name: use A-Z, a-z, 0-9, `-`, `_`",
                d.name
            ),
        );
    }
    if !device_names.insert(d.name.clone()) {
        c.err(
            span.clone(),
            &path,
            "name",
            format!(
                "device name `{}` is used twice (point ids are device/point)",
                d.name
            ),
        );
    }
    if rtu && !(1..=247).contains(&d.unit) {
        c.err(
            span.clone(),
            &path,
            "unit",
            format!(
                "unit {} is invalid on a serial line; valid: 1 to 247",
                d.unit
            ),
        );
    }
    if !units.insert(d.unit) {
        c.err(
            span.clone(),
            &path,
            "unit",
            format!("unit {} is used twice on this bus", d.unit),
        );
    }
    if d.poll_interval.is_zero() {
        c.err(
            span.clone(),
            &path,
            "poll_interval",
            "must be above zero, e.g. \"1s\"".into(),
        );
    }
    if d.max_registers == 0 || d.max_registers > 125 {
        c.err(
            span.clone(),
            &path,
            "max_registers",
            format!("{} is invalid; valid: 1 to 125", d.max_registers),
        );
    }
    if d.max_gap > 124 {
        c.err(
            span.clone(),
            &path,
            "max_gap",
            format!("{} is invalid; valid: 0 to 124", d.max_gap),
        );
    }
    if d.point.is_empty() {
        c.err(
            span.clone(),
            &path,
            "",
            "a device needs at least one [[bus.device.point]]".into(),
        );
    }
    let mut names = HashSet::new();
    for (pi, pt) in d.point.iter().enumerate() {
        let ps = pt.span();
        let p = pt.get_ref();
        let pp = format!("{path}.point[{pi}] ({})", p.name);
        if !valid_name(&p.name) {
            c.err(
                ps.clone(),
                &pp,
                "name",
                format!(
                    "`{}` is not a valid name: use A-Z, a-z, 0-9, `-`, `_`",
                    p.name
                ),
            );
        }
        if !names.insert(p.name.clone()) {
            c.err(
                ps.clone(),
                &pp,
                "name",
                format!("point name `{}` is used twice in this device", p.name),
            );
        }
        let bits = p.function.is_bits();
        match p.data_type {
            DataType::Bool if !bits => c.err(ps.clone(), &pp, "type", format!("`bool` is for coils and discrete inputs; for one bit of a {} use type = \"bit\" with bit = 0..15", p.function)),
            t if bits && t != DataType::Bool => c.err(ps.clone(), &pp, "type", format!("a {} holds one bit: the type must be \"bool\", not \"{t}\"", p.function)),
            _ => {}
        }
        match (p.data_type, p.bit) {
            (DataType::Bit, None) => c.err(
                ps.clone(),
                &pp,
                "type",
                "type = \"bit\" needs `bit = 0..15`".into(),
            ),
            (DataType::Bit, Some(b)) if b > 15 => c.err(
                ps.clone(),
                &pp,
                "bit",
                format!("bit {b} is outside a 16-bit register; valid: 0 to 15"),
            ),
            (t, Some(_)) if t != DataType::Bit => c.err(
                ps.clone(),
                &pp,
                "bit",
                format!("`bit` only applies to type = \"bit\", not \"{t}\""),
            ),
            _ => {}
        }
        match (p.data_type, p.length) {
            (DataType::String, None) => c.err(
                ps.clone(),
                &pp,
                "type",
                "type = \"string\" needs `length` (registers, two characters each)".into(),
            ),
            (DataType::String, Some(l)) if l == 0 || l > d.max_registers => c.err(
                ps.clone(),
                &pp,
                "length",
                format!("length {l} is invalid; valid: 1 to {}", d.max_registers),
            ),
            (t, Some(_)) if t != DataType::String => c.err(
                ps.clone(),
                &pp,
                "length",
                format!("`length` only applies to type = \"string\", not \"{t}\""),
            ),
            _ => {}
        }
        if p.address as u32 + p.width() as u32 > 65536 {
            c.err(
                ps.clone(),
                &pp,
                "address",
                format!(
                    "a {} at {} runs past the last address 65535",
                    p.data_type, p.address
                ),
            );
        }
        if !p.data_type.is_numeric() && (p.scale != 1.0 || p.offset != 0.0 || p.deadband.is_some())
        {
            c.err(
                ps.clone(),
                &pp,
                "scale",
                format!(
                    "scale, offset and deadband only apply to numbers, not \"{}\"",
                    p.data_type
                ),
            );
        }
        if !p.scale.is_finite() || p.scale == 0.0 || !p.offset.is_finite() {
            c.err(
                ps.clone(),
                &pp,
                "scale",
                "scale must be a finite number other than 0, and offset finite".into(),
            );
        }
        if p.deadband.is_some_and(|d| !(d >= 0.0 && d.is_finite())) {
            c.err(
                ps.clone(),
                &pp,
                "deadband",
                "must be a finite number of at least 0".into(),
            );
        }
        if p.interval.is_some_and(|i| i.is_zero()) {
            c.err(ps.clone(), &pp, "interval", "must be above zero".into());
        }
    }
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `host:port` with a non-empty host and a port above 0.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port > 0).then_some((host, port))
}
