//! `fieldgate-cloud demo`: the cloud, a gateway, a simulated Modbus power meter and a
//! replayed J1939 bus on this machine, printing samples as they are stored.

use crate::{rfc3339, shutdown_on_signal};
use anyhow::bail;
use fieldgate::cloud;
use std::path::Path;
use std::time::Duration;

/// The demo: this process runs the cloud; it starts the `fieldgate` binary next to it
/// twice, as a simulated Modbus device and as the gateway, and prints what arrives.
pub async fn run(
    data: &Path,
    duration: Option<Duration>,
    database: &cloud::Database,
) -> anyhow::Result<()> {
    let gw_bin = std::env::current_exe()?.with_file_name("fieldgate");
    if !gw_bin.exists() {
        bail!(
            "{} not found: build both binaries first (cargo build --release)",
            gw_bin.display()
        );
    }
    let root = data.join("demo");
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    let shutdown = shutdown_on_signal();
    if let Some(d) = duration {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let cloud_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cloud_addr = cloud_listener.local_addr()?;
    let (pki, store) = tokio::task::block_in_place(|| {
        cloud::open_with(data, &cloud::SERVER_NAMES.map(String::from), database)
    })?;
    pki.dev_cert(&"demo-gw".parse()?, &root.join("certs"))?;
    let sim_port = free_port().await?;
    std::fs::write(root.join("sim.toml"), DEMO_SIM)?;
    std::fs::write(root.join("engine.dbc"), DEMO_ENGINE_DBC)?;
    std::fs::write(root.join("engine.log"), DEMO_ENGINE_LOG)?;
    std::fs::write(
        root.join("gateway.toml"),
        DEMO_GATEWAY
            .replace("@CLOUD@", &cloud_addr.to_string())
            .replace("@SIM@", &format!("127.0.0.1:{sim_port}")),
    )?;
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api_listener.local_addr()?;
    let access = tokio::task::block_in_place(|| demo_access(data, database))?;
    let (d, s) = (data.to_path_buf(), shutdown.clone());
    let settings = cloud::Settings {
        database: database.clone(),
        ..Default::default()
    };
    let cloud_task = tokio::spawn(async move {
        cloud::run_with(&d, cloud_listener, Some(api_listener), settings, s).await
    });
    let mut sim = tokio::process::Command::new(&gw_bin)
        .args(["sim", "modbus", "--map"])
        .arg(root.join("sim.toml"))
        .args(["--listen", &format!("127.0.0.1:{sim_port}")])
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gw = tokio::process::Command::new(&gw_bin)
        .args(["run", "--config"])
        .arg(root.join("gateway.toml"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    println!("demo: cloud on {cloud_addr}, simulated power meter on 127.0.0.1:{sim_port}, a replayed J1939 genset bus, gateway demo-gw");
    println!(
        "demo: the HTTPS API on https://{api_addr} (CA: {}):",
        data.join("pki/ca.crt").display()
    );
    println!(
        "        log in as demo@fieldgate.example, password {}",
        access.password
    );
    println!("        live values page: https://{api_addr}/v1/embed/live.html#tenant=demo&device=demo-gw&key={}", access.key);
    println!("demo: samples as they are stored in the cloud (Ctrl-C to stop):");
    let mut seen = fieldgate::sample::now_ns();
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => break,
        }
        let rows = store
            .store()
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock"))?
            .tail(seen, 1000)?;
        for (received, r) in rows {
            seen = seen.max(received);
            println!(
                "{}  {:>6}  {:<24} {:>12}  {}",
                rfc3339(r.ts_ns),
                r.seq,
                r.point,
                r.value.to_string(),
                r.quality
            );
        }
    }
    let _ = gw.start_kill();
    let _ = gw.wait().await;
    let _ = sim.start_kill();
    let _ = cloud_task.await;
    Ok(())
}

/// What the demo prints for the API: the demo owner's password and a read-only key.
struct DemoAccess {
    password: String,
    key: String,
}

/// The demo tenant: its owner (a fresh password each run), the demo gateway registered
/// and claimed, and a read-only key for it, valid for a day.
fn demo_access(data: &Path, database: &cloud::Database) -> anyhow::Result<DemoAccess> {
    use cloud::iam::access::Iam;
    use cloud::iam::keys::{Action, Scope};
    use cloud::iam::users::UserError;
    let err = |e: cloud::iam::keys::Refused| anyhow::anyhow!("demo tenant: {e}");
    let db = database.db(data)?;
    let anchor = fieldgate::cloud::iam::anchor::Anchor::open(data, &db)?;
    let iam = Iam::with(db, std::sync::Arc::new(anchor)).map_err(err)?;
    let password: String = fieldgate::hex::encode(&rand::random::<[u8; 9]>());
    let email = "demo@fieldgate.example";
    let users = iam.users();
    match users.register(email, &password, "demo") {
        Ok(()) => {}
        Err(UserError::Conflict(_)) => {
            let token = users.reset_token(email).map_err(|e| err(e.into()))?;
            users
                .reset_password(&token.unwrap_or_default(), &password)
                .map_err(|e| err(e.into()))?;
        }
        Err(e) => return Err(err(e.into())),
    }
    let devices = iam.devices();
    let code = "DEMO-GW-CLAIM";
    match devices.register("demo-gw", code) {
        Ok(()) | Err(UserError::Conflict(_)) => {}
        Err(e) => return Err(err(e.into())),
    }
    match devices.claim_for("demo", "demo-gw", code) {
        Ok(()) | Err(UserError::Conflict(_)) => {}
        Err(e) => return Err(err(e.into())),
    }
    let now = fieldgate::sample::now_ns();
    let (_, key) = iam
        .keys()
        .create(&Scope {
            tenant: "demo".into(),
            devices: vec!["demo-gw".into()],
            streams: vec!["*".into()],
            actions: vec![Action::Read],
            cidrs: vec![],
            origins: vec![],
            not_before_ns: now,
            not_after_ns: now + 86_400_000_000_000,
            min_resolution_s: 0,
            may_delegate: false,
        })
        .map_err(|e| anyhow::anyhow!("demo key: {e}"))?;
    Ok(DemoAccess { password, key })
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port())
}

const DEMO_SIM: &str = include_str!("../../../config/demo-sim.toml");
const DEMO_GATEWAY: &str = include_str!("../../../config/demo-gateway.toml");
const DEMO_ENGINE_DBC: &str = include_str!("../../../config/demo-engine.dbc");
const DEMO_ENGINE_LOG: &str = include_str!("../../../config/demo-engine.log");
