//! PostgreSQL per test, and the storage backends a test runs on.

use super::*;

/// The database a test's cloud runs on: its SQLite file, or a private PostgreSQL server
/// (kept running as long as this lives).
pub struct Backend {
    pub database: fieldgate::cloud::Database,
    _server: Option<Postgres>,
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend {
            database: Default::default(),
            _server: None,
        }
    }

    /// A PostgreSQL server with its data under `dir`.
    pub fn postgres(dir: &Path) -> Backend {
        let pg = Postgres::start(dir);
        Backend {
            database: fieldgate::cloud::Database::postgres(&pg.url()),
            _server: Some(pg),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.database.url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// A private PostgreSQL server (Debian's package) on a loopback port, with its data in
/// `dir`; stopped when dropped. As root, the server runs as the `postgres` user (it
/// refuses to run as root).
pub struct Postgres {
    pub port: u16,
    proc: Option<Proc>,
    /// The server's command line, for `start_again`.
    command: (PathBuf, Vec<std::ffi::OsString>),
    /// PostgreSQL's programs.
    bin: PathBuf,
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        Postgres::start_with(dir, None)
    }

    /// With `tls` (certificate and key files), a server that accepts TLS connections
    /// only (`hostssl` in pg_hba.conf, plain ones rejected).
    pub fn start_with(dir: &Path, tls: Option<(&Path, &Path)>) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed: run `.ci/setup` first");
        let root = is_root();
        let as_owner = |prog: &str| {
            let mut c = if root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--clear-groups",
                    "--reset-env",
                ])
                .arg(bin.join(prog));
                c
            } else {
                Command::new(bin.join(prog))
            };
            c.stdout(Stdio::null());
            c
        };
        let data = dir.join("pgdata");
        std::fs::create_dir_all(dir).unwrap();
        if root {
            // The server's user must reach its directory.
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .unwrap();
            let mut p = dir.to_path_buf();
            while let Some(parent) = p.parent() {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(parent) {
                    let mode = m.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            parent,
                            std::fs::Permissions::from_mode(mode | 0o001),
                        );
                    }
                }
                p = parent.to_path_buf();
            }
        }
        let out = as_owner("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "fieldgate",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let mut settings = vec![];
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(cert, data.join("server.crt")).unwrap();
            std::fs::copy(key, data.join("server.key")).unwrap();
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            if root {
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
            }
            settings = vec!["-c", "ssl=on"];
        }
        let port = free_port();
        let server = as_owner("postgres");
        let mut args: Vec<std::ffi::OsString> =
            server.get_args().map(|a| a.to_os_string()).collect();
        args.extend(["-D".into(), data.into_os_string()]);
        args.extend(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"].map(Into::into));
        args.push(dir.as_os_str().into());
        args.extend(settings.iter().map(Into::into));
        let mut pg = Postgres {
            port,
            proc: None,
            command: (server.get_program().into(), args),
            bin: bin.clone(),
        };
        pg.start_again();
        pg
    }

    /// Starts the server (again, after `stop`) on the same data and port.
    pub fn start_again(&mut self) {
        let (program, args) = &self.command;
        let proc = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proc = Some(Proc(proc));
        let (isready, port) = (self.bin.join("pg_isready"), self.port);
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(&isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    /// A fast shutdown (SIGINT): clients' connections are closed.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("INT");
            let _ = p.wait_exit(Duration::from_secs(10));
        }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://fieldgate@127.0.0.1:{}/postgres?connect_timeout=5",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown, so the next test's server starts clean.
        self.stop();
    }
}

fn is_root() -> bool {
    // The effective uid, read from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
