//! The TPM identity end to end, against swtpm and a running fieldgate-cloud with its
//! HTTPS API: first power-on enrollment with a one-time token, data over mutual TLS with
//! the handshake signed in the TPM, restarts of the daemon and of the TPM, refused
//! tokens and CSRs (each recorded), renewal on schedule, and revocation at connect.

mod common;
use common::*;
use fieldgate::enrollment::EnrollRequest;
use fieldgate::identity::enroll::{post_enroll, EnrollError};
use std::path::Path;
use std::time::Duration;

/// A gateway config with a TPM identity that enrolls itself, and a CAN replay as its
/// data source (realtime, looping: data keeps coming).
fn tpm_gateway(dir: &Path, device: &str, cloud: &Cloud, tpm: &Swtpm) -> std::path::PathBuf {
    enrolling_gateway(
        dir,
        device,
        cloud,
        &format!("backend = \"tpm\"\ntcti = \"{}\"", tpm.tcti()),
        "",
    )
}

/// A TPM gateway on 9-second certificates (renewal due 6 s after issue), run until it
/// enrolled and renewed twice.
struct Renewing {
    cloud: Cloud,
    tpm: Swtpm,
    config: std::path::PathBuf,
    gateway: Proc,
    first_cert: String,
    first_fingerprint: serde_json::Value,
}

/// With `prove`, the device's EK is registered, so enrollment and every new key are
/// certified by credential activation.
async fn renewing(d: &Path, device: &str, rotate: bool, prove: bool) -> Renewing {
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(9)).await;
    let tpm = Swtpm::start(&d.join("tpm"));
    let config = tpm_gateway(d, device, &cloud, &tpm);
    if prove {
        register_ek(&cloud, device, &config);
    }
    if rotate {
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "token_file = \"bootstrap.token\"",
            "token_file = \"bootstrap.token\"\nrotate_key = true",
        );
        std::fs::write(&config, text).unwrap();
    }
    std::fs::write(d.join("bootstrap.token"), cloud.token(device)).unwrap();
    let gateway = gateway(&config);
    wait_for("enrollment", Duration::from_secs(30), || {
        d.join("state/device.crt").exists()
    });
    let first_cert = std::fs::read_to_string(d.join("state/device.crt")).unwrap();
    let first_fingerprint = identity_json(&config)["fingerprint"].clone();
    wait_for("two renewals", Duration::from_secs(30), || {
        events(&cloud, device)
            .iter()
            .filter(|e| e.starts_with("renewed"))
            .count()
            >= 2
    });
    Renewing {
        cloud,
        tpm,
        config,
        gateway,
        first_cert,
        first_fingerprint,
    }
}

/// Manufacture: the EK of the gateway's TPM registered for `device`.
fn register_ek(cloud: &Cloud, device: &str, cfg: &Path) -> String {
    let ek = fieldgate_out(&["identity", "ek", "--config", cfg.to_str().unwrap()]);
    assert!(ek.status.success(), "{ek:?}");
    let ek = String::from_utf8(ek.stdout).unwrap().trim().to_string();
    let reg = cloud
        .cli()
        .args(["register", device, "--ek", &ek])
        .output()
        .unwrap();
    assert!(reg.status.success(), "{reg:?}");
    ek
}

fn identity_json(cfg: &Path) -> serde_json::Value {
    let out = fieldgate_out(&[
        "identity",
        "show",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A CSR for `cn` from a key made here, not the TPM's: another box with the token.
fn foreign_csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn events(cloud: &Cloud, device: &str) -> Vec<String> {
    cloud
        .registry()
        .events(Some(device))
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.event, e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_power_on_enrolls_and_sends_over_a_tpm_signed_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(3600)).await;
    let mut tpm = Swtpm::start(&d.join("tpm"));
    let cfg = tpm_gateway(d, "tpm-gw", &cloud, &tpm);
    let token = cloud.token("tpm-gw");
    std::fs::write(d.join("bootstrap.token"), &token).unwrap();

    let mut gw = gateway(&cfg);
    wait_for("data from the TPM gateway", Duration::from_secs(30), || {
        cloud.rows("tpm-gw").len() > 5
    });
    let ev = events(&cloud, "tpm-gw");
    assert!(
        ev.iter().any(|e| e.starts_with("enrolled: serial")),
        "{ev:?}"
    );
    let shown = identity_json(&cfg);
    assert_eq!(shown["backend"], "tpm");
    assert_eq!(shown["certificate"]["matches_key"], true, "{shown}");
    assert!(shown["certificate"]["subject"]
        .as_str()
        .unwrap()
        .contains("CN=tpm-gw"));
    let fingerprint = shown["fingerprint"].clone();
    gw.terminate();

    // The TPM and the daemon restart: the same key, no new enrollment, data flows.
    tpm.restart();
    let before = cloud.rows("tpm-gw").len();
    let mut gw = gateway(&cfg);
    wait_for("data after the restarts", Duration::from_secs(30), || {
        cloud.rows("tpm-gw").len() > before + 5
    });
    assert_eq!(identity_json(&cfg)["fingerprint"], fingerprint);
    let enrolled = events(&cloud, "tpm-gw")
        .iter()
        .filter(|e| e.starts_with("enrolled"))
        .count();
    assert_eq!(enrolled, 1, "the key and certificate were kept");

    // The token worked once: replaying it with another key is refused and recorded.
    let ca = d.join("certs/ca.crt");
    let replay = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "tpm-gw".into(),
            csr: foreign_csr("tpm-gw"),
            token: token.clone(),
            tpm: None,
        },
    )
    .await;
    assert!(
        matches!(&replay, Err(EnrollError::Refused { code, .. }) if code == "token_used"),
        "{replay:?}"
    );

    // Revoked: refused at the next connect, and its data is not stored.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate-cloud"))
        .arg("--data-dir")
        .arg(&cloud.data)
        .args(["revoke", "tpm-gw", "--reason", "stolen from site 4"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut cloud = cloud;
    cloud.stop().await; // drops the current connection
    let stored = cloud.rows("tpm-gw").len();
    cloud.restart().await;
    wait_for("a refused reconnect", Duration::from_secs(20), || {
        events(&cloud, "tpm-gw")
            .iter()
            .any(|e| e.starts_with("refused: revoked: connection refused"))
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cloud.rows("tpm-gw").len(),
        stored,
        "nothing stored after the revocation"
    );
    let st = status(d).unwrap();
    assert!(st["uplink"]["connected_to"].is_null(), "{st}");
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_foreign_csrs_are_refused_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(3600)).await;
    let tpm = Swtpm::start(&d.join("tpm"));
    let ca = cloud.data.join("pki/ca.crt");
    let key = tpm.key();
    let csr = |cn: &str| fieldgate::identity::csr_pem(key.clone(), cn).unwrap();
    let refused = |r: Result<_, EnrollError>| match r {
        Err(EnrollError::Refused { code, message }) => format!("{code}: {message}"),
        other => panic!("{other:?}"),
    };
    let token = cloud.token("gw-a");
    // A forged token.
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-a".into(),
            csr: csr("gw-a"),
            token: "00".repeat(24),
            tpm: None,
        },
    )
    .await;
    assert!(refused(r).starts_with("token_unknown"));
    // A token of another device.
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-b".into(),
            csr: csr("gw-b"),
            token: token.clone(),
            tpm: None,
        },
    )
    .await;
    assert!(refused(r).starts_with("token_device_mismatch"));
    // A CSR naming another device than the token's: refused before the token is
    // looked at, so the token stays good.
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-a".into(),
            csr: csr("gw-z"),
            token: token.clone(),
            tpm: None,
        },
    )
    .await;
    let m = refused(r);
    assert!(
        m.starts_with("csr_device_mismatch: the CSR names `gw-z`"),
        "{m}"
    );
    // Garbage for a CSR.
    let t2 = cloud.token("gw-a");
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-a".into(),
            csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            token: t2,
            tpm: None,
        },
    )
    .await;
    assert!(refused(r).starts_with("csr_invalid"));
    // The good CSR with that token works. The same key may ask again (a gateway that
    // lost power before storing its certificate); another key may not.
    for _ in 0..2 {
        let ok = post_enroll(
            &cloud.api_url(),
            &ca,
            &EnrollRequest {
                device_id: "gw-a".into(),
                csr: csr("gw-a"),
                token: token.clone(),
                tpm: None,
            },
        )
        .await
        .unwrap();
        assert!(
            matches!(&ok, fieldgate::enrollment::EnrollAnswer::Certificate(c) if c.certificate.contains("BEGIN CERTIFICATE")),
            "{ok:?}"
        );
    }
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-a".into(),
            csr: foreign_csr("gw-a"),
            token,
            tpm: None,
        },
    )
    .await;
    assert!(refused(r).starts_with("token_used"));
    let ev = events(&cloud, "gw-a");
    let issued: Vec<_> = ev
        .iter()
        .filter(|e| e.starts_with("enrolled"))
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(issued, ["enrolled", "enrolled-again"], "{ev:?}");
    let refusals = ev.iter().filter(|e| e.starts_with("refused")).count();
    assert_eq!(refusals, 4, "{ev:?}");
    assert_eq!(
        events(&cloud, "gw-b")
            .iter()
            .filter(|e| e.starts_with("refused"))
            .count(),
        1
    );

    // An oversize body: the API answers 413 without reading it and closes, so the client
    // sees the 413 or, when it is still writing, a closed connection. Either way nothing
    // is stored and the API keeps serving.
    let big = EnrollRequest {
        device_id: "gw-a".into(),
        csr: "x".repeat(200_000),
        token: "t".into(),
        tpm: None,
    };
    let r = post_enroll(&cloud.api_url(), &ca, &big).await;
    let refused_early = match &r {
        Err(EnrollError::Refused { code, .. }) => code == "http_413",
        Err(EnrollError::Connect { why, .. }) => {
            why.contains("Broken pipe") || why.contains("reset") || why.contains("closed")
        }
        _ => false,
    };
    assert!(refused_early, "{r:?}");
    let after = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "gw-a".into(),
            csr: csr("gw-a"),
            token: "00".repeat(24),
            tpm: None,
        },
    )
    .await;
    assert!(
        refused(after).starts_with("token_unknown"),
        "the API still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = renewing(d, "short-gw", false, false).await;
    let (cloud, mut gw) = (r.cloud, r.gateway);
    let first = r.first_cert;
    let now = std::fs::read_to_string(d.join("state/device.crt")).unwrap();
    assert_ne!(first, now, "the certificate file was replaced");
    // Data keeps flowing on the renewed certificates (the first has expired by now).
    let before = cloud.rows("short-gw").len();
    wait_for(
        "data on the renewed certificate",
        Duration::from_secs(20),
        || cloud.rows("short-gw").len() > before + 5,
    );
    gw.terminate();
}

/// Anti-cloning: with TPM proof required, the device's endorsement key is registered at
/// manufacture and enrollment is a credential only that TPM can activate, for that key.
/// A second box (another swtpm) with the right token fails; so does one that claims the
/// registered EK; a file key is refused outright. The token survives the failed attempts
/// and the real device then enrolls. Every refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tpm_proof_required_only_the_registered_tpm_can_enroll() {
    use fieldgate::enrollment::{ActivateRequest, EnrollAnswer};
    use fieldgate::hex::encode as hex;
    use fieldgate::identity::enroll::{answer_challenge, evidence, post_activate};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_settings(
        &d.join("cloud"),
        fieldgate::cloud::Settings {
            require_tpm: true,
            ..Default::default()
        },
    )
    .await;
    let tpm_a = Swtpm::start(&d.join("tpm-a"));
    let tpm_b = Swtpm::start(&d.join("tpm-b"));
    let (da, db) = (d.join("a"), d.join("b"));
    let cfg_a = tpm_gateway(&da, "pump-7", &cloud, &tpm_a);
    let cfg_b = tpm_gateway(&db, "pump-7", &cloud, &tpm_b); // a clone: same config, other TPM

    // Manufacture: the EK of the real device's TPM is registered.
    let ek = register_ek(&cloud, "pump-7", &cfg_a);
    let token = cloud.token("pump-7");

    // 1. The clone, with the right token, shows its own TPM: refused.
    let out = fieldgate_out(&[
        "enroll",
        "--config",
        cfg_b.to_str().unwrap(),
        "--token",
        &token,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ek_mismatch"), "{err}");

    // 2. The clone claims the registered EK: it gets a challenge its TPM cannot answer.
    let key_b = tpm_b.key();
    let mut ev = evidence(key_b.as_ref()).unwrap().unwrap();
    ev.ek = ek.clone();
    let req = EnrollRequest {
        device_id: "pump-7".into(),
        csr: fieldgate::identity::csr_pem(key_b.clone(), "pump-7").unwrap(),
        token: token.clone(),
        tpm: Some(ev),
    };
    let ca = cloud.data.join("pki/ca.crt");
    let EnrollAnswer::Challenge(ch) = post_enroll(&cloud.api_url(), &ca, &req).await.unwrap()
    else {
        panic!("expected a challenge");
    };
    let e = answer_challenge(key_b.as_ref(), &cloud.api_url(), &ca, &ch)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("credential activation failed"), "{e}");
    // Guessing the credential instead: refused.
    let guess = post_activate(
        &cloud.api_url(),
        &ca,
        &ActivateRequest {
            challenge: ch.challenge.clone(),
            credential: hex(&[0u8; 32]),
        },
    )
    .await;
    assert!(
        matches!(&guess, Err(EnrollError::Refused { code, .. }) if code == "activation_failed"),
        "{guess:?}"
    );

    // 3. A file key is refused when TPM proof is required.
    let file_dir = d.join("file");
    std::fs::create_dir_all(&file_dir).unwrap();
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(file_dir.join("k.pem"), pem).unwrap();
    let file_key: std::sync::Arc<dyn fieldgate::identity::Key> = std::sync::Arc::new(
        fieldgate::identity::file::FileKey::load(&file_dir.join("k.pem")).unwrap(),
    );
    let r = post_enroll(
        &cloud.api_url(),
        &ca,
        &EnrollRequest {
            device_id: "pump-7".into(),
            csr: fieldgate::identity::csr_pem(file_key, "pump-7").unwrap(),
            token: token.clone(),
            tpm: None,
        },
    )
    .await;
    assert!(
        matches!(&r, Err(EnrollError::Refused { code, .. }) if code == "tpm_proof_required"),
        "{r:?}"
    );

    // 4. The real device, with the same token (not spent by the failures): enrolled.
    let out = fieldgate_out(&[
        "enroll",
        "--config",
        cfg_a.to_str().unwrap(),
        "--token",
        &token,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = identity_json(&cfg_a);
    assert_eq!(shown["certificate"]["matches_key"], true);
    // ... and the token is spent now: the clone cannot use it either.
    let out = fieldgate_out(&[
        "enroll",
        "--config",
        cfg_b.to_str().unwrap(),
        "--token",
        &token,
    ]);
    assert!(!out.status.success());

    let ev = events(&cloud, "pump-7");
    for needle in [
        "refused: ek_mismatch",
        "challenged",
        "refused: activation_failed",
        "refused: tpm_proof_required",
        "enrolled: serial",
    ] {
        assert!(
            ev.iter().any(|e| e.starts_with(needle)),
            "{needle} missing in {ev:?}"
        );
    }
}

/// A certificate that expired, and one that is garbage: `fieldgate check`, `identity
/// show` and the running daemon each say what is wrong, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_corrupted_certificates_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(2)).await;
    let tpm = Swtpm::start(&d.join("tpm"));
    let cfg = tpm_gateway(d, "old-gw", &cloud, &tpm);
    let token = cloud.token("old-gw");
    let out = fieldgate_out(&[
        "enroll",
        "--config",
        cfg.to_str().unwrap(),
        "--token",
        &token,
    ]);
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let check = fieldgate_out(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(
        text.contains("FAIL  client certificate") && text.contains("not valid now"),
        "{text}"
    );
    let show = fieldgate_out(&["identity", "show", "--config", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("(NOT valid now)"));

    std::fs::write(
        d.join("state/device.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let check = fieldgate_out(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("FAIL  client certificate"), "{text}");
    let show = fieldgate_out(&[
        "identity",
        "show",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(show.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert!(
        doc["certificate_error"]
            .as_str()
            .unwrap()
            .contains("device.crt"),
        "{doc}"
    );

    // The daemon keeps running and says why it cannot connect.
    let mut gw = gateway(&cfg);
    wait_for("the uplink's error", Duration::from_secs(15), || {
        status(d).is_some_and(|s| {
            s["uplink"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("device.crt"))
        })
    });
    assert!(gw.0.try_wait().unwrap().is_none(), "still running");
    gw.terminate();
}

/// Key rotation: each renewal makes a new key in the TPM (alternating between two
/// handles), certifies it over mutual TLS with the old one, and removes the old one.
/// The device's EK is registered, so each new key is proven by credential activation
/// (issue 11, finding 5: renewal once took any new key without TPM evidence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_key_rotation_makes_a_new_tpm_key_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = renewing(d, "rot-gw", true, true).await;
    let (cloud, tpm, cfg, mut gw) = (r.cloud, r.tpm, r.config, r.gateway);
    let first = r.first_fingerprint;
    let keys: std::collections::BTreeSet<String> = events(&cloud, "rot-gw")
        .iter()
        .filter(|e| e.starts_with("enrolled") || e.starts_with("renewed"))
        .map(|e| e.rsplit("key ").next().unwrap().to_string())
        .collect();
    assert!(keys.len() >= 3, "a new key each time: {keys:?}");
    let challenged = events(&cloud, "rot-gw")
        .iter()
        .filter(|e| e.starts_with("challenged"))
        .count();
    assert!(
        challenged >= 3,
        "enrollment and each rotation were challenged"
    );
    let now = identity_json(&cfg);
    assert_ne!(now["fingerprint"], first);
    assert_eq!(now["certificate"]["matches_key"], true, "{now}");
    // Only the current key is left in the TPM.
    let handles = std::process::Command::new("tpm2_getcap")
        .args(["handles-persistent", "-T", &tpm.tcti()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&handles.stdout);
    assert_eq!(listed.matches("0x81000F4").count(), 1, "{listed}");
    let before = cloud.rows("rot-gw").len();
    wait_for("data on the rotated key", Duration::from_secs(20), || {
        cloud.rows("rot-gw").len() > before + 5
    });
    gw.terminate();
}

/// `fieldgate identity csr`: a CSR for the device id, signed in the TPM, that an
/// independent tool (openssl) verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_csr_is_signed_in_the_tpm() {
    need("openssl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::with_api(&d.join("cloud"), Duration::from_secs(3600)).await;
    let tpm = Swtpm::start(&d.join("tpm"));
    let cfg = tpm_gateway(d, "csr-gw", &cloud, &tpm);
    let csr = d.join("gw.csr");
    let out = fieldgate_out(&[
        "identity",
        "csr",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        csr.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let check = std::process::Command::new("openssl")
        .args([
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-noout",
            "-verify",
            "-subject",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("CN = csr-gw") || text.contains("CN=csr-gw"),
        "{text}"
    );
    // The CSR's key is the TPM key.
    let shown = identity_json(&cfg);
    let pubkey = std::process::Command::new("openssl")
        .args(["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"])
        .output()
        .unwrap();
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&pubkey.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    use sha2::Digest;
    let fp: String = sha2::Sha256::digest(&der.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(shown["fingerprint"], fp.as_str());
}
