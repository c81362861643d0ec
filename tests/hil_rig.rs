//! The virtual HIL rig: runs the scenarios of `hil/scenarios/*.toml` against the real
//! binaries inside the rig's VM (`hil/can-vm.sh`: a Debian kernel with netem, which this
//! machine's kernel lacks). Per scenario: a Modbus device (`fieldgate sim modbus`) on a
//! socat serial line, a J1939 genset on vcan0 (canplayer looping a capture), swtpm
//! holding the gateway's key, the gateway (TPM identity, enrolled with a one-time token
//! at its first start), and the cloud with its API. Netem acts on the cloud's two ports
//! only (a prio qdisc with u32 filters), so the uplink suffers while the TPM and the
//! buses do not. The steps cut the link, make it lossy and slow, kill the gateway (a
//! power cut), pull the serial adapter, restart the cloud. Then every sample the gateway
//! committed must be in the cloud exactly once. Prints figures per scenario and PASS/FAIL.
//!
//! One command: `hil/run` (or `cargo test --test hil_rig -- --nocapture`).

mod common;
use common::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
struct Scenario {
    name: String,
    points: u16,
    #[serde(with = "humantime_serde")]
    interval: Duration,
    steps: Vec<Step>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Step {
    #[serde(with = "humantime_serde")]
    at: Duration,
    #[serde(rename = "do")]
    action: String,
    #[serde(default)]
    args: String,
}

#[derive(Debug, Deserialize)]
struct Expect {
    #[serde(default)]
    no_loss: bool,
    #[serde(default)]
    bad_then_good: bool,
    #[serde(with = "humantime_serde")]
    drain_within: Duration,
}

#[test]
fn virtual_rig_scenarios() {
    if !in_vm() {
        need("socat");
        need("tc");
        let stdout = rerun_in_vm(
            "virtual_rig_scenarios",
            &[
                root().join("hil/scenarios"),
                root().join("config"),
                PathBuf::from(env!("CARGO_BIN_EXE_fieldgate")),
                PathBuf::from(env!("CARGO_BIN_EXE_fieldgate-cloud")),
            ],
            600,
        );
        assert!(stdout.contains("rig: all scenarios PASS"), "{stdout}");
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("hil/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if let Ok(only) = std::env::var("HIL_ONLY") {
        files.retain(|f| f.display().to_string().contains(&only));
    }
    let mut failed = Vec::new();
    println!(
        "{:<32} {:>6} {:>9} {:>8} {:>9} {:>5}  result",
        "scenario", "secs", "produced", "backlog", "drain s", "bad"
    );
    for f in &files {
        let sc: Scenario = toml::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = run(&sc);
        println!(
            "{:<32} {:>6.1} {:>9} {:>8} {:>9} {:>5}  {}",
            sc.name,
            r.secs,
            r.produced,
            r.peak_backlog,
            r.drain
                .map(|d| format!("{:.1}", d.as_secs_f64()))
                .unwrap_or("-".into()),
            r.bad,
            if r.problems.is_empty() {
                "PASS".to_string()
            } else {
                format!("FAIL: {}", r.problems.join("; "))
            }
        );
        if !r.problems.is_empty() {
            failed.push(sc.name.clone());
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
    println!("rig: all scenarios PASS");
}

#[derive(Default)]
struct Outcome {
    secs: f64,
    produced: u64,
    peak_backlog: u64,
    drain: Option<Duration>,
    bad: u64,
    problems: Vec<String>,
}

struct Rig {
    dir: PathBuf,
    cloud_port: u16,
    api_port: u16,
    tpm_port: u16,
    cloud: Option<Child>,
    tpm: Option<Child>,
    can: Option<Child>,
    gateway: Option<Child>,
    line: Option<Child>,
    device: Option<Child>,
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn kill(c: &mut Option<Child>) {
    if let Some(mut c) = c.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Netem with `params` on the traffic to and from `ports` only: a prio qdisc whose
/// third band holds netem, and u32 filters sending those ports there.
fn netem(ports: &[u16], params: &str) -> Option<String> {
    let shown = Command::new("tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .ok()?;
    if String::from_utf8_lossy(&shown.stdout).contains("netem") {
        return tc(&format!(
            "qdisc change dev lo parent 1:3 handle 30: netem {params}"
        ));
    }
    let mut cmds = vec![
        "qdisc add dev lo root handle 1: prio bands 3 priomap 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"
            .to_string(),
        format!("qdisc add dev lo parent 1:3 handle 30: netem {params}"),
    ];
    for p in ports {
        for dir in ["dport", "sport"] {
            cmds.push(format!(
                "filter add dev lo parent 1: protocol ip prio 1 u32 match ip {dir} {p} 0xffff flowid 1:3"
            ));
        }
    }
    cmds.iter().find_map(|c| tc(c))
}

/// Removes the netem set-up from the loopback, if it is there.
fn restore() -> Option<String> {
    let shown = Command::new("tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&shown.stdout)
        .contains("netem")
        .then(|| tc("qdisc del dev lo root"))
        .flatten()
}

/// Runs tc; the problem if it fails.
fn tc(args: &str) -> Option<String> {
    match Command::new("tc").args(args.split_whitespace()).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "tc {args}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("tc {args}: {e}")),
    }
}

impl Rig {
    fn start_cloud(&mut self) {
        self.cloud = Some(spawn(
            Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
                .arg("--data-dir")
                .arg(self.dir.join("cloud"))
                .args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{}", self.cloud_port),
                    "--api",
                    &format!("127.0.0.1:{}", self.api_port),
                ]),
            &self.dir.join("cloud.log"),
        ));
    }

    fn start_tpm(&mut self) {
        let state = self.dir.join("tpm");
        std::fs::create_dir_all(&state).unwrap();
        self.tpm = Some(spawn(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={},bindaddr=127.0.0.1", self.tpm_port),
                    "--ctrl",
                    &format!("type=tcp,port={},bindaddr=127.0.0.1", self.tpm_port + 1),
                    "--flags",
                    "not-need-init,startup-clear",
                ]),
            &self.dir.join("swtpm.log"),
        ));
    }

    fn start_can(&mut self) {
        self.can = Some(spawn(
            Command::new("canplayer")
                .args(["-l", "i", "-I"])
                .arg(root().join("config/demo-engine.log"))
                .arg("vcan0=can0"),
            &self.dir.join("canplayer.log"),
        ));
    }

    fn start_line(&mut self) {
        let (a, b) = (self.dir.join("ttyGW"), self.dir.join("ttyDEV"));
        self.line = Some(spawn(
            Command::new("socat").args([
                &format!("pty,raw,echo=0,link={}", a.display()),
                &format!("pty,raw,echo=0,link={}", b.display()),
            ]),
            &self.dir.join("socat.log"),
        ));
        let t = Instant::now();
        while !(a.exists() && b.exists()) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.device = Some(spawn(
            Command::new(env!("CARGO_BIN_EXE_fieldgate"))
                .args(["sim", "modbus", "--map"])
                .arg(self.dir.join("sim.toml"))
                .arg("--serial")
                .arg(&b),
            &self.dir.join("sim.log"),
        ));
    }

    fn start_gateway(&mut self) {
        self.gateway = Some(spawn(
            Command::new(env!("CARGO_BIN_EXE_fieldgate"))
                .args(["run", "--config"])
                .arg(self.dir.join("gateway.toml"))
                .env("RUST_LOG", "warn"),
            &self.dir.join("gateway.log"),
        ));
    }

    fn last_seq(&self) -> u64 {
        rusqlite::Connection::open(self.dir.join("state/buffer.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map(|s| s as u64)
            .unwrap_or(0)
    }

    /// How many of the sequence numbers 1..=upto the cloud has.
    fn stored_upto(&self, upto: u64) -> u64 {
        rusqlite::Connection::open(fieldgate::cloud::store_path(&self.dir.join("cloud")))
            .and_then(|c| {
                c.busy_timeout(Duration::from_secs(2))?;
                c.query_row(
                    "SELECT count(*) FROM samples WHERE device = 'rig-gw' AND seq <= ?1",
                    [upto as i64],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map(|n| n as u64)
            .unwrap_or(0)
    }

    fn depth(&self) -> Option<u64> {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
            .args(["status", "--json", "--socket"])
            .arg(self.dir.join("state/status.sock"))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["buffer"]["depth"].as_u64()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = restore();
        for c in [
            &mut self.can,
            &mut self.tpm,
            &mut self.gateway,
            &mut self.device,
            &mut self.line,
            &mut self.cloud,
        ] {
            kill(c);
        }
    }
}

fn run(sc: &Scenario) -> Outcome {
    let t0 = Instant::now();
    let dir = PathBuf::from("/tmp/hil").join(sc.name.replace(' ', "-"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // swtpm takes two ports in a row.
    let pair = || loop {
        let p = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut rig = Rig {
        dir: dir.clone(),
        cloud_port: free_port(),
        api_port: free_port(),
        tpm_port: pair(),
        cloud: None,
        tpm: None,
        can: None,
        gateway: None,
        line: None,
        device: None,
    };
    let mut sim = String::from("[[device]]\nunit = 1\n");
    let mut points = String::new();
    for i in 0..sc.points {
        sim += &format!(
            "[[device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\nvalue = {}\n",
            100 + i
        );
        points += &format!(
            "[[bus.device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {i}\ntype = \"u16\"\n"
        );
    }
    std::fs::write(dir.join("sim.toml"), sim).unwrap();
    // The operator's side: a one-time token; the gateway pins the cloud's CA.
    let token = Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
        .arg("--data-dir")
        .arg(dir.join("cloud"))
        .args(["token", "--device", "rig-gw"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    std::fs::write(dir.join("bootstrap.token"), &token.stdout).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::copy(dir.join("cloud/pki/ca.crt"), dir.join("certs/ca.crt")).unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            r#"[gateway]
device_id = "rig-gw"
state_dir = "state"
status_socket = "state/status.sock"
[clock]
synced = "always"
[identity]
backend = "tpm"
tcti = "swtpm:host=127.0.0.1,port={tpm}"
enroll_url = "https://127.0.0.1:{api}"
token_file = "bootstrap.token"
[uplink]
brokers = ["127.0.0.1:{port}"]
ca = "certs/ca.crt"
cert = "state/device.crt"
batch_max_age = "200ms"
reconnect_min = "200ms"
reconnect_max = "2s"
keep_alive = "5s"
[[bus]]
name = "rs485"
rtu = {{ port = "{tty}", baud = 115200 }}
timeout = "300ms"
retries = 0
[[bus.device]]
name = "dev"
unit = 1
poll_interval = "{interval}"
{points}
[[can]]
name = "genset"
interface = "vcan0"
dbc = ["{dbc}"]
j1939 = true
[can.emit]
min_interval = "0s"
"#,
            port = rig.cloud_port,
            tpm = rig.tpm_port,
            api = rig.api_port,
            dbc = root().join("config/demo-engine.dbc").display(),
            tty = dir.join("ttyGW").display(),
            interval = humantime::format_duration(sc.interval),
        ),
    )
    .unwrap();
    rig.start_tpm();
    rig.start_cloud();
    rig.start_line();
    rig.start_can();
    rig.start_gateway();

    let mut out = Outcome::default();
    let mut last_step = Instant::now();
    for step in &sc.steps {
        // Wait for the step's time, watching the backlog meanwhile.
        while t0.elapsed() < step.at {
            if let Some(d) = rig.depth() {
                out.peak_backlog = out.peak_backlog.max(d);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let failed = match step.action.as_str() {
            "cut" => netem(&[rig.cloud_port, rig.api_port], "loss 100%"),
            "netem" => netem(&[rig.cloud_port, rig.api_port], &step.args),
            "restore" => restore(),
            "power-cut" => {
                kill(&mut rig.gateway);
                rig.start_gateway();
                None
            }
            "restart-cloud" => {
                kill(&mut rig.cloud);
                std::thread::sleep(Duration::from_millis(500));
                rig.start_cloud();
                None
            }
            "unplug-bus" => {
                kill(&mut rig.device);
                kill(&mut rig.line);
                None
            }
            "replug-bus" => {
                rig.start_line();
                None
            }
            other => Some(format!("unknown step `{other}`")),
        };
        out.problems.extend(failed);
        last_step = Instant::now();
    }
    // Everything committed up to now must reach the cloud within the drain time.
    let target = rig.last_seq();
    out.produced = target;
    let end = last_step + sc.expect.drain_within;
    loop {
        if let Some(d) = rig.depth() {
            out.peak_backlog = out.peak_backlog.max(d);
        }
        if rig.stored_upto(target) == target {
            out.drain = Some(last_step.elapsed());
            break;
        }
        if Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The rig must have worked at all: an eighth of the polls came through (software
    // emulation is slow, and a power cut costs a restart).
    let polls = t0.elapsed().as_secs_f64() / sc.interval.as_secs_f64();
    if (out.produced as f64) < polls * sc.points as f64 / 8.0 {
        out.problems.push(format!(
            "only {} samples for about {:.0} polls of {} points: the device or the line did not work",
            out.produced, polls, sc.points
        ));
    }
    if sc.expect.no_loss {
        let stored = rig.stored_upto(target);
        if stored != target {
            out.problems.push(format!(
                "{stored} of {target} samples in the cloud after {:?}",
                sc.expect.drain_within
            ));
        }
        let gaps =
            fieldgate::cloud::store::Store::open(&fieldgate::cloud::store_path(&dir.join("cloud")))
                .and_then(|s| s.gaps("rig-gw"))
                .map(|g| g.len())
                .unwrap_or(0);
        if gaps > 0 {
            out.problems.push(format!("{gaps} gap records"));
        }
    }
    let store =
        fieldgate::cloud::store::Store::open(&fieldgate::cloud::store_path(&dir.join("cloud")))
            .unwrap();
    let rows = store
        .query("rig-gw", Some("dev/p0"), None, 1_000_000)
        .unwrap_or_default();
    out.bad = rows.iter().filter(|r| r.quality != "good").count() as u64;
    if sc.expect.bad_then_good {
        let first_bad = rows.iter().position(|r| r.quality != "good");
        let good_after = first_bad.is_some_and(|i| rows[i..].iter().any(|r| r.quality == "good"));
        if first_bad.is_none() || !good_after {
            out.problems
                .push("expected bad samples while unplugged, then good ones".into());
        }
        if out.bad > 3 {
            out.problems.push(format!("{} bad samples of one point: bad qualities must be reported on change, not per poll", out.bad));
        }
    }
    if !out.problems.is_empty() {
        for log in ["gateway.log", "cloud.log", "sim.log", "swtpm.log"] {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            println!(
                "--- {log} (last lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    out.secs = t0.elapsed().as_secs_f64();
    out
}
