//! Ingest, written once: what a delivery does, whichever transport carried it (the
//! embedded MQTT endpoint, `endpoint`, or an external broker, `bridge`). `Ingest::accept`
//! decides and stores without any I/O of its own beside the database; it blocks, so the
//! transports run it off the async threads.
//!
//! A payload that cannot be used is kept with its reason (`rejected`) and acknowledged,
//! so it cannot block a device's stream; only a database failure goes unacknowledged.

pub mod bridge;
pub mod endpoint;

use super::downlink::{Downlink, DownlinkError};
use super::registry::{Registry, RegistryError};
use super::rollouts::{RolloutError, Rollouts};
use super::store::{Inserted, Store, StoreError};
use crate::ids::DeviceId;
use crate::protocol::{self, Batch, DecodeError, StateMessage, Topic};
use std::sync::{Arc, Mutex};

pub type SharedStore = Arc<Mutex<Store>>;

/// What a delivery came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A batch, stored (repeats counted, not stored twice).
    Stored(Inserted),
    /// A state message, recorded.
    State,
    /// A reply to a command, recorded (or a repeat, ignored).
    Reply,
    /// A progress report of a long command, recorded.
    Progress,
    /// Kept in `rejected` with this reason; acknowledged all the same.
    Rejected(Reject),
}

/// Why a delivery was refused: the same words whichever transport carried it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("not a fieldgate topic")]
    NotOurs,
    /// The embedded endpoint closes the connection too (a broker's ACL stops these).
    #[error("publish outside the device's own topics: {0}")]
    ForeignTopic(String),
    #[error("revoked: the device's identity was revoked ({0})")]
    Revoked(String),
    #[error("{0}")]
    Batch(#[from] DecodeError),
    #[error("state message is not valid JSON: {0}")]
    State(String),
    #[error("command reply: {0}")]
    Reply(#[from] crate::downlink::BadMessage),
    #[error("progress report: {0}")]
    Progress(crate::downlink::BadMessage),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Downlink(#[from] DownlinkError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("the sample store's lock was poisoned by a failed thread")]
    Poisoned,
}

/// The ingest of one process: its sample store, the registry (revocations) and the
/// downlink (commands out, their replies in).
pub struct Ingest {
    store: SharedStore,
    registry: Registry,
    downlink: Arc<Downlink>,
    rollouts: Rollouts,
}

impl Ingest {
    pub fn new(
        store: SharedStore,
        registry: Registry,
        downlink: Arc<Downlink>,
        rollouts: Rollouts,
    ) -> Ingest {
        Ingest {
            store,
            registry,
            downlink,
            rollouts,
        }
    }

    /// Moves rollouts on and sends the commands that are due. Blocks on the database.
    pub fn pump(&self) -> Result<usize, IngestError> {
        self.rollouts.advance(&self.downlink)?;
        Ok(self.downlink.pump()?)
    }

    /// Commands to the devices of this ingest.
    pub fn downlink(&self) -> &Arc<Downlink> {
        &self.downlink
    }

    /// The sample store (reads for tails and tests).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn locked(&self) -> Result<std::sync::MutexGuard<'_, Store>, IngestError> {
        self.store.lock().map_err(|_| IngestError::Poisoned)
    }

    /// `device` connected from `peer` (only the embedded endpoint sees connections):
    /// refused with the reason if it is revoked (recorded beside its enrollments), else
    /// noted by the device watch.
    pub fn connected(
        &self,
        device: &str,
        peer: std::net::SocketAddr,
    ) -> Result<Result<(), String>, IngestError> {
        if let Some(reason) = self.registry.revoked(device)? {
            self.registry.record(
                device,
                "refused",
                &format!("revoked: connection refused ({reason})"),
                &peer.to_string(),
            )?;
            return Ok(Err(reason));
        }
        if let Err(e) = self.locked()?.watch_connect(device, peer.ip()) {
            tracing::warn!(%device, error = %e, "device watch failed");
        }
        Ok(Ok(()))
    }

    /// One delivery on `topic`. `proven` is the device the transport authenticated (the
    /// embedded endpoint's client certificate); behind a broker its ACL did that, and
    /// the topic names the device.
    pub fn accept(
        &self,
        proven: Option<&DeviceId>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Outcome, IngestError> {
        let parsed = protocol::parse_topic(topic);
        let device = match (&parsed, proven) {
            (
                Some(Topic::Data(d) | Topic::State(d) | Topic::Reply(d) | Topic::Progress(d)),
                Some(p),
            ) if d != p => None,
            (Some(Topic::Data(d) | Topic::State(d) | Topic::Reply(d) | Topic::Progress(d)), _) => {
                Some(d)
            }
            (None, _) => None,
        };
        let Some(device) = device else {
            let reason = if parsed.is_none() && proven.is_none() {
                Reject::NotOurs
            } else {
                Reject::ForeignTopic(topic.to_string())
            };
            return self.reject(proven.map(|d| d.as_str()), topic, reason, payload);
        };
        // A revoked device may still be connected to a broker, or have been revoked
        // while connected here: each delivery is checked.
        if let Some(reason) = self.registry.revoked(device)? {
            return self.reject(Some(device), topic, Reject::Revoked(reason), payload);
        }
        match parsed {
            Some(Topic::Data(_)) => match Batch::decode(payload) {
                Ok(batch) => {
                    let n = self.locked()?.insert(device, &batch)?;
                    tracing::debug!(
                        device = device.as_str(),
                        new = n.new,
                        duplicates = n.duplicates,
                        gaps = n.gaps,
                        "batch stored"
                    );
                    let now = crate::sample::now_ns();
                    let live = batch
                        .samples
                        .iter()
                        .filter(|s| (now - s.sample.ts_ns).abs() <= super::watch::LIVE_NS)
                        .count() as u64;
                    if let Err(e) = self.locked()?.watch_samples(device, live) {
                        tracing::warn!(%device, error = %e, "device watch failed");
                    }
                    Ok(Outcome::Stored(n))
                }
                Err(e) => self.reject(Some(device), topic, Reject::Batch(e), payload),
            },
            Some(Topic::Reply(_)) => match crate::downlink::Reply::decode(payload) {
                Ok(reply) => {
                    self.downlink.replied(device, &reply)?;
                    self.rollouts.replied(device, &reply)?;
                    Ok(Outcome::Reply)
                }
                Err(e) => self.reject(Some(device), topic, Reject::Reply(e), payload),
            },
            Some(Topic::Progress(_)) => match crate::downlink::Progress::decode(payload) {
                Ok(p) => {
                    self.rollouts.progress(device, &p)?;
                    Ok(Outcome::Progress)
                }
                Err(e) => self.reject(Some(device), topic, Reject::Progress(e), payload),
            },
            _ => match serde_json::from_slice::<StateMessage>(payload) {
                Ok(m) => {
                    self.locked()?.set_state(device, &m)?;
                    if m.state == "online" {
                        // A birth: what it has not answered goes again.
                        self.downlink.rearm(device)?;
                    }
                    Ok(Outcome::State)
                }
                Err(e) => self.reject(Some(device), topic, Reject::State(e.to_string()), payload),
            },
        }
    }

    /// The last will of `device`, its connection lost.
    pub fn will(&self, device: &str, state: &StateMessage) -> Result<(), IngestError> {
        Ok(self.locked()?.set_state(device, state)?)
    }

    fn reject(
        &self,
        device: Option<&str>,
        topic: &str,
        reason: Reject,
        payload: &[u8],
    ) -> Result<Outcome, IngestError> {
        tracing::warn!(device, topic, reason = %reason, "payload refused");
        self.locked()?
            .reject(device, topic, &reason.to_string(), payload)?;
        Ok(Outcome::Rejected(reason))
    }
}

/// The device id a certificate proves: its subject's CN, if it is a valid id.
pub fn device_id_of(der: &[u8]) -> Option<DeviceId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    DeviceId::parse(cn).ok()
}

/// Runs `Ingest::pump` every `downlink::PUMP` until `shutdown` (off the async threads).
pub async fn run_pump(ingest: Arc<Ingest>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(super::downlink::PUMP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let i = ingest.clone();
        match tokio::task::spawn_blocking(move || i.pump()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "downlink pump failed"),
            Err(e) => tracing::warn!(error = %e, "downlink pump task failed"),
        }
    }
}
