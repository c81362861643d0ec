//! The TPM identity against a real TPM 2.0 simulator (swtpm, one per test): the key is
//! made once and found again after the daemon's and the TPM's restarts, it signs inside
//! the TPM (verified outside with the public key alone), its private part cannot be read
//! out, and every kind of bad TPM setup gets a clear error.

mod common;
use common::*;
use fieldgate::identity::{self, Backend, IdentityConfig, Key};

fn cfg(tpm: &Swtpm) -> IdentityConfig {
    IdentityConfig {
        backend: Backend::Tpm,
        tcti: tpm.tcti(),
        ..Default::default()
    }
}

fn verify(key: &dyn Key, msg: &[u8], sig: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        key.public_point(),
    )
    .verify(msg, sig)
    .is_ok()
}

#[test]
fn the_key_is_created_once_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut tpm = Swtpm::start(&dir.path().join("tpm"));
    let c = cfg(&tpm);
    let first = identity::tpm::TpmKey::open(&c, true).unwrap();
    assert!(first.created);
    let sig = first.sign(b"hello").unwrap();
    assert!(
        verify(&first, b"hello", &sig),
        "signature made in the TPM verifies"
    );
    assert!(!verify(&first, b"hellO", &sig));
    let fp = identity::fingerprint(&first);
    drop(first);

    // The daemon restarts: the same key, not a new one.
    let again = identity::tpm::TpmKey::open(&c, true).unwrap();
    assert!(!again.created);
    assert_eq!(identity::fingerprint(&again), fp);
    drop(again);

    // The TPM restarts (a reboot) on the same state.
    tpm.restart();
    let rebooted = identity::tpm::TpmKey::open(&c, false).unwrap();
    assert_eq!(identity::fingerprint(&rebooted), fp);
    let sig = rebooted.sign(b"after reboot").unwrap();
    assert!(verify(&rebooted, b"after reboot", &sig));
}

#[test]
fn the_private_key_cannot_leave_the_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&dir.path().join("tpm"));
    let key = identity::tpm::TpmKey::open(&cfg(&tpm), true).unwrap();
    let a = &key.attributes;
    assert!(a.fixed_tpm, "fixedTPM: cannot be duplicated to another TPM");
    assert!(
        a.fixed_parent,
        "fixedParent: cannot be re-wrapped under another parent"
    );
    assert!(
        a.sensitive_data_origin,
        "sensitiveDataOrigin: the TPM made the private part"
    );
    assert!(a.sign && !a.decrypt, "a signing key only");
    // What the TPM hands out is the public area; from outside only signatures come.
    let out = std::process::Command::new("tpm2_readpublic")
        .args(["-c", "0x81000f47", "-T", &tpm.tcti()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixedtpm") && text.contains("fixedparent"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("private"), "{text}");
}

#[test]
fn bad_tpm_setups_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&dir.path().join("tpm"));
    let err = |c: IdentityConfig| match identity::tpm::TpmKey::open(&c, true) {
        Ok(_) => panic!("opened with {c:?}"),
        Err(e) => e.to_string(),
    };
    // No TPM device.
    let e = err(IdentityConfig {
        tcti: "device:/dev/tpmrm9".into(),
        ..cfg(&tpm)
    });
    assert!(e.contains("cannot reach the TPM"), "{e}");
    // A TCTI string that is not one.
    let e = err(IdentityConfig {
        tcti: "tpm-over-carrier-pigeon".into(),
        ..cfg(&tpm)
    });
    assert!(e.contains("is not a TCTI string"), "{e}");
    // Nobody listening.
    let e = err(IdentityConfig {
        tcti: format!("swtpm:host=127.0.0.1,port={}", free_port()),
        ..cfg(&tpm)
    });
    assert!(e.contains("cannot reach the TPM"), "{e}");
    // A handle outside the owner's persistent range.
    let e = err(IdentityConfig {
        handle: 0x8180_0000,
        ..cfg(&tpm)
    });
    assert!(e.contains("not in the owner's persistent range"), "{e}");
    // A handle occupied by another key: an RSA storage key put there by tpm2-tools.
    let ctx = dir.path().join("primary.ctx");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .args(["-T", &tpm.tcti()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-G",
        "rsa2048",
        "-c",
        ctx.to_str().unwrap(),
    ]);
    run(&[
        "tpm2_evictcontrol",
        "-C",
        "o",
        "-c",
        ctx.to_str().unwrap(),
        "0x81000100",
    ]);
    let e = err(IdentityConfig {
        handle: 0x8100_0100,
        ..cfg(&tpm)
    });
    assert!(
        e.contains("handle 0x81000100 holds another key (RSA"),
        "{e}"
    );
    // Without create, a missing key is named.
    let e = match identity::tpm::TpmKey::open(
        &IdentityConfig {
            handle: 0x8100_0200,
            ..cfg(&tpm)
        },
        false,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!(),
    };
    assert!(e.contains("no key at handle 0x81000200"), "{e}");
}

#[test]
fn a_wrong_auth_value_and_lockout_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&dir.path().join("tpm"));
    let right = IdentityConfig {
        auth: Some("s3cret".into()),
        ..cfg(&tpm)
    };
    let key = identity::tpm::TpmKey::open(&right, true).unwrap();
    assert!(key.sign(b"x").is_ok());
    drop(key);
    // One try before lockout, a long recovery.
    let out = std::process::Command::new("tpm2_dictionarylockout")
        .args([
            "--setup-parameters",
            "--max-tries=2",
            "--recovery-time=600",
            "--lockout-recovery-time=600",
            "-T",
            &tpm.tcti(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = identity::tpm::TpmKey::open(
        &IdentityConfig {
            auth: Some("guess".into()),
            ..right.clone()
        },
        false,
    )
    .unwrap();
    let e = wrong.sign(b"x").unwrap_err().to_string();
    assert!(e.contains("auth value is wrong"), "{e}");
    let mut last = String::new();
    for _ in 0..3 {
        last = wrong.sign(b"x").unwrap_err().to_string();
    }
    assert!(last.contains("dictionary-attack lockout"), "{last}");
}

/// The cloud's software MakeCredential against real TPMs: the TPM holding the EK and the
/// key recovers the credential; another TPM cannot, even with the same EK public key.
#[test]
fn credentials_made_in_software_activate_only_in_their_tpm() {
    use fieldgate::cloud::credential::{attr, make_credential, parse_ecc_public};
    let dir = tempfile::tempdir().unwrap();
    let tpm_a = Swtpm::start(&dir.path().join("a"));
    let tpm_b = Swtpm::start(&dir.path().join("b"));
    let a = identity::tpm::TpmKey::open(&cfg(&tpm_a), true).unwrap();
    let b = identity::tpm::TpmKey::open(&cfg(&tpm_b), true).unwrap();
    let ek_a = a.ek_point().unwrap();
    assert_eq!(
        ek_a,
        a.ek_point().unwrap(),
        "the EK is the same key every time"
    );
    assert_ne!(ek_a, b.ek_point().unwrap());

    let public = parse_ecc_public(&a.key_public().unwrap()).unwrap();
    assert_eq!(
        public.point,
        a.public_point(),
        "the public area is the signing key's"
    );
    for bit in [
        attr::FIXED_TPM,
        attr::FIXED_PARENT,
        attr::SENSITIVE_DATA_ORIGIN,
        attr::SIGN,
    ] {
        assert!(public.attributes & bit != 0);
    }
    assert_eq!(public.attributes & attr::DECRYPT, 0);

    let credential = b"a secret for tpm a only, 32 byt".to_vec();
    let (blob, secret) = make_credential(&ek_a, &public.name, &credential).unwrap();
    assert_eq!(
        a.activate_credential(blob.clone(), secret.clone()).unwrap(),
        credential
    );
    // The same challenge in another TPM (a clone with a copied config): refused.
    let e = b.activate_credential(blob, secret).unwrap_err().to_string();
    assert!(e.contains("credential activation failed"), "{e}");
    // Bound to the key's name: a credential for another name does not open either.
    let mut other = public.name.clone();
    other[5] ^= 1;
    let (blob, secret) = make_credential(&ek_a, &other, &credential).unwrap();
    let e = a.activate_credential(blob, secret).unwrap_err().to_string();
    assert!(e.contains("credential activation failed"), "{e}");
}
