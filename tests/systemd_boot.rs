//! fieldgate under a real systemd as PID 1 (a Debian container booted with
//! systemd-nspawn, its root built by hil/systemd-rootfs.sh): the service becomes active
//! only after READY, shows its STATUS line, reloads on `systemctl reload` without loss,
//! logs to the journal with structured fields, and is restarted by the watchdog when a
//! task hangs (another process holds the buffer database locked).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Container {
    nspawn: Proc,
    leader: u32,
}

impl Container {
    fn boot(rootfs: &Path, binds: &[(PathBuf, &str, bool)], log: &Path) -> Container {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["-D"]).arg(rootfs).args([
            "--register=no",
            "--keep-unit",
            "-q",
            "--boot",
            "--volatile=overlay",
        ]);
        for (host, inside, ro) in binds {
            cmd.arg(format!(
                "--bind{}={}:{inside}",
                if *ro { "-ro" } else { "" },
                host.display()
            ));
        }
        let nspawn = Proc(
            cmd.stdin(Stdio::null())
                .stdout(std::fs::File::create(log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut leader = 0;
        wait_for("the container's init", Duration::from_secs(30), || {
            let out = Command::new("pgrep")
                .args(["-P", &nspawn.0.id().to_string()])
                .output()
                .unwrap();
            leader = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            leader != 0
        });
        let c = Container { nspawn, leader };
        // A whole systemd boot on a loaded two-core machine: once over 60 s in a clean CI
        // run (the boot itself, before fieldgate starts), so the wait is generous.
        wait_for(
            "systemd to finish booting",
            Duration::from_secs(150),
            || {
                let s = c.run(&["systemctl", "is-system-running"]);
                let state = String::from_utf8_lossy(&s.stdout);
                state.starts_with("running") || state.starts_with("degraded")
            },
        );
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "--",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    fn text(&self, args: &[&str]) -> String {
        let o = self.run(args);
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    }

    fn show(&self, prop: &str) -> String {
        self.text(&["systemctl", "show", "-p", prop, "--value", "fieldgate"])
            .trim()
            .to_string()
    }

    fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(
            &self
                .run(&[
                    "fieldgate",
                    "status",
                    "--json",
                    "--socket",
                    "/run/fieldgate/status.sock",
                ])
                .stdout,
        )
        .ok()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.run(&["systemctl", "poweroff"]);
        let _ = self.nspawn.wait_exit(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_ready_reload_journal_and_watchdog() {
    need("systemd-nspawn");
    need("debootstrap");
    need("nsenter");
    let rootfs = root().join("target/hil/rootfs");
    let built = Command::new(root().join("hil/systemd-rootfs.sh"))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(built.success(), "building the container root failed");

    let (dir, cloud) = Cloud::with_device("gw-rig").await;
    let d = dir.path();
    let (mut peer, port) = modbus_peer_tcp(&constant_points(3), d);
    let etc = d.join("etc-fieldgate");
    std::fs::create_dir_all(&etc).unwrap();
    for f in ["ca.crt", "device.crt", "device.key"] {
        std::fs::copy(d.join("certs").join(f), etc.join(f)).unwrap();
    }
    let gw_cfg = |points: u16| {
        let mut s = format!(
            "[gateway]\ndevice_id = \"gw-rig\"\nstate_dir = \"/var/lib/fieldgate\"\nstatus_socket = \"/run/fieldgate/status.sock\"\n\
             [uplink]\nbrokers = [\"{}\"]\nca = \"/etc/fieldgate/ca.crt\"\ncert = \"/etc/fieldgate/device.crt\"\nkey = \"/etc/fieldgate/device.key\"\n\
             batch_max_age = \"100ms\"\n[clock]\nsynced = \"always\"\n",
            cloud.addr
        );
        s += &constant_bus(port, points, "200ms");
        // A serial bus: the generator must let the service open exactly this port.
        s += "\n[[bus]]\nname = \"rs485\"\nrtu = { port = \"/dev/ttyS3\" }\n";
        s
    };
    std::fs::write(etc.join("gateway.toml"), gw_cfg(2)).unwrap();
    let dropin = d.join("dropin");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test.conf"),
        "[Service]\nWatchdogSec=4s\nRestartSec=1s\n",
    )
    .unwrap();
    let sd = root().join("systemd");
    let binds = [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_fieldgate")),
            "/usr/bin/fieldgate",
            true,
        ),
        (
            sd.join("fieldgate.service"),
            "/etc/systemd/system/fieldgate.service",
            true,
        ),
        (
            dropin.clone(),
            "/etc/systemd/system/fieldgate.service.d",
            true,
        ),
        (
            sd.join("fieldgate-generator"),
            "/etc/systemd/system-generators/fieldgate-generator",
            true,
        ),
        (
            sd.join("fieldgate-launch"),
            "/usr/libexec/fieldgate/fieldgate-launch",
            true,
        ),
        (
            sd.join("fieldgate.sysusers"),
            "/etc/sysusers.d/fieldgate.conf",
            true,
        ),
        (
            sd.join("fieldgate.tmpfiles"),
            "/etc/tmpfiles.d/fieldgate.conf",
            true,
        ),
        (etc.clone(), "/etc/fieldgate", false),
    ];
    let c = Container::boot(&rootfs, &binds, &d.join("console.log"));

    // `systemctl start` returns once the daemon said READY=1.
    let t = Instant::now();
    let start = c.run(&["systemctl", "start", "fieldgate"]);
    assert!(
        start.status.success(),
        "start: {}\n{}",
        String::from_utf8_lossy(&start.stderr),
        c.text(&["journalctl", "-u", "fieldgate", "--no-pager"])
    );
    println!("active after {:?}", t.elapsed());
    // Device access: the TPM and the configured serial port, not every tty.
    let allow = c.show("DeviceAllow");
    assert!(
        allow.contains("/dev/ttyS3 rw") && allow.contains("/dev/tpmrm0 rw"),
        "{allow}"
    );
    assert!(!allow.contains("char-tty"), "{allow}");
    assert_eq!(c.show("ActiveState"), "active");
    assert_eq!(c.show("Type"), "notify");
    wait_for("the STATUS line", Duration::from_secs(20), || {
        c.show("StatusText").starts_with("uplink connected to")
    });
    wait_for("data in the cloud", Duration::from_secs(20), || {
        cloud.store().count("gw-rig").unwrap() > 4
    });

    // Reload with a third point: the service stays active, the new point arrives.
    std::fs::write(etc.join("gateway.toml"), gw_cfg(3)).unwrap();
    let pid_before = c.show("MainPID");
    let reload = c.run(&["systemctl", "reload", "fieldgate"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert_eq!(c.show("MainPID"), pid_before, "reload keeps the process");
    wait_for("the new point", Duration::from_secs(20), || {
        cloud.rows("gw-rig").iter().any(|r| r.point == "dev/p2")
    });

    // The journal has the daemon's records with their fields.
    let journal = c.text(&["journalctl", "-u", "fieldgate", "-o", "json", "--no-pager"]);
    let records: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reloaded = records
        .iter()
        .find(|r| r["MESSAGE"] == "config reloaded")
        .unwrap_or_else(|| panic!("{journal}"));
    assert_eq!(
        reloaded["KEPT"], "1",
        "the unchanged serial bus: {reloaded}"
    );
    assert_eq!(reloaded["RESTARTED"], "1", "{reloaded}");
    assert!(
        records
            .iter()
            .any(|r| r["MESSAGE"] == "fieldgate running" && r["DEVICE"] == "gw-rig"),
        "{journal}"
    );

    // Another process holds the buffer database locked: the buffer hangs, the daemon stops
    // feeding the watchdog, and systemd restarts it.
    let restarts: u32 = c.show("NRestarts").parse().unwrap();
    let _locker = Proc(
        Command::new("nsenter")
            .args(["-t", &c.leader.to_string(), "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c"])
            .arg("printf 'BEGIN EXCLUSIVE;\\n.shell sleep 12\\nROLLBACK;\\n' | sqlite3 /var/lib/fieldgate/buffer.db")
            .spawn()
            .unwrap(),
    );
    wait_for("a watchdog restart", Duration::from_secs(30), || {
        c.show("NRestarts").parse::<u32>().unwrap_or(0) > restarts
    });
    let journal = c.text(&["journalctl", "--no-pager", "-u", "fieldgate"]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert!(journal.contains("a task is stuck"), "{journal}");

    // Once the lock is gone the service runs again and nothing committed was lost.
    wait_for("the service back", Duration::from_secs(40), || {
        c.show("ActiveState") == "active"
            && c.status()
                .is_some_and(|s| s["uplink"]["connected_to"].is_string())
    });
    let _ = peer.0.kill();
    let _ = peer.0.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for("the drain", Duration::from_secs(30), || {
        c.status()
            .is_some_and(|s| s["buffer"]["depth"] == 0 && s["buffer"]["uncommitted"] == 0)
    });
    let last = c.status().unwrap()["buffer"]["last_seq"].as_u64().unwrap();
    let stored: std::collections::BTreeSet<u64> =
        cloud.rows("gw-rig").iter().map(|r| r.seq).collect();
    assert_eq!(
        stored.len() as u64,
        last,
        "every accepted sample arrived once across reload and watchdog restart"
    );
    let stop = c.run(&["systemctl", "stop", "fieldgate"]);
    assert!(stop.status.success());
    assert_eq!(c.show("ActiveState"), "inactive");
}
