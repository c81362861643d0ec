//! Acceptance 4: with a small cap and a long outage the oldest telemetry is dropped, the
//! cloud's gap records name exactly the sequence ranges that never arrived, alarms
//! survive, and after the outage live samples reach the cloud while the backlog drains.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_drops_oldest_telemetry_reports_gaps_and_live_data_goes_first() {
    let (dir, mut cloud) = Cloud::with_device("gw-cap").await;
    let d = dir.path();
    let (mut peer, port) = modbus_peer_tcp(&constant_points(20), d);
    // 20 points every 50 ms = 400 samples/s into a 64 KiB buffer: full in a few seconds.
    // The backlog drains at 300 samples/s, so it takes a while after the outage.
    let extra = "backlog_rate = 300\nbatch_max_samples = 100\n[buffer]\nmax_bytes = \"64 KiB\"\ncommit_interval = \"50ms\"";
    let cfg = gateway_config(
        d,
        "gw-cap",
        &[cloud.addr.to_string()],
        extra,
        &constant_bus(port, 20, "50ms"),
    );
    let mut gw = gateway(&cfg);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cloud.stop().await;
    wait_for("drops at the cap", Duration::from_secs(30), || {
        status(d).is_some_and(|s| s["buffer"]["dropped"].as_u64().unwrap_or(0) > 2000)
    });
    let restart_ns = fieldgate::sample::now_ns();
    let restarted = Instant::now();
    cloud.restart().await;

    // Live data first: a sample taken after the restart arrives while older ones are missing.
    let mut live_latency = None;
    let mut backlog_missing = 0;
    wait_for(
        "a live sample after the outage",
        Duration::from_secs(20),
        || {
            let rows = cloud.rows("gw-cap");
            let Some(live) = rows
                .iter()
                .filter(|r| r.ts_ns > restart_ns)
                .max_by_key(|r| r.seq)
            else {
                return false;
            };
            let stored: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
            let gaps = cloud.store().gaps("gw-cap").unwrap();
            backlog_missing = (1..live.seq)
                .filter(|s| {
                    !stored.contains(s) && !gaps.iter().any(|g| g.first <= *s && *s <= g.last)
                })
                .count();
            live_latency = Some(restarted.elapsed());
            true
        },
    );
    assert!(backlog_missing > 100, "live data should overtake the backlog; only {backlog_missing} older samples were still missing");
    println!("first live sample {:?} after the cloud came back, with {backlog_missing} backlog samples still to send", live_latency.unwrap());

    let _ = peer.0.kill();
    let _ = peer.0.wait();
    // Let the poller notice and report the device gone before judging the drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for("the backlog to drain", Duration::from_secs(60), || {
        status(d).is_some_and(|s| {
            s["buffer"]["depth"] == 0
                && s["buffer"]["uncommitted"] == 0
                && s["buffer"]["pending_gaps"] == 0
        })
    });
    gw.signal("TERM");
    assert!(gw
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    let last = last_seq(d);
    let rows = cloud.rows("gw-cap");
    let stored: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    let gaps = cloud.store().gaps("gw-cap").unwrap();
    let mut lost = 0;
    for seq in 1..=last {
        let in_gaps = gaps
            .iter()
            .filter(|g| g.first <= seq && seq <= g.last)
            .count();
        assert_eq!(
            in_gaps + stored.contains(&seq) as usize,
            1,
            "seq {seq}: stored or in exactly one gap, never both"
        );
        lost += in_gaps;
    }
    assert!(lost > 2000, "the cap dropped only {lost}");
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
        .arg("--data-dir")
        .arg(&cloud.data)
        .args(["gaps", "--device", "gw-cap"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(shown.lines().count(), gaps.len(), "{shown}");
    assert!(shown.contains(&format!("{}..={}", gaps[0].first, gaps[0].last)));
    // Alarms survive: the alarm point has no hole in time, while telemetry does.
    let hole = |point: &str| {
        let mut ts: Vec<i64> = rows
            .iter()
            .filter(|r| r.point == point)
            .map(|r| r.ts_ns)
            .collect();
        ts.sort();
        ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    };
    let (alarm_hole, telemetry_hole) = (hole("dev/p0"), hole("dev/p5"));
    assert!(
        alarm_hole < 1_000_000_000,
        "alarm samples were dropped: a {alarm_hole} ns hole"
    );
    assert!(
        telemetry_hole > 1_000_000_000,
        "telemetry should show the drop"
    );
    println!(
        "{last} samples: {} stored, {lost} dropped in {} gap records, alarms complete",
        stored.len(),
        gaps.len()
    );
}
