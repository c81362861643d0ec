//! One CAN bus in the gateway: frames from a SocketCAN interface or a candump replay,
//! decoded, filtered by the emission policies and handed to the buffer as samples.

use super::db::CanDb;
use super::decoder::{passes, Decoded, Decoder};
use super::emit::EmitState;
use super::frame::{BusError, Received};
use super::log::LogReader;
use crate::clock::{Clock, Stamp};
use crate::config::can::{EmitPolicy, ReplaySpeed};
use crate::config::CanBusConfig;
use crate::field::SampleSink;
use crate::model::liveness::Beat;
use crate::model::Class;
use crate::model::Entry;
use crate::sample::{Quality, Sample, TimeQuality, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What `fieldgate status` shows per CAN bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanBusStatus {
    /// `can0`, or `replay of FILE`.
    pub source: String,
    /// `up`, `down`, `error-warning`, `error-passive`, `bus-off`, or `finished` (replay).
    pub state: String,
    pub frames: u64,
    /// Frames no DBC message describes.
    pub unknown: u64,
    pub samples: u64,
    pub error_frames: u64,
    pub bus_off: u64,
    pub restarts: u64,
    /// J1939 transfers given up (out of sequence, T1 timeout, abort).
    pub transfers_dropped: u64,
    /// Replay lines that were not candump records.
    pub bad_lines: u64,
    pub last_error: Option<String>,
}

/// Status of all CAN buses, keyed by bus name.
pub type CanStatus = Arc<Mutex<BTreeMap<String, CanBusStatus>>>;

/// The emission slot of one signal of one message (and source address).
struct Slot {
    point: String,
    policy: EmitPolicy,
    state: EmitState,
}

/// Decoding and emission for one bus; sans-I/O (`handle`), plus the task (`run`).
pub struct CanBus {
    cfg: CanBusConfig,
    decoder: Decoder,
    filters: Option<Vec<(u32, u32)>>,
    /// Per (message id, extended, source address): one slot per signal.
    slots: HashMap<(u32, bool, Option<u8>), Vec<Slot>>,
    /// Active DM1 codes per source: (SPN, FMI) → occurrences.
    dm1: HashMap<u8, BTreeMap<(u32, u8), u8>>,
    state: Option<String>,
    counts: CanBusStatus,
    status: CanStatus,
    clock: Arc<Clock>,
    beat: Option<Beat>,
}

impl CanBus {
    /// A bus decoding with the DBC files its checked configuration loaded, keeping the
    /// configured messages.
    pub fn new(cfg: &CanBusConfig, status: CanStatus, clock: Arc<Clock>) -> CanBus {
        let mut db = CanDb::clone(&cfg.db);
        if !cfg.messages.is_empty() {
            db.retain(|m| cfg.messages.contains(&m.name));
        }
        let decoder = Decoder::new(db, cfg.j1939);
        for (pgn, names) in decoder.ambiguities() {
            tracing::warn!(bus = %cfg.name, pgn, messages = ?names, "several DBC messages define this PGN: a frame decodes as the one with its exact id, else its source address, else the lowest id");
        }
        let source = match (&cfg.interface, &cfg.replay) {
            (Some(i), _) => i.clone(),
            (None, Some(r)) => format!("replay of {}", r.file.display()),
            (None, None) => String::new(),
        };
        CanBus {
            filters: decoder.filters(),
            decoder,
            cfg: cfg.clone(),
            slots: HashMap::new(),
            dm1: HashMap::new(),
            state: None,
            counts: CanBusStatus {
                source,
                ..Default::default()
            },
            status,
            clock,
            beat: None,
        }
    }

    pub fn with_beat(mut self, beat: Beat) -> CanBus {
        self.beat = Some(beat);
        self
    }

    fn entry(point: String, value: Value, quality: Quality, class: Class, stamp: Stamp) -> Entry {
        Entry {
            sample: Sample {
                point,
                ts_ns: stamp.wall_ns,
                value,
                quality,
                time: stamp.time,
            },
            class,
            mono_ns: stamp.mono_ns,
        }
    }

    /// The bus state sample (`BUS/bus/state`), when it changed.
    fn set_state(&mut self, state: &str, stamp: Stamp, out: &mut Vec<Entry>) {
        if self.state.as_deref() == Some(state) {
            return;
        }
        tracing::info!(bus = %self.cfg.name, state, "CAN bus state");
        self.state = Some(state.to_string());
        self.counts.state = state.to_string();
        out.push(Self::entry(
            format!("{}/bus/state", self.cfg.name),
            Value::Str(state.to_string()),
            Quality::Good,
            Class::Alarm,
            stamp,
        ));
    }

    /// Turns one received frame into samples; `stamp` is when it was received.
    pub fn handle(&mut self, received: Received, stamp: Stamp) -> Vec<Entry> {
        let mut out = Vec::new();
        match received {
            Received::Remote => {}
            Received::Error { error, .. } => {
                self.counts.error_frames += 1;
                match error {
                    BusError::BusOff => self.counts.bus_off += 1,
                    BusError::Restarted => self.counts.restarts += 1,
                    _ => {}
                }
                if let Some(s) = error.state() {
                    self.set_state(s, stamp, &mut out);
                }
            }
            Received::Data(mut frame) => {
                frame.ts_ns = stamp.wall_ns;
                self.counts.frames += 1;
                if self.state.as_deref() != Some("up")
                    && !matches!(
                        self.state.as_deref(),
                        Some("error-warning" | "error-passive")
                    )
                {
                    self.set_state("up", stamp, &mut out);
                }
                let bus = &self.cfg.name;
                match self.decoder.feed(&frame) {
                    Decoded::Message {
                        message,
                        source,
                        signals,
                    } => {
                        let cfg = &self.cfg;
                        let slots = self
                            .slots
                            .entry((message.id, message.extended, source))
                            .or_insert_with(|| {
                                let at = match source {
                                    Some(sa) => format!("{}@{sa:02X}", message.name),
                                    None => message.name.clone(),
                                };
                                message
                                    .signals
                                    .iter()
                                    .map(|s| Slot {
                                        point: format!("{bus}/{at}/{}", s.name),
                                        policy: cfg.policy(&message.name, &s.name),
                                        state: EmitState::default(),
                                    })
                                    .collect()
                            });
                        for d in signals {
                            let slot = &mut slots[d.index];
                            if slot.policy.ignore
                                || !slot.state.admit(&slot.policy, d.value, stamp.wall_ns)
                            {
                                continue;
                            }
                            let value = match d.label {
                                Some(l) => Value::Str(l.to_string()),
                                None => Value::Float(d.value),
                            };
                            let quality = if d.in_range {
                                Quality::Good
                            } else {
                                Quality::Invalid(format!(
                                    "{} is outside the DBC range {}..{}",
                                    d.value, d.signal.min, d.signal.max
                                ))
                            };
                            out.push(Self::entry(
                                slot.point.clone(),
                                value,
                                quality,
                                slot.policy.class,
                                stamp,
                            ));
                        }
                    }
                    Decoded::Dm1 { source, dtcs } => {
                        let now: BTreeMap<(u32, u8), u8> = dtcs
                            .iter()
                            .map(|d| ((d.spn, d.fmi), d.occurrences))
                            .collect();
                        let before = self.dm1.insert(source, now.clone()).unwrap_or_default();
                        let point = |(spn, fmi): (u32, u8)| {
                            format!("{bus}/DM1@{source:02X}/spn{spn}.fmi{fmi}")
                        };
                        for (k, oc) in &now {
                            if before.get(k) != Some(oc) {
                                out.push(Self::entry(
                                    point(*k),
                                    Value::UInt(*oc as u64),
                                    Quality::Good,
                                    Class::Alarm,
                                    stamp,
                                ));
                            }
                        }
                        for k in before.keys().filter(|k| !now.contains_key(k)) {
                            // 0: the code is no longer active.
                            out.push(Self::entry(
                                point(*k),
                                Value::UInt(0),
                                Quality::Good,
                                Class::Alarm,
                                stamp,
                            ));
                        }
                    }
                    Decoded::TransferDropped {
                        source,
                        pgn,
                        reason,
                    } => {
                        self.counts.transfers_dropped += 1;
                        if self.counts.transfers_dropped.is_power_of_two() {
                            tracing::warn!(bus = %bus, source, pgn, reason, dropped = self.counts.transfers_dropped, "J1939 transfer dropped");
                        }
                    }
                    Decoded::Partial => {}
                    Decoded::Unknown => self.counts.unknown += 1,
                }
            }
        }
        self.counts.samples += out.len() as u64;
        out
    }

    fn publish_status(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.insert(self.cfg.name.clone(), self.counts.clone());
        }
    }

    fn note_error(&mut self, e: String) {
        self.counts.last_error = Some(e);
        self.publish_status();
    }

    fn beat(&self) {
        if let Some(b) = &self.beat {
            b.beat();
        }
    }

    /// Sleeps, beating, unless stopped first; false when stopped.
    async fn pause(&self, d: Duration, stop: &CancellationToken) -> bool {
        let sleep = async {
            match &self.beat {
                Some(b) => b.sleep(d).await,
                None => tokio::time::sleep(d).await,
            }
        };
        tokio::select! {
            _ = sleep => true,
            _ = stop.cancelled() => false,
        }
    }

    /// Runs until `stop`.
    pub async fn run(mut self, sink: impl SampleSink, stop: CancellationToken) {
        self.publish_status();
        match (self.cfg.interface.clone(), self.cfg.replay.clone()) {
            (Some(ifname), _) => self.run_socket(&ifname, &sink, &stop).await,
            (None, Some(replay)) => self.run_replay(&replay, &sink, &stop).await,
            (None, None) => {}
        }
        self.publish_status();
    }

    async fn run_socket(&mut self, ifname: &str, sink: &impl SampleSink, stop: &CancellationToken) {
        let mut failures = 0;
        loop {
            let sock = match super::socket::open(ifname, self.filters.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("cannot open {ifname}: {e}");
                    if failures == 0 {
                        tracing::error!(bus = %self.cfg.name, error = %msg, "CAN interface unavailable; retrying");
                    }
                    let mut out = Vec::new();
                    self.set_state("down", self.clock.stamp(), &mut out);
                    self.note_error(msg);
                    if !out.is_empty() {
                        sink.accept(out).await;
                    }
                    let wait = crate::backoff::backoff(
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                        failures,
                    );
                    failures += 1;
                    if !self.pause(wait, stop).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            let mut out = Vec::new();
            let up = super::socket::is_up(ifname) != Some(false);
            self.set_state(if up { "up" } else { "down" }, self.clock.stamp(), &mut out);
            self.publish_status();
            if !out.is_empty() {
                sink.accept(out).await;
            }
            tracing::info!(bus = %self.cfg.name, interface = ifname, filters = self.filters.as_ref().map(|f| f.len()), "CAN socket open");
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let mut out = Vec::new();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        self.beat();
                        let stamp = self.clock.stamp();
                        match super::socket::is_up(ifname) {
                            Some(false) => self.set_state("down", stamp, &mut out),
                            Some(true) if self.state.as_deref() == Some("down") => self.set_state("up", stamp, &mut out),
                            _ => {}
                        }
                        self.publish_status();
                    }
                    r = sock.read_frame() => match r {
                        Ok(frame) => {
                            let stamp = self.clock.stamp();
                            out = self.handle(Received::from_socketcan(frame, stamp.wall_ns), stamp);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NetworkDown => {
                            // The socket stays bound: frames flow again once the link is up.
                            self.set_state("down", self.clock.stamp(), &mut out);
                        }
                        Err(e) => {
                            let msg = format!("reading {ifname}: {e}");
                            tracing::warn!(bus = %self.cfg.name, error = %msg, "CAN socket failed; reopening");
                            self.note_error(msg);
                            if !out.is_empty() {
                                sink.accept(out).await;
                            }
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    sink.accept(out).await;
                }
            }
            if !self.pause(Duration::from_millis(200), stop).await {
                return;
            }
        }
    }

    async fn run_replay(
        &mut self,
        r: &crate::config::can::ReplayConfig,
        sink: &impl SampleSink,
        stop: &CancellationToken,
    ) {
        loop {
            let reader = match LogReader::open(&r.file) {
                Ok(x) => x,
                Err(e) => {
                    let msg = format!("cannot read {}: {e}", r.file.display());
                    tracing::error!(bus = %self.cfg.name, error = %msg, "replay failed");
                    self.note_error(msg);
                    break;
                }
            };
            let start = tokio::time::Instant::now();
            let mut first: Option<i64> = None;
            let mut pending: Vec<Entry> = Vec::new();
            for (n, rec) in reader.enumerate() {
                if stop.is_cancelled() {
                    break;
                }
                let rec = match rec {
                    Ok(rec) => rec,
                    Err(e) => {
                        self.counts.bad_lines += 1;
                        if self.counts.bad_lines <= 10 {
                            tracing::warn!(bus = %self.cfg.name, error = %e, "skipping a line of the replay log");
                        }
                        self.counts.last_error = Some(e.to_string());
                        continue;
                    }
                };
                if r.interface.as_ref().is_some_and(|i| *i != rec.interface) {
                    continue;
                }
                let log_ns = match &rec.received {
                    Received::Data(f) => {
                        // No kernel in between: apply its filters here.
                        if self.filters.as_ref().is_some_and(|fl| !passes(fl, f)) {
                            continue;
                        }
                        f.ts_ns
                    }
                    Received::Error { ts_ns, .. } => *ts_ns,
                    Received::Remote => continue,
                };
                let stamp = match r.speed {
                    ReplaySpeed::Realtime => {
                        let t0 = *first.get_or_insert(log_ns);
                        let due =
                            start + Duration::from_nanos(log_ns.saturating_sub(t0).max(0) as u64);
                        if !pending.is_empty() {
                            sink.accept(std::mem::take(&mut pending)).await;
                        }
                        // A long pause in the log is not a hung task: beat meanwhile.
                        let wait = due.saturating_duration_since(tokio::time::Instant::now());
                        if !self.pause(wait, stop).await {
                            break;
                        }
                        self.clock.stamp()
                    }
                    ReplaySpeed::Fast => Stamp {
                        wall_ns: log_ns,
                        mono_ns: 0,
                        time: TimeQuality::Synced,
                    },
                };
                let out = self.handle(rec.received, stamp);
                pending.extend(out);
                if n % 1024 == 0 {
                    self.beat();
                    self.publish_status();
                    if pending.len() >= 1000 || r.speed == ReplaySpeed::Fast {
                        sink.accept(std::mem::take(&mut pending)).await;
                    }
                    tokio::task::yield_now().await;
                }
            }
            if !pending.is_empty() {
                sink.accept(pending).await;
            }
            if !r.repeat || stop.is_cancelled() {
                break;
            }
        }
        tracing::info!(bus = %self.cfg.name, frames = self.counts.frames, samples = self.counts.samples, bad_lines = self.counts.bad_lines, "replay finished");
        self.counts.state = "finished".into();
        self.publish_status();
        // An idle source is not a hung one: keep beating until stopped.
        while self.pause(Duration::from_secs(3600), stop).await {}
    }
}
