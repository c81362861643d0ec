//! The scale-out mode: Mosquitto, two stateless ingest workers sharing the load through
//! an MQTT 5 shared subscription, and PostgreSQL. Gateways flood the broker; one worker
//! is killed (SIGKILL) mid-way and comes back (as systemd restarts it): every sample is
//! stored, none twice, and the surviving worker kept storing while the other was down.
//!
//! Two API servers on the same PostgreSQL: a session, a key, a revocation and a claim
//! made through one hold on the other at once, and the audit chain both append to at the
//! same time verifies.

mod common;
use common::*;
use fieldgate::cloud::store::Store;
use fieldgate::protocol::Batch;
use std::path::Path;
use std::time::{Duration, Instant};

const DEVICES: u64 = 4;
const BATCHES: u64 = 150;
const PER_BATCH: u64 = 100;

fn worker(dir: &Path, port: u16, pg: &str, id: &str) -> Proc {
    worker_with(dir, port, pg, id, &[])
}

fn worker_with(dir: &Path, port: u16, pg: &str, id: &str, extra: &[&str]) -> Proc {
    Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
            .arg("--data-dir")
            .arg(dir.join("cloud"))
            .args([
                "serve",
                "--broker",
                &format!("127.0.0.1:{port}"),
                "--broker-ca",
            ])
            .arg(dir.join("ingest/ca.crt"))
            .arg("--cert")
            .arg(dir.join("ingest/device.crt"))
            .arg("--key")
            .arg(dir.join("ingest/device.key"))
            .args(["--store", pg, "--client-id", id, "--share-group", "ingest"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(dir.join(format!("{id}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The scale-out's parts: PostgreSQL, the cloud's CA with certificates for the ingest
/// and `devices`, and Mosquitto admitting them.
fn cluster(d: &Path, devices: &[String]) -> (Postgres, Mosquitto) {
    let pg = Postgres::start(&d.join("pg"));
    let (pki, _) =
        fieldgate::cloud::open(&d.join("cloud"), &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    pki.dev_cert(&"fieldgate-ingest".parse().unwrap(), &d.join("ingest"))
        .unwrap();
    for dev in devices {
        pki.dev_cert(&dev.parse().unwrap(), &d.join(dev)).unwrap();
    }
    let broker = Mosquitto::start(&d.join("broker"), &pki, &shipped_acl());
    (pg, broker)
}

/// One gateway's flood: `BATCHES` batches of `PER_BATCH` samples, QoS 1, as fast as the
/// broker takes them.
async fn flood(dir: &Path, port: u16, device: String) {
    let certs = dir.join(&device);
    let (client, mut ev) = mqtt_client(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &device,
        &certs.join("ca.crt"),
        Some((&certs.join("device.crt"), &certs.join("device.key"))),
    );
    let acks = tokio::spawn(async move {
        let mut n = 0;
        while n < BATCHES {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => n += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection failed: {e}"),
            }
        }
    });
    let topic = format!("fg/v1/{device}/data");
    for b in 0..BATCHES {
        let batch = Batch {
            samples: (0..PER_BATCH)
                .map(|i| {
                    let seq = b * PER_BATCH + i + 1;
                    let now = fieldgate::sample::now_ns();
                    float_sample(seq, format!("meter/p{}", i % 10), now, seq as f64)
                })
                .collect(),
            gaps: vec![],
        };
        client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, batch.encode())
            .await
            .unwrap();
    }
    acks.await.unwrap();
}

/// One flood per device, at once.
fn floods(d: &Path, port: u16, devices: &[String]) -> Vec<tokio::task::JoinHandle<()>> {
    devices
        .iter()
        .map(|dev| {
            let (dir, dev) = (d.to_path_buf(), dev.clone());
            tokio::spawn(async move { flood(&dir, port, dev).await })
        })
        .collect()
}

/// Waits up to 60 s for `done`; on failure shows the workers' and the broker's logs.
fn until(dir: &Path, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            for f in ["ingest-1.log", "ingest-2.log", "broker/mosquitto.log"] {
                let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!("--- {f} (last lines)");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
            if let Ok(keep) = std::env::var("FIELDGATE_KEEP_FAILED") {
                let _ = std::process::Command::new("cp")
                    .args(["-r"])
                    .arg(dir)
                    .arg(keep)
                    .status();
            }
            panic!("timed out after 60 s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgresql_lose_nothing_when_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let devices: Vec<String> = (1..=DEVICES).map(|i| format!("flood-{i}")).collect();
    let (pg, broker) = cluster(d, &devices);
    let url = pg.url();
    let mut w1 = worker(d, broker.port, &url, "ingest-1");
    let _w2 = worker(d, broker.port, &url, "ingest-2");
    let store = Store::postgres(&url, None).unwrap();
    let stored = || -> u64 { devices.iter().map(|dev| store.count(dev).unwrap()).sum() };
    // Both workers subscribed (the table exists once one has connected).
    std::thread::sleep(Duration::from_secs(2));

    let total = DEVICES * BATCHES * PER_BATCH;
    let started = Instant::now();
    let floods = floods(d, broker.port, &devices);

    // Mid-way, worker 1 dies without a word.
    until(d, "a third of the flood stored", || stored() >= total / 3);
    w1.0.kill().unwrap();
    let _ = w1.0.wait();
    let at_kill = stored();
    std::thread::sleep(Duration::from_secs(2));
    let while_down = stored() - at_kill;
    // It comes back with the same client id: the broker resumes its session.
    let _w1 = worker(d, broker.port, &url, "ingest-1");
    for f in floods {
        f.await.unwrap();
    }
    until(d, "every sample stored", || stored() >= total);
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));

    assert!(
        while_down > 0,
        "worker 2 kept storing while worker 1 was down"
    );
    for dev in &devices {
        assert_eq!(store.count(dev).unwrap(), BATCHES * PER_BATCH, "{dev}");
        assert!(store.gaps(dev).unwrap().is_empty());
    }
    let u = url.clone();
    let db_total: i64 = std::thread::spawn(move || {
        postgres::Client::connect(&u, postgres::NoTls)
            .unwrap()
            .query_one(
                "SELECT count(*) FROM (SELECT DISTINCT device, seq FROM samples) s",
                &[],
            )
            .unwrap()
            .get(0)
    })
    .join()
    .unwrap();
    assert_eq!(db_total as u64, total, "nothing lost, nothing twice");
    println!(
        "{total} samples from {DEVICES} gateways through 2 workers in {secs:.1} s \
         ({:.0}/s), {while_down} stored by worker 2 in the 2 s worker 1 was down",
        total as f64 / secs
    );
}

/// Waits up to 30 s for an API server to answer.
async fn until_up(api: &common::api::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fieldgate::identity::enroll::https_request(
        http::Method::GET,
        &api.url,
        "/v1/openapi.json",
        &api.ca,
        None,
        &[],
        None,
    )
    .await
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the API server on {} did not answer",
            api.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_share_identity_access_and_audit_on_postgresql() {
    use common::api::{Auth, Client};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pg, broker) = cluster(d, &["flood-1".to_string()]);
    let url = pg.url();
    let (p1, p2) = (free_port(), free_port());
    let _w1 = worker_with(
        d,
        broker.port,
        &url,
        "ingest-1",
        &["--api", &format!("127.0.0.1:{p1}")],
    );
    let _w2 = worker_with(
        d,
        broker.port,
        &url,
        "ingest-2",
        &["--api", &format!("127.0.0.1:{p2}")],
    );
    let client = |port: u16| Client {
        url: format!("https://127.0.0.1:{port}"),
        ca: d.join("cloud/pki/ca.crt"),
    };
    let (a1, a2) = (client(p1), client(p2));
    for a in [&a1, &a2] {
        until_up(a).await;
    }
    let cli = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"));
        c.arg("--data-dir")
            .arg(d.join("cloud"))
            .args(["--store", &url]);
        c
    };
    common::api::system_account_by(cli(), "factory@fieldgate.example");

    // Registered on one server, logged in on the other, the session good on the first.
    a1.register("owner@acme.example", "acme").await;
    let owner = a2.login("owner@acme.example").await;
    let me = a1.ok("GET", "/v1/me", &owner, None).await;
    assert_eq!(me["email"], "owner@acme.example", "{me}");

    // The device registered through one, claimed through the other; its data (stored by
    // the workers) read through either.
    let sys = a1.login("factory@fieldgate.example").await;
    let device = json!({"device": "flood-1", "claim_code": "FLOOD-1-CODE"});
    a1.ok("POST", "/v1/system/devices", &sys, Some(device.clone()))
        .await;
    a2.ok("POST", "/v1/tenants/acme/devices", &owner, Some(device))
        .await;
    std::thread::sleep(Duration::from_secs(1));
    flood(d, broker.port, "flood-1".into()).await;
    let store = fieldgate::cloud::store::Store::postgres(&url, None).unwrap();
    until(d, "the flood stored", || {
        store.count("flood-1").unwrap() >= BATCHES * PER_BATCH
    });
    let streams = a2
        .ok(
            "GET",
            "/v1/tenants/acme/devices/flood-1/streams",
            &owner,
            None,
        )
        .await;
    assert_eq!(streams.as_array().unwrap().len(), 10, "{streams}");

    // A key minted on one server works on the other; revoked there, refused here at once.
    let now = fieldgate::sample::now_ns();
    let key = a1
        .ok(
            "POST",
            "/v1/tenants/acme/keys",
            &owner,
            Some(json!({"actions": ["read"], "not_after_ns": now + 3_600_000_000_000i64})),
        )
        .await;
    let bearer = Auth::Bearer(key["token"].as_str().unwrap().into());
    let latest = "/v1/tenants/acme/devices/flood-1/latest";
    a2.ok("GET", latest, &bearer, None).await;
    let id = key["id"].as_str().unwrap();
    a2.ok(
        "DELETE",
        &format!("/v1/tenants/acme/keys/{id}"),
        &owner,
        None,
    )
    .await;
    let r = a1.call("GET", latest, &bearer, None).await;
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (403, Some("key_revoked")),
        "{r:?}"
    );

    // Both servers append to one audit chain at the same time; it stays whole.
    let hammer = |a: Client, owner: Auth| async move {
        for i in 0..40 {
            let path = if i % 4 == 0 {
                "/v1/tenants/globex/devices".to_string()
            } else {
                "/v1/tenants/acme/devices/flood-1/latest".to_string()
            };
            let (status, _) = a.call("GET", &path, &owner, None).await;
            assert!(status == 200 || status == 404, "{status}");
        }
    };
    let (h1, h2) = (
        tokio::spawn(hammer(client(p1), owner.clone())),
        tokio::spawn(hammer(client(p2), owner.clone())),
    );
    h1.await.unwrap();
    h2.await.unwrap();
    let out = cli().args(["audit", "verify"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let entries: u64 = text
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(entries >= 80, "{text}");
    println!("two API servers on one PostgreSQL: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_flood_loses_nothing_and_the_api_recovers() {
    use common::api::Client;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let devices: Vec<String> = (1..=2).map(|i| format!("flood-{i}")).collect();
    let (mut pg, broker) = cluster(d, &devices);
    let url = pg.url();
    let api_port = free_port();
    let _w1 = worker_with(
        d,
        broker.port,
        &url,
        "ingest-1",
        &["--api", &format!("127.0.0.1:{api_port}")],
    );
    let _w2 = worker(d, broker.port, &url, "ingest-2");
    let api = Client {
        url: format!("https://127.0.0.1:{api_port}"),
        ca: d.join("cloud/pki/ca.crt"),
    };
    until_up(&api).await;
    api.register("owner@acme.example", "acme").await;
    let owner = api.login("owner@acme.example").await;
    api.ok("GET", "/v1/me", &owner, None).await;

    let store = fieldgate::cloud::store::Store::postgres(&url, None).unwrap();
    let stored = |store: &fieldgate::cloud::store::Store| -> u64 {
        devices
            .iter()
            .map(|dev| store.count(dev).unwrap_or(0))
            .sum()
    };
    let total = devices.len() as u64 * BATCHES * PER_BATCH;
    let floods = floods(d, broker.port, &devices);
    until(d, "a third of the flood stored", || {
        stored(&store) >= total / 3
    });

    // The database goes away for three seconds (a restart, a failover).
    pg.stop();
    let (status, body) = api.call("GET", "/v1/me", &owner, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("internal")),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again();

    for f in floods {
        f.await.unwrap();
    }
    let store = fieldgate::cloud::store::Store::postgres(&url, None).unwrap();
    until(d, "every sample stored", || stored(&store) >= total);
    std::thread::sleep(Duration::from_millis(500));
    for dev in &devices {
        assert_eq!(
            store.count(dev).unwrap(),
            BATCHES * PER_BATCH,
            "{dev}: nothing lost, nothing twice"
        );
        assert!(store.gaps(dev).unwrap().is_empty());
    }
    // The same session works again: the API server reconnected by itself.
    let me = api.ok("GET", "/v1/me", &owner, None).await;
    assert_eq!(me["email"], "owner@acme.example", "{me}");
}
