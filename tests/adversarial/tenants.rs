//! Attacks by a tenant's admin or users on what the cloud does for them: webhooks
//! pointed inside the cloud's network, claim codes guessed, a browser-bound key used
//! elsewhere to mint children.

use crate::bystander::{code, two_tenants, while_attacked};
use crate::common::api::Auth;
use crate::common::Cloud;
use serde_json::json;
use std::time::Duration;

/// Finding 6 (medium): a tenant owner pointed the webhook at loopback or a private
/// address and the cloud connected there every second (blind SSRF; a full POST with
/// `--webhook-allow-http`). Now every address a name resolves to is checked when the
/// webhook is set and again at each delivery (src/cloud/api/webhook.rs tests), and only
/// public ones are reached unless the operator allows a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_point_inside_the_clouds_network() {
    let dir = tempfile::tempdir().unwrap();
    let settings = fieldgate::cloud::Settings {
        cert_lifetime: Duration::from_secs(3600),
        webhook: fieldgate::cloud::api::webhook::Policy {
            allow_http: true,
            allow_nets: vec![],
        },
        ..Default::default()
    };
    let cloud = Cloud::with_settings(&dir.path().join("cloud"), settings).await;
    let (api, acme, evil) = two_tenants(&cloud).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let targets = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("https://[::1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "http://0.0.0.0/".to_string(),
    ];
    let attack = async {
        let mut answers = Vec::new();
        for url in &targets {
            let r = api
                .call(
                    "PUT",
                    "/v1/tenants/evil/webhook",
                    &evil,
                    Some(json!({"url": url})),
                )
                .await;
            answers.push((url.clone(), r));
        }
        answers
    };
    for (url, r) in while_attacked(&api, &acme, attack).await {
        assert_eq!((r.0, code(&r)), (400, "bad_request"), "{url}: {r:?}");
        assert!(
            r.1["message"].as_str().unwrap().contains("may not reach"),
            "{url}: {r:?}"
        );
    }
    let r = api
        .call("GET", "/v1/tenants/evil/webhook", &evil, None)
        .await;
    assert_eq!(r.0, 404, "no webhook was set: {r:?}");
    assert!(
        listener.accept().is_err(),
        "the cloud connected to loopback"
    );
}

/// From reading: claim codes had no attempt limit. Now refused claims are counted per
/// caller, per address and per device: the eleventh wrong code within a minute is
/// refused unchecked (429), even if it is the right one, and every attempt is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_codes_cannot_be_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, evil) = two_tenants(&cloud).await;
    let sys = api.login("factory@fieldgate.example").await;
    let device = json!({"device": "pump-9", "claim_code": "PUMP-9-CODE"});
    api.ok("POST", "/v1/system/devices", &sys, Some(device))
        .await;
    let guess = |code: String| {
        let (api, evil) = (&api, &evil);
        async move {
            let body = json!({"device": "pump-9", "claim_code": code});
            api.call("POST", "/v1/tenants/evil/devices", evil, Some(body))
                .await
        }
    };
    let attack = async {
        let mut answers = Vec::new();
        for i in 0..12 {
            answers.push(guess(format!("GUESS-{i:04}")).await);
        }
        answers
    };
    let answers = while_attacked(&api, &acme, attack).await;
    for r in &answers[..10] {
        assert_eq!((r.0, code(r)), (403, "forbidden"), "{r:?}");
    }
    for r in &answers[10..] {
        assert_eq!((r.0, code(r)), (429, "too_many_attempts"), "{r:?}");
    }
    let r = guess("PUMP-9-CODE".into()).await;
    assert_eq!(
        (r.0, code(&r)),
        (429, "too_many_attempts"),
        "even the right code waits: {r:?}"
    );
    // The device's rightful owner, from another account, is held back as well for that
    // minute (attempts are counted per device): the price of a guess-proof code.
    let r = api
        .call(
            "POST",
            "/v1/tenants/acme/devices",
            &acme,
            Some(json!({"device": "pump-9", "claim_code": "PUMP-9-CODE"})),
        )
        .await;
    assert_eq!((r.0, code(&r)), (429, "too_many_attempts"), "{r:?}");
}

/// From reading: delegation ignored the parent key's web-origin binding: a key bound to
/// one web page minted children from any other. Now the origin is checked as for any
/// other use of the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_bound_key_mints_children_only_from_its_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, evil) = two_tenants(&cloud).await;
    let until = fieldgate::sample::now_ns() + 3_600_000_000_000;
    let parent = api
        .ok(
            "POST",
            "/v1/tenants/evil/keys",
            &evil,
            Some(json!({"actions": ["read", "issue"], "may_delegate": true,
                        "origins": ["https://dash.evil.example"], "not_after_ns": until})),
        )
        .await;
    let parent = Auth::Bearer(parent["token"].as_str().unwrap().into());
    let child = json!({"actions": ["read"], "origins": ["https://dash.evil.example"],
                       "not_after_ns": until - 1});
    let elsewhere = api.call_with(
        "POST",
        "/v1/keys",
        &parent,
        &[("origin", "https://attacker.example")],
        Some(child.clone()),
    );
    let r = while_attacked(&api, &acme, elsewhere).await;
    assert_eq!((r.0, code(&r)), (403, "key_origin_refused"), "{r:?}");
    let r = api
        .call_with(
            "POST",
            "/v1/keys",
            &parent,
            &[("origin", "https://dash.evil.example")],
            Some(child),
        )
        .await;
    assert_eq!(r.0, 201, "{r:?}");
}
