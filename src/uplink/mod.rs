//! The MQTT uplink: batches from the buffer to the cloud over mutual TLS, QoS 1,
//! deleted from the buffer only after their PUBACK.

mod window;

pub use crate::backoff::backoff;
use crate::buffer::Buffer;
use crate::config::{split_host_port, UplinkConfig};
use crate::protocol::{self, Batch, Gap, StateMessage};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
pub use window::{Pending, Window};

/// What the uplink reports to status and metrics.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UplinkStatus {
    /// The broker of the current connection, if connected.
    pub connected_to: Option<String>,
    pub last_error: Option<String>,
    /// Batches and samples acknowledged since start.
    pub acked_batches: u64,
    pub acked_samples: u64,
    /// Time from publish to PUBACK of the last batch, in milliseconds.
    pub last_ack_latency_ms: Option<u64>,
    pub connects: u64,
}

/// Everything the uplink needs, injected.
pub struct Uplink {
    pub device_id: String,
    pub config: UplinkConfig,
    pub buffer: Buffer,
    pub status: Arc<Mutex<UplinkStatus>>,
    /// Goes into the birth message.
    pub config_hash: String,
    /// Heartbeat for the watchdog, if supervised.
    pub beat: Option<crate::model::liveness::Beat>,
    /// The key; a TPM key is opened (and made, the first time) at the first connection,
    /// so the sources keep buffering while the TPM is not reachable.
    pub identity: Arc<crate::identity::Holder>,
    /// What commands do.
    pub agent: Arc<crate::agent::Agent>,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Mqtt(#[from] rumqttc::ConnectionError),
    #[error("TLS setup: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("enrollment: {0}")]
    Enroll(String),
    #[error("publish queue: {0}")]
    Client(#[from] rumqttc::ClientError),
}

impl Uplink {
    /// Runs until `shutdown`, connecting, forwarding and reconnecting.
    pub async fn run(self, shutdown: CancellationToken) {
        let brokers = self.config.brokers.clone();
        let mut failures: u32 = 0;
        let mut attempt: usize = 0;
        while !shutdown.is_cancelled() {
            let broker = &brokers[attempt % brokers.len()];
            let result = tokio::select! {
                r = self.connection(broker, &shutdown) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            self.status.lock().map(|mut s| s.connected_to = None).ok();
            let Err((e, was_up)) = result else {
                break;
            };
            if was_up {
                failures = 0;
            }
            tracing::warn!(broker = %broker, error = %e, "uplink connection ended");
            if let Ok(mut s) = self.status.lock() {
                s.last_error = Some(format!("{broker}: {e}"));
            }
            attempt += 1;
            // Fail over to the next broker at once; back off after a full round.
            if attempt % brokers.len() == 0 {
                let delay = backoff(
                    self.config.reconnect_min,
                    self.config.reconnect_max,
                    failures,
                );
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = self.sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }

    fn beat(&self) {
        if let Some(b) = &self.beat {
            b.beat();
        }
    }

    async fn sleep(&self, d: Duration) {
        match &self.beat {
            Some(b) => b.sleep(d).await,
            None => tokio::time::sleep(d).await,
        }
    }

    /// The TLS client configuration: the certificate is read at every connection (a
    /// renewal takes effect at the next one), the key is the file's or the TPM's.
    async fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, LinkError> {
        let key = self.identity.key()?;
        let id = &self.identity.config;
        if !self.config.cert.exists() {
            // First power-on: enroll with the bootstrap token, if one is configured.
            match (&id.enroll_url, &id.token_file) {
                (Some(url), Some(token_file)) => {
                    let token = std::fs::read_to_string(token_file).map_err(|e| {
                        LinkError::Enroll(format!("cannot read the bootstrap token {}: {e}", token_file.display()))
                    })?;
                    tracing::info!(url = %url, "no certificate yet: enrolling");
                    crate::identity::enroll::enroll(&self.device_id, key.clone(), url, &token, &self.config.ca, &self.config.cert)
                        .await
                        .map_err(|e| LinkError::Enroll(e.to_string()))?;
                    tracing::info!(cert = %self.config.cert.display(), "enrolled: certificate stored");
                }
                _ => {
                    return Err(LinkError::Enroll(format!(
                        "no certificate at {}: run `fieldgate enroll --cloud URL --token TOKEN`, or set identity.enroll_url and identity.token_file",
                        self.config.cert.display()
                    )))
                }
            }
        }
        Ok(crate::identity::signer::client_config(
            crate::tls::root_store(&self.config.ca)?,
            crate::tls::load_certs(&self.config.cert)?,
            key,
        ))
    }

    /// One connection: returns the error that ended it, and whether it had been up.
    async fn connection(
        &self,
        broker: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), (LinkError, bool)> {
        let (host, port) = split_host_port(broker).unwrap_or((broker, 8883));
        let tls = self.tls_config().await.map_err(|e| (e, false))?;
        let mut opts = MqttOptions::new(self.device_id.clone(), host, port);
        let offline = serde_json::to_vec(&StateMessage {
            state: "offline".into(),
            version: None,
            config_hash: None,
            buffer_depth: None,
        })
        .unwrap_or_default();
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
            .set_keep_alive(self.config.keep_alive)
            .set_clean_session(true)
            // A command is acknowledged only once its id is journaled.
            .set_manual_acks(true)
            .set_max_packet_size(protocol::MAX_PAYLOAD + 4096, protocol::MAX_PAYLOAD + 4096)
            .set_last_will(LastWill::new(
                protocol::state_topic(&self.device_id),
                offline.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        let cap = self.config.max_in_flight * 2 + 8;
        let (client, mut events) = AsyncClient::new(opts, cap);

        // Wait for the CONNACK.
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err((e.into(), false)),
            }
        }
        tracing::info!(broker, "uplink connected");
        // Commands: subscribed before the birth, which tells the cloud to send them.
        client
            .try_subscribe(
                crate::downlink::command_topic(&self.device_id),
                QoS::AtLeastOnce,
            )
            .map_err(|e| (e.into(), true))?;
        if let Ok(mut s) = self.status.lock() {
            s.connected_to = Some(broker.to_string());
            s.last_error = None;
            s.connects += 1;
        }
        let mut window = Window::default();
        let stats = self.buffer.stats().await;
        let birth = serde_json::to_vec(&StateMessage {
            state: "online".into(),
            version: Some(self.agent.version()),
            config_hash: Some(self.config_hash.clone()),
            buffer_depth: Some(stats.depth),
        })
        .unwrap_or_default();
        client
            .try_publish(
                protocol::state_topic(&self.device_id),
                QoS::AtLeastOnce,
                true,
                birth,
            )
            .map_err(|e| (e.into(), true))?;
        window.queued(Pending::control(None));
        // Where an update stands, at every connection (the cloud keeps what is new).
        let mut progress = self.agent.progress();
        if let Some(rx) = progress.as_mut() {
            let now = rx.borrow_and_update().clone();
            if let Some(p) = now {
                self.send_progress(&client, &mut window, &p)
                    .map_err(|e| (e.into(), true))?;
            }
        }
        // Replies the cloud did not acknowledge on an earlier connection.
        for (id, reply) in self.buffer.unsent_replies().await {
            self.send_reply(&client, &mut window, id, reply)
                .map_err(|e| (e.into(), true))?;
        }

        // Everything up to `split` is backlog; newer samples are live and go first.
        let split = self.buffer.max_seq().await;
        let mut lanes = Lanes {
            live_after: split,
            backlog_after: 0,
            split,
            tokens: 0.0,
            refilled: Instant::now(),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => window.sent(pkid),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        self.command(&client, &mut window, p).await.map_err(|e| (e.into(), true))?;
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(p) = window.acked(ack.pkid) {
                            if let Some(id) = &p.reply {
                                self.buffer.reply_sent(id).await;
                            }
                            self.buffer.ack(p.seqs, p.gaps).await;
                            if let Ok(mut s) = self.status.lock() {
                                s.acked_batches += 1;
                                s.acked_samples += p.samples as u64;
                                s.last_ack_latency_ms = Some(p.sent_at.elapsed().as_millis() as u64);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err((e.into(), true)),
                },
                Some(p) = changed(&mut progress) => {
                    self.send_progress(&client, &mut window, &p).map_err(|e| (e.into(), true))?;
                }
                _ = tick.tick() => {}
                _ = self.buffer.committed.notified() => {}
                _ = shutdown.cancelled() => {
                    // A clean stop says so itself; the last will covers the unclean ones.
                    let _ = client.try_publish(protocol::state_topic(&self.device_id), QoS::AtLeastOnce, true, offline.clone());
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Ok(ev) = events.poll().await {
                            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                                break;
                            }
                        }
                    })
                    .await;
                    return Ok(());
                }
            }
            self.beat();
            self.fill(&client, &mut window, &mut lanes)
                .await
                .map_err(|e| (e, true))?;
        }
    }

    /// A publish from the cloud: a command on our command topic (the only one we
    /// subscribe to). Journaled before it is acknowledged, done once, answered.
    async fn command(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        p: rumqttc::Publish,
    ) -> Result<(), rumqttc::ClientError> {
        use crate::buffer::commands::Seen;
        let cmd = match crate::downlink::Command::decode(&p.payload) {
            Ok(c) => c,
            Err(e) => {
                // Nothing to answer: the id is not known. Acknowledged, so it does not
                // come back.
                tracing::warn!(topic = %p.topic, error = %e, "command refused");
                client.try_ack(&p)?;
                return Ok(());
            }
        };
        let Some(seen) = self.buffer.command_received(&cmd.id, &cmd.kind).await else {
            // Not journaled: not acknowledged either (the cloud sends it again).
            tracing::error!(id = %cmd.id, "cannot journal the command; it is not acknowledged");
            return Ok(());
        };
        client.try_ack(&p)?;
        match seen {
            Seen::New => {
                tracing::info!(id = %cmd.id, kind = %cmd.kind, "command received");
                let reply = self.agent.execute(&cmd).await;
                tracing::info!(id = %cmd.id, status = reply.status.as_str(), error = ?reply.error, "command done");
                let bytes = reply.encode();
                if !self.buffer.command_replied(&cmd.id, bytes.clone()).await {
                    tracing::error!(id = %cmd.id, "cannot keep the reply; sending it once");
                }
                self.send_reply(client, window, cmd.id, bytes)
            }
            Seen::Replied(bytes) => {
                tracing::info!(id = %cmd.id, "command seen before: its reply again, nothing done");
                self.send_reply(client, window, cmd.id, bytes)
            }
            Seen::InProgress => Ok(()),
        }
    }

    fn send_progress(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        p: &crate::downlink::Progress,
    ) -> Result<(), rumqttc::ClientError> {
        client.try_publish(
            crate::downlink::progress_topic(&self.device_id),
            QoS::AtLeastOnce,
            false,
            p.encode(),
        )?;
        window.queued(Pending::control(None));
        Ok(())
    }

    fn send_reply(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        id: String,
        reply: Vec<u8>,
    ) -> Result<(), rumqttc::ClientError> {
        client.try_publish(
            crate::downlink::reply_topic(&self.device_id),
            QoS::AtLeastOnce,
            false,
            reply,
        )?;
        window.queued(Pending::control(Some(id)));
        Ok(())
    }

    /// Publishes batches while the window has room: gaps and live data first, then backlog.
    async fn fill(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        lanes: &mut Lanes,
    ) -> Result<(), LinkError> {
        let cfg = &self.config;
        lanes.refill(cfg.backlog_rate, cfg.batch_max_samples);
        while window.len() < cfg.max_in_flight {
            let in_flight: Vec<Gap> = window.gaps_in_flight().copied().collect();
            let gaps: Vec<Gap> = self
                .buffer
                .gaps(64)
                .await
                .into_iter()
                .filter(|g| !in_flight.contains(g))
                .collect();
            let live = self
                .buffer
                .fetch(lanes.live_after, u64::MAX, cfg.batch_max_samples)
                .await;
            let live_ready = live.len() >= cfg.batch_max_samples
                || live.first().is_some_and(|s| {
                    crate::sample::now_ns() - s.sample.ts_ns >= cfg.batch_max_age.as_nanos() as i64
                })
                || (!live.is_empty() && !gaps.is_empty());
            let samples = if live_ready {
                lanes.live_after = live.last().map(|s| s.seq).unwrap_or(lanes.live_after);
                live
            } else if lanes.backlog_after < lanes.split && lanes.tokens >= 1.0 {
                let n = (lanes.tokens as usize).min(cfg.batch_max_samples);
                let b = self.buffer.fetch(lanes.backlog_after, lanes.split, n).await;
                match b.last() {
                    Some(last) => lanes.backlog_after = last.seq,
                    None => lanes.backlog_after = lanes.split,
                }
                lanes.tokens -= b.len() as f64;
                b
            } else {
                Vec::new()
            };
            if samples.is_empty() && gaps.is_empty() {
                return Ok(());
            }
            for (chunk, chunk_gaps) in split_to_fit(samples, gaps) {
                let seqs =
                    crate::buffer::outbox::ranges(&chunk.iter().map(|s| s.seq).collect::<Vec<_>>());
                let n = chunk.len();
                let payload = Batch {
                    samples: chunk,
                    gaps: chunk_gaps.clone(),
                }
                .encode();
                client.try_publish(
                    protocol::data_topic(&self.device_id),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )?;
                window.queued(Pending {
                    seqs,
                    gaps: chunk_gaps,
                    samples: n,
                    sent_at: Instant::now(),
                    reply: None,
                });
            }
        }
        Ok(())
    }
}

/// The next progress report (never, without updates).
async fn changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Option<crate::downlink::Progress>>>,
) -> Option<crate::downlink::Progress> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => rx.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Cursors of the live and backlog lanes of one connection.
struct Lanes {
    live_after: u64,
    backlog_after: u64,
    split: u64,
    /// Backlog samples that may be sent now (token bucket at `backlog_rate`).
    tokens: f64,
    refilled: Instant,
}

impl Lanes {
    fn refill(&mut self, rate: u32, burst: usize) {
        let dt = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.tokens = (self.tokens + dt * rate as f64).min(burst.max(1) as f64);
    }
}

/// Splits samples into payloads under the size limit (a batch of long strings can be big).
fn split_to_fit(
    samples: Vec<protocol::Sequenced>,
    gaps: Vec<Gap>,
) -> Vec<(Vec<protocol::Sequenced>, Vec<Gap>)> {
    let size = Batch {
        samples: samples.clone(),
        gaps: gaps.clone(),
    }
    .encode()
    .len();
    if size <= protocol::MAX_PAYLOAD || samples.len() <= 1 {
        return vec![(samples, gaps)];
    }
    let mut first = samples;
    let second = first.split_off(first.len() / 2);
    let mut out = split_to_fit(first, gaps);
    out.extend(split_to_fit(second, Vec::new()));
    out
}
