//! Cloud benchmarks, each beside a peer measured in the same run:
//! - ingest into the sample store (exactly once per device and sequence number) on
//!   SQLite and on PostgreSQL, samples per second on one core, beside a plain batched
//!   insert of the same rows into the same database;
//! - API reads per second of a datastream query (an hour in one-minute buckets, over
//!   HTTPS with a key: TLS, authorization, audit, query), beside the same query straight
//!   on the store.
//!
//! Run: `cargo bench --bench cloud` (about half a minute; starts a private PostgreSQL).

#[path = "../tests/common/mod.rs"]
mod common;

use common::api::acme_with_pump;
use common::{float_sample, Cloud, Postgres};
use fieldgate::cloud::store::Store;
use fieldgate::protocol::Batch;
use fieldgate::sample::{now_ns, Value};
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: u64 = 100;
const BATCHES: u64 = 400;

fn batch(b: u64, t0: i64) -> Batch {
    Batch {
        samples: (0..BATCH)
            .map(|i| {
                let seq = b * BATCH + i + 1;
                let ts = t0 + seq as i64 * 10_000_000;
                float_sample(seq, format!("meter/p{}", i % 20), ts, seq as f64 * 0.5)
            })
            .collect(),
        gaps: vec![],
    }
}

/// Samples per second through `Store::insert`, one thread.
fn store_rate(store: &mut Store, device: &str) -> f64 {
    let t0 = now_ns();
    let batches: Vec<Batch> = (0..BATCHES).map(|b| batch(b, t0)).collect();
    let t = Instant::now();
    for b in &batches {
        store.insert(device, b).unwrap();
    }
    (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64()
}

/// Samples per second of a plain batched insert (a transaction per batch, no key to
/// check) into SQLite with the store's durability (WAL, synchronous=FULL).
fn plain_sqlite_rate(path: &std::path::Path) -> f64 {
    let mut db = rusqlite::Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "synchronous", "FULL").unwrap();
    db.execute_batch(
        "CREATE TABLE plain(device TEXT, seq INTEGER, point TEXT, ts_ns INTEGER, value REAL)",
    )
    .unwrap();
    let t0 = now_ns();
    let batches: Vec<Batch> = (0..BATCHES).map(|b| batch(b, t0)).collect();
    let t = Instant::now();
    for b in &batches {
        let tx = db.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO plain VALUES (?1, ?2, ?3, ?4, ?5)")
                .unwrap();
            for s in &b.samples {
                let Value::Float(v) = s.sample.value else {
                    unreachable!()
                };
                st.execute(rusqlite::params![
                    "bench",
                    s.seq as i64,
                    s.sample.point,
                    s.sample.ts_ns,
                    v
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64()
}

/// The same for PostgreSQL: one multi-row INSERT per batch in its own transaction.
fn plain_postgres_rate(url: &str) -> f64 {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        db.batch_execute(
            "CREATE TABLE plain(device TEXT, seq BIGINT, point TEXT, ts_ns BIGINT, value FLOAT8)",
        )
        .unwrap();
        let t0 = now_ns();
        let batches: Vec<Batch> = (0..BATCHES).map(|b| batch(b, t0)).collect();
        let t = Instant::now();
        for b in &batches {
            let seq: Vec<i64> = b.samples.iter().map(|s| s.seq as i64).collect();
            let point: Vec<&str> = b.samples.iter().map(|s| s.sample.point.as_str()).collect();
            let ts: Vec<i64> = b.samples.iter().map(|s| s.sample.ts_ns).collect();
            let v: Vec<f64> = b.samples.iter().map(|s| s.seq as f64 * 0.5).collect();
            let mut tx = db.transaction().unwrap();
            tx.execute(
                "INSERT INTO plain SELECT 'bench', * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::FLOAT8[])",
                &[&seq, &point, &ts, &v],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

/// Requests per second of GET `path` with `token`, over `conns` kept-alive HTTPS
/// connections for `secs`.
async fn api_rate(cloud: &Cloud, path: &str, token: &str, conns: usize, secs: u64) -> f64 {
    fieldgate::install_crypto_provider();
    let roots = fieldgate::tls::root_store(&cloud.data.join("pki/ca.crt")).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let addr = cloud.api.unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (tls, path, token) = (tls.clone(), path.to_string(), token.to_string());
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut n = 0u64;
                while Instant::now() < end {
                    let req = http::Request::get(&path)
                        .header("host", "127.0.0.1")
                        .header("authorization", format!("Bearer {token}"))
                        .body(Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let resp = send.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    assert!(body.len() > 100);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let t = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Ingest: SQLite and PostgreSQL, each beside a plain batched insert.
    let mut sqlite = Store::open(&d.join("store.db")).unwrap();
    let sqlite_store = store_rate(&mut sqlite, "bench");
    let sqlite_plain = plain_sqlite_rate(&d.join("plain.db"));
    let pg = Postgres::start(&d.join("pg"));
    let mut pg_store = Store::postgres(&pg.url(), None).unwrap();
    let pg_rate = store_rate(&mut pg_store, "bench");
    let pg_plain = plain_postgres_rate(&pg.url());

    // API reads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (api_reads, direct_reads) = rt.block_on(async {
        let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(3600)).await;
        let (api, owner) = acme_with_pump(&cloud).await;
        // A day of one stream at one sample a second.
        let t0 = now_ns() - 86_400_000_000_000;
        let mut store = cloud.store();
        for chunk in 0..864u64 {
            let b = Batch {
                samples: (0..100u64)
                    .map(|i| {
                        let seq = chunk * 100 + i + 1;
                        float_sample(
                            seq,
                            "meter/power",
                            t0 + seq as i64 * 1_000_000_000,
                            seq as f64,
                        )
                    })
                    .collect(),
                gaps: vec![],
            };
            store.insert("pump-1", &b).unwrap();
        }
        let key = api
            .ok(
                "POST",
                "/v1/tenants/acme/keys",
                &owner,
                Some(json!({"actions": ["read"], "not_after_ns": now_ns() + 3_600_000_000_000})),
            )
            .await;
        let token = key["token"].as_str().unwrap().to_string();
        let path = "/v1/tenants/acme/devices/pump-1/history?stream=meter/power&resolution=60";
        let reads = api_rate(&cloud, path, &token, 2, 5).await;
        // The same query on the store alone.
        let t = Instant::now();
        let mut n = 0u64;
        let to = now_ns();
        while t.elapsed() < Duration::from_secs(3) {
            store
                .history(
                    "pump-1",
                    "meter/power",
                    to - 3_600_000_000_000,
                    to,
                    Some(60_000_000_000),
                    10_000,
                )
                .unwrap();
            n += 1;
        }
        (reads, n as f64 / t.elapsed().as_secs_f64())
    });

    println!("Cloud benchmarks (one core per figure unless said)");
    println!("  ingest into SQLite, exactly once          {sqlite_store:>10.0} samples/s");
    println!("  plain batched insert, same SQLite         {sqlite_plain:>10.0} samples/s");
    println!("  ingest into PostgreSQL, exactly once      {pg_rate:>10.0} samples/s");
    println!("  plain batched insert, same PostgreSQL     {pg_plain:>10.0} samples/s");
    println!("  API reads, 1 h in 1-min buckets (HTTPS,   {api_reads:>10.0} requests/s");
    println!("    key, audit; 2 connections)");
    println!("  the same query on the store alone          {direct_reads:>10.0} queries/s");
}
