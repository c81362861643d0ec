//! Authorization decisions per second at the API's decision point
//! (`iam::access::Iam::authorize`): a key three levels deep resolved (secret, ancestry),
//! its scope checked, the device's owner read, and the decision appended to the
//! hash-chained audit log; beside a plain single-row insert into the same database over
//! the same connection in the same run (the audit write is the cost). On SQLite (a
//! single node) and on PostgreSQL (the scale-out mode's API servers; a private server).
//!
//! Run: `cargo bench --bench iam` (about fifteen seconds).

#[path = "../tests/common/mod.rs"]
mod common;

use fieldgate::args;
use fieldgate::cloud::iam::access::{Iam, Op, Origin, Target};
use fieldgate::cloud::iam::keys::{Action, Scope};
use fieldgate::cloud::sql::Db;
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(3);

/// Decisions per second, each audited.
fn decisions(db: Db) -> f64 {
    let anchor = std::sync::Arc::new(fieldgate::cloud::iam::anchor::Anchor::ephemeral());
    let mut iam = Iam::with(db, anchor).unwrap();
    // Registered and claimed once per database (a second run finds it so).
    let _ = iam.devices().register("plant1-gw07", "CLAIM-CODE-07");
    let _ = iam
        .devices()
        .claim_for("acme", "plant1-gw07", "CLAIM-CODE-07");
    assert_eq!(
        iam.devices().owner("plant1-gw07").unwrap().as_deref(),
        Some("acme")
    );
    let now = fieldgate::sample::now_ns();
    let scope = Scope {
        tenant: "acme".into(),
        devices: vec!["plant1-*".into()],
        streams: vec!["*".into()],
        actions: vec![Action::Read, Action::Issue],
        cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        origins: vec![],
        not_before_ns: now - 1_000_000_000,
        not_after_ns: now + 3_600_000_000_000,
        min_resolution_s: 0,
        may_delegate: true,
    };
    let src = "10.1.2.3".parse().unwrap();
    let (_, root) = iam.keys().create(&scope).unwrap();
    // A key three levels down: every check walks two ancestors.
    let (_, child) = iam.keys().delegate(&root, &scope, src, None, now).unwrap();
    let (_, leaf) = iam.keys().delegate(&child, &scope, src, None, now).unwrap();
    let target = Target {
        stream: Some("meter/voltage_l1"),
        ..Target::device("acme", "plant1-gw07")
    };
    let from = Origin {
        source: src,
        web: None,
        now_ns: now,
    };
    let t = Instant::now();
    let mut n = 0u64;
    // One request's worth: the bearer key resolved, then the decision.
    while t.elapsed() < RUN {
        let caller = iam.authenticate(Some(&leaf), None, from).unwrap();
        iam.authorize(&caller, Op::Read, target, from).unwrap();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Plain single-row inserts per second (each its own transaction).
fn inserts(db: Db) -> f64 {
    let ddl = "CREATE TABLE plain(id INTEGER PRIMARY KEY, ts INTEGER, actor TEXT, resource TEXT, outcome TEXT)";
    let ddl = if db.is_postgres() {
        fieldgate::cloud::sql::postgres_ddl(ddl)
    } else {
        ddl.to_string()
    };
    db.execute(&ddl, &[]).unwrap();
    let t = Instant::now();
    let mut m = 0i64;
    while t.elapsed() < RUN {
        db.execute(
            "INSERT INTO plain(ts, actor, resource, outcome) VALUES ($1, 'key:0011223344556677', 'acme/plant1-gw07/meter/voltage_l1', 'allowed')",
            args![m],
        )
        .unwrap();
        m += 1;
    }
    m as f64 / t.elapsed().as_secs_f64()
}

fn sqlite(path: &std::path::Path) -> Db {
    let db = Db::sqlite(path).unwrap();
    if let Db::Sqlite(c) = &db {
        c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    }
    db
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lite = (
        decisions(sqlite(&d.join("iam.db"))),
        inserts(sqlite(&d.join("plain.db"))),
    );
    let pg = common::Postgres::start(&d.join("pg"));
    let post = (
        decisions(Db::postgres(&pg.url(), None).unwrap()),
        inserts(Db::postgres(&pg.url(), None).unwrap()),
    );
    // Two API servers' decision points at once: they share one audit chain, whose
    // appends the advisory lock serializes.
    let url = pg.url();
    let pair: f64 = std::thread::scope(|s| {
        let both: Vec<_> = (0..2)
            .map(|_| s.spawn(|| decisions(Db::postgres(&url, None).unwrap())))
            .collect();
        both.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("IAM benchmarks: authorization decisions, each audited (a key 3 levels deep, the device's owner read)");
    for (name, (decided, inserted)) in [
        ("SQLite (WAL, synchronous=NORMAL)", lite),
        ("PostgreSQL (loopback, synchronous_commit on)", post),
    ] {
        println!("  {name}");
        println!("    decisions                                {decided:>10.0}/s");
        println!("    plain single-row inserts, same database  {inserted:>10.0}/s (the floor the audit write sets)");
    }
    println!(
        "    two decision points at once (two API servers, one audit chain): {pair:.0}/s together"
    );
}
