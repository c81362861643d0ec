//! `fieldgate-cloud`: the cloud service and its admin command line. Each command's
//! arguments and work are in a module here; what they do is the library's.

mod admin;
mod demo;
mod query;
mod serve;

use clap::{Parser, Subcommand};
use fieldgate::cloud;
use fieldgate::ids::DeviceId;
use std::path::PathBuf;
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
    Serve(serve::Args),
    /// Register a gateway's TPM endorsement key at manufacture (`fieldgate identity ek`).
    Register {
        device: DeviceId,
        /// The EK's public point, hex.
        #[arg(long)]
        ek: String,
    },
    /// Issue a one-time bootstrap token for a gateway's first enrollment.
    Token {
        #[arg(long)]
        device: DeviceId,
        /// How long the token stays valid.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        valid: Duration,
    },
    /// Revoke a gateway: refused at its next connect, renewal and enrollment.
    Revoke {
        device: DeviceId,
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
        device: Option<DeviceId>,
    },
    /// Issue a development certificate for a gateway (device.crt, device.key, ca.crt).
    DevCert {
        /// The gateway's device id (the certificate's CN).
        device_id: DeviceId,
        /// The directory the three files are written to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print stored samples of a device: the newest (oldest first), or the latest per
    /// point.
    Query(query::Args),
    /// Print the sequence ranges a gateway reported as dropped.
    Gaps {
        /// The gateway's device id.
        #[arg(long)]
        device: DeviceId,
    },
    /// Send a command to a gateway over the downlink and wait for its reply (the
    /// ingest serving the gateway sends it); with no --kind, list its commands.
    #[command(name = "command")]
    Downlink {
        /// The gateway's device id.
        #[arg(long)]
        device: DeviceId,
        /// What to do: `ping`.
        #[arg(long)]
        kind: Option<String>,
        /// The command's arguments, JSON.
        #[arg(long, default_value = "{}")]
        body: String,
        /// How long to wait for the reply (0: do not wait).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Publish a signed release (made with `fieldgate release`) with its image for a
    /// tenant's gateways. The cloud checks that the image is the one the metadata
    /// names; the gateways check the signatures.
    ReleaseAdd {
        #[arg(long)]
        tenant: fieldgate::ids::TenantName,
        /// The signed release metadata (release.json).
        #[arg(long)]
        metadata: PathBuf,
        #[arg(long)]
        image: PathBuf,
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fieldgate::logging::init();
    fieldgate::install_crypto_provider();
    let cli = Cli::parse();
    let data = cli.data_dir;
    let database = cloud::Database {
        url: cli.store,
        ca: cli.store_ca,
    };
    let (d, db) = (data.as_path(), &database);
    let done = match cli.command {
        Command::Serve(a) => serve::run(a, d, db).await,
        Command::Register { device, ek } => admin::register(d, db, device, ek),
        Command::Token { device, valid } => admin::token(d, db, device, valid),
        Command::Revoke { device, reason } => admin::revoke(d, db, device, reason),
        Command::Audit(AuditCmd::Verify) => admin::audit_verify(d, db),
        Command::SystemAccount { email } => admin::system_account(d, db, email),
        Command::Identities { device } => admin::identities(d, db, device),
        Command::DevCert { device_id, out } => admin::dev_cert(d, device_id, out),
        Command::Query(a) => query::run(a, d, db),
        Command::Gaps { device } => query::gaps(d, db, device),
        Command::ReleaseAdd {
            tenant,
            metadata,
            image,
        } => admin::release_add(d, db, tenant, metadata, image),
        Command::Downlink {
            device,
            kind,
            body,
            wait,
        } => admin::command(d, db, device, kind, body, wait).await,
        Command::Demo { duration } => demo::run(d, duration, db).await,
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that went away (`| head`) ends the command quietly.
        Err(e) if is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub(crate) fn shutdown_on_signal() -> CancellationToken {
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

pub(crate) fn rfc3339(ts_ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ts_ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
