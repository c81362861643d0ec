//! The cloud's HTTPS API against a running cloud: tenants kept apart (every resource of
//! tenant A tried with every kind of credential of tenant B), API keys refused for each
//! reason and allowed within their scope, the device lifecycle from registration to
//! revocation, data queries with downsampling, the audit chain and security events.

mod common;
use common::api::{system_account, Auth, Client, PASSWORD};
use common::*;
use fieldgate::protocol::{Batch, Gap};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Stores samples for `device` as the ingest would: `n` values of `point`, one a second
/// ending now, value i for the i-th.
fn store_samples(cloud: &Cloud, device: &str, point: &str, n: u64) -> i64 {
    let now = fieldgate::sample::now_ns();
    let start = now - n as i64 * 1_000_000_000;
    let samples = (0..n)
        .map(|i| float_sample(i + 1, point, start + i as i64 * 1_000_000_000, i as f64))
        .collect();
    cloud
        .store()
        .insert(
            device,
            &Batch {
                samples,
                gaps: vec![Gap {
                    first: n + 1,
                    last: n + 5,
                }],
            },
        )
        .unwrap();
    start
}

fn audit_count(cloud: &Cloud, outcome: &str) -> i64 {
    cloud
        .db()
        .query_opt(
            "SELECT count(*) FROM audit WHERE outcome = $1",
            fieldgate::args![outcome],
        )
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap()
}

/// Each test runs twice: on a single node's SQLite and on PostgreSQL (a private server),
/// the database of the scale-out mode's API servers.
macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(super::Backend::sqlite(), tempfile::tempdir().unwrap()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgresql() {
                let dir = tempfile::tempdir().unwrap();
                let backend = super::Backend::postgres(&dir.path().join("pg"));
                super::$name(backend, dir).await
            }
        }
    };
}

/// A cloud with its API on `backend`'s database, issuing certificates for an hour.
async fn on(backend: &Backend, data: &Path) -> Cloud {
    Cloud::with_settings(
        data,
        fieldgate::cloud::Settings {
            cert_lifetime: Duration::from_secs(3600),
            database: backend.database.clone(),
            ..Default::default()
        },
    )
    .await
}

/// Two tenants, each with an owner, admin, operator and viewer, a claimed device with
/// data, a key and a child key.
struct World {
    users: Vec<(String, &'static str, Auth)>,
    keys: Vec<(String, Auth)>,
}

async fn tenant(api: &Client, sys: &Auth, t: &str, device: &str) -> World {
    let owner = format!("owner@{t}.example");
    api.register(&owner, t).await;
    let mut users = vec![(owner.clone(), "owner", api.login(&owner).await)];
    for role in ["admin", "operator", "viewer"] {
        let email = format!("{role}@{t}.example");
        api.ok(
            "POST",
            "/v1/system/users",
            sys,
            Some(json!({"email": email, "password": PASSWORD, "tenant": t, "role": role})),
        )
        .await;
        users.push((email.clone(), role, api.login(&email).await));
    }
    let code = format!("CLAIM-{device}-0001");
    api.ok(
        "POST",
        "/v1/system/devices",
        sys,
        Some(json!({"device": device, "claim_code": code})),
    )
    .await;
    let owner_auth = users[0].2.clone();
    api.ok(
        "POST",
        &format!("/v1/tenants/{t}/devices"),
        &owner_auth,
        Some(json!({"device": device, "claim_code": code})),
    )
    .await;
    let far = fieldgate::sample::now_ns() + 3_600_000_000_000;
    let key = api
        .ok(
            "POST",
            &format!("/v1/tenants/{t}/keys"),
            &owner_auth,
            Some(json!({"actions": ["read", "create", "delete", "issue"], "not_after_ns": far, "may_delegate": true})),
        )
        .await;
    let key = Auth::Bearer(key["token"].as_str().unwrap().into());
    let child = api
        .ok(
            "POST",
            "/v1/keys",
            &key,
            Some(json!({"actions": ["read"], "not_after_ns": far})),
        )
        .await;
    let child = Auth::Bearer(child["token"].as_str().unwrap().into());
    World {
        users,
        keys: vec![("key".into(), key), ("child key".into(), child)],
    }
}

on_both_databases!(tenants_are_isolated_from_every_kind_of_credential);
async fn tenants_are_isolated_from_every_kind_of_credential(
    backend: Backend,
    dir: tempfile::TempDir,
) {
    let cloud = on(&backend, &dir.path().join("cloud")).await;
    let api = Client::new(&cloud);
    system_account(&cloud, "factory@fieldgate.example");
    let sys = api.login("factory@fieldgate.example").await;

    let a = tenant(&api, &sys, "tenant-a", "dev-a1").await;
    let b = tenant(&api, &sys, "tenant-b", "dev-b1").await;
    store_samples(&cloud, "dev-a1", "meter/power", 120);
    store_samples(&cloud, "dev-b1", "meter/power", 120);
    // A device certificate of tenant B's device.
    let certs = dir.path().join("certs-b1");
    cloud.dev_cert("dev-b1", &certs);
    let device_b = Auth::Device(certs.join("device.crt"), certs.join("device.key"));

    // Tenant A's own people and keys reach its resources.
    let owner_a = &a.users[0].2;
    let listed = api
        .ok("GET", "/v1/tenants/tenant-a/devices", owner_a, None)
        .await;
    assert_eq!(listed, json!([{"device": "dev-a1", "state": "claimed"}]));
    for (name, auth) in a.keys.iter() {
        let h = api
            .ok(
                "GET",
                "/v1/tenants/tenant-a/devices/dev-a1/history?stream=meter/power&resolution=60",
                auth,
                None,
            )
            .await;
        assert!(!h["points"].as_array().unwrap().is_empty(), "{name}: {h}");
    }

    // Every resource of tenant A, with every credential of tenant B.
    let far = fieldgate::sample::now_ns() + 3_600_000_000_000;
    let a_key_id = {
        let keys = api
            .ok("GET", "/v1/tenants/tenant-a/keys", owner_a, None)
            .await;
        keys[0]["id"].as_str().unwrap().to_string()
    };
    let attempts: Vec<(&str, String, Option<Json>)> = vec![
        ("GET", "/v1/tenants/tenant-a".into(), None),
        ("GET", "/v1/tenants/tenant-a/users".into(), None),
        (
            "POST",
            "/v1/tenants/tenant-a/users".into(),
            Some(json!({"email": "owner@tenant-b.example", "role": "owner"})),
        ),
        ("GET", "/v1/tenants/tenant-a/devices".into(), None),
        (
            "POST",
            "/v1/tenants/tenant-a/devices".into(),
            Some(json!({"device": "dev-a1", "claim_code": "CLAIM-dev-a1-0001"})),
        ),
        ("GET", "/v1/tenants/tenant-a/devices/dev-a1".into(), None),
        (
            "GET",
            "/v1/tenants/tenant-a/devices/dev-a1/streams".into(),
            None,
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/devices/dev-a1/latest".into(),
            None,
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/devices/dev-a1/history?stream=meter/power".into(),
            None,
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/devices/dev-a1/gaps".into(),
            None,
        ),
        (
            "POST",
            "/v1/tenants/tenant-a/devices/dev-a1/transfer".into(),
            Some(json!({"to": "tenant-b"})),
        ),
        (
            "POST",
            "/v1/tenants/tenant-a/devices/dev-a1/revoke".into(),
            Some(json!({"reason": "hostile"})),
        ),
        ("GET", "/v1/tenants/tenant-a/keys".into(), None),
        (
            "POST",
            "/v1/tenants/tenant-a/keys".into(),
            Some(json!({"actions": ["read"], "not_after_ns": far})),
        ),
        (
            "DELETE",
            format!("/v1/tenants/tenant-a/keys/{a_key_id}"),
            None,
        ),
        ("GET", "/v1/tenants/tenant-a/audit".into(), None),
        ("GET", "/v1/tenants/tenant-a/security-events".into(), None),
        // Tenant B's own path, but tenant A's device.
        (
            "GET",
            "/v1/tenants/tenant-b/devices/dev-a1/latest".into(),
            None,
        ),
        (
            "GET",
            "/v1/tenants/tenant-b/devices/dev-a1/history?stream=meter/power".into(),
            None,
        ),
    ];
    let mut credentials: Vec<(String, Auth)> = b
        .users
        .iter()
        .map(|(email, role, auth)| (format!("{role} {email}"), auth.clone()))
        .collect();
    credentials.extend(b.keys.iter().cloned());
    credentials.push(("device certificate of dev-b1".into(), device_b));

    let refused_before = audit_count(&cloud, "refused");
    let mut tried = 0;
    for (who, auth) in &credentials {
        for (method, path, body) in &attempts {
            let (status, answer) = api.call(method, path, auth, body.clone()).await;
            assert!(
                status == 403 || status == 404,
                "{who}: {method} {path} answered {status} {answer}"
            );
            assert!(answer["error"].is_string(), "{answer}");
            tried += 1;
        }
    }
    let refused = audit_count(&cloud, "refused") - refused_before;
    assert_eq!(refused, tried, "each attempt audited as refused");
    println!(
        "{tried} attempts by {} credentials of tenant B on tenant A: all 403/404, all audited",
        credentials.len()
    );

    // Nothing of tenant A changed.
    let listed = api
        .ok("GET", "/v1/tenants/tenant-a/devices", owner_a, None)
        .await;
    assert_eq!(listed, json!([{"device": "dev-a1", "state": "claimed"}]));
    let keys = api
        .ok("GET", "/v1/tenants/tenant-a/keys", owner_a, None)
        .await;
    assert!(keys
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["revoked_ns"].is_null()));
}

/// Mints a key in tenant `t` with `scope` (JSON fields beside `actions`).
async fn mint(api: &Client, owner: &Auth, t: &str, scope: Json) -> (u16, Json) {
    api.call("POST", &format!("/v1/tenants/{t}/keys"), owner, Some(scope))
        .await
}

fn bearer(key: &Json) -> Auth {
    Auth::Bearer(key["token"].as_str().unwrap().into())
}

on_both_databases!(keys_are_refused_for_each_reason_and_work_within_their_scope);
async fn keys_are_refused_for_each_reason_and_work_within_their_scope(
    backend: Backend,
    dir: tempfile::TempDir,
) {
    let cloud = on(&backend, &dir.path().join("cloud")).await;
    let api = Client::new(&cloud);
    system_account(&cloud, "factory@fieldgate.example");
    let sys = api.login("factory@fieldgate.example").await;
    let w = tenant(&api, &sys, "acme", "pump-1").await;
    let owner = &w.users[0].2;
    let start = store_samples(&cloud, "pump-1", "meter/power", 7200);
    let now = fieldgate::sample::now_ns();
    let hour = 3_600_000_000_000i64;
    let history = "/v1/tenants/acme/devices/pump-1/history?stream=meter/power";
    let code = |r: &(u16, Json)| r.1["error"].as_str().unwrap_or("").to_string();

    // Each refusal, with its code.
    let (_, expired) = mint(
        &api,
        owner,
        "acme",
        json!({"actions": ["read"], "not_before_ns": now - 2 * hour, "not_after_ns": now - hour}),
    )
    .await;
    let r = api.call("GET", history, &bearer(&expired), None).await;
    assert_eq!((r.0, code(&r)), (403, "key_expired".into()), "{r:?}");

    let (_, later) = mint(
        &api,
        owner,
        "acme",
        json!({"actions": ["read"], "not_before_ns": now + hour, "not_after_ns": now + 2 * hour}),
    )
    .await;
    let r = api.call("GET", history, &bearer(&later), None).await;
    assert_eq!(code(&r), "key_not_yet_valid");

    let (_, elsewhere) = mint(
        &api,
        owner,
        "acme",
        json!({"actions": ["read"], "cidrs": ["10.0.0.0/8"], "not_after_ns": now + hour}),
    )
    .await;
    let r = api.call("GET", history, &bearer(&elsewhere), None).await;
    assert_eq!(code(&r), "key_source_refused");

    let (_, site) = mint(&api, owner, "acme", json!({"actions": ["read"], "origins": ["https://site.example"], "not_after_ns": now + hour})).await;
    let r = api
        .call_with(
            "GET",
            history,
            &bearer(&site),
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_eq!(code(&r), "key_origin_refused");
    let r = api
        .call_with(
            "GET",
            history,
            &bearer(&site),
            &[("origin", "https://site.example")],
            None,
        )
        .await;
    assert_eq!(r.0, 200, "{r:?}");

    let (_, hourly) = mint(
        &api,
        owner,
        "acme",
        json!({"actions": ["read"], "min_resolution_s": 3600, "not_after_ns": now + hour}),
    )
    .await;
    let r = api
        .call(
            "GET",
            &format!("{history}&resolution=60"),
            &bearer(&hourly),
            None,
        )
        .await;
    assert_eq!(code(&r), "resolution_too_fine");
    let r = api
        .call(
            "GET",
            "/v1/tenants/acme/devices/pump-1/latest",
            &bearer(&hourly),
            None,
        )
        .await;
    assert_eq!(code(&r), "resolution_too_fine", "live values are raw data");
    // Allowed: hourly averages, computed from the stored values 0, 1, 2, …
    let from = start;
    let r = api
        .ok(
            "GET",
            &format!("{history}&resolution=3600&from={from}&to={now}"),
            &bearer(&hourly),
            None,
        )
        .await;
    let points = r["points"].as_array().unwrap();
    // Finished hours only (the samples span two hours ending now), counts withheld.
    assert!(!points.is_empty(), "{r}");
    for p in points {
        let (min, max, avg) = (
            p["min"].as_f64().unwrap(),
            p["max"].as_f64().unwrap(),
            p["avg"].as_f64().unwrap(),
        );
        // At the key's own resolution a bucket is its average, nothing finer: no raw
        // minimum or maximum.
        assert!(p.get("count").is_none(), "{p}");
        assert_eq!((min, max), (avg, avg), "{p}");
    }

    let (_, reader) = mint(
        &api,
        owner,
        "acme",
        json!({"actions": ["read"], "not_after_ns": now + hour, "may_delegate": false}),
    )
    .await;
    let r = api
        .call(
            "POST",
            "/v1/tenants/acme/devices",
            &bearer(&reader),
            Some(json!({"device": "pump-2", "claim_code": "whatever-code"})),
        )
        .await;
    assert_eq!(code(&r), "action_not_granted");
    let r = api
        .call(
            "POST",
            "/v1/keys",
            &bearer(&reader),
            Some(json!({"actions": ["read"], "not_after_ns": now + hour})),
        )
        .await;
    assert_eq!(code(&r), "delegation_refused");

    // A viewer cannot mint a key that writes.
    let viewer = &w.users[3].2;
    let r = mint(
        &api,
        viewer,
        "acme",
        json!({"actions": ["read"], "not_after_ns": now + hour}),
    )
    .await;
    assert_eq!(code(&r), "forbidden", "minting needs operator: {r:?}");
    let operator = &w.users[2].2;
    let r = mint(
        &api,
        operator,
        "acme",
        json!({"actions": ["delete"], "not_after_ns": now + hour}),
    )
    .await;
    assert_eq!(code(&r), "scope_widened", "{r:?}");

    // A parent for pump-* streams meter/*, and children that try to widen it.
    let (_, parent) = mint(&api, owner, "acme", json!({"devices": ["pump-*"], "streams": ["meter/*"], "actions": ["read", "issue"], "may_delegate": true, "not_after_ns": now + hour})).await;
    let parent = bearer(&parent);
    for (child, why) in [
        (
            json!({"actions": ["read", "delete"], "not_after_ns": now + hour}),
            "an action",
        ),
        (
            json!({"devices": ["*"], "streams": ["meter/*"], "actions": ["read"], "not_after_ns": now + hour}),
            "devices",
        ),
        (
            json!({"devices": ["pump-*"], "streams": ["meter/*"], "actions": ["read"], "not_after_ns": now + 2 * hour}),
            "a window",
        ),
        (
            json!({"devices": ["pump-*"], "streams": ["*"], "actions": ["read"], "not_after_ns": now + hour}),
            "streams",
        ),
    ] {
        let r = api.call("POST", "/v1/keys", &parent, Some(child)).await;
        assert_eq!(code(&r), "scope_widened", "{why}: {r:?}");
    }
    let child = api
        .ok(
            "POST",
            "/v1/keys",
            &parent,
            Some(json!({"devices": ["pump-1"], "streams": ["meter/power"], "actions": ["read"], "not_after_ns": now + hour})),
        )
        .await;
    assert_eq!(child["scope"]["tenant"], "acme");
    let child = bearer(&child);
    api.ok("GET", history, &child, None).await;
    // The child sees its one stream only.
    store_samples(&cloud, "pump-1", "secret/recipe", 1);
    let latest = api
        .ok(
            "GET",
            "/v1/tenants/acme/devices/pump-1/latest",
            &child,
            None,
        )
        .await;
    let streams: Vec<&str> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["point"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["meter/power"]);
    let r = api
        .call(
            "GET",
            "/v1/tenants/acme/devices/pump-1/history?stream=secret/recipe",
            &child,
            None,
        )
        .await;
    assert_eq!(code(&r), "not_found");

    // Revoking the parent stops the child at once.
    let keys = api.ok("GET", "/v1/tenants/acme/keys", owner, None).await;
    let parent_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scope"]["devices"] == json!(["pump-*"]) && k["parent"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = api
        .ok(
            "DELETE",
            &format!("/v1/tenants/acme/keys/{parent_id}"),
            owner,
            None,
        )
        .await;
    assert_eq!(revoked["revoked"], 2, "the parent and its child");
    let r = api.call("GET", history, &child, None).await;
    assert_eq!((r.0, code(&r)), (403, "key_revoked".into()), "{r:?}");
    let r = api
        .call(
            "GET",
            history,
            &Auth::Bearer("fgk_0000000000000000_00000000000000000000000000000000".into()),
            None,
        )
        .await;
    assert_eq!((r.0, code(&r)), (401, "key_unknown".into()));

    // The watch: the out-of-networks key raised its event; a burst of refusals from
    // one address raised another.
    let events = api
        .ok("GET", "/v1/tenants/acme/security-events", owner, None)
        .await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"key_outside_cidr"), "{events}");
    assert!(kinds.contains(&"failure_burst"), "{events}");

    // Every decision is in the chain, and the chain verifies; one edited row is named.
    let verify = || cloud.cli().args(["audit", "verify"]).output().unwrap();
    let out = verify();
    assert!(out.status.success(), "{out:?}");
    let db = cloud.db();
    let target = db
        .query_opt(
            "SELECT min(id) FROM audit WHERE outcome = 'refused' AND reason = 'key_expired'",
            &[],
        )
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap();
    db.execute(
        "UPDATE audit SET outcome = 'allowed', reason = '' WHERE id = $1",
        fieldgate::args![target],
    )
    .unwrap();
    let out = verify();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("BROKEN at entry {target}")), "{err}");
}

on_both_databases!(a_device_is_registered_claimed_enrolled_transferred_and_revoked);
async fn a_device_is_registered_claimed_enrolled_transferred_and_revoked(
    backend: Backend,
    dir: tempfile::TempDir,
) {
    let d = dir.path();
    let cloud = on(&backend, &d.join("cloud")).await;
    let api = Client::new(&cloud);
    system_account(&cloud, "factory@fieldgate.example");
    let sys = api.login("factory@fieldgate.example").await;
    let a = tenant(&api, &sys, "plant-a", "gw-placeholder-a").await;
    let b = tenant(&api, &sys, "plant-b", "gw-placeholder-b").await;
    let (owner_a, owner_b) = (&a.users[0].2, &b.users[0].2);

    // Registered at manufacture; a gateway that nobody claimed cannot enroll.
    api.ok(
        "POST",
        "/v1/system/devices",
        &sys,
        Some(json!({"device": "gw-7", "claim_code": "K7Q2-9XJM-44PA"})),
    )
    .await;
    let r = api
        .call(
            "POST",
            "/v1/system/devices",
            owner_a,
            Some(json!({"device": "gw-8", "claim_code": "K7Q2-9XJM-44PA"})),
        )
        .await;
    assert_eq!(r.0, 403, "only system accounts register: {r:?}");
    let cfg = file_key_gateway(d, "gw-7", &cloud);
    let token = cloud.token("gw-7");
    std::fs::write(d.join("bootstrap.token"), &token).unwrap();
    let out = fieldgate_out(&[
        "enroll",
        "--config",
        cfg.to_str().unwrap(),
        "--cloud",
        &cloud.api_url(),
        "--token",
        &token,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("device_unclaimed"),
        "{err}"
    );

    // Claimed with a wrong code: refused; with the right one (any case): claimed.
    let r = api
        .call(
            "POST",
            "/v1/tenants/plant-a/devices",
            owner_a,
            Some(json!({"device": "gw-7", "claim_code": "K7Q2-9XJM-44PB"})),
        )
        .await;
    assert_eq!((r.0, r.1["error"].as_str().unwrap()), (403, "forbidden"));
    api.ok(
        "POST",
        "/v1/tenants/plant-a/devices",
        owner_a,
        Some(json!({"device": "gw-7", "claim_code": "k7q2-9xjm-44pa"})),
    )
    .await;
    let r = api
        .call(
            "POST",
            "/v1/tenants/plant-b/devices",
            owner_b,
            Some(json!({"device": "gw-7", "claim_code": "K7Q2-9XJM-44PA"})),
        )
        .await;
    assert_eq!(r.0, 409, "claimed once: {r:?}");

    // Enrolled: the gateway starts, enrolls with its token and sends data.
    let mut gw = gateway(&cfg);
    wait_for("data from gw-7", Duration::from_secs(30), || {
        cloud.rows("gw-7").len() > 3
    });
    // The ingest's watch knows the network it came from.
    let network = cloud
        .db()
        .query_opt(
            "SELECT network FROM device_networks WHERE device = 'gw-7'",
            &[],
        )
        .unwrap()
        .unwrap()
        .text(0)
        .unwrap();
    assert_eq!(network, "127.0.0.0/24");
    let detail = api
        .ok("GET", "/v1/tenants/plant-a/devices/gw-7", owner_a, None)
        .await;
    assert_eq!(detail["state"], "enrolled", "{detail}");
    assert_eq!(detail["certificates"].as_array().unwrap().len(), 1);
    let streams = api
        .ok(
            "GET",
            "/v1/tenants/plant-a/devices/gw-7/streams",
            owner_a,
            None,
        )
        .await;
    assert!(!streams.as_array().unwrap().is_empty(), "{streams}");

    // Transferred: plant-a loses access at once, plant-b has it.
    let r = api
        .call(
            "POST",
            "/v1/tenants/plant-a/devices/gw-7/transfer",
            &a.users[1].2,
            Some(json!({"to": "plant-b"})),
        )
        .await;
    assert_eq!(r.0, 403, "an admin cannot transfer, only an owner: {r:?}");
    api.ok(
        "POST",
        "/v1/tenants/plant-a/devices/gw-7/transfer",
        owner_a,
        Some(json!({"to": "plant-b"})),
    )
    .await;
    let r = api
        .call(
            "GET",
            "/v1/tenants/plant-a/devices/gw-7/latest",
            owner_a,
            None,
        )
        .await;
    assert_eq!(r.0, 404, "{r:?}");
    let latest = api
        .ok(
            "GET",
            "/v1/tenants/plant-b/devices/gw-7/latest",
            owner_b,
            None,
        )
        .await;
    assert!(!latest.as_array().unwrap().is_empty());

    // Revoked: refused at the next connect, and nothing more is stored.
    api.ok(
        "POST",
        "/v1/tenants/plant-b/devices/gw-7/revoke",
        owner_b,
        Some(json!({"reason": "stolen from the yard"})),
    )
    .await;
    gw.terminate();
    let stored = cloud.rows("gw-7").len();
    let mut gw = gateway(&cfg);
    wait_for("the refusal at connect", Duration::from_secs(20), || {
        cloud
            .registry()
            .events(Some("gw-7"))
            .unwrap()
            .iter()
            .any(|e| e.event == "refused" && e.detail.contains("revoked"))
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cloud.rows("gw-7").len(), stored);
    gw.terminate();
    let r = api
        .call("GET", "/v1/tenants/plant-b/devices/gw-7", owner_b, None)
        .await;
    assert_eq!(r.0, 404, "a revoked device is out of every tenant: {r:?}");
}

/// A gateway config with a file key (made here) that enrolls itself with
/// `bootstrap.token`.
fn file_key_gateway(dir: &Path, device: &str, cloud: &Cloud) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(certs.join("device.key"), key.serialize_pem()).unwrap();
    enrolling_gateway(
        dir,
        device,
        cloud,
        "backend = \"file\"",
        "key = \"certs/device.key\"",
    )
}

on_both_databases!(hostile_requests_get_json_4xx);
async fn hostile_requests_get_json_4xx(backend: Backend, dir: tempfile::TempDir) {
    let cloud = on(&backend, &dir.path().join("cloud")).await;
    let api = Client::new(&cloud);
    let cases: Vec<(&str, &str, Option<Json>, u16)> = vec![
        ("GET", "/v1/nothing-here", None, 404),
        ("GET", "/v1/tenants/x'%20OR%201=1--/devices", None, 401),
        ("GET", "/v1/tenants/..%2F..%2Fetc/devices", None, 401),
        ("PUT", "/v1/sessions", None, 405),
        ("POST", "/v1/sessions", Some(json!("not an object")), 400),
        (
            "POST",
            "/v1/sessions",
            Some(json!({"email": "x@y.example"})),
            400,
        ),
        (
            "POST",
            "/v1/sessions",
            Some(json!({"email": "x' OR '1'='1", "password": "' OR 1=1 --"})),
            401,
        ),
        (
            "POST",
            "/v1/users",
            Some(json!({"email": "a@b.example", "password": "short", "tenant": "t1"})),
            400,
        ),
        (
            "POST",
            "/v1/users",
            Some(json!({"email": "a@b.example", "password": PASSWORD, "tenant": "../../etc"})),
            400,
        ),
        (
            "GET",
            "/v1/tenants/t/devices/d/history?stream=s&from=yesterday",
            None,
            400,
        ),
        (
            "GET",
            "/v1/tenants/t/devices/d/history?resolution=-1",
            None,
            400,
        ),
        // NUL characters: no name has one, and PostgreSQL cannot store one.
        (
            "POST",
            "/v1/users",
            Some(json!({"email": "a\u{0}@b.example", "password": PASSWORD, "tenant": "t1"})),
            400,
        ),
        (
            "POST",
            "/v1/password-resets",
            Some(json!({"email": "a@b.example\u{0}"})),
            400,
        ),
        ("GET", "/v1/tenants/t%00/devices", None, 400),
        ("GET", "/v1/tenants/t/devices/d/latest?x=%00", None, 400),
    ];
    for (method, path, body, want) in cases {
        let (status, answer) = api.call(method, path, &Auth::None, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(
            answer["error"].is_string() && answer["message"].is_string(),
            "{answer}"
        );
    }
    // A body over the limit.
    let big = json!({"email": "a@b.example", "password": "x".repeat(100_000)});
    let r = fieldgate::identity::enroll::https_request(
        http::Method::POST,
        &api.url,
        "/v1/sessions",
        &api.ca,
        None,
        &[],
        Some(serde_json::to_vec(&big).unwrap()),
    )
    .await;
    match r {
        Ok((status, _)) => assert_eq!(status, 413),
        Err(e) => assert!(
            e.to_string().contains("closed")
                || e.to_string().contains("reset")
                || e.to_string().contains("pipe"),
            "{e}"
        ),
    }
    // Guessing passwords: after ten refusals within a minute, logins from this address
    // are refused without a password check, the right password included.
    let api_auth = Auth::None;
    api.ok(
        "POST",
        "/v1/users",
        &api_auth,
        Some(json!({"email": "target@b.example", "password": PASSWORD, "tenant": "target"})),
    )
    .await;
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = api
            .call(
                "POST",
                "/v1/sessions",
                &api_auth,
                Some(json!({"email": "target@b.example", "password": format!("guess number {i}")})),
            )
            .await;
        codes.push(r.0);
    }
    // One refused login from this address came above (the SQL-looking one).
    assert!(codes[..9].iter().all(|c| *c == 401), "{codes:?}");
    assert!(codes[9..].iter().all(|c| *c == 429), "{codes:?}");
    let r = api
        .call(
            "POST",
            "/v1/sessions",
            &api_auth,
            Some(json!({"email": "target@b.example", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (429, "too_many_attempts")
    );

    // The OpenAPI document is served.
    let (status, doc) = api.call("GET", "/v1/openapi.json", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
}

/// A webhook receiver on loopback: each POST's signature header and body, answered 200.
async fn receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body_start) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the request ended early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).to_lowercase(), i + 4);
                }
            };
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap();
            while buf.len() < body_start + len {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let _ = tx.send((
                header("x-fieldgate-signature"),
                buf[body_start..body_start + len].to_vec(),
            ));
        }
    });
    (port, rx)
}

on_both_databases!(security_events_reach_the_tenants_webhook_signed);
async fn security_events_reach_the_tenants_webhook_signed(
    backend: Backend,
    dir: tempfile::TempDir,
) {
    let cloud = Cloud::with_settings(
        &dir.path().join("cloud"),
        fieldgate::cloud::Settings {
            webhook: fieldgate::cloud::api::webhook::Policy {
                allow_http: true,
                allow_nets: vec!["127.0.0.0/8".parse().unwrap()],
            },
            database: backend.database.clone(),
            ..Default::default()
        },
    )
    .await;
    let api = Client::new(&cloud);
    system_account(&cloud, "factory@fieldgate.example");
    let sys = api.login("factory@fieldgate.example").await;
    let w = tenant(&api, &sys, "acme", "pump-1").await;
    let (owner, viewer) = (&w.users[0].2, &w.users[3].2);
    let (port, mut events) = receiver().await;

    // Only admins set webhooks, and only https ones unless the cloud allows http.
    let url = format!("http://127.0.0.1:{port}/hooks/fieldgate");
    let r = api
        .call(
            "PUT",
            "/v1/tenants/acme/webhook",
            viewer,
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(r.0, 403, "{r:?}");
    let r = api
        .call(
            "PUT",
            "/v1/tenants/acme/webhook",
            owner,
            Some(json!({"url": "ftp://x.example/"})),
        )
        .await;
    assert_eq!(r.0, 400, "{r:?}");
    let set = api
        .ok(
            "PUT",
            "/v1/tenants/acme/webhook",
            owner,
            Some(json!({"url": url})),
        )
        .await;
    let secret = set["secret"].as_str().unwrap().to_string();
    let shown = api.ok("GET", "/v1/tenants/acme/webhook", owner, None).await;
    assert_eq!(shown, json!({"url": url}), "the secret is shown once");

    // A key used from outside its networks, five times: out-of-CIDR and a burst.
    let now = fieldgate::sample::now_ns();
    let key = api
        .ok(
            "POST",
            "/v1/tenants/acme/keys",
            owner,
            Some(json!({"actions": ["read"], "cidrs": ["10.0.0.0/8"], "not_after_ns": now + 3_600_000_000_000})),
        )
        .await;
    let key = Auth::Bearer(key["token"].as_str().unwrap().into());
    for _ in 0..5 {
        let r = api
            .call("GET", "/v1/tenants/acme/devices", &key, None)
            .await;
        assert_eq!(r.0, 403);
    }
    let mut kinds = Vec::new();
    while !(kinds.contains(&"key_outside_cidr".to_string())
        && kinds.contains(&"failure_burst".to_string()))
    {
        let (signature, body) = tokio::time::timeout(Duration::from_secs(15), events.recv())
            .await
            .expect("the webhook got the events within 15 s")
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let want = fieldgate::hex::encode(ring::hmac::sign(&key, &body).as_ref());
        assert_eq!(
            signature,
            format!("sha256={want}"),
            "signed with the secret"
        );
        let event: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["tenant"], "acme");
        kinds.push(event["kind"].as_str().unwrap().to_string());
    }
    // Removed: no more deliveries.
    let r = api
        .call("DELETE", "/v1/tenants/acme/webhook", owner, None)
        .await;
    assert_eq!(r.0, 204);
    let r = api
        .call("GET", "/v1/tenants/acme/webhook", owner, None)
        .await;
    assert_eq!(r.0, 404);
}
