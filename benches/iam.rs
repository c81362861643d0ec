//! Authorization decisions per second at the API's decision point
//! (`iam::access::Iam::authorize`): a key three levels deep resolved (secret, ancestry),
//! its scope checked, the device's owner read, and the decision appended to the
//! hash-chained audit log; beside a plain insert of the same rows into the same kind of
//! database in the same run (the audit write is the cost).
//!
//! Run: `cargo bench --bench iam` (a few seconds).

use fieldgate::cloud::iam::access::{Iam, Op, Origin, Target};
use fieldgate::cloud::iam::keys::{Action, Scope};
use std::time::{Duration, Instant};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("iam.db")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let mut iam = Iam::with(fieldgate::cloud::sql::Db::Sqlite(db)).unwrap();
    iam.devices()
        .register("plant1-gw07", "CLAIM-CODE-07")
        .unwrap();
    iam.devices()
        .claim_for("acme", "plant1-gw07", "CLAIM-CODE-07")
        .unwrap();
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
    let (_, child) = iam.keys().delegate(&root, &scope, src, now).unwrap();
    let (_, leaf) = iam.keys().delegate(&child, &scope, src, now).unwrap();
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
    while t.elapsed() < Duration::from_secs(3) {
        let caller = iam.authenticate(Some(&leaf), None, from).unwrap();
        iam.authorize(&caller, Op::Read, target, from).unwrap();
        n += 1;
    }
    let decisions = n as f64 / t.elapsed().as_secs_f64();

    let plain = rusqlite::Connection::open(dir.path().join("plain.db")).unwrap();
    plain.pragma_update(None, "journal_mode", "WAL").unwrap();
    plain.pragma_update(None, "synchronous", "NORMAL").unwrap();
    plain
        .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, ts INTEGER, actor TEXT, resource TEXT, outcome TEXT)")
        .unwrap();
    let t = Instant::now();
    let mut m = 0u64;
    while t.elapsed() < Duration::from_secs(3) {
        plain
            .execute(
                "INSERT INTO t(ts, actor, resource, outcome) VALUES (?1, 'key:0011223344556677', 'acme/plant1-gw07/meter/voltage_l1', 'allowed')",
                [m as i64],
            )
            .unwrap();
        m += 1;
    }
    let inserts = m as f64 / t.elapsed().as_secs_f64();
    println!("IAM benchmarks (SQLite, WAL, synchronous=NORMAL)");
    println!(
        "  authorization decisions, each audited      {decisions:>10.0}/s (key 3 levels deep, device owner read)"
    );
    println!("  plain single-row inserts, same database     {inserts:>10.0}/s (the floor the audit write sets)");
}
