//! The bystander: tenant `acme`'s owner reading its device (which takes the IAM and the
//! registry), over and over while an attack runs. Every read must answer 200 within
//! `IN_TIME`; an attack that stalls others fails the test.

use crate::common::api::{acme_with_pump, Auth, Client};
use crate::common::Cloud;
use serde_json::{json, Value as Json};
use std::future::Future;
use std::time::Duration;

/// Long enough for a loaded CI machine, far shorter than any stall found so far.
pub const IN_TIME: Duration = Duration::from_secs(10);

/// A cloud with tenant `acme` (the bystander, with device `pump-1`) and tenant `evil`
/// (the attacker, with device `evil-1`): (client, acme's owner, evil's owner).
pub async fn two_tenants(cloud: &Cloud) -> (Client, Auth, Auth) {
    let (api, acme) = acme_with_pump(cloud).await;
    let sys = api.login("factory@fieldgate.example").await;
    api.register("owner@evil.example", "evil").await;
    let evil = api.login("owner@evil.example").await;
    let device = json!({"device": "evil-1", "claim_code": "EVIL-1-CODE"});
    api.ok("POST", "/v1/system/devices", &sys, Some(device.clone()))
        .await;
    api.ok("POST", "/v1/tenants/evil/devices", &evil, Some(device))
        .await;
    (api, acme, evil)
}

/// Runs `attack` while the bystander reads; returns what the attack returned. Panics if
/// any bystander read failed or took longer than `IN_TIME`, or none was made.
pub async fn while_attacked<T>(
    api: &Client,
    bystander: &Auth,
    attack: impl Future<Output = T>,
) -> T {
    let client = Client {
        url: api.url.clone(),
        ca: api.ca.clone(),
    };
    let auth = bystander.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let done = stop.clone();
    let reader = tokio::spawn(async move {
        let mut answered = 0;
        // Give the attack a head start, so that the reads meet it at its worst.
        tokio::time::sleep(Duration::from_millis(200)).await;
        loop {
            let read = client.call("GET", "/v1/tenants/acme/devices/pump-1", &auth, None);
            match tokio::time::timeout(IN_TIME, read).await {
                Ok((200, _)) => answered += 1,
                Ok((status, body)) => return Err(format!("the bystander got {status} {body}")),
                Err(_) => {
                    return Err(format!(
                        "the bystander waited over {IN_TIME:?} ({answered} reads answered before)"
                    ))
                }
            }
            if done.is_cancelled() {
                return Ok(answered);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut reader = reader;
    tokio::pin!(attack);
    let out = tokio::select! {
        out = &mut attack => out,
        // The bystander gave up first: the attack stalls the service (a deadlock would
        // otherwise hang the test itself).
        r = &mut reader => stalled(&r.unwrap().err().unwrap_or_else(|| "the bystander stopped".into())),
    };
    stop.cancel();
    match reader.await.unwrap() {
        Ok(n) => assert!(n > 0, "no bystander read was made"),
        Err(why) => panic!("{why}"),
    }
    out
}

/// The service is stalled: the attack's requests may hold threads the test runtime would
/// wait for at its end, forever. Say so at once and end the test process.
fn stalled(why: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "STALLED: {why}");
    std::process::exit(101)
}

/// The stable code of a refusal.
pub fn code(r: &(u16, Json)) -> &str {
    r.1["error"].as_str().unwrap_or_default()
}
