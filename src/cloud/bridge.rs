//! Ingest behind an existing broker: subscribe to every device's data with QoS 1 and a
//! persistent session, store, then acknowledge (manual acks), so the broker keeps what
//! the ingest has not stored. The broker's ACL binds each device to its own topics.

use super::ingest::SharedStore;
use crate::protocol::{self, Batch, StateMessage, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::path::PathBuf;
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
    pub client_id: String,
}

pub async fn run(
    link: BrokerLink,
    store: SharedStore,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = crate::tls::client_config(&link.ca, &link.cert, &link.key)?;
    let mut opts = MqttOptions::new(link.client_id.clone(), link.host.clone(), link.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(super::ingest::MAX_PACKET, super::ingest::MAX_PACKET);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let mut failures = 0;
    loop {
        let ev = tokio::select! {
            ev = events.poll() => ev,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(host = %link.host, port = link.port, "ingest subscribed to the broker");
                client
                    .subscribe(format!("{}/+/data", protocol::TOPIC_ROOT), QoS::AtLeastOnce)
                    .await?;
                client
                    .subscribe(
                        format!("{}/+/state", protocol::TOPIC_ROOT),
                        QoS::AtLeastOnce,
                    )
                    .await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let (st, topic, payload) = (store.clone(), p.topic.clone(), p.payload.to_vec());
                let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    let mut s = st
                        .lock()
                        .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
                    match protocol::parse_topic(&topic) {
                        Some(Topic::Data(dev)) => match Batch::decode(&payload) {
                            Ok(b) => {
                                s.insert(dev, &b)?;
                            }
                            Err(e) => s.reject(Some(dev), &topic, &e.to_string(), &payload)?,
                        },
                        Some(Topic::State(dev)) => {
                            match serde_json::from_slice::<StateMessage>(&payload) {
                                Ok(m) => s.set_state(dev, &m)?,
                                Err(e) => s.reject(Some(dev), &topic, &e.to_string(), &payload)?,
                            }
                        }
                        None => s.reject(None, &topic, "not a fieldgate topic", &payload)?,
                    }
                    Ok(())
                })
                .await?;
                match stored {
                    Ok(()) => client.ack(&p).await?,
                    // Not acknowledged: the broker delivers it again after a reconnect.
                    Err(e) => {
                        tracing::error!(error = %e, "could not store; leaving unacknowledged")
                    }
                }
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
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}
