//! Databases of the previous release open in this one and lose nothing; databases of a
//! newer release are refused by name (unless it left them readable). The fixtures in
//! tests/fixtures/release-0.1 were written by release 0.1 itself (see its README).

mod common;
use common::*;
use fieldgate::buffer::Outbox;
use fieldgate::schema::{stamp_as, stamp_sqlite};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(part: &str) -> PathBuf {
    root().join("tests/fixtures/release-0.1").join(part)
}

/// A copy of the fixture directory `part` in `into`. Its database must be there: an
/// empty directory would only show that a new database starts empty.
fn copy_fixture(part: &str, into: &Path) {
    let db = if part == "gateway" {
        "buffer.db"
    } else {
        "cloud.db"
    };
    assert!(
        fixture(part).join(db).is_file(),
        "the fixture {part}/{db} is missing (is it committed? *.db is ignored elsewhere)"
    );
    std::fs::create_dir_all(into).unwrap();
    for e in std::fs::read_dir(fixture(part)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), into.join(e.file_name())).unwrap();
    }
}

fn expected(part: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(part).join("expected.json")).unwrap()).unwrap()
}

#[test]
fn a_release_0_1_outbox_reads_back_as_it_did_and_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("gateway", dir.path());
    let path = dir.path().join("buffer.db");
    let want = expected("gateway");
    let o = Outbox::open(&path, 1 << 30, None, "boot-b").unwrap();
    let rows: Vec<Value> = o
        .fetch(0, u64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .map(|r| json!({"seq": r.seq, "sample": r.sample}))
        .collect();
    assert_eq!(Value::Array(rows), want["samples"]);
    let gaps: Vec<Value> = o
        .gaps(1000)
        .unwrap()
        .into_iter()
        .map(|g| json!([g.first, g.last]))
        .collect();
    assert_eq!(Value::Array(gaps), want["gaps"]);
    let stats = o.stats().unwrap();
    assert_eq!(json!(stats.last_seq), want["last_seq"]);
    assert_eq!(json!(stats.dropped), want["dropped"]);
    drop(o);
    let c = rusqlite::Connection::open(&path).unwrap();
    let stamp = stamp_sqlite(&c).unwrap().expect("stamped");
    assert_eq!(stamp.version, fieldgate::buffer::outbox::SCHEMA.latest());
    // Every migration of the outbox so far is one release 0.1's successor can read back.
    assert_eq!(stamp.readable_from, 1);
}

/// A rolled-back release meets an outbox a newer one migrated: it opens it if the newer
/// release said it may, and refuses it by name if not, changing nothing.
#[test]
fn a_newer_outbox_is_refused_by_name_unless_it_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("gateway", dir.path());
    let path = dir.path().join("buffer.db");
    let latest = fieldgate::buffer::outbox::SCHEMA.latest();
    drop(Outbox::open(&path, 1 << 30, None, "boot-b").unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    stamp_as(&c, latest + 1, 1, "9.9.0").unwrap();
    let o = Outbox::open(&path, 1 << 30, None, "boot-b").expect("still readable");
    assert_eq!(o.fetch(0, u64::MAX, 10_000).unwrap().len(), 44);
    drop(o);
    stamp_as(&c, latest + 1, latest + 1, "9.9.0").unwrap();
    let e = Outbox::open(&path, 1 << 30, None, "boot-b")
        .err()
        .expect("refused")
        .to_string();
    for part in [
        &format!("holds gateway buffer schema version {}", latest + 1),
        "written by fieldgate 9.9.0",
        &format!("knows versions up to {latest}"),
        "Nothing was changed",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    assert_eq!(stamp_sqlite(&c).unwrap().unwrap().version, latest + 1);
}

/// The gateway started on a release-0.1 outbox delivers every buffered sample and gap
/// record to the cloud, each sample once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_0_1_outbox_is_delivered_exactly_once() {
    let (dir, cloud) = Cloud::with_device("gw-fixture").await;
    let d = dir.path();
    copy_fixture("gateway", &d.join("state"));
    let cfg = gateway_config(d, "gw-fixture", &[cloud.addr.to_string()], "", "");
    let want = expected("gateway");
    let samples = want["samples"].as_array().unwrap();
    let mut gw = gateway(&cfg);
    wait_for(
        "the fixture's samples in the cloud",
        Duration::from_secs(30),
        || cloud.rows("gw-fixture").len() >= samples.len(),
    );
    let rows = cloud.rows("gw-fixture");
    assert_eq!(rows.len(), samples.len(), "each once");
    for s in samples {
        let seq = s["seq"].as_u64().unwrap();
        let r = rows.iter().find(|r| r.seq == seq).expect("delivered");
        assert_eq!(json!(r.point), s["sample"]["point"]);
        assert_eq!(json!(r.ts_ns), s["sample"]["ts_ns"]);
    }
    wait_for(
        "the fixture's gaps in the cloud",
        Duration::from_secs(10),
        || {
            let gaps: Vec<Value> = cloud
                .store()
                .gaps("gw-fixture")
                .unwrap()
                .into_iter()
                .map(|g| json!([g.first, g.last]))
                .collect();
            Value::Array(gaps) == want["gaps"]
        },
    );
    gw.terminate();
}

/// A release-0.1 cloud data directory: samples, state and refusals read back as 0.1 read
/// them; the owner signs in, the key still works, the audit chain still verifies.
#[test]
fn a_release_0_1_cloud_reads_back_and_its_audit_chain_verifies() {
    use fieldgate::cloud::iam::access::{Iam, Op, Origin, Target};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cloud");
    copy_fixture("cloud", &data);
    let want = expected("cloud");
    let store = fieldgate::cloud::store::Store::open(&data.join("cloud.db")).unwrap();
    let rows = store.query("fixture-gw", None, None, 1000).unwrap();
    assert_eq!(serde_json::to_value(&rows).unwrap(), want["samples"]);
    let gaps: Vec<Value> = store
        .gaps("fixture-gw")
        .unwrap()
        .into_iter()
        .map(|g| json!([g.first, g.last]))
        .collect();
    assert_eq!(Value::Array(gaps), want["gaps"]);
    assert_eq!(json!(store.state("fixture-gw").unwrap()), want["state"]);
    assert_eq!(
        serde_json::to_value(store.rejections(10).unwrap()).unwrap(),
        want["rejections"]
    );
    let db = fieldgate::cloud::sql::Db::sqlite(&data.join("cloud.db")).unwrap();
    let anchor = fieldgate::cloud::iam::anchor::Anchor::open(&data, &db).unwrap();
    assert_eq!(
        format!(
            "{:?}",
            fieldgate::cloud::iam::audit::verify(&db, &anchor).unwrap()
        ),
        "Intact { entries: 4 }"
    );
    let mut iam = Iam::with(db, std::sync::Arc::new(anchor)).unwrap();
    let from = Origin {
        source: "127.0.0.1".parse().unwrap(),
        web: None,
        now_ns: fieldgate::sample::now_ns(),
    };
    iam.login("owner@fixture.example", "fixture password 1", from)
        .unwrap();
    let key = std::fs::read_to_string(data.join("key.txt")).unwrap();
    let caller = iam.authenticate(Some(key.trim()), None, from).unwrap();
    iam.authorize(
        &caller,
        Op::Read,
        Target::device("fixture", "fixture-gw"),
        from,
    )
    .unwrap();
    // The new entries extend the old chain.
    assert!(format!(
        "{:?}",
        fieldgate::cloud::iam::audit::verify(
            iam.db(),
            &std::sync::Arc::new(
                fieldgate::cloud::iam::anchor::Anchor::open(&data, iam.db()).unwrap()
            )
        )
        .unwrap()
    )
    .starts_with("Intact"));
    let c = rusqlite::Connection::open(data.join("cloud.db")).unwrap();
    let stamp = stamp_sqlite(&c).unwrap().unwrap();
    assert_eq!(stamp.version, fieldgate::cloud::schema::CLOUD.latest());
}

#[test]
fn a_newer_cloud_database_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let latest = fieldgate::cloud::schema::CLOUD.latest();
    drop(fieldgate::cloud::sql::Db::sqlite(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    stamp_as(&c, latest + 3, latest + 2, "9.9.0").unwrap();
    let e = fieldgate::cloud::store::Store::open(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "holds cloud database schema version {}",
            latest + 3
        )) && e.contains(&format!("knows versions up to {latest}")),
        "{e}"
    );
}

/// PostgreSQL: a database with release 0.1's tables and no stamp is stamped without a
/// change to its rows; one a newer release stamped is refused by name.
#[test]
fn postgresql_is_stamped_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.url();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // What release 0.1 made, and a sample in its shape.
    for step in fieldgate::cloud::schema::CLOUD.migrations[0].steps {
        let ddl = match step.postgres {
            Some(ddl) => ddl.to_string(),
            None => fieldgate::cloud::sql::postgres_ddl(step.sql),
        };
        client.batch_execute(&ddl).unwrap();
    }
    client
        .execute(
            "INSERT INTO samples(device, seq, point, ts_ns, kind, fval, quality, time, received_ns)
             VALUES ('gw', 1, 'p', 5, 'float', 2.5, '\"Good\"', 'synced', 6)",
            &[],
        )
        .unwrap();
    let store = fieldgate::cloud::store::Store::postgres(&url, None).unwrap();
    let rows = store.query("gw", None, None, 10).unwrap();
    assert_eq!((rows.len(), rows[0].value.clone()), (1, json!(2.5)));
    drop(store);
    let latest = fieldgate::cloud::schema::CLOUD.latest();
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, i64::from(latest));
    client
        .execute(
            "UPDATE schema_version SET version = $1, readable_from = $1, written_by = '9.9.0'",
            &[&i64::from(latest + 1)],
        )
        .unwrap();
    let e = fieldgate::cloud::sql::Db::postgres(&url, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "holds cloud database schema version {}",
            latest + 1
        )),
        "{e}"
    );
}

/// Tables are made by the schemas' migrations only (`cloud::schema`, the outbox's
/// `SCHEMA`), each by one owner (`cloud::schema`'s unit test lists them).
#[test]
fn no_table_is_created_outside_the_schemas() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let allowed = [
        "src/schema.rs",
        "src/cloud/schema.rs",
        "src/buffer/outbox.rs",
    ];
    for f in files {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may make scratch tables.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        if !allowed.contains(&rel.as_str()) {
            assert!(
                !code.to_uppercase().contains("CREATE TABLE"),
                "{rel} creates a table outside the schemas"
            );
        }
    }
}
