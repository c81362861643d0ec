//! Mutation fuzzing of every parser of outside input, bounded so it runs in CI: the wire
//! format, gateway configs, register decoding and the ingest's MQTT session. Nothing may
//! panic; errors are fine. Deeper, coverage-guided runs: tests/fuzz (cargo fuzz).

use fieldgate::config::GatewayConfig;
use fieldgate::field::modbus::{codec, DataType, WordOrder};
use fieldgate::protocol::{Batch, Gap, Sequenced};
use fieldgate::sample::{Quality, Sample, TimeQuality, Value};
use std::path::Path;

/// xorshift64*: a small deterministic generator, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: flip bits, overwrite, insert, delete, duplicate or truncate.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = [0, 0xff, 0x7f, 0x80, b'"', b'[', b'=', b'\n'][rng.below(8)];
            }
            2 => {
                let n = rng.below(8);
                for _ in 0..n {
                    v.insert(at.min(v.len()), rng.next() as u8);
                }
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 if !v.is_empty() => {
                let end = (at + rng.below(32)).min(v.len());
                let chunk = v[at.min(end)..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn sample_batch() -> Vec<u8> {
    Batch {
        samples: (0..20)
            .map(|i| Sequenced {
                seq: 100 + i * 2,
                sample: Sample {
                    point: format!("dev/p{}", i % 4),
                    ts_ns: 1_700_000_000_000_000_000 + i as i64,
                    value: match i % 5 {
                        0 => Value::Float(1.5),
                        1 => Value::Int(-7),
                        2 => Value::Str("text".into()),
                        3 => Value::Bytes(vec![1, 2, 3]),
                        _ => Value::Empty,
                    },
                    quality: if i % 3 == 0 {
                        Quality::Invalid("x".into())
                    } else {
                        Quality::Good
                    },
                    time: TimeQuality::Synced,
                },
            })
            .collect(),
        gaps: vec![Gap { first: 1, last: 5 }],
    }
    .encode()
}

#[test]
fn wire_format_decoder_never_panics() {
    let mut rng = Rng(0x1234_5678);
    let seed = sample_batch();
    let mut ok = 0;
    for _ in 0..20_000 {
        if Batch::decode(&mutate(&mut rng, &seed)).is_ok() {
            ok += 1;
        }
    }
    assert!(ok < 20_000, "mutations must produce errors too");
}

#[test]
fn downlink_commands_and_replies_never_panic() {
    use fieldgate::downlink::{Command, Reply};
    let mut rng = Rng(0x0dd_c0de);
    let seeds = [
        Command::new("cmd-1", "ping", serde_json::json!({"a": [1, 2.5, "x"]})).encode(),
        Reply::done("cmd-1", serde_json::json!({"version": "0.1"})).encode(),
        Reply::failed("cmd-1", "no".into()).encode(),
    ];
    let (mut commands, mut replies) = (0, 0);
    for i in 0..20_000 {
        let m = mutate(&mut rng, &seeds[i % seeds.len()]);
        commands += Command::decode(&m).is_ok() as u32;
        replies += Reply::decode(&m).is_ok() as u32;
    }
    assert!(commands > 0 && commands < 20_000, "{commands}");
    assert!(replies > 0 && replies < 20_000, "{replies}");
}

#[test]
fn release_metadata_never_panics() {
    use fieldgate::release::{generate_key, Envelope, Root, SigningKey};
    let k = SigningKey::from_pkcs8(&generate_key().unwrap()).unwrap();
    let id = k.id();
    let doc = serde_json::json!({
        "type": "fieldgate-root", "v": 1, "version": 1, "expires_ns": i64::MAX,
        "keys": {id.clone(): fieldgate::hex::encode(&k.public())},
        "root": {"keys": [id.clone()], "threshold": 1},
        "release": {"keys": [id], "threshold": 1},
    });
    let mut env = Envelope::of(&doc);
    k.sign(&mut env);
    let seed = env.to_bytes();
    let root = Root::trust_first(&seed).unwrap();
    let mut rng = Rng(0x7e1e_a5e5);
    let mut refused = 0;
    for _ in 0..5_000 {
        let m = mutate(&mut rng, &seed);
        refused += Root::trust_first(&m).is_err() as u32;
        let _ = root.rotate(&m);
        let _ = root.verify_release(&m, 0, "hw", None, 0);
    }
    assert!(refused > 0);
}

#[test]
fn config_parser_never_panics() {
    let seed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml")).unwrap();
    let mut rng = Rng(0xdead_beef);
    for _ in 0..3_000 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, &seed)).into_owned();
        if let Err(e) = GatewayConfig::parse(&text, Path::new("fuzz.toml")) {
            for err in &e.0 {
                assert!(err.line <= text.lines().count() + 1, "{err}");
                assert!(
                    !err.message.is_empty(),
                    "empty message for:\n{text}\n{err:?}"
                );
            }
        }
    }
}

#[test]
fn register_decoder_never_panics() {
    let types = [
        DataType::Bool,
        DataType::Bit,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::String,
    ];
    let mut rng = Rng(42);
    for _ in 0..50_000 {
        let words: Vec<u16> = (0..rng.below(6)).map(|_| rng.next() as u16).collect();
        let ty = types[rng.below(types.len())];
        let order = WordOrder::ALL[rng.below(4)];
        let _ = codec::decode(&words, ty, order, rng.below(20) as u8);
    }
}

/// The ingest's MQTT handling after a valid TLS handshake: mutated CONNECT, PUBLISH,
/// PINGREQ and DISCONNECT streams must end in an error or a clean close, never a panic.
#[tokio::test]
async fn ingest_session_never_panics() {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
    use rumqttc::mqttbytes::QoS;
    let dir = tempfile::tempdir().unwrap();
    let (_, ingest) = fieldgate::cloud::open(dir.path(), &[]).unwrap();
    let mut seed = BytesMut::new();
    for p in [
        Packet::Connect(Connect::new("gw")),
        Packet::Publish({
            let mut p = Publish::new("fg/v1/gw/data", QoS::AtLeastOnce, sample_batch());
            p.pkid = 1;
            p
        }),
        Packet::Publish(Publish::new(
            "fg/v1/gw/state",
            QoS::AtMostOnce,
            b"{\"state\":\"online\"}".to_vec(),
        )),
        Packet::PingReq,
        Packet::Disconnect,
    ] {
        p.write(&mut seed, 1 << 20).unwrap();
    }
    let mut rng = Rng(7);
    for _ in 0..1_500 {
        let input = mutate(&mut rng, &seed);
        let io = tokio::io::join(std::io::Cursor::new(input), tokio::io::sink());
        let _ =
            fieldgate::cloud::ingest::endpoint::session("gw".parse().unwrap(), ingest.clone(), io)
                .await;
    }
}

#[test]
fn dbc_parser_never_panics() {
    use fieldgate::field::can::db::CanDb;
    let seed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/can/site.dbc"))
            .unwrap();
    let mut rng = Rng(0xC0FF_EE00);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3_000 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, &seed)).into_owned();
        match CanDb::parse(&text, "fuzz.dbc") {
            Ok(db) => {
                ok += 1;
                // Whatever was accepted decodes any payload without panicking.
                for m in db.messages() {
                    for len in [0, 3, 8, 64] {
                        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                        let _ = m.decode(&data);
                    }
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().starts_with("fuzz.dbc"), "{e}");
            }
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

#[test]
fn candump_log_and_j1939_decoder_never_panic() {
    use fieldgate::field::can::{db::CanDb, decoder::Decoder, frame::Received, log::LogReader};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/can");
    let seed = std::fs::read(dir.join("site.log")).unwrap();
    let db = CanDb::load(&dir.join("site.dbc")).unwrap();
    let mut rng = Rng(0x0CF0_0400);
    let mut decoder = Decoder::new(db, true);
    let (mut good, mut bad) = (0, 0);
    for _ in 0..2_000 {
        let log = mutate(&mut rng, &seed);
        for rec in LogReader::from_reader(&log[..], "fuzz.log") {
            match rec {
                Ok(r) => {
                    good += 1;
                    if let Received::Data(f) = r.received {
                        let _ = decoder.feed(&f);
                    }
                }
                Err(e) => {
                    bad += 1;
                    assert!(e.line >= 1 && !e.problem.is_empty());
                }
            }
        }
    }
    assert!(good > 0 && bad > 0, "good {good}, bad {bad}");
}
