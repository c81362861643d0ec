//! Signed release metadata (docs/updates.md): what a gateway checks before any byte of
//! an update is executable. Pure: bytes and the time in, a verdict out.
//!
//! Two documents, each a signed envelope `{"signed": "<the document, JSON, as a
//! string>", "signatures": [{"key": ID, "sig": HEX}]}`: the signed bytes are exactly the
//! string's, so there is no canonical-JSON question.
//! - **root** names the keys and, per role, which keys and how many of them (the
//!   threshold) must sign: `root` signs the next root, `release` signs releases. The root
//!   keys stay offline; the cloud never holds any key, it only publishes what was signed.
//!   Root N+1 counts only if a threshold of root N's root keys *and* a threshold of its
//!   own signed it, so a rotation needs the old keys and proves the new ones.
//! - **release** binds one image to everything a gateway checks: version, hardware,
//!   length and SHA-256, install type, expiry. One document, so an image cannot be
//!   mixed with another release's metadata.
//!
//! Keys are Ed25519 (ring); a key's id is the hex of the first 16 bytes of the SHA-256
//! of its public key.

pub mod image;

use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The format version of both documents.
pub const FORMAT: u8 = 1;
/// No metadata document above this size is read.
pub const MAX_METADATA: usize = 256 * 1024;
/// At most this many keys in a root, and signatures on a document.
const MAX_KEYS: usize = 64;

/// Why metadata or an image was refused. Each names what a person can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error(
        "{what} is signed by {valid} of the keys its threshold counts, {threshold} are needed"
    )]
    Threshold {
        what: &'static str,
        valid: usize,
        threshold: usize,
    },
    #[error("{what} expired at {expired} (UTC); the time here is {now}: metadata older than its expiry is refused, so a frozen mirror cannot hold a gateway back")]
    Expired {
        what: &'static str,
        expired: String,
        now: String,
    },
    #[error("root version {got} does not follow the trusted root version {trusted}")]
    RootSequence { trusted: u64, got: u64 },
    #[error("release {offered} is not newer than {installed}, the highest this gateway has installed: versions only go forward")]
    Older { offered: String, installed: String },
    #[error("the release's rollback index {index} is below this gateway's rollback floor {floor}: a release that old may never be installed here again")]
    BelowFloor { index: u64, floor: u64 },
    #[error("the release is for hardware `{release}`; this gateway is `{this}`")]
    Hardware { release: String, this: String },
    #[error("the image is longer than the {declared} bytes its metadata declares")]
    TooLong { declared: u64 },
    #[error("the image ended at {got} bytes; its metadata declares {declared}")]
    TooShort { declared: u64, got: u64 },
    #[error("the image's SHA-256 is {got}; its metadata says {declared}")]
    Hash { declared: String, got: String },
}

fn malformed(what: &'static str, why: impl std::fmt::Display) -> Refusal {
    Refusal::Malformed {
        what,
        why: why.to_string(),
    }
}

/// A signed document as it travels and is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The document's JSON, exactly the bytes that were signed.
    pub signed: String,
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

/// Which keys speak for a role, and how many must.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub keys: Vec<String>,
    pub threshold: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// `fieldgate-root`.
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u8,
    /// 1 for the first root, one more for each rotation.
    pub version: u64,
    pub expires_ns: i64,
    /// Key id → public key, hex.
    pub keys: BTreeMap<String, String>,
    pub root: Role,
    pub release: Role,
}

/// How a release is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Install {
    /// The daemon replaces its own binary.
    Binary,
    /// A RAUC bundle for an A/B system.
    Rauc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub sha256: String,
    pub length: u64,
    pub install: Install,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// `fieldgate-release`.
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u8,
    /// Semantic version (1.4.0).
    pub version: String,
    /// The hardware compatibility string a gateway must match exactly.
    pub hardware: String,
    pub image: Image,
    pub expires_ns: i64,
    /// The anti-rollback index: installing this release raises the gateway's floor to
    /// it (a TPM NV counter), and a release below the floor is refused even after the
    /// state directory is wiped. Raise it with every release that must bar the ones
    /// before it (every release, by default).
    pub rollback_index: u64,
}

/// Public key id: hex of the first 16 bytes of SHA-256(public key).
pub fn key_id(public: &[u8]) -> String {
    crate::hex::encode(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..16])
}

/// A new Ed25519 key as PKCS#8 bytes (the private key file's content).
pub fn generate_key() -> Result<Vec<u8>, Refusal> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| malformed("key", e))
}

/// The signing key of a PKCS#8 file.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, Refusal> {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(SigningKey)
            .map_err(|e| malformed("key", format!("not an Ed25519 PKCS#8 key: {e}")))
    }

    pub fn public(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    pub fn id(&self) -> String {
        key_id(&self.public())
    }

    /// Adds this key's signature to `env` (replacing an earlier one of the same key).
    pub fn sign(&self, env: &mut Envelope) {
        let id = self.id();
        env.signatures.retain(|s| s.key != id);
        env.signatures.push(Signature {
            key: id,
            sig: crate::hex::encode(self.0.sign(env.signed.as_bytes()).as_ref()),
        });
    }
}

impl Envelope {
    /// An unsigned envelope around `doc`.
    pub fn of<T: Serialize>(doc: &T) -> Envelope {
        Envelope {
            signed: serde_json::to_string(doc).unwrap_or_default(),
            signatures: Vec::new(),
        }
    }

    pub fn parse(what: &'static str, bytes: &[u8]) -> Result<Envelope, Refusal> {
        if bytes.len() > MAX_METADATA {
            return Err(malformed(what, format!("over {MAX_METADATA} bytes")));
        }
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
        if env.signatures.len() > MAX_KEYS {
            return Err(malformed(what, "too many signatures"));
        }
        Ok(env)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// How many distinct keys of `role` (public keys from `keys`) signed it validly.
    fn valid_signers(&self, keys: &BTreeMap<String, String>, role: &Role) -> usize {
        let allowed: BTreeSet<&String> = role.keys.iter().collect();
        let mut seen = BTreeSet::new();
        for s in &self.signatures {
            if !allowed.contains(&s.key) || seen.contains(&s.key) {
                continue;
            }
            let (Some(public), Some(sig)) = (
                keys.get(&s.key).and_then(|k| crate::hex::decode(k)),
                crate::hex::decode(&s.sig),
            ) else {
                continue;
            };
            let pk = signature::UnparsedPublicKey::new(&signature::ED25519, &public);
            if key_id(&public) == s.key && pk.verify(self.signed.as_bytes(), &sig).is_ok() {
                seen.insert(s.key.clone());
            }
        }
        seen.len()
    }

    fn check(
        &self,
        what: &'static str,
        keys: &BTreeMap<String, String>,
        role: &Role,
    ) -> Result<(), Refusal> {
        let valid = self.valid_signers(keys, role);
        if valid < role.threshold {
            return Err(Refusal::Threshold {
                what,
                valid,
                threshold: role.threshold,
            });
        }
        Ok(())
    }

    fn document<T: serde::de::DeserializeOwned>(&self, what: &'static str) -> Result<T, Refusal> {
        serde_json::from_str(&self.signed).map_err(|e| malformed(what, e))
    }
}

fn time(ns: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64),
    )
    .to_string()
}

fn fresh(what: &'static str, expires_ns: i64, now_ns: i64) -> Result<(), Refusal> {
    if expires_ns <= now_ns {
        return Err(Refusal::Expired {
            what,
            expired: time(expires_ns),
            now: time(now_ns),
        });
    }
    Ok(())
}

impl Root {
    /// The root's own rules: its type and format, keys that are what their ids say, and
    /// thresholds that at least one key and no more keys than listed can meet.
    fn well_formed(&self) -> Result<(), Refusal> {
        let what = "root";
        if self.kind != "fieldgate-root" {
            return Err(malformed(what, format!("type `{}`", self.kind)));
        }
        if self.v != FORMAT {
            return Err(malformed(
                what,
                format!("format {} (this release reads {FORMAT})", self.v),
            ));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(malformed(what, "too many keys"));
        }
        for (id, public) in &self.keys {
            let ok = crate::hex::decode(public).is_some_and(|p| p.len() == 32 && key_id(&p) == *id);
            if !ok {
                return Err(malformed(
                    what,
                    format!("key {id} is not the Ed25519 key its id names"),
                ));
            }
        }
        for (name, role) in [("root", &self.root), ("release", &self.release)] {
            let distinct: BTreeSet<_> = role.keys.iter().collect();
            if role.threshold == 0 || role.threshold > distinct.len() {
                return Err(malformed(
                    what,
                    format!("the {name} role's threshold {} cannot be met by its {} keys (it must be 1 or more)", role.threshold, distinct.len()),
                ));
            }
            if let Some(k) = role.keys.iter().find(|k| !self.keys.contains_key(*k)) {
                return Err(malformed(
                    what,
                    format!("the {name} role names key {k}, which the root does not list"),
                ));
            }
        }
        Ok(())
    }

    /// The first root, as shipped in the image: trusted because it was installed, but
    /// it must still be signed by its own root threshold and be well formed.
    pub fn trust_first(bytes: &[u8]) -> Result<Root, Refusal> {
        let env = Envelope::parse("root", bytes)?;
        let root: Root = env.document("root")?;
        root.well_formed()?;
        env.check("root", &root.keys, &root.root)?;
        Ok(root)
    }

    /// The next root after this one: signed by a threshold of this root's root keys and
    /// of its own, and exactly one version on. (Expiry is checked on the newest root
    /// only, as TUF does: a chain may pass through roots that have since expired.)
    pub fn rotate(&self, bytes: &[u8]) -> Result<Root, Refusal> {
        let env = Envelope::parse("root", bytes)?;
        let next: Root = env.document("root")?;
        next.well_formed()?;
        if next.version != self.version + 1 {
            return Err(Refusal::RootSequence {
                trusted: self.version,
                got: next.version,
            });
        }
        env.check(
            "the new root (by the old root's keys)",
            &self.keys,
            &self.root,
        )?;
        env.check("the new root (by its own keys)", &next.keys, &next.root)?;
        Ok(next)
    }

    /// Walks `chain` (roots after this one, in order) and returns the newest, which must
    /// not have expired.
    pub fn follow(&self, chain: &[Vec<u8>], now_ns: i64) -> Result<Root, Refusal> {
        let mut root = self.clone();
        for bytes in chain {
            root = root.rotate(bytes)?;
        }
        fresh("the root", root.expires_ns, now_ns)?;
        Ok(root)
    }

    /// A release signed by this root's release threshold, fresh, for `hardware`, newer
    /// than `installed` (the highest version this gateway installed) and not below the
    /// gateway's rollback `floor`.
    pub fn verify_release(
        &self,
        bytes: &[u8],
        now_ns: i64,
        hardware: &str,
        installed: Option<&semver::Version>,
        floor: u64,
    ) -> Result<Release, Refusal> {
        let env = Envelope::parse("release", bytes)?;
        env.check("the release", &self.keys, &self.release)?;
        let r: Release = env.document("release")?;
        if r.kind != "fieldgate-release" || r.v != FORMAT {
            return Err(malformed(
                "release",
                format!(
                    "type `{}` format {} (this release reads fieldgate-release {FORMAT})",
                    r.kind, r.v
                ),
            ));
        }
        fresh("the release", r.expires_ns, now_ns)?;
        let offered = r.semver()?;
        if let Some(installed) = installed {
            if offered <= *installed {
                return Err(Refusal::Older {
                    offered: offered.to_string(),
                    installed: installed.to_string(),
                });
            }
        }
        if r.rollback_index < floor {
            return Err(Refusal::BelowFloor {
                index: r.rollback_index,
                floor,
            });
        }
        if r.hardware != hardware {
            return Err(Refusal::Hardware {
                release: r.hardware,
                this: hardware.to_string(),
            });
        }
        if crate::hex::decode(&r.image.sha256).is_none_or(|h| h.len() != 32) {
            return Err(malformed("release", "image.sha256 is not 64 hex digits"));
        }
        Ok(r)
    }
}

impl Release {
    pub fn semver(&self) -> Result<semver::Version, Refusal> {
        semver::Version::parse(&self.version)
            .map_err(|e| malformed("release", format!("version `{}`: {e}", self.version)))
    }
}
