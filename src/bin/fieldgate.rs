//! `fieldgate`: the gateway daemon and the field engineer's command line.

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use fieldgate::config::GatewayConfig;
use fieldgate::field::modbus::{codec, sim, DataType, Function};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "fieldgate: industrial edge gateway (Modbus, store-and-forward, MQTT over mutual TLS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// Validate a config file without touching any device.
    Check {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        /// Only the file itself: skip the checks of serial ports, certificates and brokers.
        #[arg(long)]
        config_only: bool,
    },
    /// Show link state, buffer depth and per-device errors of a running daemon.
    Status {
        /// Read the status socket's path from this config.
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        /// Or name the socket directly.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Modbus tools for commissioning.
    #[command(subcommand)]
    Modbus(ModbusCmd),
    /// The gateway's identity: its key (TPM or file) and certificate.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Enroll with the cloud by hand: a CSR signed by the key and a one-time token.
    Enroll {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        /// The cloud's HTTPS API, e.g. https://cloud.example.net:8443 (default: identity.enroll_url).
        #[arg(long)]
        cloud: Option<String>,
        /// The one-time bootstrap token (default: the content of identity.token_file).
        #[arg(long)]
        token: Option<String>,
    },
    /// Print the systemd drop-in that lets the service open the configured serial ports
    /// (used by systemd/fieldgate-generator).
    SystemdDevices {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// CAN tools: decode a candump log, watch an interface.
    #[command(subcommand)]
    Can(CanCmd),
    /// Simulated devices.
    #[command(subcommand)]
    Sim(SimCmd),
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// Device id, key backend and fingerprint, certificate subject, issuer and expiry.
    Show {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create the TPM key if it does not exist yet (the daemon does this on first start).
    Init {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// Print the TPM's endorsement key (hex point) for registration at manufacture.
    Ek {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
    },
    /// Write a certificate signing request signed by the key (PEM, to stdout or --out).
    Csr {
        #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CanCmd {
    /// Decode a candump log (`candump -l` format) with DBC files.
    Decode {
        #[command(flatten)]
        db: DbcArgs,
        /// text for people, json for one object per frame.
        #[arg(long, value_enum, default_value = "text")]
        format: fieldgate::field::can::tools::Format,
        /// The log file.
        log: PathBuf,
    },
    /// Show live traffic of an interface, decoded when DBC files are given.
    Dump {
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        db: DbcArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: fieldgate::field::can::tools::Format,
    },
}

#[derive(Args)]
struct DbcArgs {
    /// A DBC file; repeat for several.
    #[arg(long)]
    dbc: Vec<PathBuf>,
    /// J1939: match messages by PGN from any source address, reassemble transport
    /// transfers, decode DM1.
    #[arg(long)]
    j1939: bool,
}

impl DbcArgs {
    fn load(&self) -> anyhow::Result<fieldgate::field::can::db::CanDb> {
        fieldgate::field::can::db::CanDb::load_all(&self.dbc).map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand)]
enum ModbusCmd {
    /// Read registers and show them raw beside the value decoded in every word order.
    Read(ReadArgs),
    /// Find the unit ids that answer on a bus, or (with --unit and --range) which
    /// addresses of one unit can be read.
    Scan(ScanArgs),
}

#[derive(Args)]
struct ScanArgs {
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
struct BusArgs {
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
struct ReadArgs {
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

#[derive(Subcommand)]
enum SimCmd {
    /// Serve a register map as a Modbus TCP or RTU device.
    Modbus {
        #[arg(long)]
        map: PathBuf,
        /// TCP address to listen on.
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        listen: Option<String>,
        /// Serial device (or pty) to serve RTU on.
        #[arg(long)]
        serial: Option<PathBuf>,
        #[arg(long, default_value_t = 9600)]
        baud: u32,
    },
}

/// Structured fields to the journal when systemd connected stderr to it (JOURNAL_STREAM),
/// plain text on a terminal or in a pipe.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        // Fields as BUS=, DEVICE=, ERROR= (no F_ prefix), as docs/systemd.md promises.
        .then(|| {
            tracing_journald::layer()
                .ok()
                .map(|l| l.with_field_prefix(None))
        })
        .flatten();
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn load(config: &std::path::Path) -> anyhow::Result<GatewayConfig> {
    GatewayConfig::load(config).map_err(|e| anyhow::anyhow!("{e}\nconfig is invalid"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    fieldgate::install_crypto_provider();
    match real_main(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = load(&config)?;
            let shutdown = CancellationToken::new();
            let (reload_tx, reload) = tokio::sync::mpsc::channel(4);
            tokio::spawn(handle_signals(shutdown.clone(), reload_tx));
            fieldgate::daemon::run(cfg, shutdown, reload).await
        }
        Command::Check {
            config,
            config_only,
        } => check(&config, config_only).await,
        Command::Status {
            config,
            socket,
            json,
        } => {
            let path = match socket {
                Some(s) => s,
                None => load(&config)?
                    .gateway
                    .status_socket
                    .context("the config sets no gateway.status_socket")?,
            };
            let st = fieldgate::daemon::status::query(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
            Ok(())
        }
        Command::Identity(IdentityCmd::Show { config, json }) => {
            identity_show(&load(&config)?, json)
        }
        Command::Identity(IdentityCmd::Init { config }) => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            println!(
                "{} key at {}, fingerprint {}",
                key.backend(),
                key.location(),
                fieldgate::identity::fingerprint(key.as_ref())
            );
            Ok(())
        }
        Command::Identity(IdentityCmd::Ek { config }) => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            let (ek, _) = fieldgate::identity::tpm_evidence(key.as_ref())?
                .context("the identity is not in a TPM (identity.backend = \"file\")")?;
            println!("{}", fieldgate::hex::encode(&ek));
            Ok(())
        }
        Command::Identity(IdentityCmd::Csr { config, out }) => {
            let cfg = load(&config)?;
            let key = identity_key(&cfg, true)?;
            let pem = fieldgate::identity::csr_pem(key, &cfg.gateway.device_id)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, pem)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    eprintln!(
                        "wrote the CSR for {} to {}",
                        cfg.gateway.device_id,
                        p.display()
                    );
                }
                None => print!("{pem}"),
            }
            Ok(())
        }
        Command::Enroll {
            config,
            cloud,
            token,
        } => {
            let cfg = load(&config)?;
            let url = cloud
                .or(cfg.identity.enroll_url.clone())
                .context("give --cloud URL (or set identity.enroll_url)")?;
            let token = match token {
                Some(t) => t,
                None => {
                    let f = cfg
                        .identity
                        .token_file
                        .as_ref()
                        .context("give --token TOKEN (or set identity.token_file)")?;
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?
                }
            };
            let key = identity_key(&cfg, true)?;
            fieldgate::identity::enroll::enroll(
                &cfg.gateway.device_id,
                key,
                &url,
                &token,
                &cfg.uplink.ca,
                &cfg.uplink.cert,
            )
            .await?;
            println!(
                "enrolled {}: certificate written to {}",
                cfg.gateway.device_id,
                cfg.uplink.cert.display()
            );
            Ok(())
        }
        Command::SystemdDevices { config } => {
            let cfg = GatewayConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "# Written by fieldgate-generator from {}: the serial ports it names.",
                config.display()
            );
            println!("[Service]");
            let mut seen = std::collections::BTreeSet::new();
            for bus in &cfg.bus {
                if let Some(rtu) = &bus.get_ref().rtu {
                    if seen.insert(rtu.port.clone()) {
                        println!("DeviceAllow={} rw", rtu.port.display());
                    }
                }
            }
            Ok(())
        }
        Command::Can(CanCmd::Decode { db, format, log }) => {
            let summary = fieldgate::field::can::tools::decode_log(
                &log,
                db.load()?,
                db.j1939,
                format,
                &mut std::io::stdout().lock(),
            )?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Can(CanCmd::Dump { iface, db, format }) => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                s.cancel();
            });
            let summary =
                fieldgate::field::can::tools::dump(&iface, db.load()?, db.j1939, format, stop)
                    .await?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Modbus(ModbusCmd::Read(a)) => modbus_read(a).await,
        Command::Modbus(ModbusCmd::Scan(a)) => modbus_scan(a).await,
        Command::Sim(SimCmd::Modbus {
            map,
            listen,
            serial,
            baud,
        }) => {
            let m = sim::SimMap::load(&map)?;
            match (listen, serial) {
                (Some(addr), _) => {
                    let l = tokio::net::TcpListener::bind(&addr)
                        .await
                        .with_context(|| format!("cannot listen on {addr}"))?;
                    eprintln!(
                        "simulating {} device(s) from {} on tcp {}",
                        m.device.len(),
                        map.display(),
                        l.local_addr()?
                    );
                    sim::serve_tcp(m, l).await
                }
                (None, Some(port)) => {
                    eprintln!(
                        "simulating {} device(s) from {} on rtu {}",
                        m.device.len(),
                        map.display(),
                        port.display()
                    );
                    sim::serve_rtu(m, &port, baud).await
                }
                (None, None) => bail!("give --listen ADDR or --serial PATH"),
            }
        }
    }
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads its config.
async fn handle_signals(shutdown: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reload.try_send(());
            }
        }
    }
    shutdown.cancel();
}

async fn check(config: &std::path::Path, config_only: bool) -> anyhow::Result<()> {
    let cfg = load(config)?;
    println!(
        "{}: ok (device {}, config hash {})",
        config.display(),
        cfg.gateway.device_id,
        cfg.hash
    );
    for bus in &cfg.bus {
        let status = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
        let poller = fieldgate::field::modbus::poller::BusPoller::new(
            bus.get_ref(),
            status,
            std::sync::Arc::new(fieldgate::clock::Clock::new(
                fieldgate::clock::SyncCheck::Always,
            )),
        );
        for (device, interval, blocks) in poller.plans() {
            let points: usize = blocks.iter().map(|b| b.points.len()).sum();
            println!(
                "  bus {}: device {device} every {}: {points} points in {} request(s)",
                bus.get_ref().name,
                humantime::format_duration(interval),
                blocks.len()
            );
        }
    }
    if config_only {
        return Ok(());
    }
    println!("environment:");
    let findings = fieldgate::config::environment::check(&cfg).await;
    for f in &findings {
        match &f.problem {
            None => println!("  ok    {}", f.what),
            Some(p) => println!("  FAIL  {}: {p}", f.what),
        }
    }
    let failed = findings.iter().filter(|f| f.problem.is_some()).count();
    if failed > 0 {
        anyhow::bail!("{failed} problem(s) in the environment this config needs");
    }
    Ok(())
}

fn print_status(st: &fieldgate::daemon::status::Status) {
    println!("device      {}", st.device_id);
    match &st.uplink.connected_to {
        Some(b) => println!("uplink      connected to {b}"),
        None => println!(
            "uplink      DISCONNECTED{}",
            st.uplink
                .last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    }
    let age = st
        .buffer
        .oldest_ts_ns
        .map(|t| {
            humantime::format_duration(std::time::Duration::from_secs(
                ((fieldgate::sample::now_ns() - t) / 1_000_000_000).max(0) as u64,
            ))
            .to_string()
        })
        .unwrap_or_else(|| "-".into());
    println!(
        "buffer      {} samples ({}), oldest {age} old, {} dropped, {} gap records pending",
        st.buffer.depth,
        fieldgate::bytesize::ByteSize(st.buffer.bytes),
        st.buffer.dropped,
        st.buffer.pending_gaps
    );
    if st.commit_failures > 0 {
        println!(
            "buffer      {} samples could NOT be committed (disk full or I/O error; see the log)",
            st.commit_failures
        );
    }
    println!(
        "sent        {} batches, {} samples acknowledged",
        st.uplink.acked_batches, st.uplink.acked_samples
    );
    for (name, c) in &st.can {
        println!(
            "can {name:<15} {} on {}: {} frames ({} unknown), {} samples, {} error frames, {} bus-off, {} transfers dropped{}",
            c.state,
            c.source,
            c.frames,
            c.unknown,
            c.samples,
            c.error_frames,
            c.bus_off,
            c.transfers_dropped,
            c.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
    }
    for (name, d) in &st.devices {
        println!(
            "device {name:<12} polls {:>6}  errors {:>5}  last error: {}{}",
            d.polls,
            d.errors,
            d.last_error.as_deref().unwrap_or("none"),
            if d.isolated_points.is_empty() {
                String::new()
            } else {
                format!("  isolated: {}", d.isolated_points.join(", "))
            }
        );
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
            eprint!("\r  at address {addr:<5}");
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        eprintln!();
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
        eprint!("\r  unit {unit:<3}");
        match read(&mut ctx, unit, function, a.address, 1, a.timeout).await {
            Probe::Answers(w) => {
                any = true;
                eprint!("\r");
                println!(
                    "unit {unit:>3}: answers ({function} {} = {})",
                    a.address,
                    w.first().copied().unwrap_or(0)
                );
            }
            Probe::Exception(c) => {
                any = true;
                eprint!("\r");
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
    eprintln!("\r");
    if !any {
        println!("no unit answered");
    }
    Ok(())
}

async fn modbus_read(a: ReadArgs) -> anyhow::Result<()> {
    use fieldgate::field::modbus::transport::connect;
    use tokio_modbus::client::Reader;
    use tokio_modbus::prelude::SlaveContext;
    let function = parse_function(&a.function)?;
    let ty: DataType = serde_plain(&a.data_type, "type", DataType::ALL)?;
    let count = a.count.unwrap_or_else(|| ty.width(1));
    let endpoint = a.bus.endpoint()?;
    let mut ctx = connect(&endpoint, a.timeout).await?;
    ctx.set_slave(tokio_modbus::Slave(a.unit));
    let read = async {
        match function {
            Function::Coil => ctx
                .read_coils(a.address, count)
                .await
                .map(|r| r.map(|v| v.into_iter().map(u16::from).collect())),
            Function::DiscreteInput => ctx
                .read_discrete_inputs(a.address, count)
                .await
                .map(|r| r.map(|v| v.into_iter().map(u16::from).collect())),
            Function::InputRegister => ctx.read_input_registers(a.address, count).await,
            Function::HoldingRegister => ctx.read_holding_registers(a.address, count).await,
        }
    };
    let words: Vec<u16> = match tokio::time::timeout(a.timeout, read).await {
        Err(_) => bail!(
            "no answer from unit {} on {endpoint} within {:?}",
            a.unit,
            a.timeout
        ),
        Ok(Err(e)) => bail!("{endpoint}: {e}"),
        Ok(Ok(Err(code))) => {
            let c = u8::from(code);
            bail!(
                "unit {} answered with exception {c:#04x} ({})",
                a.unit,
                fieldgate::sample::exception_name(c)
            )
        }
        Ok(Ok(Ok(w))) => w,
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

/// `fieldgate identity show`.
fn identity_show(cfg: &GatewayConfig, json: bool) -> anyhow::Result<()> {
    let key = identity_key(cfg, false)?;
    let mut doc = serde_json::json!({
        "device_id": cfg.gateway.device_id,
        "backend": key.backend(),
        "key": key.location(),
        "fingerprint": fieldgate::identity::fingerprint(key.as_ref()),
    });
    let cert = fieldgate::tls::load_certs(&cfg.uplink.cert)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            let der = c[0].as_ref().to_vec();
            let (_, x) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.uplink.cert.display()))?;
            let matches =
                x.public_key().raw == fieldgate::identity::spki_der(key.public_point()).as_slice();
            Ok(serde_json::json!({
                "path": cfg.uplink.cert.display().to_string(),
                "subject": x.subject().to_string(),
                "issuer": x.issuer().to_string(),
                "not_before": x.validity().not_before.to_rfc2822().unwrap_or_default(),
                "not_after": x.validity().not_after.to_rfc2822().unwrap_or_default(),
                "valid_now": x.validity().is_valid(),
                "matches_key": matches,
            }))
        });
    match cert {
        Ok(c) => doc["certificate"] = c,
        Err(e) => doc["certificate_error"] = e.to_string().into(),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("device id     {}", cfg.gateway.device_id);
    println!(
        "key           {} ({})",
        doc["key"].as_str().unwrap_or(""),
        doc["backend"].as_str().unwrap_or("")
    );
    if key.backend() == "file" {
        println!("              a FILE key: development only, anyone who can read it can act as this gateway");
    }
    println!(
        "fingerprint   sha256:{}",
        doc["fingerprint"].as_str().unwrap_or("")
    );
    match doc.get("certificate") {
        Some(c) => {
            println!("certificate   {}", c["path"].as_str().unwrap_or(""));
            println!("  subject     {}", c["subject"].as_str().unwrap_or(""));
            println!("  issuer      {}", c["issuer"].as_str().unwrap_or(""));
            println!(
                "  valid       {} .. {}{}",
                c["not_before"].as_str().unwrap_or(""),
                c["not_after"].as_str().unwrap_or(""),
                if c["valid_now"] == true {
                    ""
                } else {
                    "  (NOT valid now)"
                }
            );
            if c["matches_key"] != true {
                println!("  WARNING     the certificate is for another key: enroll again");
            }
        }
        None => println!(
            "certificate   none: {}",
            doc["certificate_error"].as_str().unwrap_or("")
        ),
    }
    Ok(())
}

/// The gateway's key as the config says (the one its certificate names, when keys rotate).
fn identity_key(
    cfg: &GatewayConfig,
    create: bool,
) -> anyhow::Result<std::sync::Arc<dyn fieldgate::identity::Key>> {
    Ok(fieldgate::identity::open_for(
        &cfg.identity,
        cfg.uplink.key.as_deref(),
        Some(&cfg.uplink.cert),
        create,
    )?)
}
