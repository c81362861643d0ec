//! The cloud side: the issuing CA, the MQTT ingest and the sample store.

pub mod bridge;
pub mod ingest;
pub mod pki;
pub mod store;

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
    let (pki, store) = open(
        data_dir,
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )?;
    let tls =
        crate::tls::mtls_server_config(&pki.ca_cert(), &pki.server_cert(), &pki.server_key())?;
    tracing::info!(addr = %listener.local_addr()?, "ingest listening (MQTT over mutual TLS)");
    ingest::serve(listener, tls, store, shutdown).await;
    Ok(())
}
