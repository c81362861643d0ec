//! The gateway daemon: starts the buffer, one task per bus and the uplink, serves the
//! status socket, reloads buses on request, feeds the systemd watchdog while every task
//! is alive, and shuts everything down in order.

pub mod metrics;
pub mod notify;
pub mod status;

use crate::buffer::{Buffer, BufferSettings};
use crate::clock::Clock;
use crate::config::{BusConfig, CanBusConfig, GatewayConfig};
use crate::field::can::bus::{CanBus, CanStatus};
use crate::field::modbus::poller::{BusPoller, BusStatus};
use crate::model::liveness::Liveness;
use crate::uplink::{Uplink, UplinkStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running task and how to stop it.
struct Running<C> {
    config: C,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl<C> Running<C> {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Everything the tasks share.
struct Shared {
    buffer: Buffer,
    clock: Arc<Clock>,
    devices: BusStatus,
    can: CanStatus,
    uplink_status: Arc<Mutex<UplinkStatus>>,
    liveness: Liveness,
    identity: Arc<crate::identity::Holder>,
    agent: Arc<crate::agent::Agent>,
}

impl Shared {
    /// What the status socket and the metrics read.
    fn view(&self, device_id: &str) -> status::View {
        status::View {
            device_id: device_id.to_string(),
            buffer: self.buffer.clone(),
            uplink: self.uplink_status.clone(),
            devices: self.devices.clone(),
            can: self.can.clone(),
            agent: self.agent.clone(),
        }
    }

    fn start_bus(&self, bus: &BusConfig) -> Running<BusConfig> {
        let stop = CancellationToken::new();
        let poller = BusPoller::new(bus, self.devices.clone(), self.clock.clone())
            .with_beat(self.liveness.register(&format!("bus {}", bus.name)));
        let task = tokio::spawn(poller.run(self.buffer.clone(), stop.clone()));
        Running {
            config: bus.clone(),
            stop,
            task,
        }
    }

    fn start_can(&self, bus: &CanBusConfig) -> Running<CanBusConfig> {
        for w in bus.db.warnings() {
            tracing::warn!(bus = %bus.name, "DBC: {w}");
        }
        let stop = CancellationToken::new();
        let beat = self.liveness.register(&format!("bus {}", bus.name));
        let bus_task = CanBus::new(bus, self.can.clone(), self.clock.clone()).with_beat(beat);
        let task = tokio::spawn(bus_task.run(self.buffer.clone(), stop.clone()));
        Running {
            config: bus.clone(),
            stop,
            task,
        }
    }

    fn start_uplink(&self, cfg: &GatewayConfig) -> Running<crate::config::UplinkConfig> {
        let stop = CancellationToken::new();
        let uplink = Uplink {
            device_id: cfg.gateway.device_id.clone(),
            config: cfg.uplink.clone(),
            buffer: self.buffer.clone(),
            status: self.uplink_status.clone(),
            config_hash: cfg.hash.clone(),
            beat: Some(self.liveness.register("uplink")),
            identity: self.identity.clone(),
            agent: self.agent.clone(),
        };
        let task = tokio::spawn(uplink.run(stop.clone()));
        Running {
            config: cfg.uplink.clone(),
            stop,
            task,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state_dir {path}: {error}")]
    StateDir {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot open the buffer: {0}")]
    Buffer(#[from] crate::buffer::OutboxError),
    #[error("cannot listen for metrics on {addr}: {error}")]
    Metrics {
        addr: String,
        #[source]
        error: std::io::Error,
    },
}

/// Runs the gateway until `shutdown` is cancelled, then commits what is in memory and
/// returns. Each message on `reload` re-reads the config file (SIGHUP): changed buses
/// restart, unchanged ones keep running, an invalid file is refused and the running
/// config stays. Errors only if the buffer cannot be opened.
pub async fn run(
    mut cfg: GatewayConfig,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
) -> Result<Exit, DaemonError> {
    std::fs::create_dir_all(&cfg.gateway.state_dir).map_err(|error| DaemonError::StateDir {
        path: cfg.gateway.state_dir.display().to_string(),
        error,
    })?;
    if cfg.identity.backend == crate::identity::Backend::File {
        tracing::warn!(key = ?cfg.uplink.key, "identity: the private key is a plain file: for development hosts only; anyone who can read it can act as this gateway. Production gateways use `[identity] backend = \"tpm\"`");
    }
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
    let identity = Arc::new(
        crate::identity::Holder::new(cfg.identity.clone(), cfg.uplink.key.clone())
            .with_cert(cfg.uplink.cert.clone()),
    );
    let updater = cfg.update.clone().map(|config| {
        Arc::new(crate::update::updater::Updater::new(
            crate::update::updater::Context {
                config,
                state_dir: cfg.gateway.state_dir.clone(),
                tcti: cfg.identity.tcti.clone(),
                api: cfg.identity.enroll_url.clone(),
                identity: identity.clone(),
                ca: cfg.uplink.ca.clone(),
                cert: cfg.uplink.cert.clone(),
                restart: shutdown.clone(),
            },
        ))
    });
    if let Some(u) = &updater {
        tracing::info!(version = u.running(), "signed updates on");
    }
    let shared = Shared {
        buffer: buffer.clone(),
        clock: clock.clone(),
        devices: Arc::new(Mutex::new(Default::default())),
        can: Arc::new(Mutex::new(Default::default())),
        uplink_status: Arc::new(Mutex::new(UplinkStatus::default())),
        liveness: Liveness::default(),
        identity,
        agent: Arc::new(crate::agent::Agent::with_updater(updater.clone())),
    };
    let renewal_stop = CancellationToken::new();
    let renewal_task = cfg.identity.enroll_url.clone().map(|url| {
        tokio::spawn(crate::identity::renewal::run(
            shared.identity.clone(),
            cfg.gateway.device_id.clone(),
            url,
            cfg.uplink.ca.clone(),
            cfg.uplink.cert.clone(),
            shared.liveness.register("renewal"),
            renewal_stop.clone(),
        ))
    });

    let mut buses: BTreeMap<String, Running<BusConfig>> = cfg
        .bus
        .iter()
        .map(|b| (b.get_ref().name.clone(), shared.start_bus(b.get_ref())))
        .collect();
    let mut cans: BTreeMap<String, Running<CanBusConfig>> = cfg
        .can
        .iter()
        .map(|b| (b.get_ref().name.clone(), shared.start_can(b.get_ref())))
        .collect();
    let clock_stop = CancellationToken::new();
    let clock_task = tokio::spawn(watch_clock(
        clock.clone(),
        buffer.clone(),
        clock_stop.clone(),
    ));
    let mut uplink = shared.start_uplink(&cfg);
    let update_stop = CancellationToken::new();
    let update_task = updater.clone().map(|u| {
        let health = crate::update::updater::Health {
            buffer: buffer.clone(),
            uplink: shared.uplink_status.clone(),
            liveness: shared.liveness.clone(),
        };
        tokio::spawn(u.run(health, update_stop.clone()))
    });
    let status_task = cfg.gateway.status_socket.clone().map(|path| {
        let view = shared.view(&cfg.gateway.device_id);
        tokio::spawn(status::serve(path, view, shutdown.clone()))
    });
    let metrics_task = match cfg.gateway.metrics_listen.as_deref() {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
                DaemonError::Metrics {
                    addr: addr.to_string(),
                    error,
                }
            })?;
            let view = shared.view(&cfg.gateway.device_id);
            Some(tokio::spawn(metrics::serve(
                listener,
                view,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    notify::ready();
    tracing::info!(device = %cfg.gateway.device_id, modbus_buses = cfg.bus.len(), can_buses = cfg.can.len(), "fieldgate running");

    let watchdog = notify::watchdog_period();
    let mut tick = tokio::time::interval(
        watchdog
            .map(|w| w / 4)
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    );
    let probe_limit = watchdog
        .map(|w| w / 4)
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut last_status = String::new();
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = reload.recv() => {
                notify::reloading();
                cfg = apply_reload(cfg, &shared, &mut buses, &mut cans, &mut uplink).await;
                notify::ready();
            }
            _ = tick.tick() => {
                // The buffer thread answers quickly while it is healthy: within a quarter
                // of the watchdog period (at most 5 s).
                let probe = tokio::time::timeout(probe_limit, buffer.stats()).await;
                let stale = shared.liveness.stale(watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(30)));
                if probe.is_ok() && stale.is_empty() {
                    if watchdog.is_some() {
                        notify::watchdog();
                    }
                    withheld = false;
                } else if !withheld {
                    tracing::error!(stuck = ?stale, buffer_answers = probe.is_ok(), "a task is stuck: withholding the watchdog ping so systemd restarts the service");
                    withheld = true;
                }
                if let Ok(stats) = probe {
                    let link = shared.uplink_status.lock().ok().and_then(|u| u.connected_to.clone());
                    let line = format!(
                        "uplink {}; buffer {} samples, {} dropped",
                        link.map(|b| format!("connected to {b}")).unwrap_or_else(|| "disconnected".into()),
                        stats.depth,
                        stats.dropped
                    );
                    if line != last_status {
                        notify::status(&line);
                        last_status = line;
                    }
                }
            }
        }
    }
    notify::stopping();
    tracing::info!("stopping: sources first, then committing the buffer");
    for (_, b) in std::mem::take(&mut buses) {
        b.stop().await;
    }
    for (_, b) in std::mem::take(&mut cans) {
        b.stop().await;
    }
    clock_stop.cancel();
    let _ = clock_task.await;
    renewal_stop.cancel();
    if let Some(t) = renewal_task {
        let _ = t.await;
    }
    update_stop.cancel();
    if let Some(t) = update_task {
        let _ = t.await;
    }
    buffer.flush().await;
    uplink.stop().await;
    for t in [status_task, metrics_task].into_iter().flatten() {
        let _ = t.await;
    }
    drop(shared);
    drop(buffer);
    let _ = tokio::task::spawn_blocking(move || buffer_thread.join()).await;
    tracing::info!("stopped cleanly");
    Ok(match updater {
        Some(u) if u.restart_requested() => Exit::Restart,
        _ => Exit::Stopped,
    })
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// To run another version: the process exits with `updater::RESTART_EXIT`, which
    /// the service manager restarts.
    Restart,
}

/// Re-reads the config file and applies what can change while running.
async fn apply_reload(
    old: GatewayConfig,
    shared: &Shared,
    buses: &mut BTreeMap<String, Running<BusConfig>>,
    cans: &mut BTreeMap<String, Running<CanBusConfig>>,
    uplink: &mut Running<crate::config::UplinkConfig>,
) -> GatewayConfig {
    let new = match GatewayConfig::load(&old.source) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(errors = %e, "reload refused: the new config is invalid; the running config stays");
            return old;
        }
    };
    if new.gateway.device_id != old.gateway.device_id
        || new.gateway.state_dir != old.gateway.state_dir
        || new.buffer.max_bytes != old.buffer.max_bytes
        || new.buffer.max_age != old.buffer.max_age
        || new.buffer.commit_interval != old.buffer.commit_interval
    {
        tracing::warn!("changes to [gateway] or [buffer] take effect at the next restart");
    }
    let (k1, r1, s1, n1) = reconcile(
        buses,
        new.bus.iter().map(|b| b.get_ref().clone()),
        |b| b.name.clone(),
        |b| shared.start_bus(b),
        &shared.liveness,
    )
    .await;
    let (k2, r2, s2, n2) = reconcile(
        cans,
        new.can.iter().map(|b| b.get_ref().clone()),
        |b| b.name.clone(),
        |b| shared.start_can(b),
        &shared.liveness,
    )
    .await;
    let (kept, restarted, stopped, started) = (k1 + k2, r1 + r2, s1 + s2, n1 + n2);
    if new.uplink != uplink.config {
        let next = shared.start_uplink(&new);
        std::mem::replace(uplink, next).stop().await;
        tracing::info!("uplink restarted with the new settings");
    }
    tracing::info!(kept, restarted, stopped, started, "config reloaded");
    new
}

/// Brings the running buses of one kind in line with the wanted ones: unchanged ones
/// keep running, changed ones restart, removed ones stop, new ones start. Returns
/// (kept, restarted, stopped, started).
async fn reconcile<C: PartialEq + Clone>(
    running: &mut BTreeMap<String, Running<C>>,
    wanted: impl Iterator<Item = C>,
    name: impl Fn(&C) -> String,
    start: impl Fn(&C) -> Running<C>,
    liveness: &Liveness,
) -> (usize, usize, usize, usize) {
    let wanted: BTreeMap<String, C> = wanted.map(|c| (name(&c), c)).collect();
    let (mut kept, mut restarted, mut stopped, mut started) = (0, 0, 0, 0);
    for n in running.keys().cloned().collect::<Vec<_>>() {
        match wanted.get(&n) {
            Some(c) if *c == running[&n].config => kept += 1,
            Some(c) => {
                if let Some(r) = running.remove(&n) {
                    r.stop().await;
                }
                running.insert(n.clone(), start(c));
                restarted += 1;
            }
            None => {
                if let Some(r) = running.remove(&n) {
                    r.stop().await;
                }
                liveness.unregister(&format!("bus {n}"));
                stopped += 1;
            }
        }
    }
    for (n, c) in &wanted {
        if !running.contains_key(n) {
            running.insert(n.clone(), start(c));
            started += 1;
        }
    }
    (kept, restarted, stopped, started)
}

/// Checks the clock every second; when it becomes synchronised, corrects the buffered
/// samples of this boot that were taken before.
async fn watch_clock(clock: Arc<Clock>, buffer: Buffer, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
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
