//! The cloud, run in this process on a fixed loopback port.

use super::*;

/// The cloud, run in this process on a fixed loopback port, stoppable and restartable.
pub struct Cloud {
    pub data: PathBuf,
    pub addr: SocketAddr,
    /// The HTTPS API (enrollment, renewal), when started with `with_api`.
    pub api: Option<SocketAddr>,
    pub settings: fieldgate::cloud::Settings,
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Cloud {
    pub async fn start(data: &Path) -> Cloud {
        // Create the CA before anything issues a certificate from it.
        fieldgate::cloud::open(data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mut c = Cloud {
            data: data.to_path_buf(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            api: None,
            settings: Default::default(),
            stop: None,
        };
        c.restart().await;
        c
    }

    /// A cloud with its HTTPS API, issuing certificates valid for `lifetime`.
    pub async fn with_api(data: &Path, lifetime: Duration) -> Cloud {
        Cloud::with_settings(
            data,
            fieldgate::cloud::Settings {
                cert_lifetime: lifetime,
                ..Default::default()
            },
        )
        .await
    }

    /// A cloud with its HTTPS API and these settings.
    pub async fn with_settings(data: &Path, settings: fieldgate::cloud::Settings) -> Cloud {
        fieldgate::cloud::open(data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mut c = Cloud {
            data: data.to_path_buf(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            api: Some(format!("127.0.0.1:{}", free_port()).parse().unwrap()),
            settings,
            stop: None,
        };
        c.restart().await;
        c
    }

    pub fn api_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.api.expect("started with_api").port()
        )
    }

    pub fn registry(&self) -> fieldgate::cloud::registry::Registry {
        fieldgate::cloud::registry::Registry::with(self.db()).unwrap()
    }

    /// A connection to the cloud's database (its SQLite file or PostgreSQL).
    pub fn db(&self) -> fieldgate::cloud::sql::Db {
        self.settings.database.db(&self.data).unwrap()
    }

    /// `fieldgate-cloud` on this cloud's data directory and database.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"));
        c.arg("--data-dir").arg(&self.data);
        if let Some(url) = &self.settings.database.url {
            c.args(["--store", url]);
        }
        c
    }

    pub async fn restart(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let api = match self.api {
            Some(a) => loop {
                match tokio::net::TcpListener::bind(a).await {
                    Ok(l) => break Some(l),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            None => None,
        };
        let token = CancellationToken::new();
        let (t, d, s) = (token.clone(), self.data.clone(), self.settings.clone());
        let h = tokio::spawn(async move {
            fieldgate::cloud::run_with(&d, listener, api, s, t)
                .await
                .unwrap();
        });
        self.stop = Some((token, h));
    }

    pub async fn stop(&mut self) {
        if let Some((t, h)) = self.stop.take() {
            t.cancel();
            let _ = h.await;
        }
    }

    /// A temporary directory with a running cloud in `cloud/` and a certificate for
    /// `device` in `certs/` (where `gateway_config` looks for it).
    pub async fn with_device(device: &str) -> (tempfile::TempDir, Cloud) {
        let dir = tempfile::tempdir().unwrap();
        let cloud = Cloud::start(&dir.path().join("cloud")).await;
        cloud.dev_cert(device, &dir.path().join("certs"));
        (dir, cloud)
    }

    /// Issues a device certificate into `dir`.
    pub fn dev_cert(&self, device: &str, dir: &Path) {
        let (pki, _) = fieldgate::cloud::open(&self.data, &[]).unwrap();
        pki.dev_cert(&device.parse().unwrap(), dir).unwrap();
    }

    /// A one-time bootstrap token for `device`, valid for an hour (by the CLI).
    pub fn token(&self, device: &str) -> String {
        let out = self
            .cli()
            .args(["token", "--device", device, "--valid", "1h"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn store(&self) -> Store {
        self.settings.database.store(&self.data).unwrap()
    }

    pub fn rows(&self, device: &str) -> Vec<Row> {
        self.store().query(device, None, None, 10_000_000).unwrap()
    }
}
