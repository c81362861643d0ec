//! Commands to a tenant's gateways over the downlink (`cloud::downlink`): issuing one
//! needs the operator role in the tenant that owns the device now (or a key with the
//! `write` action on it), reading them the viewer role; both decisions are audited.

use super::access::grant;
use super::{blocking, parse, Api, Ctx, Refusal};
use crate::cloud::code::Code;
use crate::cloud::downlink::{DownlinkError, Record};
use crate::cloud::iam::access::{Grant, Op, Target};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/devices/{device}/commands",
            get(list).post(issue),
        )
        .route(
            "/v1/tenants/{tenant}/devices/{device}/commands/{id}",
            get(one),
        )
}

impl From<DownlinkError> for Refusal {
    fn from(e: DownlinkError) -> Refusal {
        match e {
            DownlinkError::Db(e) => Refusal::new(Code::Internal, e.to_string()),
            e => Refusal::new(Code::BadRequest, e.to_string()),
        }
    }
}

/// `op` on the device of the tenant in the path (audited either way).
fn on_device(api: &Api, ctx: &Ctx, op: Op, tenant: &str, device: &str) -> Result<Grant, Refusal> {
    grant(&mut api.iam(), ctx, op, Target::device(tenant, device))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Issue {
    kind: String,
    #[serde(default)]
    body: serde_json::Value,
}

/// Queues a command; the answer is the command, `pending` until the gateway replies.
async fn issue(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Record>), Refusal> {
    let r: Issue = parse(&body)?;
    blocking(move || {
        let g = on_device(&api, &ctx, Op::CommandDevice, &tenant, &device)?;
        let device = crate::ids::DeviceId::parse(g.device().unwrap_or_default())
            .map_err(|e| Refusal::new(Code::BadDeviceId, e.to_string()))?;
        let id = api.downlink.issue(&device, &r.kind, &r.body, g.actor())?;
        let record = api
            .downlink
            .get(&id)?
            .ok_or_else(|| Refusal::new(Code::Internal, "the command vanished"))?;
        Ok((StatusCode::ACCEPTED, Json(record)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default = "hundred")]
    limit: i64,
}

fn hundred() -> i64 {
    100
}

/// The device's commands, newest first.
async fn list(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<Record>>, Refusal> {
    blocking(move || {
        let g = on_device(&api, &ctx, Op::Read, &tenant, &device)?;
        let limit = page.limit.clamp(1, 1000);
        Ok(Json(
            api.downlink.list(g.device().unwrap_or_default(), limit)?,
        ))
    })
    .await
}

async fn one(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device, id)): Path<(String, String, String)>,
) -> Result<Json<Record>, Refusal> {
    blocking(move || {
        let g = on_device(&api, &ctx, Op::Read, &tenant, &device)?;
        match api.downlink.get(&id)? {
            Some(r) if r.device == g.device().unwrap_or_default() => Ok(Json(r)),
            _ => Err(Refusal::new(
                Code::NotFound,
                format!("no command {id} for this device"),
            )),
        }
    })
    .await
}
