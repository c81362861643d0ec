//! `fieldgate status`: what a running daemon reports on its status socket.

use crate::load;
use anyhow::Context as _;

use std::path::PathBuf;

/// Show link state, buffer depth and per-device errors of a running daemon.
#[derive(clap::Args)]
pub struct Args {
    /// Read the status socket's path from this config.
    #[arg(long, short, default_value = "/etc/fieldgate/gateway.toml")]
    pub config: PathBuf,
    /// Or name the socket directly.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the raw JSON document.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        socket,
        json,
    } = args;
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

fn print_status(st: &fieldgate::daemon::status::Status) {
    println!("device      {} (fieldgate {})", st.device_id, st.version);
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
    if let Some(u) = &st.update {
        let pct = (u.bytes * 100)
            .checked_div(u.total)
            .map(|p| format!(", {p}% of {}", fieldgate::bytesize::ByteSize(u.total)))
            .unwrap_or_default();
        println!(
            "update      {} {}{pct}{}",
            u.version.as_deref().unwrap_or("?"),
            u.phase,
            u.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
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
        use fieldgate::field::modbus::poller::DeviceState;
        let state = match d.state {
            DeviceState::Unknown => "not polled yet".to_string(),
            DeviceState::Ok => "answers".to_string(),
            DeviceState::PointsFailing => format!(
                "answers, {} point(s) failing: {}",
                d.failing_points.len(),
                d.failing_points
                    .iter()
                    .map(|(p, why)| format!("{p} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            DeviceState::NoAnswer => format!(
                "NO ANSWER ({})",
                d.last_error.as_deref().unwrap_or("unknown")
            ),
        };
        println!(
            "device {name:<12} {state}; polls {}, rounds without answer {}{}",
            d.polls,
            d.errors,
            if d.isolated_points.is_empty() {
                String::new()
            } else {
                format!("; read alone: {}", d.isolated_points.join(", "))
            }
        );
    }
}
