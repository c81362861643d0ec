//! The gateway's command agent: what a downlink command does. The uplink journals each
//! id before acknowledging it (`buffer::commands`), so the agent sees each command once;
//! it answers every command, an unknown kind with an error that names what this release
//! knows (an old gateway says it is old instead of staying silent).

use crate::downlink::{Command, Reply};
use std::time::Instant;

/// The kinds this release carries out.
pub const KINDS: &[&str] = &["ping"];

pub struct Agent {
    started: Instant,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            started: Instant::now(),
        }
    }
}

impl Agent {
    /// Carries out `cmd` and says what came of it.
    pub fn execute(&self, cmd: &Command) -> Reply {
        match cmd.kind.as_str() {
            // Proves the path end to end; `done_ns` shows when it ran, so a repeat that
            // ran again would show.
            "ping" => Reply::done(
                &cmd.id,
                serde_json::json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "done_ns": crate::sample::now_ns(),
                }),
            ),
            other => Reply::failed(
                &cmd.id,
                format!(
                    "unknown command kind `{other}`: fieldgate {} knows {}",
                    env!("CARGO_PKG_VERSION"),
                    KINDS.join(", ")
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_answered() {
        let a = Agent::default();
        let r = a.execute(&Command::new("c1", "ping", serde_json::Value::Null));
        assert_eq!(r.status, crate::downlink::Status::Done);
        assert_eq!(r.outcome["version"], env!("CARGO_PKG_VERSION"));
        let r = a.execute(&Command::new("c2", "reboot.now", serde_json::Value::Null));
        assert_eq!(r.status, crate::downlink::Status::Failed);
        assert!(r
            .error
            .unwrap()
            .contains("unknown command kind `reboot.now`"));
    }
}
