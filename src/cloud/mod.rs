//! The cloud side: the issuing CA, the MQTT ingest and the sample store.

pub mod api;
pub mod bridge;
pub mod credential;
pub mod enroll;
pub mod iam;
pub mod ingest;
pub mod pki;
pub mod registry;
pub mod store;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Paths of a cloud data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cloud.db")
}

/// Opens (creating on first use) the CA and the store of `data_dir`.
pub fn open(
    data_dir: &Path,
    server_names: &[String],
) -> anyhow::Result<(pki::Pki, ingest::SharedStore)> {
    let pki = pki::Pki::open_or_create(&data_dir.join("pki"), server_names)?;
    let store = store::Store::open(&store_path(data_dir))?;
    Ok((pki, Arc::new(Mutex::new(store))))
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
    /// Tenants' webhooks may be plain http:// (a lab without certificates).
    pub webhook_allow_http: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cert_lifetime: std::time::Duration::from_secs(90 * 86400),
            require_tpm: false,
            webhook_allow_http: false,
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
    let names = ["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let (pki, store) = open(data_dir, &names)?;
    let tls =
        crate::tls::mtls_server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key())?;
    tracing::info!(addr = %listener.local_addr()?, "ingest listening (MQTT over mutual TLS)");
    let api_task = match api {
        Some(l) => {
            let api_tls = crate::tls::server_config(
                &pki.ca_cert(),
                &pki.server_cert(),
                &pki.server_key(),
                true,
            )?;
            let enrollment = Arc::new(enroll::Enrollment {
                pki: pki::Pki::open_or_create(&data_dir.join("pki"), &names)?,
                registry: Mutex::new(registry::Registry::open(&store_path(data_dir))?),
                lifetime: settings.cert_lifetime,
                require_tpm: settings.require_tpm,
            });
            tracing::info!(addr = %l.local_addr()?, "API listening (HTTPS)");
            let api = Arc::new(api::Api::open(
                enrollment,
                &store_path(data_dir),
                settings.webhook_allow_http,
            )?);
            tokio::spawn(api::webhook::deliver(api.clone(), shutdown.clone()));
            Some(tokio::spawn(api::serve(
                l,
                api_tls,
                api::router(api),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    drop(pki);
    ingest::serve(listener, tls, store, shutdown).await;
    if let Some(t) = api_task {
        let _ = t.await;
    }
    Ok(())
}
