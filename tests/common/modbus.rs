//! A Modbus peer we did not write (pymodbus), our own simulator on a pty, socat pairs, and
//! bus configs of constant points.

use super::*;

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
