//! One storage suite, run against both stores: SQLite (single node) and PostgreSQL (the
//! scale-out mode, a private server started from Debian's package). Exactly once per
//! (device, sequence number) also between two writers racing with the same batches,
//! every value kind, gaps less what arrived anyway, latest values, downsampled history,
//! device state and rejected payloads.

mod common;
use common::*;
use fieldgate::cloud::store::{History, Inserted, Store};
use fieldgate::protocol::{Batch, Gap, Sequenced, StateMessage};
use fieldgate::sample::{Quality, Sample, TimeQuality, Value};
use serde_json::json;

fn sample(seq: u64, point: &str, ts_ns: i64, value: Value) -> Sequenced {
    Sequenced {
        seq,
        sample: Sample {
            point: point.into(),
            ts_ns,
            value,
            quality: Quality::Good,
            time: TimeQuality::Synced,
        },
    }
}

/// `n` float samples of `point` for seq `first..first+n`, one a second from `t0`,
/// value = seq.
fn run(first: u64, n: u64, point: &str, t0: i64) -> Vec<Sequenced> {
    (first..first + n)
        .map(|s| {
            sample(
                s,
                point,
                t0 + (s - first) as i64 * 1_000_000_000,
                Value::Float(s as f64),
            )
        })
        .collect()
}

/// The suite; `open` makes a new connection to the same store.
fn suite(open: &dyn Fn() -> Store) {
    let mut st = open();
    let t0 = 1_789_999_980_000_000_000i64; // a minute boundary
    assert_eq!(t0 % 60_000_000_000, 0);

    // Every value kind comes back as it went in.
    let kinds = Batch {
        samples: vec![
            sample(1, "k/float", t0, Value::Float(-1.5)),
            sample(2, "k/int", t0, Value::Int(i64::MIN)),
            sample(3, "k/uint", t0, Value::UInt(u64::MAX)),
            sample(4, "k/bool", t0, Value::Bool(true)),
            sample(
                5,
                "k/str",
                t0,
                Value::Str("Störung: 'quoted' \"text\"".into()),
            ),
            sample(6, "k/bytes", t0, Value::Bytes(vec![0, 1, 254, 255])),
            sample(7, "k/empty", t0, Value::Empty),
        ],
        gaps: vec![],
    };
    assert_eq!(st.insert("kinds", &kinds).unwrap().new, 7);
    let values: Vec<_> = st
        .query("kinds", None, None, 100)
        .unwrap()
        .into_iter()
        .map(|r| (r.point, r.value))
        .collect();
    assert_eq!(
        values,
        vec![
            ("k/float".to_string(), json!(-1.5)),
            ("k/int".into(), json!(i64::MIN)),
            ("k/uint".into(), json!(u64::MAX)),
            ("k/bool".into(), json!(true)),
            ("k/str".into(), json!("Störung: 'quoted' \"text\"")),
            ("k/bytes".into(), json!("0001feff")),
            ("k/empty".into(), json!(null)),
        ]
    );

    // Exactly once per (device, seq); a gap is recorded once.
    let b = Batch {
        samples: run(1, 300, "m/p", t0),
        gaps: vec![Gap {
            first: 301,
            last: 310,
        }],
    };
    assert_eq!(
        st.insert("gw", &b).unwrap(),
        Inserted {
            new: 300,
            duplicates: 0,
            gaps: 1
        }
    );
    assert_eq!(
        st.insert("gw", &b).unwrap(),
        Inserted {
            new: 0,
            duplicates: 300,
            gaps: 0
        }
    );
    // The same seq numbers from another device are its own.
    assert_eq!(st.insert("gw2", &b).unwrap().new, 300);
    assert_eq!(st.count("gw").unwrap(), 300);

    // Two writers racing with overlapping batches store each sample once.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut s = open();
            std::thread::spawn(move || {
                let mut new = 0;
                for k in 0..20u64 {
                    let first = 1000 + k * 50 + w * 25; // overlaps the other writer's
                    let b = Batch {
                        samples: run(first, 50, "m/race", t0),
                        gaps: vec![],
                    };
                    new += s.insert("racer", &b).unwrap().new;
                }
                new
            })
        })
        .collect();
    let new: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let stored = st.count("racer").unwrap();
    assert_eq!(stored, 20 * 50 + 25, "the union of both writers' ranges");
    assert_eq!(new as u64, stored, "no sample counted as new twice");

    // Gaps less what arrived anyway.
    st.insert(
        "gw",
        &Batch {
            samples: vec![sample(305, "m/p", t0, Value::Float(1.0))],
            gaps: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        st.gaps("gw").unwrap(),
        vec![
            Gap {
                first: 301,
                last: 304
            },
            Gap {
                first: 306,
                last: 310
            }
        ]
    );

    // Queries: time order, a point, a start, a limit.
    let rows = st
        .query("gw", Some("m/p"), Some(t0 + 10_000_000_000), 5)
        .unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [11, 12, 13, 14, 15]);
    assert_eq!(rows[0].quality, "good");
    assert_eq!(rows[0].time, "synced");

    // Streams and latest values.
    let streams = st.streams("gw").unwrap();
    assert_eq!(
        streams,
        vec![("m/p".to_string(), 301, t0 + 299_000_000_000)]
    );
    let latest = st.latest("gw").unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].seq, latest[0].value.clone()),
        (300, json!(300.0))
    );

    // History: raw, and in one-minute buckets of the values 1..=300 (one a second).
    match st
        .history("gw2", "m/p", t0, t0 + 4_000_000_000, None, 100)
        .unwrap()
    {
        History::Raw(r) => assert_eq!(r.len(), 5),
        other => panic!("{other:?}"),
    }
    match st
        .history(
            "gw2",
            "m/p",
            t0,
            t0 + 299_000_000_000,
            Some(60_000_000_000),
            100,
        )
        .unwrap()
    {
        History::Buckets(b) => {
            assert_eq!(b.len(), 5);
            for (i, bucket) in b.iter().enumerate() {
                let lo = 1.0 + 60.0 * i as f64;
                assert_eq!(bucket.ts_ns, t0 + i as i64 * 60_000_000_000);
                assert_eq!(
                    (bucket.count, bucket.min, bucket.max),
                    (60, lo, lo + 59.0),
                    "{bucket:?}"
                );
                assert!((bucket.avg - (lo + 29.5)).abs() < 1e-9, "{bucket:?}");
            }
        }
        other => panic!("{other:?}"),
    }
    // Text values are not averaged.
    match st
        .history("kinds", "k/str", t0, t0, Some(60_000_000_000), 10)
        .unwrap()
    {
        History::Buckets(b) => assert!(b.is_empty()),
        other => panic!("{other:?}"),
    }

    // Arrival order across devices.
    let tail = st.tail(0, 10_000).unwrap();
    assert_eq!(tail.len(), 7 + 301 + 300 + 1025);
    assert!(tail.windows(2).all(|w| w[0].0 <= w[1].0));

    // Device state and rejected payloads.
    assert_eq!(st.state("gw").unwrap(), None);
    st.set_state(
        "gw",
        &StateMessage {
            state: "online".into(),
            version: Some("1.0.0".into()),
            config_hash: None,
            buffer_depth: Some(0),
        },
    )
    .unwrap();
    assert_eq!(st.state("gw").unwrap().as_deref(), Some("online"));
    st.reject(Some("gw"), "fieldgate/gw/data", "bad magic", &[0xde, 0xad])
        .unwrap();
    st.reject(None, "elsewhere", "not a fieldgate topic", &[0u8; 100_000])
        .unwrap();
    assert_eq!(
        st.rejections(10).unwrap(),
        vec![
            (None, "elsewhere".into(), "not a fieldgate topic".into()),
            (
                Some("gw".to_string()),
                "fieldgate/gw/data".into(),
                "bad magic".into()
            ),
        ]
    );
}

#[test]
fn sqlite_passes_the_storage_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    suite(&|| Store::open(&path).unwrap());
}

#[test]
fn postgresql_passes_the_storage_suite() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.url();
    suite(&|| Store::postgres(&url, None).unwrap());
}

#[test]
fn postgresql_over_tls_passes_the_storage_suite_and_plain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The server's certificate from a CA of our own (it names 127.0.0.1).
    let pki =
        fieldgate::cloud::pki::Pki::open_or_create(&dir.path().join("pki"), &["127.0.0.1".into()])
            .unwrap();
    let pg = Postgres::start_with(
        &dir.path().join("pg"),
        Some((&pki.server_cert(), &pki.server_key())),
    );
    let url = format!("{}&sslmode=require", pg.url());
    let ca = pki.ca_cert();
    suite(&|| Store::postgres(&url, Some(&ca)).unwrap());

    // Without TLS the server refuses; without our CA the client refuses the server.
    let plain = format!("{}&sslmode=disable", pg.url());
    let err = Store::postgres(&plain, None).err().expect("refused");
    assert!(
        err.to_string().contains("no encryption") || err.to_string().contains("pg_hba"),
        "{err}"
    );
    let other = fieldgate::cloud::pki::Pki::open_or_create(
        &dir.path().join("other-pki"),
        &["127.0.0.1".into()],
    )
    .unwrap();
    let err = Store::postgres(&url, Some(&other.ca_cert()))
        .err()
        .expect("an unknown CA is refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
