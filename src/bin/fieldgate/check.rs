//! `fieldgate check`: the config's validation and request plan, then (unless
//! --config-only) the environment it needs, without touching any device.

use crate::load;

use std::path::PathBuf;

/// Validate a config file without touching any device.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
    pub config: PathBuf,
    /// Only the file itself: skip the checks of serial ports, certificates and brokers.
    #[arg(long)]
    config_only: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        config_only,
    } = args;
    let config = config.as_path();
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
    for bus in &cfg.can {
        let b = bus.get_ref();
        let warnings = b.db.warnings();
        println!(
            "  can {}: {} messages from {} DBC file(s){}",
            b.name,
            b.db.messages().count(),
            b.dbc.len(),
            if warnings.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} warning(s) (`strict_dbc = true` refuses such files):",
                    warnings.len()
                )
            }
        );
        for w in warnings {
            println!("    warning: {w}");
        }
    }
    if config_only {
        return Ok(());
    }
    println!("environment:");
    let findings = fieldgate::doctor::check(&cfg).await;
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
