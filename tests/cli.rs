//! The README's main command and the cloud's admin commands, run as a user would.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn cloud_cmd(data: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"));
    c.arg("--data-dir").arg(data);
    c
}

/// `fieldgate-cloud demo`: cloud, simulated meter and gateway in one command.
#[test]
fn the_demo_prints_samples_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let out = cloud_cmd(&dir.path().join("data"))
        .args(["demo", "--duration", "4s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for point in [
        "meter/voltage_l1",
        "meter/current_l1",
        "meter/energy_import",
        "meter/serial_number",
        "meter/breaker_open",
    ] {
        assert!(
            text.contains(point),
            "{point} missing from the demo's output:\n{text}"
        );
    }
    assert!(
        text.contains("\"PM-0042\"") && text.contains("12345.67"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_dev_cert_from_the_command_line() {
    let (dir, cloud) = Cloud::with_device("gw-cli").await;
    let d = dir.path();
    let (_peer, port) = modbus_peer_tcp(&constant_points(3), d);
    let cfg = gateway_config(
        d,
        "gw-cli",
        &[cloud.addr.to_string()],
        "",
        &constant_bus(port, 3, "100ms"),
    );
    let _gw = gateway(&cfg);
    wait_for("data", Duration::from_secs(20), || {
        cloud.store().count("gw-cli").unwrap() >= 9
    });

    let out = cloud_cmd(&cloud.data)
        .args([
            "query", "--device", "gw-cli", "--point", "dev/p1", "--since", "10min", "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3);
    for l in &lines {
        assert_eq!(l["point"], "dev/p1");
        assert_eq!(l["value"], 1001);
        assert_eq!(l["quality"], "good");
        assert!(
            l["seq"].is_u64() && l["ts_ns"].is_i64() && l["ts"].as_str().unwrap().ends_with('Z')
        );
    }
    let table = cloud_cmd(&cloud.data)
        .args(["query", "--device", "gw-cli"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("dev/p2"));
    // The newest per point; the newest `--limit` with a note that more exist; a reader
    // that closes the pipe ends the command quietly.
    let latest = cloud_cmd(&cloud.data)
        .args([
            "query", "--device", "gw-cli", "--latest", "--format", "json",
        ])
        .output()
        .unwrap();
    let latest: Vec<serde_json::Value> = String::from_utf8_lossy(&latest.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let points: Vec<&str> = latest
        .iter()
        .map(|l| l["point"].as_str().unwrap())
        .collect();
    assert_eq!(points, ["dev/p0", "dev/p1", "dev/p2"]);
    let newest_seq = cloud.rows("gw-cli").iter().map(|r| r.seq).max().unwrap();
    let two = cloud_cmd(&cloud.data)
        .args([
            "query", "--device", "gw-cli", "--limit", "2", "--format", "json",
        ])
        .output()
        .unwrap();
    let seqs: Vec<u64> = String::from_utf8_lossy(&two.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(
        seqs[0] < seqs[1] && seqs[1] >= newest_seq,
        "{seqs:?}, newest {newest_seq}"
    );
    assert!(String::from_utf8_lossy(&two.stderr).contains("only the newest 2 samples"));
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --data-dir {} query --device gw-cli | head -1",
            env!("CARGO_BIN_EXE_fieldgate-cloud"),
            cloud.data.display()
        ))
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let bad = cloud_cmd(&cloud.data)
        .args(["query", "--device", "gw-cli", "--since", "yesterday-ish"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give an RFC 3339 time"));

    let certs = d.join("new");
    let ok = cloud_cmd(&cloud.data)
        .args(["dev-cert", "gw-new", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let der = fieldgate::tls::load_certs(&certs.join("device.crt")).unwrap()[0].clone();
    assert_eq!(
        fieldgate::cloud::ingest::device_id_of(der.as_ref()).as_deref(),
        Some("gw-new")
    );
    let bad = cloud_cmd(&cloud.data)
        .args(["dev-cert", "gw new/../x", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a valid device id"));
    // Every command that takes a device id checks it where it enters (revoke did not).
    for args in [
        &["revoke", "gw/+"][..],
        &["token", "--device", "gw/+"],
        &["register", "gw/+", "--ek", "04"],
        &["gaps", "--device", "gw/+"],
        &["query", "--device", "gw/+"],
        &["identities", "--device", "gw/+"],
    ] {
        let out = cloud_cmd(&cloud.data).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("`gw/+` is not a valid device id"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `fieldgate check` also checks what the config needs from the machine, one line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_environment_problem() {
    let (dir, cloud) = Cloud::with_device("gw-other").await; // a certificate for another id
    let d = dir.path();
    let buses = format!(
        "[[bus]]\nname = \"rs485\"\nrtu = {{ port = \"{}/ttyGONE\" }}\n[[bus.device]]\nname = \"d\"\nunit = 2\n\
         [[bus.device.point]]\nname = \"v\"\nfunction = \"holding_register\"\naddress = 0\ntype = \"u16\"\n\
         [[can]]\nname = \"engine\"\ninterface = \"can9\"\ndbc = [\"{}\"]\n",
        d.display(),
        root().join("tests/fixtures/can/site.dbc").display()
    );
    let cfg = gateway_config(
        d,
        "gw-env",
        &["localhost:8883".into(), cloud.addr.to_string()],
        "",
        &buses,
    );
    let out = fieldgate_cmd()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  serial port")
            && text.contains("ttyGONE")
            && text.contains("is the adapter plugged in"),
        "{text}"
    );
    assert!(
        text.contains("its CN is `gw-other` but gateway.device_id is `gw-env`"),
        "{text}"
    );
    assert!(text.contains("ok    broker localhost:8883"), "{text}");
    assert!(
        text.contains("ok    client key") && text.contains("ok    CA certificate"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  CAN interface can9 (bus engine): no such interface"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 problem(s) in the environment"));
    // --config-only skips the machine, as the systemd unit's ExecStartPre does.
    let only = fieldgate_cmd()
        .args(["check", "--config-only", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(only.status.success());
}

#[test]
fn modbus_scan_finds_units_and_readable_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Units 2 and 5 on a serial line (fieldgate's simulator stays silent for others).
    let (_socat, dev_end, gw_end) = serial_pair(d);
    let _sim = sim_serial(d, &dev_end, &[(2, 200), (5, 500)]);
    let out = fieldgate_cmd()
        .args([
            "modbus",
            "scan",
            "--units",
            "1-8",
            "--timeout",
            "150ms",
            "--rtu",
        ])
        .arg(&gw_end)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("unit   2: answers (holding_register 0 = 200)"),
        "{text}"
    );
    assert!(
        text.contains("unit   5: answers (holding_register 0 = 500)"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("unit")).count(),
        2,
        "{text}"
    );

    // Readable address ranges of one unit (pymodbus: unmapped addresses raise exception 2).
    let points: Vec<serde_json::Value> = [0u16, 1, 2, 3, 10, 11, 300]
        .iter()
        .map(|a| serde_json::json!({"unit": 1, "table": "hr", "address": a, "type": "u16", "value": a}))
        .collect();
    let (_peer, port) = modbus_peer_tcp(&serde_json::Value::Array(points), d);
    let out = fieldgate_out(&[
        "modbus",
        "scan",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--unit",
        "1",
        "--range",
        "0-400",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "readable holding_register 0..=3 (4 items)",
            "readable holding_register 10..=11 (2 items)",
            "readable holding_register 300..=300 (1 items)"
        ]
    );
    let bad = fieldgate_out(&["modbus", "scan", "--tcp", "127.0.0.1:9", "--units", "300-1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--units `300-1`"));
}

/// `fieldgate-cloud audit verify` on a cloud's database: intact, then tampered with.
#[test]
fn audit_verify_names_the_first_tampered_entry() {
    use fieldgate::cloud::iam::keys::{Action, Keys, Request, Scope};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cloud");
    std::fs::create_dir_all(&data).unwrap();
    let db = fieldgate::cloud::sql::Db::sqlite(&fieldgate::cloud::store_path(&data)).unwrap();
    // The cloud's own anchor in its data directory, as `audit verify` opens it.
    let anchor = fieldgate::cloud::iam::anchor::Anchor::open(&data, &db).unwrap();
    let mut keys = Keys::open(db, std::sync::Arc::new(anchor)).unwrap();
    let now = fieldgate::sample::now_ns();
    let (_, token) = keys
        .create(&Scope {
            tenant: "acme".into(),
            devices: vec!["*".into()],
            streams: vec!["*".into()],
            actions: vec![Action::Read],
            cidrs: vec![],
            origins: vec![],
            not_before_ns: now - 1_000_000_000,
            not_after_ns: now + 3_600_000_000_000,
            min_resolution_s: 0,
            may_delegate: false,
        })
        .unwrap();
    for device in ["gw1", "gw2", "gw3"] {
        let _ = keys.authorize(
            &token,
            &Request {
                action: Action::Read,
                tenant: "acme",
                device: Some(device),
                stream: Some("p"),
                source: "127.0.0.1".parse().unwrap(),
                origin: None,
                resolution_s: 0,
                now_ns: now,
            },
        );
    }
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
            .arg("--data-dir")
            .arg(&data)
            .args(["audit", "verify"])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 3 entries"));
    keys.db()
        .execute("UPDATE audit SET resource = 'acme/gw9/p' WHERE id = 2", &[])
        .unwrap();
    let bad = verify();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("BROKEN at entry 2"), "{err}");
}
