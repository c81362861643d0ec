//! Ingest behind an existing broker, over MQTT 5: subscribe to every device's data with
//! QoS 1 and a persistent session, store, then acknowledge (manual acks), so the broker
//! keeps what the ingest has not stored. The broker's ACL binds each device to its own
//! topics. With a share group, several stateless workers split the load through a
//! shared subscription (`$share/GROUP/…`); the store's (device, seq) key makes a batch
//! delivered twice (a worker killed before its acknowledgement) count once.
//!
//! Commands go out through the same client, to `fg/v1/{device}/cmd` (the broker's ACL
//! lets only that device read it), and replies come in like data. With several workers
//! each pumps the commands that are due; a command sent twice is done once.

use super::Ingest;
use crate::protocol;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the external broker is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct BrokerLink {
    pub host: String,
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Stable per worker: the broker keeps its session (and what it did not
    /// acknowledge) across a restart.
    pub client_id: String,
    /// The shared-subscription group of the workers, if they share the load.
    pub share_group: Option<String>,
}

/// How long the broker keeps a worker's session while it is away.
const SESSION_EXPIRY_S: u32 = 3600;

/// Requests the client queues for its event loop (acknowledgements among them).
const REQUEST_QUEUE: usize = 64;

/// Unacknowledged deliveries the broker may have in flight to one worker (the MQTT 5
/// Receive Maximum).
const RECEIVE_MAXIMUM: u16 = 32;

pub async fn run(
    link: BrokerLink,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> Result<(), crate::cloud::CloudError> {
    let tls = crate::tls::client_config(&link.ca, &link.cert, &link.key)?;
    let mut opts = MqttOptions::new(link.client_id.clone(), link.host.clone(), link.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_receive_maximum(Some(RECEIVE_MAXIMUM))
        .set_max_packet_size(Some(super::endpoint::MAX_PACKET as u32));
    let prefix = match &link.share_group {
        Some(g) => format!("$share/{g}/"),
        None => String::new(),
    };
    let (client, mut events) = AsyncClient::new(opts, REQUEST_QUEUE);
    // Storing and acknowledging run apart from the event loop: an acknowledgement waits
    // for the event loop to take it, so the loop must keep turning meanwhile.
    let (deliveries, mut to_store) = tokio::sync::mpsc::unbounded_channel::<Publish>();
    let (commands, mut to_send) = tokio::sync::mpsc::unbounded_channel();
    ingest.downlink().attach_broker(commands);
    let pump = tokio::spawn(super::run_pump(ingest.clone(), shutdown.clone()));
    let publisher = client.clone();
    let sender = tokio::spawn(async move {
        while let Some((device, cmd)) = to_send.recv().await {
            let cmd: crate::downlink::Command = cmd;
            let topic = crate::downlink::command_topic(&device);
            if let Err(e) = publisher
                .publish(topic, QoS::AtLeastOnce, false, cmd.encode())
                .await
            {
                tracing::warn!(%device, id = %cmd.id, error = %e, "command not sent; it goes again later");
            }
        }
    });
    let acker = client.clone();
    let storer = tokio::spawn(async move {
        while let Some(p) = to_store.recv().await {
            // Until it is stored: the database may be restarting or failing over. Not
            // acknowledged meanwhile, so a worker stopped here leaves it to the broker.
            let mut attempt = 0;
            loop {
                let (i, p2) = (ingest.clone(), p.clone());
                let stored = tokio::task::spawn_blocking(move || {
                    i.accept(None, &String::from_utf8_lossy(&p2.topic), &p2.payload)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
                match stored {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, attempt, "could not store; trying again (not acknowledged)");
                        let d = crate::backoff::backoff(
                            Duration::from_millis(200),
                            Duration::from_secs(10),
                            attempt,
                        );
                        attempt += 1;
                        tokio::time::sleep(d).await;
                    }
                }
            }
            if acker.ack(&p).await.is_err() {
                return;
            }
        }
    });
    let mut failures = 0;
    let outcome = 'events: loop {
        let ev = tokio::select! {
            ev = events.poll() => ev,
            _ = shutdown.cancelled() => break 'events Ok(()),
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(host = %link.host, port = link.port, group = ?link.share_group, "ingest subscribed to the broker");
                for kind in ["data", "state", "reply", "progress"] {
                    let filter = format!("{prefix}{}/+/{kind}", protocol::TOPIC_ROOT);
                    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        break 'events Err(crate::cloud::CloudError::Broker(e.to_string()));
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = deliveries.send(p);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "broker connection lost");
                let d = crate::backoff::backoff(
                    Duration::from_millis(200),
                    Duration::from_secs(30),
                    failures,
                );
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.cancelled() => break 'events Ok(()),
                }
            }
        }
    };
    drop(deliveries);
    storer.abort();
    let _ = storer.await;
    pump.abort();
    sender.abort();
    outcome
}
