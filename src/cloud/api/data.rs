//! Datastreams of a device (list, latest values, history by time range, downsampled to a
//! resolution) and its gap records. The device comes from the grant, never the path.

use super::access::grant;
use super::{blocking, Api, Ctx, Refusal};
use crate::cloud::code::Code;
use crate::cloud::iam::access::{Grant, Op, Target};
use crate::cloud::store::resolution::Window;
use crate::cloud::store::{History, Row};
use crate::protocol::Gap;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The most points one history answer holds.
pub const MAX_POINTS: usize = 10_000;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/devices/{device}/streams",
            get(streams),
        )
        .route("/v1/tenants/{tenant}/devices/{device}/latest", get(latest))
        .route(
            "/v1/tenants/{tenant}/devices/{device}/history",
            get(history),
        )
        .route("/v1/tenants/{tenant}/devices/{device}/gaps", get(gaps))
}

/// Authorizes a read of `device` (and `stream` at `resolution_s`) in `tenant`.
fn read(
    api: &Api,
    ctx: &Ctx,
    tenant: &str,
    device: &str,
    stream: Option<&str>,
    resolution_s: u64,
) -> Result<Grant, Refusal> {
    let mut iam = api.iam();
    grant(
        &mut iam,
        ctx,
        Op::Read,
        Target {
            stream,
            resolution_s,
            ..Target::device(tenant, device)
        },
    )
}

fn device(g: &Grant) -> &str {
    g.device().unwrap_or_default()
}

#[derive(Serialize)]
struct Stream {
    stream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<u64>,
    latest_ns: i64,
}

async fn streams(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, dev)): Path<(String, String)>,
) -> Result<Json<Vec<Stream>>, Refusal> {
    blocking(move || {
        // Names and counts only: no values, so any resolution may list them.
        let g = read(&api, &ctx, &tenant, &dev, None, u64::MAX)?;
        let list = api.reads().streams(device(&g))?;
        // A key limited to a resolution sees the latest time at that resolution and no
        // count (which would time every sample).
        let floor_ns = g
            .scope()
            .map_or(0, |s| s.min_resolution_s as i64 * 1_000_000_000);
        Ok(Json(
            list.into_iter()
                .filter(|(s, _, _)| g.sees_stream(s))
                .map(|(stream, samples, latest_ns)| match floor_ns {
                    0 => Stream {
                        stream,
                        samples: Some(samples),
                        latest_ns,
                    },
                    f => Stream {
                        stream,
                        samples: None,
                        latest_ns: latest_ns - latest_ns.rem_euclid(f),
                    },
                })
                .collect(),
        ))
    })
    .await
}

/// Live values count as raw data: a key limited to aggregates does not read them.
async fn latest(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, dev)): Path<(String, String)>,
) -> Result<Json<Vec<Row>>, Refusal> {
    blocking(move || {
        let g = read(&api, &ctx, &tenant, &dev, None, 0)?;
        let rows = api.reads().latest(device(&g))?;
        Ok(Json(
            rows.into_iter()
                .filter(|r| g.sees_stream(&r.point))
                .collect(),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    stream: String,
    /// Start and end, nanoseconds since the epoch or RFC 3339; default: the last hour.
    from: Option<String>,
    to: Option<String>,
    /// Seconds per bucket; 0 (the default): raw samples.
    #[serde(default)]
    resolution: u64,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct HistoryAnswer {
    stream: String,
    from_ns: i64,
    to_ns: i64,
    resolution_s: u64,
    points: History,
}

fn instant(s: &str) -> Result<i64, Refusal> {
    s.parse::<i64>()
        .ok()
        .or_else(|| {
            humantime::parse_rfc3339_weak(s)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        })
        .ok_or_else(|| {
            Refusal::new(
                Code::BadRequest,
                format!("`{s}` is neither nanoseconds since the epoch nor an RFC 3339 time"),
            )
        })
}

async fn history(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, dev)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryAnswer>, Refusal> {
    let to_ns = match &q.to {
        Some(t) => instant(t)?,
        None => crate::sample::now_ns(),
    };
    let from_ns = match &q.from {
        Some(f) => instant(f)?,
        None => to_ns.saturating_sub(3_600_000_000_000),
    };
    if from_ns > to_ns {
        return Err(Refusal::new(Code::BadRequest, "`from` is after `to`"));
    }
    let bucket_ns = i64::try_from(q.resolution)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .ok_or_else(|| Refusal::new(Code::BadRequest, "`resolution` is too large"))?;
    let limit = q.limit.unwrap_or(MAX_POINTS).min(MAX_POINTS);
    blocking(move || {
        let g = read(&api, &ctx, &tenant, &dev, Some(&q.stream), q.resolution)?;
        let floor_s = g.scope().map_or(0, |s| s.min_resolution_s);
        if floor_s == 0 {
            let points = api.reads().history(
                device(&g),
                &q.stream,
                from_ns,
                to_ns,
                Some(bucket_ns),
                limit,
            )?;
            return Ok(Json(HistoryAnswer {
                stream: q.stream,
                from_ns,
                to_ns,
                resolution_s: q.resolution,
                points,
            }));
        }
        // A key limited to a resolution sees whole buckets of it, nothing finer.
        let floor_ns = i64::try_from(floor_s)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .unwrap_or(i64::MAX);
        let now = crate::sample::now_ns();
        let Some(w) = Window::new(from_ns, to_ns, bucket_ns, floor_ns, limit, now) else {
            return Err(Refusal::new(
                Code::BadRequest,
                "the window holds no finished bucket of this key's resolution",
            ));
        };
        let mut points = api.reads().history_limited(device(&g), &q.stream, w)?;
        // Counts are withheld: with them, an average that changes (a late sample) gives
        // the new value away.
        if let History::Buckets(b) = &mut points {
            b.iter_mut().for_each(|b| b.count = 0);
        }
        Ok(Json(HistoryAnswer {
            stream: q.stream,
            from_ns: w.from_ns,
            to_ns: w.to_ns,
            resolution_s: (w.bucket_ns / 1_000_000_000) as u64,
            points,
        }))
    })
    .await
}

async fn gaps(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, dev)): Path<(String, String)>,
) -> Result<Json<Vec<Gap>>, Refusal> {
    blocking(move || {
        let g = read(&api, &ctx, &tenant, &dev, None, 0)?;
        Ok(Json(api.reads().gaps(device(&g))?))
    })
    .await
}
