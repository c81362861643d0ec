//! The local status socket behind `fieldgate status`: one JSON document per connection.

use crate::buffer::{Buffer, Stats};
use crate::field::can::bus::{CanBusStatus, CanStatus};
use crate::field::modbus::poller::{BusStatus, DeviceStatus};
use crate::uplink::UplinkStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// What the daemon reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub device_id: String,
    pub buffer: Stats,
    /// Samples committed to the buffer since the daemon started.
    #[serde(default)]
    pub committed: u64,
    /// Samples that could not be committed (disk full, I/O error) since start.
    #[serde(default)]
    pub commit_failures: u64,
    pub uplink: UplinkStatus,
    pub devices: BTreeMap<String, DeviceStatus>,
    #[serde(default)]
    pub can: BTreeMap<String, CanBusStatus>,
    /// The release running, and the last update (with `[update]`).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub update: Option<crate::downlink::Progress>,
}

/// The live state the socket reads from.
pub struct View {
    pub device_id: String,
    pub buffer: Buffer,
    pub uplink: Arc<Mutex<UplinkStatus>>,
    pub devices: BusStatus,
    pub can: CanStatus,
    pub agent: Arc<crate::agent::Agent>,
}

impl View {
    pub async fn snapshot(&self) -> Status {
        Status {
            device_id: self.device_id.clone(),
            buffer: self.buffer.stats().await,
            committed: self
                .buffer
                .counters
                .committed
                .load(std::sync::atomic::Ordering::Relaxed),
            commit_failures: self
                .buffer
                .counters
                .failed
                .load(std::sync::atomic::Ordering::Relaxed),
            uplink: self.uplink.lock().map(|u| u.clone()).unwrap_or_default(),
            devices: self.devices.lock().map(|d| d.clone()).unwrap_or_default(),
            can: self.can.lock().map(|d| d.clone()).unwrap_or_default(),
            version: self.agent.version(),
            update: self.agent.progress().and_then(|p| p.borrow().clone()),
        }
    }
}

/// Serves the socket until `shutdown`. The socket is created mode 0660: only the
/// service user and its group may read it.
pub async fn serve(path: PathBuf, view: View, shutdown: CancellationToken) {
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the status socket");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660));
    }
    let mut pause = crate::backoff::AcceptPause::default();
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((mut stream, _)) => {
                    pause.accepted();
                    let json = serde_json::to_vec(&view.snapshot().await).unwrap_or_default();
                    let _ = stream.write_all(&json).await;
                }
                Err(e) => pause.failed("status", &e).await,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot reach the daemon at {path}: {source} (is fieldgate running?)")]
    Unreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the daemon's status: {0}")]
    Read(#[from] std::io::Error),
    #[error("the daemon's status is not the document this release reads: {0}")]
    Document(#[from] serde_json::Error),
}

/// Reads a status document from a running daemon.
pub async fn query(path: &std::path::Path) -> Result<Status, QueryError> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| QueryError::Unreachable {
            path: path.display().to_string(),
            source,
        })?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}
