//! Tenants, users and their roles. Passwords are argon2id hashes (PHC strings); users
//! register themselves (and own a new tenant) or are registered by a system account;
//! a forgotten password is reset with a one-time token kept only as a hash.
//!
//! Roles, per tenant, each including the ones below it:
//!
//! | role | may |
//! | --- | --- |
//! | viewer | read devices, datastreams, gaps |
//! | operator | also claim and configure devices, mint API keys within its own rights |
//! | admin | also add users, set roles below owner, revoke keys and devices |
//! | owner | also transfer devices to another tenant, make owners, delete the tenant |

use crate::args;
use crate::cloud::code::Code;
use crate::cloud::sql::{Db, DbError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// How long a session lasts.
pub const SESSION_NS: i64 = 12 * 3_600_000_000_000;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            "owner" => Role::Owner,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// What a user may want to do in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    ManageDevices,
    MintKeys,
    ManageUsers,
    RevokeKeys,
    TransferDevices,
    MakeOwners,
    ReadAudit,
}

impl Permission {
    /// The least role that holds it.
    fn needs(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::ManageDevices | Permission::MintKeys => Role::Operator,
            Permission::ManageUsers | Permission::RevokeKeys | Permission::ReadAudit => Role::Admin,
            Permission::TransferDevices | Permission::MakeOwners => Role::Owner,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    BadRequest(String),
    Conflict(String),
    WrongCredentials,
    Forbidden(String),
    /// The same answer whether the tenant exists or the user is not in it.
    NotFound,
    TokenInvalid,
    Store(String),
}

impl UserError {
    /// The refusal's code.
    pub fn code(&self) -> Code {
        match self {
            UserError::BadRequest(_) => Code::BadRequest,
            UserError::Conflict(_) => Code::Conflict,
            UserError::WrongCredentials => Code::Unauthenticated,
            UserError::Forbidden(_) => Code::Forbidden,
            UserError::NotFound => Code::NotFound,
            UserError::TokenInvalid => Code::TokenInvalid,
            UserError::Store(_) => Code::Internal,
        }
    }

    /// The sentence for the caller, without the code.
    pub fn message(&self) -> String {
        match self {
            UserError::BadRequest(m) | UserError::Conflict(m) | UserError::Forbidden(m) => {
                m.clone()
            }
            UserError::WrongCredentials => "wrong email or password".into(),
            UserError::NotFound => "no such tenant for this user".into(),
            UserError::TokenInvalid => "the reset token is unknown, used or expired".into(),
            UserError::Store(e) => e.clone(),
        }
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for UserError {}

impl From<DbError> for UserError {
    fn from(e: DbError) -> Self {
        UserError::Store(e.to_string())
    }
}

/// The longest password taken (argon2 reads all of it).
pub const MAX_PASSWORD: usize = 1024;

/// A password's length rules, checked before anything costly.
pub fn check_password(password: &str) -> Result<(), UserError> {
    let n = password.chars().count();
    if n < 10 {
        return Err(UserError::BadRequest(
            "a password needs at least 10 characters".into(),
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(UserError::BadRequest(format!(
            "a password has at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// Whether `password` matches the PHC string `stored`; the same error for every
/// mismatch. Tens of milliseconds of CPU: see `hash_password`.
pub fn verify_password(password: &str, stored: &str) -> Result<(), UserError> {
    if password.len() > MAX_PASSWORD {
        return Err(UserError::WrongCredentials);
    }
    let parsed = PasswordHash::new(stored).map_err(|_| UserError::WrongCredentials)?;
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .map_err(|_| UserError::WrongCredentials)
}

/// An argon2id PHC string, made by `hash_password`.
pub struct PasswordHashed(String);

/// Hashes a password (argon2id, tens of milliseconds of CPU): callers do it outside
/// any shared lock, within `crate::cloud::iam::work`'s limit.
pub fn hash_password(password: &str) -> Result<PasswordHashed, UserError> {
    check_password(password)?;
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| UserError::Store(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| PasswordHashed(h.to_string()))
        .map_err(|e| UserError::Store(e.to_string()))
}

fn check_email(e: &str) -> Result<(), UserError> {
    let valid = e.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty()
            && domain.contains('.')
            && e.len() <= 254
            && !e.contains(char::is_whitespace)
    });
    if valid {
        Ok(())
    } else {
        Err(UserError::BadRequest(format!(
            "`{e}` is not an email address"
        )))
    }
}

pub struct Users<'a> {
    db: &'a Db,
}

impl<'a> Users<'a> {
    /// Over the cloud database (`cloud::schema` made its tables).
    pub fn new(db: &'a Db) -> Users<'a> {
        Users { db }
    }

    fn add_user(
        &self,
        email: &str,
        password: &PasswordHashed,
        system: bool,
    ) -> Result<(), UserError> {
        check_email(email)?;
        let n = self.db.execute(
            "INSERT INTO users(email, password, system, created_ns) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            args![
                email.to_lowercase(),
                &password.0,
                system,
                crate::sample::now_ns()
            ],
        )?;
        if n == 0 {
            return Err(UserError::Conflict(format!(
                "{email} is registered already"
            )));
        }
        Ok(())
    }

    /// What self-registration would refuse before any password is hashed: a bad email
    /// or tenant name, an email or tenant taken.
    pub fn check_registration(&self, email: &str, tenant: &str) -> Result<(), UserError> {
        check_email(email)?;
        if let Err(e) = crate::ids::TenantName::parse(tenant) {
            return Err(UserError::BadRequest(e.to_string()));
        }
        if self
            .db
            .query_opt("SELECT 1 FROM tenants WHERE id = $1", args![tenant])?
            .is_some()
        {
            return Err(UserError::Conflict(format!(
                "the tenant name `{tenant}` is taken"
            )));
        }
        if self.exists(email)? {
            return Err(UserError::Conflict(format!(
                "{email} is registered already"
            )));
        }
        Ok(())
    }

    /// Self-registration (for tools and tests; the API hashes apart): as
    /// `register_hashed`.
    pub fn register(&self, email: &str, password: &str, tenant: &str) -> Result<(), UserError> {
        self.check_registration(email, tenant)?;
        self.register_hashed(email, &hash_password(password)?, tenant)
    }

    /// Self-registration: a new user who owns a new tenant.
    pub fn register_hashed(
        &self,
        email: &str,
        password: &PasswordHashed,
        tenant: &str,
    ) -> Result<(), UserError> {
        self.check_registration(email, tenant)?;
        self.add_user(email, password, false)?;
        self.db.execute(
            "INSERT INTO tenants(id, created_ns) VALUES ($1, $2)",
            args![tenant, crate::sample::now_ns()],
        )?;
        self.set_role(email, tenant, Role::Owner)
    }

    /// A system account (made with `system = true` by an administrator) registers a user
    /// into a tenant with a role.
    pub fn register_by_system(
        &self,
        system: &str,
        email: &str,
        password: &str,
        tenant: &str,
        role: Role,
    ) -> Result<(), UserError> {
        self.register_by_system_hashed(system, email, &hash_password(password)?, tenant, role)
    }

    /// As `register_by_system`, with the password hashed by the caller.
    pub fn register_by_system_hashed(
        &self,
        system: &str,
        email: &str,
        password: &PasswordHashed,
        tenant: &str,
        role: Role,
    ) -> Result<(), UserError> {
        let is_system = match self.db.query_opt(
            "SELECT system FROM users WHERE email = $1",
            args![system.to_lowercase()],
        )? {
            Some(r) => r.int(0)? != 0,
            None => false,
        };
        if !is_system {
            return Err(UserError::Forbidden(
                "only system accounts register users for others".into(),
            ));
        }
        self.add_user(email, password, false)?;
        self.db.execute(
            "INSERT INTO tenants(id, created_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            args![tenant, crate::sample::now_ns()],
        )?;
        self.set_role(email, tenant, role)
    }

    pub fn create_system_account(&self, email: &str, password: &str) -> Result<(), UserError> {
        self.add_user(email, &hash_password(password)?, true)
    }

    fn set_role(&self, email: &str, tenant: &str, role: Role) -> Result<(), UserError> {
        self.db.execute(
            "INSERT INTO memberships(email, tenant, role) VALUES ($1, $2, $3)
             ON CONFLICT(email, tenant) DO UPDATE SET role = excluded.role",
            args![email.to_lowercase(), tenant, role.as_str()],
        )?;
        Ok(())
    }

    /// The stored hash to check a login against (a dummy for an unknown email, so that
    /// timing does not tell who exists). Cheap: `verify_password` does the work, outside
    /// any shared lock.
    pub fn stored_password(&self, email: &str) -> Result<String, UserError> {
        let row = self.db.query_opt(
            "SELECT password FROM users WHERE email = $1",
            args![email.to_lowercase()],
        )?;
        Ok(match row {
            Some(r) => r.text(0)?,
            None => "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$q4Yy6k0Ck9hC0b2gVbqX8o7fUQ1n3WcqvJZ3pJmPZk0".into(),
        })
    }

    /// Checks a password in one call (for tools and tests; the API splits it).
    pub fn login(&self, email: &str, password: &str) -> Result<(), UserError> {
        verify_password(password, &self.stored_password(email)?)
    }

    /// A session for a user who just logged in: `fgs_` and 48 hex digits, valid for
    /// twelve hours; only its hash is kept.
    pub fn start_session(&self, email: &str) -> Result<String, UserError> {
        let secret: String = crate::hex::encode(&rand::random::<[u8; 24]>());
        let now = crate::sample::now_ns();
        self.db
            .execute("DELETE FROM sessions WHERE expires_ns < $1", args![now])?;
        self.db.execute(
            "INSERT INTO sessions(token_hash, email, expires_ns) VALUES ($1, $2, $3)",
            args![
                Sha256::digest(secret.as_bytes()).to_vec(),
                email.to_lowercase(),
                now + SESSION_NS
            ],
        )?;
        Ok(format!("fgs_{secret}"))
    }

    /// The user of a live session and whether it is a system account.
    pub fn session(&self, token: &str) -> Result<Option<(String, bool)>, UserError> {
        let Some(secret) = token.strip_prefix("fgs_") else {
            return Ok(None);
        };
        match self.db.query_opt(
            "SELECT s.email, u.system FROM sessions s JOIN users u ON u.email = s.email
             WHERE s.token_hash = $1 AND s.expires_ns > $2",
            args![
                Sha256::digest(secret.as_bytes()).to_vec(),
                crate::sample::now_ns()
            ],
        )? {
            Some(r) => Ok(Some((r.text(0)?, r.int(1)? != 0))),
            None => Ok(None),
        }
    }

    pub fn end_session(&self, token: &str) -> Result<(), UserError> {
        let secret = token.strip_prefix("fgs_").unwrap_or(token);
        self.db.execute(
            "DELETE FROM sessions WHERE token_hash = $1",
            args![Sha256::digest(secret.as_bytes()).to_vec()],
        )?;
        Ok(())
    }

    /// The tenants a user has a role in.
    pub fn memberships(&self, email: &str) -> Result<Vec<(String, Role)>, UserError> {
        self.pairs(
            "SELECT tenant, role FROM memberships WHERE email = $1 ORDER BY tenant",
            &email.to_lowercase(),
        )
    }

    /// The members of a tenant.
    pub fn members(&self, tenant: &str) -> Result<Vec<(String, Role)>, UserError> {
        self.pairs(
            "SELECT email, role FROM memberships WHERE tenant = $1 ORDER BY email",
            tenant,
        )
    }

    /// (name, role) rows of `sql` with one parameter.
    fn pairs(&self, sql: &str, param: &str) -> Result<Vec<(String, Role)>, UserError> {
        let mut out = Vec::new();
        for row in self.db.query(sql, args![param])? {
            if let Some(role) = Role::parse(&row.text(1)?) {
                out.push((row.text(0)?, role));
            }
        }
        Ok(out)
    }

    /// The user's role in a tenant.
    pub fn role(&self, email: &str, tenant: &str) -> Result<Option<Role>, UserError> {
        match self.db.query_opt(
            "SELECT role FROM memberships WHERE email = $1 AND tenant = $2",
            args![email.to_lowercase(), tenant],
        )? {
            Some(r) => Ok(Role::parse(&r.text(0)?)),
            None => Ok(None),
        }
    }

    /// Whether `email` may do `what` in `tenant`: not_found for a tenant it is not in,
    /// forbidden for a permission above its role.
    pub fn authorize(
        &self,
        email: &str,
        tenant: &str,
        what: Permission,
    ) -> Result<Role, UserError> {
        let role = self.role(email, tenant)?.ok_or(UserError::NotFound)?;
        if role < what.needs() {
            return Err(UserError::Forbidden(format!(
                "{what:?} needs the role {} or above; {email} is {}",
                what.needs().as_str(),
                role.as_str()
            )));
        }
        Ok(role)
    }

    /// `actor` gives `email` a role in `tenant` (admins up to admin, owners anything).
    pub fn grant(
        &self,
        actor: &str,
        email: &str,
        tenant: &str,
        role: Role,
    ) -> Result<(), UserError> {
        let needed = if role == Role::Owner {
            Permission::MakeOwners
        } else {
            Permission::ManageUsers
        };
        let own = self.authorize(actor, tenant, needed)?;
        if !self.exists(email)? {
            return Err(UserError::BadRequest(format!(
                "{email} has no account: people register themselves, or a system account registers them"
            )));
        }
        let current = self.role(email, tenant)?;
        let yourself = actor.eq_ignore_ascii_case(email);
        if !yourself && current.is_some_and(|c| c >= own) {
            return Err(UserError::Forbidden(format!(
                "{email} is {} here: a {} changes only the roles of those below it",
                current.map_or("", |c| c.as_str()),
                own.as_str()
            )));
        }
        if yourself && current.is_some_and(|c| role > c) {
            return Err(UserError::Forbidden("no one raises their own role".into()));
        }
        if current == Some(Role::Owner) && role != Role::Owner && self.owners(tenant)? < 2 {
            return Err(UserError::Conflict(format!(
                "{email} is the last owner of {tenant}: make another owner first"
            )));
        }
        self.set_role(email, tenant, role)
    }

    fn owners(&self, tenant: &str) -> Result<i64, UserError> {
        let row = self.db.query_opt(
            "SELECT count(*) FROM memberships WHERE tenant = $1 AND role = 'owner'",
            args![tenant],
        )?;
        Ok(row.map_or(Ok(0), |r| r.int(0))?)
    }

    fn exists(&self, email: &str) -> Result<bool, UserError> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM users WHERE email = $1",
                args![email.to_lowercase()],
            )?
            .is_some())
    }

    /// A one-time password reset token, valid for an hour; only its hash is kept.
    pub fn reset_token(&self, email: &str) -> Result<Option<String>, UserError> {
        if !self.exists(email)? {
            return Ok(None);
        }
        let token: String = crate::hex::encode(&rand::random::<[u8; 24]>());
        self.db.execute(
            "INSERT INTO reset_tokens(token_hash, email, expires_ns) VALUES ($1, $2, $3)",
            args![
                Sha256::digest(token.as_bytes()).to_vec(),
                email.to_lowercase(),
                crate::sample::now_ns() + 3_600_000_000_000
            ],
        )?;
        Ok(Some(token))
    }

    /// Spends a reset token: the account it was issued for, or `TokenInvalid`. Cheap
    /// (no password hashing), so it comes first: an unknown token costs nothing.
    pub fn spend_reset_token(&self, token: &str) -> Result<String, UserError> {
        let h = Sha256::digest(token.trim().as_bytes()).to_vec();
        Ok(self
            .db
            .query_opt(
                "UPDATE reset_tokens SET used_ns = $2 WHERE token_hash = $1 AND used_ns IS NULL AND expires_ns > $2 RETURNING email",
                args![h, crate::sample::now_ns()],
            )?
            .ok_or(UserError::TokenInvalid)?
            .text(0)?)
    }

    /// Sets the password of `email` to the argon2 `hash` (made by `hash_password`, off
    /// any lock), and ends everything the old password opened: every session of the
    /// account and every other reset token still outstanding.
    pub fn set_password(&self, email: &str, hash: &PasswordHashed) -> Result<(), UserError> {
        let now = crate::sample::now_ns();
        self.db.execute(
            "UPDATE users SET password = $1 WHERE email = $2",
            args![&hash.0, email],
        )?;
        self.db
            .execute("DELETE FROM sessions WHERE email = $1", args![email])?;
        self.db.execute(
            "UPDATE reset_tokens SET used_ns = $2 WHERE email = $1 AND used_ns IS NULL",
            args![email, now],
        )?;
        Ok(())
    }

    /// A reset in one call (the token first, then the hash): for tools and tests. The
    /// API spends the token and sets the password apart, hashing between the two
    /// outside the IAM lock.
    pub fn reset_password(&self, token: &str, new_password: &str) -> Result<(), UserError> {
        check_password(new_password)?;
        let email = self.spend_reset_token(token)?;
        self.set_password(&email, &hash_password(new_password)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_login_roles_and_reset() {
        let db = Db::memory().unwrap();
        let u = Users::new(&db);
        u.register("ann@acme.example", "correct horse battery", "acme")
            .unwrap();
        assert!(matches!(
            u.register("ANN@acme.example", "correct horse battery", "acme2"),
            Err(UserError::Conflict(_))
        ));
        assert!(matches!(
            u.register("bob@globex.example", "short", "globex"),
            Err(UserError::BadRequest(_))
        ));
        assert!(matches!(
            u.register("bob@globex.example", "long enough pw", "acme"),
            Err(UserError::Conflict(_))
        ));
        u.register("bob@globex.example", "long enough pw", "globex")
            .unwrap();
        let stored = db
            .query_opt(
                "SELECT password FROM users WHERE email = 'ann@acme.example'",
                &[],
            )
            .unwrap()
            .unwrap()
            .text(0)
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");

        u.login("ann@acme.example", "correct horse battery")
            .unwrap();
        assert_eq!(
            u.login("ann@acme.example", "wrong horse battery"),
            Err(UserError::WrongCredentials)
        );
        assert_eq!(
            u.login("nobody@acme.example", "correct horse battery"),
            Err(UserError::WrongCredentials)
        );

        // Roles: the owner adds a viewer; the viewer cannot manage users; other tenants
        // are not found.
        u.create_system_account("provisioning@fieldgate.example", "system account pw")
            .unwrap();
        u.register_by_system(
            "provisioning@fieldgate.example",
            "vic@acme.example",
            "viewer password",
            "acme",
            Role::Viewer,
        )
        .unwrap();
        assert!(matches!(
            u.register_by_system(
                "ann@acme.example",
                "eve@acme.example",
                "attacker password",
                "acme",
                Role::Owner
            ),
            Err(UserError::Forbidden(_))
        ));
        assert_eq!(
            u.authorize("vic@acme.example", "acme", Permission::Read),
            Ok(Role::Viewer)
        );
        assert!(matches!(
            u.authorize("vic@acme.example", "acme", Permission::ManageUsers),
            Err(UserError::Forbidden(_))
        ));
        assert!(matches!(
            u.grant("vic@acme.example", "vic@acme.example", "acme", Role::Owner),
            Err(UserError::Forbidden(_))
        ));
        assert_eq!(
            u.authorize("ann@acme.example", "globex", Permission::Read),
            Err(UserError::NotFound)
        );
        assert_eq!(
            u.authorize("bob@globex.example", "acme", Permission::Read),
            Err(UserError::NotFound)
        );
        u.grant("ann@acme.example", "vic@acme.example", "acme", Role::Admin)
            .unwrap();
        assert!(matches!(
            u.grant(
                "vic@acme.example",
                "bob@globex.example",
                "acme",
                Role::Owner
            ),
            Err(UserError::Forbidden(_))
        ));
        u.grant(
            "vic@acme.example",
            "bob@globex.example",
            "acme",
            Role::Operator,
        )
        .unwrap();
        assert_eq!(
            u.authorize("bob@globex.example", "acme", Permission::MintKeys),
            Ok(Role::Operator)
        );

        // Password reset: once, and only with the right token.
        assert_eq!(u.reset_token("nobody@acme.example").unwrap(), None);
        let t = u.reset_token("ann@acme.example").unwrap().unwrap();
        assert_eq!(
            u.reset_password("0".repeat(48).as_str(), "a brand new password"),
            Err(UserError::TokenInvalid)
        );
        u.reset_password(&t, "a brand new password").unwrap();
        assert_eq!(
            u.reset_password(&t, "another new password"),
            Err(UserError::TokenInvalid)
        );
        u.login("ann@acme.example", "a brand new password").unwrap();
        assert_eq!(
            u.login("ann@acme.example", "correct horse battery"),
            Err(UserError::WrongCredentials)
        );
    }
}
