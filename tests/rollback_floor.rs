//! The anti-rollback floor in a TPM NV counter (swtpm): it only goes up, survives a
//! reboot and a wiped state directory (it never lived there), and a release below it is
//! refused; a counter left by another program does not shift it.

mod common;
use common::*;
use fieldgate::update::floor::Floor;

/// Another program's NV counter, incremented `n` times: a new counter starts at the
/// highest value any counter of the TPM had, which the floor must not take for its own.
fn foreign_counter(tcti: &str, n: u32) {
    use std::str::FromStr;
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::constants::nv_index_type::NvIndexType;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::NvPublicBuilder;
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap())
            .unwrap();
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let attributes = NvIndexAttributesBuilder::new()
        .with_owner_write(true)
        .with_owner_read(true)
        .with_nv_index_type(NvIndexType::Counter)
        .build()
        .unwrap();
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(0x0150_0100).unwrap())
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(8)
        .build()
        .unwrap();
    let h = ctx.nv_define_space(Provision::Owner, None, public).unwrap();
    for _ in 0..n {
        ctx.nv_increment(NvAuth::Owner, h).unwrap();
    }
}

#[test]
fn the_tpm_floor_only_goes_up_and_outlives_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut tpm = Swtpm::start(&dir.path().join("tpm"));
    foreign_counter(&tpm.tcti(), 25);
    let floor = Floor::Tpm(tpm.tcti());
    assert_eq!(floor.read().unwrap(), 0, "a new floor starts at 0");
    assert_eq!(floor.raise(2).unwrap(), 2);
    assert_eq!(floor.raise(1).unwrap(), 2, "never lowered");

    // A reboot, and a gateway whose state directory was wiped: the floor is in the TPM.
    tpm.restart();
    let floor = Floor::Tpm(tpm.tcti());
    assert_eq!(floor.read().unwrap(), 2);

    // A release below the floor is refused; at the floor it passes.
    use fieldgate::release::{
        generate_key, Envelope, Install, Refusal, Release, Role, Root, SigningKey,
    };
    let k = SigningKey::from_pkcs8(&generate_key().unwrap()).unwrap();
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(k.id(), fieldgate::hex::encode(&k.public()));
    let role = Role {
        keys: vec![k.id()],
        threshold: 1,
    };
    let root = Root {
        kind: "fieldgate-root".into(),
        v: 1,
        version: 1,
        expires_ns: i64::MAX,
        keys,
        root: role.clone(),
        release: role,
    };
    let sign = |doc: &dyn Erased| {
        let mut e = Envelope {
            signed: doc.json(),
            signatures: vec![],
        };
        k.sign(&mut e);
        e.to_bytes()
    };
    let root = Root::trust_first(&sign(&root)).unwrap();
    let now = fieldgate::sample::now_ns();
    for (index, ok) in [(1, false), (2, true)] {
        let r = Release {
            kind: "fieldgate-release".into(),
            v: 1,
            version: "1.0.0".into(),
            hardware: "hw".into(),
            image: fieldgate::release::image::describe(b"x", Install::Binary),
            expires_ns: i64::MAX,
            rollback_index: index,
        };
        let got = root.verify_release(&sign(&r), now, "hw", None, floor.read().unwrap());
        match ok {
            true => assert!(got.is_ok(), "{got:?}"),
            false => assert_eq!(got, Err(Refusal::BelowFloor { index: 1, floor: 2 })),
        }
    }
}

/// Serializes either document for signing.
trait Erased {
    fn json(&self) -> String;
}
impl<T: serde::Serialize> Erased for T {
    fn json(&self) -> String {
        serde_json::to_string(self).unwrap()
    }
}
