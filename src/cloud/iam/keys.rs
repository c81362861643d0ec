//! API keys after the Secure Sharing model: a key carries what it reaches (a tenant,
//! devices and datastreams by pattern), what it may do, from where (CIDRs, web origins),
//! when (a validity window), how fine a history it may read, and whether it may mint
//! child keys. A child can only narrow its parent; revoking a key revokes its
//! descendants at once (every check walks the ancestry). Secrets are shown once and kept
//! as SHA-256 hashes (they are 128 random bits: no password stretching needed).
//! Every decision, allowed or refused, goes to the audit chain.

use super::audit;
use crate::args;
use crate::cloud::sql::{Db, DbError};
use crate::pattern::glob;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Create,
    Delete,
    /// Mint child keys.
    Issue,
}

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    pub tenant: String,
    /// Device ids by pattern (`*` is any run of characters).
    pub devices: Vec<String>,
    /// Datastreams (point ids) by pattern.
    pub streams: Vec<String>,
    pub actions: Vec<Action>,
    /// Source networks; empty: from anywhere.
    pub cidrs: Vec<ipnet::IpNet>,
    /// Web origins (the `Origin` header) it may be used from; empty: no browser use.
    pub origins: Vec<String>,
    pub not_before_ns: i64,
    pub not_after_ns: i64,
    /// The finest history resolution it may read, seconds (0: raw samples).
    pub min_resolution_s: u64,
    pub may_delegate: bool,
}

/// The most patterns (and origins, and networks) one list of a scope holds.
pub const MAX_PATTERNS: usize = 32;
/// The longest pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 128;
/// The longest device or datastream name a key can see, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// One request to decide.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub action: Action,
    pub tenant: &'a str,
    /// The device and datastream asked for; `None`: the tenant's (or the device's)
    /// listing, which the caller then filters with `Scope::sees_device`/`sees_stream`.
    pub device: Option<&'a str>,
    pub stream: Option<&'a str>,
    pub source: IpAddr,
    pub origin: Option<&'a str>,
    pub resolution_s: u64,
    pub now_ns: i64,
}

pub use crate::cloud::code::{Code, Refused};

fn refused(code: Code, message: impl Into<String>) -> Refused {
    Refused::new(code, message)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("key store: {0}")]
    Store(#[from] DbError),
    #[error("key store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("audit: {0}")]
    Anchor(#[from] super::anchor::AnchorError),
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// `fgk_ID_SECRET` → (id, secret).
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("fgk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 32).then_some((id, secret))
}

/// Whether every pattern of `child` is inside some pattern of `parent`.
fn patterns_within(child: &[String], parent: &[String]) -> bool {
    child.iter().all(|c| parent.iter().any(|p| glob(p, c)))
}

impl Scope {
    /// Why `child` is not a narrowing of `self`, if it is not.
    fn widened_by(&self, child: &Scope) -> Option<String> {
        if child.tenant != self.tenant {
            return Some("another tenant".into());
        }
        if !patterns_within(&child.devices, &self.devices) {
            return Some("devices beyond the parent's".into());
        }
        if !patterns_within(&child.streams, &self.streams) {
            return Some("datastreams beyond the parent's".into());
        }
        if let Some(a) = child.actions.iter().find(|a| !self.actions.contains(a)) {
            return Some(format!("the action {a:?}, which the parent lacks"));
        }
        if !self.cidrs.is_empty()
            && (child.cidrs.is_empty()
                || !child
                    .cidrs
                    .iter()
                    .all(|c| self.cidrs.iter().any(|p| p.contains(c))))
        {
            return Some("source networks beyond the parent's".into());
        }
        if !child.origins.iter().all(|o| self.origins.contains(o)) {
            return Some("web origins beyond the parent's".into());
        }
        if child.not_before_ns < self.not_before_ns || child.not_after_ns > self.not_after_ns {
            return Some("a validity window beyond the parent's".into());
        }
        if child.min_resolution_s < self.min_resolution_s {
            return Some("a finer history resolution than the parent's".into());
        }
        if child.may_delegate && !self.may_delegate {
            return Some("delegation, which the parent may not".into());
        }
        None
    }

    /// Patterns are bounded, so that every decision on this key stays cheap: at most
    /// `MAX_PATTERNS` per list, `MAX_PATTERN_LEN` characters each.
    fn check_size(&self) -> Result<(), Refused> {
        for (what, list) in [("devices", &self.devices), ("streams", &self.streams)] {
            if list.len() > MAX_PATTERNS {
                return Err(refused(
                    Code::BadRequest,
                    format!(
                        "at most {MAX_PATTERNS} `{what}` patterns, not {}",
                        list.len()
                    ),
                ));
            }
            if let Some(p) = list.iter().find(|p| p.chars().count() > MAX_PATTERN_LEN) {
                return Err(refused(
                    Code::BadRequest,
                    format!(
                        "a `{what}` pattern of {} characters: at most {MAX_PATTERN_LEN}",
                        p.chars().count()
                    ),
                ));
            }
        }
        if self.origins.len() > MAX_PATTERNS || self.cidrs.len() > MAX_PATTERNS {
            return Err(refused(
                Code::BadRequest,
                format!("at most {MAX_PATTERNS} origins and {MAX_PATTERNS} networks"),
            ));
        }
        Ok(())
    }

    /// Names longer than `MAX_NAME_LEN` are seen by no key: matching stays bounded by
    /// patterns × `MAX_PATTERN_LEN` × `MAX_NAME_LEN` whatever a caller puts in a path.
    pub fn sees_device(&self, device: &str) -> bool {
        device.len() <= MAX_NAME_LEN && self.devices.iter().any(|p| glob(p, device))
    }

    pub fn sees_stream(&self, stream: &str) -> bool {
        stream.len() <= MAX_NAME_LEN && self.streams.iter().any(|p| glob(p, stream))
    }

    pub fn check(&self, r: &Request) -> Result<(), Refused> {
        if r.now_ns < self.not_before_ns {
            return Err(refused(Code::KeyNotYetValid, "the key is not valid yet"));
        }
        if r.now_ns >= self.not_after_ns {
            return Err(refused(Code::KeyExpired, "the key has expired"));
        }
        if !self.cidrs.is_empty() && !self.cidrs.iter().any(|n| n.contains(&r.source)) {
            return Err(refused(
                Code::KeySourceRefused,
                format!("the key may not be used from {}", r.source),
            ));
        }
        match r.origin {
            Some(o) if !self.origins.iter().any(|x| x == o) => {
                return Err(refused(
                    Code::KeyOriginRefused,
                    format!("the key may not be used from the web origin {o}"),
                ))
            }
            _ => {}
        }
        if !self.actions.contains(&r.action) {
            return Err(refused(
                Code::ActionNotGranted,
                format!("the key may not {:?}", r.action),
            ));
        }
        if r.tenant != self.tenant
            || r.device.is_some_and(|d| !self.sees_device(d))
            || r.stream.is_some_and(|s| !self.sees_stream(s))
        {
            // The same answer whether the resource exists or not.
            return Err(refused(Code::NotFound, "no such resource for this key"));
        }
        if r.resolution_s < self.min_resolution_s {
            return Err(refused(
                Code::ResolutionTooFine,
                format!(
                    "the key may read history at {} s resolution or coarser",
                    self.min_resolution_s
                ),
            ));
        }
        Ok(())
    }
}

/// A key as listed: everything but its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub parent: Option<String>,
    pub scope: Scope,
    pub created_ns: i64,
    pub revoked_ns: Option<i64>,
}

/// The key store and decision point.
pub struct Keys {
    db: Db,
    /// The audit chain's key and checkpoints.
    anchor: std::sync::Arc<super::anchor::Anchor>,
}

impl Keys {
    pub fn open(db: Db, anchor: std::sync::Arc<super::anchor::Anchor>) -> Result<Keys, KeyError> {
        Ok(Keys { db, anchor })
    }

    fn insert(&self, parent: Option<&str>, scope: &Scope) -> Result<(String, String), KeyError> {
        scope.check_size()?;
        let id: String = crate::hex::encode(&rand::random::<[u8; 8]>());
        let secret: String = crate::hex::encode(&rand::random::<[u8; 16]>());
        self.db.execute(
            "INSERT INTO api_keys(id, parent, secret_hash, scope, created_ns) VALUES ($1, $2, $3, $4, $5)",
            args![&id, parent, hash(&secret), serde_json::to_string(scope)?, crate::sample::now_ns()],
        )?;
        Ok((id.clone(), format!("fgk_{id}_{secret}")))
    }

    /// A root key (an administrator's act). Returns (id, token); the token is shown once.
    pub fn create(&self, scope: &Scope) -> Result<(String, String), KeyError> {
        self.insert(None, scope)
    }

    /// The key of `token` and its validity: known, secret right, neither it nor an
    /// ancestor revoked.
    pub fn resolve(&self, token: &str) -> Result<(String, Scope), KeyError> {
        let unknown = || KeyError::Refused(refused(Code::KeyUnknown, "not a key of this cloud"));
        let (id, secret) = split(token).ok_or_else(unknown)?;
        // The key and its ancestors in one statement (one round trip on PostgreSQL),
        // the key first; 64 levels at most.
        let chain = self.db.query(
            "WITH RECURSIVE chain(depth, parent, revoked_ns, secret_hash, scope) AS (
                 SELECT 0, parent, revoked_ns, secret_hash, scope FROM api_keys WHERE id = $1
                 UNION ALL
                 SELECT c.depth + 1, k.parent, k.revoked_ns, CAST(NULL AS BYTEA), CAST(NULL AS TEXT)
                 FROM api_keys k JOIN chain c ON k.id = c.parent WHERE c.depth < 63)
             SELECT depth, revoked_ns, secret_hash, scope FROM chain ORDER BY depth",
            args![id],
        )?;
        let key = chain.first().ok_or_else(unknown)?;
        if key.blob(2)? != hash(secret) {
            return Err(unknown());
        }
        for (i, link) in chain.iter().enumerate() {
            if link.opt_int(1)?.is_some() {
                let whose = if i == 0 {
                    "the key"
                } else {
                    "an ancestor of the key"
                };
                return Err(KeyError::Refused(refused(
                    Code::KeyRevoked,
                    format!("{whose} was revoked"),
                )));
            }
        }
        Ok((id.to_string(), serde_json::from_str(&key.text(3)?)?))
    }

    /// Mints a child of the key `parent_token`; refused if it would widen the parent.
    pub fn delegate(
        &self,
        parent_token: &str,
        child: &Scope,
        source: IpAddr,
        origin: Option<&str>,
        now_ns: i64,
    ) -> Result<(String, String), KeyError> {
        let (pid, parent) = self.resolve(parent_token)?;
        if !parent.may_delegate || !parent.actions.contains(&Action::Issue) {
            return Err(KeyError::Refused(refused(
                Code::DelegationRefused,
                "the key may not mint child keys",
            )));
        }
        if now_ns >= parent.not_after_ns || now_ns < parent.not_before_ns {
            return Err(KeyError::Refused(refused(
                Code::KeyExpired,
                "the parent key is not valid now",
            )));
        }
        if !parent.cidrs.is_empty() && !parent.cidrs.iter().any(|n| n.contains(&source)) {
            return Err(KeyError::Refused(refused(
                Code::KeySourceRefused,
                format!("the key may not be used from {source}"),
            )));
        }
        // Bounded before the containment check matches the child's patterns.
        child.check_size()?;
        // The parent's web origins bind its use for minting as for anything else.
        if let Some(o) = origin.filter(|o| !parent.origins.iter().any(|x| x == o)) {
            return Err(KeyError::Refused(refused(
                Code::KeyOriginRefused,
                format!("the key may not be used from the web origin {o}"),
            )));
        }
        if let Some(why) = parent.widened_by(child) {
            return Err(KeyError::Refused(refused(
                Code::ScopeWidened,
                format!("a child key cannot have {why}"),
            )));
        }
        self.insert(Some(&pid), child)
    }

    /// The keys of a tenant (never their secrets). The tenant is read from each
    /// scope, in the same way on both databases (keys are few; their JSON is small).
    pub fn list(&self, tenant: &str) -> Result<Vec<KeyInfo>, KeyError> {
        let rows = self.db.query(
            "SELECT id, parent, scope, created_ns, revoked_ns FROM api_keys ORDER BY created_ns",
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let scope: Scope = serde_json::from_str(&r.text(2)?)?;
            if scope.tenant != tenant {
                continue;
            }
            out.push(KeyInfo {
                id: r.text(0)?,
                parent: r.opt_text(1)?,
                scope,
                created_ns: r.int(3)?,
                revoked_ns: r.opt_int(4)?,
            });
        }
        Ok(out)
    }

    /// The scope of key `id`, if it exists.
    pub fn scope_of(&self, id: &str) -> Result<Option<Scope>, KeyError> {
        self.db
            .query_opt("SELECT scope FROM api_keys WHERE id = $1", args![id])?
            .map(|r| Ok(serde_json::from_str(&r.text(0)?)?))
            .transpose()
    }

    /// Revokes a key and with it every descendant.
    pub fn revoke(&self, id: &str) -> Result<usize, KeyError> {
        Ok(self.db.execute(
            "WITH RECURSIVE tree(id) AS (
                 SELECT CAST($1 AS TEXT) UNION SELECT k.id FROM api_keys k JOIN tree t ON k.parent = t.id)
             UPDATE api_keys SET revoked_ns = $2 WHERE id IN (SELECT id FROM tree) AND revoked_ns IS NULL",
            args![id, crate::sample::now_ns()],
        )? as usize)
    }

    /// Decides `r` for the key `token`, and audits the decision. Returns the key's id
    /// and scope.
    pub fn authorize(&mut self, token: &str, r: &Request) -> Result<(String, Scope), KeyError> {
        let outcome = self.resolve(token).and_then(|(id, scope)| {
            scope.check(r).map_err(KeyError::Refused)?;
            Ok((id, scope))
        });
        let actor = split(token)
            .map(|(id, _)| format!("key:{id}"))
            .unwrap_or_else(|| "key:?".into());
        let reason = match &outcome {
            Ok(_) => String::new(),
            Err(KeyError::Refused(e)) => e.code.to_string(),
            Err(e) => e.to_string(),
        };
        let resource = [Some(r.tenant), r.device, r.stream]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        audit::record(
            &self.db,
            &self.anchor,
            r.tenant,
            &audit::Entry {
                ts_ns: r.now_ns,
                actor,
                action: format!("{:?}", r.action).to_lowercase(),
                resource,
                source: r.source.to_string(),
                outcome: if outcome.is_ok() {
                    "allowed"
                } else {
                    "refused"
                }
                .into(),
                reason,
            },
        )?;
        outcome
    }

    pub fn security_events(&self) -> Result<Vec<audit::SecurityEvent>, KeyError> {
        Ok(audit::security_events(&self.db, None)?)
    }

    pub fn audit_verify(&self) -> Result<audit::Verdict, KeyError> {
        Ok(audit::verify(&self.db, &self.anchor)?)
    }

    pub fn anchor(&self) -> &super::anchor::Anchor {
        &self.anchor
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;
    const NOW: i64 = 1_800_000_000_000_000_000;

    fn scope() -> Scope {
        Scope {
            tenant: "acme".into(),
            devices: vec!["plant1-*".into()],
            streams: vec!["*".into()],
            actions: vec![Action::Read, Action::Issue],
            cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            origins: vec!["https://dash.acme.example".into()],
            not_before_ns: NOW - H,
            not_after_ns: NOW + 24 * H,
            min_resolution_s: 60,
            may_delegate: true,
        }
    }

    fn req() -> Request<'static> {
        Request {
            action: Action::Read,
            tenant: "acme",
            device: Some("plant1-gw01"),
            stream: Some("meter/voltage_l1"),
            source: "10.1.2.3".parse().unwrap(),
            origin: None,
            resolution_s: 3600,
            now_ns: NOW,
        }
    }

    fn code(r: Result<impl std::fmt::Debug, KeyError>) -> &'static str {
        match r {
            Err(KeyError::Refused(e)) => e.code.as_str(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_refusal_has_its_reason_and_the_allowed_cases_work() {
        let mut k = Keys::open(
            Db::memory().unwrap(),
            std::sync::Arc::new(super::super::anchor::Anchor::ephemeral()),
        )
        .unwrap();
        let (_, t) = k.create(&scope()).unwrap();
        k.authorize(&t, &req()).unwrap();
        k.authorize(
            &t,
            &Request {
                origin: Some("https://dash.acme.example"),
                ..req()
            },
        )
        .unwrap();
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    now_ns: NOW + 25 * H,
                    ..req()
                }
            )),
            "key_expired"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    now_ns: NOW - 2 * H,
                    ..req()
                }
            )),
            "key_not_yet_valid"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    source: "192.0.2.1".parse().unwrap(),
                    ..req()
                }
            )),
            "key_source_refused"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    origin: Some("https://evil.example"),
                    ..req()
                }
            )),
            "key_origin_refused"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    resolution_s: 1,
                    ..req()
                }
            )),
            "resolution_too_fine"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    action: Action::Delete,
                    ..req()
                }
            )),
            "action_not_granted"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    tenant: "globex",
                    ..req()
                }
            )),
            "not_found"
        );
        assert_eq!(
            code(k.authorize(
                &t,
                &Request {
                    device: Some("plant2-gw01"),
                    ..req()
                }
            )),
            "not_found"
        );
        let forged = format!(
            "{}{}",
            &t[..t.len() - 1],
            if t.ends_with('0') { "1" } else { "0" }
        );
        assert_eq!(code(k.authorize(&forged, &req())), "key_unknown");
        assert_eq!(code(k.authorize("Bearer nonsense", &req())), "key_unknown");
        // Every decision is in the audit chain, and the chain holds.
        assert_eq!(
            k.audit_verify().unwrap(),
            audit::Verdict::Intact { entries: 12 }
        );
    }

    #[test]
    fn children_only_narrow_and_revocation_reaches_descendants() {
        let mut k = Keys::open(
            Db::memory().unwrap(),
            std::sync::Arc::new(super::super::anchor::Anchor::ephemeral()),
        )
        .unwrap();
        let (root_id, root) = k.create(&scope()).unwrap();
        let src: IpAddr = "10.1.2.3".parse().unwrap();
        let narrow = Scope {
            devices: vec!["plant1-gw01".into()],
            cidrs: vec!["10.1.0.0/16".parse().unwrap()],
            min_resolution_s: 3600,
            ..scope()
        };
        let (_, child) = k.delegate(&root, &narrow, src, None, NOW).unwrap();
        k.authorize(&child, &req()).unwrap();
        let (_, grandchild) = k
            .delegate(
                &child,
                &Scope {
                    may_delegate: false,
                    actions: vec![Action::Read],
                    ..narrow.clone()
                },
                src,
                None,
                NOW,
            )
            .unwrap();
        k.authorize(&grandchild, &req()).unwrap();
        for (wider, what) in [
            (
                Scope {
                    devices: vec!["*".into()],
                    ..narrow.clone()
                },
                "devices",
            ),
            (
                Scope {
                    actions: vec![Action::Read, Action::Write],
                    ..narrow.clone()
                },
                "action",
            ),
            (
                Scope {
                    cidrs: vec![],
                    ..narrow.clone()
                },
                "source networks",
            ),
            (
                Scope {
                    cidrs: vec!["0.0.0.0/0".parse().unwrap()],
                    ..narrow.clone()
                },
                "source networks",
            ),
            (
                Scope {
                    min_resolution_s: 1,
                    ..narrow.clone()
                },
                "resolution",
            ),
            (
                Scope {
                    not_after_ns: NOW + 48 * H,
                    ..narrow.clone()
                },
                "validity",
            ),
            (
                Scope {
                    tenant: "globex".into(),
                    ..narrow.clone()
                },
                "tenant",
            ),
            (
                Scope {
                    origins: vec!["https://evil.example".into()],
                    ..narrow.clone()
                },
                "origins",
            ),
        ] {
            match k.delegate(&child, &wider, src, None, NOW) {
                Err(KeyError::Refused(e)) => {
                    assert_eq!(e.code, Code::ScopeWidened);
                    assert!(e.message.contains(what), "{what}: {}", e.message);
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        assert_eq!(
            code(k.delegate(&grandchild, &narrow, src, None, NOW)),
            "delegation_refused"
        );
        // Revoking the root revokes both descendants at once.
        assert_eq!(k.revoke(&root_id).unwrap(), 3);
        assert_eq!(code(k.authorize(&grandchild, &req())), "key_revoked");
        assert_eq!(code(k.authorize(&root, &req())), "key_revoked");
    }

    #[test]
    fn a_failure_burst_and_out_of_cidr_use_raise_events() {
        let mut k = Keys::open(
            Db::memory().unwrap(),
            std::sync::Arc::new(super::super::anchor::Anchor::ephemeral()),
        )
        .unwrap();
        let (_, t) = k.create(&scope()).unwrap();
        let _ = k.authorize(
            &t,
            &Request {
                source: "192.0.2.9".parse().unwrap(),
                ..req()
            },
        );
        let ev = k.security_events().unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "key_outside_cidr");
        // Guessing: six refusals from one address within the minute, one burst event for
        // the address (the unknown keys differ).
        for i in 0..6 {
            let guess = format!("fgk_{:016x}_{:032x}", i, i);
            let _ = k.authorize(
                &guess,
                &Request {
                    source: "198.51.100.4".parse().unwrap(),
                    now_ns: NOW + i as i64,
                    ..req()
                },
            );
        }
        let bursts: Vec<_> = k
            .security_events()
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "failure_burst")
            .collect();
        assert_eq!(bursts.len(), 1, "{bursts:?}");
        assert_eq!(bursts[0].source, "198.51.100.4");
        // Allowed use raises nothing.
        k.authorize(&t, &req()).unwrap();
        assert_eq!(k.security_events().unwrap().len(), 2);
    }

    #[test]
    fn an_ancestor_revoked_by_hand_in_the_database_still_stops_its_children() {
        let mut k = Keys::open(
            Db::memory().unwrap(),
            std::sync::Arc::new(super::super::anchor::Anchor::ephemeral()),
        )
        .unwrap();
        let (root_id, root) = k.create(&scope()).unwrap();
        let (_, child) = k
            .delegate(&root, &scope(), "10.0.0.1".parse().unwrap(), None, NOW)
            .unwrap();
        // Only the root is marked: the check walks the ancestry anyway.
        k.db.execute(
            "UPDATE api_keys SET revoked_ns = 1 WHERE id = $1",
            args![root_id],
        )
        .unwrap();
        match k.authorize(&child, &req()) {
            Err(KeyError::Refused(e)) => assert!(e.message.contains("ancestor"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
