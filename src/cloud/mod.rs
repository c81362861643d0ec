//! The cloud side: the issuing CA, the MQTT ingest and the sample store.

pub mod api;
pub mod code;
pub mod credential;
pub mod enroll;
pub mod iam;
pub mod ingest;
pub mod pki;
pub mod registry;
pub mod schema;
pub mod sql;
pub mod store;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Paths of a cloud data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cloud.db")
}

/// Where the cloud keeps samples, identities and access: the data directory's SQLite
/// file (a single node), or a PostgreSQL database that scale-out workers and API servers
/// share.
#[derive(Debug, Clone, Default)]
pub struct Database {
    /// A `postgres://` URL (with `sslmode=require` for TLS); `None`: SQLite.
    pub url: Option<String>,
    /// A CA the PostgreSQL server's certificate may chain to, besides the system's roots.
    pub ca: Option<PathBuf>,
}

impl Database {
    pub fn postgres(url: &str) -> Database {
        Database {
            url: Some(url.to_string()),
            ca: None,
        }
    }

    fn location(&self, data_dir: &Path) -> String {
        match &self.url {
            Some(u) => u.clone(),
            None => store_path(data_dir).display().to_string(),
        }
    }

    /// A connection for identity, access and the registry (making the data directory
    /// for SQLite).
    pub fn db(&self, data_dir: &Path) -> anyhow::Result<sql::Db> {
        if self.url.is_none() {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| anyhow::anyhow!("{}: {e}", data_dir.display()))?;
        }
        let location = self.location(data_dir);
        sql::Db::open(&location, self.ca.as_deref())
            .map_err(|e| anyhow::anyhow!("opening the database {}: {e}", redact(&location)))
    }

    /// A connection to the sample store.
    pub fn store(&self, data_dir: &Path) -> anyhow::Result<store::Store> {
        let location = self.location(data_dir);
        store::Store::open_location(&location, self.ca.as_deref())
            .map_err(|e| anyhow::anyhow!("opening the store {}: {e}", redact(&location)))
    }
}

/// A database location without its password, for messages.
pub fn redact(location: &str) -> String {
    match (location.find("://"), location.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &location[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:***{}", &location[..scheme + 3], &location[at..])
                }
                None => location.to_string(),
            }
        }
        _ => location.to_string(),
    }
}

/// Opens (creating on first use) the CA and the ingest (store and registry) of `data_dir`.
pub fn open(
    data_dir: &Path,
    server_names: &[String],
) -> anyhow::Result<(pki::Pki, Arc<ingest::Ingest>)> {
    open_with(data_dir, server_names, &Database::default())
}

/// Opens the CA of `data_dir` and the ingest over the database `database` names.
pub fn open_with(
    data_dir: &Path,
    server_names: &[String],
    database: &Database,
) -> anyhow::Result<(pki::Pki, Arc<ingest::Ingest>)> {
    let pki = pki::Pki::open_or_create(&data_dir.join("pki"), server_names)?;
    let store = Arc::new(Mutex::new(database.store(data_dir)?));
    let registry = registry::Registry::with(database.db(data_dir)?)?;
    Ok((pki, Arc::new(ingest::Ingest::new(store, registry))))
}

/// Runs the single-node cloud: the embedded mutual-TLS ingest on `listener`, accepting
/// only certificates of its own CA, storing into the data directory, until `shutdown`.
pub async fn run(
    data_dir: &Path,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(data_dir, listener, None, Settings::default(), shutdown).await
}

/// What the single-node cloud can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lifetime of the certificates enrollment and renewal issue.
    pub cert_lifetime: std::time::Duration,
    /// Enrollment needs proof (credential activation) that the key is in the TPM whose
    /// endorsement key was registered for the device.
    pub require_tpm: bool,
    /// Where tenants' webhooks may point.
    pub webhook: api::webhook::Policy,
    /// Where data, identities and access live.
    pub database: Database,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cert_lifetime: std::time::Duration::from_secs(90 * 86400),
            require_tpm: false,
            webhook: Default::default(),
            database: Database::default(),
        }
    }
}

/// The ingest on `listener` and, with `api`, the HTTPS API (enrollment, renewal).
pub async fn run_with(
    data_dir: &Path,
    listener: tokio::net::TcpListener,
    api: Option<tokio::net::TcpListener>,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (pki, store) = open_with(
        data_dir,
        &SERVER_NAMES.map(String::from),
        &settings.database,
    )?;
    let tls =
        crate::tls::mtls_server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key())?;
    tracing::info!(addr = %listener.local_addr()?, "ingest listening (MQTT over mutual TLS)");
    let api_task = match api {
        Some(l) => Some(serve_api(data_dir, l, &settings, shutdown.clone()).await?),
        None => None,
    };
    drop(pki);
    ingest::endpoint::serve(listener, tls, store, shutdown).await;
    if let Some(t) = api_task {
        let _ = t.await;
    }
    Ok(())
}

/// The names the cloud's server certificate carries by default.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Starts the HTTPS API on `listener` (and the webhook deliverer), over the database of
/// `settings`: one of any number of API servers when that is PostgreSQL.
pub async fn serve_api(
    data_dir: &Path,
    listener: tokio::net::TcpListener,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let names = SERVER_NAMES.map(String::from);
    let pki = pki::Pki::open_or_create(&data_dir.join("pki"), &names)?;
    let api_tls =
        crate::tls::server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key(), true)?;
    // Connecting waits for the database: off the async threads.
    let (d, database) = (data_dir.to_path_buf(), settings.database.clone());
    let (registry, iam_db, reads) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((database.db(&d)?, database.db(&d)?, database.store(&d)?))
    })
    .await??;
    let enrollment = Arc::new(enroll::Enrollment {
        pki,
        registry: registry::Registry::with(registry)?,
        lifetime: settings.cert_lifetime,
        require_tpm: settings.require_tpm,
    });
    tracing::info!(addr = %listener.local_addr()?, "API listening (HTTPS)");
    let api = Arc::new(api::Api::open(
        enrollment,
        iam_db,
        reads,
        settings.webhook.clone(),
        data_dir,
    )?);
    tokio::spawn(api::webhook::deliver(api.clone(), shutdown.clone()));
    Ok(tokio::spawn(api::serve(
        listener,
        api_tls,
        api::router(api),
        shutdown,
    )))
}
