//! Acceptance 6: bad input of every kind gets a clear error and no panic: configs,
//! unreachable devices, exceptions, garbage and truncated responses, a broker refusing
//! the connection, malformed and oversize payloads at the ingest.

mod common;
use common::*;
use rumqttc::QoS;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn check_names_file_line_and_field_for_every_bad_fixture() {
    let fixtures = root().join("tests/fixtures/config");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue; // the DBC files the CAN fixtures name
        }
        let out = fieldgate_cmd()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        let line = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap()[10..]
            .split(':')
            .next()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("{}:{line}:", path.display())),
            "{}: {err}",
            path.display()
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let ok = fieldgate_cmd()
        .args(["check", "--config-only", "--config"])
        .arg(root().join("config/gateway.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("device meter every 1s: 2 points in 1 request(s)"),
        "{text}"
    );
    let missing = fieldgate_out(&["check", "--config", "/nonexistent/gw.toml"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/gw.toml:0:0: cannot read")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_devices_and_a_refusing_broker_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::start(&d.join("cloud")).await;
    // The gateway's certificate comes from another CA: the broker refuses the handshake.
    let other = Cloud::start(&d.join("other")).await;
    other.dev_cert("gw-bad", &d.join("certs"));
    std::fs::copy(d.join("cloud/pki/ca.crt"), d.join("certs/ca.crt")).unwrap();
    let dead_port = free_port();
    let buses = format!(
        "[[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{dead_port}\" }}\ntimeout = \"200ms\"\n\
         [[bus.device]]\nname = \"gone\"\npoll_interval = \"100ms\"\n\
         [[bus.device.point]]\nname = \"v\"\nfunction = \"input_register\"\naddress = 0\ntype = \"u16\"\n\
         [[bus]]\nname = \"serial\"\nrtu = {{ port = \"{}/no-such-tty\" }}\n\
         [[bus.device]]\nname = \"unplugged\"\nunit = 3\n\
         [[bus.device.point]]\nname = \"v\"\nfunction = \"input_register\"\naddress = 0\ntype = \"u16\"\n",
        d.display()
    );
    let cfg = gateway_config(d, "gw-bad", &[cloud.addr.to_string()], "", &buses);
    let mut gw = Proc(
        fieldgate_cmd()
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut st = serde_json::Value::Null;
    wait_for("errors in the status", Duration::from_secs(15), || {
        st = status(d).unwrap_or_default();
        st["devices"]["gone"]["last_error"].is_string()
            && st["devices"]["unplugged"]["last_error"].is_string()
            && st["uplink"]["last_error"].is_string()
    });
    let gone = st["devices"]["gone"]["last_error"].as_str().unwrap();
    assert!(gone.contains("Connection refused"), "{gone}");
    let unplugged = st["devices"]["unplugged"]["last_error"].as_str().unwrap();
    assert!(
        unplugged.contains("cannot open serial port") && unplugged.contains("no-such-tty"),
        "{unplugged}"
    );
    let link = st["uplink"]["last_error"].as_str().unwrap();
    assert!(
        link.contains(&cloud.addr.to_string()) && link.to_lowercase().contains("alert"),
        "{link}"
    );
    // The human view says the same.
    let human = fieldgate_cmd()
        .args(["status", "--socket"])
        .arg(d.join("state/status.sock"))
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("DISCONNECTED") && human.contains("device gone"),
        "{human}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.signal("TERM");
    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    let mut log = String::new();
    gw.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(exit.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // A dead device logs once when it goes away, not once per poll.
    let lines = log
        .lines()
        .filter(|l| l.contains("bus unreachable"))
        .count();
    assert!(
        lines <= 2,
        "{lines} lines about the unreachable bus:\n{log}"
    );
}

/// A fake device that answers every request with garbage, a truncated frame, a frame with
/// a lying length, or nothing, then hangs up.
fn garbage_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let answers: [&[u8]; 5] = [
            b"\xde\xad\xbe\xef garbage that is not modbus at all",
            &[0, 1, 0, 0],                      // truncated MBAP header
            &[0, 1, 0, 0, 0, 200, 1, 3, 2, 0],  // length says 200, 4 follow
            &[0, 1, 0, 0, 0, 5, 1, 3, 9, 0, 1], // byte count 9, 2 data bytes
            b"",
        ];
        for (i, stream) in l.incoming().enumerate() {
            let Ok(mut s) = stream else { continue };
            let mut req = [0u8; 260];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.read(&mut req).unwrap_or(0) > 0 {
                let _ = s.write_all(answers[i % answers.len()]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    port
}

#[tokio::test]
async fn garbage_and_truncated_responses_mark_points_bad_and_polling_goes_on() {
    use fieldgate::config::GatewayConfig;
    use fieldgate::field::modbus::poller::BusPoller;
    let port = garbage_server();
    let text = format!(
        "[gateway]\ndevice_id = \"gw\"\n[uplink]\nbrokers = [\"127.0.0.1:1\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\ntimeout = \"200ms\"\nretries = 0\n\
         [[bus.device]]\nname = \"liar\"\npoll_interval = \"50ms\"\n\
         [[bus.device.point]]\nname = \"a\"\nfunction = \"holding_register\"\naddress = 0\ntype = \"u16\"\n\
         [[bus.device.point]]\nname = \"b\"\nfunction = \"holding_register\"\naddress = 1\ntype = \"f32\"\n"
    );
    let cfg = GatewayConfig::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let status = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
    let poller = BusPoller::new(cfg.bus[0].get_ref(), status.clone(), always_synced());
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(poller.run(tx, stop.clone()));
    let mut qualities = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline && status.lock().unwrap()["liar"].polls < 6 {
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            for fieldgate::buffer::Entry { sample: s, .. } in batch {
                assert!(!s.quality.is_good(), "{s:?}");
                qualities.insert(s.quality.to_string());
            }
        }
    }
    let polls = status.lock().unwrap()["liar"].polls;
    assert!(polls >= 4, "polling went on: {polls} rounds");
    assert!(!task.is_finished(), "the poller must not die on garbage");
    stop.cancel();
    task.await.expect("no panic");
    println!("qualities seen: {qualities:?}");
}

#[tokio::test]
async fn modbus_read_shows_exceptions_and_timeouts_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port) = modbus_peer_tcp(&constant_points(2), dir.path());
    let tcp = format!("127.0.0.1:{port}");
    let out = fieldgate_out(&["modbus", "read", "--tcp", &tcp, "--address", "50"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exception 0x02 (illegal data address)"));
    let out = fieldgate_out(&[
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--address",
        "0",
        "--count",
        "2",
        "--type",
        "u32",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    // registers 1000, 1001: ABCD = 1000 << 16 | 1001, CDAB = 1001 << 16 | 1000
    assert!(
        text.contains(&format!("ABCD: {}", (1000u32 << 16) | 1001))
            && text.contains(&format!("CDAB: {}", (1001u32 << 16) | 1000)),
        "{text}"
    );
    let out = fieldgate_out(&[
        "modbus",
        "read",
        "--tcp",
        "127.0.0.1:9",
        "--address",
        "0",
        "--type",
        "nonsense",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown type `nonsense`; valid: bool, bit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_survives_malformed_oversize_and_garbage_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::start(&d.join("cloud")).await;
    cloud.dev_cert("gw-x", &d.join("x"));
    let (ca, cert, key) = (
        d.join("x/ca.crt"),
        d.join("x/device.crt"),
        d.join("x/device.key"),
    );

    // Malformed payloads are acknowledged, kept with the reason, and the session goes on.
    let (client, mut ev) = mqtt_client(cloud.addr, "gw-x", &ca, Some((&cert, &key)));
    for bad in [
        vec![],
        vec![1u8, 0xff, 0xff],
        vec![7u8; 40],
        b"{\"json\": true}".to_vec(),
    ] {
        client
            .publish("fg/v1/gw-x/data", QoS::AtLeastOnce, false, bad)
            .await
            .unwrap();
        until_puback(&mut ev)
            .await
            .expect("malformed payload acknowledged, not fatal");
    }
    client
        .publish(
            "fg/v1/gw-x/state",
            QoS::AtLeastOnce,
            false,
            b"not json".to_vec(),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.unwrap();
    client
        .publish(
            "fg/v1/gw-x/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(5, "p/ok", 1.0),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.unwrap();
    assert_eq!(cloud.store().count("gw-x").unwrap(), 1);
    let reasons: Vec<String> = cloud
        .store()
        .rejections(10)
        .unwrap()
        .into_iter()
        .map(|r| r.2)
        .collect();
    for want in [
        "empty payload",
        "malformed payload",
        "unsupported wire format version 7",
        "unsupported wire format version 123",
        "not valid JSON",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want} not in {reasons:?}"
        );
    }

    // An oversize packet closes that connection only.
    let (client, mut ev) = mqtt_client(cloud.addr, "gw-x", &ca, Some((&cert, &key)));
    client
        .publish(
            "fg/v1/gw-x/data",
            QoS::AtLeastOnce,
            false,
            vec![1u8; 600 * 1024],
        )
        .await
        .unwrap();
    assert!(until_puback(&mut ev).await.is_err(), "oversize is refused");

    // Garbage instead of MQTT after a valid TLS handshake.
    let tls = fieldgate::tls::client_config(&ca, &cert, &key).unwrap();
    let tcp = tokio::net::TcpStream::connect(cloud.addr).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"\xff\xff\xff\xff\xff garbage").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "the ingest hangs up on garbage");

    // And still serves well-behaved devices.
    let (client, mut ev) = mqtt_client(cloud.addr, "gw-x", &ca, Some((&cert, &key)));
    client
        .publish(
            "fg/v1/gw-x/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(6, "p/ok", 2.0),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.unwrap();
    assert_eq!(cloud.store().count("gw-x").unwrap(), 2);
}
