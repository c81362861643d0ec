//! The uplink's connection lifecycle: failover along the ordered broker list, the birth
//! message (version, config hash, buffer depth), and the offline state by last will
//! (unclean end) or by the gateway itself (clean stop).

mod common;
use common::*;
use std::time::Duration;

fn state(cloud: &Cloud, device: &str) -> Option<serde_json::Value> {
    let conn = rusqlite::Connection::open(fieldgate::cloud::store_path(&cloud.data)).unwrap();
    conn.query_row(
        "SELECT detail FROM device_state WHERE device = ?1",
        [device],
        |r| r.get::<_, String>(0),
    )
    .ok()
    .and_then(|t| serde_json::from_str(&t).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_birth_and_last_will() {
    let (dir, cloud) = Cloud::with_device("gw-life").await;
    let d = dir.path();
    let (_peer, port) = modbus_peer_tcp(&constant_points(2), d);
    // The first broker in the list never answers; the second is the cloud.
    let dead = format!("127.0.0.1:{}", free_port());
    let cfg = gateway_config(
        d,
        "gw-life",
        &[dead, cloud.addr.to_string()],
        "",
        &constant_bus(port, 2, "200ms"),
    );
    let mut gw = gateway(&cfg);
    wait_for(
        "data through the second broker",
        Duration::from_secs(20),
        || cloud.store().count("gw-life").unwrap() > 2,
    );
    let birth = state(&cloud, "gw-life").expect("birth message stored");
    assert_eq!(birth["state"], "online");
    assert_eq!(birth["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(birth["config_hash"].as_str().unwrap().len(), 16);
    assert!(birth["buffer_depth"].is_u64());
    let st = status(d).unwrap();
    assert_eq!(st["uplink"]["connected_to"], cloud.addr.to_string());

    // kill -9: the connection drops without DISCONNECT and the last will applies.
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(5)).unwrap();
    wait_for("the last will", Duration::from_secs(10), || {
        state(&cloud, "gw-life").is_some_and(|s| s["state"] == "offline")
    });

    // A restart is online again; a clean stop says offline itself.
    let mut gw = gateway(&cfg);
    wait_for("online again", Duration::from_secs(20), || {
        state(&cloud, "gw-life").is_some_and(|s| s["state"] == "online")
    });
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).unwrap().success());
    wait_for(
        "offline after a clean stop",
        Duration::from_secs(10),
        || state(&cloud, "gw-life").is_some_and(|s| s["state"] == "offline"),
    );
}
