//! The decision point of the HTTPS API: who is calling (a user's session, an API key, a
//! device's certificate), whether it may do this to that resource of that tenant, and an
//! audit entry for every answer, allowed or refused.
//!
//! A [`Grant`] is the only way to a tenant's data: handlers take the tenant and the
//! device from the grant, never from the request, so a handler cannot forget to scope.

use super::audit::{self, Entry};
use super::devices::Devices;
use super::keys::{Action, KeyError, Keys, Refused, Request, Scope};
use super::users::{Permission, Role, UserError, Users};
use crate::args;
use crate::cloud::code::Code;
use crate::cloud::sql::{Db, DbError};
use std::net::IpAddr;

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    User {
        email: String,
        system: bool,
    },
    /// A key resolved for this request (secret, ancestry, revocation checked once).
    Key {
        id: String,
        token: String,
        scope: Box<Scope>,
    },
    /// A gateway, by its client certificate: it reaches no tenant's resources here.
    Device(String),
}

impl Caller {
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::User { email, .. } => format!("user:{email}"),
            Caller::Key { id, .. } => format!("key:{id}"),
            Caller::Device(d) => format!("device:{d}"),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read devices, datastreams, gaps, members.
    Read,
    ClaimDevice,
    MintKey,
    ManageUsers,
    RevokeKey,
    RevokeDevice,
    TransferDevice,
    ReadAudit,
    /// Send a command to a device over the downlink.
    CommandDevice,
    /// Start a rollout, group devices (people only).
    Rollout,
}

impl Op {
    fn permission(self) -> Permission {
        match self {
            Op::Read => Permission::Read,
            Op::ClaimDevice | Op::CommandDevice | Op::Rollout => Permission::ManageDevices,
            Op::MintKey => Permission::MintKeys,
            Op::ManageUsers => Permission::ManageUsers,
            Op::RevokeKey | Op::RevokeDevice => Permission::RevokeKeys,
            Op::TransferDevice => Permission::TransferDevices,
            Op::ReadAudit => Permission::ReadAudit,
        }
    }

    /// The key action that allows it; `None`: only people may.
    fn key_action(self) -> Option<Action> {
        match self {
            Op::Read => Some(Action::Read),
            Op::ClaimDevice => Some(Action::Create),
            Op::RevokeDevice => Some(Action::Delete),
            Op::CommandDevice => Some(Action::Write),
            Op::MintKey
            | Op::ManageUsers
            | Op::RevokeKey
            | Op::TransferDevice
            | Op::ReadAudit
            | Op::Rollout => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::ClaimDevice => "claim",
            Op::MintKey => "mint-key",
            Op::ManageUsers => "manage-users",
            Op::RevokeKey => "revoke-key",
            Op::RevokeDevice => "revoke-device",
            Op::TransferDevice => "transfer",
            Op::ReadAudit => "read-audit",
            Op::CommandDevice => "command",
            Op::Rollout => "rollout",
        }
    }
}

/// The resource a request is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub tenant: &'a str,
    /// A device the tenant must own now.
    pub device: Option<&'a str>,
    pub stream: Option<&'a str>,
    /// The history resolution asked for, seconds (0: raw samples or live values).
    pub resolution_s: u64,
}

impl<'a> Target<'a> {
    pub fn tenant(tenant: &'a str) -> Target<'a> {
        Target {
            tenant,
            device: None,
            stream: None,
            resolution_s: 0,
        }
    }

    pub fn device(tenant: &'a str, device: &'a str) -> Target<'a> {
        Target {
            device: Some(device),
            ..Target::tenant(tenant)
        }
    }
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub source: IpAddr,
    /// The browser's `Origin` header, if any.
    pub web: Option<&'a str>,
    pub now_ns: i64,
}

/// Permission for one request on one tenant (and device), made only by
/// [`Iam::authorize`].
#[derive(Debug, Clone)]
pub struct Grant {
    tenant: String,
    device: Option<String>,
    actor: String,
    /// The key's scope, for a key; a user sees all of the tenant.
    scope: Option<Scope>,
    role: Option<Role>,
}

impl Grant {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The device the grant was made for (owned by the tenant when granted).
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    pub fn sees_device(&self, device: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.sees_device(device))
    }

    pub fn sees_stream(&self, stream: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.sees_stream(stream))
    }
}

/// A refusal: a `Code` and a sentence.
pub type Denied = Refused;

fn denied(code: Code, message: impl Into<String>) -> Denied {
    Refused::new(code, message)
}

impl From<UserError> for Denied {
    fn from(e: UserError) -> Denied {
        denied(e.code(), e.message())
    }
}

impl From<KeyError> for Denied {
    fn from(e: KeyError) -> Denied {
        match e {
            KeyError::Refused(r) => r,
            other => denied(Code::Internal, other.to_string()),
        }
    }
}

impl From<DbError> for Denied {
    fn from(e: DbError) -> Denied {
        denied(Code::Internal, format!("store: {e}"))
    }
}

/// The actions a key minted by a user of `role` may carry.
fn key_actions(role: Role) -> &'static [Action] {
    match role {
        Role::Viewer => &[Action::Read],
        Role::Operator => &[Action::Read, Action::Write, Action::Create, Action::Issue],
        Role::Admin | Role::Owner => &[
            Action::Read,
            Action::Write,
            Action::Create,
            Action::Delete,
            Action::Issue,
        ],
    }
}

/// Refused logins within a minute, per account or per address, before logins are
/// refused without a password check.
pub const LOGIN_LIMIT: i64 = 10;

/// Identity and access over one connection to the cloud's database (SQLite, or
/// PostgreSQL shared by several API servers).
pub struct Iam {
    keys: Keys,
}

impl Iam {
    /// Over the cloud database; the audit chain is anchored by `anchor` (`Anchor::open`
    /// in the data directory).
    pub fn with(db: Db, anchor: std::sync::Arc<super::anchor::Anchor>) -> Result<Iam, Denied> {
        Ok(Iam {
            keys: Keys::open(db, anchor)?,
        })
    }

    pub fn users(&self) -> Users<'_> {
        Users::new(self.keys.db())
    }

    pub fn devices(&self) -> Devices<'_> {
        Devices::new(self.keys.db())
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn db(&self) -> &Db {
        self.keys.db()
    }

    /// Appends one decision to the audit chain (and watches refusals).
    pub fn audit(
        &mut self,
        tenant: &str,
        actor: &str,
        action: &str,
        resource: &str,
        from: Origin,
        outcome: Result<(), &Denied>,
    ) -> Result<(), Denied> {
        let entry = Entry {
            ts_ns: from.now_ns,
            actor: actor.into(),
            action: action.into(),
            resource: resource.into(),
            source: from.source.to_string(),
            outcome: if outcome.is_ok() {
                "allowed"
            } else {
                "refused"
            }
            .into(),
            reason: outcome
                .err()
                .map(|d| d.code.to_string())
                .unwrap_or_default(),
        };
        audit::record(self.keys.db(), self.keys.anchor(), tenant, &entry)?;
        Ok(())
    }

    /// Refuses with `too_many_attempts` when `limit` audited `action`s (refused ones
    /// only, with `refused_only`) were made within the last minute by `actor` or from
    /// the caller's address.
    pub fn throttle(
        &self,
        action: &str,
        actor: &str,
        refused_only: bool,
        limit: i64,
        from: &Origin,
    ) -> Result<(), Denied> {
        self.throttle_on(action, actor, None, refused_only, limit, from)
    }

    /// As `throttle`, counting attempts on `resource` too (by anyone, from anywhere).
    pub fn throttle_on(
        &self,
        action: &str,
        actor: &str,
        resource: Option<&str>,
        refused_only: bool,
        limit: i64,
        from: &Origin,
    ) -> Result<(), Denied> {
        let since = from.now_ns - 60_000_000_000;
        let row = self.db().query_opt(
            "SELECT count(*) FROM audit WHERE action = $1 AND ($2 = 0 OR outcome = 'refused')
             AND ts_ns > $3 AND (actor = $4 OR source = $5 OR resource = $6)",
            args![
                action,
                refused_only as i64,
                since,
                actor,
                from.source.to_string(),
                resource
            ],
        )?;
        if row.map_or(Ok(0), |r| r.int(0))? >= limit {
            return Err(denied(
                Code::TooManyAttempts,
                "too many attempts for this account or from this address: wait a minute",
            ));
        }
        Ok(())
    }

    /// A login's first half: the throttle (after `LOGIN_LIMIT` refused logins within a
    /// minute for the account or from the address, further attempts are refused without
    /// looking at the password; audited), then the stored hash to check the password
    /// against, outside this lock (`users::verify_password`).
    pub fn login_begin(&mut self, email: &str, from: Origin) -> Result<String, Denied> {
        let actor = format!("user:{}", email.to_lowercase());
        if let Err(d) = self.throttle("login", &actor, true, LOGIN_LIMIT, &from) {
            self.audit("", &actor, "login", "", from, Err(&d))?;
            return Err(d);
        }
        Ok(self.users().stored_password(email)?)
    }

    /// A login's second half: audits the password check's outcome and starts a session.
    /// The password was checked against `stored`; if the account's password changed in
    /// the meantime (a reset ending a thief's access), the check counts for nothing.
    pub fn login_end(
        &mut self,
        email: &str,
        stored: &str,
        checked: Result<(), UserError>,
        from: Origin,
    ) -> Result<String, Denied> {
        let actor = format!("user:{}", email.to_lowercase());
        let still = self.users().stored_password(email)? == stored;
        let outcome = checked
            .and_then(|()| still.then_some(()).ok_or(UserError::WrongCredentials))
            .map_err(Denied::from);
        self.audit("", &actor, "login", "", from, outcome.as_ref().map(|_| ()))?;
        outcome?;
        Ok(self.users().start_session(email)?)
    }

    /// Checks a password and starts a session (audited either way), in one call with
    /// the password checked under `self` (tools, benches; the API splits it).
    pub fn login(&mut self, email: &str, password: &str, from: Origin) -> Result<String, Denied> {
        let stored = self.login_begin(email, from)?;
        let checked = super::users::verify_password(password, &stored);
        self.login_end(email, &stored, checked, from)
    }

    /// Who `bearer` (an `Authorization: Bearer` token) or the client certificate's
    /// `device` is. A token that is present but wrong is refused and audited.
    pub fn authenticate(
        &mut self,
        bearer: Option<&str>,
        device: Option<&str>,
        from: Origin,
    ) -> Result<Caller, Denied> {
        let Some(token) = bearer else {
            return Ok(device
                .map(|d| Caller::Device(d.to_string()))
                .unwrap_or(Caller::Anonymous));
        };
        let outcome = if token.starts_with("fgs_") {
            match self.users().session(token)? {
                Some((email, system)) => Ok(Caller::User { email, system }),
                None => Err(denied(
                    Code::Unauthenticated,
                    "the session is unknown or has expired: log in again",
                )),
            }
        } else if token.starts_with("fgk_") {
            // Resolved once per request; its scope is checked by `authorize`.
            match self.keys.resolve(token) {
                Ok((id, scope)) => Ok(Caller::Key {
                    id,
                    token: token.to_string(),
                    scope: Box::new(scope),
                }),
                Err(e) => Err(e.into()),
            }
        } else {
            Err(denied(
                Code::Unauthenticated,
                "the bearer token is neither a session (fgs_…) nor an API key (fgk_…)",
            ))
        };
        if let Err(d) = &outcome {
            // The key id is not secret; a session token is, all of it.
            let actor = match token.strip_prefix("fgk_").and_then(|t| t.get(..16)) {
                Some(id) => format!("key:{id}"),
                None => "bearer:unknown".into(),
            };
            self.audit("", &actor, "authenticate", "", from, Err(d))?;
        }
        outcome
    }

    /// Decides whether `caller` may do `op` on `target`, audits the answer, and returns
    /// the grant the handler works through.
    pub fn authorize(
        &mut self,
        caller: &Caller,
        op: Op,
        target: Target,
        from: Origin,
    ) -> Result<Grant, Denied> {
        let outcome = self.decide(caller, op, target, from);
        let resource = [Some(target.tenant), target.device, target.stream]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        self.audit(
            target.tenant,
            &caller.actor(),
            op.name(),
            &resource,
            from,
            outcome.as_ref().map(|_| ()),
        )?;
        outcome
    }

    fn decide(
        &self,
        caller: &Caller,
        op: Op,
        target: Target,
        from: Origin,
    ) -> Result<Grant, Denied> {
        let mut grant = Grant {
            tenant: target.tenant.to_string(),
            device: target.device.map(str::to_string),
            actor: caller.actor(),
            scope: None,
            role: None,
        };
        match caller {
            Caller::Anonymous => {
                return Err(denied(
                    Code::Unauthenticated,
                    "log in (POST /v1/sessions) or present an API key as `Authorization: Bearer`",
                ))
            }
            Caller::Device(_) => {
                return Err(denied(
                    Code::Forbidden,
                    "device certificates reach enrollment and renewal only",
                ))
            }
            Caller::User { email, .. } => {
                grant.role = Some(
                    self.users()
                        .authorize(email, target.tenant, op.permission())?,
                );
            }
            Caller::Key { scope, .. } => {
                let action = op.key_action().ok_or_else(|| {
                    denied(
                        Code::ActionNotGranted,
                        format!("API keys may not {}: a person must", op.name()),
                    )
                })?;
                scope.check(&Request {
                    action,
                    tenant: target.tenant,
                    device: target.device,
                    stream: target.stream,
                    source: from.source,
                    origin: from.web,
                    resolution_s: target.resolution_s,
                    now_ns: from.now_ns,
                })?;
                grant.scope = Some(scope.as_ref().clone());
            }
        }
        if let Some(device) = target.device {
            // Ownership is read now: a transferred device is gone from the old tenant.
            if self.devices().owner(device)?.as_deref() != Some(target.tenant) {
                return Err(denied(Code::NotFound, "no such device in this tenant"));
            }
        }
        Ok(grant)
    }

    /// A root key minted by the user of `grant` (from `authorize(.., Op::MintKey, ..)`),
    /// within the user's own rights. Returns (id, token).
    pub fn mint_key(&self, grant: &Grant, scope: &Scope) -> Result<(String, String), Denied> {
        let role = grant
            .role
            .ok_or_else(|| denied(Code::Forbidden, "only people mint root keys"))?;
        if scope.tenant != grant.tenant {
            return Err(denied(
                Code::ScopeWidened,
                "a key minted here can reach this tenant only",
            ));
        }
        if let Some(a) = scope
            .actions
            .iter()
            .find(|a| !key_actions(role).contains(a))
        {
            return Err(denied(
                Code::ScopeWidened,
                format!("a {} cannot give a key the action {a:?}", role.as_str()),
            ));
        }
        if scope.not_after_ns <= scope.not_before_ns {
            return Err(denied(
                Code::BadRequest,
                "the key's validity window is empty",
            ));
        }
        Ok(self.keys.create(scope)?)
    }

    /// A child of the key `parent` (which must hold `issue` and may delegate), audited.
    pub fn delegate(
        &mut self,
        parent: &Caller,
        child: &Scope,
        from: Origin,
    ) -> Result<(String, String), Denied> {
        let outcome = match parent {
            Caller::Key { token, .. } => self
                .keys
                .delegate(token, child, from.source, from.web, from.now_ns)
                .map_err(Denied::from),
            _ => Err(denied(
                Code::DelegationRefused,
                "child keys are minted with the parent key as the bearer",
            )),
        };
        let tenant = child.tenant.clone();
        self.audit(
            &tenant,
            &parent.actor(),
            "issue",
            &tenant,
            from,
            outcome.as_ref().map(|_| ()),
        )?;
        outcome
    }
}
