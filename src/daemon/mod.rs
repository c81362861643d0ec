//! The gateway daemon: starts the buffer, one task per bus and the uplink, serves the
//! status socket, and shuts everything down in order.

pub mod status;

use crate::buffer::{Buffer, BufferSettings};
use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::field::modbus::poller::{BusPoller, BusStatus};
use crate::uplink::{Uplink, UplinkStatus};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Runs the gateway until `shutdown` is cancelled, then commits what is in memory and
/// returns. Errors only if the buffer cannot be opened.
pub async fn run(cfg: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.gateway.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create state_dir {}: {e}",
            cfg.gateway.state_dir.display()
        )
    })?;
    let clock = Arc::new(Clock::new(cfg.clock.synced.clone()));
    if !clock.is_synced() {
        tracing::warn!(check = ?cfg.clock.synced, "the system clock is not synchronised yet: samples are marked unsynced until it is");
    }
    let (buffer, buffer_thread) = Buffer::start(BufferSettings {
        path: cfg.buffer_path(),
        max_bytes: cfg.buffer.max_bytes.0,
        max_age: cfg.buffer.max_age,
        commit_interval: cfg.buffer.commit_interval,
        boot_id: clock.boot_id.clone(),
    })?;
    let devices: BusStatus = Arc::new(Mutex::new(Default::default()));
    let uplink_status = Arc::new(Mutex::new(UplinkStatus::default()));

    let sources = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for bus in &cfg.bus {
        let poller = BusPoller::new(bus.get_ref(), devices.clone(), clock.clone());
        tasks.spawn(poller.run(buffer.clone(), sources.clone()));
    }
    tasks.spawn(watch_clock(clock.clone(), buffer.clone(), sources.clone()));
    let link = CancellationToken::new();
    let uplink = tokio::spawn(
        Uplink {
            device_id: cfg.gateway.device_id.clone(),
            config: cfg.uplink.clone(),
            buffer: buffer.clone(),
            status: uplink_status.clone(),
            config_hash: cfg.hash.clone(),
        }
        .run(link.clone()),
    );
    let status_task = cfg.gateway.status_socket.clone().map(|path| {
        let view = status::View {
            device_id: cfg.gateway.device_id.clone(),
            buffer: buffer.clone(),
            uplink: uplink_status.clone(),
            devices: devices.clone(),
        };
        tokio::spawn(status::serve(path, view, shutdown.clone()))
    });
    tracing::info!(device = %cfg.gateway.device_id, buses = cfg.bus.len(), "fieldgate running");

    shutdown.cancelled().await;
    tracing::info!("stopping: sources first, then committing the buffer");
    sources.cancel();
    while tasks.join_next().await.is_some() {}
    buffer.flush().await;
    link.cancel();
    let _ = uplink.await;
    if let Some(t) = status_task {
        let _ = t.await;
    }
    drop(buffer);
    let _ = tokio::task::spawn_blocking(move || buffer_thread.join()).await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Checks the clock every second; when it becomes synchronised, corrects the buffered
/// samples of this boot that were taken before.
async fn watch_clock(clock: Arc<Clock>, buffer: Buffer, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if clock.refresh() {
            buffer.flush().await;
            let n = buffer.correct_clock(clock.offset_ns()).await;
            tracing::info!(
                corrected = n,
                "system clock synchronised; corrected the timestamps of buffered samples"
            );
        }
    }
}
