//! The administrator's commands: tokens, endorsement keys, system accounts, revocation,
//! the audit chain's check, identity events, development certificates.

use crate::rfc3339;
use anyhow::{bail, Context as _};
use fieldgate::cloud;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Admin commands: one connection on this (blocking) thread.
fn db(data: &Path, database: &cloud::Database) -> anyhow::Result<cloud::sql::Db> {
    Ok(tokio::task::block_in_place(|| database.db(data))?)
}

fn registry(data: &Path, database: &cloud::Database) -> anyhow::Result<cloud::registry::Registry> {
    Ok(cloud::registry::Registry::with(db(data, database)?)?)
}

pub fn token(
    data: &Path,
    database: &cloud::Database,
    device: fieldgate::ids::DeviceId,
    valid: Duration,
) -> anyhow::Result<()> {
    let registry = || registry(data, database);
    // The CA too, made on first use: the gateway pins it.
    cloud::pki::Pki::open_or_create(&data.join("pki"), &cloud::SERVER_NAMES.map(String::from))?;
    println!("{}", registry()?.create_token(&device, valid)?);
    eprintln!(
                "one-time token for {device}, valid for {}: give it to the gateway (identity.token_file, or `fieldgate enroll --token`)",
                humantime::format_duration(valid)
            );
    Ok(())
}

pub fn register(
    data: &Path,
    database: &cloud::Database,
    device: fieldgate::ids::DeviceId,
    ek: String,
) -> anyhow::Result<()> {
    let registry = || registry(data, database);
    let point = fieldgate::hex::decode(ek.trim())
                .filter(|p| p.len() == 65 && p[0] == 4)
                .context("--ek must be the EK's uncompressed P-256 point in hex (130 digits, starting 04), as `fieldgate identity ek` prints it")?;
    // The CA too, made on first use: the gateway pins it.
    cloud::pki::Pki::open_or_create(&data.join("pki"), &cloud::SERVER_NAMES.map(String::from))?;
    registry()?.register_ek(&device, &point)?;
    println!("registered the endorsement key of {device}");
    Ok(())
}

pub fn system_account(
    data: &Path,
    database: &cloud::Database,
    email: String,
) -> anyhow::Result<()> {
    let db = || db(data, database);
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let db = db()?;
    let users = cloud::iam::users::Users::new(&db);
    users
        .create_system_account(&email, password.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("system account {email} created");
    Ok(())
}

pub fn revoke(
    data: &Path,
    database: &cloud::Database,
    device: fieldgate::ids::DeviceId,
    reason: String,
) -> anyhow::Result<()> {
    let registry = || registry(data, database);
    registry()?.revoke(&device, &reason)?;
    println!("{device} revoked: refused from its next connection on");
    Ok(())
}

pub fn audit_verify(data: &Path, database: &cloud::Database) -> anyhow::Result<()> {
    let db = || db(data, database);
    let db = db()?;
    let anchor = cloud::iam::anchor::Anchor::open(data, &db)?;
    match cloud::iam::audit::verify(&db, &anchor)? {
        cloud::iam::audit::Verdict::Intact { entries } => {
            println!("audit log intact: {entries} entries");
            Ok(())
        }
        cloud::iam::audit::Verdict::Broken { id, why } => {
            bail!("audit log BROKEN at entry {id}: {why}")
        }
    }
}

pub fn identities(
    data: &Path,
    database: &cloud::Database,
    device: Option<fieldgate::ids::DeviceId>,
) -> anyhow::Result<()> {
    let registry = || registry(data, database);
    for e in registry()?.events(device.as_deref())? {
        println!(
            "{}  {:<20} {:<13} {:<22} {}",
            rfc3339(e.ts_ns),
            e.device,
            e.event,
            e.peer,
            e.detail
        );
    }
    Ok(())
}

pub fn dev_cert(
    data: &Path,
    device_id: fieldgate::ids::DeviceId,
    out: PathBuf,
) -> anyhow::Result<()> {
    let (pki, _) = cloud::open(
        data,
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )?;
    pki.dev_cert(&device_id, &out)?;
    println!(
        "wrote {0}/device.crt, {0}/device.key and {0}/ca.crt for {device_id}",
        out.display()
    );
    Ok(())
}

pub async fn command(
    data: &Path,
    database: &cloud::Database,
    device: fieldgate::ids::DeviceId,
    kind: Option<String>,
    body: String,
    wait: Duration,
) -> anyhow::Result<()> {
    let down = cloud::downlink::Downlink::with(db(data, database)?);
    let Some(kind) = kind else {
        for r in down.list(&device, 100)? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    };
    let body: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("--body is not JSON: {e}"))?;
    let id = down.issue(&device, &kind, &body, "admin")?;
    eprintln!("command {id} queued for {device}");
    let end = std::time::Instant::now() + wait;
    loop {
        let r = down
            .get(&id)?
            .ok_or_else(|| anyhow::anyhow!("command {id} vanished"))?;
        if r.state != "pending" || std::time::Instant::now() >= end {
            println!("{}", serde_json::to_string(&r)?);
            return match r.state.as_str() {
                "done" => Ok(()),
                "pending" if wait.is_zero() => Ok(()),
                "pending" => bail!(
                    "no reply within {}: it stays pending and is sent whenever {device} is connected",
                    humantime::format_duration(wait)
                ),
                _ => bail!("{device}: {}", r.error.unwrap_or_default()),
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn release_add(
    data: &Path,
    database: &cloud::Database,
    tenant: fieldgate::ids::TenantName,
    metadata: PathBuf,
    image: PathBuf,
) -> anyhow::Result<()> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let releases = cloud::releases::Releases::with(db(data, database)?, data);
    let stored = releases.add(&tenant, &read(&metadata)?, &read(&image)?)?;
    println!(
        "release {} for {} published to {}: {} bytes, sha256 {}",
        stored.version, stored.hardware, stored.tenant, stored.length, stored.sha256
    );
    Ok(())
}
