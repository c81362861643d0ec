//! Releases a tenant publishes to its gateways: the signed metadata exactly as the
//! release engineers signed it (the cloud holds no key and cannot change a byte that
//! counts), and the image, stored once by its SHA-256 under the data directory. The
//! cloud checks that the image is the one the metadata names; the gateway checks the
//! signatures.

use super::sql::{Db, DbError};
use crate::args;
use crate::release::{image::describe, Envelope, Release};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the release metadata: {0}")]
    Metadata(#[from] crate::release::Refusal),
    #[error("the release metadata is not a fieldgate release document: {0}")]
    Document(String),
    #[error("the image is not the one the metadata names: {0}")]
    Image(String),
    #[error("{path}: {error}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("tenant {tenant} already has release {version}")]
    Exists { tenant: String, version: String },
}

/// A stored release.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stored {
    pub tenant: String,
    pub version: String,
    pub hardware: String,
    pub sha256: String,
    pub length: u64,
    /// The signed envelope, as published.
    pub metadata: String,
    pub added_ns: i64,
}

pub struct Releases {
    db: Mutex<Db>,
    dir: PathBuf,
}

impl Releases {
    /// Over `db`, with images in `data_dir/releases`.
    pub fn with(db: Db, data_dir: &Path) -> Releases {
        Releases {
            db: Mutex::new(db),
            dir: data_dir.join("releases"),
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file of the image with this hash.
    pub fn image_path(&self, sha256: &str) -> Option<PathBuf> {
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| self.dir.join(sha256.to_ascii_lowercase()))
    }

    /// Publishes `metadata` (a signed release envelope) with its image for `tenant`.
    pub fn add(&self, tenant: &str, metadata: &[u8], image: &[u8]) -> Result<Stored, ReleaseError> {
        let env = Envelope::parse("release", metadata)?;
        let r: Release =
            serde_json::from_str(&env.signed).map_err(|e| ReleaseError::Document(e.to_string()))?;
        r.semver()?;
        let actual = describe(image, r.image.install);
        if actual.sha256 != r.image.sha256.to_ascii_lowercase() || actual.length != r.image.length {
            return Err(ReleaseError::Image(format!(
                "{} bytes with SHA-256 {}, the metadata says {} bytes with {}",
                actual.length, actual.sha256, r.image.length, r.image.sha256
            )));
        }
        let io = |path: &Path| {
            let p = path.display().to_string();
            move |error| ReleaseError::Io { path: p, error }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(&actual.sha256);
        if !path.exists() {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, image).map_err(io(&tmp))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        let metadata = String::from_utf8_lossy(metadata).to_string();
        let now = crate::sample::now_ns();
        let n = self.db().execute(
            "INSERT INTO releases(tenant, version, hardware, sha256, length, metadata, added_ns)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            args![
                tenant,
                r.version.as_str(),
                r.hardware.as_str(),
                actual.sha256.as_str(),
                actual.length as i64,
                metadata.as_str(),
                now
            ],
        )?;
        if n == 0 {
            return Err(ReleaseError::Exists {
                tenant: tenant.into(),
                version: r.version,
            });
        }
        Ok(Stored {
            tenant: tenant.into(),
            version: r.version,
            hardware: r.hardware,
            sha256: actual.sha256,
            length: actual.length,
            metadata,
            added_ns: now,
        })
    }

    /// One release of `tenant`.
    pub fn get(&self, tenant: &str, version: &str) -> Result<Option<Stored>, ReleaseError> {
        get(&self.db(), tenant, version)
    }

    /// Whether `tenant` published an image with this hash (what its gateways may fetch).
    pub fn has_image(&self, tenant: &str, sha256: &str) -> Result<bool, ReleaseError> {
        Ok(self
            .db()
            .query_opt(
                "SELECT 1 FROM releases WHERE tenant = $1 AND sha256 = $2",
                args![tenant, sha256.to_ascii_lowercase()],
            )?
            .is_some())
    }
}

/// One release of `tenant`, over `db` (for a caller on its own connection).
pub fn get(db: &Db, tenant: &str, version: &str) -> Result<Option<Stored>, ReleaseError> {
    let row = db.query_opt(
        "SELECT tenant, version, hardware, sha256, length, metadata, added_ns FROM releases
         WHERE tenant = $1 AND version = $2",
        args![tenant, version],
    )?;
    Ok(match row {
        Some(r) => Some(Stored {
            tenant: r.text(0)?,
            version: r.text(1)?,
            hardware: r.text(2)?,
            sha256: r.text(3)?,
            length: r.int(4)? as u64,
            metadata: r.text(5)?,
            added_ns: r.int(6)?,
        }),
        None => None,
    })
}
