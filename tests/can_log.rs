//! Acceptance 2 of the CAN issue on a J1939 candump log (tests/fixtures/can/site.log),
//! with the values computed by hand from the bit layouts in site.dbc:
//!
//! - EEC1 (PGN 61444) from source 00: speed 0x1F40 × 0.125 = 1000 rpm, torque 0xA0 − 125
//!   = 35 %, mode 0 "LowIdle"; from source 01: 0x3E80 × 0.125 = 2000 rpm, mode 1.
//! - ET1 from 00: 0x82 − 40 = 90 °C. Drive (0x123, Motorola, signed): 0xFF38 = −200 ×
//!   0.1 = −20 Nm, state 1 "Ready". BmsCells (CAN FD, 64 bytes): 0x0CE4 = 3.3 V in
//!   bytes 0-1, 0x0F40 = 3.904 V in bytes 62-63.
//! - DM1 from 00 by BAM (10 bytes in two packets): SPN 100 FMI 1 ×3 and SPN 110 FMI 16
//!   ×1; DM1 from 03 in one frame: SPN 177 FMI 0 ×2; the same BAM from 01 has packet 3
//!   after packet 1 and is dropped; later a DM1 from 00 holds only SPN 100 FMI 1 ×4.

mod common;
use common::*;
use std::time::Duration;

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/can")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn can_decode_prints_hand_computed_values_and_dm1_codes() {
    let out = fieldgate_out(&[
        "can",
        "decode",
        "--dbc",
        &fixture("site.dbc"),
        "--j1939",
        "--format",
        "json",
        &fixture("site.log"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let frames: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |msg: &str, source: Option<u64>| -> Vec<&serde_json::Value> {
        frames
            .iter()
            .filter(|f| f["message"] == msg && source.is_none_or(|s| f["source"] == s))
            .collect()
    };
    let sig = |f: &serde_json::Value, s: &str| f["signals"][s]["value"].as_f64().unwrap();
    let eec1_00 = find("EEC1", Some(0));
    assert_eq!(eec1_00.len(), 2);
    assert_eq!(sig(eec1_00[0], "EngineSpeed"), 1000.0);
    assert_eq!(sig(eec1_00[0], "ActualEnginePercentTorque"), 35.0);
    assert_eq!(
        eec1_00[0]["signals"]["EngineTorqueMode"]["label"],
        "LowIdle"
    );
    assert_eq!(eec1_00[0]["signals"]["EngineSpeed"]["unit"], "rpm");
    assert_eq!(eec1_00[0]["id"], "0CF00400");
    assert_eq!(eec1_00[0]["ts"], 1700000000.0);
    assert_eq!(sig(eec1_00[1], "EngineSpeed"), 2000.0);
    let eec1_01 = find("EEC1", Some(1));
    assert_eq!(sig(eec1_01[0], "EngineSpeed"), 2000.0);
    assert_eq!(
        eec1_01[0]["signals"]["EngineTorqueMode"]["label"],
        "AccelPedal"
    );
    assert_eq!(
        sig(find("ET1", Some(0))[0], "EngineCoolantTemperature"),
        90.0
    );
    let drive = find("Drive", None)[0];
    assert_eq!(sig(drive, "Torque"), -20.0);
    assert_eq!(drive["signals"]["State"]["label"], "Ready");
    let cells = find("BmsCells", None)[0];
    assert_eq!(cells["fd"], true);
    assert!((sig(cells, "Cell0") - 3.3).abs() < 1e-9);
    assert!((sig(cells, "Cell31") - 3.904).abs() < 1e-9);

    let dm1_00 = find("DM1", Some(0));
    assert_eq!(
        dm1_00.len(),
        2,
        "the BAM transfer and the later single frame"
    );
    assert_eq!(
        dm1_00[0]["dtcs"],
        serde_json::json!([
            {"spn": 100, "fmi": 1, "occurrences": 3},
            {"spn": 110, "fmi": 16, "occurrences": 1}
        ])
    );
    assert_eq!(
        dm1_00[1]["dtcs"],
        serde_json::json!([{"spn": 100, "fmi": 1, "occurrences": 4}])
    );
    assert_eq!(
        find("DM1", Some(3))[0]["dtcs"],
        serde_json::json!([{"spn": 177, "fmi": 0, "occurrences": 2}])
    );
    assert!(
        find("DM1", Some(1)).is_empty(),
        "the broken transfer is dropped"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PGN 65226 from 01 dropped: packet out of sequence"),
        "{stderr}"
    );
    assert!(stderr.contains("1 without a DBC message"), "{stderr}");

    // Text for people: units and labels beside the values.
    let out = fieldgate_out(&[
        "can",
        "decode",
        "--dbc",
        &fixture("site.dbc"),
        "--j1939",
        &fixture("site.log"),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("EEC1 from 01: EngineTorqueMode=1 (AccelPedal) ActualEnginePercentTorque=0 % EngineSpeed=2000 rpm"),
        "{text}"
    );
    assert!(text.contains("Cell0=3.3 V"), "{text}");
    assert!(
        text.contains("DM1 from 00: SPN 100 FMI 1 occurrences 3; SPN 110 FMI 16 occurrences 1;"),
        "{text}"
    );
}

#[test]
fn can_decode_reports_bad_lines_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("damaged.log");
    std::fs::write(
        &log,
        "(1700000000.000000) can0 0CF00400#F0FFA0401FFFFFFF\n\
         (1700000000.000100) can0 0CF0040\n\
         (17000000.1) can0 123#00\n\
         (1700000000.000200) can0 123#FF38020000000000\n",
    )
    .unwrap();
    let out = fieldgate_out(&[
        "can",
        "decode",
        "--dbc",
        &fixture("site.dbc"),
        "--j1939",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("damaged.log:2: the frame is not ID#DATA"),
        "{stderr}"
    );
    assert!(stderr.contains("damaged.log:3: the timestamp"), "{stderr}");
    assert!(stderr.contains("2 bad lines"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let bad_dbc = dir.path().join("bad.dbc");
    std::fs::write(
        &bad_dbc,
        "VERSION \"\"\n\nBO_ 12 X: 8 ECU\n SG_ broken 0|8@1+ (1,0) [0|0] \"\"\n",
    )
    .unwrap();
    let out = fieldgate_out(&[
        "can",
        "decode",
        "--dbc",
        bad_dbc.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.dbc:4:"), "{stderr}");

    // No DBC at all: a clear error, not a silent run of undecoded frames.
    let out = fieldgate_out(&["can", "decode", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dbc FILE"),
        "{out:?}"
    );
}

/// The replay source runs a captured log through the whole pipeline: decoding,
/// emission, buffer, uplink, cloud store. Two source addresses give two point ids. The
/// DBC file has faults besides (a signal past its message's end, a signal name twice, a
/// second definition of EEC1's id): `fieldgate check` lists them and the running
/// daemon decodes the rest of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_j1939_log_reaches_the_cloud_with_source_addresses_in_point_ids() {
    let (dir, cloud) = Cloud::with_device("can-gw").await;
    let site = std::fs::read_to_string(fixture("site.dbc")).unwrap();
    // After the file's own messages: the first definition of an id is the one kept.
    let at = site.find("\nVAL_ ").unwrap() + 1;
    let faulty = format!(
        "{}BO_ 2566844670 Faulty: 8 Engine\n SG_ PastTheEnd : 60|16@1+ (1,0) [0|0] \"\" Vector__XXX\n SG_ Twice : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n SG_ Twice : 8|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\nBO_ 2364540158 EEC1_again: 8 Engine\n SG_ Other : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX\n\n{}",
        &site[..at],
        &site[at..]
    );
    let dbc = dir.path().join("site-faulty.dbc");
    std::fs::write(&dbc, faulty).unwrap();
    let cfg = gateway_config(
        dir.path(),
        "can-gw",
        &[cloud.addr.to_string()],
        "",
        &format!(
            r#"[clock]
synced = "always"

[[can]]
name = "engine"
replay = {{ file = "{log}", speed = "fast" }}
dbc = ["{dbc}"]
j1939 = true

[[can.signal]]
match = "BmsCells.*"
ignore = true
"#,
            log = fixture("site.log"),
            dbc = dbc.display()
        ),
    );
    let check = fieldgate_out(&["check", "--config-only", "--config", cfg.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(listed.contains("3 warning(s)"), "{listed}");
    for fault in [
        "message Faulty (0x18fef0fe): signal PastTheEnd (start bit 60, 16 bits) does not fit",
        "message Faulty (0x18fef0fe): signal Twice is in the message twice",
        "message EEC1_again (0xcf004fe): its CAN id is EEC1's too",
    ] {
        assert!(listed.contains(fault), "{fault}: {listed}");
    }
    let mut gw = gateway(&cfg);
    let value = |rows: &[fieldgate::cloud::store::Row], point: &str| -> Vec<serde_json::Value> {
        rows.iter()
            .filter(|r| r.point == point)
            .map(|r| r.value.clone())
            .collect()
    };
    wait_for("DM1 codes in the cloud", Duration::from_secs(20), || {
        value(&cloud.rows("can-gw"), "engine/DM1@00/spn110.fmi16").len() == 2
    });
    let rows = cloud.rows("can-gw");
    assert_eq!(value(&rows, "engine/EEC1@00/EngineSpeed"), [1000.0, 2000.0]);
    assert_eq!(value(&rows, "engine/EEC1@01/EngineSpeed"), [2000.0]);
    // Unchanged, but 1000 s later: the default 60 s heartbeat sends it again.
    assert_eq!(
        value(&rows, "engine/EEC1@00/EngineTorqueMode"),
        ["LowIdle", "LowIdle"]
    );
    assert_eq!(
        value(&rows, "engine/ET1@00/EngineCoolantTemperature"),
        [90.0]
    );
    assert_eq!(value(&rows, "engine/Drive/Torque"), [-20.0]);
    assert_eq!(value(&rows, "engine/Drive/State"), ["Ready"]);
    assert_eq!(value(&rows, "engine/DM1@00/spn100.fmi1"), [3, 4]);
    assert_eq!(
        value(&rows, "engine/DM1@00/spn110.fmi16"),
        [1, 0],
        "cleared"
    );
    assert_eq!(value(&rows, "engine/DM1@03/spn177.fmi0"), [2]);
    assert!(
        value(&rows, "engine/BmsCells/Cell0").is_empty(),
        "ignored by policy"
    );
    let speed = rows
        .iter()
        .find(|r| r.point == "engine/EEC1@00/EngineSpeed")
        .unwrap();
    assert_eq!(
        speed.ts_ns, 1_700_000_000_000_000_000,
        "the log's timestamp"
    );
    let st = status(dir.path()).unwrap();
    let can = &st["can"]["engine"];
    assert_eq!(can["state"], "finished");
    // 15 lines; CCVS (18FEF100) is in no DBC and filtered out as the kernel would.
    assert_eq!(can["frames"], 14);
    assert_eq!(can["unknown"], 0);
    assert_eq!(can["transfers_dropped"], 1);
    gw.terminate();
}

/// A real file with faults (opendbc's Chrysler database: ids over 0x7FF without the
/// extended flag): `fieldgate check` passes and lists each warning with file and line;
/// with `strict_dbc = true` the same file is refused at the first fault.
#[test]
fn a_faulty_real_dbc_loads_with_warnings_and_strict_mode_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let dbc = root().join("tests/fixtures/dbc/opendbc/chrysler_cusw.dbc");
    let config = |strict: bool| {
        gateway_config(
            dir.path(),
            "can-gw",
            &["127.0.0.1:1".to_string()],
            "",
            &format!(
                "[[can]]\nname = \"body\"\nreplay = {{ file = \"{log}\" }}\ndbc = [\"{dbc}\"]\nstrict_dbc = {strict}\n",
                log = fixture("site.log"),
                dbc = dbc.display()
            ),
        )
    };
    let cfg = config(false);
    let out = fieldgate_out(&["check", "--config-only", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("can body: 26 messages from 1 DBC file(s), 2 warning(s)"),
        "{text}"
    );
    let warning = format!("    warning: {}:", dbc.display());
    assert!(text.contains(&warning), "{text}");
    assert!(text.contains("message BSM_LEFT: id 103596083"), "{text}");
    assert!(text.contains("read as the extended id 0x62cc033"), "{text}");

    let cfg = config(true);
    let out = fieldgate_out(&["check", "--config-only", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("chrysler_cusw.dbc:") && err.contains("is over 0x7FF"),
        "{err}"
    );
}
