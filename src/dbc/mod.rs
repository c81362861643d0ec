//! A DBC database, loaded with the can-dbc parser and checked: messages by CAN id,
//! signals with layout, scaling, range, unit, value table and multiplexing. It sits
//! below `config` (which loads the files once, at validation) and `field::can` (which
//! decodes with what config loaded).

pub mod decode;

use decode::{extract, integer, interpret, ByteOrder, Kind, Layout};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// When a signal is present in a multiplexed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mux {
    Plain,
    /// Present while the switch signal named here is present and its raw value lies in
    /// one of the inclusive ranges (`mNN`, or `SG_MUL_VAL_` for extended multiplexing).
    When {
        switch: String,
        ranges: Vec<(u64, u64)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalDef {
    pub name: String,
    pub layout: Layout,
    pub kind: Kind,
    pub factor: f64,
    pub offset: f64,
    pub min: f64,
    pub max: f64,
    pub unit: String,
    pub mux: Mux,
    /// Whether other signals are multiplexed by this one.
    pub is_switch: bool,
    /// Raw value → label (`VAL_`).
    pub labels: BTreeMap<i64, String>,
    /// The decimals factor and offset carry (0.001 → 3): values are rounded to them, so
    /// 3300 × 0.001 is 3.3 and not 3.3000000000000003. None for floats and odd factors.
    pub decimals: Option<i32>,
}

/// The fewest decimals (up to 9) that write `x` exactly, if any.
fn decimals_of(x: f64) -> Option<i32> {
    (0..=9).find(|&n| {
        let scaled = x * 10f64.powi(n);
        (scaled - scaled.round()).abs() <= 1e-9 * scaled.abs().max(1.0)
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageDef {
    pub name: String,
    /// The CAN id (11 or 29 bits) without the extended flag.
    pub id: u32,
    pub extended: bool,
    /// Payload length in bytes (up to 64 for CAN FD).
    pub size: usize,
    pub signals: Vec<SignalDef>,
}

/// One decoded signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    pub signal: &'a SignalDef,
    /// The signal's position in `MessageDef::signals`.
    pub index: usize,
    pub raw: u64,
    /// raw × factor + offset.
    pub value: f64,
    /// The value table's label for the raw value, if any.
    pub label: Option<&'a str>,
    /// Whether the value is within the DBC's min..max (0..0 means unchecked).
    pub in_range: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: message {message} ({id:#x}): {problem}")]
    Message {
        path: String,
        line: usize,
        message: String,
        id: u32,
        problem: String,
    },
}

/// How a DBC file's faulty messages are met (docs/can.md, "Files as they are").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strictness {
    /// The file loads; each faulty message or signal is skipped (or, for overlapping
    /// signals, kept) with a warning naming file and line.
    #[default]
    Lenient,
    /// Any fault refuses the whole file.
    Strict,
}

/// The most a J1939 transport transfer carries (255 packets of 7 bytes).
pub const MAX_TRANSFER: usize = 1785;

/// A loaded database.
#[derive(Debug, Clone, Default)]
pub struct CanDb {
    /// Keyed by the id with bit 31 set for extended ids, as can-dbc's `raw()`.
    messages: HashMap<u32, MessageDef>,
    /// SHA-256 over the texts it was loaded from, in order.
    digest: [u8; 32],
    /// What a lenient load skipped or kept despite a fault, each with file and line.
    warnings: Vec<String>,
}

/// Two databases are equal when they were loaded from the same texts (a configuration
/// reload restarts a bus whose DBC files changed, and only then).
impl PartialEq for CanDb {
    fn eq(&self, other: &CanDb) -> bool {
        self.digest == other.digest
    }
}

/// Two definitions of one CAN id in the files of one bus.
#[derive(Debug, thiserror::Error)]
#[error("{path}: messages {first} and {second} share the CAN id {id:#x}")]
pub struct MergeError {
    pub path: String,
    pub first: String,
    pub second: String,
    pub id: u32,
}

/// Why a bus's DBC files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] DbError),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// The parser's "expected rule, rule" in the words of a DBC author, with the line.
fn in_dbc_terms(parser: &str, line: &str) -> String {
    let said = parser.trim().trim_start_matches('=').trim();
    let Some(expected) = said.strip_prefix("expected ") else {
        return said.to_string();
    };
    let rules: Vec<&str> = expected
        .split([',', ' '])
        .filter(|w| !w.is_empty() && *w != "or")
        .collect();
    let keyword = |rule: &str| -> Option<&'static str> {
        Some(match rule {
            "EOI" => "the end of the file",
            "version" => "VERSION",
            "new_symbols" => "NS_",
            "bit_timing" => "BS_",
            "nodes" => "BU_",
            "message" => "BO_ ID NAME: SIZE NODE",
            "signal" => "SG_",
            "comment" => "CM_",
            "attr_def" => "BA_DEF_",
            "attr_value" => "BA_",
            "value_table_def" => "VAL_TABLE_",
            "value_table" => "VAL_",
            "signal_group" => "SIG_GROUP_",
            "signal_value_type" => "SIG_VALTYPE_",
            "message_transmitter" => "BO_TX_BU_",
            "ba_def_rel" => "BA_DEF_REL_",
            "ba_rel" => "BA_REL_",
            "ba_def_def_rel" => "BA_DEF_DEF_REL_",
            "ba_def_def" => "BA_DEF_DEF_",
            "sg_mul_val" => "SG_MUL_VAL_",
            "env_var" => "EV_",
            "env_var_data" => "ENVVAR_DATA_",
            _ => return None,
        })
    };
    let shown: String = line.trim().chars().take(60).collect();
    let what = match rules.as_slice() {
        ["file"] => "this is not DBC text (a DBC file is lines of VERSION, NS_, BU_, BO_, SG_ …)".to_string(),
        ["multiplexer_indicator"] => {
            "a signal is `SG_ NAME : START|SIZE@ORDER+ (FACTOR,OFFSET) [MIN|MAX] \"UNIT\" NODES` (is the colon after the name missing, or the multiplexer M / mNN mistyped?)".to_string()
        }
        many => {
            let known: Vec<&str> = many.iter().filter_map(|r| keyword(r)).collect();
            if known.len() == many.len() && !known.is_empty() {
                format!("this line is not a DBC statement; expected {}", known.join(", "))
            } else {
                format!("expected {}", many.join(", "))
            }
        }
    };
    if shown.is_empty() || !shown.chars().all(|c| !c.is_control() || c == '\t') {
        what
    } else {
        format!("{what}: `{shown}`")
    }
}

/// A DBC file's text: UTF-8 if it is, else Windows-1252 (what CANdb++ writes; a file
/// that is neither reads as Windows-1252 too, with the five unassigned bytes kept as
/// their Latin-1 code points).
pub fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| windows_1252(b)).collect())
}

fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

fn key(id: u32, extended: bool) -> u32 {
    if extended {
        id | 1 << 31
    } else {
        id
    }
}

fn num(v: &can_dbc::NumericValue) -> f64 {
    match *v {
        can_dbc::NumericValue::Uint(u) => u as f64,
        can_dbc::NumericValue::Int(i) => i as f64,
        can_dbc::NumericValue::Double(d) => d,
    }
}

impl CanDb {
    /// Loads a file leniently (`Strictness::Lenient`).
    pub fn load(path: &Path) -> Result<CanDb, DbError> {
        CanDb::load_with(path, Strictness::Lenient)
    }

    pub fn load_with(path: &Path, mode: Strictness) -> Result<CanDb, DbError> {
        let bytes = std::fs::read(path).map_err(|error| DbError::Read {
            path: path.display().to_string(),
            error,
        })?;
        CanDb::parse_with(&text_of(bytes), &path.display().to_string(), mode)
    }

    /// Loads and merges several files; the error names the file (and line) at fault.
    pub fn load_all(paths: &[std::path::PathBuf], mode: Strictness) -> Result<CanDb, LoadError> {
        let mut all = CanDb::default();
        for p in paths {
            let db = CanDb::load_with(p, mode)?;
            all.merge(db, &p.display().to_string())?;
        }
        Ok(all)
    }

    /// What the load skipped or kept despite a fault (lenient loads only).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Parses DBC text leniently; `path` names it in errors and warnings.
    pub fn parse(text: &str, path: &str) -> Result<CanDb, DbError> {
        CanDb::parse_with(text, path, Strictness::Lenient)
    }

    /// Parses and checks DBC text; `path` names it in errors and warnings.
    pub fn parse_with(text: &str, path: &str, mode: Strictness) -> Result<CanDb, DbError> {
        let strict = mode == Strictness::Strict;
        let mut warnings = Vec::new();
        let dbc = can_dbc::Dbc::try_from(text).map_err(|e| {
            let message = e.to_string();
            // pest reports ` --> LINE:COL`.
            let line: usize = message
                .split("--> ")
                .nth(1)
                .and_then(|s| s.split(':').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let at = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
            DbError::Parse {
                path: path.to_string(),
                line,
                message: in_dbc_terms(message.lines().last().unwrap_or(""), at),
            }
        })?;
        // The parser keeps a standard id in 16 bits: an id above 0x7FF without the
        // extended flag would be cut short and collide silently. Caught here by line
        // (and each message's line noted for the messages below).
        let mut lines: HashMap<String, usize> = HashMap::new();
        // Lenient: such an id up to 29 bits is read as the extended id it must be (as
        // opendbc's own tools do); above, the message is skipped.
        let mut cut_short: HashMap<String, Option<u32>> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            if words.next() != Some("BO_") {
                continue;
            }
            let (Some(Ok(id)), name) = (words.next().map(str::parse::<u64>), words.next()) else {
                continue;
            };
            let name = name.unwrap_or("?").trim_end_matches(':').to_string();
            lines.entry(name.clone()).or_insert(i + 1);
            if id & 0x8000_0000 == 0 && id > 0x7FF {
                let e = DbError::Parse {
                    path: path.to_string(),
                    line: i + 1,
                    message: format!(
                        "message {name}: id {id} ({id:#x}) is over 0x7FF, the largest standard id, and not marked extended (a 29-bit id is written with 0x80000000 added: {})",
                        id | 0x8000_0000
                    ),
                };
                if strict {
                    return Err(e);
                }
                let as_extended = (id <= 0x1FFF_FFFF).then_some(id as u32);
                warnings.push(match as_extended {
                    Some(x) => format!("{e}; read as the extended id {x:#x}"),
                    None => format!("{e}; over 29 bits too: the message is skipped"),
                });
                cut_short.insert(name, as_extended);
            }
        }
        if dbc.messages.is_empty() {
            return Err(DbError::Parse {
                path: path.to_string(),
                line: 1,
                message: "no messages (BO_): is this a DBC file?".into(),
            });
        }
        let mut messages = HashMap::new();
        'messages: for m in &dbc.messages {
            // CANdb++ keeps signals that belong to no message under this pseudo-message;
            // they are not on any bus.
            if m.name == "VECTOR__INDEPENDENT_SIG_MSG" {
                continue;
            }
            let (id, extended) = match (m.id, cut_short.get(&m.name)) {
                (_, Some(None)) => continue,
                (can_dbc::MessageId::Standard(_), Some(Some(x))) => (*x, true),
                (can_dbc::MessageId::Standard(i), None) => (i as u32, false),
                (can_dbc::MessageId::Extended(i), _) => (i, true),
            };
            let problem = |p: String| DbError::Message {
                path: path.to_string(),
                line: lines.get(&m.name).copied().unwrap_or(0),
                message: m.name.clone(),
                id,
                problem: p,
            };
            // A fault of the message: refused (strict) or the message skipped.
            macro_rules! skip_message {
                ($p:expr) => {{
                    let e = problem($p);
                    if strict {
                        return Err(e);
                    }
                    warnings.push(format!("{e}; the message is skipped"));
                    continue 'messages;
                }};
            }
            if let Some(first) = messages.get(&key(id, extended)) {
                let first: &MessageDef = first;
                skip_message!(format!(
                    "its CAN id is {}'s too: one id, one message",
                    first.name
                ));
            }
            // Only a J1939 transfer (extended ids) carries more than a CAN FD frame.
            if m.size > MAX_TRANSFER as u64 || (m.size > 64 && !extended) {
                skip_message!(format!(
                    "length {} is over the 64 bytes of CAN FD{}",
                    m.size,
                    if extended {
                        " and the 1,785 bytes of a J1939 transfer"
                    } else {
                        " (only a J1939 transfer, with an extended id, carries more)"
                    }
                ));
            }
            let mut signals: Vec<SignalDef> = Vec::new();
            for s in &m.signals {
                let kind = match dbc.extended_value_type_for_signal(m.id, &s.name) {
                    Some(can_dbc::SignalExtendedValueType::IEEEfloat32Bit) => Kind::Float32,
                    Some(can_dbc::SignalExtendedValueType::IEEEdouble64bit) => Kind::Float64,
                    _ if s.value_type == can_dbc::ValueType::Signed => Kind::Signed,
                    _ => Kind::Unsigned,
                };
                let layout = Layout {
                    start_bit: s.start_bit.min(u16::MAX as u64) as u16,
                    size: s.size.min(u16::MAX as u64) as u16,
                    order: match s.byte_order {
                        can_dbc::ByteOrder::LittleEndian => ByteOrder::Intel,
                        can_dbc::ByteOrder::BigEndian => ByteOrder::Motorola,
                    },
                };
                // A fault of one signal: refused (strict) or that signal skipped.
                let fault = if layout.size == 0 || layout.size > 64 {
                    Some(format!(
                        "signal {} has {} bits; valid: 1 to 64",
                        s.name, s.size
                    ))
                } else if layout.bytes_needed() > m.size as usize || s.start_bit >= m.size * 8 {
                    Some(format!(
                        "signal {} (start bit {}, {} bits) does not fit the {}-byte message",
                        s.name, s.start_bit, s.size, m.size
                    ))
                } else if signals.iter().any(|o| o.name == s.name) {
                    // Names are cut to 32 characters by CANdb++ (the full one goes to
                    // SystemSignalLongSymbol), so two long names can meet; one name is
                    // one point id.
                    Some(format!(
                        "signal {} is in the message twice (at start bits {} and {}): one name, one point id",
                        s.name,
                        signals.iter().find(|o| o.name == s.name).map_or(0, |o| o.layout.start_bit),
                        s.start_bit
                    ))
                } else {
                    None
                };
                if let Some(f) = fault {
                    let e = problem(f);
                    if strict {
                        return Err(e);
                    }
                    warnings.push(format!("{e}; the signal is skipped"));
                    continue;
                }
                let labels = dbc
                    .value_descriptions_for_signal(m.id, &s.name)
                    .map(|v| v.iter().map(|d| (d.id, d.description.clone())).collect())
                    .unwrap_or_default();
                signals.push(SignalDef {
                    name: s.name.clone(),
                    layout,
                    kind,
                    factor: s.factor,
                    offset: s.offset,
                    min: num(&s.min),
                    max: num(&s.max),
                    unit: s.unit.clone(),
                    mux: mux_of(&dbc, m, s),
                    is_switch: matches!(
                        s.multiplexer_indicator,
                        can_dbc::MultiplexIndicator::Multiplexor
                            | can_dbc::MultiplexIndicator::MultiplexorAndMultiplexedSignal(_)
                    ),
                    labels,
                    decimals: match kind {
                        Kind::Float32 | Kind::Float64 => None,
                        _ => decimals_of(s.factor)
                            .zip(decimals_of(s.offset))
                            .map(|(a, b)| a.max(b)),
                    },
                });
            }
            if let Some(overlap) = overlapping(&signals) {
                let e = problem(overlap);
                if strict {
                    return Err(e);
                }
                // As cantools does: each signal is read from its own bits.
                warnings.push(format!("{e}; both are decoded, each from its own bits"));
            }
            messages.insert(
                key(id, extended),
                MessageDef {
                    name: m.name.clone(),
                    id,
                    extended,
                    size: m.size as usize,
                    signals,
                },
            );
        }
        use sha2::Digest;
        Ok(CanDb {
            messages,
            digest: sha2::Sha256::digest(text.as_bytes()).into(),
            warnings,
        })
    }

    /// Keeps only the messages `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&MessageDef) -> bool) {
        self.messages.retain(|_, m| keep(m));
    }

    pub fn message(&self, id: u32, extended: bool) -> Option<&MessageDef> {
        self.messages.get(&key(id, extended))
    }

    pub fn messages(&self) -> impl Iterator<Item = &MessageDef> {
        self.messages.values()
    }

    /// Adds the messages of another database (a bus may use several DBC files), loaded
    /// from `path`; two definitions of one CAN id are refused, naming both.
    pub fn merge(&mut self, other: CanDb, path: &str) -> Result<(), MergeError> {
        use sha2::Digest;
        for (k, m) in other.messages {
            if let Some(existing) = self.messages.get(&k) {
                return Err(MergeError {
                    path: path.to_string(),
                    first: existing.name.clone(),
                    second: m.name,
                    id: m.id,
                });
            }
            self.messages.insert(k, m);
        }
        self.warnings.extend(other.warnings);
        let mut h = sha2::Sha256::new();
        h.update(self.digest);
        h.update(other.digest);
        self.digest = h.finalize().into();
        Ok(())
    }
}

/// The presence condition of a signal: `SG_MUL_VAL_` when given, else `mNN` on the
/// message's switch.
fn mux_of(dbc: &can_dbc::Dbc, m: &can_dbc::Message, s: &can_dbc::Signal) -> Mux {
    let value = match s.multiplexer_indicator {
        can_dbc::MultiplexIndicator::MultiplexedSignal(v)
        | can_dbc::MultiplexIndicator::MultiplexorAndMultiplexedSignal(v) => v,
        _ => return Mux::Plain,
    };
    if let Some(x) = dbc
        .extended_multiplex
        .iter()
        .find(|x| x.message_id == m.id && x.signal_name == s.name)
    {
        return Mux::When {
            switch: x.multiplexor_signal_name.clone(),
            ranges: x
                .mappings
                .iter()
                .map(|r| (r.min_value, r.max_value))
                .collect(),
        };
    }
    let switch = m
        .signals
        .iter()
        .find(|o| o.multiplexer_indicator == can_dbc::MultiplexIndicator::Multiplexor)
        .map(|o| o.name.clone())
        .unwrap_or_default();
    Mux::When {
        switch,
        ranges: vec![(value, value)],
    }
}

/// Two signals that are present together and share a bit.
fn overlapping(signals: &[SignalDef]) -> Option<String> {
    let bits = |s: &SignalDef| -> Vec<u32> {
        let l = s.layout;
        let mut out = Vec::new();
        let mut pos = l.start_bit as u32;
        for _ in 0..l.size {
            out.push(pos);
            pos = match l.order {
                ByteOrder::Intel => pos + 1,
                ByteOrder::Motorola if pos % 8 == 0 => pos + 15,
                ByteOrder::Motorola => pos.saturating_sub(1),
            };
        }
        out
    };
    for (i, a) in signals.iter().enumerate() {
        for b in &signals[i + 1..] {
            let together = match (&a.mux, &b.mux) {
                (
                    Mux::When {
                        switch: sa,
                        ranges: ra,
                    },
                    Mux::When {
                        switch: sb,
                        ranges: rb,
                    },
                ) => {
                    sa == sb
                        && ra
                            .iter()
                            .any(|x| rb.iter().any(|y| x.0 <= y.1 && y.0 <= x.1))
                }
                _ => true,
            };
            if together {
                let ab = bits(a);
                if bits(b).iter().any(|x| ab.contains(x)) {
                    return Some(format!("signals {} and {} overlap", a.name, b.name));
                }
            }
        }
    }
    None
}

impl MessageDef {
    /// Decodes the signals present in `data`; signals the payload is too short for are
    /// left out (the caller counts the short frame).
    pub fn decode<'a>(&'a self, data: &[u8]) -> Vec<Decoded<'a>> {
        // Resolve presence, switches first (cascaded multiplexers need a few passes).
        let mut present: Vec<Option<bool>> = vec![None; self.signals.len()];
        let mut switch_raw: HashMap<&str, u64> = HashMap::new();
        for _ in 0..8 {
            let mut changed = false;
            for (i, s) in self.signals.iter().enumerate() {
                if present[i].is_some() {
                    continue;
                }
                let here = match &s.mux {
                    Mux::Plain => Some(true),
                    Mux::When { switch, ranges } => {
                        let sw = self.signals.iter().position(|o| &o.name == switch);
                        match sw.map(|j| present[j]) {
                            None => Some(false),
                            Some(None) => None,
                            Some(Some(false)) => Some(false),
                            Some(Some(true)) => switch_raw
                                .get(switch.as_str())
                                .map(|v| ranges.iter().any(|r| r.0 <= *v && *v <= r.1)),
                        }
                    }
                };
                if let Some(p) = here {
                    present[i] = Some(p);
                    changed = true;
                    if p && s.is_switch {
                        let raw = extract(data, &s.layout);
                        match raw {
                            Some(r) => {
                                switch_raw.insert(
                                    s.name.as_str(),
                                    integer(r, s.layout.size, s.kind) as u64,
                                );
                            }
                            None => present[i] = Some(false),
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.signals
            .iter()
            .zip(present)
            .enumerate()
            .filter(|(_, (_, p))| *p == Some(true))
            .filter_map(|(index, (s, _))| {
                let raw = extract(data, &s.layout)?;
                let mut value = interpret(raw, s.layout.size, s.kind) * s.factor + s.offset;
                if let Some(d) = s.decimals {
                    let p = 10f64.powi(d);
                    value = (value * p).round() / p;
                }
                let label = s
                    .labels
                    .get(&integer(raw, s.layout.size, s.kind))
                    .map(String::as_str);
                let in_range = (s.min == 0.0 && s.max == 0.0)
                    || (value >= s.min - 1e-9 && value <= s.max + 1e-9);
                Some(Decoded {
                    signal: s,
                    index,
                    raw,
                    value,
                    label,
                    in_range,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "VERSION \"\"\n\nNS_ :\n\nBS_:\n\nBU_: ECU\n\n";

    /// CANdb++'s pseudo-message for signals of no message is not on any bus: skipped.
    #[test]
    fn vector_independent_signals_are_ignored() {
        let text = format!(
            "{HEAD}BO_ 256 A: 8 ECU\n SG_ X : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\n\
             BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX\n SG_ Loose : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n"
        );
        let db = CanDb::parse(&text, "v.dbc").unwrap();
        assert_eq!(
            db.messages().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["A"]
        );
    }

    /// One id defined twice in one file is refused naming both, not "the last wins".
    #[test]
    fn one_signal_name_twice_in_a_message_keeps_the_first() {
        let text = "VERSION \"\"\nBU_: E\nBO_ 2364540158 EAC1: 8 E\n SG_ Lock_State___Rear_A : 8|2@1+ (1,0) [0|3] \"\" E\n SG_ Lock_State___Rear_A : 10|2@1+ (1,0) [0|3] \"\" E\n SG_ Other : 12|2@1+ (1,0) [0|3] \"\" E\n";
        let db = CanDb::parse(text, "j.dbc").unwrap();
        let m = db.messages().next().unwrap();
        let names: Vec<_> = m.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Lock_State___Rear_A", "Other"]);
        assert_eq!(m.signals[0].layout.start_bit, 8);
        assert_eq!(db.warnings().len(), 1, "{:?}", db.warnings());
        assert!(
            db.warnings()[0].starts_with("j.dbc:3: message EAC1")
                && db.warnings()[0].contains("start bits 8 and 10")
                && db.warnings()[0].ends_with("the signal is skipped"),
            "{}",
            db.warnings()[0]
        );
        let e = strict(text, "j.dbc").unwrap_err().to_string();
        assert!(
            e.contains("signal Lock_State___Rear_A is in the message twice"),
            "{e}"
        );
    }

    #[test]
    fn one_id_twice_in_a_file_is_refused() {
        let text = format!(
            "{HEAD}BO_ 256 A: 8 ECU\n SG_ X : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\n\
             BO_ 256 B: 8 ECU\n SG_ Y : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n"
        );
        let e = strict(&text, "d.dbc").unwrap_err().to_string();
        assert!(
            e.contains("A") && e.contains("B") && e.contains("d.dbc:12"),
            "{e}"
        );
        // Lenient: the first stays, the second is skipped, saying so.
        let db = CanDb::parse(&text, "d.dbc").unwrap();
        assert_eq!(db.message(256, false).unwrap().name, "A");
        assert_eq!(db.warnings().len(), 1);
        assert!(
            db.warnings()[0].contains("message B")
                && db.warnings()[0].ends_with("the message is skipped")
        );
    }

    /// Not UTF-8: Windows-1252, so 0x80 is the euro sign (not the control U+0080).
    #[test]
    fn windows_1252_text_reads_as_windows_1252() {
        let mut bytes = format!(
            "{HEAD}BO_ 256 A: 8 ECU\n SG_ S : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\nVAL_ 256 S 5 \"5 "
        )
        .into_bytes();
        bytes.extend([0x80, b'"', b' ', b';', b'\n']);
        let db = CanDb::parse(&text_of(bytes), "w.dbc").unwrap();
        let m = db.message(256, false).unwrap();
        assert_eq!(m.signals[0].labels.get(&5).map(String::as_str), Some("5 €"));
        assert_eq!(text_of("° UTF-8".as_bytes().to_vec()), "° UTF-8");
    }

    /// A standard id over 0x7FF is refused at its line, not cut to 16 bits.
    #[test]
    fn a_standard_id_over_0x7ff_is_refused_at_its_line() {
        let text = format!(
            "{HEAD}BO_ 256 A: 8 ECU\n SG_ X : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\n\
             BO_ 65792 Big: 8 ECU\n SG_ Y : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n"
        );
        let e = strict(&text, "s.dbc").unwrap_err().to_string();
        assert!(e.starts_with("s.dbc:12: message Big: id 65792"), "{e}");
        assert!(e.contains("2147549440"), "{e}");
        // Lenient: read as the 29-bit id it must be, never colliding with A.
        let db = CanDb::parse(&text, "s.dbc").unwrap();
        assert_eq!(db.message(65792, true).unwrap().name, "Big");
        assert_eq!(db.message(256, false).unwrap().name, "A");
        assert!(db.warnings()[0].starts_with("s.dbc:12: message Big"));
        assert!(db.warnings()[0].ends_with("read as the extended id 0x10100"));
    }

    /// J1939 PGNs up to the transport's 1,785 bytes load and decode; a standard id
    /// over 64 bytes does not.
    #[test]
    fn j1939_messages_up_to_the_transport_limit_load() {
        let text = format!(
            "{HEAD}BO_ 2566834686 Big: 200 ECU\n SG_ Far : 1200|16@1+ (0.5,0) [0|0] \"\" Vector__XXX\n"
        );
        let db = CanDb::parse(&text, "j.dbc").unwrap();
        let m = db.messages().next().unwrap();
        let mut data = vec![0u8; 200];
        data[150] = 0x10;
        data[151] = 0x27;
        assert_eq!(m.decode(&data)[0].value, 5000.0);
        for (id, size) in [("2566834686", 1786), ("256", 65)] {
            let text = format!(
                "{HEAD}BO_ {id} Big: {size} ECU\n SG_ X : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n"
            );
            let e = strict(&text, "j.dbc").unwrap_err().to_string();
            assert!(e.contains("over the 64 bytes"), "{e}");
            let db = CanDb::parse(&text, "j.dbc").unwrap();
            assert_eq!(db.messages().count(), 0);
            assert!(db.warnings()[0].contains("over the 64 bytes"));
        }
    }

    /// Parser errors in a DBC author's words, with the line they are about.
    #[test]
    fn parse_errors_speak_dbc() {
        let cases = [
            (
                "VERSION \"\"\n\nBO_ 12 X: 8 ECU\n SG_ broken 0|8@1+ (1,0) [0|0] \"\"\n",
                "p.dbc:4: a signal is `SG_ NAME : START|SIZE@ORDER+",
                "`SG_ broken 0|8@1+",
            ),
            (
                "VERSION \"\"\nBO_ 12 X 8 ECU\n",
                "p.dbc:2: this line is not a DBC statement; expected the end of the file",
                "BO_ ID NAME: SIZE NODE",
            ),
            ("\u{0}\u{1}binary", "p.dbc:1: this is not DBC text", ""),
        ];
        for (text, starts, has) in cases {
            let e = CanDb::parse(text, "p.dbc").unwrap_err().to_string();
            assert!(e.starts_with(starts), "{e}");
            assert!(e.contains(has), "{e}");
            assert!(!e.contains("= expected"), "{e}");
        }
    }

    /// A file with no messages is no database.
    #[test]
    fn an_empty_file_is_refused() {
        for text in ["", HEAD] {
            let e = CanDb::parse(text, "e.dbc").unwrap_err().to_string();
            assert!(
                e.contains("e.dbc") && e.contains("no messages"),
                "{text:?}: {e}"
            );
        }
    }

    const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 Engine: 8 ECU
 SG_ Rpm : 0|16@1+ (0.25,0) [0|16383.75] "rpm" Vector__XXX
 SG_ Temp : 16|8@1- (1,-40) [-40|215] "degC" Vector__XXX
 SG_ Gear : 31|4@0+ (1,0) [0|15] "" Vector__XXX

BO_ 2566834709 Ext: 8 ECU
 SG_ Mode M : 0|8@1+ (1,0) [0|0] "" Vector__XXX
 SG_ A m1 : 8|16@1+ (1,0) [0|0] "" Vector__XXX
 SG_ B m2 : 8|16@1- (0.5,0) [0|0] "" Vector__XXX

BO_ 512 Fd: 64 ECU
 SG_ Last : 496|16@1+ (1,0) [0|0] "" Vector__XXX
 SG_ Flt : 0|32@1- (1,0) [0|0] "" Vector__XXX

VAL_ 256 Gear 0 "Neutral" 1 "First" 15 "Invalid" ;
SIG_VALTYPE_ 512 Flt : 1;
"#;

    #[test]
    fn decodes_by_hand_computed_values() {
        let db = CanDb::parse(DBC, "t.dbc").unwrap();
        let m = db.message(256, false).unwrap();
        // Rpm = 0x0FA0 * 0.25 = 1000; Temp = 0xEC = -20 signed, -40 offset = -60;
        // Gear: Motorola 4 bits at 31 = high nibble of byte 3 = 1.
        let d = m.decode(&[0xA0, 0x0F, 0xEC, 0x10, 0, 0, 0, 0]);
        let v = |n: &str| d.iter().find(|x| x.signal.name == n).unwrap();
        assert_eq!(v("Rpm").value, 1000.0);
        assert_eq!(v("Temp").value, -60.0);
        assert_eq!(v("Gear").value, 1.0);
        assert_eq!(v("Gear").label, Some("First"));
        assert!(!v("Temp").in_range, "-60 is below the DBC minimum of -40");
        assert!(v("Rpm").in_range);
    }

    #[test]
    fn extended_ids_and_multiplexing() {
        let db = CanDb::parse(DBC, "t.dbc").unwrap();
        let m = db.message(2566834709 & 0x1FFF_FFFF, true).unwrap();
        assert!(db.message(2566834709 & 0x1FFF_FFFF, false).is_none());
        let d = m.decode(&[1, 0x34, 0x12, 0, 0, 0, 0, 0]);
        assert_eq!(
            d.iter().map(|x| x.signal.name.as_str()).collect::<Vec<_>>(),
            vec!["Mode", "A"]
        );
        assert_eq!(d[1].value, 0x1234 as f64);
        let d = m.decode(&[2, 0xFE, 0xFF, 0, 0, 0, 0, 0]);
        assert_eq!(d[1].signal.name, "B");
        assert_eq!(d[1].value, -1.0, "signed -2 × 0.5");
    }

    #[test]
    fn can_fd_and_float_signals() {
        let db = CanDb::parse(DBC, "t.dbc").unwrap();
        let m = db.message(512, false).unwrap();
        let mut data = [0u8; 64];
        data[..4].copy_from_slice(&(-3.5f32).to_bits().to_le_bytes());
        data[62] = 0x01;
        data[63] = 0x02;
        let d = m.decode(&data);
        assert_eq!(
            d.iter().find(|x| x.signal.name == "Flt").unwrap().value,
            -3.5
        );
        assert_eq!(
            d.iter().find(|x| x.signal.name == "Last").unwrap().value,
            0x0201 as f64
        );
        // an 8-byte frame of a 64-byte message: only what fits
        assert_eq!(m.decode(&data[..8]).len(), 1);
    }

    #[test]
    fn broken_databases_are_refused_with_a_location() {
        let e = CanDb::parse(
            "VERSION \"\"\n\nBO_ 12 X: 8 ECU\n SG_ broken 0|8@1+ (1,0) [0|0] \"\"\n",
            "bad.dbc",
        )
        .unwrap_err();
        assert!(matches!(e, DbError::Parse { line: 4, .. }), "{e}");
        let over = DBC.replace(" SG_ Temp : 16|8@1-", " SG_ Temp : 8|8@1-");
        let e = strict(&over, "o.dbc").unwrap_err().to_string();
        assert!(e.contains("signals Rpm and Temp overlap"), "{e}");
        let outside = DBC.replace(" SG_ Gear : 31|4@0+", " SG_ Gear : 63|16@0+");
        let e = strict(&outside, "x.dbc").unwrap_err().to_string();
        assert!(e.contains("does not fit the 8-byte message"), "{e}");
        // Lenient, as cantools: overlapping signals both decode; a signal that does not
        // fit is skipped, the rest of its message kept; each with file and line.
        let db = CanDb::parse(&over, "o.dbc").unwrap();
        let w = db.warnings().join("\n");
        assert!(
            w.contains("signals Rpm and Temp overlap; both are decoded"),
            "{w}"
        );
        assert!(w.starts_with("o.dbc:"), "{w}");
        let db = CanDb::parse(&outside, "x.dbc").unwrap();
        let w = db.warnings().join("\n");
        assert!(
            w.contains("signal Gear") && w.ends_with("the signal is skipped"),
            "{w}"
        );
        let m = db
            .messages()
            .find(|m| m.signals.iter().any(|s| s.name == "Rpm"))
            .unwrap();
        assert!(m.signals.iter().all(|s| s.name != "Gear"));
        assert!(strict(DBC, "t.dbc").unwrap().warnings().is_empty());
    }

    fn strict(text: &str, path: &str) -> Result<CanDb, DbError> {
        CanDb::parse_with(text, path, Strictness::Strict)
    }
}
