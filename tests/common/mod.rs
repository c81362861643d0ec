//! Shared helpers of the integration tests: real peers on loopback, each owned by a guard
//! that stops it when dropped.
#![allow(dead_code)]

pub mod api;

use fieldgate::cloud::store::{Row, Store};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test peers (made by `.ci/setup`).
pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `.ci/setup` first (it installs pymodbus)",
        p.display()
    );
    p
}

/// Fails the test with a clear message if a system tool is missing.
pub fn need(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "`{tool}` is not installed: run `.ci/setup` first");
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }
    /// SIGTERM, and the exit status within ten seconds (fails the test otherwise).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
            .expect("the process stops within 10 s of SIGTERM")
    }

    /// Waits up to `limit` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A port for a peer a test starts. Bind-then-drop of port 0 raced: the kernel may hand
/// the same ephemeral port to another test's connection before the peer binds it. These
/// come from below the ephemeral range (Linux: 32768 up), one process-wide counter per
/// test binary, each checked free on TCP (and the next one too, for peers that take two).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 500) * 24;
    loop {
        // Two at a time: a peer such as swtpm takes `port + 1` too, which no later call
        // may hand out.
        let n = NEXT.fetch_add(2, Ordering::Relaxed);
        let port = (20_000 + (offset + n) % 12_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// The pymodbus peer serving `points` (see tests/peers/modbus_peer.py) over TCP.
pub fn modbus_peer_tcp(points: &serde_json::Value, dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let p = spawn_peer(points, dir, &["--tcp", &port.to_string()]);
    wait_for("the Modbus peer to listen", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, port)
}

/// The pymodbus peer serving `points` over RTU on `pty`.
pub fn modbus_peer_rtu(points: &serde_json::Value, dir: &Path, pty: &Path) -> Proc {
    let p = spawn_peer(points, dir, &["--rtu", &pty.display().to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    p
}

fn spawn_peer(points: &serde_json::Value, dir: &Path, args: &[&str]) -> Proc {
    let file = dir.join(format!("points-{}.json", free_port()));
    std::fs::write(&file, points.to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(root().join("tests/peers/modbus_peer.py"))
        .arg(&file)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the Modbus peer did not start");
    Proc(child)
}

/// A pair of connected pseudo-terminals (a virtual serial line) made by socat.
pub fn serial_pair(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    need("socat");
    let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("socat's ptys", Duration::from_secs(5), || {
        a.exists() && b.exists()
    });
    (Proc(child), a, b)
}

/// The cloud, run in this process on a fixed loopback port, stoppable and restartable.
pub struct Cloud {
    pub data: PathBuf,
    pub addr: SocketAddr,
    /// The HTTPS API (enrollment, renewal), when started with `with_api`.
    pub api: Option<SocketAddr>,
    pub settings: fieldgate::cloud::Settings,
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Cloud {
    pub async fn start(data: &Path) -> Cloud {
        // Create the CA before anything issues a certificate from it.
        fieldgate::cloud::open(data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mut c = Cloud {
            data: data.to_path_buf(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            api: None,
            settings: Default::default(),
            stop: None,
        };
        c.restart().await;
        c
    }

    /// A cloud with its HTTPS API, issuing certificates valid for `lifetime`.
    pub async fn with_api(data: &Path, lifetime: Duration) -> Cloud {
        Cloud::with_settings(
            data,
            fieldgate::cloud::Settings {
                cert_lifetime: lifetime,
                ..Default::default()
            },
        )
        .await
    }

    /// A cloud with its HTTPS API and these settings.
    pub async fn with_settings(data: &Path, settings: fieldgate::cloud::Settings) -> Cloud {
        fieldgate::cloud::open(data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mut c = Cloud {
            data: data.to_path_buf(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            api: Some(format!("127.0.0.1:{}", free_port()).parse().unwrap()),
            settings,
            stop: None,
        };
        c.restart().await;
        c
    }

    pub fn api_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.api.expect("started with_api").port()
        )
    }

    pub fn registry(&self) -> fieldgate::cloud::registry::Registry {
        fieldgate::cloud::registry::Registry::with(self.db()).unwrap()
    }

    /// A connection to the cloud's database (its SQLite file or PostgreSQL).
    pub fn db(&self) -> fieldgate::cloud::sql::Db {
        self.settings.database.db(&self.data).unwrap()
    }

    /// `fieldgate-cloud` on this cloud's data directory and database.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"));
        c.arg("--data-dir").arg(&self.data);
        if let Some(url) = &self.settings.database.url {
            c.args(["--store", url]);
        }
        c
    }

    pub async fn restart(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let api = match self.api {
            Some(a) => loop {
                match tokio::net::TcpListener::bind(a).await {
                    Ok(l) => break Some(l),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            None => None,
        };
        let token = CancellationToken::new();
        let (t, d, s) = (token.clone(), self.data.clone(), self.settings.clone());
        let h = tokio::spawn(async move {
            fieldgate::cloud::run_with(&d, listener, api, s, t)
                .await
                .unwrap();
        });
        self.stop = Some((token, h));
    }

    pub async fn stop(&mut self) {
        if let Some((t, h)) = self.stop.take() {
            t.cancel();
            let _ = h.await;
        }
    }

    /// A temporary directory with a running cloud in `cloud/` and a certificate for
    /// `device` in `certs/` (where `gateway_config` looks for it).
    pub async fn with_device(device: &str) -> (tempfile::TempDir, Cloud) {
        let dir = tempfile::tempdir().unwrap();
        let cloud = Cloud::start(&dir.path().join("cloud")).await;
        cloud.dev_cert(device, &dir.path().join("certs"));
        (dir, cloud)
    }

    /// Issues a device certificate into `dir`.
    pub fn dev_cert(&self, device: &str, dir: &Path) {
        let (pki, _) = fieldgate::cloud::open(&self.data, &[]).unwrap();
        pki.dev_cert(&device.parse().unwrap(), dir).unwrap();
    }

    /// A one-time bootstrap token for `device`, valid for an hour (by the CLI).
    pub fn token(&self, device: &str) -> String {
        let out = self
            .cli()
            .args(["token", "--device", device, "--valid", "1h"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn store(&self) -> Store {
        self.settings.database.store(&self.data).unwrap()
    }

    pub fn rows(&self, device: &str) -> Vec<Row> {
        self.store().query(device, None, None, 10_000_000).unwrap()
    }
}

/// Writes a gateway config for `device` sending to `cloud`, with `buses` appended.
pub fn gateway_config(
    dir: &Path,
    device: &str,
    brokers: &[String],
    extra: &str,
    buses: &str,
) -> PathBuf {
    let certs = dir.join("certs");
    let brokers: Vec<String> = brokers.iter().map(|b| format!("{b:?}")).collect();
    let text = format!(
        r#"[gateway]
device_id = "{device}"
state_dir = "state"
status_socket = "state/status.sock"

[uplink]
brokers = [{brokers}]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
batch_max_age = "100ms"
reconnect_min = "100ms"
reconnect_max = "1s"
{extra}

{buses}
"#,
        brokers = brokers.join(", "),
        ca = certs.join("ca.crt").display(),
        cert = certs.join("device.crt").display(),
        key = certs.join("device.key").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A gateway config for `device` that enrolls itself with `bootstrap.token` against
/// `cloud`'s API, with `identity` (the backend's lines) and `uplink_key` (a key line
/// for the file backend), and the demo's genset capture looping as its data source.
pub fn enrolling_gateway(
    dir: &Path,
    device: &str,
    cloud: &Cloud,
    identity: &str,
    uplink_key: &str,
) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(cloud.data.join("pki/ca.crt"), certs.join("ca.crt")).unwrap();
    let fixtures = root().join("config");
    let text = format!(
        r#"[gateway]
device_id = "{device}"
state_dir = "state"
status_socket = "state/status.sock"

[identity]
{identity}
enroll_url = "{url}"
token_file = "bootstrap.token"

[uplink]
brokers = ["{broker}"]
ca = "certs/ca.crt"
cert = "state/device.crt"
{uplink_key}
batch_max_age = "100ms"
reconnect_min = "100ms"
reconnect_max = "1s"

[clock]
synced = "always"

[[can]]
name = "engine"
replay = {{ file = "{log}", speed = "realtime", repeat = true }}
dbc = ["{dbc}"]
j1939 = true
[can.emit]
min_interval = "0s"
heartbeat = "0s"
on_change = false
"#,
        url = cloud.api_url(),
        broker = cloud.addr,
        log = fixtures.join("demo-engine.log").display(),
        dbc = fixtures.join("demo-engine.dbc").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The gateway binary running `config`.
pub fn gateway(config: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_fieldgate"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .expect("start fieldgate"),
    )
}

pub fn fieldgate_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fieldgate"))
}

/// Runs `fieldgate ARGS` to completion.
pub fn fieldgate_out(args: &[&str]) -> std::process::Output {
    fieldgate_cmd().args(args).output().expect("run fieldgate")
}

/// The status document of a running gateway, or None if it does not answer.
pub fn status(dir: &Path) -> Option<serde_json::Value> {
    let out = fieldgate_cmd()
        .args(["status", "--json", "--socket"])
        .arg(dir.join("state/status.sock"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The gateway's own record of the last sequence number it gave out.
pub fn last_seq(dir: &Path) -> u64 {
    let c = rusqlite::Connection::open(dir.join("state/buffer.db")).unwrap();
    c.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// A simple constant-valued Modbus device: `n` u16 holding registers from 0, value 1000 + i.
pub fn constant_points(n: u16) -> serde_json::Value {
    serde_json::Value::Array(
        (0..n)
            .map(|i| serde_json::json!({"unit": 1, "table": "hr", "address": i, "type": "u16", "value": 1000 + i}))
            .collect(),
    )
}

/// A TCP bus polling `n` u16 registers from 0 every `interval`; point `p0` is an alarm.
pub fn constant_bus(port: u16, n: u16, interval: &str) -> String {
    let mut s = format!(
        "[[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\ntimeout = \"300ms\"\n\
         [[bus.device]]\nname = \"dev\"\npoll_interval = \"{interval}\"\n"
    );
    for i in 0..n {
        let class = if i == 0 { "alarm" } else { "telemetry" };
        s += &format!(
            "[[bus.device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\nclass = \"{class}\"\n"
        );
    }
    s
}

/// An MQTT client over TLS to `addr` trusting `ca`, with a client certificate if given.
pub fn mqtt_client(
    addr: SocketAddr,
    id: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    fieldgate::install_crypto_provider();
    let tls = match cert {
        Some((c, k)) => fieldgate::tls::client_config(ca, c, k).unwrap(),
        None => std::sync::Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(fieldgate::tls::root_store(ca).unwrap())
                .with_no_client_auth(),
        ),
    };
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ))
    .set_max_packet_size(1 << 20, 1 << 20)
    .set_keep_alive(Duration::from_secs(5));
    rumqttc::AsyncClient::new(o, 16)
}

/// Polls the event loop until a PUBACK arrives (Ok) or the connection fails (Err).
pub async fn until_puback(ev: &mut rumqttc::EventLoop) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ev.poll()).await {
            Err(_) => return Err("timed out".into()),
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// A valid one-sample data payload.
pub fn one_sample_batch(seq: u64, point: &str, v: f64) -> Vec<u8> {
    fieldgate::protocol::Batch {
        samples: vec![float_sample(seq, point, fieldgate::sample::now_ns(), v)],
        gaps: vec![],
    }
    .encode()
}

/// A good float sample, taken on a synchronised clock, with its sequence number.
pub fn float_sample(
    seq: u64,
    point: impl Into<String>,
    ts_ns: i64,
    v: f64,
) -> fieldgate::protocol::Sequenced {
    use fieldgate::sample::*;
    fieldgate::protocol::Sequenced {
        seq,
        sample: Sample {
            point: point.into(),
            ts_ns,
            value: Value::Float(v),
            quality: Quality::Good,
            time: TimeQuality::Synced,
        },
    }
}

pub fn always_synced() -> std::sync::Arc<fieldgate::clock::Clock> {
    std::sync::Arc::new(fieldgate::clock::Clock::new(
        fieldgate::clock::SyncCheck::Always,
    ))
}

/// fieldgate's own simulator serving RTU on `pty`: units with one holding register at
/// address 0 holding the given value. Like a real line, it stays silent for units it
/// lacks (pymodbus 3.16 answers them with exception 4 instead).
pub fn sim_serial(dir: &Path, pty: &Path, units: &[(u8, u16)]) -> Proc {
    let map: String = units
        .iter()
        .map(|(unit, value)| {
            format!("[[device]]\nunit = {unit}\n[[device.point]]\nname = \"v\"\nfunction = \"holding_register\"\naddress = 0\ntype = \"u16\"\nvalue = {value}\n")
        })
        .collect();
    let file = dir.join("sim.toml");
    std::fs::write(&file, map).unwrap();
    let sim = Proc(
        fieldgate_cmd()
            .args(["sim", "modbus", "--map"])
            .arg(&file)
            .arg("--serial")
            .arg(pty)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    sim
}

/// A TPM 2.0 simulator (swtpm) on loopback with its own state directory; restartable
/// on the same state, like a reboot.
pub struct Swtpm {
    pub state: PathBuf,
    pub port: u16,
    proc: Option<Proc>,
}

impl Swtpm {
    pub fn start(state: &Path) -> Swtpm {
        need("swtpm");
        std::fs::create_dir_all(state).unwrap();
        // Two consecutive free ports: the command port and the control port.
        let port = loop {
            let p = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let mut t = Swtpm {
            state: state.to_path_buf(),
            port,
            proc: None,
        };
        t.restart();
        t
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// fieldgate's key in this TPM (made if missing), at the default handle.
    pub fn key(&self) -> std::sync::Arc<dyn fieldgate::identity::Key> {
        let cfg = fieldgate::identity::IdentityConfig {
            backend: fieldgate::identity::Backend::Tpm,
            tcti: self.tcti(),
            ..Default::default()
        };
        fieldgate::identity::open(&cfg, None, true).unwrap()
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Stops the simulator (if running) and starts it again on the same state.
    pub fn restart(&mut self) {
        self.proc = None;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port + 1),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start swtpm");
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_for("swtpm", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

/// Whether this test process runs inside the rig VM (`hil/can-vm.sh` sets it).
pub fn in_vm() -> bool {
    std::env::var_os("FIELDGATE_IN_VM").is_some()
}

/// Runs the test `name` of this test binary again inside the rig VM, with `files` copied
/// in; prints the guest's output and returns its stdout, failing if the guest failed.
pub fn rerun_in_vm(name: &str, files: &[PathBuf], timeout_s: u32) -> String {
    need("qemu-system-x86_64");
    need("busybox");
    let start = Instant::now();
    let mut cmd = Command::new(root().join("hil/can-vm.sh"));
    cmd.env("FIELDGATE_VM_TIMEOUT", timeout_s.to_string());
    for f in files {
        cmd.arg("--file").arg(f);
    }
    let out = cmd
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .output()
        .expect("run hil/can-vm.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "{name}: {:.1} s in the VM in all",
        start.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{name} failed in the VM (see the guest's output above)"
    );
    stdout
}

/// The database a test's cloud runs on: its SQLite file, or a private PostgreSQL server
/// (kept running as long as this lives).
pub struct Backend {
    pub database: fieldgate::cloud::Database,
    _server: Option<Postgres>,
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend {
            database: Default::default(),
            _server: None,
        }
    }

    /// A PostgreSQL server with its data under `dir`.
    pub fn postgres(dir: &Path) -> Backend {
        let pg = Postgres::start(dir);
        Backend {
            database: fieldgate::cloud::Database::postgres(&pg.url()),
            _server: Some(pg),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.database.url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// A private PostgreSQL server (Debian's package) on a loopback port, with its data in
/// `dir`; stopped when dropped. As root, the server runs as the `postgres` user (it
/// refuses to run as root).
pub struct Postgres {
    pub port: u16,
    proc: Option<Proc>,
    /// The server's command line, for `start_again`.
    command: (PathBuf, Vec<std::ffi::OsString>),
    /// PostgreSQL's programs.
    bin: PathBuf,
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        Postgres::start_with(dir, None)
    }

    /// With `tls` (certificate and key files), a server that accepts TLS connections
    /// only (`hostssl` in pg_hba.conf, plain ones rejected).
    pub fn start_with(dir: &Path, tls: Option<(&Path, &Path)>) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed: run `.ci/setup` first");
        let root = is_root();
        let as_owner = |prog: &str| {
            let mut c = if root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--clear-groups",
                    "--reset-env",
                ])
                .arg(bin.join(prog));
                c
            } else {
                Command::new(bin.join(prog))
            };
            c.stdout(Stdio::null());
            c
        };
        let data = dir.join("pgdata");
        std::fs::create_dir_all(dir).unwrap();
        if root {
            // The server's user must reach its directory.
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .unwrap();
            let mut p = dir.to_path_buf();
            while let Some(parent) = p.parent() {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(parent) {
                    let mode = m.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            parent,
                            std::fs::Permissions::from_mode(mode | 0o001),
                        );
                    }
                }
                p = parent.to_path_buf();
            }
        }
        let out = as_owner("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "fieldgate",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let mut settings = vec![];
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(cert, data.join("server.crt")).unwrap();
            std::fs::copy(key, data.join("server.key")).unwrap();
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            if root {
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
            }
            settings = vec!["-c", "ssl=on"];
        }
        let port = free_port();
        let server = as_owner("postgres");
        let mut args: Vec<std::ffi::OsString> =
            server.get_args().map(|a| a.to_os_string()).collect();
        args.extend(["-D".into(), data.into_os_string()]);
        args.extend(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"].map(Into::into));
        args.push(dir.as_os_str().into());
        args.extend(settings.iter().map(Into::into));
        let mut pg = Postgres {
            port,
            proc: None,
            command: (server.get_program().into(), args),
            bin: bin.clone(),
        };
        pg.start_again();
        pg
    }

    /// Starts the server (again, after `stop`) on the same data and port.
    pub fn start_again(&mut self) {
        let (program, args) = &self.command;
        let proc = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proc = Some(Proc(proc));
        let (isready, port) = (self.bin.join("pg_isready"), self.port);
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(&isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    /// A fast shutdown (SIGINT): clients' connections are closed.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("INT");
            let _ = p.wait_exit(Duration::from_secs(10));
        }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://fieldgate@127.0.0.1:{}/postgres?connect_timeout=5",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown, so the next test's server starts clean.
        self.stop();
    }
}

fn is_root() -> bool {
    // The effective uid, read from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Mosquitto on a loopback port with mutual TLS 1.3 (certificates of `pki`'s CA, the
/// certificate's CN as the user name) and the ACL `acl`; stopped when dropped. Queues of
/// absent persistent sessions are unbounded (a restarting ingest worker loses nothing).
pub struct Mosquitto {
    pub port: u16,
    _proc: Proc,
}

impl Mosquitto {
    pub fn start(dir: &Path, pki: &fieldgate::cloud::pki::Pki, acl: &str) -> Mosquitto {
        need("mosquitto");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(dir.join("acl"), acl).unwrap();
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nallow_anonymous false\npersistence false\n\
                 max_queued_messages 1000000\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 listener {port} 127.0.0.1\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\nacl_file {acl}\n",
                ca = pki.ca_cert().display(),
                crt = pki.server_cert().display(),
                key = pki.server_key().display(),
                acl = dir.join("acl").display(),
            ),
        )
        .unwrap();
        let proc = Proc(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("mosquitto", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto { port, _proc: proc }
    }
}
