//! Data-path benchmarks. Each figure is printed beside a baseline measured in the same
//! run on the same machine: raw SQLite inserts, one Modbus request per point.
//!
//! Run: `cargo bench --bench datapath` (release build; takes about a minute).

use fieldgate::buffer::{outbox::Outbox, Buffer, BufferSettings, Entry};
use fieldgate::config::GatewayConfig;
use fieldgate::field::modbus::planner::{Planner, PointSpec};
use fieldgate::field::modbus::sim::{SimMap, SimService};
use fieldgate::field::modbus::Function;
use fieldgate::model::Class;
use fieldgate::protocol::Gap;
use fieldgate::sample::{now_ns, Quality, Sample, TimeQuality, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn entry(i: u64) -> Entry {
    Entry {
        sample: Sample {
            point: format!("meter{}/p{}", i % 10, i % 50),
            ts_ns: now_ns(),
            value: Value::Float(i as f64 * 0.5),
            quality: Quality::Good,
            time: TimeQuality::Synced,
        },
        class: Class::Telemetry,
        mono_ns: 0,
    }
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:>10.0}/s", n as f64 / d.as_secs_f64())
}

/// (b) The outbox against a raw SQLite insert of the same rows, same durability.
fn buffer_vs_raw_sqlite(dir: &Path) {
    const N: u64 = 200_000;
    const GROUP: usize = 500;
    let entries: Vec<Entry> = (0..N).map(entry).collect();

    let mut raw = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    raw.pragma_update(None, "journal_mode", "WAL").unwrap();
    raw.pragma_update(None, "synchronous", "FULL").unwrap();
    raw.execute_batch(
        "CREATE TABLE t(seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, point TEXT, body BLOB)",
    )
    .unwrap();
    let t = Instant::now();
    for chunk in entries.chunks(GROUP) {
        let tx = raw.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO t(ts, point, body) VALUES (?1, ?2, ?3)")
                .unwrap();
            for e in chunk {
                st.execute(rusqlite::params![e.sample.ts_ns, e.sample.point, [0u8; 10]])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let raw_d = t.elapsed();
    // The physical limit behind durability: one commit (one fsync of the WAL) per sample.
    let t = Instant::now();
    let mut commits = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        raw.execute("INSERT INTO t(ts, point, body) VALUES (1, 'x', x'00')", [])
            .unwrap();
        commits += 1;
    }
    let fsync_d = t.elapsed();

    let mut o = Outbox::open(&dir.join("outbox.db"), u64::MAX, None, "bench").unwrap();
    let t = Instant::now();
    for chunk in entries.chunks(GROUP) {
        o.append(chunk, now_ns()).unwrap();
    }
    let append_d = t.elapsed();
    let t = Instant::now();
    let mut after = 0;
    loop {
        let batch = o.fetch(after, u64::MAX, 1000).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        o.ack(
            &[Gap {
                first: batch[0].seq,
                last: last.seq,
            }],
            &[],
        )
        .unwrap();
    }
    let drain_d = t.elapsed();
    println!(
        "(b) buffer, {N} samples in groups of {GROUP} (WAL, synchronous=FULL: one fsync per group)"
    );
    println!("    one commit per sample       {}   (the fsync rate of this disk: the cost without grouping)", rate(commits, fsync_d));
    println!("    raw SQLite batched insert   {}", rate(N, raw_d));
    println!(
        "    outbox append               {}   ({:.0}% of raw)",
        rate(N, append_d),
        raw_d.as_secs_f64() / append_d.as_secs_f64() * 100.0
    );
    println!("    outbox drain (fetch + ack)  {}", rate(N, drain_d));
}

/// (c) Registers per second with planning versus one request per point, same server.
async fn planning_vs_per_point() {
    let mut map = String::from("[[device]]\nunit = 1\n");
    let mut specs = Vec::new();
    for i in 0..200u16 {
        let a = i * 3; // 2-register values with a 1-register hole: merged across the gap
        map += &format!("[[device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {a}\ntype = \"f32\"\nvalue = 1.5\n");
        map += &format!("[[device.point]]\nname = \"h{i}\"\nfunction = \"holding_register\"\naddress = {}\ntype = \"u16\"\nvalue = 0\n", a + 2);
        specs.push(PointSpec {
            function: Function::HoldingRegister,
            address: a,
            width: 2,
        });
    }
    let map: SimMap = toml::from_str(&map).unwrap();
    let service = SimService::new(&map, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(fieldgate::field::modbus::sim::serve_tcp_with(
        service, listener,
    ));
    use tokio_modbus::client::Reader;
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(1))
        .await
        .unwrap();
    let planner = Planner::new(specs.clone(), 8, 125);
    const ROUNDS: u32 = 200;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for b in planner.blocks() {
            ctx.read_holding_registers(b.start, b.count)
                .await
                .unwrap()
                .unwrap();
        }
    }
    let planned = t.elapsed();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for p in &specs {
            ctx.read_holding_registers(p.address, p.width)
                .await
                .unwrap()
                .unwrap();
        }
    }
    let single = t.elapsed();
    let regs = ROUNDS as u64 * 400;
    println!("(c) Modbus TCP on loopback, 200 f32 points (400 useful registers), {ROUNDS} rounds");
    println!(
        "    one request per point       {}  ({} requests per round)",
        rate(regs, single),
        specs.len()
    );
    println!(
        "    planned                     {}  ({} requests per round, {:.0}x)",
        rate(regs, planned),
        planner.blocks().len(),
        single.as_secs_f64() / planned.as_secs_f64()
    );
    server.abort();
}

/// (a) End to end: buffer -> MQTT over mutual TLS -> cloud ingest -> cloud store.
async fn end_to_end(dir: &Path) {
    const N: u64 = 100_000;
    let data = dir.join("cloud");
    let (pki, _) =
        fieldgate::cloud::open(&data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    pki.dev_cert(&"bench-gw".parse().unwrap(), &dir.join("certs"))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let d2 = data.clone();
    let s2 = stop.clone();
    let cloud = tokio::spawn(async move { fieldgate::cloud::run(&d2, listener, s2).await });
    let cfg_text = format!(
        "[gateway]\ndevice_id = \"bench-gw\"\n[uplink]\nbrokers = [\"{addr}\"]\nca = \"certs/ca.crt\"\ncert = \"certs/device.crt\"\nkey = \"certs/device.key\"\n\
         batch_max_samples = 2000\nmax_in_flight = 16\nbacklog_rate = 1000000\nbatch_max_age = \"20ms\"\n"
    );
    let cfg = GatewayConfig::parse(&cfg_text, &dir.join("gw.toml")).unwrap();
    let (buffer, thread) = Buffer::start(BufferSettings {
        path: dir.join("e2e.db"),
        max_bytes: u64::MAX / 2,
        max_age: None,
        commit_interval: Duration::from_millis(20),
        boot_id: "bench".into(),
    })
    .unwrap();
    let uplink = fieldgate::uplink::Uplink {
        device_id: "bench-gw".into(),
        config: cfg.uplink.clone(),
        buffer: buffer.clone(),
        status: Default::default(),
        config_hash: String::new(),
        beat: None,
        identity: std::sync::Arc::new(fieldgate::identity::Holder::new(
            cfg.identity.clone(),
            cfg.uplink.key.clone(),
        )),
        agent: Default::default(),
    };
    let link_stop = CancellationToken::new();
    let link = tokio::spawn(uplink.run(link_stop.clone()));
    let store = fieldgate::cloud::store::Store::open(&fieldgate::cloud::store_path(&data)).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < N {
        buffer.append((i..i + 1000).map(entry).collect()).await;
        i += 1000;
    }
    buffer.flush().await;
    let appended = t.elapsed();
    while store.count("bench-gw").unwrap() < N {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = t.elapsed();
    let groups = buffer
        .counters
        .groups
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("(a) end to end on loopback: {N} samples, source -> SQLite outbox -> MQTT/mTLS -> ingest -> cloud SQLite");
    println!(
        "    committed to the buffer     {}  ({groups} commit groups)",
        rate(N, appended)
    );
    println!("    stored in the cloud         {}", rate(N, total));
    link_stop.cancel();
    let _ = link.await;
    drop(buffer);
    let _ = thread.join();
    stop.cancel();
    let _ = cloud.await;
}

/// (d) Peak RSS of the real gateway binary through an outage with a growing backlog.
fn rss_during_outage(dir: &Path) {
    let dur = Duration::from_secs(
        std::env::var("OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let mut sim = String::from("[[device]]\nunit = 1\n");
    let mut points = String::new();
    for i in 0..100 {
        sim += &format!("[[device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\nvalue = {i}\namplitude = 50.0\nperiod = \"3s\"\n");
        points += &format!("[[bus.device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\n");
    }
    std::fs::write(dir.join("sim.toml"), sim).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = env!("CARGO_BIN_EXE_fieldgate");
    let mut sim_p = std::process::Command::new(bin)
        .args(["sim", "modbus", "--map"])
        .arg(dir.join("sim.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("x.crt"), "").unwrap();
    let cfg = format!(
        "[gateway]\ndevice_id = \"rss\"\nstate_dir = \"rss-state\"\nstatus_socket = \"rss-state/s.sock\"\n\
         [uplink]\nbrokers = [\"127.0.0.1:{dead}\"]\nca = \"x.crt\"\ncert = \"x.crt\"\nkey = \"x.crt\"\n\
         [buffer]\nmax_bytes = \"2 GiB\"\n\
         [[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\n[[bus.device]]\nname = \"d\"\npoll_interval = \"10ms\"\n{points}"
    );
    std::fs::write(dir.join("rss.toml"), cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut gw = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(dir.join("rss.toml"))
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let status = |key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", gw.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    println!("(d) gateway RSS through a {}s outage, 100 points every 10 ms (10,000 samples/s) into the buffer", dur.as_secs());
    println!(
        "    {:>6}  {:>12}  {:>10}  {:>10}",
        "time", "backlog", "RSS KiB", "peak KiB"
    );
    let start = Instant::now();
    let mut first_rss = 0;
    while start.elapsed() < dur {
        std::thread::sleep(Duration::from_secs(5).min(dur));
        let depth = rusqlite::Connection::open(dir.join("rss-state/buffer.db"))
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        let rss = status("VmRSS:");
        if first_rss == 0 {
            first_rss = rss;
        }
        println!(
            "    {:>5}s  {depth:>12}  {rss:>10}  {:>10}",
            start.elapsed().as_secs(),
            status("VmHWM:")
        );
    }
    let db = std::fs::metadata(dir.join("rss-state/buffer.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("rss-state/buffer.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("    backlog on disk {} MiB; peak RSS {} KiB vs {} KiB after 5 s: memory does not follow the backlog",
        db >> 20, status("VmHWM:"), first_rss);
    let _ = gw.kill();
    let _ = gw.wait();
    let _ = sim_p.kill();
    let _ = sim_p.wait();
}

fn main() {
    fieldgate::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "fieldgate data-path benchmarks on {} CPU(s); temp dir on the same disk as /tmp",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(end_to_end(dir.path()));
    buffer_vs_raw_sqlite(dir.path());
    rt.block_on(planning_vs_per_point());
    rss_during_outage(dir.path());
}
