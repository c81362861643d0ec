//! The gateway's command agent: what a downlink command does. The uplink journals each
//! id before acknowledging it (`buffer::commands`), so the agent sees each command once;
//! it answers every command, an unknown kind with an error that names what this release
//! knows (an old gateway says it is old instead of staying silent).

use crate::downlink::{Command, Reply};
use crate::update::updater::Updater;
use std::sync::Arc;
use std::time::Instant;

/// The kinds this release carries out.
pub const KINDS: &[&str] = &["ping", "update.offer"];

pub struct Agent {
    started: Instant,
    /// Signed updates, if `[update]` is configured.
    updater: Option<Arc<Updater>>,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            started: Instant::now(),
            updater: None,
        }
    }
}

impl Agent {
    pub fn with_updater(updater: Option<Arc<Updater>>) -> Agent {
        Agent {
            updater,
            ..Agent::default()
        }
    }

    /// The release version running (the installed release's, or this build's).
    pub fn version(&self) -> String {
        match &self.updater {
            Some(u) => u.running().to_string(),
            None => env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Progress reports of updates, for the uplink (None without `[update]`).
    pub fn progress(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Option<crate::downlink::Progress>>> {
        self.updater.as_ref().map(|u| u.progress())
    }

    /// Carries out `cmd` and says what came of it.
    pub async fn execute(&self, cmd: &Command) -> Reply {
        match cmd.kind.as_str() {
            "update.offer" => match &self.updater {
                Some(u) => u.offer(cmd).await,
                None => Reply::failed(
                    &cmd.id,
                    "updates are not configured on this gateway: it has no [update] section (docs/updates.md)".into(),
                ),
            },
            // Proves the path end to end; `done_ns` shows when it ran, so a repeat that
            // ran again would show.
            "ping" => Reply::done(
                &cmd.id,
                serde_json::json!({
                    "version": self.version(),
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

    #[tokio::test]
    async fn every_command_is_answered() {
        let a = Agent::default();
        let r = a
            .execute(&Command::new("c1", "ping", serde_json::Value::Null))
            .await;
        assert_eq!(r.status, crate::downlink::Status::Done);
        assert_eq!(r.outcome["version"], env!("CARGO_PKG_VERSION"));
        let r = a
            .execute(&Command::new("c2", "reboot.now", serde_json::Value::Null))
            .await;
        assert_eq!(r.status, crate::downlink::Status::Failed);
        assert!(r
            .error
            .unwrap()
            .contains("unknown command kind `reboot.now`"));
        let r = a
            .execute(&Command::new("c3", "update.offer", serde_json::Value::Null))
            .await;
        assert!(r.error.unwrap().contains("no [update] section"));
    }
}
