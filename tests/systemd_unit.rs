//! The shipped systemd units: `systemd-analyze security --offline=true` rates each at 2.0
//! or lower, and `systemd-analyze verify` finds nothing (with ExecStart pointed at the
//! binaries this build made, since /usr/bin/fieldgate is not installed here).

mod common;
use common::*;
use std::process::Command;

fn exposure(unit: &std::path::Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let score = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    println!("{line}");
    score.parse().unwrap()
}

#[test]
fn units_are_hardened_and_verify_clean() {
    need("systemd-analyze");
    for unit in [
        "fieldgate.service",
        "fieldgate-cloud.service",
        "fieldgate-cloud-ingest@.service",
    ] {
        let e = exposure(&root().join("systemd").join(unit));
        assert!(e <= 2.0, "{unit}: exposure {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    for (unit, bin) in [
        ("fieldgate.service", env!("CARGO_BIN_EXE_fieldgate")),
        (
            "fieldgate-cloud.service",
            env!("CARGO_BIN_EXE_fieldgate-cloud"),
        ),
        (
            "fieldgate-cloud-ingest@.service",
            env!("CARGO_BIN_EXE_fieldgate-cloud"),
        ),
    ] {
        let name = if unit == "fieldgate.service" {
            "/usr/bin/fieldgate "
        } else {
            "/usr/bin/fieldgate-cloud "
        };
        // The launcher too is the one in the tree.
        let launch = root().join("systemd/fieldgate-launch");
        let text = std::fs::read_to_string(root().join("systemd").join(unit))
            .unwrap()
            .replace(name, &format!("{bin} "))
            .replace(
                "/usr/libexec/fieldgate/fieldgate-launch",
                launch.to_str().unwrap(),
            );
        // A template is verified as an instance of it.
        let file = unit.replace("@.", "@1.");
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("fieldgate.service"))
        .arg(dir.path().join("fieldgate-cloud.service"))
        .arg(dir.path().join("fieldgate-cloud-ingest@1.service"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
