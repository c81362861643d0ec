//! A gateway that starts before its clock is synchronised marks its samples unsynced,
//! and corrects the buffered ones from the boot clock once the clock is set.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_before_clock_sync_are_corrected_in_the_buffer() {
    let (dir, mut cloud) = Cloud::with_device("gw-clock").await;
    let d = dir.path();
    // No network yet (as before NTP on a real box, where TLS would fail too).
    cloud.stop().await;
    let (_peer, port) = modbus_peer_tcp(&constant_points(2), d);
    let flag = d.join("synchronized");
    let extra = format!("[clock]\nsynced = {{ file = \"{}\" }}", flag.display());
    let cfg = gateway_config(
        d,
        "gw-clock",
        &[cloud.addr.to_string()],
        &extra,
        &constant_bus(port, 2, "100ms"),
    );
    let _gw = gateway(&cfg);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let synced_at = fieldgate::sample::now_ns();
    std::fs::write(&flag, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cloud.restart().await;
    wait_for(
        "samples from after the sync",
        Duration::from_secs(20),
        || {
            cloud
                .rows("gw-clock")
                .iter()
                .any(|r| r.time == "synced" && r.ts_ns > synced_at + 1_500_000_000)
        },
    );
    let rows = cloud.rows("gw-clock");
    let corrected: Vec<_> = rows.iter().filter(|r| r.time == "corrected").collect();
    assert!(
        corrected.len() >= 10,
        "{} corrected samples",
        corrected.len()
    );
    assert!(
        rows.iter().all(|r| r.time != "unsynced"),
        "every sample of this boot was corrected"
    );
    // Corrected timestamps come from the boot clock: before the sync, in poll order.
    for r in &corrected {
        assert!(
            r.ts_ns < synced_at + 1_100_000_000,
            "seq {} corrected to after the sync",
            r.seq
        );
        assert!(r.ts_ns > synced_at - 3_000_000_000);
    }
    let first_synced = rows
        .iter()
        .filter(|r| r.time == "synced")
        .map(|r| r.seq)
        .min()
        .unwrap();
    assert!(corrected.iter().all(|r| r.seq < first_synced));
}
