//! The update agent's state machine, without I/O: events in, actions out, and a state
//! that is written to the state directory after every transition (`Update::encode`), so
//! a power cut or SIGKILL at any step resumes from the last written phase. The shell
//! (download, swap, restart, health check, report) carries out the actions.
//!
//! Phases: offered → downloading → verified → installing → restarting → healthy →
//! committed; or failed (with why) or rolled back (with why). What a start does in each
//! phase (`Update::on_start`) is what makes a crash at that step safe:
//! - offered, downloading: resume the download (the staging file is checked again);
//! - verified, installing: install again (the swap is one rename; doing it twice is
//!   harmless);
//! - restarting: the new version is running: check its health by a deadline. The old
//!   version is running: it came back (`fieldgate-launch` counts the starts of a version
//!   on trial and puts the old one back after `slots::MAX_STARTS`): rolled back;
//! - healthy: commit (raise the rollback floor, drop the kept old binary);
//! - committed, failed, rolled back: nothing more (reported until the cloud has it).

use serde::{Deserialize, Serialize};

/// The format of the stored state.
pub const FORMAT: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Offered,
    Downloading,
    Verified,
    Installing,
    Restarting,
    Healthy,
    Committed,
    Failed,
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Offered => "offered",
            Phase::Downloading => "downloading",
            Phase::Verified => "verified",
            Phase::Installing => "installing",
            Phase::Restarting => "restarting",
            Phase::Healthy => "healthy",
            Phase::Committed => "committed",
            Phase::Failed => "failed",
            Phase::RolledBack => "rolled_back",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Phase::Committed | Phase::Failed | Phase::RolledBack)
    }
}

/// One update, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub v: u8,
    /// The offer's command id.
    pub id: String,
    /// The version offered and the one it replaces.
    pub version: String,
    pub previous: String,
    /// The rollback index the floor is raised to at commit.
    pub rollback_index: u64,
    pub phase: Phase,
    /// Why it failed or was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the new version has to become healthy, from each start (nanoseconds).
    pub health_window_ns: i64,
    /// The signed image.
    pub image: crate::release::Image,
    /// What runs if this is rolled back (the `binary` backend's slot; None: the factory
    /// binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_slot: Option<String>,
    /// Every phase reached, for the cloud's audit log.
    #[serde(default)]
    pub history: Vec<crate::downlink::Step>,
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Get the image into staging (resuming) and check it.
    Download,
    /// Put the checked image in place, keeping the old one.
    Install,
    /// Stop so that the service manager starts the new version.
    Restart,
    /// Watch the health checks until this time (wall clock, nanoseconds).
    CheckHealth { until_ns: i64 },
    /// Raise the rollback floor, drop the old binary.
    Commit { rollback_index: u64 },
    /// Put the old version back and restart into it.
    RollBack,
    /// Tell the cloud (and the audit log) the phase now.
    Report,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Downloaded,
    DownloadFailed(String),
    Installed,
    InstallFailed(String),
    Healthy,
    /// The health deadline passed; what was not healthy.
    Unhealthy(String),
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the update state is not one this release reads: {0}")]
    Malformed(String),
    #[error("the update state has format {0}; this release reads {FORMAT}")]
    Newer(u8),
}

impl Update {
    /// A verified offer of `release` (replacing `previous`, which runs from
    /// `previous_slot`).
    pub fn offered(
        id: &str,
        release: &crate::release::Release,
        previous: &str,
        previous_slot: Option<String>,
        health_window_ns: i64,
    ) -> (Update, Vec<Action>) {
        let u = Update {
            v: FORMAT,
            id: id.into(),
            version: release.version.clone(),
            previous: previous.into(),
            rollback_index: release.rollback_index,
            phase: Phase::Downloading,
            reason: None,
            health_window_ns,
            image: release.image.clone(),
            previous_slot,
            history: Vec::new(),
        };
        (u, vec![Action::Report, Action::Download])
    }

    /// Notes the phase now in the history, if it is new (the shell calls this after
    /// each transition, with the time).
    pub fn record(&mut self, now_ns: i64) {
        if self.history.last().map(|s| s.phase.as_str()) != Some(self.phase.as_str()) {
            self.history.push(crate::downlink::Step {
                phase: self.phase.as_str().into(),
                at_ns: now_ns,
                reason: self.reason.clone().filter(|_| self.phase.is_final()),
            });
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Update, StateError> {
        if let Some(v) = crate::schema::json_format(bytes).filter(|v| *v > FORMAT) {
            return Err(StateError::Newer(v));
        }
        serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))
    }

    fn to(&mut self, phase: Phase, reason: Option<String>) {
        self.phase = phase;
        if reason.is_some() {
            self.reason = reason;
        }
    }

    /// The daemon started (after a restart, a crash or a power cut) running `running`.
    pub fn on_start(&mut self, running: &str, now_ns: i64) -> Vec<Action> {
        match self.phase {
            Phase::Offered | Phase::Downloading => vec![Action::Download],
            Phase::Verified | Phase::Installing => vec![Action::Install],
            Phase::Restarting if running == self.version => vec![Action::CheckHealth {
                until_ns: now_ns + self.health_window_ns,
            }],
            Phase::Restarting => {
                self.to(
                    Phase::RolledBack,
                    Some(format!(
                        "{running} is running again, not {}: the new version did not become healthy",
                        self.version
                    )),
                );
                vec![Action::Report]
            }
            Phase::Healthy => vec![Action::Commit {
                rollback_index: self.rollback_index,
            }],
            Phase::Committed | Phase::Failed | Phase::RolledBack => vec![],
        }
    }

    /// Something the shell saw.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        match (self.phase, event) {
            (Phase::Downloading, Event::Downloaded) => {
                self.to(Phase::Verified, None);
                vec![Action::Report, Action::Install]
            }
            (Phase::Downloading, Event::DownloadFailed(why)) => {
                self.to(Phase::Failed, Some(why));
                vec![Action::Report]
            }
            (Phase::Verified | Phase::Installing, Event::Installed) => {
                self.to(Phase::Restarting, None);
                vec![Action::Report, Action::Restart]
            }
            (Phase::Verified | Phase::Installing, Event::InstallFailed(why)) => {
                self.to(Phase::Failed, Some(why));
                vec![Action::Report]
            }
            (Phase::Restarting, Event::Healthy) => {
                self.to(Phase::Healthy, None);
                vec![
                    Action::Report,
                    Action::Commit {
                        rollback_index: self.rollback_index,
                    },
                ]
            }
            (Phase::Restarting, Event::Unhealthy(why)) => {
                self.to(Phase::RolledBack, Some(why));
                vec![Action::Report, Action::RollBack]
            }
            (Phase::Healthy, Event::Committed) => {
                self.to(Phase::Committed, None);
                vec![Action::Report]
            }
            // Anything else is late or repeated: nothing changes.
            _ => vec![],
        }
    }

    /// Before installing, the phase is written as installing (so a crash in the swap
    /// installs again); the shell calls this, writes the state, then swaps.
    pub fn installing(&mut self) {
        if self.phase == Phase::Verified {
            self.phase = Phase::Installing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i64 = 120_000_000_000;

    fn release() -> crate::release::Release {
        crate::release::Release {
            kind: "fieldgate-release".into(),
            v: 1,
            version: "1.5.0".into(),
            hardware: "hw".into(),
            image: crate::release::image::describe(b"image", crate::release::Install::Binary),
            expires_ns: i64::MAX,
            rollback_index: 7,
        }
    }

    fn fresh() -> Update {
        Update::offered("cmd-1", &release(), "1.4.0", None, WINDOW).0
    }

    /// A power cut or SIGKILL at any step: the state as last written, decoded, and the
    /// start that follows (running the old or the new version as the step implies)
    /// carries on from that step: no phase is a dead end.
    #[test]
    fn a_kill_at_every_step_resumes_where_it_was() {
        // (phase as stored at the kill, version running after the restart)
        let cases = [
            (Phase::Downloading, "1.4.0", vec![Action::Download]),
            (Phase::Verified, "1.4.0", vec![Action::Install]),
            (Phase::Installing, "1.4.0", vec![Action::Install]),
            (
                Phase::Restarting,
                "1.5.0",
                vec![Action::CheckHealth {
                    until_ns: 1000 + WINDOW,
                }],
            ),
            (
                Phase::Healthy,
                "1.5.0",
                vec![Action::Commit { rollback_index: 7 }],
            ),
            (Phase::Committed, "1.5.0", vec![]),
        ];
        for (phase, running, want) in cases {
            let mut u = fresh();
            u.phase = phase;
            let mut stored = Update::decode(&u.encode()).unwrap();
            assert_eq!(stored.on_start(running, 1000), want, "{phase:?}");
        }
    }

    #[test]
    fn the_good_path_and_both_ways_back() {
        let (mut u, a) = Update::offered("cmd-1", &release(), "1.4.0", None, WINDOW);
        assert_eq!(a, vec![Action::Report, Action::Download]);
        assert_eq!(
            u.on(Event::Downloaded),
            vec![Action::Report, Action::Install]
        );
        u.installing();
        assert_eq!(u.phase, Phase::Installing);
        assert_eq!(
            u.on(Event::Installed),
            vec![Action::Report, Action::Restart]
        );
        assert!(matches!(
            u.on_start("1.5.0", 0)[..],
            [Action::CheckHealth { .. }]
        ));
        assert_eq!(
            u.on(Event::Healthy),
            vec![Action::Report, Action::Commit { rollback_index: 7 }]
        );
        assert_eq!(u.on(Event::Committed), vec![Action::Report]);
        assert!(u.phase.is_final());
        assert_eq!(
            u.on(Event::Unhealthy("late".into())),
            vec![],
            "final stays final"
        );

        // Not healthy by the deadline: rolled back, with why.
        let mut u = fresh();
        u.phase = Phase::Restarting;
        u.on_start("1.5.0", 0);
        assert_eq!(
            u.on(Event::Unhealthy("not connected".into())),
            vec![Action::Report, Action::RollBack]
        );
        assert_eq!(
            (u.phase, u.reason.as_deref()),
            (Phase::RolledBack, Some("not connected"))
        );

        // The old version came up instead (fieldgate-launch put it back after the new
        // one kept crashing): rolled back, reported.
        let mut u = fresh();
        u.phase = Phase::Restarting;
        assert_eq!(u.on_start("1.4.0", 0), vec![Action::Report]);
        assert_eq!(u.phase, Phase::RolledBack);
        assert!(u.reason.unwrap().contains("did not become healthy"));

        // The history keeps each phase once.
        let mut u = fresh();
        u.record(1);
        u.record(2);
        u.on(Event::DownloadFailed("no".into()));
        u.record(3);
        let phases: Vec<_> = u.history.iter().map(|s| s.phase.as_str()).collect();
        assert_eq!(phases, ["downloading", "failed"]);
        assert_eq!(u.history[1].reason.as_deref(), Some("no"));
    }

    #[test]
    fn a_newer_state_is_refused_by_name() {
        assert_eq!(
            Update::decode(br#"{"v":2,"id":"x","later":true}"#),
            Err(StateError::Newer(2))
        );
        assert!(matches!(
            Update::decode(b"{"),
            Err(StateError::Malformed(_))
        ));
    }
}
