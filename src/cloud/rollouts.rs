//! Rollouts: a tenant's release offered to its gateways in stages (a group, or a share
//! of the fleet, then more), each device's update followed from its progress reports,
//! every step it reports written to the audit log, and the rollout stopped by itself
//! when the share of devices that failed or rolled back reaches its threshold.
//!
//! A rollout is rows: the API inserts it, and every ingest's pump (`advance`) moves it
//! on. Several ingests may pump at once: a device joins a rollout by an insert that only
//! one of them wins, and only the winner sends its offer.

use super::downlink::{Downlink, DownlinkError};
use super::iam::anchor::Anchor;
use super::iam::audit::{self, Entry};
use super::releases::Stored;
use super::sql::{Db, DbError, Row};
use crate::args;
use crate::downlink::{Progress, Reply, Status};
use crate::ids::DeviceId;
use std::sync::{Arc, Mutex};

/// The command kind of an offer.
pub const OFFER: &str = "update.offer";
/// Phases after which a device's update is over.
const FINAL: [&str; 3] = ["committed", "failed", "rolled_back"];
const BAD: [&str; 2] = ["failed", "rolled_back"];

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Downlink(#[from] DownlinkError),
    #[error("{0}")]
    Invalid(String),
    #[error("no rollout {0}")]
    NotFound(String),
}

/// One stage: the devices of a group, or a share of the whole fleet (cumulative: `50`
/// after `10` offers the release to 40% more).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Stage {
    Group(String),
    Percent(u8),
}

/// What a rollout is asked to do.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: String,
    /// In order; the last should reach everyone (`{"percent": 100}`).
    pub stages: Vec<Stage>,
    /// Stop when this share (percent) of the devices offered so far failed or rolled
    /// back.
    #[serde(default = "default_max_failures")]
    pub max_failures_percent: u8,
    /// Roots after the one the gateways trust, oldest first (signed rotations).
    #[serde(default)]
    pub chain: Vec<String>,
}

fn default_max_failures() -> u8 {
    20
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rollout {
    pub id: String,
    pub tenant: String,
    pub version: String,
    pub stages: Vec<Stage>,
    pub max_failures_percent: u8,
    /// The stage reached (0-based).
    pub stage: i64,
    /// `running`, `halted` (with `reason`) or `done`.
    pub state: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_ns: i64,
    pub devices: Vec<DeviceUpdate>,
}

/// One device's update in a rollout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceUpdate {
    pub device: String,
    pub stage: i64,
    pub command: String,
    /// `offered` until the gateway reports, then its phase.
    pub phase: String,
    pub reason: Option<String>,
    pub bytes: i64,
    pub total: i64,
    pub updated_ns: i64,
}

pub struct Rollouts {
    db: Mutex<Db>,
    anchor: Arc<Anchor>,
}

fn rollout_of(r: &Row) -> Result<Rollout, DbError> {
    Ok(Rollout {
        id: r.text(0)?,
        tenant: r.text(1)?,
        version: r.text(2)?,
        stages: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
        max_failures_percent: r.int(4)?.clamp(0, 100) as u8,
        stage: r.int(5)?,
        state: r.text(6)?,
        reason: r.opt_text(7)?,
        created_by: r.text(8)?,
        created_ns: r.int(9)?,
        devices: Vec::new(),
    })
}

const ROLLOUT: &str =
    "id, tenant, version, stages, max_failures, stage, state, reason, created_by, created_ns";

/// A device's place in a rollout's order: stable for the rollout, different between
/// rollouts (so the same devices are not always first).
fn rank(rollout: &str, device: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("{rollout}/{device}").as_bytes()).into()
}

impl Rollouts {
    pub fn with(db: Db, anchor: Arc<Anchor>) -> Rollouts {
        Rollouts {
            db: Mutex::new(db),
            anchor,
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn audit(&self, actor: &str, action: &str, resource: &str, outcome: &str, reason: &str) {
        let e = Entry {
            ts_ns: crate::sample::now_ns(),
            actor: actor.into(),
            action: action.into(),
            resource: resource.into(),
            source: String::new(),
            outcome: outcome.into(),
            reason: reason.into(),
        };
        if let Err(e) = audit::append(&self.db(), &self.anchor, &e) {
            tracing::error!(error = %e, "cannot write the audit entry of an update step");
        }
    }

    /// Puts a device in a group of `tenant` (one group per device; None takes it out).
    pub fn set_group(
        &self,
        tenant: &str,
        device: &str,
        group: Option<&str>,
    ) -> Result<(), RolloutError> {
        let db = self.db();
        db.execute(
            "DELETE FROM device_groups WHERE tenant = $1 AND device = $2",
            args![tenant, device],
        )?;
        if let Some(g) = group {
            if g.is_empty() || g.len() > 64 {
                return Err(RolloutError::Invalid(
                    "a group name is 1 to 64 characters".into(),
                ));
            }
            db.execute(
                "INSERT INTO device_groups(tenant, device, grp) VALUES ($1, $2, $3)",
                args![tenant, device, g],
            )?;
        }
        Ok(())
    }

    /// Starts rolling `release` out; the first stage's offers go at the next pump.
    pub fn start(&self, release: &Stored, plan: &Plan, by: &str) -> Result<Rollout, RolloutError> {
        if plan.stages.is_empty() || plan.stages.len() > 16 {
            return Err(RolloutError::Invalid("a rollout has 1 to 16 stages".into()));
        }
        if plan
            .stages
            .iter()
            .any(|s| matches!(s, Stage::Percent(p) if *p == 0 || *p > 100))
        {
            return Err(RolloutError::Invalid("a percent stage is 1 to 100".into()));
        }
        if plan.max_failures_percent > 100 {
            return Err(RolloutError::Invalid(
                "max_failures_percent is 0 to 100".into(),
            ));
        }
        let id = format!("ro-{}", crate::hex::encode(&rand::random::<[u8; 8]>()));
        let now = crate::sample::now_ns();
        let stages = serde_json::to_string(&plan.stages).unwrap_or_default();
        let chain = serde_json::to_string(&plan.chain).unwrap_or_default();
        self.db().execute(
            "INSERT INTO rollouts(id, tenant, version, stages, max_failures, stage, state,
                 created_by, created_ns, updated_ns, chain)
             VALUES ($1, $2, $3, $4, $5, -1, 'running', $6, $7, $7, $8)",
            args![
                id.as_str(),
                release.tenant.as_str(),
                release.version.as_str(),
                stages,
                plan.max_failures_percent as i64,
                by,
                now,
                chain
            ],
        )?;
        self.audit(
            by,
            "rollout.start",
            &format!("{}/rollouts/{id}", release.tenant),
            "allowed",
            &format!("release {}", release.version),
        );
        self.get(&release.tenant, &id)?
            .ok_or(RolloutError::NotFound(id))
    }

    /// A rollout of `tenant` with its devices.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Option<Rollout>, RolloutError> {
        let db = self.db();
        let Some(row) = db.query_opt(
            &format!("SELECT {ROLLOUT} FROM rollouts WHERE id = $1 AND tenant = $2"),
            args![id, tenant],
        )?
        else {
            return Ok(None);
        };
        let mut r = rollout_of(&row)?;
        r.devices = db
            .query(
                "SELECT device, stage, command, phase, reason, bytes, total, updated_ns
                 FROM rollout_devices WHERE rollout = $1 ORDER BY stage, device",
                args![id],
            )?
            .iter()
            .map(|d| {
                Ok(DeviceUpdate {
                    device: d.text(0)?,
                    stage: d.int(1)?,
                    command: d.text(2)?,
                    phase: d.text(3)?,
                    reason: d.opt_text(4)?,
                    bytes: d.int(5)?,
                    total: d.int(6)?,
                    updated_ns: d.int(7)?,
                })
            })
            .collect::<Result<_, DbError>>()?;
        Ok(Some(r))
    }

    /// The rollouts of `tenant`, newest first (without their devices).
    pub fn list(&self, tenant: &str) -> Result<Vec<Rollout>, RolloutError> {
        Ok(self
            .db()
            .query(
                &format!(
                    "SELECT {ROLLOUT} FROM rollouts WHERE tenant = $1 ORDER BY created_ns DESC LIMIT 100"
                ),
                args![tenant],
            )?
            .iter()
            .map(rollout_of)
            .collect::<Result<_, _>>()?)
    }

    /// Moves every running rollout on: halts those over their failure threshold, offers
    /// the next stage once the current one is over. Blocks on the database.
    pub fn advance(&self, downlink: &Downlink) -> Result<(), RolloutError> {
        let running = self.db().query(
            &format!("SELECT {ROLLOUT} FROM rollouts WHERE state = 'running'"),
            &[],
        )?;
        for row in &running {
            let r = rollout_of(row)?;
            if let Err(e) = self.advance_one(&r, downlink) {
                tracing::warn!(rollout = %r.id, error = %e, "rollout step failed");
            }
        }
        Ok(())
    }

    fn advance_one(&self, r: &Rollout, downlink: &Downlink) -> Result<(), RolloutError> {
        let resource = format!("{}/rollouts/{}", r.tenant, r.id);
        let (offered, bad, open) = {
            let db = self.db();
            let rows = db.query(
                "SELECT phase FROM rollout_devices WHERE rollout = $1",
                args![r.id.as_str()],
            )?;
            let phases: Vec<String> = rows.iter().map(|p| p.text(0)).collect::<Result<_, _>>()?;
            let bad = phases.iter().filter(|p| BAD.contains(&p.as_str())).count();
            let open = phases
                .iter()
                .filter(|p| !FINAL.contains(&p.as_str()))
                .count();
            (phases.len(), bad, open)
        };
        if offered > 0 && bad * 100 >= offered * r.max_failures_percent.max(1) as usize {
            let reason = format!(
                "{bad} of {offered} devices offered so far failed or rolled back, at or above the {}% threshold: the rollout stopped itself",
                r.max_failures_percent
            );
            let n = self.db().execute(
                "UPDATE rollouts SET state = 'halted', reason = $1, updated_ns = $2
                 WHERE id = $3 AND state = 'running'",
                args![reason.as_str(), crate::sample::now_ns(), r.id.as_str()],
            )?;
            if n > 0 {
                tracing::warn!(rollout = %r.id, %reason, "rollout halted");
                self.audit("cloud", "rollout.halt", &resource, "allowed", &reason);
            }
            return Ok(());
        }
        if open > 0 {
            return Ok(());
        }
        let next = r.stage + 1;
        let Some(stage) = r.stages.get(next as usize) else {
            let n = self.db().execute(
                "UPDATE rollouts SET state = 'done', updated_ns = $1 WHERE id = $2 AND state = 'running'",
                args![crate::sample::now_ns(), r.id.as_str()],
            )?;
            if n > 0 {
                self.audit("cloud", "rollout.done", &resource, "allowed", "");
            }
            return Ok(());
        };
        // One pump moves a rollout to its next stage.
        let n = self.db().execute(
            "UPDATE rollouts SET stage = $1, updated_ns = $2 WHERE id = $3 AND stage = $4 AND state = 'running'",
            args![next, crate::sample::now_ns(), r.id.as_str(), r.stage],
        )?;
        if n == 0 {
            return Ok(());
        }
        let chosen = self.choose(r, stage)?;
        tracing::info!(rollout = %r.id, stage = next, devices = chosen.len(), "rollout stage started");
        self.audit(
            "cloud",
            "rollout.stage",
            &resource,
            "allowed",
            &format!(
                "stage {} of {}: {} devices",
                next + 1,
                r.stages.len(),
                chosen.len()
            ),
        );
        let (metadata, chain) = {
            let db = self.db();
            let m = super::releases::get(&db, &r.tenant, &r.version)
                .map_err(|e| RolloutError::Invalid(e.to_string()))?
                .map(|m| m.metadata)
                .unwrap_or_default();
            let c = db
                .query_opt(
                    "SELECT chain FROM rollouts WHERE id = $1",
                    args![r.id.as_str()],
                )?
                .and_then(|c| c.opt_text(0).ok().flatten())
                .unwrap_or_else(|| "[]".into());
            (m, c)
        };
        let body = serde_json::json!({
            "release": metadata,
            "chain": serde_json::from_str::<serde_json::Value>(&chain).unwrap_or_default(),
        });
        for device in chosen {
            let command = super::downlink::new_id();
            let n = self.db().execute(
                "INSERT INTO rollout_devices(rollout, device, stage, command, phase, bytes, total, steps, updated_ns)
                 VALUES ($1, $2, $3, $4, 'offered', 0, 0, 0, $5) ON CONFLICT DO NOTHING",
                args![r.id.as_str(), device.as_str(), next, command.as_str(), crate::sample::now_ns()],
            )?;
            if n == 1 {
                downlink.issue_as(
                    &command,
                    &device,
                    OFFER,
                    &body,
                    &format!("rollout:{}", r.id),
                )?;
                self.audit(
                    &format!("rollout:{}", r.id),
                    "update.offered",
                    &format!("{}/devices/{device}", r.tenant),
                    "allowed",
                    &format!("release {}", r.version),
                );
            }
        }
        Ok(())
    }

    /// The devices a stage adds: its group, or enough of the fleet (in the rollout's
    /// order) to reach its share, leaving out those already in.
    fn choose(&self, r: &Rollout, stage: &Stage) -> Result<Vec<DeviceId>, RolloutError> {
        let db = self.db();
        let fleet = super::iam::devices::Devices::new(&db).active_in(&r.tenant)?;
        let already: Vec<String> = db
            .query(
                "SELECT device FROM rollout_devices WHERE rollout = $1",
                args![r.id.as_str()],
            )?
            .iter()
            .map(|d| d.text(0))
            .collect::<Result<_, _>>()?;
        let picked: Vec<String> = match stage {
            Stage::Group(g) => db
                .query(
                    "SELECT device FROM device_groups WHERE tenant = $1 AND grp = $2",
                    args![r.tenant.as_str(), g.as_str()],
                )?
                .iter()
                .map(|d| d.text(0))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|d| fleet.contains(d) && !already.contains(d))
                .collect(),
            Stage::Percent(p) => {
                let mut order = fleet.clone();
                order.sort_by_key(|d| rank(&r.id, d));
                // At least one device for any share of a non-empty fleet.
                let want = (fleet.len() * *p as usize).div_ceil(100);
                let more = want.saturating_sub(already.len());
                order
                    .into_iter()
                    .filter(|d| !already.contains(d))
                    .take(more)
                    .collect()
            }
        };
        Ok(picked
            .iter()
            .filter_map(|d| DeviceId::parse(d).ok())
            .collect())
    }

    /// A gateway's progress report (the transport proved `device`): every step not seen
    /// before is audited, and the device's row shows where it stands. False for a
    /// report of no rollout (ignored).
    pub fn progress(&self, device: &str, p: &Progress) -> Result<bool, RolloutError> {
        let row = self.db().query_opt(
            "SELECT d.rollout, d.steps, r.tenant FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout
             WHERE d.command = $1 AND d.device = $2",
            args![p.id.as_str(), device],
        )?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (rollout, seen, tenant) = (row.text(0)?, row.int(1)?.max(0) as usize, row.text(2)?);
        let resource = format!("{tenant}/devices/{device}");
        for step in p.history.iter().skip(seen) {
            let outcome = if BAD.contains(&step.phase.as_str()) {
                "refused"
            } else {
                "allowed"
            };
            let reason = match &step.reason {
                Some(why) => format!(
                    "{} {}: {why}",
                    p.version.as_deref().unwrap_or(""),
                    step.phase
                ),
                None => format!("{} {}", p.version.as_deref().unwrap_or(""), step.phase),
            };
            self.audit(
                &format!("device:{device}"),
                &format!("update.{}", step.phase),
                &resource,
                outcome,
                reason.trim(),
            );
        }
        self.db().execute(
            "UPDATE rollout_devices SET phase = $1, reason = $2, bytes = $3, total = $4,
                 steps = $5, updated_ns = $6
             WHERE rollout = $7 AND device = $8 AND steps <= $5",
            args![
                p.phase.as_str(),
                p.reason.clone(),
                p.bytes as i64,
                p.total as i64,
                p.history.len().max(seen) as i64,
                crate::sample::now_ns(),
                rollout.as_str(),
                device
            ],
        )?;
        Ok(true)
    }

    /// A reply to an offer: a refused offer (bad signature, older version, other
    /// hardware …) ends the device's update as failed, with the gateway's reason.
    pub fn replied(&self, device: &str, reply: &Reply) -> Result<(), RolloutError> {
        if reply.status != Status::Failed {
            return Ok(());
        }
        let why = reply.error.clone().unwrap_or_default();
        let row = self.db().query_opt(
            "SELECT r.tenant, r.version FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout
             WHERE d.command = $1 AND d.device = $2",
            args![reply.id.as_str(), device],
        )?;
        let Some(row) = row else { return Ok(()) };
        let (tenant, version) = (row.text(0)?, row.text(1)?);
        let n = self.db().execute(
            "UPDATE rollout_devices SET phase = 'failed', reason = $1, updated_ns = $2
             WHERE command = $3 AND device = $4 AND phase = 'offered'",
            args![
                why.as_str(),
                crate::sample::now_ns(),
                reply.id.as_str(),
                device
            ],
        )?;
        if n > 0 {
            self.audit(
                &format!("device:{device}"),
                "update.refused",
                &format!("{tenant}/devices/{device}"),
                "refused",
                &format!("{version}: {why}"),
            );
        }
        Ok(())
    }
}
