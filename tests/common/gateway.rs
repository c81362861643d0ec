//! The gateway: configs, the daemon as a process, its command line and status socket.

use super::*;

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
{can}"#,
        url = cloud.api_url(),
        broker = cloud.addr,
        can = demo_engine_can(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `[[can]]` bus replaying the demo's genset capture in a loop, every change emitted.
pub fn demo_engine_can() -> String {
    let fixtures = root().join("config");
    format!(
        r#"
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
        log = fixtures.join("demo-engine.log").display(),
        dbc = fixtures.join("demo-engine.dbc").display(),
    )
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
