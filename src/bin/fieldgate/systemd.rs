//! `fieldgate systemd-devices`: the drop-in that lets the service open the configured
//! serial ports (systemd/fieldgate-generator runs it).

use fieldgate::config::GatewayConfig;
use std::path::PathBuf;

/// Print the systemd drop-in that lets the service open the configured serial ports
/// (used by systemd/fieldgate-generator).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config;
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
