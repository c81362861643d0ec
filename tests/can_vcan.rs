//! Acceptance 3 of the CAN issue: the real SocketCAN reader on a real kernel CAN stack.
//! This machine's kernel has no CAN, so the test boots a Debian kernel under qemu
//! (`hil/can-vm.sh`) and runs itself inside, where FIELDGATE_IN_VM is set and vcan0 is
//! up. In the guest: can-utils' canplayer plays tests/fixtures/can/site.log onto vcan0
//! (classical, CAN FD and J1939 multi-packet frames); the gateway's CAN bus task
//! receives through the kernel filters built from the DBC, decodes, and appends to the
//! SQLite buffer; the interface is taken down and up again, and frames flow after it.

mod common;
use common::*;
use fieldgate::buffer::{Buffer, BufferSettings};
use fieldgate::config::GatewayConfig;
use fieldgate::field::can::bus::CanBus;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn socketcan_reader_on_vcan_in_a_vm() {
    if !in_vm() {
        let stdout = rerun_in_vm(
            "socketcan_reader_on_vcan_in_a_vm",
            &[
                root().join("tests/fixtures/can"),
                std::path::PathBuf::from(env!("CARGO_BIN_EXE_fieldgate")),
            ],
            120,
        );
        assert!(stdout.contains("guest scenario: PASS"), "{stdout}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(guest_scenario());
    println!("guest scenario: PASS");
}

fn sh(cmd: &str) {
    let st = Command::new("/bin/sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}: {st}");
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn guest_scenario() {
    let t0 = Instant::now();
    let fixtures = root().join("tests/fixtures/can");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        format!(
            r#"[gateway]
device_id = "vm-gw"
state_dir = "state"
[uplink]
brokers = ["127.0.0.1:1"]
ca = "ca.crt"
cert = "d.crt"
key = "d.key"
[[can]]
name = "engine"
interface = "vcan0"
dbc = ["{dbc}"]
j1939 = true
[can.emit]
min_interval = "0s"
"#,
            dbc = fixtures.join("site.dbc").display()
        ),
    )
    .unwrap();
    let cfg = GatewayConfig::load(&cfg_path).unwrap();
    let clock = always_synced();
    let (buffer, _thread) = Buffer::start(BufferSettings {
        path: dir.path().join("buffer.db"),
        max_bytes: 64 << 20,
        max_age: None,
        commit_interval: Duration::from_millis(20),
        boot_id: clock.boot_id.clone(),
    })
    .unwrap();
    let status = fieldgate::field::can::bus::CanStatus::default();
    let bus = CanBus::new(cfg.can[0].get_ref(), status.clone(), clock);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(bus.run(buffer.clone(), stop.clone()));
    let st = || {
        status
            .lock()
            .unwrap()
            .get("engine")
            .cloned()
            .unwrap_or_default()
    };
    until("the socket", Duration::from_secs(10), || st().state == "up").await;

    // `fieldgate can dump` watches the same interface, unfiltered.
    let dump_out = dir.path().join("dump.jsonl");
    let mut dump = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
        .args([
            "can", "dump", "--iface", "vcan0", "--j1939", "--format", "json", "--dbc",
        ])
        .arg(fixtures.join("site.dbc"))
        .stdout(std::fs::File::create(&dump_out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("dump.err")).unwrap())
        .spawn()
        .unwrap();
    // Under software emulation the dump takes a few seconds to open its socket.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 15 frames; CCVS (18FEF100) is in no DBC: the kernel filter keeps it out.
    sh(&format!(
        "canplayer -t -I {} vcan0=can0",
        fixtures.join("site.log").display()
    ));
    until("14 frames", Duration::from_secs(10), || st().frames == 14).await;
    assert_eq!(st().unknown, 0, "the kernel filtered what no DBC describes");
    assert_eq!(st().transfers_dropped, 1);
    let dumped_lines = || {
        std::fs::read_to_string(&dump_out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(5);
    while dumped_lines() < 10 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dumped_lines() >= 10, // 15 frames; 5 are inner J1939 transport packets
        "can dump printed {} lines; its stderr: {}",
        dumped_lines(),
        std::fs::read_to_string(dir.path().join("dump.err")).unwrap_or_default()
    );
    dump.kill().unwrap();
    let _ = dump.wait();
    let dumped: Vec<serde_json::Value> = std::fs::read_to_string(&dump_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("can dump printed {} frames", dumped.len());
    let eec1 = dumped
        .iter()
        .find(|f| f["message"] == "EEC1" && f["source"] == 1)
        .expect("EEC1 from 01 in the dump");
    assert_eq!(eec1["signals"]["EngineSpeed"]["value"], 2000.0);
    assert!(
        dumped
            .iter()
            .any(|f| f["id"] == "18FEF100" && f["message"].is_null()),
        "the dump is unfiltered: CCVS shows as a frame without a DBC message"
    );
    assert!(dumped
        .iter()
        .any(|f| f["message"] == "DM1" && f["dtcs"][1]["spn"] == 110));

    // The interface goes down and comes back; the reader survives it.
    sh("ip link set vcan0 down");
    until("state down", Duration::from_secs(5), || {
        st().state == "down"
    })
    .await;
    sh("ip link set vcan0 up");
    sh("cansend vcan0 0CF00400#F0FFA0C05DFFFFFF"); // 0x5DC0 × 0.125 = 3000 rpm
    until(
        "a frame after the link came back",
        Duration::from_secs(5),
        || st().frames == 15,
    )
    .await;
    // A bus-off error frame (CAN_ERR_FLAG | CAN_ERR_BUSOFF), as a controller reports it.
    sh("cansend vcan0 20000040#0000000000000000");
    until("the error frame", Duration::from_secs(5), || {
        st().error_frames == 1
    })
    .await;
    assert_eq!(st().bus_off, 1);

    stop.cancel();
    task.await.unwrap();
    buffer.flush().await;
    let rows = buffer.fetch(0, u64::MAX, 10_000).await;
    let values = |point: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.sample.point == point)
            .map(|r| r.sample.value.to_string())
            .collect()
    };
    for r in &rows {
        println!(
            "  {} = {} ({})",
            r.sample.point, r.sample.value, r.sample.quality
        );
    }
    assert_eq!(
        values("engine/EEC1@00/EngineSpeed"),
        ["1000", "2000", "3000"]
    );
    assert_eq!(values("engine/EEC1@01/EngineSpeed"), ["2000"]);
    assert_eq!(values("engine/ET1@00/EngineCoolantTemperature"), ["90"]);
    assert_eq!(values("engine/Drive/Torque"), ["-20"]);
    assert_eq!(values("engine/Drive/State"), ["\"Ready\""]);
    assert_eq!(values("engine/BmsCells/Cell0"), ["3.3"], "the CAN FD frame");
    assert_eq!(values("engine/BmsCells/Cell31"), ["3.904"]);
    assert_eq!(values("engine/DM1@00/spn100.fmi1"), ["3", "4"]);
    assert_eq!(values("engine/DM1@00/spn110.fmi16"), ["1", "0"]);
    assert_eq!(values("engine/DM1@03/spn177.fmi0"), ["2"]);
    assert_eq!(
        values("engine/bus/state"),
        ["\"up\"", "\"down\"", "\"up\"", "\"bus-off\""]
    );
    println!(
        "guest scenario: {} samples in the buffer, {:.2} s",
        rows.len(),
        t0.elapsed().as_secs_f64()
    );
}
