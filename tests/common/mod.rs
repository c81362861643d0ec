//! Shared helpers of the integration tests: real peers on loopback, each owned by a guard
//! that stops it when dropped. One module per concern; everything is re-exported here, so
//! a test says `common::Cloud` whichever module holds it.
// Each test binary uses a part of these.
#![allow(dead_code, unused_imports)]

pub mod api;
mod cloud;
mod gateway;
mod modbus;
mod mosquitto;
mod postgres;
mod samples;
mod swtpm;
mod vm;

pub use cloud::*;
pub use gateway::*;
pub use modbus::*;
pub use mosquitto::*;
pub use postgres::*;
pub use samples::*;
pub use swtpm::*;
pub use vm::*;

use fieldgate::cloud::store::{Row, Store};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test peers (made by `.ci/setup`).
pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `.ci/setup` first (it installs pymodbus)",
        p.display()
    );
    p
}

/// Fails the test with a clear message if a system tool is missing.
pub fn need(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "`{tool}` is not installed: run `.ci/setup` first");
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }
    /// SIGTERM, and the exit status within ten seconds (fails the test otherwise).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
            .expect("the process stops within 10 s of SIGTERM")
    }

    /// Waits up to `limit` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A port for a peer a test starts. Bind-then-drop of port 0 raced: the kernel may hand
/// the same ephemeral port to another test's connection before the peer binds it. These
/// come from below the ephemeral range (Linux: 32768 up), one process-wide counter per
/// test binary, each checked free on TCP (and the next one too, for peers that take two).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 500) * 24;
    loop {
        // Two at a time: a peer such as swtpm takes `port + 1` too, which no later call
        // may hand out.
        let n = NEXT.fetch_add(2, Ordering::Relaxed);
        let port = (20_000 + (offset + n) % 12_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
