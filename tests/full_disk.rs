//! A full disk under the buffer: commits fail with a clear error, the daemon keeps
//! running, nothing committed is lost, and it recovers once the cloud drains the backlog.
//!
//! The gateway runs in its own mount namespace (unshare) with an 8 MiB tmpfs as its
//! state directory; another process (dd) then fills that filesystem to the last byte,
//! as a log file gone wild would on a real box. No privileges needed, no real disk touched.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_survived() {
    need("unshare");
    let (dir, mut cloud) = Cloud::with_device("gw-full").await;
    let d = dir.path();
    cloud.stop().await;
    let (mut peer, port) = modbus_peer_tcp(&constant_points(40), d);
    let extra = "[buffer]\nmax_bytes = \"64 MiB\"\ncommit_interval = \"50ms\"";
    let cfg = gateway_config(
        d,
        "gw-full",
        &[cloud.addr.to_string()],
        extra,
        &constant_bus(port, 40, "20ms"),
    );
    let small = d.join("small");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"{}\"", small.display()),
        )
        .replace(
            "status_socket = \"state/status.sock\"",
            "status_socket = \"run/status.sock\"",
        );
    std::fs::write(&cfg, text).unwrap();
    std::fs::create_dir_all(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs '{s}' && \
         (n=0; while [ ! -e '{s}/buffer.db' ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; sleep 1; \
          dd if=/dev/zero of='{s}/filler' bs=64k 2>/dev/null) & \
         exec '{bin}' run --config '{cfg}'",
        s = small.display(),
        bin = env!("CARGO_BIN_EXE_fieldgate"),
        cfg = cfg.display()
    );
    let mut gw = Proc(
        std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(d.join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let sock = d.join("run/status.sock");
    let status = || {
        let out = fieldgate_cmd()
            .args(["status", "--json", "--socket"])
            .arg(&sock)
            .output()
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    // Depending on timing the buffer either makes room by dropping its oldest samples
    // (gap records) or, when the disk fills faster, fails commit groups: both are counted.
    let shown = || {
        status().is_some_and(|s| {
            s["commit_failures"].as_u64().unwrap_or(0) > 200
                || s["buffer"]["dropped"].as_u64().unwrap_or(0) > 200
        })
    };
    let t = std::time::Instant::now();
    while !shown() {
        if t.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let df = std::process::Command::new("ls")
                .arg("-la")
                .arg(&small)
                .output();
            panic!(
                "the full disk never showed; status: {:?}\nstate dir: {:?}\ngateway log (last lines):\n{}",
                status(),
                df.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status().expect("the daemon still answers with a full disk");
    if st["commit_failures"].as_u64().unwrap() > 0 {
        let human = fieldgate_cmd()
            .args(["status", "--socket"])
            .arg(&sock)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&human.stdout).contains("could NOT be committed"));
    }

    // The cloud comes back: the drain frees pages, and new samples are committed again.
    cloud.restart().await;
    let committed_then = st["committed"].as_u64().unwrap();
    wait_for(
        "commits to succeed again after the drain",
        Duration::from_secs(60),
        || status().is_some_and(|s| s["committed"].as_u64().unwrap_or(0) > committed_then + 1000),
    );
    // Stop the source and let everything drain before judging.
    let _ = peer.0.kill();
    let _ = peer.0.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for("the drain", Duration::from_secs(60), || {
        status().is_some_and(|s| {
            s["buffer"]["depth"] == 0
                && s["buffer"]["uncommitted"] == 0
                && s["buffer"]["pending_gaps"] == 0
        })
    });
    gw.signal("TERM");
    let exit = gw
        .wait_exit(Duration::from_secs(15))
        .expect("stops on SIGTERM");
    let log = std::fs::read_to_string(d.join("gateway.log")).unwrap();
    assert!(exit.success(), "{log}");
    assert!(
        log.contains("the disk is full") || log.contains("filesystem of the buffer is nearly full"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.matches("buffer commit failed").count() <= 2,
        "logged once a minute, not per commit:\n{log}"
    );
    // Every committed sample sent before the stop is in the cloud once, or named in a gap
    // record if the buffer made room for newer ones; never both, never silently gone.
    let rows = cloud.rows("gw-full");
    let stored: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(stored.len(), rows.len());
    let gaps = cloud.store().gaps("gw-full").unwrap();
    for seq in 1..=*stored.last().unwrap() {
        let in_gaps = gaps
            .iter()
            .filter(|g| g.first <= seq && seq <= g.last)
            .count();
        assert_eq!(in_gaps + stored.contains(&seq) as usize, 1, "seq {seq}");
    }
    println!(
        "{} samples stored, {} in gap records; {} could not be committed while the disk was full",
        rows.len(),
        gaps.iter().map(|g| g.last - g.first + 1).sum::<u64>(),
        st["commit_failures"]
    );
}
