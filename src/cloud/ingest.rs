//! The embedded MQTT ingest endpoint: MQTT 3.1.1 over mutual TLS, terminated here.
//!
//! Why not an embedded general broker: the device id must come from the client
//! certificate and bind the topics a connection may publish to, and a PUBACK must mean
//! "stored on disk". Terminating MQTT here does both with no extra moving part: the CN of
//! the verified certificate is the device id, any publish outside `fg/v1/{cn}/` closes
//! the connection, and the PUBACK is written only after the SQLite commit. Packet codecs
//! come from rumqttc's `mqttbytes`.

use super::store::Store;
use crate::protocol::{self, Batch, StateMessage, Topic};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
use rumqttc::mqttbytes::QoS;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The largest MQTT packet accepted: the payload limit plus room for the topic.
pub const MAX_PACKET: usize = protocol::MAX_PAYLOAD + 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type SharedStore = Arc<Mutex<Store>>;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("the client certificate has no usable common name (device id)")]
    NoDeviceId,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT: {0:?}")]
    Mqtt(rumqttc::mqttbytes::Error),
    #[error("first packet was not CONNECT")]
    NotConnect,
    #[error("device {device} tried to publish to `{topic}`, outside its own topics")]
    ForeignTopic { device: String, topic: String },
    #[error("unsupported packet {0}")]
    Unsupported(&'static str),
    #[error("store: {0}")]
    Store(String),
}

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: SharedStore,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (acceptor, store, shutdown) = (acceptor.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Err(_) => return tracing::info!(%peer, "refused: TLS handshake timed out"),
                Ok(Err(e)) => {
                    return tracing::info!(%peer, error = %e, "refused: TLS handshake failed")
                }
                Ok(Ok(s)) => s,
            };
            let device = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| device_id_of(der.as_ref()));
            let Some(device) = device else {
                return tracing::warn!(%peer, "refused: {}", SessionError::NoDeviceId);
            };
            let revoked = store.lock().ok().and_then(|s| {
                let r = s.revoked(&device).ok().flatten();
                if let Some(reason) = &r {
                    let _ = s.record_refusal(
                        &device,
                        &format!("revoked: connection refused ({reason})"),
                        &peer.to_string(),
                    );
                }
                r
            });
            if let Some(reason) = revoked {
                // Closing before CONNACK: the client sees the connection refused.
                return tracing::warn!(%peer, device = %device, reason = %reason, "refused: the device is revoked");
            }
            if let Ok(s) = store.lock() {
                if let Err(e) = s.watch_connect(&device, peer.ip()) {
                    tracing::warn!(device = %device, error = %e, "device watch failed");
                }
            }
            let result = tokio::select! {
                r = session(&device, store, tls) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(%peer, device = %device, error = %e, "session closed");
            }
        });
    }
}

/// Serves one authenticated device on `io` (the TLS stream after the handshake) until it
/// disconnects; on an unclean end its last will is recorded. Public for the fuzzer.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    device: &str,
    store: SharedStore,
    io: S,
) -> Result<(), SessionError> {
    let mut s = Session {
        device: device.to_string(),
        store,
        will: None,
    };
    let r = s.run(io).await;
    if r.is_err() {
        s.fire_will().await;
    }
    r
}

/// The device id a certificate proves: its subject's CN, if it is a valid id.
pub fn device_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    protocol::valid_device_id(cn).then(|| cn.to_string())
}

struct Session {
    device: String,
    store: SharedStore,
    /// The last will, stored if the connection ends without DISCONNECT.
    will: Option<StateMessage>,
}

impl Session {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: S,
    ) -> Result<(), SessionError> {
        let mut buf = BytesMut::with_capacity(8192);
        let mut out = BytesMut::new();
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, next_packet(&mut io, &mut buf))
            .await
            .map_err(|_| SessionError::Timeout)??;
        let Some(Packet::Connect(connect)) = first else {
            return Err(SessionError::NotConnect);
        };
        let keep_alive = Duration::from_secs(connect.keep_alive.max(5) as u64 * 3 / 2);
        self.will = connect.last_will.and_then(|w| {
            (w.topic == protocol::state_topic(&self.device))
                .then(|| serde_json::from_slice(&w.message).ok())
                .flatten()
        });
        send(
            &mut io,
            &mut out,
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
        )
        .await?;
        tracing::info!(device = %self.device, client_id = %connect.client_id, "device connected");
        loop {
            let packet =
                match tokio::time::timeout(keep_alive, next_packet(&mut io, &mut buf)).await {
                    Err(_) => return Err(SessionError::Timeout),
                    Ok(Ok(None)) => {
                        return Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                    }
                    Ok(r) => r?.ok_or(SessionError::NotConnect)?,
                };
            match packet {
                Packet::Publish(p) => {
                    let topic = p.topic.clone();
                    let ok = match protocol::parse_topic(&topic) {
                        Some(Topic::Data(d)) if d == self.device => {
                            self.store_data(&topic, p.payload.to_vec()).await?;
                            true
                        }
                        Some(Topic::State(d)) if d == self.device => {
                            self.store_state(&topic, &p.payload).await?;
                            true
                        }
                        _ => false,
                    };
                    if !ok {
                        let dev = self.device.clone();
                        let reason = format!("publish outside the device's own topics: {topic}");
                        let st = self.store.clone();
                        let payload = p.payload.to_vec();
                        let _ = tokio::task::spawn_blocking(move || {
                            st.lock()
                                .map(|s| s.reject(Some(&dev), &topic, &reason, &payload))
                                .ok()
                        })
                        .await;
                        return Err(SessionError::ForeignTopic {
                            device: self.device.clone(),
                            topic: p.topic,
                        });
                    }
                    if p.qos != QoS::AtMostOnce {
                        send(&mut io, &mut out, Packet::PubAck(PubAck::new(p.pkid))).await?;
                    }
                }
                Packet::PingReq => send(&mut io, &mut out, Packet::PingResp).await?,
                Packet::Disconnect => {
                    tracing::info!(device = %self.device, "device disconnected");
                    return Ok(());
                }
                Packet::Subscribe(_) => return Err(SessionError::Unsupported("SUBSCRIBE")),
                Packet::Connect(_) => return Err(SessionError::Unsupported("second CONNECT")),
                Packet::PubRel(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                    return Err(SessionError::Unsupported("QoS 2"))
                }
                _ => {}
            }
        }
    }

    /// Decodes and stores a data payload; a payload that cannot be decoded is kept in the
    /// rejected table with the reason and acknowledged, so it cannot block the stream.
    async fn store_data(&self, topic: &str, payload: Vec<u8>) -> Result<(), SessionError> {
        let (st, dev, topic) = (self.store.clone(), self.device.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            let mut s = st.lock().map_err(|_| SessionError::Store("store lock poisoned".into()))?;
            match Batch::decode(&payload) {
                Ok(batch) => {
                    let n = s.insert(&dev, &batch).map_err(|e| SessionError::Store(e.to_string()))?;
                    tracing::debug!(device = %dev, new = n.new, duplicates = n.duplicates, gaps = n.gaps, "batch stored");
                    let now = crate::sample::now_ns();
                    let live = batch
                        .samples
                        .iter()
                        .filter(|s| (now - s.sample.ts_ns).abs() <= crate::cloud::watch::LIVE_NS)
                        .count() as u64;
                    if let Err(e) = s.watch_samples(&dev, live) {
                        tracing::warn!(device = %dev, error = %e, "device watch failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(device = %dev, error = %e, "payload refused");
                    s.reject(Some(&dev), &topic, &e.to_string(), &payload).map_err(|e| SessionError::Store(e.to_string()))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| SessionError::Store(e.to_string()))?
    }

    async fn store_state(&self, topic: &str, payload: &[u8]) -> Result<(), SessionError> {
        let parsed: Result<StateMessage, _> = serde_json::from_slice(payload);
        let (st, dev, topic, payload) = (
            self.store.clone(),
            self.device.clone(),
            topic.to_string(),
            payload.to_vec(),
        );
        tokio::task::spawn_blocking(move || {
            let s = st
                .lock()
                .map_err(|_| SessionError::Store("store lock poisoned".into()))?;
            match parsed {
                Ok(m) => s.set_state(&dev, &m),
                Err(e) => s.reject(
                    Some(&dev),
                    &topic,
                    &format!("state message is not valid JSON: {e}"),
                    &payload,
                ),
            }
            .map_err(|e| SessionError::Store(e.to_string()))
        })
        .await
        .map_err(|e| SessionError::Store(e.to_string()))?
    }

    async fn fire_will(&mut self) {
        if let Some(w) = self.will.take() {
            let (st, dev) = (self.store.clone(), self.device.clone());
            let _ =
                tokio::task::spawn_blocking(move || st.lock().map(|s| s.set_state(&dev, &w)).ok())
                    .await;
        }
    }
}

/// Reads the next packet; None at a clean end of stream.
async fn next_packet<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<Packet>, SessionError> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(p) => return Ok(Some(p)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(SessionError::Mqtt(e)),
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut BytesMut,
    p: Packet,
) -> Result<(), SessionError> {
    out.clear();
    p.write(out, MAX_PACKET).map_err(SessionError::Mqtt)?;
    io.write_all(out).await?;
    io.flush().await?;
    Ok(())
}
