//! Prometheus metrics in the text exposition format, served on a local port
//! (`[gateway] metrics_listen`). Read-only; anything but `GET /metrics` gets a 404.

use super::status::{Status, View};
use std::fmt::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Renders one scrape. Pure, so the format is unit-tested.
pub fn render(s: &Status, now_ns: i64) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(
            o,
            "# HELP fieldgate_{name} {help}\n# TYPE fieldgate_{name} {kind}"
        );
        for (labels, v) in samples {
            let _ = writeln!(o, "fieldgate_{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "buffer_depth",
        "gauge",
        "Samples waiting for the cloud's acknowledgement.",
        &one(s.buffer.depth as f64),
    );
    metric(
        "buffer_bytes",
        "gauge",
        "Bytes the waiting samples take, by the cap's accounting.",
        &one(s.buffer.bytes as f64),
    );
    let age = s
        .buffer
        .oldest_ts_ns
        .map(|t| (now_ns - t).max(0) as f64 / 1e9)
        .unwrap_or(0.0);
    metric(
        "buffer_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting sample.",
        &one(age),
    );
    metric(
        "buffer_dropped_total",
        "counter",
        "Samples dropped at the cap or by age (sent as gap records).",
        &one(s.buffer.dropped as f64),
    );
    metric(
        "buffer_committed_total",
        "counter",
        "Samples committed since start.",
        &one(s.committed as f64),
    );
    metric(
        "buffer_commit_failures_total",
        "counter",
        "Samples that could not be committed (disk full, I/O error).",
        &one(s.commit_failures as f64),
    );
    metric(
        "uplink_connected",
        "gauge",
        "1 while connected to a broker.",
        &one(s.uplink.connected_to.is_some() as u8 as f64),
    );
    metric(
        "uplink_connects_total",
        "counter",
        "Successful connections since start.",
        &one(s.uplink.connects as f64),
    );
    metric(
        "uplink_acked_samples_total",
        "counter",
        "Samples acknowledged by the cloud.",
        &one(s.uplink.acked_samples as f64),
    );
    metric(
        "uplink_acked_batches_total",
        "counter",
        "Batches acknowledged by the cloud.",
        &one(s.uplink.acked_batches as f64),
    );
    metric(
        "uplink_ack_latency_seconds",
        "gauge",
        "Publish to PUBACK of the last batch.",
        &one(s.uplink.last_ack_latency_ms.unwrap_or(0) as f64 / 1000.0),
    );
    let per = |f: &dyn Fn(&crate::field::modbus::poller::DeviceStatus) -> u64| {
        labelled("device", &s.devices, f)
    };
    metric(
        "device_polls_total",
        "counter",
        "Poll rounds per device.",
        &per(&|d| d.polls),
    );
    metric(
        "device_errors_total",
        "counter",
        "Poll rounds in which the device did not answer, per device.",
        &per(&|d| d.errors),
    );
    let can = |f: &dyn Fn(&crate::field::can::bus::CanBusStatus) -> u64| labelled("bus", &s.can, f);
    for (name, help, f) in [
        (
            "can_frames_total",
            "CAN frames received per bus.",
            (|c| c.frames) as fn(&crate::field::can::bus::CanBusStatus) -> u64,
        ),
        (
            "can_unknown_frames_total",
            "CAN frames no DBC message describes.",
            |c| c.unknown,
        ),
        ("can_samples_total", "Samples emitted per CAN bus.", |c| {
            c.samples
        }),
        ("can_error_frames_total", "CAN error frames per bus.", |c| {
            c.error_frames
        }),
        (
            "can_bus_off_total",
            "Times a CAN controller went bus-off.",
            |c| c.bus_off,
        ),
        (
            "can_transfers_dropped_total",
            "J1939 transport transfers given up.",
            |c| c.transfers_dropped,
        ),
    ] {
        metric(name, "counter", help, &can(&f));
    }
    if let Some(u) = &s.update {
        let labels = format!(
            "{{version=\"{}\",phase=\"{}\"}}",
            u.version
                .as_deref()
                .unwrap_or("")
                .replace(['\\', '"', '\n'], "_"),
            u.phase
        );
        metric(
            "update_bytes",
            "gauge",
            "Bytes of the update image downloaded so far (labels: version, phase).",
            &[(labels.clone(), u.bytes as f64)],
        );
        metric(
            "update_image_bytes",
            "gauge",
            "Bytes of the update image in all.",
            &[(labels, u.total as f64)],
        );
    }
    o
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
/// One value per map entry, labelled `{label="name"}` (the name made safe for the format).
fn labelled<T>(
    label: &str,
    map: &std::collections::BTreeMap<String, T>,
    f: &dyn Fn(&T) -> u64,
) -> Vec<(String, f64)> {
    map.iter()
        .map(|(name, st)| {
            (
                format!("{{{label}=\"{}\"}}", name.replace(['\\', '"', '\n'], "_")),
                f(st) as f64,
            )
        })
        .collect()
}

pub async fn serve(listener: tokio::net::TcpListener, view: View, shutdown: CancellationToken) {
    let view = std::sync::Arc::new(view);
    let mut pause = crate::backoff::AcceptPause::default();
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { pause.accepted(); x }
                Err(e) => { pause.failed("metrics", &e).await; continue }
            },
            _ = shutdown.cancelled() => return,
        };
        let view = view.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // Read the request head: at most 8 KiB, within 5 s.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let response = if read.is_ok()
                && (head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?"))
            {
                let body = render(&view.snapshot().await, crate::sample::now_ns());
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut s = Status {
            device_id: "gw".into(),
            buffer: Default::default(),
            committed: 10,
            commit_failures: 0,
            uplink: Default::default(),
            devices: Default::default(),
            can: Default::default(),
            version: "1.5.0".into(),
            update: Some(crate::downlink::Progress {
                v: 1,
                id: "c".into(),
                phase: "downloading".into(),
                version: Some("1.6.0".into()),
                reason: None,
                bytes: 512,
                total: 2048,
                history: vec![],
            }),
        };
        s.buffer.depth = 3;
        s.buffer.oldest_ts_ns = Some(1_000_000_000);
        s.devices.insert("meter".into(), Default::default());
        s.uplink.connected_to = Some("b:8883".into());
        let text = render(&s, 3_000_000_000);
        assert!(text.contains("# TYPE fieldgate_buffer_depth gauge\nfieldgate_buffer_depth 3\n"));
        assert!(text.contains("fieldgate_buffer_oldest_age_seconds 2\n"));
        assert!(text.contains("fieldgate_uplink_connected 1\n"));
        assert!(text.contains("fieldgate_device_polls_total{device=\"meter\"} 0\n"));
        assert!(
            text.contains("fieldgate_update_bytes{version=\"1.6.0\",phase=\"downloading\"} 512\n")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("fieldgate_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
