//! The Yocto layer: its crate list matches Cargo.lock exactly, and oelint-adv finds no
//! errors (the layer cannot be built here: no bitbake environment).

mod common;
use common::*;
use std::collections::BTreeSet;

const LAYER: &str = "yocto/meta-fieldgate";

#[test]
fn the_crate_list_matches_cargo_lock() {
    let lock: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.lock")).unwrap()).unwrap();
    let want: BTreeSet<(String, String, String)> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p.get("source").and_then(|s| s.as_str())
                == Some("registry+https://github.com/rust-lang/crates.io-index")
        })
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("name"), s("version"), s("checksum"))
        })
        .collect();
    let inc = std::fs::read_to_string(
        root()
            .join(LAYER)
            .join("recipes-fieldgate/fieldgate/fieldgate-crates.inc"),
    )
    .unwrap();
    let uris: BTreeSet<String> = inc
        .split_whitespace()
        .filter_map(|w| {
            w.trim_matches('"')
                .strip_prefix("crate://crates.io/")
                .map(str::to_string)
        })
        .collect();
    let sums: BTreeSet<(String, String)> = inc
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("SRC_URI[")?;
            let (key, value) = rest.split_once(".sha256sum] = ")?;
            Some((key.to_string(), value.trim_matches('"').to_string()))
        })
        .collect();
    let want_uris: BTreeSet<String> = want.iter().map(|(n, v, _)| format!("{n}/{v}")).collect();
    let want_sums: BTreeSet<(String, String)> = want
        .iter()
        .map(|(n, v, c)| (format!("{n}-{v}"), c.clone()))
        .collect();
    let hint = "regenerate with: python3 yocto/meta-fieldgate/scripts/update-crates.py";
    assert_eq!(uris, want_uris, "crate list and Cargo.lock differ; {hint}");
    assert_eq!(sums, want_sums, "checksums differ; {hint}");
    assert!(want.len() > 100);
}

#[test]
fn oelint_adv_finds_no_errors() {
    let oelint = root().join(".venv/bin/oelint-adv");
    assert!(
        oelint.exists(),
        "{} is missing: run .ci/setup",
        oelint.display()
    );
    let recipes: Vec<_> = [
        "recipes-fieldgate/fieldgate/fieldgate_0.1.0.bb",
        "recipes-fieldgate/packagegroups/packagegroup-fieldgate.bb",
    ]
    .iter()
    .map(|r| root().join(LAYER).join(r))
    .collect();
    // homepageping would reach out to the network: never from tests.
    let out = std::process::Command::new(oelint)
        .args(["--quiet", "--suppress", "oelint.vars.homepageping"])
        .args(&recipes)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(":error:") || l.contains(":warning:"))
        .collect();
    assert!(problems.is_empty(), "oelint-adv:\n{}", problems.join("\n"));
}
