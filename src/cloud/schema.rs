//! The cloud database's schema: every table of samples, identities, access and audit,
//! each with the one module that owns it, in one numbered list of migrations (the same
//! on SQLite and PostgreSQL; `crate::schema` runs them). Nothing else creates a table.

use crate::schema::{Migration, Schema, Step};

pub const CLOUD: Schema = Schema {
    name: "cloud database",
    migrations: &[
        Migration {
            version: 1,
            what: "the tables of release 0.1",
            older_can_read: false,
            steps: &[
                Step {
                    owner: "cloud::registry",
                    sql: "
CREATE TABLE IF NOT EXISTS enroll_tokens(
    token_hash BLOB PRIMARY KEY, device TEXT NOT NULL, created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL, used_ns INTEGER, spent_key BLOB);
CREATE TABLE IF NOT EXISTS identity_events(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, device TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL, peer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked(
    device TEXT PRIMARY KEY, ts_ns INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_ek(
    device TEXT PRIMARY KEY, ek BLOB NOT NULL, registered_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS challenges(
    id TEXT PRIMARY KEY, device TEXT NOT NULL, credential_hash BLOB NOT NULL, csr TEXT NOT NULL,
    token_hash BLOB NOT NULL, expires_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS certificates(
    serial TEXT PRIMARY KEY, device TEXT NOT NULL, key_fingerprint TEXT NOT NULL,
    not_after_ns INTEGER NOT NULL, issued_ns INTEGER NOT NULL);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::iam::users",
                    sql: "
CREATE TABLE IF NOT EXISTS tenants(id TEXT PRIMARY KEY, created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    email TEXT PRIMARY KEY, password TEXT NOT NULL, system INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS memberships(
    email TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY(email, tenant));
CREATE TABLE IF NOT EXISTS reset_tokens(
    token_hash BLOB PRIMARY KEY, email TEXT NOT NULL, expires_ns INTEGER NOT NULL, used_ns INTEGER);
CREATE TABLE IF NOT EXISTS sessions(
    token_hash BLOB PRIMARY KEY, email TEXT NOT NULL, expires_ns INTEGER NOT NULL);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::iam::devices",
                    sql: "
CREATE TABLE IF NOT EXISTS devices(
    device TEXT PRIMARY KEY, claim_hash BLOB NOT NULL, tenant TEXT, state TEXT NOT NULL,
    updated_ns INTEGER NOT NULL);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::iam::audit",
                    sql: "
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
    prev BLOB NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head(one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS security_events(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL,
    actor TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::iam::keys",
                    sql: "
CREATE TABLE IF NOT EXISTS api_keys(
    id TEXT PRIMARY KEY, parent TEXT, secret_hash BLOB NOT NULL, scope TEXT NOT NULL,
    created_ns INTEGER NOT NULL, revoked_ns INTEGER);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::api::webhook",
                    sql: "
CREATE TABLE IF NOT EXISTS webhooks(
    tenant TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, updated_ns INTEGER NOT NULL);",
                    postgres: None,
                },
                Step {
                    owner: "cloud::watch",
                    sql: "
CREATE TABLE IF NOT EXISTS device_networks(
    device TEXT NOT NULL, network TEXT NOT NULL, first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL, PRIMARY KEY(device, network));
CREATE TABLE IF NOT EXISTS device_rates(
    device TEXT PRIMARY KEY, minute INTEGER NOT NULL, count INTEGER NOT NULL, normal REAL,
    minutes INTEGER NOT NULL);",
                    postgres: None,
                },
                // Release 0.1 gave the samples a different shape on each database.
                Step {
                    owner: "cloud::store",
                    sql: "
CREATE TABLE IF NOT EXISTS samples(
    device TEXT NOT NULL, seq INTEGER NOT NULL, point TEXT NOT NULL,
    ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, value, quality TEXT NOT NULL,
    time TEXT NOT NULL, received_ns INTEGER NOT NULL,
    PRIMARY KEY(device, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_by_point ON samples(device, point, ts_ns);
CREATE TABLE IF NOT EXISTS gaps(
    device TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    received_ns INTEGER NOT NULL, PRIMARY KEY(device, first, last)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_state(
    device TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejected(
    id INTEGER PRIMARY KEY, device TEXT, topic TEXT, reason TEXT NOT NULL,
    payload BLOB, received_ns INTEGER NOT NULL);",
                    postgres: Some("
CREATE TABLE IF NOT EXISTS samples(
    device TEXT NOT NULL, seq BIGINT NOT NULL, point TEXT NOT NULL, ts_ns BIGINT NOT NULL,
    kind TEXT NOT NULL, fval DOUBLE PRECISION, ival BIGINT, sval TEXT, bval BYTEA,
    quality TEXT NOT NULL, time TEXT NOT NULL, received_ns BIGINT NOT NULL,
    PRIMARY KEY(device, seq));
CREATE INDEX IF NOT EXISTS samples_by_point ON samples(device, point, ts_ns);
CREATE INDEX IF NOT EXISTS samples_by_arrival ON samples(received_ns);
CREATE TABLE IF NOT EXISTS gaps(
    device TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL,
    received_ns BIGINT NOT NULL, PRIMARY KEY(device, first, last));
CREATE TABLE IF NOT EXISTS device_state(
    device TEXT PRIMARY KEY, state TEXT NOT NULL, detail TEXT, updated_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected(
    id BIGSERIAL PRIMARY KEY, device TEXT, topic TEXT, reason TEXT NOT NULL, payload BYTEA,
    received_ns BIGINT NOT NULL);"),
                },
            ],
        },
        Migration {
            version: 2,
            what: "samples in one typed column per kind on SQLite too (as on PostgreSQL), indexed by arrival",
            older_can_read: false,
            steps: &[Step {
                owner: "cloud::store",
                sql: "
CREATE TABLE samples_typed(
    device TEXT NOT NULL, seq INTEGER NOT NULL, point TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL, fval REAL, ival INTEGER, sval TEXT, bval BLOB,
    quality TEXT NOT NULL, time TEXT NOT NULL, received_ns INTEGER NOT NULL,
    PRIMARY KEY(device, seq)) WITHOUT ROWID;
INSERT INTO samples_typed
    SELECT device, seq, point, ts_ns, kind,
        CASE WHEN kind = 'float' THEN value END,
        CASE WHEN kind IN ('int', 'uint', 'bool') THEN value END,
        CASE WHEN kind = 'str' THEN value END,
        CASE WHEN kind = 'bytes' THEN value END,
        quality, time, received_ns
    FROM samples;
DROP TABLE samples;
ALTER TABLE samples_typed RENAME TO samples;
CREATE INDEX samples_by_point ON samples(device, point, ts_ns);
CREATE INDEX samples_by_arrival ON samples(received_ns);",
                postgres: Some(""),
            }],
        },
        Migration {
            version: 3,
            what: "commands to gateways over the downlink, kept until replied",
            // A new table: a release that does not know it leaves it alone.
            older_can_read: true,
            steps: &[Step {
                owner: "cloud::downlink",
                sql: "
CREATE TABLE commands(
    id TEXT PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL, body TEXT,
    issued_by TEXT NOT NULL, issued_ns INTEGER NOT NULL, state TEXT NOT NULL,
    sent_ns INTEGER, sends INTEGER NOT NULL, replied_ns INTEGER, outcome TEXT, error TEXT);
CREATE INDEX commands_pending ON commands(state, sent_ns);
CREATE INDEX commands_by_device ON commands(device, issued_ns);",
                postgres: None,
            }],
        },
        Migration {
            version: 4,
            what: "releases per tenant: signed metadata, and the image stored by its hash",
            older_can_read: true,
            steps: &[Step {
                owner: "cloud::releases",
                sql: "
CREATE TABLE releases(
    tenant TEXT NOT NULL, version TEXT NOT NULL, hardware TEXT NOT NULL,
    sha256 TEXT NOT NULL, length INTEGER NOT NULL, metadata TEXT NOT NULL,
    added_ns INTEGER NOT NULL, PRIMARY KEY(tenant, version));
CREATE INDEX releases_by_image ON releases(sha256);",
                postgres: None,
            }],
        },
        Migration {
            version: 5,
            what: "device groups and staged rollouts, each device's update as it reports it",
            older_can_read: true,
            steps: &[Step {
                owner: "cloud::rollouts",
                sql: "
CREATE TABLE device_groups(
    tenant TEXT NOT NULL, device TEXT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY(tenant, device));
CREATE TABLE rollouts(
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version TEXT NOT NULL, stages TEXT NOT NULL,
    max_failures INTEGER NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT,
    chain TEXT, created_by TEXT NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE rollout_devices(
    rollout TEXT NOT NULL, device TEXT NOT NULL, stage INTEGER NOT NULL, command TEXT NOT NULL,
    phase TEXT NOT NULL, reason TEXT, bytes INTEGER NOT NULL, total INTEGER NOT NULL,
    steps INTEGER NOT NULL, updated_ns INTEGER NOT NULL, PRIMARY KEY(rollout, device));
CREATE INDEX rollout_devices_by_command ON rollout_devices(command);",
                postgres: None,
            }],
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of a new database, each created by one owner only, and nothing in
    /// `src` creates a table outside the schemas.
    #[test]
    fn each_table_has_one_owner() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        CLOUD.migrate_sqlite(&mut c, "memory").unwrap();
        let mut q = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let made: Vec<String> = q
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let owners = crate::schema::tables(&CLOUD);
        for t in &made {
            if t == "schema_version" {
                continue;
            }
            let of: Vec<_> = owners.iter().filter(|(name, _)| name == t).collect();
            assert_eq!(of.len(), 1, "{t}: owners {of:?}");
            println!("{t:<18} {}", of[0].1);
        }
        for (t, _) in &owners {
            assert!(made.contains(t), "{t} is listed but not made");
        }
    }
}
