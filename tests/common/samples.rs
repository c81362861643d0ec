//! Sample and batch builders, an MQTT client, a clock that is always synced.

use super::*;

/// An MQTT client over TLS to `addr` trusting `ca`, with a client certificate if given.
pub fn mqtt_client(
    addr: SocketAddr,
    id: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    fieldgate::install_crypto_provider();
    let tls = match cert {
        Some((c, k)) => fieldgate::tls::client_config(ca, c, k).unwrap(),
        None => std::sync::Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(fieldgate::tls::root_store(ca).unwrap())
                .with_no_client_auth(),
        ),
    };
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ))
    .set_max_packet_size(1 << 20, 1 << 20)
    .set_keep_alive(Duration::from_secs(5));
    rumqttc::AsyncClient::new(o, 16)
}

/// Polls the event loop until a PUBACK arrives (Ok) or the connection fails (Err).
pub async fn until_puback(ev: &mut rumqttc::EventLoop) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ev.poll()).await {
            Err(_) => return Err("timed out".into()),
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// A valid one-sample data payload.
pub fn one_sample_batch(seq: u64, point: &str, v: f64) -> Vec<u8> {
    fieldgate::protocol::Batch {
        samples: vec![float_sample(seq, point, fieldgate::sample::now_ns(), v)],
        gaps: vec![],
    }
    .encode()
}

/// A good float sample, taken on a synchronised clock, with its sequence number.
pub fn float_sample(
    seq: u64,
    point: impl Into<String>,
    ts_ns: i64,
    v: f64,
) -> fieldgate::protocol::Sequenced {
    use fieldgate::sample::*;
    fieldgate::protocol::Sequenced {
        seq,
        sample: Sample {
            point: point.into(),
            ts_ns,
            value: Value::Float(v),
            quality: Quality::Good,
            time: TimeQuality::Synced,
        },
    }
}

pub fn always_synced() -> std::sync::Arc<fieldgate::clock::Clock> {
    std::sync::Arc::new(fieldgate::clock::Clock::new(
        fieldgate::clock::SyncCheck::Always,
    ))
}
