//! The ingest behind an existing broker: Mosquitto with client certificates,
//! `use_identity_as_username` and an ACL that confines each device to its own topics;
//! the ingest subscribes with QoS 1 and acknowledges only what it stored.

mod common;
use common::*;
use rumqttc::QoS;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_data_flows_through_mosquitto_and_acl_confines_devices() {
    need("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("cloud");
    let (pki, store) =
        fieldgate::cloud::open(&data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    pki.dev_cert(&"gw-m1".parse().unwrap(), &d.join("certs"))
        .unwrap();
    pki.dev_cert(&"gw-m2".parse().unwrap(), &d.join("m2"))
        .unwrap();
    pki.dev_cert(&"fieldgate-ingest".parse().unwrap(), &d.join("ingest"))
        .unwrap();

    let broker = Mosquitto::start(&d.join("broker"), &pki, &shipped_acl());
    let port = broker.port;

    let (stop, ingest) = bridge(&broker, &pki, &d.join("ingest"), store);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The real gateway publishes through the broker.
    let (_peer, mport) = modbus_peer_tcp(&constant_points(3), d);
    let cfg = gateway_config(
        d,
        "gw-m1",
        &[format!("127.0.0.1:{port}")],
        "",
        &constant_bus(mport, 3, "200ms"),
    );
    let _gw = gateway(&cfg);
    let query =
        || fieldgate::cloud::store::Store::open(&fieldgate::cloud::store_path(&data)).unwrap();
    wait_for(
        "gateway data through mosquitto",
        Duration::from_secs(20),
        || query().count("gw-m1").unwrap() >= 9,
    );
    let rows = query().query("gw-m1", Some("dev/p2"), None, 10).unwrap();
    assert_eq!(rows[0].value, serde_json::json!(1002));

    // gw-m2's certificate writing into gw-m1's stream: the broker's ACL drops it.
    let (client, mut ev) = mqtt_client(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "gw-m2",
        &d.join("m2/ca.crt"),
        Some((&d.join("m2/device.crt"), &d.join("m2/device.key"))),
    );
    client
        .publish(
            "fg/v1/gw-m1/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(999_999, "evil/p", 66.0),
        )
        .await
        .unwrap();
    let _ = until_puback(&mut ev).await;
    client
        .publish(
            "fg/v1/gw-m2/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(1, "own/p", 1.0),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.unwrap();
    wait_for("gw-m2's own sample", Duration::from_secs(10), || {
        query().count("gw-m2").unwrap() == 1
    });
    assert!(
        query()
            .query("gw-m1", Some("evil/p"), None, 10)
            .unwrap()
            .is_empty(),
        "the forged sample never reached gw-m1's stream"
    );

    // gw-m2 revoked while still connected to the broker: nothing it sends after that is
    // stored, and each refusal is kept with its reason.
    fieldgate::cloud::registry::Registry::with(
        fieldgate::cloud::sql::Db::sqlite(&fieldgate::cloud::store_path(&data)).unwrap(),
    )
    .unwrap()
    .revoke("gw-m2", "reported stolen")
    .unwrap();
    client
        .publish(
            "fg/v1/gw-m2/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(2, "own/p", 2.0),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.unwrap();
    wait_for(
        "the revoked device's delivery refused",
        Duration::from_secs(10),
        || {
            query()
                .rejections(10)
                .unwrap()
                .iter()
                .any(|(d, _, why)| d.as_deref() == Some("gw-m2") && why.starts_with("revoked"))
        },
    );
    assert_eq!(
        query().count("gw-m2").unwrap(),
        1,
        "only the sample from before"
    );
    stop.cancel();
    let _ = ingest.await;
    drop(broker);
}

/// Ingest is written once: the same deliveries through the embedded endpoint and through
/// Mosquitto to the bridge come to the same stored samples, gaps, state and refusals
/// (with the same reasons).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_and_the_bridge_give_the_same_outcomes() {
    use fieldgate::protocol::{Batch, Gap};
    need("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let batch = |first: u64, gaps: Vec<Gap>| {
        Batch {
            samples: (first..first + 3)
                .map(|s| float_sample(s, "m/p", fieldgate::sample::now_ns(), s as f64))
                .collect(),
            gaps,
        }
        .encode()
    };
    // (topic kind, payload): what a device may send, good and bad.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("data", batch(1, vec![])),
        ("data", batch(1, vec![])),
        ("data", b"\x01not postcard at all".to_vec()),
        ("data", vec![]),
        ("data", vec![99, 0, 0, 0]),
        ("data", batch(10, vec![Gap { first: 4, last: 9 }])),
        ("state", br#"{"state":"online","version":"0.2.0"}"#.to_vec()),
        ("state", b"{not json".to_vec()),
        // A reply to a command this device was never sent: ignored; a broken one: kept.
        ("reply", br#"{"v":1,"id":"cmd-x","status":"done"}"#.to_vec()),
        ("reply", br#"{"v":1,"status":"done"}"#.to_vec()),
    ];

    // The embedded endpoint: a PUBACK is written after the delivery is stored.
    let embedded = Cloud::start(&d.join("embedded")).await;
    embedded.dev_cert("gw-same", &d.join("certs-a"));
    send_as_gw_same(embedded.addr, &d.join("certs-a"), &cases).await;

    // The bridge behind Mosquitto.
    let data = d.join("bridged");
    let (pki, ingest) =
        fieldgate::cloud::open(&data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    pki.dev_cert(&"gw-same".parse().unwrap(), &d.join("certs-b"))
        .unwrap();
    pki.dev_cert(&"fieldgate-ingest".parse().unwrap(), &d.join("ingest"))
        .unwrap();
    let broker = Mosquitto::start(&d.join("broker"), &pki, &shipped_acl());
    let (stop, bridge) = bridge(&broker, &pki, &d.join("ingest"), ingest);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = format!("127.0.0.1:{}", broker.port).parse().unwrap();
    send_as_gw_same(at, &d.join("certs-b"), &cases).await;

    type Seen = (
        Vec<(u64, String, serde_json::Value)>,
        Vec<(u64, u64)>,
        Option<String>,
        Vec<(Option<String>, String, String)>,
    );
    let seen = |dir: &std::path::Path| -> Seen {
        let s = fieldgate::cloud::store::Store::open(&fieldgate::cloud::store_path(dir)).unwrap();
        (
            s.query("gw-same", None, None, 100)
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.point, r.value))
                .collect(),
            s.gaps("gw-same")
                .unwrap()
                .into_iter()
                .map(|g| (g.first, g.last))
                .collect(),
            s.state("gw-same").unwrap(),
            s.rejections(100).unwrap(),
        )
    };
    let want = seen(&d.join("embedded"));
    assert_eq!(
        want.0.len(),
        6,
        "two batches of three, the repeat once: {want:?}"
    );
    assert_eq!(want.1, vec![(4, 9)]);
    assert_eq!(want.2.as_deref(), Some("online"));
    assert_eq!(want.3.len(), 5, "{:?}", want.3);
    wait_for(
        "the bridge to store the same",
        Duration::from_secs(20),
        || seen(&data) == want,
    );
    stop.cancel();
    let _ = bridge.await;
}

/// Publishes `cases` (topic kind, payload) as gw-same with the certificates in `certs`,
/// each waiting for its PUBACK.
async fn send_as_gw_same(
    addr: std::net::SocketAddr,
    certs: &std::path::Path,
    cases: &[(&str, Vec<u8>)],
) {
    let (client, mut ev) = mqtt_client(
        addr,
        "gw-same",
        &certs.join("ca.crt"),
        Some((&certs.join("device.crt"), &certs.join("device.key"))),
    );
    for (kind, payload) in cases {
        client
            .publish(
                format!("fg/v1/gw-same/{kind}"),
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await
            .unwrap();
        until_puback(&mut ev).await.unwrap();
    }
}
