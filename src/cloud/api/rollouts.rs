//! Rollouts of a tenant's releases (`cloud::rollouts`): starting one, and putting
//! devices in groups, need the operator role in the tenant (people only: a key cannot
//! start a rollout); reading them the viewer role. Every decision is audited.

use super::access::grant;
use super::{blocking, parse, Api, Ctx, Refusal};
use crate::cloud::code::Code;
use crate::cloud::iam::access::{Op, Target};
use crate::cloud::rollouts::{Plan, Rollout, RolloutError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/tenants/{tenant}/rollouts", get(list).post(start))
        .route("/v1/tenants/{tenant}/rollouts/{id}", get(one))
        .route("/v1/tenants/{tenant}/devices/{device}/group", put(group))
}

impl From<RolloutError> for Refusal {
    fn from(e: RolloutError) -> Refusal {
        match e {
            RolloutError::Invalid(m) => Refusal::new(Code::BadRequest, m),
            RolloutError::NotFound(m) => Refusal::new(Code::NotFound, format!("no rollout {m}")),
            e => Refusal::new(Code::Internal, e.to_string()),
        }
    }
}

/// Starts a rollout of one of the tenant's releases.
async fn start(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Rollout>), Refusal> {
    let plan: Plan = parse(&body)?;
    blocking(move || {
        let g = grant(&mut api.iam(), &ctx, Op::Rollout, Target::tenant(&tenant))?;
        let release = api
            .releases
            .get(g.tenant(), &plan.version)
            .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?
            .ok_or_else(|| {
                Refusal::new(
                    Code::NotFound,
                    format!(
                        "tenant {} has no release {}: publish it first (fieldgate-cloud release-add)",
                        g.tenant(),
                        plan.version
                    ),
                )
            })?;
        let r = api.rollouts.start(&release, &plan, g.actor())?;
        Ok((StatusCode::CREATED, Json(r)))
    })
    .await
}

async fn list(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<Rollout>>, Refusal> {
    blocking(move || {
        let g = grant(&mut api.iam(), &ctx, Op::Read, Target::tenant(&tenant))?;
        Ok(Json(api.rollouts.list(g.tenant())?))
    })
    .await
}

/// A rollout with every device's state.
async fn one(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Rollout>, Refusal> {
    blocking(move || {
        let g = grant(&mut api.iam(), &ctx, Op::Read, Target::tenant(&tenant))?;
        api.rollouts
            .get(g.tenant(), &id)?
            .map(Json)
            .ok_or(Refusal::new(Code::NotFound, format!("no rollout {id}")))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    group: Option<String>,
}

/// Puts a device in a group (`{"group": null}` takes it out).
async fn group(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let r: Group = parse(&body)?;
    blocking(move || {
        let g = grant(
            &mut api.iam(),
            &ctx,
            Op::Rollout,
            Target::device(&tenant, &device),
        )?;
        api.rollouts.set_group(
            g.tenant(),
            g.device().unwrap_or_default(),
            r.group.as_deref(),
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
