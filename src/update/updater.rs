//! The update agent's shell: takes an `update.offer`, verifies it before anything is
//! downloaded, and carries out what `machine::Update` says, writing the state to
//! `state_dir/update/state.json` after every transition and reporting each one
//! (`downlink::Progress`, sent by the uplink). Only the `binary` backend installs here
//! (`slots`); the health check is the daemon's (`Health`).

use super::download::{self, Limits, Source};
use super::floor::Floor;
use super::machine::{Action, Event, Phase, Update};
use super::slots::{Slots, LAUNCHED_BY};
use crate::config::update::{UpdateBackend, UpdateConfig};
use crate::downlink::{Command, Progress, Reply};
use crate::release::Root;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// The daemon's checks of a new version: connected to the cloud, the buffer written and
/// read back, every task alive.
pub struct Health {
    pub buffer: crate::buffer::Buffer,
    pub uplink: Arc<Mutex<crate::uplink::UplinkStatus>>,
    pub liveness: crate::model::liveness::Liveness,
}

impl Health {
    /// Err says what is not healthy.
    pub async fn check(&self) -> Result<(), String> {
        let connected = self
            .uplink
            .lock()
            .map(|u| u.connected_to.is_some())
            .unwrap_or(false);
        if !connected {
            return Err("not connected to the cloud".into());
        }
        let probe = tokio::time::timeout(Duration::from_secs(5), self.buffer.probe()).await;
        if probe != Ok(true) {
            return Err("the buffer cannot be written and read back".into());
        }
        let stale = self.liveness.stale(Duration::from_secs(30));
        if !stale.is_empty() {
            let names: Vec<_> = stale.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!("not running: {}", names.join(", ")));
        }
        Ok(())
    }
}

/// The offer's body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Offer {
    /// The signed release envelope, as the release engineers signed it.
    release: String,
    /// Roots after the trusted one, oldest first.
    #[serde(default)]
    chain: Vec<String>,
}

/// What the updater needs from the daemon.
pub struct Context {
    pub config: UpdateConfig,
    pub state_dir: PathBuf,
    /// The TCTI of the TPM, for a `tpm` floor.
    pub tcti: String,
    /// The cloud's HTTPS API (`identity.enroll_url`), where images are fetched.
    pub api: Option<String>,
    pub identity: Arc<crate::identity::Holder>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    /// Cancelled to stop the daemon so the service manager starts the other version.
    pub restart: CancellationToken,
}

pub struct Updater {
    cx: Context,
    dir: PathBuf,
    slots: Slots,
    floor: Floor,
    /// The release version running now.
    running: String,
    state: Mutex<Option<Update>>,
    wake: Notify,
    progress: watch::Sender<Option<Progress>>,
    /// The daemon asked to restart into the other version.
    restarting: std::sync::atomic::AtomicBool,
}

fn now() -> i64 {
    crate::sample::now_ns()
}

impl Updater {
    pub fn new(cx: Context) -> Updater {
        let dir = cx.state_dir.join("update");
        let slots = Slots::new(&dir);
        let floor = if cx.config.floor == "tpm" {
            Floor::Tpm(cx.tcti.clone())
        } else {
            Floor::File(PathBuf::from(&cx.config.floor))
        };
        let running = std::env::current_exe()
            .ok()
            .and_then(|exe| slots.version_of(&exe))
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        let state = std::fs::read(dir.join("state.json")).ok().and_then(|b| {
            match Update::decode(&b) {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::error!(error = %e, "the update state cannot be read; it is set aside");
                    let _ = std::fs::rename(dir.join("state.json"), dir.join("state.json.unread"));
                    None
                }
            }
        });
        let (progress, _) = watch::channel(state.as_ref().map(|u| report(u, 0, 0)));
        Updater {
            cx,
            dir,
            slots,
            floor,
            running,
            state: Mutex::new(state),
            wake: Notify::new(),
            progress,
            restarting: false.into(),
        }
    }

    /// The release version this process runs.
    pub fn running(&self) -> &str {
        &self.running
    }

    /// Reports for the uplink: the latest, and a change whenever there is one.
    pub fn progress(&self) -> watch::Receiver<Option<Progress>> {
        self.progress.subscribe()
    }

    /// Whether the daemon stopped to restart into another version (it exits with
    /// `RESTART_EXIT` then, which systemd restarts).
    pub fn restart_requested(&self) -> bool {
        self.restarting.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn current(&self) -> Option<Update> {
        self.state.lock().ok().and_then(|s| s.clone())
    }

    fn save(&self, u: &mut Update) {
        u.record(now());
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.new");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&tmp, u.encode()))
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(path = %path.display(), error = %e, "cannot write the update state");
        }
        if let Ok(mut s) = self.state.lock() {
            *s = Some(u.clone());
        }
    }

    /// Writes the state after a step of `drive` (where a kill is always survivable).
    fn step(&self, u: &mut Update) {
        self.save(u);
        abort_point(&self.dir, u.phase.as_str());
    }

    fn publish(&self, u: &Update, bytes: u64, total: u64) {
        self.progress.send_replace(Some(report(u, bytes, total)));
    }

    /// An `update.offer`: verified here, before anything is downloaded; the answer says
    /// why it was refused, or that the download started.
    pub async fn offer(&self, cmd: &Command) -> Reply {
        match self.accept(cmd).await {
            Ok(u) => {
                tracing::info!(id = %cmd.id, version = %u.version, "update offered and verified: downloading");
                Reply::done(
                    &cmd.id,
                    serde_json::json!({"phase": u.phase.as_str(), "version": u.version}),
                )
            }
            Err(why) => {
                tracing::warn!(id = %cmd.id, reason = %why, "update offer refused");
                Reply::failed(&cmd.id, why)
            }
        }
    }

    async fn accept(&self, cmd: &Command) -> Result<Update, String> {
        let cfg = &self.cx.config;
        if cfg.backend == UpdateBackend::Binary
            && std::env::var_os(LAUNCHED_BY).map(PathBuf::from).as_deref()
                != Some(self.dir.as_path())
        {
            return Err(format!(
                "the binary backend needs the daemon started by fieldgate-launch with {} (systemd/fieldgate.service does): without it a version that crashes could not be rolled back",
                self.dir.display()
            ));
        }
        if cfg.backend == UpdateBackend::Rauc {
            return Err("the rauc backend is not built into this release yet".into());
        }
        if let Some(u) = self.current().filter(|u| !u.phase.is_final()) {
            return Err(format!(
                "update {} to {} is in progress ({})",
                u.id,
                u.version,
                u.phase.as_str()
            ));
        }
        let offer: Offer = serde_json::from_value(cmd.body.clone())
            .map_err(|e| format!("not an update offer: {e}"))?;
        let root_file = std::fs::read(&cfg.root)
            .map_err(|e| format!("the trusted root {}: {e}", cfg.root.display()))?;
        let root = Root::trust_first(&root_file).map_err(|e| e.to_string())?;
        let chain: Vec<Vec<u8>> = offer.chain.iter().map(|c| c.as_bytes().to_vec()).collect();
        let root = root.follow(&chain, now()).map_err(|e| e.to_string())?;
        let floor = self.floor.clone();
        let floor = tokio::task::spawn_blocking(move || floor.read())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let installed = semver::Version::parse(&self.running).ok();
        let release = root
            .verify_release(
                offer.release.as_bytes(),
                now(),
                &cfg.hardware,
                installed.as_ref(),
                floor,
            )
            .map_err(|e| e.to_string())?;
        if release.image.install != crate::release::Install::Binary {
            return Err(format!(
                "the release installs with {:?}; this gateway's backend is {}",
                release.image.install, cfg.backend
            ));
        }
        let (mut u, _) = Update::offered(
            &cmd.id,
            &release,
            &self.running,
            self.slots.link("active"),
            cfg.health_window.as_nanos() as i64,
        );
        let _ = std::fs::remove_file(self.staging());
        self.save(&mut u);
        self.publish(&u, 0, u.image.length);
        self.wake.notify_one();
        Ok(u)
    }

    fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Carries out updates until `stop`: at start, what the stored phase says; then each
    /// accepted offer.
    pub async fn run(self: Arc<Self>, health: Health, stop: CancellationToken) {
        let mut first = true;
        loop {
            if let Some(mut u) = self.current() {
                let actions = if first {
                    let mut a = u.on_start(&self.running, now());
                    if u.phase == Phase::RolledBack {
                        if let Ok(why) = std::fs::read_to_string(self.dir.join("rolled-back")) {
                            u.reason = Some(format!(
                                "fieldgate-launch put {} back: {} {}",
                                self.running,
                                u.version,
                                why.trim()
                            ));
                            let _ = std::fs::remove_file(self.dir.join("rolled-back"));
                        }
                    }
                    self.save(&mut u);
                    a.insert(0, Action::Report);
                    a
                } else if u.phase == Phase::Downloading {
                    vec![Action::Download]
                } else {
                    vec![]
                };
                self.drive(u, actions.into(), &health, &stop).await;
            }
            first = false;
            if self.restart_requested() {
                return;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn drive(
        &self,
        mut u: Update,
        mut todo: VecDeque<Action>,
        health: &Health,
        stop: &CancellationToken,
    ) {
        while let Some(action) = todo.pop_front() {
            if stop.is_cancelled() {
                return;
            }
            let next = match action {
                Action::Report => {
                    self.publish(&u, 0, u.image.length);
                    continue;
                }
                Action::Download => {
                    let e = self.download(&u, stop).await;
                    match e {
                        Some(e) => u.on(e),
                        None => return,
                    }
                }
                Action::Install => {
                    u.installing();
                    self.step(&mut u);
                    let (slots, staging) = (Slots::new(&self.dir), self.staging());
                    let (version, sha, prev) = (
                        u.version.clone(),
                        u.image.sha256.clone(),
                        u.previous_slot.clone(),
                    );
                    let r = tokio::task::spawn_blocking(move || {
                        slots.install(&staging, &version, &sha, prev.as_deref())
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => {
                            let _ = std::fs::remove_file(self.staging());
                            u.on(Event::Installed)
                        }
                        Ok(Err(e)) => u.on(Event::InstallFailed(e.to_string())),
                        Err(e) => u.on(Event::InstallFailed(e.to_string())),
                    }
                }
                Action::Restart => {
                    tracing::info!(version = %u.version, "update installed: restarting into it");
                    // The report of the phase has a moment to leave before the stop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.restarting
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    self.cx.restart.cancel();
                    return;
                }
                Action::CheckHealth { until_ns } => {
                    match self.watch_health(health, until_ns, stop).await {
                        Some(Ok(())) => u.on(Event::Healthy),
                        Some(Err(why)) => u.on(Event::Unhealthy(why)),
                        None => return,
                    }
                }
                Action::Commit { rollback_index } => {
                    let (floor, slots) = (self.floor.clone(), Slots::new(&self.dir));
                    let r = tokio::task::spawn_blocking(move || {
                        floor.raise(rollback_index).map_err(|e| e.to_string())?;
                        slots.commit().map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                    match r {
                        Ok(()) => {
                            tracing::info!(version = %u.version, rollback_index, "update committed");
                            u.on(Event::Committed)
                        }
                        Err(e) => {
                            // Healthy stays healthy and the commit is tried again (the
                            // trial counter is still on: a crash meanwhile rolls back).
                            tracing::error!(error = %e, "cannot commit the update; trying again in 30 s");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                                _ = stop.cancelled() => return,
                            }
                            vec![Action::Commit { rollback_index }]
                        }
                    }
                }
                Action::RollBack => {
                    let slots = Slots::new(&self.dir);
                    let prev = u.previous_slot.clone();
                    match tokio::task::spawn_blocking(move || slots.roll_back(prev.as_deref()))
                        .await
                    {
                        Ok(Ok(())) => {
                            tracing::warn!(version = %u.version, reason = ?u.reason, "update rolled back: restarting into {}", u.previous);
                            vec![Action::Report, Action::Restart]
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot roll back; fieldgate-launch will at the next starts");
                            vec![Action::Report, Action::Restart]
                        }
                        Err(_) => vec![Action::Restart],
                    }
                }
            };
            self.step(&mut u);
            todo.extend(next);
        }
    }

    /// Downloads the image into staging; None if stopped meanwhile.
    async fn download(&self, u: &Update, stop: &CancellationToken) -> Option<Event> {
        let source = match self.source(u).await {
            Ok(s) => s,
            Err(e) => return Some(Event::DownloadFailed(e)),
        };
        let limits = Limits {
            stall: self.cx.config.stall,
            min_rate: self.cx.config.min_rate,
            ..Limits::default()
        };
        let mut last = std::time::Instant::now();
        let progress = |bytes: u64, total: u64| {
            if last.elapsed() >= Duration::from_secs(1) || bytes == total {
                last = std::time::Instant::now();
                self.publish(u, bytes, total);
            }
        };
        let staging = self.staging();
        tokio::select! {
            r = download::fetch(&source, &staging, &u.image, &limits, progress) => Some(match r {
                Ok(f) => {
                    tracing::info!(bytes = f.received, attempts = f.attempts, "update image downloaded and verified");
                    Event::Downloaded
                }
                Err(e) => Event::DownloadFailed(e.to_string()),
            }),
            _ = stop.cancelled() => None,
        }
    }

    async fn source(&self, u: &Update) -> Result<Source, String> {
        let url = self.cx.api.as_deref().ok_or(
            "updates need `identity.enroll_url` (the cloud's HTTPS API, where images are fetched)",
        )?;
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("identity.enroll_url {url} is not a URL"))?;
        let host = uri
            .host()
            .ok_or(format!("identity.enroll_url {url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let key = self.cx.identity.key().map_err(|e| e.to_string())?;
        let tls = crate::identity::signer::client_config(
            crate::tls::root_store(&self.cx.ca).map_err(|e| e.to_string())?,
            crate::tls::load_certs(&self.cx.cert).map_err(|e| e.to_string())?,
            key,
        );
        Ok(Source {
            host,
            port: uri.port_u16().unwrap_or(443),
            path: format!("/v1/device/images/{}", u.image.sha256.to_ascii_lowercase()),
            tls,
        })
    }

    /// Checks health every second until it holds or `until_ns` passes (then Err with
    /// what failed last); None if stopped.
    async fn watch_health(
        &self,
        health: &Health,
        until_ns: i64,
        stop: &CancellationToken,
    ) -> Option<Result<(), String>> {
        abort_point(&self.dir, "checking");
        loop {
            let r = health.check().await;
            if r.is_ok() {
                return Some(r);
            }
            if now() >= until_ns {
                return Some(r.map_err(|why| format!("not healthy by the deadline: {why}")));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }
}

/// Debug builds only (the tests): `FIELDGATE_UPDATE_ABORT_AT=verified,installing,…`
/// aborts the process right after that step is written (SIGABRT: nothing flushed or
/// cleaned up, as a SIGKILL), once per step and update directory (a marker file stops a
/// second abort). `tests/update_binary.rs` kills the daemon at each step with it;
/// release builds carry no such code.
#[cfg(debug_assertions)]
fn abort_point(dir: &std::path::Path, step: &str) {
    let Some(want) = std::env::var("FIELDGATE_UPDATE_ABORT_AT").ok() else {
        return;
    };
    if !want.split(',').any(|w| w == step) {
        return;
    }
    let marker = dir.join(format!("aborted-at-{step}"));
    if marker.exists() {
        return;
    }
    let _ = std::fs::write(&marker, b"");
    eprintln!("FIELDGATE_UPDATE_ABORT_AT: aborting at {step}");
    std::process::abort();
}

#[cfg(not(debug_assertions))]
fn abort_point(_: &std::path::Path, _: &str) {}

/// The exit status with which the daemon stops to run another version (systemd's
/// `RestartForceExitStatus`).
pub const RESTART_EXIT: i32 = 75;

fn report(u: &Update, bytes: u64, total: u64) -> Progress {
    Progress {
        v: crate::downlink::VERSION,
        id: u.id.clone(),
        phase: u.phase.as_str().into(),
        version: Some(u.version.clone()),
        reason: u.reason.clone(),
        bytes,
        total,
        history: u
            .history
            .iter()
            .rev()
            .take(crate::downlink::MAX_STEPS)
            .rev()
            .cloned()
            .collect(),
    }
}
