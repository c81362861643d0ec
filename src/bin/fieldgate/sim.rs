//! `fieldgate sim modbus`: a register map served as a Modbus TCP or RTU device.

use anyhow::{bail, Context as _};
use clap::Subcommand;
use fieldgate::field::modbus::sim;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Command {
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

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Modbus {
        map,
        listen,
        serial,
        baud,
    } = cmd;
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
            Ok(sim::serve_tcp(m, l).await?)
        }
        (None, Some(port)) => {
            eprintln!(
                "simulating {} device(s) from {} on rtu {}",
                m.device.len(),
                map.display(),
                port.display()
            );
            Ok(sim::serve_rtu(m, &port, baud).await?)
        }
        (None, None) => bail!("give --listen ADDR or --serial PATH"),
    }
}
