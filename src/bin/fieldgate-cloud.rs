//! `fieldgate-cloud`: the cloud ingest and its admin command line.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use fieldgate::cloud;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "fieldgate cloud: ingest of gateway streams, storage, admin"
)]
struct Cli {
    /// Where the CA, the certificates and the store live.
    #[arg(
        long,
        global = true,
        default_value = "fieldgate-cloud-data",
        env = "FIELDGATE_CLOUD_DATA"
    )]
    data_dir: PathBuf,
    /// Where samples, identities and access live: a `postgres://` URL (the scale-out
    /// mode, shared by ingest workers and API servers; add `sslmode=require` for TLS),
    /// or by default the data directory's SQLite file.
    #[arg(long, global = true, env = "FIELDGATE_CLOUD_STORE")]
    store: Option<String>,
    /// With --store postgres://…: a CA file the database server's certificate may chain
    /// to, besides the system's roots.
    #[arg(long, global = true, env = "FIELDGATE_CLOUD_STORE_CA")]
    store_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingest: an embedded MQTT endpoint over mutual TLS (default), or a
    /// subscriber behind an existing broker (--broker).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8883")]
        listen: String,
        /// Subscribe to this external broker (host:port) instead of listening.
        #[arg(long)]
        broker: Option<String>,
        /// With --broker: CA of the broker, and this ingest's client certificate and key.
        #[arg(long, requires = "broker")]
        broker_ca: Option<PathBuf>,
        #[arg(long, requires = "broker")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "broker")]
        key: Option<PathBuf>,
        /// With --broker: this worker's MQTT client id; keep it stable per worker, so
        /// the broker resumes its session (and redelivers what it did not acknowledge).
        #[arg(long, requires = "broker", default_value = "fieldgate-ingest")]
        client_id: String,
        /// With --broker: share the load with the other workers of this group (an MQTT 5
        /// shared subscription).
        #[arg(long, requires = "broker")]
        share_group: Option<String>,
        /// Also serve the HTTPS API on this address (with --broker and a PostgreSQL
        /// --store: one of any number of API servers).
        #[arg(long)]
        api: Option<String>,
        /// Lifetime of the certificates enrollment and renewal issue.
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        cert_lifetime: Duration,
        /// Enroll only gateways that prove their key is in the TPM registered for them.
        #[arg(long)]
        require_tpm: bool,
        /// Let tenants set plain http:// webhooks (a lab without certificates).
        #[arg(long)]
        webhook_allow_http: bool,
        /// A network webhooks may reach although it is not public (loopback, private,
        /// link-local: refused by default); repeat for several.
        #[arg(long, value_name = "CIDR")]
        webhook_allow_net: Vec<ipnet::IpNet>,
    },
    /// Register a gateway's TPM endorsement key at manufacture (`fieldgate identity ek`).
    Register {
        device: String,
        /// The EK's public point, hex.
        #[arg(long)]
        ek: String,
    },
    /// Issue a one-time bootstrap token for a gateway's first enrollment.
    Token {
        #[arg(long)]
        device: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        valid: Duration,
    },
    /// Revoke a gateway: refused at its next connect, renewal and enrollment.
    Revoke {
        device: String,
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
    /// The audit log of access decisions.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Create a system account (it registers devices at manufacture and users for
    /// others, over the API). The password is read from standard input.
    SystemAccount {
        #[arg(long)]
        email: String,
    },
    /// Enrollments, renewals, refusals and revocations, oldest first.
    Identities {
        #[arg(long)]
        device: Option<String>,
    },
    /// Issue a development certificate for a gateway (device.crt, device.key, ca.crt).
    DevCert {
        device_id: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print stored samples of a device.
    Query {
        #[arg(long)]
        device: String,
        #[arg(long)]
        point: Option<String>,
        /// RFC 3339 time (2026-11-22T10:00:00Z) or an age (`10min` = since ten minutes ago).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value = "table")]
        format: Format,
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
    /// Print the sequence ranges a gateway reported as dropped.
    Gaps {
        #[arg(long)]
        device: String,
    },
    /// Run a complete local demo: cloud, gateway, a simulated Modbus device and a
    /// replayed J1939 bus.
    Demo {
        /// Stop after this long (runs until Ctrl-C by default).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain; names the first entry edited, removed or out of place.
    Verify,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    fieldgate::install_crypto_provider();
    match real_main(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            t.cancel();
        }
    });
    token
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data_dir;
    let database = cloud::Database {
        url: cli.store,
        ca: cli.store_ca,
    };
    // Admin commands: one connection on this (blocking) thread.
    let db =
        || -> anyhow::Result<cloud::sql::Db> { tokio::task::block_in_place(|| database.db(&data)) };
    let registry = || -> anyhow::Result<cloud::registry::Registry> {
        Ok(cloud::registry::Registry::with(db()?)?)
    };
    match cli.command {
        Command::Serve {
            listen,
            broker: None,
            api,
            cert_lifetime,
            require_tpm,
            webhook_allow_http,
            webhook_allow_net,
            ..
        } => {
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let api = match api {
                Some(a) => Some(
                    tokio::net::TcpListener::bind(&a)
                        .await
                        .with_context(|| format!("cannot listen on {a}"))?,
                ),
                None => None,
            };
            let settings = cloud::Settings {
                cert_lifetime,
                require_tpm,
                webhook: cloud::api::webhook::Policy {
                    allow_http: webhook_allow_http,
                    allow_nets: webhook_allow_net,
                },
                database: database.clone(),
            };
            cloud::run_with(&data, l, api, settings, shutdown_on_signal()).await
        }
        Command::Token { device, valid } => {
            if !fieldgate::protocol::valid_device_id(&device) {
                bail!("`{device}` is not a valid device id");
            }
            // The CA too, made on first use: the gateway pins it.
            cloud::pki::Pki::open_or_create(
                &data.join("pki"),
                &cloud::SERVER_NAMES.map(String::from),
            )?;
            println!("{}", registry()?.create_token(&device, valid)?);
            eprintln!(
                "one-time token for {device}, valid for {}: give it to the gateway (identity.token_file, or `fieldgate enroll --token`)",
                humantime::format_duration(valid)
            );
            Ok(())
        }
        Command::Register { device, ek } => {
            if !fieldgate::protocol::valid_device_id(&device) {
                bail!("`{device}` is not a valid device id");
            }
            let point = fieldgate::hex::decode(ek.trim())
                .filter(|p| p.len() == 65 && p[0] == 4)
                .context("--ek must be the EK's uncompressed P-256 point in hex (130 digits, starting 04), as `fieldgate identity ek` prints it")?;
            // The CA too, made on first use: the gateway pins it.
            cloud::pki::Pki::open_or_create(
                &data.join("pki"),
                &cloud::SERVER_NAMES.map(String::from),
            )?;
            registry()?.register_ek(&device, &point)?;
            println!("registered the endorsement key of {device}");
            Ok(())
        }
        Command::SystemAccount { email } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let db = db()?;
            let users = cloud::iam::users::Users::new(&db);
            users
                .create_system_account(&email, password.trim_end_matches(['\r', '\n']))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("system account {email} created");
            Ok(())
        }
        Command::Revoke { device, reason } => {
            registry()?.revoke(&device, &reason)?;
            println!("{device} revoked: refused from its next connection on");
            Ok(())
        }
        Command::Audit(AuditCmd::Verify) => {
            let db = db()?;
            let anchor = cloud::iam::anchor::Anchor::open(&data, &db)?;
            match cloud::iam::audit::verify(&db, &anchor)? {
                cloud::iam::audit::Verdict::Intact { entries } => {
                    println!("audit log intact: {entries} entries");
                    Ok(())
                }
                cloud::iam::audit::Verdict::Broken { id, why } => {
                    bail!("audit log BROKEN at entry {id}: {why}")
                }
            }
        }
        Command::Identities { device } => {
            for e in registry()?.events(device.as_deref())? {
                println!(
                    "{}  {:<20} {:<13} {:<22} {}",
                    rfc3339(e.ts_ns),
                    e.device,
                    e.event,
                    e.peer,
                    e.detail
                );
            }
            Ok(())
        }
        Command::Serve {
            broker: Some(b),
            broker_ca,
            cert,
            key,
            client_id,
            share_group,
            api,
            cert_lifetime,
            require_tpm,
            webhook_allow_http,
            webhook_allow_net,
            ..
        } => {
            let (host, port) = b.rsplit_once(':').context("--broker must be host:port")?;
            let ingest = tokio::task::block_in_place(|| {
                let store = std::sync::Arc::new(std::sync::Mutex::new(database.store(&data)?));
                let registry = cloud::registry::Registry::with(database.db(&data)?)?;
                anyhow::Ok(std::sync::Arc::new(cloud::ingest::Ingest::new(
                    store, registry,
                )))
            })?;
            let shutdown = shutdown_on_signal();
            let api_task = match api {
                Some(a) => {
                    let l = tokio::net::TcpListener::bind(&a)
                        .await
                        .with_context(|| format!("cannot listen on {a}"))?;
                    let settings = cloud::Settings {
                        cert_lifetime,
                        require_tpm,
                        webhook: cloud::api::webhook::Policy {
                            allow_http: webhook_allow_http,
                            allow_nets: webhook_allow_net,
                        },
                        database: database.clone(),
                    };
                    Some(cloud::serve_api(&data, l, &settings, shutdown.clone()).await?)
                }
                None => None,
            };
            let link = cloud::ingest::bridge::BrokerLink {
                host: host.into(),
                port: port.parse().context("--broker port")?,
                ca: broker_ca.context("--broker-ca is required with --broker")?,
                cert: cert.context("--cert is required with --broker")?,
                key: key.context("--key is required with --broker")?,
                client_id,
                share_group,
            };
            let ran = cloud::ingest::bridge::run(link, ingest, shutdown).await;
            if let Some(t) = api_task {
                let _ = t.await;
            }
            ran
        }
        Command::DevCert { device_id, out } => {
            let (pki, _) = cloud::open(
                &data,
                &["localhost".into(), "127.0.0.1".into(), "::1".into()],
            )?;
            pki.dev_cert(&device_id, &out)?;
            println!(
                "wrote {0}/device.crt, {0}/device.key and {0}/ca.crt for {device_id}",
                out.display()
            );
            Ok(())
        }
        Command::Query {
            device,
            point,
            since,
            format,
            limit,
        } => {
            let store = tokio::task::block_in_place(|| database.store(&data))?;
            let since_ns = since.as_deref().map(parse_since).transpose()?;
            let rows = store.query(&device, point.as_deref(), since_ns, limit)?;
            for r in rows {
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({"point": r.point, "ts": rfc3339(r.ts_ns), "ts_ns": r.ts_ns,
                            "value": r.value, "quality": r.quality, "time": r.time, "seq": r.seq})
                    ),
                    Format::Table => println!(
                        "{:>8}  {}  {:<28} {:>14}  {}",
                        r.seq,
                        rfc3339(r.ts_ns),
                        r.point,
                        r.value.to_string(),
                        r.quality
                    ),
                }
            }
            Ok(())
        }
        Command::Gaps { device } => {
            let store = tokio::task::block_in_place(|| database.store(&data))?;
            for g in store.gaps(&device)? {
                println!(
                    "{}..={} ({} samples)",
                    g.first,
                    g.last,
                    g.last - g.first + 1
                );
            }
            Ok(())
        }
        Command::Demo { duration } => demo(&data, duration, &database).await,
    }
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(fieldgate::sample::now_ns() - d.as_nanos() as i64),
        Err(_) => {
            bail!("--since `{s}`: give an RFC 3339 time (2026-11-22T10:00:00Z) or an age (10min)")
        }
    }
}

fn rfc3339(ts_ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ts_ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The demo: this process runs the cloud; it starts the `fieldgate` binary next to it
/// twice, as a simulated Modbus device and as the gateway, and prints what arrives.
async fn demo(
    data: &Path,
    duration: Option<Duration>,
    database: &cloud::Database,
) -> anyhow::Result<()> {
    let gw_bin = std::env::current_exe()?.with_file_name("fieldgate");
    if !gw_bin.exists() {
        bail!(
            "{} not found: build both binaries first (cargo build --release)",
            gw_bin.display()
        );
    }
    let root = data.join("demo");
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    let shutdown = shutdown_on_signal();
    if let Some(d) = duration {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let cloud_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cloud_addr = cloud_listener.local_addr()?;
    let (pki, store) = tokio::task::block_in_place(|| {
        cloud::open_with(data, &cloud::SERVER_NAMES.map(String::from), database)
    })?;
    pki.dev_cert("demo-gw", &root.join("certs"))?;
    let sim_port = free_port().await?;
    std::fs::write(root.join("sim.toml"), DEMO_SIM)?;
    std::fs::write(root.join("engine.dbc"), DEMO_ENGINE_DBC)?;
    std::fs::write(root.join("engine.log"), DEMO_ENGINE_LOG)?;
    std::fs::write(
        root.join("gateway.toml"),
        DEMO_GATEWAY
            .replace("@CLOUD@", &cloud_addr.to_string())
            .replace("@SIM@", &format!("127.0.0.1:{sim_port}")),
    )?;
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api_listener.local_addr()?;
    let access = tokio::task::block_in_place(|| demo_access(data, database))?;
    let (d, s) = (data.to_path_buf(), shutdown.clone());
    let settings = cloud::Settings {
        database: database.clone(),
        ..Default::default()
    };
    let cloud_task = tokio::spawn(async move {
        cloud::run_with(&d, cloud_listener, Some(api_listener), settings, s).await
    });
    let mut sim = tokio::process::Command::new(&gw_bin)
        .args(["sim", "modbus", "--map"])
        .arg(root.join("sim.toml"))
        .args(["--listen", &format!("127.0.0.1:{sim_port}")])
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gw = tokio::process::Command::new(&gw_bin)
        .args(["run", "--config"])
        .arg(root.join("gateway.toml"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    println!("demo: cloud on {cloud_addr}, simulated power meter on 127.0.0.1:{sim_port}, a replayed J1939 genset bus, gateway demo-gw");
    println!(
        "demo: the HTTPS API on https://{api_addr} (CA: {}):",
        data.join("pki/ca.crt").display()
    );
    println!(
        "        log in as demo@fieldgate.example, password {}",
        access.password
    );
    println!("        live values page: https://{api_addr}/v1/embed/live.html#tenant=demo&device=demo-gw&key={}", access.key);
    println!("demo: samples as they are stored in the cloud (Ctrl-C to stop):");
    let mut seen = fieldgate::sample::now_ns();
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => break,
        }
        let rows = store
            .store()
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock"))?
            .tail(seen, 1000)?;
        for (received, r) in rows {
            seen = seen.max(received);
            println!(
                "{}  {:>6}  {:<24} {:>12}  {}",
                rfc3339(r.ts_ns),
                r.seq,
                r.point,
                r.value.to_string(),
                r.quality
            );
        }
    }
    let _ = gw.start_kill();
    let _ = gw.wait().await;
    let _ = sim.start_kill();
    let _ = cloud_task.await;
    Ok(())
}

/// What the demo prints for the API: the demo owner's password and a read-only key.
struct DemoAccess {
    password: String,
    key: String,
}

/// The demo tenant: its owner (a fresh password each run), the demo gateway registered
/// and claimed, and a read-only key for it, valid for a day.
fn demo_access(data: &Path, database: &cloud::Database) -> anyhow::Result<DemoAccess> {
    use cloud::iam::access::Iam;
    use cloud::iam::keys::{Action, Scope};
    use cloud::iam::users::UserError;
    let err = |e: cloud::iam::keys::Refused| anyhow::anyhow!("demo tenant: {e}");
    let db = database.db(data)?;
    let anchor = fieldgate::cloud::iam::anchor::Anchor::open(data, &db)?;
    let iam = Iam::with(db, std::sync::Arc::new(anchor)).map_err(err)?;
    let password: String = fieldgate::hex::encode(&rand::random::<[u8; 9]>());
    let email = "demo@fieldgate.example";
    let users = iam.users();
    match users.register(email, &password, "demo") {
        Ok(()) => {}
        Err(UserError::Conflict(_)) => {
            let token = users.reset_token(email).map_err(|e| err(e.into()))?;
            users
                .reset_password(&token.unwrap_or_default(), &password)
                .map_err(|e| err(e.into()))?;
        }
        Err(e) => return Err(err(e.into())),
    }
    let devices = iam.devices();
    let code = "DEMO-GW-CLAIM";
    match devices.register("demo-gw", code) {
        Ok(()) | Err(UserError::Conflict(_)) => {}
        Err(e) => return Err(err(e.into())),
    }
    match devices.claim_for("demo", "demo-gw", code) {
        Ok(()) | Err(UserError::Conflict(_)) => {}
        Err(e) => return Err(err(e.into())),
    }
    let now = fieldgate::sample::now_ns();
    let (_, key) = iam
        .keys()
        .create(&Scope {
            tenant: "demo".into(),
            devices: vec!["demo-gw".into()],
            streams: vec!["*".into()],
            actions: vec![Action::Read],
            cidrs: vec![],
            origins: vec![],
            not_before_ns: now,
            not_after_ns: now + 86_400_000_000_000,
            min_resolution_s: 0,
            may_delegate: false,
        })
        .map_err(|e| anyhow::anyhow!("demo key: {e}"))?;
    Ok(DemoAccess { password, key })
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port())
}

const DEMO_SIM: &str = include_str!("../../config/demo-sim.toml");
const DEMO_GATEWAY: &str = include_str!("../../config/demo-gateway.toml");
const DEMO_ENGINE_DBC: &str = include_str!("../../config/demo-engine.dbc");
const DEMO_ENGINE_LOG: &str = include_str!("../../config/demo-engine.log");
