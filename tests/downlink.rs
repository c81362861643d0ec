//! The downlink: commands from the cloud to one gateway over the session the gateway
//! opened, readable by that gateway only, done once per id whatever is redelivered, and
//! answered; on the embedded endpoint and behind Mosquitto with the shipped ACL.

mod common;
use common::*;
use fieldgate::cloud::downlink::{Downlink, Record};
use rumqttc::{Event, Packet, QoS, SubscribeReasonCode};
use std::path::Path;
use std::time::Duration;

/// The command once it is no longer pending.
fn settled(d: &Downlink, id: &str) -> Record {
    wait_for(
        &format!("the reply to {id}"),
        Duration::from_secs(20),
        || d.get(id).unwrap().is_some_and(|r| r.state != "pending"),
    );
    d.get(id).unwrap().unwrap()
}

fn ping(d: &Downlink, device: &str) -> String {
    d.issue(
        &device.parse().unwrap(),
        "ping",
        &serde_json::json!({}),
        "test",
    )
    .unwrap()
}

/// The ids in a gateway's command journal.
fn journal(state: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(state.join("buffer.db")).unwrap();
    let mut q = c.prepare("SELECT id FROM commands ORDER BY id").unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A client of `device`'s certificate subscribes to `topics`: what the SUBACK says of
/// each, and every publish it receives within `listen`.
async fn subscribe_as(
    addr: std::net::SocketAddr,
    device: &str,
    certs: &Path,
    topics: &[String],
    listen: Duration,
    meanwhile: impl FnOnce(),
) -> (Vec<SubscribeReasonCode>, Vec<String>) {
    let (client, mut ev) = mqtt_client(
        addr,
        device,
        &certs.join("ca.crt"),
        Some((&certs.join("device.crt"), &certs.join("device.key"))),
    );
    for t in topics {
        client.subscribe(t, QoS::AtLeastOnce).await.unwrap();
    }
    let mut codes = Vec::new();
    let mut got = Vec::new();
    let mut meanwhile = Some(meanwhile);
    let end = tokio::time::Instant::now() + listen;
    while let Ok(ev) = tokio::time::timeout_at(end, ev.poll()).await {
        match ev {
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                codes.extend(a.return_codes);
                if codes.len() == topics.len() {
                    if let Some(f) = meanwhile.take() {
                        f();
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => got.push(p.topic),
            Ok(_) => {}
            Err(e) => panic!("{device}'s connection failed: {e}"),
        }
    }
    (codes, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_only_their_gateway_and_each_is_done_once() {
    let (dir, cloud) = Cloud::with_device("gw-a").await;
    let d = dir.path();
    let down = Downlink::with(cloud.db());
    let cfg = gateway_config(d, "gw-a", &[cloud.addr.to_string()], "", "");
    let mut gw = gateway(&cfg);

    // A command to a connected gateway is done and answered.
    let first = ping(&down, "gw-a");
    let r = settled(&down, &first);
    assert_eq!(r.state, "done", "{r:?}");
    assert_eq!(r.outcome["version"], env!("CARGO_PKG_VERSION"), "{r:?}");
    let done_ns = r.outcome["done_ns"].clone();

    // The same from the command line, which waits for the reply.
    let out = cloud
        .cli()
        .args(["command", "--device", "gw-a", "--kind", "ping"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["state"], "done", "{printed}");
    let out = cloud
        .cli()
        .args(["command", "--device", "gw/a", "--kind", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Another gateway's certificate cannot read gw-a's commands: the SUBACK refuses
    // it, and nothing of gw-a's reaches it, while its own topic is granted.
    cloud.dev_cert("gw-b", &d.join("certs-b"));
    let (codes, got) = subscribe_as(
        cloud.addr,
        "gw-b",
        &d.join("certs-b"),
        &["fg/v1/gw-a/cmd".into(), "fg/v1/gw-b/cmd".into()],
        Duration::from_secs(4),
        || {
            ping(&down, "gw-a");
        },
    )
    .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    assert!(got.is_empty(), "gw-b received {got:?}");

    // The reply of the first command was lost, as far as the cloud knows: it sends the
    // command again at the next birth. The gateway answers with what it stored and
    // does nothing again (the reply is the same, down to when it ran).
    cloud
        .db()
        .execute(
            "UPDATE commands SET state = 'pending', outcome = NULL, replied_ns = NULL WHERE id = $1",
            fieldgate::args![first.as_str()],
        )
        .unwrap();
    drop(gw);
    gw = gateway(&cfg);
    let again = settled(&down, &first);
    assert_eq!(again.state, "done");
    assert_eq!(again.outcome["done_ns"], done_ns, "{again:?}");
    assert!(again.sends >= 2, "{again:?}");
    assert_eq!(
        journal(&d.join("state"))
            .iter()
            .filter(|i| **i == first)
            .count(),
        1
    );

    // A command issued while the gateway is away is done when it comes back.
    drop(gw);
    let offline = ping(&down, "gw-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(down.get(&offline).unwrap().unwrap().state, "pending");
    let _gw = gateway(&cfg);
    assert_eq!(settled(&down, &offline).state, "done");

    // A kind this release does not know is answered as failed, naming what it knows.
    let unknown = down
        .issue(
            &"gw-a".parse().unwrap(),
            "reboot.now",
            &serde_json::json!({}),
            "test",
        )
        .unwrap();
    let r = settled(&down, &unknown);
    assert_eq!(r.state, "failed");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("unknown command kind `reboot.now`"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_mosquitto_the_shipped_acl_confines_commands_to_their_gateway() {
    need("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("cloud");
    let (pki, ingest) =
        fieldgate::cloud::open(&data, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    for (dev, sub) in [
        ("gw-m1", "certs"),
        ("gw-m2", "m2"),
        ("fieldgate-ingest", "ingest"),
    ] {
        pki.dev_cert(&dev.parse().unwrap(), &d.join(sub)).unwrap();
    }
    let broker = Mosquitto::start(&d.join("broker"), &pki, &shipped_acl());
    let (stop, bridge) = bridge(&broker, &pki, &d.join("ingest"), ingest);
    let down = Downlink::with(
        fieldgate::cloud::sql::Db::sqlite(&fieldgate::cloud::store_path(&data)).unwrap(),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", broker.port).parse().unwrap();
    let cfg = gateway_config(d, "gw-m1", &[addr.to_string()], "", "");
    let _gw = gateway(&cfg);

    let first = ping(&down, "gw-m1");
    let r = settled(&down, &first);
    assert_eq!(r.state, "done", "{r:?}");

    // gw-m2 neither reads gw-m1's commands nor forges one: a command written to
    // gw-m1's topic with gw-m2's certificate never reaches gw-m1's journal.
    let (client, mut ev) = mqtt_client(
        addr,
        "gw-m2",
        &d.join("m2/ca.crt"),
        Some((&d.join("m2/device.crt"), &d.join("m2/device.key"))),
    );
    let forged = fieldgate::downlink::Command::new("forged-1", "ping", serde_json::json!({}));
    client
        .publish("fg/v1/gw-m1/cmd", QoS::AtLeastOnce, false, forged.encode())
        .await
        .unwrap();
    let _ = until_puback(&mut ev).await;
    let (_, got) = subscribe_as(
        addr,
        "gw-m2-reader",
        &d.join("m2"),
        &["fg/v1/gw-m1/cmd".into()],
        Duration::from_secs(4),
        || {
            ping(&down, "gw-m1");
        },
    )
    .await;
    assert!(got.is_empty(), "gw-m2 read {got:?}");
    // The cloud's second command arrives; the forged one never did.
    wait_for("the second command", Duration::from_secs(20), || {
        journal(&d.join("state")).len() == 2
    });
    let ids = journal(&d.join("state"));
    assert!(!ids.contains(&"forged-1".to_string()), "{ids:?}");

    stop.cancel();
    let _ = bridge.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_api_need_the_operator_role_and_are_audited() {
    use common::api::*;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(86400)).await;
    let (api, owner) = acme_with_pump(&cloud).await;
    let sys = api.login("factory@fieldgate.example").await;
    for role in ["operator", "viewer"] {
        api.ok(
            "POST",
            "/v1/system/users",
            &sys,
            Some(json!({"email": format!("{role}@acme.example"), "password": PASSWORD, "tenant": "acme", "role": role})),
        )
        .await;
    }
    let operator = api.login("operator@acme.example").await;
    let viewer = api.login("viewer@acme.example").await;
    api.register("owner@other.example", "other").await;
    let stranger = api.login("owner@other.example").await;
    cloud.dev_cert("pump-1", &d.join("certs"));
    let cfg = gateway_config(d, "pump-1", &[cloud.addr.to_string()], "", "");
    let _gw = gateway(&cfg);

    let path = "/v1/tenants/acme/devices/pump-1/commands";
    let ping = json!({"kind": "ping"});
    let (status, r) = api.call("POST", path, &viewer, Some(ping.clone())).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (403, Some("forbidden")),
        "{r}"
    );
    let (status, r) = api
        .call(
            "POST",
            "/v1/tenants/other/devices/pump-1/commands",
            &stranger,
            Some(ping.clone()),
        )
        .await;
    assert!(status == 403 || status == 404, "{status} {r}");
    let (status, r) = api
        .call("POST", path, &operator, Some(json!({"kind": "Bad Kind!"})))
        .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("bad_request")),
        "{r}"
    );

    let (status, issued) = api.call("POST", path, &operator, Some(ping)).await;
    assert_eq!(status, 202, "{issued}");
    assert_eq!(issued["state"], "pending");
    assert_eq!(issued["issued_by"], "user:operator@acme.example");
    let id = issued["id"].as_str().unwrap().to_string();
    let one = format!("{path}/{id}");
    let mut done = json!(null);
    for _ in 0..100 {
        done = api.ok("GET", &one, &viewer, None).await;
        if done["state"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["outcome"]["version"], env!("CARGO_PKG_VERSION"));
    let listed = api.ok("GET", path, &viewer, None).await;
    assert_eq!(listed[0]["id"], id.as_str());
    let (status, _) = api
        .call("GET", &format!("{path}/cmd-000"), &viewer, None)
        .await;
    assert_eq!(status, 404);

    // Both decisions, the refused and the granted, are in the tenant's audit log.
    let audit = api.ok("GET", "/v1/tenants/acme/audit", &owner, None).await;
    let commands: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "command")
        .map(|e| (e["actor"].clone(), e["outcome"].clone()))
        .collect();
    assert!(
        commands.contains(&(json!("user:viewer@acme.example"), json!("refused"))),
        "{commands:?}"
    );
    assert!(
        commands.contains(&(json!("user:operator@acme.example"), json!("allowed"))),
        "{commands:?}"
    );
}
