//! Signed release metadata: each attack of the TUF list that metadata alone decides is
//! refused, by name, before any byte of an image would be used; and the offline tools
//! (`fieldgate release …`) make what a gateway accepts.

use fieldgate::release::image::{describe, ImageCheck};
use fieldgate::release::{
    generate_key, Envelope, Install, Refusal, Release, Role, Root, SigningKey, FORMAT,
};
use std::collections::BTreeMap;

const HOUR: i64 = 3_600_000_000_000;

fn key() -> SigningKey {
    SigningKey::from_pkcs8(&generate_key().unwrap()).unwrap()
}

fn now() -> i64 {
    fieldgate::sample::now_ns()
}

fn root(
    version: u64,
    root_keys: &[&SigningKey],
    k: usize,
    release_keys: &[&SigningKey],
    r: usize,
) -> Root {
    let mut keys = BTreeMap::new();
    for s in root_keys.iter().chain(release_keys) {
        keys.insert(s.id(), fieldgate::hex::encode(&s.public()));
    }
    Root {
        kind: "fieldgate-root".into(),
        v: FORMAT,
        version,
        expires_ns: now() + 24 * HOUR,
        keys,
        root: Role {
            keys: root_keys.iter().map(|s| s.id()).collect(),
            threshold: k,
        },
        release: Role {
            keys: release_keys.iter().map(|s| s.id()).collect(),
            threshold: r,
        },
    }
}

fn signed<T: serde::Serialize>(doc: &T, by: &[&SigningKey]) -> Vec<u8> {
    let mut env = Envelope::of(doc);
    for k in by {
        k.sign(&mut env);
    }
    env.to_bytes()
}

fn release(version: &str, image: &[u8]) -> Release {
    Release {
        kind: "fieldgate-release".into(),
        v: FORMAT,
        version: version.into(),
        hardware: "fieldgate-x86-64-v1".into(),
        image: describe(image, Install::Binary),
        expires_ns: now() + HOUR,
        rollback_index: 4,
    }
}

fn check_image(r: &Release, bytes: &[u8]) -> Result<(), Refusal> {
    let mut c = ImageCheck::new(&r.image);
    for chunk in bytes.chunks(1000) {
        c.feed(chunk)?;
    }
    c.finish()
}

const HW: &str = "fieldgate-x86-64-v1";

#[test]
fn every_metadata_attack_is_refused_by_name() {
    let (r1, r2, r3) = (key(), key(), key());
    let (rel1, rel2) = (key(), key());
    // Root: 2 of 3 root keys; releases: 2 of 2.
    let trusted = root(1, &[&r1, &r2, &r3], 2, &[&rel1, &rel2], 2);
    let trusted_bytes = signed(&trusted, &[&r1, &r3]);
    let trusted = Root::trust_first(&trusted_bytes).unwrap();
    let image = vec![7u8; 10_000];
    let good = release("1.4.0", &image);
    let installed: semver::Version = "1.3.0".parse().unwrap();
    let verify = |bytes: &[u8]| trusted.verify_release(bytes, now(), HW, Some(&installed), 4);

    // The good one passes, with its image.
    let ok = verify(&signed(&good, &[&rel1, &rel2])).unwrap();
    check_image(&ok, &image).unwrap();

    // No signature, too few for the threshold, the same key twice, a wrong key.
    for (by, valid) in [
        (vec![], 0),
        (vec![&rel1], 1),
        (vec![&rel1, &rel1], 1),
        (vec![&r1, &r2], 0),
    ] {
        assert_eq!(
            verify(&signed(&good, &by)),
            Err(Refusal::Threshold {
                what: "the release",
                valid,
                threshold: 2
            })
        );
    }
    // A signed document edited afterwards: its signatures no longer count.
    let mut env: Envelope = serde_json::from_slice(&signed(&good, &[&rel1, &rel2])).unwrap();
    env.signed = env.signed.replace("1.4.0", "9.9.9");
    assert!(matches!(
        verify(&env.to_bytes()),
        Err(Refusal::Threshold { valid: 0, .. })
    ));
    // Expired (an indefinite freeze: a mirror keeps serving old metadata).
    let mut stale = good.clone();
    stale.expires_ns = now() - 1;
    let e = verify(&signed(&stale, &[&rel1, &rel2])).unwrap_err();
    assert!(matches!(e, Refusal::Expired { .. }), "{e}");
    assert!(e.to_string().contains("expired at"), "{e}");
    // Older, and the same version (rollback).
    for v in ["1.2.9", "1.3.0"] {
        let e = verify(&signed(&release(v, &image), &[&rel1, &rel2])).unwrap_err();
        assert!(matches!(e, Refusal::Older { .. }), "{v}: {e}");
    }
    // 1.10 comes after 1.9.
    let nine: semver::Version = "1.9.0".parse().unwrap();
    trusted
        .verify_release(
            &signed(&release("1.10.0", &image), &[&rel1, &rel2]),
            now(),
            HW,
            Some(&nine),
            0,
        )
        .unwrap();
    // Below the rollback floor.
    let mut barred = release("1.5.0", &image);
    barred.rollback_index = 3;
    assert_eq!(
        verify(&signed(&barred, &[&rel1, &rel2])),
        Err(Refusal::BelowFloor { index: 3, floor: 4 })
    );
    // Other hardware.
    let mut other = good.clone();
    other.hardware = "fieldgate-arm64-v1".into();
    assert!(matches!(
        verify(&signed(&other, &[&rel1, &rel2])),
        Err(Refusal::Hardware { .. })
    ));
    // A flipped byte in the image.
    let mut flipped = image.clone();
    flipped[5000] ^= 1;
    assert!(matches!(
        check_image(&ok, &flipped),
        Err(Refusal::Hash { .. })
    ));
    // An image longer than declared (endless data): refused at the first byte too many.
    let mut longer = image.clone();
    longer.push(0);
    let mut c = ImageCheck::new(&ok.image);
    c.feed(&image).unwrap();
    assert_eq!(c.feed(&[0]), Err(Refusal::TooLong { declared: 10_000 }));
    assert!(matches!(
        check_image(&ok, &longer),
        Err(Refusal::TooLong { .. })
    ));
    // Mix and match: another release's image under this metadata.
    let other_image = vec![8u8; 10_000];
    assert!(matches!(
        check_image(&ok, &other_image),
        Err(Refusal::Hash { .. })
    ));
    assert!(matches!(
        check_image(&ok, &image[..9000]),
        Err(Refusal::TooShort { .. })
    ));
}

#[test]
fn keys_rotate_only_with_the_old_threshold_and_a_rotated_out_key_signs_nothing() {
    let (r1, r2, r3, r4) = (key(), key(), key(), key());
    let (old_rel, new_rel) = (key(), key());
    let v1 = Root::trust_first(&signed(
        &root(1, &[&r1, &r2, &r3], 2, &[&old_rel], 1),
        &[&r1, &r2],
    ))
    .unwrap();
    // Root 2 replaces root key r3 by r4 and the release key.
    let next = root(2, &[&r1, &r2, &r4], 2, &[&new_rel], 1);
    // Signed only by the new keys, or by one old key: refused.
    for by in [vec![&r4], vec![&r1, &r4]] {
        let e = v1.rotate(&signed(&next, &by)).unwrap_err();
        assert!(matches!(e, Refusal::Threshold { .. }), "{e}");
    }
    // Skipping a version: refused.
    let skip = root(3, &[&r1, &r2, &r4], 2, &[&new_rel], 1);
    assert_eq!(
        v1.rotate(&signed(&skip, &[&r1, &r2, &r4])),
        Err(Refusal::RootSequence { trusted: 1, got: 3 })
    );
    // By two old root keys and two of its own: accepted.
    let v2_bytes = signed(&next, &[&r1, &r2, &r4]);
    let v2 = v1.follow(&[v2_bytes], now()).unwrap();
    assert_eq!(v2.version, 2);
    // The rotated-out release key signs nothing any more; the new one does.
    let image = b"new daemon".to_vec();
    let r = release("2.0.0", &image);
    assert!(matches!(
        v2.verify_release(&signed(&r, &[&old_rel]), now(), HW, None, 0),
        Err(Refusal::Threshold { valid: 0, .. })
    ));
    v2.verify_release(&signed(&r, &[&new_rel]), now(), HW, None, 0)
        .unwrap();
    // An expired newest root is refused (the chain may pass through expired ones).
    let mut dead = root(3, &[&r1, &r2, &r4], 2, &[&new_rel], 1);
    dead.expires_ns = now() - 1;
    let e = v2
        .follow(&[signed(&dead, &[&r1, &r2, &r4])], now())
        .unwrap_err();
    assert!(matches!(e, Refusal::Expired { .. }), "{e}");
    // A root whose threshold no key set can meet is refused as malformed.
    let impossible = root(1, &[&r1], 2, &[&new_rel], 1);
    assert!(matches!(
        Root::trust_first(&signed(&impossible, &[&r1])),
        Err(Refusal::Malformed { .. })
    ));
}

#[test]
fn the_offline_tools_make_what_a_gateway_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldgate"))
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for k in ["root-a", "root-b", "root-c", "rel-a"] {
        let (code, out) = run(&["release", "keygen", "--out", k]);
        assert_eq!(code, Some(0), "{out}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.join("root-a.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_ne!(
        run(&["release", "keygen", "--out", "root-a"]).0,
        Some(0),
        "a key is never overwritten"
    );
    std::fs::write(
        d.join("root.toml"),
        "expires = \"365d\"\n[root]\nkeys = [\"root-a.pub\", \"root-b.pub\", \"root-c.pub\"]\nthreshold = 2\n[release]\nkeys = [\"rel-a.pub\"]\nthreshold = 1\n",
    )
    .unwrap();
    assert_eq!(
        run(&[
            "release",
            "root",
            "--template",
            "root.toml",
            "--out",
            "root.json"
        ])
        .0,
        Some(0)
    );
    // Threshold signing: two holders sign in turn.
    assert_eq!(
        run(&["release", "sign", "--key", "root-a.key", "root.json"]).0,
        Some(0)
    );
    assert_eq!(
        run(&["release", "sign", "--key", "root-c.key", "root.json"]).0,
        Some(0)
    );
    std::fs::write(d.join("daemon"), vec![1u8; 50_000]).unwrap();
    let (code, out) = run(&[
        "release",
        "manifest",
        "--version",
        "1.4.0",
        "--hardware",
        HW,
        "--image",
        "daemon",
        "--rollback-index",
        "2",
        "--out",
        "release.json",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let verify = |extra: &[&str]| {
        let mut a = vec![
            "release",
            "verify",
            "--root",
            "root.json",
            "--release",
            "release.json",
            "--image",
            "daemon",
            "--hardware",
            HW,
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "unsigned: {out}");
    assert!(out.contains("signed by 0 of the keys"), "{out}");
    assert_eq!(
        run(&["release", "sign", "--key", "rel-a.key", "release.json"]).0,
        Some(0)
    );
    let (code, out) = verify(&["--installed", "1.3.2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: release 1.4.0"), "{out}");
    let (code, out) = verify(&["--installed", "1.4.0"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("versions only go forward"), "{out}");
    let (code, out) = verify(&["--floor", "3"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("below this gateway's rollback floor 3"),
        "{out}"
    );
    let mut img = std::fs::read(d.join("daemon")).unwrap();
    img[100] ^= 0x40;
    std::fs::write(d.join("daemon"), &img).unwrap();
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("SHA-256"), "{out}");
}
