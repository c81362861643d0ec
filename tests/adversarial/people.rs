//! Attacks by and on people's accounts: an admin reaching above itself, a reset that
//! leaves the old password's sessions alive, argon2 floods from anonymous callers.

use crate::bystander::{code, two_tenants, while_attacked};
use crate::common::api::{Auth, Client, PASSWORD};
use crate::common::Cloud;
use serde_json::json;
use std::time::Duration;

async fn cloud(dir: &std::path::Path) -> Cloud {
    Cloud::with_api(&dir.join("cloud"), Duration::from_secs(3600)).await
}

/// A user of `tenant` with `role`, registered by the system account: signed in.
async fn member(api: &Client, email: &str, tenant: &str, role: &str) -> Auth {
    let sys = api.login("factory@fieldgate.example").await;
    let body = json!({"email": email, "password": PASSWORD, "tenant": tenant, "role": role});
    api.ok("POST", "/v1/system/users", &sys, Some(body)).await;
    api.login(email).await
}

async fn set_role(api: &Client, actor: &Auth, email: &str, role: &str) -> (u16, serde_json::Value) {
    let body = json!({"email": email, "role": role});
    api.call("POST", "/v1/tenants/evil/users", actor, Some(body))
        .await
}

/// Finding 8 (medium): an admin could demote the owner, leaving the tenant without
/// one. Now no one changes the role of someone at or above their own, no one raises
/// their own, and a tenant always keeps an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_reach_above_itself_and_a_tenant_keeps_an_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path()).await;
    let (api, acme, owner) = two_tenants(&cloud).await;
    let admin = member(&api, "admin@evil.example", "evil", "admin").await;
    member(&api, "admin2@evil.example", "evil", "admin").await;
    member(&api, "viewer@evil.example", "evil", "viewer").await;
    let attack = async {
        vec![
            set_role(&api, &admin, "owner@evil.example", "viewer").await,
            set_role(&api, &admin, "admin2@evil.example", "viewer").await,
            set_role(&api, &admin, "admin@evil.example", "owner").await,
        ]
    };
    for r in while_attacked(&api, &acme, attack).await {
        assert_eq!((r.0, code(&r)), (403, "forbidden"), "{r:?}");
    }
    // What an admin may do: roles below its own, up to its own.
    let r = set_role(&api, &admin, "viewer@evil.example", "admin").await;
    assert_eq!(r.0, 200, "{r:?}");
    // The last owner cannot step down; with a second owner, it can.
    let r = set_role(&api, &owner, "owner@evil.example", "admin").await;
    assert_eq!((r.0, code(&r)), (409, "conflict"), "{r:?}");
    let r = set_role(&api, &owner, "admin@evil.example", "owner").await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = set_role(&api, &owner, "owner@evil.example", "admin").await;
    assert_eq!(r.0, 200, "{r:?}");
    let members = api.ok("GET", "/v1/tenants/evil/users", &admin, None).await;
    let owners: Vec<_> = members
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "owner")
        .map(|m| m["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owners, ["admin@evil.example"], "{members}");
}

/// Finding 9 (medium): a password reset ended nothing: the old sessions stayed valid
/// and the other reset tokens outstanding still worked. Now a reset ends both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_every_session_and_every_other_token() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path()).await;
    let (api, acme, stolen) = two_tenants(&cloud).await;
    let sys = api.login("factory@fieldgate.example").await;
    let reset = || async {
        let r = api
            .ok(
                "POST",
                "/v1/password-resets",
                &sys,
                Some(json!({"email": "owner@evil.example"})),
            )
            .await;
        r["token"].as_str().unwrap().to_string()
    };
    let (first, second) = (reset().await, reset().await);
    let confirm = |token: String| {
        let api = &api;
        async move {
            let body = json!({"token": token, "password": "a brand new passphrase"});
            api.call(
                "POST",
                "/v1/password-resets/confirm",
                &Auth::None,
                Some(body),
            )
            .await
        }
    };
    let r = while_attacked(&api, &acme, confirm(first)).await;
    assert_eq!(r.0, 204, "{r:?}");
    let r = api.call("GET", "/v1/me", &stolen, None).await;
    assert_eq!(r.0, 401, "the session of the old password is over: {r:?}");
    let r = confirm(second).await;
    assert_eq!((r.0, code(&r)), (400, "token_invalid"), "{r:?}");
    let r = api
        .call(
            "POST",
            "/v1/sessions",
            &Auth::None,
            Some(json!({"email": "owner@evil.example", "password": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(r.0, 201, "{r:?}");
}

/// From reading: registration and reset confirmation hashed a password (argon2) for
/// anyone, before the token was checked, under the one IAM lock. Now a token is checked
/// before any hashing, registrations are throttled per address, hashing runs off the
/// lock a few at a time, and others (who need no password) are served meanwhile; a
/// person signing in during the flood is served too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_password_floods_stall_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path()).await;
    let (api, acme, _) = two_tenants(&cloud).await;
    let long = "x".repeat(1000);
    let flood = async {
        let mut calls = Vec::new();
        for i in 0..60 {
            let api = Client {
                url: api.url.clone(),
                ca: api.ca.clone(),
            };
            let long = long.clone();
            calls.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    let body = json!({"email": format!("bot{i}@spam.example"), "password": long,
                                      "tenant": format!("spam-{i}")});
                    api.call("POST", "/v1/users", &Auth::None, Some(body)).await
                } else {
                    let body = json!({"token": format!("{i:048x}"), "password": long});
                    api.call(
                        "POST",
                        "/v1/password-resets/confirm",
                        &Auth::None,
                        Some(body),
                    )
                    .await
                }
            }));
        }
        // Meanwhile acme's owner signs in.
        let login = api.call(
            "POST",
            "/v1/sessions",
            &Auth::None,
            Some(json!({"email": "owner@acme.example", "password": PASSWORD})),
        );
        let login = tokio::time::timeout(Duration::from_secs(15), login).await;
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        (login, answers)
    };
    let (login, answers) = while_attacked(&api, &acme, flood).await;
    let login = login.expect("a sign-in during the flood is answered");
    assert_eq!(login.0, 201, "{login:?}");
    let mut registered = 0;
    for r in &answers {
        match (r.0, code(r)) {
            (201, _) => registered += 1,
            (429, "too_many_attempts") | (400, "token_invalid") | (503, "busy") => {}
            other => panic!("{other:?} {r:?}"),
        }
    }
    assert!(
        registered <= 20,
        "{registered} registrations from one address in a minute"
    );
}
