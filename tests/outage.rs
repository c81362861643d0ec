//! Acceptance 3: with the cloud stopped for a while and restarted, and with the gateway
//! killed with SIGKILL at random moments several times, every accepted sample is in the
//! cloud store exactly once, with its original timestamp and value.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_or_duplicated() {
    let (dir, mut cloud) = Cloud::with_device("gw-outage").await;
    let d = dir.path();
    let t0 = fieldgate::sample::now_ns();
    let (mut peer, port) = modbus_peer_tcp(&constant_points(10), d);
    let cfg = gateway_config(
        d,
        "gw-outage",
        &[cloud.addr.to_string()],
        "",
        &constant_bus(port, 10, "100ms"),
    );

    let mut gw = gateway(&cfg);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The cloud goes away for a while; the gateway keeps polling into its buffer.
    cloud.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cloud.restart().await;
    // SIGKILL at pseudo-random moments (fixed seed), restarting each time.
    let mut x: u64 = 42;
    for round in 0..5 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = 150 + (x >> 33) % 900;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        gw.signal("KILL");
        gw.wait_exit(Duration::from_secs(5))
            .expect("SIGKILL ends the gateway");
        if round == 2 {
            // one kill during an outage too
            cloud.stop().await;
            gw = gateway(&cfg);
            tokio::time::sleep(Duration::from_millis(700)).await;
            cloud.restart().await;
        } else {
            gw = gateway(&cfg);
        }
    }
    // Stop producing good samples, let the gateway drain, then stop it cleanly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = peer.0.kill();
    let _ = peer.0.wait();
    // Let the poller notice and report the device gone before judging the drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for(
        "the gateway's buffer to drain",
        Duration::from_secs(30),
        || {
            status(d).is_some_and(|s| {
                s["buffer"]["depth"] == 0
                    && s["buffer"]["uncommitted"] == 0
                    && s["uplink"]["connected_to"].is_string()
            })
        },
    );
    gw.signal("TERM");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("SIGTERM stops the gateway in seconds");
    assert!(st.success(), "clean exit, got {st:?}");
    let t1 = fieldgate::sample::now_ns();

    let last = last_seq(d);
    let rows = cloud.rows("gw-outage");
    let by_seq: BTreeMap<u64, _> = rows.iter().map(|r| (r.seq, r)).collect();
    assert_eq!(by_seq.len(), rows.len(), "each sequence number stored once");
    let missing: Vec<u64> = (1..=last).filter(|s| !by_seq.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {last} accepted samples never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        cloud.store().gaps("gw-outage").unwrap().is_empty(),
        "no drops without a cap"
    );
    let mut last_ts: BTreeMap<&str, i64> = BTreeMap::new();
    let mut good = 0;
    for r in by_seq.values() {
        assert!(
            r.ts_ns >= t0 && r.ts_ns <= t1,
            "seq {} keeps a timestamp from the run",
            r.seq
        );
        let prev = last_ts.insert(&r.point, r.ts_ns).unwrap_or(0);
        assert!(
            r.ts_ns > prev,
            "{}: timestamps are the original poll times, increasing",
            r.point
        );
        if r.quality == "good" {
            let i: u64 = r.point.trim_start_matches("dev/p").parse().unwrap();
            assert_eq!(r.value, serde_json::json!(1000 + i), "seq {}", r.seq);
            good += 1;
        }
    }
    assert!(
        good > 300,
        "only {good} good samples: the test did not exercise much"
    );
    println!(
        "{last} samples accepted, all stored exactly once ({good} good); 5 SIGKILLs, 2 outages"
    );
}
