//! Acceptance 1 of the CAN issue: decoding checked against real DBC files from a public
//! project (the test files of Python's cantools, fetched by .ci/setup from PyPI) with an
//! independent implementation (cantools itself) on random payloads: Intel, Motorola,
//! signed, floats, multiplexed, value tables, extended ids and CAN FD.

mod common;
use common::*;
use fieldgate::field::can::db::CanDb;

/// DBC files of cantools' test suite that cover the layouts named in the issue.
const FILES: &[&str] = &[
    "abs.dbc",            // a real ABS ECU database: Intel and Motorola, many signals
    "motohawk.dbc",       // Motorola, signed
    "j1939.dbc",          // extended 29-bit ids
    "multiplex.dbc",      // multiplexed signals
    "multiplex_2.dbc",    // several multiplexers
    "signed.dbc",         // signed signals of every width
    "floating_point.dbc", // IEEE float and double signals
    "fd_test.dbc",        // CAN FD payloads up to 64 bytes
    "choices.dbc",        // value tables
    "msxii_system_can.dbc",
    "open_actuator.dbc",
];

struct Rng(u64);
impl Rng {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

#[test]
fn decoding_matches_cantools_on_public_dbc_files() {
    let dir = root().join(".venv/cantools-src/tests/files/dbc");
    assert!(
        dir.exists(),
        "{} is missing: run .ci/setup (it fetches cantools' sources from PyPI)",
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut compared, mut messages) = (0usize, 0usize);
    for file in FILES {
        let path = dir.join(file);
        let db = CanDb::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut frames = Vec::new();
        let mut expect = Vec::new();
        for m in db.messages() {
            messages += 1;
            for _ in 0..50 {
                let data: Vec<u8> = (0..m.size).map(|_| rng.byte()).collect();
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                frames.push(serde_json::json!({"id": m.id, "data": hex}));
                expect.push((
                    m.name.clone(),
                    m.decode(&data)
                        .into_iter()
                        .map(|d| (d.signal.name.clone(), d.value))
                        .collect::<Vec<_>>(),
                ));
            }
        }
        let frames_file = tmp.path().join("frames.json");
        std::fs::write(&frames_file, serde_json::Value::Array(frames).to_string()).unwrap();
        let out = std::process::Command::new(python())
            .arg(root().join("tests/peers/cantools_decode.py"))
            .arg(&path)
            .arg(&frames_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<Option<std::collections::HashMap<String, String>>> =
            serde_json::from_slice(&out.stdout).unwrap();
        for ((message, ours), theirs) in expect.iter().zip(theirs) {
            let Some(theirs) = theirs else { continue };
            assert_eq!(
                ours.len(),
                theirs.len(),
                "{file} {message}: ours {ours:?} cantools {theirs:?}"
            );
            for (name, v) in ours {
                let t: f64 = theirs[name].parse().unwrap();
                let same = (v - t).abs() <= 1e-9 * v.abs().max(1.0)
                    || (v.is_nan() && t.is_nan())
                    || *v == t;
                assert!(same, "{file} {message}.{name}: fieldgate {v}, cantools {t}");
                compared += 1;
            }
        }
    }
    assert!(compared > 4_000, "only {compared} signal values compared");
    println!(
        "{compared} signal values in {messages} messages of {} DBC files agree with cantools",
        FILES.len()
    );
}
