//! Attacks by a tenant's own user through the keys they may mint: patterns that cost
//! the decision point exponential time, and history finer than the key may read.

use crate::bystander::{code, two_tenants, while_attacked};
use crate::common::api::{Auth, Client};
use crate::common::{float_sample, Cloud};
use fieldgate::protocol::Batch;
use serde_json::{json, Value as Json};
use std::time::Duration;

const HOUR_NS: i64 = 3_600_000_000_000;

async fn mint(api: &Client, owner: &Auth, tenant: &str, scope: Json) -> (u16, Json) {
    api.call(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        owner,
        Some(scope),
    )
    .await
}

fn bearer(key: &Json) -> Auth {
    Auth::Bearer(key["token"].as_str().unwrap().into())
}

fn in_an_hour() -> i64 {
    fieldgate::sample::now_ns() + HOUR_NS
}

/// Finding 2 (high): the glob matcher backtracked exponentially, and a self-registered
/// user writes the patterns of their own keys: `*a*a*…*b` against a 38-character path
/// took 23 s, 64 characters hours, all under the one IAM lock every tenant waits on.
/// Delegation's pattern containment had the same shape. Now matching is
/// O(pattern × name), patterns are bounded at minting, and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_key_patterns_cost_nothing_and_stall_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, evil) = two_tenants(&cloud).await;
    let hostile = format!("{}b", "*a".repeat(40));
    let (status, key) = mint(
        &api,
        &evil,
        "evil",
        json!({"actions": ["read", "issue"], "streams": [hostile], "devices": [hostile, "evil-1"],
               "may_delegate": true, "not_after_ns": in_an_hour()}),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = bearer(&key);
    let long = "a".repeat(120);
    let attack = async {
        let mut answers = Vec::new();
        for _ in 0..4 {
            let path = format!("/v1/tenants/evil/devices/evil-1/history?stream={long}");
            answers.push(api.call("GET", &path, &key, None).await);
            let path = format!("/v1/tenants/evil/devices/{long}/streams");
            answers.push(api.call("GET", &path, &key, None).await);
            let child = json!({"actions": ["read"], "streams": [long], "devices": ["evil-1"],
                               "not_after_ns": in_an_hour() - 1});
            answers.push(api.call("POST", "/v1/keys", &key, Some(child)).await);
        }
        answers
    };
    for r in while_attacked(&api, &acme, attack).await {
        // Refused (the name does not match), answered at once.
        assert!([403, 404].contains(&r.0), "{r:?}");
    }

    // Patterns are bounded where keys are made.
    let too_long = "*".repeat(129);
    let r = mint(
        &api,
        &evil,
        "evil",
        json!({"actions": ["read"], "streams": [too_long], "not_after_ns": in_an_hour()}),
    )
    .await;
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "{r:?}");
    let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    let r = mint(
        &api,
        &evil,
        "evil",
        json!({"actions": ["read"], "streams": many, "not_after_ns": in_an_hour()}),
    )
    .await;
    assert_eq!((r.0, code(&r)), (400, "bad_request"), "{r:?}");
}

/// Finding 3 (high): a key limited to hourly history asked for a one-bucket window
/// around one sample (`from`/`to` filtered raw rows while buckets align to the epoch)
/// and got the raw value as avg = min = max; stepping the window rebuilt the raw
/// series, and even full buckets' min and max were raw values. Now the window is
/// widened to whole buckets of the key's resolution, and extremes are those of the
/// hourly averages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_hourly_history_learns_nothing_finer() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, _) = two_tenants(&cloud).await;
    // Two whole hours, about a day ago: hour one has 1, 1, 1 and a spike of 99; hour two 5, 7.
    // (h0 on a two-hour boundary, so that one two-hour bucket holds both hours.)
    let h0 = (fieldgate::sample::now_ns() / (2 * HOUR_NS) - 12) * 2 * HOUR_NS;
    let spike = h0 + 1_234_000_000_000;
    let values = [
        (h0 + 60_000_000_000, 1.0),
        (h0 + 600_000_000_000, 1.0),
        (spike, 99.0),
        (h0 + 3_000_000_000_000, 1.0),
        (h0 + HOUR_NS + 5, 5.0),
        (h0 + HOUR_NS + 7, 7.0),
    ];
    let samples = values
        .iter()
        .enumerate()
        .map(|(i, &(ts, v))| float_sample(i as u64 + 1, "meter/power", ts, v))
        .collect();
    cloud
        .store()
        .insert(
            "pump-1",
            &Batch {
                samples,
                gaps: vec![],
            },
        )
        .unwrap();
    let (status, hourly) = mint(
        &api,
        &acme,
        "acme",
        json!({"actions": ["read"], "min_resolution_s": 3600, "not_after_ns": in_an_hour()}),
    )
    .await;
    assert_eq!(status, 201);
    let hourly = bearer(&hourly);
    let history = |from: i64, to: i64, resolution: u64| {
        format!(
            "/v1/tenants/acme/devices/pump-1/history?stream=meter/power&from={from}&to={to}&resolution={resolution}"
        )
    };

    // The window around the spike alone: the whole hour is what comes back.
    let around = history(spike - 1, spike + 1, 3600);
    let attack = api.call("GET", &around, &hourly, None);
    let r = while_attacked(&api, &acme, attack).await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        (r.1["from_ns"].as_i64(), r.1["to_ns"].as_i64()),
        (Some(h0), Some(h0 + HOUR_NS - 1))
    );
    let points = r.1["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{r:?}");
    let b = &points[0];
    assert!(b.get("count").is_none(), "counts are withheld: {b}");
    assert_eq!(
        b["avg"].as_f64(),
        Some(25.5),
        "the hour's average, not the spike: {b}"
    );
    assert_eq!(
        (b["min"].as_f64(), b["max"].as_f64()),
        (Some(25.5), Some(25.5))
    );

    // Stepping a narrow window over the hour learns the same bucket every time.
    for ts in [h0 + 1, h0 + 700_000_000_000, spike, h0 + HOUR_NS - 2] {
        let r = api
            .ok("GET", &history(ts, ts + 1, 3600), &hourly, None)
            .await;
        assert_eq!(r["points"][0]["avg"].as_f64(), Some(25.5), "{r}");
    }

    // Coarser buckets: the extremes are hourly averages, never the raw 1 or 99.
    let r = api
        .ok(
            "GET",
            &history(h0, h0 + 2 * HOUR_NS - 1, 7200),
            &hourly,
            None,
        )
        .await;
    let b = &r["points"][0];
    assert_eq!(
        (b["min"].as_f64(), b["max"].as_f64()),
        (Some(6.0), Some(25.5)),
        "{r}"
    );
    assert!(b.get("count").is_none(), "{b}");
    assert_eq!(b["avg"].as_f64(), Some(114.0 / 6.0));

    // A bucket between two multiples of the floor is rounded up to one.
    let r = api
        .ok(
            "GET",
            &history(h0, h0 + 2 * HOUR_NS - 1, 5400),
            &hourly,
            None,
        )
        .await;
    assert_eq!(r["resolution_s"], 7200, "{r}");

    // The bucket still filling is never answered (its average would change with each
    // new sample), nor is a stream's exact latest time or its count.
    let now = fieldgate::sample::now_ns();
    let r = api
        .call("GET", &history(now - HOUR_NS / 2, now, 3600), &hourly, None)
        .await;
    let current = now - now % HOUR_NS;
    match r.0 {
        200 => assert!(
            r.1["to_ns"].as_i64().unwrap() < current,
            "only finished hours: {r:?}"
        ),
        _ => assert_eq!(code(&r), "bad_request", "{r:?}"),
    }
    let streams = api
        .ok(
            "GET",
            "/v1/tenants/acme/devices/pump-1/streams",
            &hourly,
            None,
        )
        .await;
    assert_eq!(
        streams[0]["latest_ns"].as_i64(),
        Some(h0 + HOUR_NS),
        "{streams}"
    );
    assert!(streams[0].get("samples").is_none(), "{streams}");

    // A key with raw access still sees the raw extremes.
    let (_, raw) = mint(
        &api,
        &acme,
        "acme",
        json!({"actions": ["read"], "not_after_ns": in_an_hour()}),
    )
    .await;
    let r = api
        .ok(
            "GET",
            &history(h0, h0 + HOUR_NS - 1, 3600),
            &bearer(&raw),
            None,
        )
        .await;
    assert_eq!(
        (
            r["points"][0]["min"].as_f64(),
            r["points"][0]["max"].as_f64()
        ),
        (Some(1.0), Some(99.0))
    );
}
