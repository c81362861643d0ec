//! CAN decoding benchmarks. Figures beside the physical limit (the most frames a bus can
//! carry) and an independent decoder (Python's cantools) measured in the same run on the
//! same frames.
//!
//! Run: `cargo bench --bench can_decode` (release build; about 20 seconds).

use fieldgate::clock::Stamp;
use fieldgate::config::GatewayConfig;
use fieldgate::field::can::bus::CanBus;
use fieldgate::field::can::db::CanDb;
use fieldgate::field::can::decoder::Decoder;
use fieldgate::field::can::frame::{Frame, Received};
use fieldgate::field::can::log::LogReader;
use fieldgate::sample::TimeQuality;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bits of a classical extended data frame with 8 bytes, before bit stuffing:
/// SOF, 29-bit id with SRR/IDE/RTR, r1 r0, DLC, 64 data, CRC 15 + delimiter, ACK 2, EOF 7,
/// interframe space 3.
const EXT_FRAME_BITS: f64 = 131.0;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A J1939 traffic mix: the fixture's messages with data that changes every frame.
fn frames(n: usize) -> Vec<Frame> {
    let base: Vec<Frame> = LogReader::open(&root().join("tests/fixtures/can/site.log"))
        .unwrap()
        .filter_map(|r| match r.ok()?.received {
            Received::Data(f) if !f.fd => Some(f),
            _ => None,
        })
        .collect();
    (0..n)
        .map(|i| {
            let mut f = base[i % base.len()].clone();
            // Vary the signal bytes, not the transport-protocol headers.
            if f.id & 0x00FF_0000 != 0x00EB_0000 && f.id & 0x00FF_0000 != 0x00EC_0000 {
                f.data[3] = i as u8;
                f.data[4] = (i >> 8) as u8;
            }
            f.ts_ns = i as i64 * 100_000;
            f
        })
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    const N: usize = 1_000_000;
    let dbc = root().join("tests/fixtures/can/site.dbc");
    let db = CanDb::load(&dbc).unwrap();
    let fs = frames(N);
    println!("fieldgate CAN benchmarks: {N} frames of a J1939 mix (EEC1, ET1, DM1 by BAM, a standard-id message)");

    // (a) Decoding alone.
    let mut d = Decoder::new(db.clone(), true);
    let t = Instant::now();
    let mut signals = 0usize;
    for f in &fs {
        if let fieldgate::field::can::decoder::Decoded::Message { signals: s, .. } = d.feed(f) {
            signals += s.len();
        }
    }
    let decode = rate(N, t.elapsed());

    // (b) The gateway's per-frame work: decode, emission policy, samples for the buffer.
    let cfg_text = format!(
        "[gateway]\ndevice_id = \"bench\"\n[uplink]\nbrokers = [\"127.0.0.1:1\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [[can]]\nname = \"engine\"\nreplay = {{ file = \"x.log\" }}\ndbc = [\"{}\"]\nj1939 = true\n",
        dbc.display()
    );
    let cfg = GatewayConfig::parse(&cfg_text, Path::new("bench.toml")).unwrap();
    let clock = std::sync::Arc::new(fieldgate::clock::Clock::new(
        fieldgate::clock::SyncCheck::Always,
    ));
    let mut bus = CanBus::new(cfg.can[0].get_ref(), Default::default(), clock);
    let t = Instant::now();
    let mut samples = 0usize;
    for f in &fs {
        let stamp = Stamp {
            wall_ns: f.ts_ns,
            mono_ns: 0,
            time: TimeQuality::Synced,
        };
        samples += bus.handle(Received::Data(f.clone()), stamp).len();
    }
    let pipeline = rate(N, t.elapsed());

    // (c) Reading a candump log.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        for f in &fs {
            let data: String = f.data.iter().map(|b| format!("{b:02X}")).collect();
            writeln!(
                w,
                "({}.{:06}) can0 {:08X}#{data}",
                f.ts_ns / 1_000_000_000,
                (f.ts_ns / 1000) % 1_000_000,
                f.id
            )
            .unwrap();
        }
    }
    let t = Instant::now();
    let lines = LogReader::open(&log).unwrap().filter(|r| r.is_ok()).count();
    let parse = rate(lines, t.elapsed());

    // (d) The peer on the frames both decode with a DBC message (EEC1, ET1, Drive):
    // fieldgate on all of them, cantools on 100,000 (it is slower).
    let plain: Vec<Frame> = fs
        .iter()
        .filter(|f| matches!(f.id, 0x0CF00400 | 0x0CF00401 | 0x18FEEE00 | 0x123))
        .cloned()
        .collect();
    let mut d = Decoder::new(db.clone(), true);
    let t = Instant::now();
    for f in &plain {
        std::hint::black_box(d.feed(f));
    }
    let ours = rate(plain.len(), t.elapsed());
    let peer = cantools_rate(&dbc, &plain[..100_000]);

    let bus_max = 1e6 / EXT_FRAME_BITS;
    println!();
    println!("  physical limit: a 1 Mbit/s bus carries at most {bus_max:>10.0} frames/s (8-byte extended frames, no stuffing)");
    println!("  decode (DBC by PGN, J1939 transport, DM1)  {decode:>10.0} frames/s = {:>5.0} saturated 1 Mbit/s buses per core ({signals} signals)", decode / bus_max);
    println!("  decode + emission policy + samples         {pipeline:>10.0} frames/s = {:>5.0} buses per core ({samples} samples with the default policy)", pipeline / bus_max);
    println!("  candump log reading (socketcan::dump)      {parse:>10.0} lines/s");
    match peer {
        Some(p) => {
            println!("  signal frames only, fieldgate              {ours:>10.0} frames/s");
            println!("  signal frames only, Python cantools (peer) {p:>10.0} frames/s (fieldgate: {:.0}x)", ours / p)
        }
        None => println!("  peer: cantools not found (.venv; run .ci/setup) — no peer figure"),
    }
}

/// Frames per second cantools decodes, or None without the venv.
fn cantools_rate(dbc: &Path, fs: &[Frame]) -> Option<f64> {
    let py = root().join(".venv/bin/python");
    if !py.exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let input = dir.path().join("frames.txt");
    let text: String = fs
        .iter()
        .map(|f| {
            format!(
                "{:x} {}\n",
                f.id,
                f.data
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        })
        .collect();
    std::fs::write(&input, text).ok()?;
    let script = r#"
import sys, time, cantools
db = cantools.database.load_file(sys.argv[1], strict=False)
frames = [(int(a, 16), bytes.fromhex(b)) for a, b in (l.split() for l in open(sys.argv[2]))]
# J1939: cantools matches by frame id; map each extended id to the message of its PGN.
by_pgn = {(m.frame_id >> 8) & 0x3FFFF: m for m in db.messages if m.is_extended_frame}
by_id = {m.frame_id: m for m in db.messages if not m.is_extended_frame}
t = time.perf_counter()
n = 0
for fid, data in frames:
    m = by_pgn.get((fid >> 8) & 0x3FFFF) if fid > 0x7FF else by_id.get(fid)
    m.decode(data, decode_choices=True)
    n += 1
print(n / (time.perf_counter() - t))
"#;
    let out = std::process::Command::new(py)
        .args(["-c", script])
        .arg(dbc)
        .arg(&input)
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
