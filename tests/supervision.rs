//! Supervision under the sd_notify protocol, with the test as the service manager: READY
//! only once the buffer is open and the sources run, STATUS lines, watchdog pings that
//! stop while a task is stuck, RELOADING/READY around a SIGHUP, STOPPING on SIGTERM.
//! And the reload itself: unchanged buses keep running, changed ones restart, an invalid
//! file is refused, nothing buffered is lost.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The manager's end of NOTIFY_SOCKET: collects every message the daemon sends.
struct Manager {
    sock: UnixDatagram,
    pub seen: Vec<(Instant, String)>,
}

impl Manager {
    fn new(path: &std::path::Path) -> Manager {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager {
            sock,
            seen: Vec::new(),
        }
    }
    /// Reads messages for `d`.
    fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    self.seen.push((Instant::now(), line.to_string()));
                }
            }
        }
    }
    fn wait_for(&mut self, what: &str, limit: Duration) -> Instant {
        let end = Instant::now() + limit;
        loop {
            if let Some((t, _)) = self.seen.iter().find(|(_, l)| l.starts_with(what)) {
                return *t;
            }
            assert!(
                Instant::now() < end,
                "no {what} within {limit:?}; got {:?}",
                self.lines()
            );
            self.pump(Duration::from_millis(100));
        }
    }
    fn count(&self, what: &str) -> usize {
        self.seen
            .iter()
            .filter(|(_, l)| l.starts_with(what))
            .count()
    }
    fn lines(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }
}

fn spawn_supervised(
    cfg: &std::path::Path,
    notify: &std::path::Path,
    log: &std::path::Path,
) -> Proc {
    Proc(
        fieldgate_cmd()
            .args(["run", "--config"])
            .arg(cfg)
            .env("NOTIFY_SOCKET", notify)
            .env("WATCHDOG_USEC", "2000000")
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_a_stuck_buffer() {
    let (dir, cloud) = Cloud::with_device("gw-sd").await;
    let d = dir.path();
    let (_peer, port) = modbus_peer_tcp(&constant_points(2), d);
    let cfg = gateway_config(
        d,
        "gw-sd",
        &[cloud.addr.to_string()],
        "",
        &constant_bus(port, 2, "200ms"),
    );
    let mut mgr = Manager::new(&d.join("notify.sock"));
    let mut gw = spawn_supervised(&cfg, &d.join("notify.sock"), &d.join("gw.log"));

    mgr.wait_for("READY=1", Duration::from_secs(15));
    assert!(
        d.join("state/buffer.db").exists(),
        "READY comes after the buffer is open"
    );
    mgr.wait_for("STATUS=uplink connected to", Duration::from_secs(15));
    mgr.pump(Duration::from_secs(3));
    let pings = mgr.count("WATCHDOG=1");
    assert!(
        pings >= 3,
        "watchdog pings at a quarter of WatchdogSec=2s: {pings} in 3 s; {:?}",
        mgr.lines()
    );

    // Another process locks the buffer database: the buffer thread hangs in SQLite's busy
    // wait, and the daemon must stop feeding the watchdog.
    let lock = rusqlite::Connection::open(d.join("state/buffer.db")).unwrap();
    lock.execute_batch("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE;")
        .unwrap();
    mgr.pump(Duration::from_secs(2)); // let pings already under way arrive
    let before = mgr.count("WATCHDOG=1");
    mgr.pump(Duration::from_secs(6));
    let during = mgr.count("WATCHDOG=1") - before;
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    mgr.pump(Duration::from_secs(8));
    let after = mgr.count("WATCHDOG=1") - before - during;
    // Healthy, it pings every 0.5 s (12 in 6 s); a probe already under way when the lock
    // came may still land under a loaded machine.
    assert!(
        during <= 2,
        "{during} watchdog pings while the buffer was stuck"
    );
    assert!(
        after >= 2,
        "pings resume once the buffer answers again: {after}"
    );
    let log = std::fs::read_to_string(d.join("gw.log")).unwrap();
    assert!(
        log.contains("a task is stuck: withholding the watchdog ping"),
        "{log}"
    );

    gw.signal("TERM");
    assert!(gw
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    mgr.wait_for("STOPPING=1", Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_buses_and_refuses_a_broken_config() {
    let (dir, cloud) = Cloud::with_device("gw-hup").await;
    let d = dir.path();
    let (mut peer, port) = modbus_peer_tcp(&constant_points(4), d);
    let bus = |name: &str, dev: &str, n: u16| {
        let mut s = format!(
            "[[bus]]\nname = \"{name}\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\n[[bus.device]]\nname = \"{dev}\"\npoll_interval = \"100ms\"\n"
        );
        for i in 0..n {
            s += &format!("[[bus.device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\n");
        }
        s
    };
    let cfg = gateway_config(
        d,
        "gw-hup",
        &[cloud.addr.to_string()],
        "",
        &(bus("a", "keep", 2) + &bus("b", "change", 1)),
    );
    let original = std::fs::read_to_string(&cfg).unwrap();
    let mut mgr = Manager::new(&d.join("notify.sock"));
    let mut gw = spawn_supervised(&cfg, &d.join("notify.sock"), &d.join("gw.log"));
    mgr.wait_for("READY=1", Duration::from_secs(15));
    let polls = |dev: &str| {
        status(d)
            .map(|s| s["devices"][dev]["polls"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    wait_for("polls of both buses", Duration::from_secs(10), || {
        polls("keep") > 10 && polls("change") > 10
    });

    // Bus b gets a second point and bus c appears; bus a is untouched.
    std::fs::write(
        &cfg,
        original.replace(
            &bus("b", "change", 1),
            &(bus("b", "change", 2) + &bus("c", "new", 1)),
        ),
    )
    .unwrap();
    let keep_before = polls("keep");
    gw.signal("HUP");
    wait_for("the reload", Duration::from_secs(10), || {
        std::fs::read_to_string(d.join("gw.log"))
            .unwrap()
            .contains("config reloaded")
    });
    let log = std::fs::read_to_string(d.join("gw.log")).unwrap();
    assert!(
        log.contains("kept=1 restarted=1 stopped=0 started=1"),
        "{log}"
    );
    assert!(
        polls("keep") >= keep_before,
        "bus a kept running, its counters were not reset"
    );
    wait_for(
        "the new point and the new bus in the cloud",
        Duration::from_secs(15),
        || {
            let rows = cloud.rows("gw-hup");
            rows.iter().any(|r| r.point == "change/p1") && rows.iter().any(|r| r.point == "new/p0")
        },
    );
    mgr.pump(Duration::from_millis(500));
    let reloads = mgr.count("RELOADING=1");
    assert_eq!(reloads, 1, "{:?}", mgr.lines());
    assert!(mgr
        .seen
        .iter()
        .any(|(_, l)| l.starts_with("MONOTONIC_USEC=")));
    assert!(mgr.count("READY=1") >= 2);

    // A broken file is refused; everything keeps running on the old config.
    std::fs::write(&cfg, "[gateway\nthis is not toml").unwrap();
    gw.signal("HUP");
    wait_for("the refusal", Duration::from_secs(10), || {
        std::fs::read_to_string(d.join("gw.log"))
            .unwrap()
            .contains("reload refused")
    });
    let new_before = polls("new");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        polls("new") > new_before,
        "still polling after a refused reload"
    );

    // Nothing buffered was lost across the reloads.
    let _ = peer.0.kill();
    let _ = peer.0.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for("the drain", Duration::from_secs(30), || {
        status(d).is_some_and(|s| s["buffer"]["depth"] == 0 && s["buffer"]["uncommitted"] == 0)
    });
    gw.signal("TERM");
    assert!(gw
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    let last = last_seq(d);
    let stored: std::collections::BTreeSet<u64> =
        cloud.rows("gw-hup").iter().map(|r| r.seq).collect();
    assert_eq!(
        stored.len() as u64,
        last,
        "every accepted sample arrived once"
    );
}

fn http_get(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_on_a_local_port() {
    let (dir, cloud) = Cloud::with_device("gw-prom").await;
    let d = dir.path();
    let (_peer, port) = modbus_peer_tcp(&constant_points(2), d);
    let cfg = gateway_config(
        d,
        "gw-prom",
        &[cloud.addr.to_string()],
        "",
        &constant_bus(port, 2, "100ms"),
    );
    let mport = free_port();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "status_socket = \"state/status.sock\"",
        &format!("status_socket = \"state/status.sock\"\nmetrics_listen = \"127.0.0.1:{mport}\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let _gw = gateway(&cfg);
    wait_for("samples acknowledged", Duration::from_secs(20), || {
        status(d).is_some_and(|s| s["uplink"]["acked_samples"].as_u64().unwrap_or(0) > 5)
    });
    let page = http_get(mport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("fieldgate_uplink_connected 1"), "{page}");
    assert!(
        page.contains("fieldgate_device_polls_total{device=\"dev\"}"),
        "{page}"
    );
    // Hostile or wrong requests get a 404 or a closed connection, and the server goes on.
    assert!(http_get(mport, b"GET /admin HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let _ = http_get(mport, &vec![b'A'; 100_000]);
    let _ = http_get(mport, b"\x00\xff\r\n\r\n");
    assert!(http_get(mport, b"GET /metrics HTTP/1.0\r\n\r\n").contains("fieldgate_buffer_depth"));
}
