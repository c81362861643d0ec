//! A software TPM (swtpm) per test.

use super::*;

/// A TPM 2.0 simulator (swtpm) on loopback with its own state directory; restartable
/// on the same state, like a reboot.
pub struct Swtpm {
    pub state: PathBuf,
    pub port: u16,
    proc: Option<Proc>,
}

impl Swtpm {
    pub fn start(state: &Path) -> Swtpm {
        need("swtpm");
        std::fs::create_dir_all(state).unwrap();
        // Two consecutive free ports: the command port and the control port.
        let port = loop {
            let p = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let mut t = Swtpm {
            state: state.to_path_buf(),
            port,
            proc: None,
        };
        t.restart();
        t
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// fieldgate's key in this TPM (made if missing), at the default handle.
    pub fn key(&self) -> std::sync::Arc<dyn fieldgate::identity::Key> {
        let cfg = fieldgate::identity::IdentityConfig {
            backend: fieldgate::identity::Backend::Tpm,
            tcti: self.tcti(),
            ..Default::default()
        };
        fieldgate::identity::open(&cfg, None, true).unwrap()
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Stops the simulator (if running) and starts it again on the same state.
    pub fn restart(&mut self) {
        self.proc = None;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port + 1),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start swtpm");
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_for("swtpm", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}
