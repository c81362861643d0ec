//! The embedded MQTT ingest endpoint: MQTT 3.1.1 over mutual TLS, terminated here.
//!
//! Why not an embedded general broker: the device id must come from the client
//! certificate and bind the topics a connection may publish to, and a PUBACK must mean
//! "stored on disk". Terminating MQTT here does both with no extra moving part: the CN of
//! the verified certificate is the device id, any publish outside `fg/v1/{cn}/` closes
//! the connection, and the PUBACK is written only after the commit. Packet codecs come
//! from rumqttc's `mqttbytes`.
//!
//! The session is a state machine without I/O (`Session`): packets in, steps out. The
//! shell around it (`session`) reads and writes the stream and runs `Ingest::accept` on
//! the blocking pool.
//!
//! The downlink rides on the same session: a device may subscribe to its own command
//! topic (`fg/v1/{cn}/cmd`) and nothing else; a subscription to any other topic is
//! refused in the SUBACK. Its commands are written to it as QoS 1 publishes.

use super::{device_id_of, Ingest, IngestError, Outcome, Reject};
use crate::downlink::Command;
use crate::ids::DeviceId;
use crate::protocol::{self, StateMessage};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The largest MQTT packet accepted: the payload limit plus room for the topic.
pub const MAX_PACKET: usize = protocol::MAX_PAYLOAD + 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    ForeignTopic { device: DeviceId, topic: String },
    #[error("unsupported packet {0}")]
    Unsupported(&'static str),
    #[error("store: {0}")]
    Store(#[from] IngestError),
    #[error("the ingest task failed: {0}")]
    Task(String),
}

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut pause = crate::backoff::AcceptPause::default();
    tokio::spawn(super::run_pump(ingest.clone(), shutdown.clone()));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { pause.accepted(); x }
                Err(e) => { pause.failed("ingest", &e).await; continue }
            },
            _ = shutdown.cancelled() => return,
        };
        let (acceptor, ingest, shutdown) = (acceptor.clone(), ingest.clone(), shutdown.clone());
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
            let (i, d) = (ingest.clone(), device.clone());
            match tokio::task::spawn_blocking(move || i.connected(&d, peer)).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(reason))) => {
                    // Closing before CONNACK: the client sees the connection refused.
                    return tracing::warn!(%peer, device = %device, reason = %reason, "refused: the device is revoked");
                }
                Ok(Err(e)) => {
                    return tracing::warn!(%peer, device = %device, error = %e, "refused: the registry cannot be read")
                }
                Err(e) => {
                    return tracing::warn!(%peer, error = %e, "refused: the ingest task failed")
                }
            }
            let result = tokio::select! {
                r = session(device.clone(), ingest, tls) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(%peer, device = %device, error = %e, "session closed");
            }
        });
    }
}

/// What the session asks its shell to do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Write this packet.
    Send(Packet),
    /// Hand this publish to `Ingest::accept`, then report with `Session::accepted`.
    Deliver {
        topic: String,
        payload: bytes::Bytes,
        pkid: u16,
        qos: QoS,
    },
    /// Read on.
    Wait,
    /// The device said goodbye: close without its will.
    Done,
}

/// One device's MQTT session, without I/O.
#[derive(Debug)]
pub struct Session {
    device: DeviceId,
    connected: bool,
    /// It subscribed to its command topic.
    subscribed: bool,
    /// The packet id of the last command sent.
    pkid: u16,
    /// Stored if the connection ends without DISCONNECT.
    will: Option<StateMessage>,
    /// The keep-alive the client asked for, with the spec's grace of one half.
    pub keep_alive: Duration,
}

impl Session {
    pub fn new(device: DeviceId) -> Session {
        Session {
            device,
            connected: false,
            subscribed: false,
            pkid: 0,
            will: None,
            keep_alive: HANDSHAKE_TIMEOUT,
        }
    }

    /// The next packet from the device.
    pub fn received(&mut self, packet: Packet) -> Result<Step, SessionError> {
        if !self.connected {
            let Packet::Connect(connect) = packet else {
                return Err(SessionError::NotConnect);
            };
            self.connected = true;
            self.keep_alive = Duration::from_secs(connect.keep_alive.max(5) as u64 * 3 / 2);
            self.will = connect.last_will.and_then(|w| {
                (w.topic == protocol::state_topic(&self.device))
                    .then(|| serde_json::from_slice(&w.message).ok())
                    .flatten()
            });
            tracing::info!(device = %self.device, client_id = %connect.client_id, "device connected");
            return Ok(Step::Send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            ))));
        }
        match packet {
            Packet::Publish(p) => Ok(Step::Deliver {
                topic: p.topic,
                payload: p.payload,
                pkid: p.pkid,
                qos: p.qos,
            }),
            Packet::PingReq => Ok(Step::Send(Packet::PingResp)),
            Packet::Disconnect => {
                tracing::info!(device = %self.device, "device disconnected");
                self.will = None;
                Ok(Step::Done)
            }
            Packet::Subscribe(sub) => {
                let own = crate::downlink::command_topic(&self.device);
                let codes = sub
                    .filters
                    .iter()
                    .map(|f| {
                        if f.path == own {
                            self.subscribed = true;
                            SubscribeReasonCode::Success(QoS::AtLeastOnce)
                        } else {
                            tracing::warn!(device = %self.device, topic = %f.path, "subscription refused: not the device's own command topic");
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                Ok(Step::Send(Packet::SubAck(SubAck::new(sub.pkid, codes))))
            }
            Packet::Unsubscribe(u) => {
                let own = crate::downlink::command_topic(&self.device);
                if u.topics.contains(&own) {
                    self.subscribed = false;
                }
                Ok(Step::Send(Packet::UnsubAck(UnsubAck::new(u.pkid))))
            }
            // A command arrived; its reply is what settles it.
            Packet::PubAck(_) => Ok(Step::Wait),
            Packet::Connect(_) => Err(SessionError::Unsupported("second CONNECT")),
            Packet::PubRel(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                Err(SessionError::Unsupported("QoS 2"))
            }
            _ => Ok(Step::Wait),
        }
    }

    /// What `Ingest::accept` made of the delivery `pkid`: the acknowledgement, or the
    /// end of a session that published outside its topics.
    pub fn accepted(
        &mut self,
        topic: &str,
        pkid: u16,
        qos: QoS,
        outcome: &Outcome,
    ) -> Result<Step, SessionError> {
        if let Outcome::Rejected(Reject::ForeignTopic(_)) = outcome {
            return Err(SessionError::ForeignTopic {
                device: self.device.clone(),
                topic: topic.to_string(),
            });
        }
        Ok(if qos == QoS::AtMostOnce {
            Step::Wait
        } else {
            Step::Send(Packet::PubAck(PubAck::new(pkid)))
        })
    }

    /// Whether the device reads its commands on this session.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// The packet that carries `cmd` to the device, if it subscribed.
    pub fn command(&mut self, cmd: &Command) -> Option<Packet> {
        if !self.subscribed {
            return None;
        }
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        let mut p = Publish::new(
            crate::downlink::command_topic(&self.device),
            QoS::AtLeastOnce,
            cmd.encode(),
        );
        p.pkid = self.pkid;
        Some(Packet::Publish(p))
    }

    /// The last will, once, if the session ended without DISCONNECT.
    pub fn take_will(&mut self) -> Option<StateMessage> {
        self.will.take()
    }
}

/// Serves one authenticated device on `io` (the TLS stream after the handshake) until it
/// disconnects; on an unclean end its last will is recorded. Public for the fuzzer.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    device: DeviceId,
    ingest: Arc<Ingest>,
    mut io: S,
) -> Result<(), SessionError> {
    let mut s = Session::new(device.clone());
    let r = run(&mut s, &ingest, &mut io).await;
    if let Some(will) = s.take_will() {
        let dev = device;
        let _ = tokio::task::spawn_blocking(move || ingest.will(&dev, &will)).await;
    }
    r
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    ingest: &Arc<Ingest>,
    io: &mut S,
) -> Result<(), SessionError> {
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    let r = serve_packets(s, ingest, io, &tx, &mut commands).await;
    ingest.downlink().detach(&s.device, &tx);
    r
}

/// Sends what the downlink has due now (off the async threads).
async fn pump(ingest: &Arc<Ingest>) {
    let d = ingest.downlink().clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.pump()).await {
        tracing::warn!(error = %e, "downlink pump failed");
    }
}

async fn serve_packets<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    ingest: &Arc<Ingest>,
    io: &mut S,
    tx: &tokio::sync::mpsc::UnboundedSender<Command>,
    commands: &mut tokio::sync::mpsc::UnboundedReceiver<Command>,
) -> Result<(), SessionError> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = BytesMut::new();
    loop {
        let packet = tokio::select! {
            read = tokio::time::timeout(s.keep_alive, next_packet(io, &mut buf)) => match read {
                Err(_) => return Err(SessionError::Timeout),
                Ok(Ok(None)) => return Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(r) => r?.ok_or(SessionError::NotConnect)?,
            },
            Some(cmd) = commands.recv() => {
                if let Some(p) = s.command(&cmd) {
                    tracing::debug!(device = %s.device, id = %cmd.id, kind = %cmd.kind, "command sent");
                    send(io, &mut out, p).await?;
                }
                continue;
            }
        };
        let was_subscribed = s.subscribed();
        let mut step = s.received(packet)?;
        if let Step::Deliver {
            topic,
            payload,
            pkid,
            qos,
        } = step
        {
            let (i, d, t) = (ingest.clone(), s.device.clone(), topic.clone());
            let outcome = tokio::task::spawn_blocking(move || i.accept(Some(&d), &t, &payload))
                .await
                .map_err(|e| SessionError::Task(e.to_string()))??;
            step = s.accepted(&topic, pkid, qos, &outcome)?;
            if outcome == Outcome::State && s.subscribed() {
                pump(ingest).await;
            }
        }
        match step {
            Step::Send(p) => send(io, &mut out, p).await?,
            Step::Done => return Ok(()),
            Step::Wait | Step::Deliver { .. } => {}
        }
        if s.subscribed() && !was_subscribed {
            ingest.downlink().attach(&s.device, tx.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{Connect, LastWill, Publish};

    fn connect(will: Option<LastWill>) -> Packet {
        let mut c = Connect::new("gw-1");
        c.keep_alive = 30;
        c.last_will = will;
        Packet::Connect(c)
    }

    #[test]
    fn the_session_connects_then_delivers_and_acknowledges_after_the_outcome() {
        let mut s = Session::new(DeviceId::parse("gw").unwrap());
        assert!(matches!(
            s.received(Packet::PingReq),
            Err(SessionError::NotConnect)
        ));
        let mut s = Session::new(DeviceId::parse("gw").unwrap());
        let will = LastWill::new(
            protocol::state_topic("gw"),
            br#"{"state":"offline"}"#.to_vec(),
            QoS::AtLeastOnce,
            true,
        );
        assert!(matches!(
            s.received(connect(Some(will))).unwrap(),
            Step::Send(Packet::ConnAck(_))
        ));
        assert_eq!(s.keep_alive, Duration::from_secs(45));
        let mut p = Publish::new("fg/v1/gw/data", QoS::AtLeastOnce, vec![1u8]);
        p.pkid = 7;
        let Step::Deliver {
            topic, pkid, qos, ..
        } = s.received(Packet::Publish(p)).unwrap()
        else {
            panic!("a publish is delivered");
        };
        let ack = s
            .accepted(&topic, pkid, qos, &Outcome::Rejected(Reject::NotOurs))
            .unwrap();
        assert_eq!(ack, Step::Send(Packet::PubAck(PubAck::new(7))));
        let foreign = Outcome::Rejected(Reject::ForeignTopic("fg/v1/other/data".into()));
        assert!(matches!(
            s.accepted("fg/v1/other/data", 8, QoS::AtLeastOnce, &foreign),
            Err(SessionError::ForeignTopic { .. })
        ));
        assert_eq!(
            s.received(Packet::PingReq).unwrap(),
            Step::Send(Packet::PingResp)
        );
        assert!(matches!(
            s.received(connect(None)),
            Err(SessionError::Unsupported("second CONNECT"))
        ));
        // A lost connection leaves the will; DISCONNECT drops it.
        assert_eq!(s.take_will().map(|w| w.state), Some("offline".to_string()));
        let mut s = Session::new(DeviceId::parse("gw").unwrap());
        let will = LastWill::new(
            protocol::state_topic("gw"),
            br#"{"state":"offline"}"#.to_vec(),
            QoS::AtLeastOnce,
            true,
        );
        s.received(connect(Some(will))).unwrap();
        assert_eq!(s.received(Packet::Disconnect).unwrap(), Step::Done);
        assert_eq!(s.take_will(), None);
    }
}
