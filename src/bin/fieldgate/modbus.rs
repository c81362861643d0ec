//! `fieldgate modbus read|scan`: commissioning tools on one TCP endpoint or serial line.

use anyhow::bail;
use clap::{Args, Subcommand};
use fieldgate::field::modbus::{codec, DataType, Function};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Command {
    /// Read registers and show them raw beside the value decoded in every word order.
    Read(ReadArgs),
    /// Find the unit ids that answer on a bus, or (with --unit and --range) which
    /// addresses of one unit can be read.
    Scan(ScanArgs),
}

#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Unit ids to probe, e.g. `1-247` or `5`.
    #[arg(long, default_value = "1-247")]
    units: String,
    /// With --range: scan the addresses of this unit instead.
    #[arg(long, requires = "range")]
    unit: Option<u8>,
    /// Addresses to scan on --unit, e.g. `0-9999`.
    #[arg(long)]
    range: Option<String>,
    /// coil, discrete_input, input_register or holding_register.
    #[arg(long, default_value = "holding_register")]
    function: String,
    /// The address read when probing unit ids.
    #[arg(long, default_value_t = 0)]
    address: u16,
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

/// `a-b` or `a` as an inclusive range.
fn parse_range<T: std::str::FromStr + Copy + PartialOrd>(
    s: &str,
    what: &str,
) -> anyhow::Result<std::ops::RangeInclusive<T>> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    match (a.trim().parse::<T>(), b.trim().parse::<T>()) {
        (Ok(a), Ok(b)) if a <= b => Ok(a..=b),
        _ => anyhow::bail!("{what} `{s}`: write a range like `1-247` or a single number"),
    }
}

/// Where a Modbus command-line tool talks: one TCP endpoint or one serial line.
#[derive(Args)]
pub struct BusArgs {
    /// Modbus TCP device or gateway, host:port.
    #[arg(long, conflicts_with = "rtu", required_unless_present = "rtu")]
    tcp: Option<String>,
    /// Serial device for Modbus RTU.
    #[arg(long)]
    rtu: Option<PathBuf>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
}

impl BusArgs {
    fn endpoint(&self) -> anyhow::Result<fieldgate::field::modbus::transport::Endpoint> {
        use fieldgate::field::modbus::transport::Endpoint;
        Ok(match (&self.tcp, &self.rtu) {
            (Some(t), _) => Endpoint::Tcp(t.clone()),
            (None, Some(p)) => Endpoint::Rtu(fieldgate::config::RtuBus {
                port: p.clone(),
                baud: self.baud,
                parity: Default::default(),
                data_bits: 8,
                stop_bits: 1,
            }),
            _ => bail!("give --tcp HOST:PORT or --rtu PATH"),
        })
    }
}

fn parse_function(s: &str) -> anyhow::Result<Function> {
    serde_plain(
        s,
        "function",
        "coil, discrete_input, input_register, holding_register",
    )
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// coil, discrete_input, input_register or holding_register.
    #[arg(long, default_value = "holding_register")]
    function: String,
    #[arg(long)]
    address: u16,
    /// Registers (or bits) to read; defaults to the width of --type.
    #[arg(long)]
    count: Option<u16>,
    /// bool, bit, u16, i16, u32, i32, u64, i64, f32, f64, string.
    #[arg(long = "type", default_value = "u16")]
    data_type: String,
    /// Bit number for --type bit.
    #[arg(long, default_value_t = 0)]
    bit: u8,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Read(a) => modbus_read(a).await,
        Command::Scan(a) => modbus_scan(a).await,
    }
}

async fn modbus_scan(a: ScanArgs) -> anyhow::Result<()> {
    use fieldgate::field::modbus::scan::{read, readable_ranges, Probe};
    use fieldgate::field::modbus::transport::connect;
    let function = parse_function(&a.function)?;
    let endpoint = a.bus.endpoint()?;
    let units = parse_range::<u8>(&a.units, "--units")?;
    let range = a
        .range
        .as_deref()
        .map(|r| parse_range::<u16>(r, "--range"))
        .transpose()?;
    let mut ctx = connect(&endpoint, a.timeout.max(std::time::Duration::from_secs(1))).await?;
    if let (Some(unit), Some(range)) = (a.unit, range) {
        eprintln!(
            "scanning {function} {}..={} of unit {unit} on {endpoint}",
            range.start(),
            range.end()
        );
        let found = readable_ranges(&mut ctx, unit, function, range, a.timeout, |addr| {
            progress(&format!("at address {addr:<5}"));
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        progress("");
        if found.is_empty() {
            println!("no readable {function} in that range");
        }
        for r in found {
            println!(
                "readable {function} {}..={} ({} items)",
                r.start(),
                r.end(),
                *r.end() as u32 - *r.start() as u32 + 1
            );
        }
        return Ok(());
    }
    eprintln!(
        "probing unit ids {}..={} on {endpoint} ({function} {}, timeout {:?} each)",
        units.start(),
        units.end(),
        a.address,
        a.timeout
    );
    let mut any = false;
    for unit in units {
        progress(&format!("unit {unit:<3}"));
        match read(&mut ctx, unit, function, a.address, 1, a.timeout).await {
            Probe::Answers(w) => {
                any = true;
                progress("");
                println!(
                    "unit {unit:>3}: answers ({function} {} = {})",
                    a.address,
                    w.first().copied().unwrap_or(0)
                );
            }
            Probe::Exception(c) => {
                any = true;
                progress("");
                println!(
                    "unit {unit:>3}: present, exception {c:#04x} ({}) at {function} {}",
                    fieldgate::sample::exception_name(c),
                    a.address
                );
            }
            Probe::Silent => {}
            Probe::Error(e) => {
                // A failed link loses the rest of the scan: reconnect and go on.
                eprintln!("\r  unit {unit}: {e}; reconnecting");
                ctx = connect(&endpoint, a.timeout.max(std::time::Duration::from_secs(1))).await?;
            }
        }
    }
    progress("");
    if !any {
        println!("no unit answered");
    }
    Ok(())
}

async fn modbus_read(a: ReadArgs) -> anyhow::Result<()> {
    use fieldgate::field::modbus::scan::{read, Probe};
    use fieldgate::field::modbus::transport::connect;
    let function = parse_function(&a.function)?;
    let ty: DataType = serde_plain(&a.data_type, "type", DataType::ALL)?;
    let count = a.count.unwrap_or_else(|| ty.width(1));
    let endpoint = a.bus.endpoint()?;
    let mut ctx = connect(&endpoint, a.timeout).await?;
    let words = match read(&mut ctx, a.unit, function, a.address, count, a.timeout).await {
        Probe::Answers(w) => w,
        Probe::Silent => bail!(
            "no answer from unit {} on {endpoint} within {:?}",
            a.unit,
            a.timeout
        ),
        Probe::Error(e) => bail!("{endpoint}: {e}"),
        Probe::Exception(c) => bail!(
            "unit {} answered with exception {c:#04x} ({})",
            a.unit,
            fieldgate::sample::exception_name(c)
        ),
    };
    println!("{} {} at {} (unit {}):", count, function, a.address, a.unit);
    for (i, w) in words.iter().enumerate() {
        println!(
            "  {:>5}: 0x{w:04X}  {w:>5}  {:016b}",
            a.address as usize + i,
            w
        );
    }
    if function.is_bits() {
        return Ok(());
    }
    println!("as {ty}:");
    for (order, v) in codec::all_orders(&words, ty, a.bit) {
        match v {
            Ok(v) => println!("  {order}: {v}"),
            Err(e) => println!("  {order}: ({e})"),
        }
    }
    Ok(())
}

/// Parses a command-line word the way the config file would.
fn serde_plain<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
    valid: &str,
) -> anyhow::Result<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
        .map_err(|_| anyhow::anyhow!("unknown {what} `{s}`; valid: {valid}"))
}

/// A progress line rewritten in place, on a terminal only (a log gets the results alone).
fn progress(text: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r  {text:<20}\r");
        if !text.is_empty() {
            eprint!("  {text}");
        }
    }
}
