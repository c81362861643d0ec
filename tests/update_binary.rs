//! Signed updates end to end with the `binary` backend: a rollout offers a release over
//! the downlink; the gateway verifies it, downloads it with its certificate, installs it
//! into a slot, restarts into it through `fieldgate-launch` (as systemd runs it), checks
//! its health and commits (raising the rollback floor). A release that crashes at every
//! start is put back by `fieldgate-launch` by itself, the cloud shows both outcomes and
//! their audit entries, and the rollout that met it stops itself. Refused offers (older,
//! other hardware, a wrong key) never write a byte and say why in the cloud. Samples
//! buffered across all of it reach the cloud once each.

mod common;
use common::api::*;
use common::*;
use fieldgate::release::image::describe;
use fieldgate::release::{generate_key, Envelope, Install, Release, Role, Root, SigningKey};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000_000_000;
const HW: &str = "fieldgate-test-x86-64";

fn key() -> SigningKey {
    SigningKey::from_pkcs8(&generate_key().unwrap()).unwrap()
}

fn signed<T: serde::Serialize>(doc: &T, by: &[&SigningKey]) -> Vec<u8> {
    let mut env = Envelope::of(doc);
    for k in by {
        k.sign(&mut env);
    }
    env.to_bytes()
}

fn root_doc(root_key: &SigningKey, release_key: &SigningKey) -> Root {
    let mut keys = BTreeMap::new();
    for s in [root_key, release_key] {
        keys.insert(s.id(), fieldgate::hex::encode(&s.public()));
    }
    Root {
        kind: "fieldgate-root".into(),
        v: 1,
        version: 1,
        expires_ns: fieldgate::sample::now_ns() + 24 * HOUR,
        keys,
        root: Role {
            keys: vec![root_key.id()],
            threshold: 1,
        },
        release: Role {
            keys: vec![release_key.id()],
            threshold: 1,
        },
    }
}

fn release(version: &str, hardware: &str, image: &[u8], index: u64) -> Release {
    Release {
        kind: "fieldgate-release".into(),
        v: 1,
        version: version.into(),
        hardware: hardware.into(),
        image: describe(image, Install::Binary),
        expires_ns: fieldgate::sample::now_ns() + HOUR,
        rollback_index: index,
    }
}

/// The service manager of the test: runs the daemon through `fieldgate-launch` as
/// systemd/fieldgate.service does, and starts it again whenever it exits.
struct Supervisor {
    stop: Arc<AtomicBool>,
    starts: Arc<AtomicUsize>,
    child: Arc<Mutex<Option<std::process::Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(update_dir: &Path, config: &Path, log: &Path) -> Supervisor {
        Supervisor::with_env(update_dir, config, log, &[])
    }

    fn with_env(update_dir: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Supervisor {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicUsize::new(0));
        let child: Arc<Mutex<Option<std::process::Child>>> = Arc::default();
        let (s, n, c) = (stop.clone(), starts.clone(), child.clone());
        let (dir, config, log) = (
            update_dir.to_path_buf(),
            config.to_path_buf(),
            log.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let p = std::process::Command::new(root().join("systemd/fieldgate-launch"))
                    .arg(&dir)
                    .arg(env!("CARGO_BIN_EXE_fieldgate"))
                    .args(["run", "--config"])
                    .arg(&config)
                    .env("RUST_LOG", "info")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stderr(out.try_clone().unwrap())
                    .stdout(out)
                    .spawn()
                    .unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                *c.lock().unwrap() = Some(p);
                loop {
                    let done = c.lock().unwrap().as_mut().unwrap().try_wait().unwrap();
                    if done.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Supervisor {
            stop,
            starts,
            child,
            thread: Some(thread),
        }
    }
}

impl Supervisor {
    /// SIGKILL to the daemon now running (the supervisor starts it again).
    fn kill(&self) {
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = c.kill();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn gateway_toml(d: &Path, cloud: &Cloud, device: &str, with_source: bool) -> PathBuf {
    let source = demo_engine_can();
    let sections = format!(
        r#"
[identity]
enroll_url = "{url}"

[update]
root = "root.json"
hardware = "{HW}"
floor = "floor/rollback"
health_window = "30s"

[clock]
synced = "always"
{source}
"#,
        url = cloud.api_url(),
        source = if with_source { source.as_str() } else { "" },
    );
    gateway_config(d, device, &[cloud.addr.to_string()], "", &sections)
}

async fn rollout(api: &Client, owner: &Auth, version: &str, max_failures: u8) -> String {
    staged(api, owner, version, json!([{"percent": 100}]), max_failures).await
}

async fn staged(
    api: &Client,
    owner: &Auth,
    version: &str,
    stages: serde_json::Value,
    max_failures: u8,
) -> String {
    let r = api
        .ok(
            "POST",
            "/v1/tenants/acme/rollouts",
            owner,
            Some(json!({"version": version, "stages": stages,
                        "max_failures_percent": max_failures})),
        )
        .await;
    r["id"].as_str().unwrap().to_string()
}

/// Waits until the rollout's one device reaches a final phase; returns the rollout.
async fn settled(api: &Client, owner: &Auth, id: &str, within: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let r = api
            .ok(
                "GET",
                &format!("/v1/tenants/acme/rollouts/{id}"),
                owner,
                None,
            )
            .await;
        let phase = r["devices"][0]["phase"].as_str().unwrap_or("").to_string();
        if ["committed", "failed", "rolled_back"].contains(&phase.as_str())
            && r["state"] != "running"
        {
            return r;
        }
        assert!(t.elapsed() < within, "rollout {id} did not settle: {r:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn slot_of(d: &Path) -> Option<String> {
    std::fs::read_link(d.join("state/update/active"))
        .ok()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_commits_and_a_crashing_one_rolls_itself_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(86400)).await;
    let (api, owner) = acme_with_pump(&cloud).await;
    cloud.dev_cert("pump-1", &d.join("certs"));
    let (root_key, release_key, stranger) = (key(), key(), key());
    std::fs::write(
        d.join("root.json"),
        signed(&root_doc(&root_key, &release_key), &[&root_key]),
    )
    .unwrap();
    let releases = fieldgate::cloud::releases::Releases::with(cloud.db(), &cloud.data);
    let config = gateway_toml(d, &cloud, "pump-1", true);
    let gw = Supervisor::start(&d.join("state/update"), &config, &d.join("gateway.log"));
    let log = || std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();

    // 1.5.0: the daemon itself with a few bytes more (a different hash, the same code).
    let mut good = std::fs::read(env!("CARGO_BIN_EXE_fieldgate")).unwrap();
    good.extend_from_slice(b"\0fieldgate test release 1.5.0\n");
    let r = release("1.5.0", HW, &good, 5);
    releases
        .add("acme", &signed(&r, &[&release_key]), &good)
        .unwrap();
    let t = Instant::now();
    let id = rollout(&api, &owner, "1.5.0", 50).await;
    let ro = settled(&api, &owner, &id, Duration::from_secs(180)).await;
    let dev = &ro["devices"][0];
    assert_eq!(dev["phase"], "committed", "{ro:#}\n{}", log());
    assert_eq!(ro["state"], "done", "{ro:#}");
    println!(
        "1.5.0: offered to committed in {:.1}s, {} bytes",
        t.elapsed().as_secs_f64(),
        good.len()
    );
    assert_eq!(
        slot_of(d).unwrap(),
        format!("1.5.0-{}", &r.image.sha256[..12])
    );
    assert!(!d.join("state/update/trial").exists(), "the trial ended");
    let floor = std::fs::read_to_string(d.join("floor/rollback")).unwrap();
    assert!(floor.contains('5'), "the floor was raised: {floor}");
    // The running gateway says it is 1.5.0 (its birth message).
    let t = Instant::now();
    loop {
        let detail = cloud
            .db()
            .query_opt(
                "SELECT detail FROM device_state WHERE device = $1",
                fieldgate::args!["pump-1"],
            )
            .unwrap()
            .map(|r| r.text(0).unwrap())
            .unwrap_or_default();
        if detail.contains(r#""version":"1.5.0""#) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{detail}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `fieldgate status` shows it too.
    let st = status(d).expect("status");
    assert_eq!(st["version"], "1.5.0", "{st:#}");
    assert_eq!(st["update"]["phase"], "committed", "{st:#}");
    let text = fieldgate_cmd()
        .args(["status", "--socket"])
        .arg(d.join("state/status.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("update      1.5.0 committed"), "{text}");

    // Refused before a byte is fetched, with the reason in the cloud: not newer, other
    // hardware, signed by a key the root does not name.
    let older = b"#!/bin/sh\nexit 0\n";
    for (version, hw, by, why) in [
        ("1.4.0", HW, &release_key, "is not newer than 1.5.0"),
        (
            "1.7.0",
            "other-board",
            &release_key,
            "is for hardware `other-board`",
        ),
        ("1.8.0", HW, &stranger, "signed by 0 of the keys"),
    ] {
        let r = release(version, hw, older, 6);
        releases.add("acme", &signed(&r, &[by]), older).unwrap();
        let id = rollout(&api, &owner, version, 100).await;
        let ro = settled(&api, &owner, &id, Duration::from_secs(60)).await;
        let dev = &ro["devices"][0];
        assert_eq!(dev["phase"], "failed", "{ro:#}");
        assert!(
            dev["reason"].as_str().unwrap().contains(why),
            "{why}: {ro:#}"
        );
        assert_eq!(ro["state"], "halted", "{ro:#}");
        assert!(!d.join("state/update/staging").exists());
    }

    // 1.6.0 crashes at every start: fieldgate-launch puts 1.5.0 back after three.
    let crash = b"#!/bin/sh\necho 'release 1.6.0: cannot start' >&2\nexit 1\n".to_vec();
    let r = release("1.6.0", HW, &crash, 6);
    releases
        .add("acme", &signed(&r, &[&release_key]), &crash)
        .unwrap();
    let starts = gw.starts.load(Ordering::SeqCst);
    let id = rollout(&api, &owner, "1.6.0", 50).await;
    let ro = settled(&api, &owner, &id, Duration::from_secs(120)).await;
    let dev = &ro["devices"][0];
    assert_eq!(dev["phase"], "rolled_back", "{ro:#}\n{}", log());
    let reason = dev["reason"].as_str().unwrap();
    assert!(
        reason.contains("fieldgate-launch put 1.5.0 back"),
        "{reason}"
    );
    assert_eq!(ro["state"], "halted", "the rollout stopped itself: {ro:#}");
    assert!(
        gw.starts.load(Ordering::SeqCst) - starts >= 4,
        "three starts of 1.6.0, then 1.5.0"
    );
    assert!(log().contains("release 1.6.0: cannot start"));
    assert!(slot_of(d).unwrap().starts_with("1.5.0-"));
    let floor = std::fs::read_to_string(d.join("floor/rollback")).unwrap();
    assert!(floor.contains('5') && !floor.contains('6'), "{floor}");

    // Every step is in the tenant's audit log.
    let audit = api
        .ok("GET", "/v1/tenants/acme/audit?limit=1000", &owner, None)
        .await;
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "rollout.start",
        "update.offered",
        "update.downloading",
        "update.verified",
        "update.restarting",
        "update.healthy",
        "update.committed",
        "update.refused",
        "update.rolled_back",
        "rollout.halt",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing in {actions:?}");
    }

    // Everything buffered through the restarts arrived once.
    drop(gw);
    let rows = cloud.rows("pump-1");
    let mut seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert!(n > 0);
    assert_eq!(seqs.len(), n, "no sample stored twice");
}

/// Ten gateways; a release that crashes at start, rolled out to 10% first: the one
/// device of that stage rolls back, the rollout stops itself, and the other nine are
/// never offered the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_rollout_stops_itself_and_the_rest_never_see_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(86400)).await;
    let (api, owner) = acme_with_pump(&cloud).await;
    let sys = api.login("factory@fieldgate.example").await;
    let mut fleet = vec!["pump-1".to_string()];
    for i in 2..=10 {
        let device = format!("pump-{i}");
        let body = json!({"device": device, "claim_code": format!("PUMP-{i}-CODE")});
        api.ok("POST", "/v1/system/devices", &sys, Some(body.clone()))
            .await;
        api.ok("POST", "/v1/tenants/acme/devices", &owner, Some(body))
            .await;
        fleet.push(device);
    }
    let (root_key, release_key) = (key(), key());
    let mut gateways = Vec::new();
    for device in &fleet {
        let g = d.join(device);
        std::fs::create_dir_all(&g).unwrap();
        cloud.dev_cert(device, &g.join("certs"));
        std::fs::write(
            g.join("root.json"),
            signed(&root_doc(&root_key, &release_key), &[&root_key]),
        )
        .unwrap();
        let config = gateway_toml(&g, &cloud, device, false);
        gateways.push(Supervisor::start(
            &g.join("state/update"),
            &config,
            &g.join("gateway.log"),
        ));
    }
    let crash = b"#!/bin/sh\nexit 1\n".to_vec();
    let r = release("2.0.0", HW, &crash, 9);
    fieldgate::cloud::releases::Releases::with(cloud.db(), &cloud.data)
        .add("acme", &signed(&r, &[&release_key]), &crash)
        .unwrap();
    let id = staged(
        &api,
        &owner,
        "2.0.0",
        json!([{"percent": 10}, {"percent": 100}]),
        50,
    )
    .await;
    let ro = settled(&api, &owner, &id, Duration::from_secs(120)).await;
    assert_eq!(ro["state"], "halted", "{ro:#}");
    let offered = ro["devices"].as_array().unwrap();
    assert_eq!(offered.len(), 1, "10% of ten: {ro:#}");
    assert_eq!(offered[0]["phase"], "rolled_back", "{ro:#}");
    assert!(
        ro["reason"].as_str().unwrap().contains("1 of 1 devices"),
        "{ro:#}"
    );
    // Later pumps change nothing: the other nine never get an offer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let chosen = offered[0]["device"].as_str().unwrap();
    for device in fleet.iter().filter(|d| *d != chosen) {
        let cmds = api
            .ok(
                "GET",
                &format!("/v1/tenants/acme/devices/{device}/commands"),
                &owner,
                None,
            )
            .await;
        assert_eq!(cmds.as_array().unwrap().len(), 0, "{device}: {cmds:#}");
        assert!(
            !d.join(device).join("state/update/slots").exists(),
            "{device}"
        );
    }
    drop(gateways);
}

/// A kill at each step of an update (in the download with SIGKILL; after the image is
/// verified, in the swap, before the restart, in the first health check and before the
/// commit by aborting the process there): the gateway ends up committed on the new
/// version, and every sample it committed to its buffer reached the cloud exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_step_ends_on_a_good_version_with_every_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(86400)).await;
    let (api, owner) = acme_with_pump(&cloud).await;
    cloud.dev_cert("pump-1", &d.join("certs"));
    let (root_key, release_key) = (key(), key());
    std::fs::write(
        d.join("root.json"),
        signed(&root_doc(&root_key, &release_key), &[&root_key]),
    )
    .unwrap();
    let config = gateway_toml(d, &cloud, "pump-1", true);
    let steps = "verified,installing,restarting,checking,healthy";
    let gw = Supervisor::with_env(
        &d.join("state/update"),
        &config,
        &d.join("gateway.log"),
        &[("FIELDGATE_UPDATE_ABORT_AT", steps)],
    );
    let log = || std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();
    let mut good = std::fs::read(env!("CARGO_BIN_EXE_fieldgate")).unwrap();
    good.extend_from_slice(b"\0fieldgate test release 1.5.0\n");
    let r = release("1.5.0", HW, &good, 5);
    fieldgate::cloud::releases::Releases::with(cloud.db(), &cloud.data)
        .add("acme", &signed(&r, &[&release_key]), &good)
        .unwrap();
    // Wait for the gateway to be up and buffering before the offer.
    let t = Instant::now();
    while status(d).is_none_or(|s| s["uplink"]["connected_to"].is_null()) {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = rollout(&api, &owner, "1.5.0", 100).await;
    // SIGKILL in the middle of the download.
    let staging = d.join("state/update/staging");
    let t = Instant::now();
    while std::fs::metadata(&staging).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no download: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill();
    let ro = settled(&api, &owner, &id, Duration::from_secs(240)).await;
    assert_eq!(ro["devices"][0]["phase"], "committed", "{ro:#}\n{}", log());
    for step in steps.split(',') {
        assert!(
            d.join(format!("state/update/aborted-at-{step}")).exists(),
            "no abort at {step}: {}",
            log()
        );
    }
    assert!(slot_of(d).unwrap().starts_with("1.5.0-"));
    println!("starts in all: {}", gw.starts.load(Ordering::SeqCst));

    // Every sample the gateway committed by now arrives, once.
    let upto = last_seq(d);
    let t = Instant::now();
    loop {
        let mut seqs: Vec<u64> = cloud.rows("pump-1").iter().map(|r| r.seq).collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "a sample stored twice");
        let have = seqs.iter().filter(|s| **s <= upto).count() as u64;
        if have == upto {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{have} of the {upto} committed samples arrived"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(gw);
}
