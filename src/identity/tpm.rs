//! The TPM backend: an ECC P-256 signing key created once under the owner hierarchy and
//! made persistent at a configured handle. Its private part never leaves the TPM: it is
//! created there (sensitiveDataOrigin), bound to this TPM and its parent (fixedTPM,
//! fixedParent: no duplication), and used only to sign (sign set, decrypt clear).
//!
//! A tss-esapi context is not thread-safe, so one thread owns it and serves signatures
//! over a channel; the rest of the daemon holds a cheap handle.

use super::{Backend, IdentityConfig, IdentityError, Key};
use std::str::FromStr;
use std::sync::mpsc;
use tss_esapi::{
    attributes::ObjectAttributes,
    constants::response_code::Tss2ResponseCodeKind,
    handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{
        algorithm::HashingAlgorithm, ecc::EccCurve, resource_handles::Hierarchy,
        resource_handles::Provision, session_handles::AuthSession,
    },
    structures::{
        Auth, CapabilityData, Digest, EccScheme, HashScheme, HashcheckTicket, Public, Signature,
        SignatureScheme,
    },
    tcti_ldr::TctiNameConf,
    Context,
};

/// What the key's object attributes say, for `fieldgate identity show` and the tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyAttributes {
    pub fixed_tpm: bool,
    pub fixed_parent: bool,
    pub sensitive_data_origin: bool,
    pub sign: bool,
    pub decrypt: bool,
    pub restricted: bool,
    pub user_with_auth: bool,
}

impl From<ObjectAttributes> for KeyAttributes {
    fn from(a: ObjectAttributes) -> Self {
        KeyAttributes {
            fixed_tpm: a.fixed_tpm(),
            fixed_parent: a.fixed_parent(),
            sensitive_data_origin: a.sensitive_data_origin(),
            sign: a.sign_encrypt(),
            decrypt: a.decrypt(),
            restricted: a.restricted(),
            user_with_auth: a.user_with_auth(),
        }
    }
}

type Reply = mpsc::SyncSender<Result<Vec<u8>, String>>;

enum Job {
    Sign {
        digest: [u8; 32],
        reply: Reply,
    },
    /// The endorsement key's public point (ECC P-256, the TCG default template).
    EkPoint {
        reply: Reply,
    },
    /// The key's public area (TPMT_PUBLIC): its hash is the key's name.
    KeyPublic {
        reply: Reply,
    },
    /// TPM2_ActivateCredential with the key and the EK.
    Activate {
        blob: Vec<u8>,
        secret: Vec<u8>,
        reply: Reply,
    },
    /// Remove the key's persistent handle.
    Evict {
        reply: Reply,
    },
}

/// A handle to the key in the TPM.
pub struct TpmKey {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    point: Vec<u8>,
    tcti: String,
    handle: u32,
    /// Whether this open created the key.
    pub created: bool,
    pub attributes: KeyAttributes,
}

/// Explains a TPM error in terms of what to do about it.
pub(crate) fn explain(e: tss_esapi::Error) -> String {
    match e {
        tss_esapi::Error::Tss2Error(rc) => match rc.kind() {
            Some(Tss2ResponseCodeKind::Lockout) => "the TPM is in dictionary-attack lockout (too many wrong auth values): wait for the lockout to expire, or reset it with the lockout authorization (tpm2_dictionarylockout --clear-lockout)".into(),
            Some(Tss2ResponseCodeKind::AuthFail) | Some(Tss2ResponseCodeKind::BadAuth) => "the key's auth value is wrong (identity.auth); each failure counts towards the TPM's dictionary-attack lockout".into(),
            Some(Tss2ResponseCodeKind::ObjectMemory) | Some(Tss2ResponseCodeKind::NvSpace) => format!("the TPM is out of memory for objects ({e}): flush transient objects (tpm2_flushcontext -t)"),
            _ => format!("{e}"),
        },
        other => other.to_string(),
    }
}

/// The key's template. A primary key derives from the owner seed and its template, so
/// a rotated key gets random bytes in the template's `unique` field to be a new key.
fn key_template(fresh: bool) -> Result<Public, tss_esapi::Error> {
    use tss_esapi::{
        attributes::ObjectAttributesBuilder,
        interface_types::algorithm::PublicAlgorithm,
        structures::{EccParameter, EccPoint, PublicBuilder, PublicEccParametersBuilder},
    };
    let unique = if fresh {
        EccPoint::new(
            EccParameter::try_from(rand::random::<[u8; 32]>().to_vec())?,
            EccParameter::try_from(rand::random::<[u8; 32]>().to_vec())?,
        )
    } else {
        EccPoint::default()
    };
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(
            ObjectAttributesBuilder::new()
                .with_fixed_tpm(true)
                .with_fixed_parent(true)
                .with_sensitive_data_origin(true)
                .with_user_with_auth(true)
                .with_decrypt(false)
                .with_sign_encrypt(true)
                .with_restricted(false)
                .build()?,
        )
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(unique)
        .build()
}

/// How to open the key at a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It must exist.
    Existing,
    /// Make it if the handle is free.
    Create,
    /// Make a new key there, replacing a fieldgate key found at the handle (rotation).
    Fresh,
}

/// The uncompressed point of an ECC public area, if it is a P-256 signing key.
fn p256_point(public: &Public) -> Option<Vec<u8>> {
    match public {
        Public::Ecc {
            parameters, unique, ..
        } if parameters.ecc_curve() == EccCurve::NistP256 => {
            let (x, y) = (unique.x().value(), unique.y().value());
            let mut p = vec![4u8];
            p.extend(std::iter::repeat_n(0, 32usize.saturating_sub(x.len())));
            p.extend_from_slice(x);
            p.extend(std::iter::repeat_n(0, 32usize.saturating_sub(y.len())));
            p.extend_from_slice(y);
            Some(p)
        }
        _ => None,
    }
}

/// Whether `handle` is among the TPM's persistent objects.
fn persistent_exists(ctx: &mut Context, handle: u32) -> Result<bool, tss_esapi::Error> {
    let (data, _) = ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, handle, 1)?;
    Ok(match data {
        CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == handle),
        _ => false,
    })
}

struct Opened {
    ctx: Context,
    key: KeyHandle,
    handle: u32,
    point: Vec<u8>,
    created: bool,
    attributes: KeyAttributes,
}

fn open_in_tpm(cfg: &IdentityConfig, mode: Mode) -> Result<Opened, String> {
    let create = mode != Mode::Existing;
    let tcti = TctiNameConf::from_str(&cfg.tcti).map_err(|e| {
        format!("`{}` is not a TCTI string ({e}); examples: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`", cfg.tcti)
    })?;
    let mut ctx = Context::new(tcti).map_err(|e| {
        format!("cannot reach the TPM ({}): is the device present and readable by this user (group tss), or the simulator running?", explain(e))
    })?;
    if !(0x8100_0000..=0x817F_FFFF).contains(&cfg.handle) {
        return Err(format!(
            "handle {:#x} is not in the owner's persistent range 0x81000000-0x817fffff",
            cfg.handle
        ));
    }
    let persistent = PersistentTpmHandle::new(cfg.handle).map_err(explain)?;
    let auth = match &cfg.auth {
        Some(a) => {
            Some(Auth::try_from(a.as_bytes().to_vec()).map_err(|e| format!("identity.auth: {e}"))?)
        }
        None => None,
    };
    let mut exists = persistent_exists(&mut ctx, cfg.handle).map_err(explain)?;
    if exists && mode == Mode::Fresh {
        // Only a key of ours is replaced: anything else at the handle is refused below.
        let obj = ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(persistent)))
            .map_err(explain)?;
        let (public, _, _) = ctx
            .execute_without_session(|c| c.read_public(obj.into()))
            .map_err(explain)?;
        let a = KeyAttributes::from(public.object_attributes());
        if p256_point(&public).is_some() && a.sign && !a.decrypt && a.fixed_tpm {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(Provision::Owner, obj, persistent.into())
            })
            .map_err(|e| format!("removing the old key at {:#x}: {}", cfg.handle, explain(e)))?;
            exists = false;
        }
    }
    let (key, created): (KeyHandle, bool) = if exists {
        let obj = ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(persistent)))
            .map_err(explain)?;
        (obj.into(), false)
    } else if !create {
        return Err(format!(
            "no key at handle {:#x}: run `fieldgate identity init` (or start the daemon once) to create it",
            cfg.handle
        ));
    } else {
        let template = key_template(mode == Mode::Fresh).map_err(explain)?;
        let primary = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, auth.clone(), None, None, None)
            })
            .map_err(|e| format!("creating the key: {}", explain(e)))?;
        let persisted = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(
                    Provision::Owner,
                    primary.key_handle.into(),
                    persistent.into(),
                )
            })
            .map_err(|e| {
                format!(
                    "making the key persistent at {:#x}: {}",
                    cfg.handle,
                    explain(e)
                )
            });
        // The transient copy is not needed either way.
        let _ = ctx.flush_context(primary.key_handle.into());
        (persisted?.into(), true)
    };
    let (public, _, _) = ctx
        .execute_without_session(|c| c.read_public(key))
        .map_err(explain)?;
    let attributes = KeyAttributes::from(public.object_attributes());
    let point = p256_point(&public);
    let ours = point.is_some()
        && attributes.sign
        && !attributes.decrypt
        && !attributes.restricted
        && attributes.fixed_tpm
        && attributes.fixed_parent
        && attributes.sensitive_data_origin;
    if !ours {
        return Err(format!(
            "handle {:#x} holds another key ({}, {attributes:?}): not an ECC P-256 signing key made in this TPM. Choose another identity.handle, or remove that key if it is unused (tpm2_evictcontrol -C o -c {:#x})",
            cfg.handle,
            match &public {
                Public::Rsa { .. } => "RSA",
                Public::Ecc { .. } => "ECC on another curve or with other attributes",
                _ => "not an asymmetric key",
            },
            cfg.handle
        ));
    }
    if let Some(a) = auth {
        ctx.tr_set_auth(ObjectHandle::from(key), a)
            .map_err(explain)?;
    }
    Ok(Opened {
        ctx,
        key,
        handle: cfg.handle,
        point: point.unwrap_or_default(),
        created,
        attributes,
    })
}

fn sign_in_tpm(ctx: &mut Context, key: KeyHandle, digest: [u8; 32]) -> Result<Vec<u8>, String> {
    let ticket = HashcheckTicket::try_from(tss_esapi::tss2_esys::TPMT_TK_HASHCHECK {
        tag: tss_esapi::constants::tss::TPM2_ST_HASHCHECK,
        hierarchy: tss_esapi::constants::tss::TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(explain)?;
    let digest = Digest::try_from(digest.to_vec()).map_err(explain)?;
    let sig = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.sign(
                key,
                digest,
                SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                },
                ticket,
            )
        })
        .map_err(explain)?;
    match sig {
        Signature::EcDsa(s) => Ok(crate::der::ecdsa_signature(
            s.signature_r().value(),
            s.signature_s().value(),
        )),
        other => Err(format!("the TPM returned a {other:?} signature")),
    }
}

/// The EK, created from the TCG default ECC P-256 template (the same key every time:
/// it derives from the endorsement seed).
fn load_ek(ctx: &mut Context) -> Result<KeyHandle, String> {
    // (It opens its own session: none may be set around it.)
    ctx.execute_without_session(|c| {
        tss_esapi::abstraction::ek::create_ek_object_2(
            c,
            tss_esapi::abstraction::AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            None,
        )
    })
    .map_err(|e| format!("loading the endorsement key: {}", explain(e)))
}

fn ek_point(ctx: &mut Context) -> Result<Vec<u8>, String> {
    let ek = load_ek(ctx)?;
    let public = ctx.execute_without_session(|c| c.read_public(ek));
    let _ = ctx.flush_context(ek.into());
    let (public, _, _) = public.map_err(explain)?;
    p256_point(&public).ok_or_else(|| "the EK is not an ECC P-256 key".into())
}

fn key_public(ctx: &mut Context, key: KeyHandle) -> Result<Vec<u8>, String> {
    use tss_esapi::traits::Marshall;
    let (public, _, _) = ctx
        .execute_without_session(|c| c.read_public(key))
        .map_err(explain)?;
    public.marshall().map_err(explain)
}

fn activate(
    ctx: &mut Context,
    key: KeyHandle,
    blob: Vec<u8>,
    secret: Vec<u8>,
) -> Result<Vec<u8>, String> {
    use tss_esapi::{
        constants::SessionType,
        handles::AuthHandle,
        interface_types::session_handles::PolicySession,
        structures::{EncryptedSecret, IdObject, SymmetricDefinition},
    };
    let blob = IdObject::try_from(blob).map_err(|e| format!("credential blob: {}", explain(e)))?;
    let secret = EncryptedSecret::try_from(secret)
        .map_err(|e| format!("encrypted secret: {}", explain(e)))?;
    let ek = load_ek(ctx)?;
    // The EK is used under its policy: PolicySecret(TPM_RH_ENDORSEMENT).
    let session = match ctx
        .execute_without_session(|c| {
            c.start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
        })
        .map_err(explain)
    {
        Ok(Some(s)) => s,
        Ok(None) => {
            let _ = ctx.flush_context(ek.into());
            return Err("the TPM gave no policy session".into());
        }
        Err(e) => {
            let _ = ctx.flush_context(ek.into());
            return Err(e);
        }
    };
    let result = (|| {
        let policy = PolicySession::try_from(session).map_err(explain)?;
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.policy_secret(
                policy,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .map_err(explain)?;
        ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
            c.activate_credential(key, ek, blob, secret)
        })
        .map(|d| d.value().to_vec())
        .map_err(|e| match e {
            tss_esapi::Error::Tss2Error(rc) if matches!(rc.kind(), Some(Tss2ResponseCodeKind::Integrity) | Some(Tss2ResponseCodeKind::Value) | Some(Tss2ResponseCodeKind::EccPoint)) => format!(
                "credential activation failed ({e}): the credential was not made for this TPM's endorsement key and this key"
            ),
            other => format!("credential activation failed: {}", explain(other)),
        })
    })();
    let _ = ctx.flush_context(ek.into());
    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
    result
}

impl TpmKey {
    fn ask(&self, job: impl FnOnce(Reply) -> Job) -> Result<Vec<u8>, IdentityError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .map_err(|_| IdentityError::Sign("TPM handle poisoned".into()))?
            .send(job(reply))
            .map_err(|_| IdentityError::Sign("the TPM thread has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| IdentityError::Sign("the TPM thread has stopped".into()))?
            .map_err(|message| IdentityError::Tpm {
                tcti: self.tcti.clone(),
                message,
            })
    }

    /// The endorsement key's public point (registered at manufacture).
    pub fn ek_point(&self) -> Result<Vec<u8>, IdentityError> {
        self.ask(|reply| Job::EkPoint { reply })
    }

    /// The key's TPMT_PUBLIC.
    pub fn key_public(&self) -> Result<Vec<u8>, IdentityError> {
        self.ask(|reply| Job::KeyPublic { reply })
    }

    /// Recovers a credential the cloud made for this TPM and this key.
    pub fn activate_credential(
        &self,
        blob: Vec<u8>,
        secret: Vec<u8>,
    ) -> Result<Vec<u8>, IdentityError> {
        self.ask(|reply| Job::Activate {
            blob,
            secret,
            reply,
        })
    }

    /// Connects to the TPM and finds the key at the configured handle; with `create`,
    /// makes it first if the handle is free.
    pub fn open(cfg: &IdentityConfig, create: bool) -> Result<TpmKey, IdentityError> {
        Self::open_mode(cfg, if create { Mode::Create } else { Mode::Existing })
    }

    /// The persistent handle the key lives at.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Removes the key from the TPM (the old key after a rotation).
    pub fn evict(&self) -> Result<(), IdentityError> {
        self.ask(|reply| Job::Evict { reply }).map(|_| ())
    }

    pub fn open_mode(cfg: &IdentityConfig, mode: Mode) -> Result<TpmKey, IdentityError> {
        let err = |message: String| IdentityError::Tpm {
            tcti: cfg.tcti.clone(),
            message,
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let c = cfg.clone();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut opened = match open_in_tpm(&c, mode) {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((
                    opened.point.clone(),
                    opened.created,
                    opened.attributes.clone(),
                )));
                for job in jobs_rx {
                    match job {
                        Job::Sign { digest, reply } => {
                            let _ = reply.send(sign_in_tpm(&mut opened.ctx, opened.key, digest));
                        }
                        Job::EkPoint { reply } => {
                            let _ = reply.send(ek_point(&mut opened.ctx));
                        }
                        Job::KeyPublic { reply } => {
                            let _ = reply.send(key_public(&mut opened.ctx, opened.key));
                        }
                        Job::Activate {
                            blob,
                            secret,
                            reply,
                        } => {
                            let _ = reply.send(activate(&mut opened.ctx, opened.key, blob, secret));
                        }
                        Job::Evict { reply } => {
                            let handle = opened.handle;
                            let r = PersistentTpmHandle::new(handle)
                                .map_err(explain)
                                .and_then(|p| {
                                    opened
                                        .ctx
                                        .execute_with_session(Some(AuthSession::Password), |c| {
                                            c.evict_control(
                                                Provision::Owner,
                                                opened.key.into(),
                                                p.into(),
                                            )
                                        })
                                        .map_err(explain)
                                })
                                .map(|_| Vec::new());
                            let _ = reply.send(r);
                        }
                    }
                }
            })
            .map_err(|e| err(format!("cannot start the TPM thread: {e}")))?;
        let (point, created, attributes) = ready_rx
            .recv()
            .map_err(|_| err("the TPM thread ended unexpectedly".into()))?
            .map_err(err)?;
        Ok(TpmKey {
            jobs: std::sync::Mutex::new(jobs_tx),
            point,
            tcti: cfg.tcti.clone(),
            handle: cfg.handle,
            created,
            attributes,
        })
    }
}

impl Key for TpmKey {
    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(message).into();
        self.ask(|reply| Job::Sign { digest, reply })
    }

    fn backend(&self) -> Backend {
        Backend::Tpm
    }

    fn location(&self) -> String {
        format!("TPM {} handle {:#x}", self.tcti, self.handle)
    }

    fn tpm(&self) -> Option<&TpmKey> {
        Some(self)
    }
}
