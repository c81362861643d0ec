//! The poll loop of one bus: one outstanding request at a time for all units on it.

use super::codec;
use super::planner::{Planner, PointSpec, ReadBlock};
use super::report::ReportFilter;
use super::transport::{connect, Endpoint};
use crate::clock::{Clock, Stamp};
use crate::config::{BusConfig, PointConfig};
use crate::model::Entry;
use crate::sample::{Quality, Sample, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_util::sync::CancellationToken;

/// Longest a failing device waits between attempts.
const MAX_DEVICE_BACKOFF: Duration = Duration::from_secs(60);

/// What `fieldgate status` shows per device.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceStatus {
    /// How the last round went.
    pub state: DeviceState,
    pub polls: u64,
    /// Rounds in which the device did not answer at all (or could not be reached).
    pub errors: u64,
    /// Why it did not answer, the last time; cleared when it answers again.
    pub last_error: Option<String>,
    /// The last round the device answered (even if some of its points failed).
    pub last_ok_ns: Option<i64>,
    /// Points that failed in the last round although the device answered, with why
    /// (an exception for an address it does not have, a value that does not decode).
    pub failing_points: BTreeMap<String, String>,
    /// Points the planner reads alone because they failed inside a block.
    pub isolated_points: Vec<String>,
}

/// The device as its last poll round found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Not polled yet.
    #[default]
    Unknown,
    /// It answered and every point read well.
    Ok,
    /// It answered, but some points failed (`failing_points`).
    PointsFailing,
    /// It did not answer, or could not be reached (`last_error`).
    NoAnswer,
}

/// Status of all devices of all buses, keyed by device name.
pub type BusStatus = Arc<Mutex<BTreeMap<String, DeviceStatus>>>;

pub use crate::field::SampleSink;

struct PointRt {
    id: String,
    cfg: PointConfig,
    filter: ReportFilter,
}

/// The points of one device that share one interval.
struct Group {
    device: String,
    unit: u8,
    interval: Duration,
    due: Instant,
    planner: Planner,
    points: Vec<PointRt>,
    /// Consecutive rounds in which the device did not answer at all.
    silent_rounds: u32,
}

/// A bus and everything polled on it.
pub struct BusPoller {
    pub name: String,
    endpoint: Endpoint,
    timeout: Duration,
    retries: u32,
    groups: Vec<Group>,
    status: BusStatus,
    clock: Arc<Clock>,
    /// Heartbeat for the watchdog, if supervised.
    beat: Option<crate::model::liveness::Beat>,
}

enum ReadError {
    Exception(u8),
    Timeout,
    Transport(String),
}

impl BusPoller {
    pub fn new(bus: &BusConfig, status: BusStatus, clock: Arc<Clock>) -> BusPoller {
        let endpoint = match (&bus.tcp, &bus.rtu) {
            (Some(t), _) => Endpoint::Tcp(t.address.clone()),
            (None, Some(r)) => Endpoint::Rtu(r.clone()),
            (None, None) => Endpoint::Tcp(String::new()),
        };
        let mut groups = Vec::new();
        for dev in &bus.device {
            let d = dev.get_ref();
            let mut by_interval: BTreeMap<Duration, Vec<PointConfig>> = BTreeMap::new();
            for p in &d.point {
                let p = p.get_ref();
                by_interval
                    .entry(p.interval.unwrap_or(d.poll_interval))
                    .or_default()
                    .push(p.clone());
            }
            for (interval, pts) in by_interval {
                let specs = pts
                    .iter()
                    .map(|p| PointSpec {
                        function: p.function,
                        address: p.address,
                        width: p.width(),
                    })
                    .collect();
                groups.push(Group {
                    device: d.name.clone(),
                    unit: d.unit,
                    interval,
                    due: Instant::now(),
                    planner: Planner::new(specs, d.max_gap, d.max_registers),
                    points: pts
                        .into_iter()
                        .map(|p| PointRt {
                            id: format!("{}/{}", d.name, p.name),
                            filter: ReportFilter::new(
                                p.deadband,
                                p.heartbeat.map(|h| h.as_nanos() as i64),
                            ),
                            cfg: p,
                        })
                        .collect(),
                    silent_rounds: 0,
                });
            }
            status
                .lock()
                .map(|mut s| s.entry(d.name.clone()).or_default().polls = 0)
                .ok();
        }
        BusPoller {
            name: bus.name.clone(),
            endpoint,
            timeout: bus.timeout,
            retries: bus.retries,
            groups,
            status,
            clock,
            beat: None,
        }
    }

    /// Beats `beat` at least once a second while polling.
    pub fn with_beat(mut self, beat: crate::model::liveness::Beat) -> BusPoller {
        self.beat = Some(beat);
        self
    }

    /// The requests each poll group makes per round (for tests, benches and `check`).
    pub fn plans(&self) -> Vec<(String, Duration, Vec<ReadBlock>)> {
        self.groups
            .iter()
            .map(|g| (g.device.clone(), g.interval, g.planner.blocks().to_vec()))
            .collect()
    }

    /// Polls until `shutdown`; samples go to `sink`.
    pub async fn run(mut self, sink: impl SampleSink, shutdown: CancellationToken) {
        let mut ctx: Option<Context> = None;
        let mut connect_failures = 0u32;
        let mut next_connect = Instant::now();
        let mut link_down_logged = false;
        while !shutdown.is_cancelled() && !self.groups.is_empty() {
            let gi = (0..self.groups.len())
                .min_by_key(|&i| self.groups[i].due)
                .unwrap_or(0);
            let due = self.groups[gi].due;
            if let Some(b) = &self.beat {
                b.beat();
            }
            // Wake at least once a second so the heartbeat shows an idle bus is alive.
            let wake = due.min(Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled() => break,
            }
            if Instant::now() < due {
                continue;
            }
            if ctx.is_none() && Instant::now() >= next_connect {
                match connect(&self.endpoint, self.timeout).await {
                    Ok(c) => {
                        if link_down_logged {
                            tracing::info!(bus = %self.name, "bus connected again");
                        }
                        ctx = Some(c);
                        connect_failures = 0;
                        link_down_logged = false;
                    }
                    Err(e) => {
                        if !link_down_logged {
                            tracing::warn!(bus = %self.name, error = %e, "bus unreachable; retrying with backoff");
                            link_down_logged = true;
                        }
                        next_connect = Instant::now()
                            + crate::backoff::backoff(
                                Duration::from_millis(500),
                                Duration::from_secs(30),
                                connect_failures,
                            );
                        connect_failures += 1;
                        self.record_error(gi, &e.to_string());
                    }
                }
            }
            let samples = match ctx.as_mut() {
                Some(c) => {
                    let (samples, transport_error) = self.poll_group(gi, c).await;
                    if transport_error {
                        // A timeout or I/O error can leave a late answer on the line: start clean.
                        ctx = None;
                    }
                    samples
                }
                None => self.mark_group(gi, Quality::Disconnected),
            };
            let g = &mut self.groups[gi];
            let backoff = if g.silent_rounds > 2 {
                (g.interval * 2u32.saturating_pow(g.silent_rounds.min(10) - 2))
                    .min(MAX_DEVICE_BACKOFF)
            } else {
                g.interval
            };
            g.due = (g.due + g.interval)
                .max(Instant::now() + backoff.saturating_sub(g.interval))
                .max(Instant::now());
            if !samples.is_empty() {
                sink.accept(samples).await;
            }
        }
    }

    fn record_error(&self, gi: usize, e: &str) {
        if let Ok(mut s) = self.status.lock() {
            let d = s.entry(self.groups[gi].device.clone()).or_default();
            d.errors += 1;
            d.last_error = Some(e.to_string());
            d.state = DeviceState::NoAnswer;
        }
    }

    /// Marks every point of a group with `quality` (only transitions are emitted).
    fn mark_group(&mut self, gi: usize, quality: Quality) -> Vec<Entry> {
        let ts = self.clock.stamp();
        let g = &mut self.groups[gi];
        let mut out = Vec::new();
        for p in &mut g.points {
            if p.filter.admit_bad(&quality, ts.wall_ns) {
                out.push(sample(p, Value::Empty, quality.clone(), ts));
            }
        }
        out
    }

    /// Reads every block of a group once. Returns the samples and whether the
    /// connection should be reopened.
    async fn poll_group(&mut self, gi: usize, ctx: &mut Context) -> (Vec<Entry>, bool) {
        let unit = self.groups[gi].unit;
        let blocks = self.groups[gi].planner.blocks().to_vec();
        let mut results: Vec<Option<Result<Vec<u16>, Quality>>> =
            vec![None; self.groups[gi].points.len()];
        let mut reopen = false;
        let mut answered = false;
        let mut first_error: Option<String> = None;
        for block in &blocks {
            match self.read(ctx, unit, block).await {
                Ok(words) => {
                    answered = true;
                    let specs = self.groups[gi].planner.points().to_vec();
                    for &pi in &block.points {
                        let off = block.offset_of(&specs[pi]);
                        let w = words
                            .get(off..off + specs[pi].width as usize)
                            .map(|s| s.to_vec());
                        results[pi] =
                            Some(w.ok_or_else(|| Quality::Invalid("short response".into())));
                    }
                }
                Err(ReadError::Exception(code)) if block.points.len() > 1 => {
                    answered = true;
                    // Find the offending address: read each point alone, then re-plan.
                    let mut failed = Vec::new();
                    for &pi in &block.points {
                        let spec = self.groups[gi].planner.points()[pi];
                        let single = ReadBlock {
                            function: spec.function,
                            start: spec.address,
                            count: spec.width,
                            points: vec![pi],
                        };
                        match self.read(ctx, unit, &single).await {
                            Ok(w) => results[pi] = Some(Ok(w)),
                            Err(ReadError::Exception(c)) => {
                                failed.push(pi);
                                results[pi] = Some(Err(Quality::Exception(c)));
                            }
                            Err(ReadError::Timeout) => {
                                results[pi] = Some(Err(Quality::Timeout));
                                reopen = true;
                            }
                            Err(ReadError::Transport(e)) => {
                                results[pi] = Some(Err(Quality::Disconnected));
                                first_error.get_or_insert(e);
                                reopen = true;
                            }
                        }
                    }
                    let names: Vec<String> = failed
                        .iter()
                        .map(|&i| self.groups[gi].points[i].id.clone())
                        .collect();
                    tracing::warn!(bus = %self.name, device = %self.groups[gi].device, code,
                        isolated = ?names, "exception inside a merged read; re-planned");
                    self.groups[gi].planner.learn(block, &failed);
                    first_error.get_or_insert(format!(
                        "exception {code:#04x} ({})",
                        crate::sample::exception_name(code)
                    ));
                    if reopen {
                        break;
                    }
                }
                Err(e) => {
                    let (q, msg) = match e {
                        ReadError::Exception(c) => {
                            answered = true;
                            (
                                Quality::Exception(c),
                                format!(
                                    "exception {c:#04x} ({})",
                                    crate::sample::exception_name(c)
                                ),
                            )
                        }
                        ReadError::Timeout => {
                            reopen = true;
                            (Quality::Timeout, "no answer within the timeout".to_string())
                        }
                        ReadError::Transport(m) => {
                            reopen = true;
                            (Quality::Disconnected, m)
                        }
                    };
                    for &pi in &block.points {
                        results[pi] = Some(Err(q.clone()));
                    }
                    first_error.get_or_insert(msg);
                    if reopen {
                        break;
                    }
                }
            }
        }
        let g = &mut self.groups[gi];
        let was_silent = g.silent_rounds > 0;
        g.silent_rounds = if answered { 0 } else { g.silent_rounds + 1 };
        if !answered && !was_silent {
            tracing::warn!(bus = %self.name, device = %g.device, unit, error = first_error.as_deref().unwrap_or(""),
                "device does not answer; backing off");
        } else if answered && was_silent {
            tracing::info!(bus = %self.name, device = %g.device, unit, "device answers again");
        }
        let ts = self.clock.stamp();
        let mut out = Vec::new();
        let mut failing = BTreeMap::new();
        for (pi, r) in results.into_iter().enumerate() {
            let p = &mut g.points[pi];
            let (value, quality) = match r {
                None => (Value::Empty, Quality::Timeout),
                Some(Err(q)) => (Value::Empty, q),
                Some(Ok(words)) => match codec::decode(
                    &words,
                    p.cfg.data_type,
                    p.cfg.order,
                    p.cfg.bit.unwrap_or(0),
                ) {
                    Ok(v) => (codec::scale(v, p.cfg.scale, p.cfg.offset), Quality::Good),
                    Err(e) => (Value::Empty, Quality::Invalid(e.to_string())),
                },
            };
            let emit = if quality.is_good() {
                p.filter.admit(&value, &quality, ts.wall_ns)
            } else {
                p.filter.admit_bad(&quality, ts.wall_ns)
            };
            if !quality.is_good() {
                failing.insert(p.id.clone(), quality.to_string());
            }
            if emit {
                out.push(sample(p, value, quality, ts));
            }
        }
        if let Ok(mut s) = self.status.lock() {
            let d = s.entry(g.device.clone()).or_default();
            d.polls += 1;
            if answered {
                d.last_ok_ns = Some(ts.wall_ns);
                d.last_error = None;
                d.state = if failing.is_empty() {
                    DeviceState::Ok
                } else {
                    DeviceState::PointsFailing
                };
                d.failing_points = failing;
            } else {
                d.errors += 1;
                d.last_error = first_error.or(Some("no answer".into()));
                d.state = DeviceState::NoAnswer;
                d.failing_points.clear();
            }
            d.isolated_points = (0..g.points.len())
                .filter(|&i| g.planner.is_isolated(i))
                .map(|i| g.points[i].id.clone())
                .collect();
        }
        (out, reopen)
    }

    /// One request, with the bus timeout and retries on timeout.
    async fn read(
        &self,
        ctx: &mut Context,
        unit: u8,
        b: &ReadBlock,
    ) -> Result<Vec<u16>, ReadError> {
        use super::scan::{read, Probe};
        let mut attempt = 0;
        loop {
            match read(ctx, unit, b.function, b.start, b.count, self.timeout).await {
                Probe::Answers(words) if words.len() >= b.count as usize => return Ok(words),
                Probe::Answers(words) => {
                    return Err(ReadError::Transport(format!(
                        "asked for {} items, got {}",
                        b.count,
                        words.len()
                    )))
                }
                Probe::Exception(code) => return Err(ReadError::Exception(code)),
                Probe::Error(e) => return Err(ReadError::Transport(e)),
                Probe::Silent if attempt < self.retries => attempt += 1,
                Probe::Silent => return Err(ReadError::Timeout),
            }
        }
    }
}

fn sample(p: &PointRt, value: Value, quality: Quality, ts: Stamp) -> Entry {
    Entry {
        sample: Sample {
            point: p.id.clone(),
            ts_ns: ts.wall_ns,
            value,
            quality,
            time: ts.time,
        },
        class: p.cfg.class,
        mono_ns: ts.mono_ns,
    }
}
