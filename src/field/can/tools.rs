//! The field engineer's CAN tools behind `fieldgate can decode` (a candump log) and
//! `fieldgate can dump` (live traffic): each frame printed decoded, as text for people or
//! one JSON object per frame for scripts.

use super::db::CanDb;
use super::decoder::{Decoded, Decoder};
use super::frame::{Frame, Received};
use super::log::LogReader;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub frames: u64,
    pub decoded: u64,
    pub unknown: u64,
    pub errors: u64,
    pub dropped_transfers: u64,
    pub bad_lines: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames: {} decoded, {} without a DBC message, {} error frames, {} J1939 transfers dropped, {} bad lines",
            self.frames, self.decoded, self.unknown, self.errors, self.dropped_transfers, self.bad_lines
        )
    }
}

/// Prints frames decoded.
pub struct Printer {
    decoder: Decoder,
    format: Format,
    pub summary: Summary,
}

fn seconds(ts_ns: i64) -> String {
    format!(
        "{}.{:06}",
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000) / 1000
    )
}

fn id_text(f: &Frame) -> String {
    if f.extended {
        format!("{:08X}", f.id)
    } else {
        format!("{:03X}", f.id)
    }
}

/// A value as people write it: 3.3, not 3.3000000000000003.
fn tidy(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn hex(data: &[u8]) -> String {
    crate::hex::encode_upper(data)
}

impl Printer {
    pub fn new(db: CanDb, j1939: bool, format: Format) -> Printer {
        Printer {
            decoder: Decoder::new(db, j1939),
            format,
            summary: Summary::default(),
        }
    }

    /// Prints one frame (nothing for the inner packets of a J1939 transfer).
    pub fn print(
        &mut self,
        out: &mut impl Write,
        interface: &str,
        rec: &Received,
    ) -> std::io::Result<()> {
        let f = match rec {
            Received::Data(f) => f,
            Received::Error { ts_ns, error } => {
                self.summary.errors += 1;
                return match self.format {
                    Format::Text => writeln!(
                        out,
                        "({}) {interface} ERROR FRAME {error:?}",
                        seconds(*ts_ns)
                    ),
                    Format::Json => writeln!(
                        out,
                        "{}",
                        serde_json::json!({"ts": seconds(*ts_ns).parse::<f64>().unwrap_or(0.0), "interface": interface, "error": format!("{error:?}")})
                    ),
                };
            }
            Received::Remote => return Ok(()),
        };
        self.summary.frames += 1;
        let ts = seconds(f.ts_ns);
        let head = serde_json::json!({
            "ts": ts.parse::<f64>().unwrap_or(0.0),
            "interface": interface,
            "id": id_text(f),
            "extended": f.extended,
            "fd": f.fd,
        });
        match self.decoder.feed(f) {
            Decoded::Message {
                message,
                source,
                signals,
            } => {
                self.summary.decoded += 1;
                match self.format {
                    Format::Text => {
                        let at = source.map(|s| format!(" from {s:02X}")).unwrap_or_default();
                        write!(
                            out,
                            "({ts}) {interface} {} {}{at}:",
                            id_text(f),
                            message.name
                        )?;
                        for d in &signals {
                            write!(out, " {}={}", d.signal.name, tidy(d.value))?;
                            if !d.signal.unit.is_empty() {
                                write!(out, " {}", d.signal.unit)?;
                            }
                            if let Some(l) = d.label {
                                write!(out, " ({l})")?;
                            }
                            if !d.in_range {
                                write!(out, " [out of range]")?;
                            }
                        }
                        writeln!(out)
                    }
                    Format::Json => {
                        let mut o = head;
                        o["message"] = message.name.clone().into();
                        if let Some(s) = source {
                            o["source"] = s.into();
                        }
                        let sigs: serde_json::Map<String, serde_json::Value> = signals
                            .iter()
                            .map(|d| {
                                (
                                    d.signal.name.clone(),
                                    serde_json::json!({
                                        "value": d.value,
                                        "raw": d.raw,
                                        "unit": d.signal.unit,
                                        "label": d.label,
                                        "in_range": d.in_range,
                                    }),
                                )
                            })
                            .collect();
                        o["signals"] = sigs.into();
                        writeln!(out, "{o}")
                    }
                }
            }
            Decoded::Dm1 { source, dtcs } => {
                self.summary.decoded += 1;
                match self.format {
                    Format::Text => {
                        write!(
                            out,
                            "({ts}) {interface} {} DM1 from {source:02X}:",
                            id_text(f)
                        )?;
                        if dtcs.is_empty() {
                            write!(out, " no active trouble codes")?;
                        }
                        for d in &dtcs {
                            write!(
                                out,
                                " SPN {} FMI {} occurrences {};",
                                d.spn, d.fmi, d.occurrences
                            )?;
                        }
                        writeln!(out)
                    }
                    Format::Json => {
                        let mut o = head;
                        o["message"] = "DM1".into();
                        o["source"] = source.into();
                        o["dtcs"] = dtcs
                            .iter()
                            .map(|d| serde_json::json!({"spn": d.spn, "fmi": d.fmi, "occurrences": d.occurrences}))
                            .collect::<Vec<_>>()
                            .into();
                        writeln!(out, "{o}")
                    }
                }
            }
            Decoded::TransferDropped {
                source,
                pgn,
                reason,
            } => {
                self.summary.dropped_transfers += 1;
                eprintln!("({ts}) {interface}: J1939 transfer of PGN {pgn} from {source:02X} dropped: {reason}");
                Ok(())
            }
            Decoded::Partial => Ok(()),
            Decoded::Unknown => {
                self.summary.unknown += 1;
                match self.format {
                    Format::Text => writeln!(
                        out,
                        "({ts}) {interface} {}#{} (no DBC message)",
                        id_text(f),
                        hex(&f.data)
                    ),
                    Format::Json => {
                        let mut o = head;
                        o["message"] = serde_json::Value::Null;
                        o["data"] = hex(&f.data).into();
                        writeln!(out, "{o}")
                    }
                }
            }
        }
    }
}

/// Why a CAN tool stopped.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot read {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open CAN interface {ifname}: {source} (does `ip link show {ifname}` list it, and is it up?)")]
    Interface {
        ifname: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {ifname}: {source}")]
    Read {
        ifname: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Decodes a whole candump log; bad lines are reported on stderr and skipped.
pub fn decode_log(
    path: &Path,
    db: CanDb,
    j1939: bool,
    format: Format,
    out: &mut impl Write,
) -> Result<Summary, ToolError> {
    let reader = LogReader::open(path).map_err(|source| ToolError::Log {
        path: path.display().to_string(),
        source,
    })?;
    let mut p = Printer::new(db, j1939, format);
    for rec in reader {
        match rec {
            Ok(r) => match p.print(out, &r.interface, &r.received) {
                // `| head`: the reader has seen enough.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(p.summary),
                other => other?,
            },
            Err(e) => {
                p.summary.bad_lines += 1;
                eprintln!("{e}");
            }
        }
    }
    out.flush()?;
    Ok(p.summary)
}

/// Prints live traffic of `ifname` until `stop`.
pub async fn dump(
    ifname: &str,
    db: CanDb,
    j1939: bool,
    format: Format,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Summary, ToolError> {
    let sock = super::socket::open(ifname, None).map_err(|source| ToolError::Interface {
        ifname: ifname.into(),
        source,
    })?;
    let mut p = Printer::new(db, j1939, format);
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = sock.read_frame() => {
                let frame = r.map_err(|source| ToolError::Read { ifname: ifname.into(), source })?;
                let rec = Received::from_socketcan(frame, crate::sample::now_ns());
                p.print(&mut out, ifname, &rec)?;
                out.flush()?;
            }
        }
    }
    Ok(p.summary)
}
