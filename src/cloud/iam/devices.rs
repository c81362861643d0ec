//! The device lifecycle: registered at manufacture (serial and a claim code printed on
//! the box; the cloud keeps the code's hash), claimed by a user of a tenant who holds the
//! code, enrolled (a certificate, see `cloud::enroll`), transferred to another tenant,
//! revoked. Which tenant owns a device is read at every check, so a transfer takes
//! access away from the old tenant at once.

use super::users::{Permission, UserError, Users};
use crate::args;
use crate::cloud::sql::Db;
use sha2::{Digest, Sha256};

fn hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.trim().to_ascii_uppercase().as_bytes()).to_vec()
}

pub struct Devices<'a> {
    db: &'a Db,
}

impl<'a> Devices<'a> {
    /// Over the cloud database (`cloud::schema` made its tables).
    pub fn new(db: &'a Db) -> Devices<'a> {
        Devices { db }
    }

    /// At manufacture: the device id and its claim code.
    pub fn register(&self, device: &str, claim_code: &str) -> Result<(), UserError> {
        if crate::ids::DeviceId::parse(device).is_err() || claim_code.trim().len() < 8 {
            return Err(UserError::BadRequest(
                "a valid device id and a claim code of 8 characters or more".into(),
            ));
        }
        let n = self.db.execute(
            "INSERT INTO devices(device, claim_hash, state, updated_ns) VALUES ($1, $2, 'registered', $3)
             ON CONFLICT DO NOTHING",
            args![device, hash(claim_code), crate::sample::now_ns()],
        )?;
        if n == 0 {
            return Err(UserError::Conflict(format!(
                "{device} is registered already"
            )));
        }
        Ok(())
    }

    /// The tenant that owns `device`, if any.
    /// The devices `tenant` holds that are not revoked (a rollout's fleet).
    pub fn active_in(&self, tenant: &str) -> Result<Vec<String>, crate::cloud::sql::DbError> {
        self.db
            .query(
                "SELECT device FROM devices WHERE tenant = $1 AND state <> 'revoked' ORDER BY device",
                args![tenant],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    pub fn owner(&self, device: &str) -> Result<Option<String>, UserError> {
        match self.db.query_opt(
            "SELECT tenant FROM devices WHERE device = $1 AND state != 'revoked'",
            args![device],
        )? {
            Some(r) => Ok(r.opt_text(0)?),
            None => Ok(None),
        }
    }

    /// The devices of a tenant: (id, state).
    pub fn list(&self, tenant: &str) -> Result<Vec<(String, String)>, UserError> {
        let rows = self.db.query(
            "SELECT device, state FROM devices WHERE tenant = $1 AND state != 'revoked' ORDER BY device",
            args![tenant],
        )?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect::<Result<_, crate::cloud::sql::DbError>>()?)
    }

    pub fn state(&self, device: &str) -> Result<Option<String>, UserError> {
        match self
            .db
            .query_opt("SELECT state FROM devices WHERE device = $1", args![device])?
        {
            Some(r) => Ok(Some(r.text(0)?)),
            None => Ok(None),
        }
    }

    /// `user` claims `device` for `tenant` with the code from the box.
    pub fn claim(
        &self,
        user: &str,
        tenant: &str,
        device: &str,
        code: &str,
    ) -> Result<(), UserError> {
        Users::new(self.db).authorize(user, tenant, Permission::ManageDevices)?;
        self.claim_for(tenant, device, code)
    }

    /// Binds `device` to `tenant` if `code` is its claim code (the caller was authorized
    /// for `tenant`).
    pub fn claim_for(&self, tenant: &str, device: &str, code: &str) -> Result<(), UserError> {
        let row = match self.db.query_opt(
            "SELECT claim_hash, tenant FROM devices WHERE device = $1",
            args![device],
        )? {
            Some(r) => Some((r.blob(0)?, r.opt_text(1)?)),
            None => None,
        };
        // An unknown device and a wrong code get the same answer.
        let wrong = || UserError::Forbidden("the device id or the claim code is wrong".into());
        let (want, owner) = row.ok_or_else(wrong)?;
        if want != hash(code) {
            return Err(wrong());
        }
        if owner.is_some() {
            return Err(UserError::Conflict(format!(
                "{device} is claimed already: its owner can transfer it"
            )));
        }
        self.db.execute(
            "UPDATE devices SET tenant = $1, state = 'claimed', updated_ns = $2 WHERE device = $3",
            args![tenant, crate::sample::now_ns(), device],
        )?;
        Ok(())
    }

    /// An owner of the device's tenant hands it to another tenant.
    pub fn transfer(&self, user: &str, device: &str, to: &str) -> Result<(), UserError> {
        let from = self.owner(device)?.ok_or(UserError::NotFound)?;
        Users::new(self.db).authorize(user, &from, Permission::TransferDevices)?;
        self.move_to(device, to)
    }

    /// Hands `device` to the tenant `to`, which must exist (the caller was authorized for
    /// the device's current tenant).
    pub fn move_to(&self, device: &str, to: &str) -> Result<(), UserError> {
        let exists = self
            .db
            .query_opt("SELECT 1 FROM tenants WHERE id = $1", args![to])?;
        if exists.is_none() {
            return Err(UserError::BadRequest(format!("there is no tenant `{to}`")));
        }
        self.db.execute(
            "UPDATE devices SET tenant = $1, updated_ns = $2 WHERE device = $3",
            args![to, crate::sample::now_ns(), device],
        )?;
        Ok(())
    }

    /// Whether `user` may do `what` with `device`: not_found unless the user has a role
    /// in the tenant that owns it now.
    pub fn authorize(&self, user: &str, device: &str, what: Permission) -> Result<(), UserError> {
        let tenant = self.owner(device)?.ok_or(UserError::NotFound)?;
        Users::new(self.db)
            .authorize(user, &tenant, what)
            .map(|_| ())
    }

    /// An admin of the owning tenant revokes the device. (Refusing its certificate at
    /// connect is `registry::revoke`, `fieldgate-cloud revoke`; the two are joined when
    /// the API that calls both exists.)
    pub fn revoke(&self, user: &str, device: &str) -> Result<(), UserError> {
        self.authorize(user, device, Permission::RevokeKeys)?;
        self.set_revoked(device)
    }

    /// Marks `device` revoked: no tenant reaches it any more.
    pub fn set_revoked(&self, device: &str) -> Result<(), UserError> {
        self.db.execute(
            "UPDATE devices SET state = 'revoked', updated_ns = $1 WHERE device = $2",
            args![crate::sample::now_ns(), device],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::iam::users::Role;

    #[test]
    fn register_claim_transfer_revoke() {
        let db = Db::memory().unwrap();
        let d = Devices::new(&db);
        let u = Users::new(&db);
        u.register("ann@acme.example", "acme password", "acme")
            .unwrap();
        u.register("bob@globex.example", "globex password", "globex")
            .unwrap();
        u.create_system_account("prov@fieldgate.example", "system account pw")
            .unwrap();
        u.register_by_system(
            "prov@fieldgate.example",
            "vic@acme.example",
            "viewer password",
            "acme",
            Role::Viewer,
        )
        .unwrap();

        d.register("pump-7", "K7Q2-MX9P").unwrap();
        assert!(matches!(
            d.register("pump-7", "other-code"),
            Err(UserError::Conflict(_))
        ));
        // A viewer may not claim; a wrong code or an unknown device gives one answer.
        assert!(matches!(
            d.claim("vic@acme.example", "acme", "pump-7", "K7Q2-MX9P"),
            Err(UserError::Forbidden(_))
        ));
        assert_eq!(
            d.claim("ann@acme.example", "acme", "pump-7", "WRONG-CODE"),
            d.claim("ann@acme.example", "acme", "pump-9", "K7Q2-MX9P")
        );
        d.claim("ann@acme.example", "acme", "pump-7", "k7q2-mx9p")
            .unwrap();
        assert_eq!(d.state("pump-7").unwrap().as_deref(), Some("claimed"));
        assert!(matches!(
            d.claim("bob@globex.example", "globex", "pump-7", "K7Q2-MX9P"),
            Err(UserError::Conflict(_))
        ));
        d.authorize("vic@acme.example", "pump-7", Permission::Read)
            .unwrap();
        assert_eq!(
            d.authorize("bob@globex.example", "pump-7", Permission::Read),
            Err(UserError::NotFound)
        );

        // Transfer: only an owner; the old tenant loses access at once.
        assert!(matches!(
            d.transfer("vic@acme.example", "pump-7", "globex"),
            Err(UserError::Forbidden(_))
        ));
        d.transfer("ann@acme.example", "pump-7", "globex").unwrap();
        assert_eq!(
            d.authorize("ann@acme.example", "pump-7", Permission::Read),
            Err(UserError::NotFound)
        );
        assert_eq!(
            d.authorize("vic@acme.example", "pump-7", Permission::Read),
            Err(UserError::NotFound)
        );
        d.authorize("bob@globex.example", "pump-7", Permission::Read)
            .unwrap();

        // Revoke: then nobody reaches it.
        assert_eq!(
            d.revoke("ann@acme.example", "pump-7"),
            Err(UserError::NotFound)
        );
        d.revoke("bob@globex.example", "pump-7").unwrap();
        assert_eq!(
            d.authorize("bob@globex.example", "pump-7", Permission::Read),
            Err(UserError::NotFound)
        );
        assert_eq!(d.state("pump-7").unwrap().as_deref(), Some("revoked"));
    }
}
