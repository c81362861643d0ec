//! `fieldgate`: the gateway daemon and the field engineer's command line. Each command
//! is a module here with its arguments and its `run`; the work is the library's.

mod can;
mod check;
mod identity;
mod modbus;
mod release;
mod run;
mod sim;
mod status;
mod systemd;

use clap::{Parser, Subcommand};
use fieldgate::config::GatewayConfig;

#[derive(Parser)]
#[command(
    version,
    about = "fieldgate: industrial edge gateway (Modbus, CAN, store-and-forward, MQTT over mutual TLS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run(run::Args),
    /// Validate a config file without touching any device.
    Check(check::Args),
    /// Show link state, buffer depth and per-device errors of a running daemon.
    Status(status::Args),
    /// Modbus tools for commissioning.
    #[command(subcommand)]
    Modbus(modbus::Command),
    /// The gateway's identity: its key (TPM or file) and certificate.
    #[command(subcommand)]
    Identity(identity::Command),
    /// Enroll with the cloud by hand: a CSR signed by the key and a one-time token.
    Enroll(identity::EnrollArgs),
    /// Print the systemd drop-in that lets the service open the configured serial ports
    /// (used by systemd/fieldgate-generator).
    SystemdDevices(systemd::Args),
    /// CAN tools: decode a candump log, watch an interface.
    #[command(subcommand)]
    Can(can::Command),
    /// Simulated devices.
    #[command(subcommand)]
    Sim(sim::Command),
    /// The offline release tools: keys, roots, signed release metadata.
    #[command(subcommand)]
    Release(release::Command),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fieldgate::logging::init();
    fieldgate::install_crypto_provider();
    let done = match Cli::parse().command {
        Command::Run(a) => run::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Modbus(c) => modbus::run(c).await,
        Command::Identity(c) => identity::run(c).await,
        Command::Enroll(a) => identity::enroll(a).await,
        Command::SystemdDevices(a) => systemd::run(a),
        Command::Can(c) => can::run(c).await,
        Command::Sim(c) => sim::run(c).await,
        Command::Release(c) => release::run(c),
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The config at `path`, or its errors (each with file, line and field).
fn load(path: &std::path::Path) -> anyhow::Result<GatewayConfig> {
    GatewayConfig::load(path).map_err(|e| anyhow::anyhow!("{e}\nconfig is invalid"))
}
