//! The cloud side: the issuing CA, the MQTT ingest and the sample store.

pub mod api;
pub mod code;
pub mod credential;
pub mod downlink;
pub mod enroll;
pub mod iam;
pub mod ingest;
pub mod pki;
pub mod registry;
pub mod releases;
pub mod rollouts;
pub mod schema;
pub mod sql;
pub mod store;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Why the cloud could not start or open its data.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the database {location}: {source}")]
    Database {
        location: String,
        #[source]
        source: sql::DbError,
    },
    #[error("opening the store {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: store::StoreError,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Anchor(#[from] iam::anchor::AnchorError),
    #[error("identity and access: {0}")]
    Iam(#[from] code::Refused),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker: {0}")]
    Broker(String),
    #[error("a start-up task failed: {0}")]
    Task(String),
}

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
    pub fn db(&self, data_dir: &Path) -> Result<sql::Db, CloudError> {
        if self.url.is_none() {
            std::fs::create_dir_all(data_dir).map_err(|source| CloudError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        }
        let location = self.location(data_dir);
        sql::Db::open(&location, self.ca.as_deref()).map_err(|source| CloudError::Database {
            location: redact(&location),
            source,
        })
    }

    /// A connection to the sample store.
    pub fn store(&self, data_dir: &Path) -> Result<store::Store, CloudError> {
        let location = self.location(data_dir);
        store::Store::open_location(&location, self.ca.as_deref()).map_err(|source| {
            CloudError::Store {
                location: redact(&location),
                source,
            }
        })
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
) -> Result<(pki::Pki, Arc<ingest::Ingest>), CloudError> {
    open_with(data_dir, server_names, &Database::default())
}

/// Opens the CA of `data_dir` and the ingest over the database `database` names.
pub fn open_with(
    data_dir: &Path,
    server_names: &[String],
    database: &Database,
) -> Result<(pki::Pki, Arc<ingest::Ingest>), CloudError> {
    let pki = pki::Pki::open_or_create(&data_dir.join("pki"), server_names)?;
    Ok((pki, open_ingest(data_dir, database)?))
}

/// The ingest over the database `database` names: its store, registry and downlink.
/// Blocks on the database.
pub fn open_ingest(
    data_dir: &Path,
    database: &Database,
) -> Result<Arc<ingest::Ingest>, CloudError> {
    let store = Arc::new(Mutex::new(database.store(data_dir)?));
    let registry = registry::Registry::with(database.db(data_dir)?)?;
    let downlink = Arc::new(downlink::Downlink::with(database.db(data_dir)?));
    let db = database.db(data_dir)?;
    let anchor = Arc::new(iam::anchor::Anchor::open(data_dir, &db)?);
    let rollouts = rollouts::Rollouts::with(db, anchor);
    Ok(Arc::new(ingest::Ingest::new(
        store, registry, downlink, rollouts,
    )))
}

/// Runs the single-node cloud: the embedded mutual-TLS ingest on `listener`, accepting
/// only certificates of its own CA, storing into the data directory, until `shutdown`.
pub async fn run(
    data_dir: &Path,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CloudError> {
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
) -> Result<(), CloudError> {
    let (pki, store) = open_with(
        data_dir,
        &SERVER_NAMES.map(String::from),
        &settings.database,
    )?;
    let tls =
        crate::tls::mtls_server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key())?;
    tracing::info!(addr = ?listener.local_addr().ok(), "ingest listening (MQTT over mutual TLS)");
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
) -> Result<tokio::task::JoinHandle<()>, CloudError> {
    let names = SERVER_NAMES.map(String::from);
    let pki = pki::Pki::open_or_create(&data_dir.join("pki"), &names)?;
    let api_tls =
        crate::tls::server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key(), true)?;
    // Connecting waits for the database: off the async threads.
    let (d, database) = (data_dir.to_path_buf(), settings.database.clone());
    let (registry, connections) = tokio::task::spawn_blocking(move || {
        Ok::<_, CloudError>((
            database.db(&d)?,
            api::Connections {
                iam: database.db(&d)?,
                reads: database.store(&d)?,
                commands: database.db(&d)?,
                releases: database.db(&d)?,
                rollouts: database.db(&d)?,
            },
        ))
    })
    .await
    .map_err(|e| CloudError::Task(e.to_string()))??;
    let enrollment = Arc::new(enroll::Enrollment {
        pki,
        registry: registry::Registry::with(registry)?,
        lifetime: settings.cert_lifetime,
        require_tpm: settings.require_tpm,
    });
    tracing::info!(addr = ?listener.local_addr().ok(), "API listening (HTTPS)");
    let api = Arc::new(api::Api::open(
        enrollment,
        connections,
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
