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

/// Decodes 50 random payloads of every message of `path` with fieldgate and with
/// cantools, and compares every value: (values compared, messages), or Err with why
/// cantools would not load the file.
fn crosscheck(
    path: &std::path::Path,
    rng: &mut Rng,
    tmp: &std::path::Path,
) -> Result<(usize, usize), String> {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let db = CanDb::load(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (mut compared, mut messages) = (0usize, 0usize);
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
    let frames_file = tmp.join("frames.json");
    std::fs::write(&frames_file, serde_json::Value::Array(frames).to_string()).unwrap();
    let out = std::process::Command::new(python())
        .arg(root().join("tests/peers/cantools_decode.py"))
        .arg(path)
        .arg(&frames_file)
        .output()
        .unwrap();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(why.lines().last().unwrap_or("").to_string());
    }
    #[derive(serde::Deserialize)]
    struct Peer {
        frames: Vec<Option<std::collections::HashMap<String, String>>>,
        twice: std::collections::HashMap<String, Vec<String>>,
    }
    let peer: Peer = serde_json::from_slice(&out.stdout).unwrap();
    for ((message, ours), theirs) in expect.iter().zip(peer.frames) {
        let Some(theirs) = theirs else { continue };
        // A name twice in a message: fieldgate keeps the first (with a warning),
        // cantools the last value; neither is compared.
        let twice = peer.twice.get(message).map(Vec::as_slice).unwrap_or(&[]);
        let theirs: std::collections::HashMap<_, _> = theirs
            .into_iter()
            .filter(|(n, _)| !twice.contains(n))
            .collect();
        let ours: Vec<_> = ours.iter().filter(|(n, _)| !twice.contains(n)).collect();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{file} {message}: ours {ours:?} cantools {theirs:?}"
        );
        for (name, v) in ours {
            let t: f64 = theirs[name.as_str()].parse().unwrap();
            let same =
                (v - t).abs() <= 1e-9 * v.abs().max(1.0) || (v.is_nan() && t.is_nan()) || *v == t;
            assert!(same, "{file} {message}.{name}: fieldgate {v}, cantools {t}");
            compared += 1;
        }
    }
    Ok((compared, messages))
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
        let (c, m) = crosscheck(&dir.join(file), &mut rng, tmp.path())
            .unwrap_or_else(|e| panic!("{file}: cantools: {e}"));
        compared += c;
        messages += m;
    }
    assert!(compared > 4_000, "only {compared} signal values compared");
    println!(
        "{compared} signal values in {messages} messages of {} DBC files agree with cantools",
        FILES.len()
    );
}

/// Real vehicle databases as their makers and reverse engineers wrote them (opendbc,
/// tests/fixtures/dbc/opendbc) and a published J1939 database (canmatrix,
/// tests/fixtures/dbc/j1939): every one loads (faulty messages skipped or kept with a
/// warning naming file and line), and wherever cantools loads the file too, every value
/// agrees.
#[test]
fn real_vehicle_dbc_files_load_and_agree_with_cantools() {
    let mut files: Vec<_> = ["opendbc", "j1939"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join("tests/fixtures/dbc").join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dbc"))
        .collect();
    files.sort();
    let mut j1939_checked = false;
    assert!(files.len() >= 15, "{} files", files.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut compared, mut checked, mut warned) = (0usize, 0usize, 0usize);
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let db = CanDb::load(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let strict = CanDb::load_with(path, fieldgate::dbc::Strictness::Strict);
        assert_eq!(
            strict.is_ok(),
            db.warnings().is_empty(),
            "{file}: strict refuses exactly the files with warnings"
        );
        for w in db.warnings() {
            assert!(w.starts_with(&path.display().to_string()), "{w}");
            println!("  warning: {}", w.rsplit('/').next().unwrap_or(w));
        }
        warned += usize::from(!db.warnings().is_empty());
        match crosscheck(path, &mut rng, tmp.path()) {
            Ok((c, m)) => {
                compared += c;
                checked += 1;
                j1939_checked |= file == "canmatrix-j1939.dbc" && c > 10_000;
                println!(
                    "{file}: {m} messages, {} warnings, {c} values agree",
                    db.warnings().len()
                );
            }
            Err(why) => println!(
                "{file}: {} messages, {} warnings; cantools refuses it: {why}",
                db.messages().count(),
                db.warnings().len()
            ),
        }
    }
    println!(
        "{} real files load ({warned} with warnings); {checked} of them also load in cantools, {compared} values agree",
        files.len()
    );
    assert!(
        j1939_checked,
        "the J1939 database is compared with cantools"
    );
    assert!(
        checked >= 15 && compared > 50_000,
        "{checked} files, {compared} values"
    );
}
