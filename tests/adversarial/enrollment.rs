//! Attacks on enrollment and renewal, which anyone can reach without an account.

use crate::bystander::{code, two_tenants, while_attacked};
use crate::common::api::{Auth, Client};
use crate::common::Cloud;
use serde_json::json;
use std::time::Duration;

/// A CSR for `cn` from a software key made here.
fn software_csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

/// An endorsement key (any P-256 point will do: nothing here answers its challenge)
/// registered for `device` at manufacture.
fn register_an_ek(cloud: &Cloud, device: &str) -> Vec<u8> {
    let mut ek = vec![4u8];
    ek.extend((1..=64).map(|i| i as u8));
    cloud.registry().register_ek(device, &ek).unwrap();
    ek
}

/// Finding 1 (critical): enrollment and renewal for a revoked device once held the
/// registry's lock while recording the refusal took it again. The first such request
/// hung every later enroll, activate, renew, device detail and revoke; a few hundred
/// filled the blocking pool, and the server no longer stopped. Now: a storm of them is
/// refused, others are served throughout, a new gateway still enrolls, and the server
/// stops when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_revoked_device_are_refused_without_stalling_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, _) = two_tenants(&cloud).await;
    cloud
        .registry()
        .revoke("gw-stolen", "reported stolen")
        .unwrap();
    cloud.dev_cert("gw-stolen", &dir.path().join("stolen"));
    let stolen = Auth::Device(
        dir.path().join("stolen/device.crt"),
        dir.path().join("stolen/device.key"),
    );
    let csr = software_csr("gw-stolen");

    let storm = async {
        let mut calls = Vec::new();
        for i in 0..48 {
            let (api, stolen, csr) = (
                Client {
                    url: api.url.clone(),
                    ca: api.ca.clone(),
                },
                stolen.clone(),
                csr.clone(),
            );
            calls.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    // The honest revoked gateway retrying its renewal.
                    api.call("POST", "/v1/renew", &stolen, Some(json!({"csr": csr})))
                        .await
                } else {
                    let body = json!({"device_id": "gw-stolen", "csr": csr, "token": "00"});
                    api.call("POST", "/v1/enroll", &Auth::None, Some(body))
                        .await
                }
            }));
        }
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        answers
    };
    let answers = while_attacked(&api, &acme, storm).await;
    for r in &answers {
        assert_eq!((r.0, code(r)), (403, "revoked"), "{r:?}");
    }
    let refusals = cloud
        .registry()
        .events(Some("gw-stolen"))
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "refused")
        .count();
    assert_eq!(refusals, answers.len(), "every refusal is recorded");

    // A new gateway still enrolls.
    let token = cloud.token("gw-new");
    let body = json!({"device_id": "gw-new", "csr": software_csr("gw-new"), "token": token});
    let r = api
        .call("POST", "/v1/enroll", &Auth::None, Some(body))
        .await;
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1["certificate"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // And the server stops when told.
    tokio::time::timeout(Duration::from_secs(10), cloud.stop())
        .await
        .expect("the cloud stops within 10 s");
}

/// Finding 4 (high): with an endorsement key registered for a device, the
/// credential-activation challenge ran only if the request carried the `tpm` field; a
/// leaked token and a software key without it got a certificate. Registering an EK now
/// makes the proof mandatory for that device, and the token is not spent by the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_registered_tpm_cannot_enroll_without_proving_it() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, _) = two_tenants(&cloud).await;
    register_an_ek(&cloud, "gw-tpm");
    let token = cloud.token("gw-tpm");
    let body = json!({"device_id": "gw-tpm", "csr": software_csr("gw-tpm"), "token": token});
    let r = while_attacked(
        &api,
        &acme,
        api.call("POST", "/v1/enroll", &Auth::None, Some(body)),
    )
    .await;
    assert_eq!((r.0, code(&r)), (403, "tpm_proof_required"), "{r:?}");
    assert!(r.1.get("certificate").is_none());
    let events = cloud.registry().events(Some("gw-tpm")).unwrap();
    assert!(events.iter().all(|e| e.event != "enrolled"), "{events:?}");
    assert!(events
        .iter()
        .any(|e| e.event == "refused" && e.detail.starts_with("tpm_proof_required")));
    let unspent = cloud
        .registry()
        .check_token(&token, "gw-tpm", b"any key")
        .unwrap();
    assert_eq!(unspent, Ok(fieldgate::cloud::registry::Spent::First));
}

/// Finding 5 (medium): renewal took any new key in the CSR without TPM evidence, even
/// under `--require-tpm`: one use of a stolen TPM key (its certificate) yielded an
/// exportable key renewed for ever. A device that must prove its TPM now renews for a
/// new key only through credential activation (the honest rotation:
/// `tpm_enroll::renewal_with_key_rotation_makes_a_new_tpm_key_each_time`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_cannot_launder_a_tpm_identity_into_a_software_key() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::with_api(&dir.path().join("cloud"), Duration::from_secs(3600)).await;
    let (api, acme, _) = two_tenants(&cloud).await;
    let ek = register_an_ek(&cloud, "gw-tpm");
    // The thief holds a valid certificate of the device (and the use of its key).
    cloud.dev_cert("gw-tpm", &dir.path().join("stolen"));
    let stolen = Auth::Device(
        dir.path().join("stolen/device.crt"),
        dir.path().join("stolen/device.key"),
    );
    let body = json!({"csr": software_csr("gw-tpm")});
    let r = while_attacked(
        &api,
        &acme,
        api.call("POST", "/v1/renew", &stolen, Some(body)),
    )
    .await;
    assert_eq!((r.0, code(&r)), (403, "tpm_proof_required"), "{r:?}");
    // Claiming TPM evidence for a software key gets a challenge no one here can answer.
    let fake = json!({"csr": software_csr("gw-tpm"),
                      "tpm": {"ek": fieldgate::hex::encode(&ek), "key_public": "00"}});
    let r = api.call("POST", "/v1/renew", &stolen, Some(fake)).await;
    assert_eq!(r.0, 400, "{r:?}");
    assert!(r.1.get("certificate").is_none());
    let events = cloud.registry().events(Some("gw-tpm")).unwrap();
    assert!(events.iter().all(|e| e.event != "renewed"), "{events:?}");
}
