//! Versioned schemas: every database records the version of its schema, and one
//! numbered, forward-only list of migrations brings it up to date when it is opened, in
//! one transaction (all of them or none).
//!
//! A database written by a newer release is never guessed at. Each migration says
//! whether a release that knows only the versions before it can still read and write a
//! database that has it (new tables, new columns with a default the older code's rows
//! get right, new indexes); the database records the oldest version whose code may open
//! it, so that a release rolled back after an update keeps working on what the update
//! migrated, and refuses by name what it cannot read (docs/storage.md).
//!
//! Release 0.1 wrote no version: its databases are version 0 here, and migration 1 of
//! each schema is what 0.1 made (`IF NOT EXISTS`, so it changes nothing in them).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Part of a migration: the statements of one owner module.
#[derive(Debug)]
pub struct Step {
    /// The module that owns the tables these statements make or change (and the only
    /// one that reads and writes them).
    pub owner: &'static str,
    /// For SQLite (the cloud translates it for PostgreSQL: `cloud::sql::postgres_ddl`).
    pub sql: &'static str,
    /// For PostgreSQL, where the translation does not fit ("" for nothing to do).
    pub postgres: Option<&'static str>,
}

#[derive(Debug)]
pub struct Migration {
    /// 1, 2, 3 … without holes.
    pub version: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    /// Whether a release that knows only the versions before this one can still open a
    /// database that has it.
    pub older_can_read: bool,
    pub steps: &'static [Step],
}

/// The migrations of one kind of database, in order.
#[derive(Debug)]
pub struct Schema {
    /// What kind of database, for messages ("gateway buffer", "cloud database").
    pub name: &'static str,
    pub migrations: &'static [Migration],
}

/// The version a database records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub version: u32,
    /// The oldest schema version whose code may open this database.
    pub readable_from: u32,
    /// The release that last migrated it.
    pub written_by: String,
}

/// The table the stamp is kept in (one row), written for SQLite.
pub const STAMP_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version(
    one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL,
    readable_from INTEGER NOT NULL, written_by TEXT NOT NULL)";
pub const STAMP_READ: &str = "SELECT version, readable_from, written_by FROM schema_version";
pub const STAMP_WRITE: &str = "INSERT INTO schema_version(one, version, readable_from, written_by)
    VALUES (1, $1, $2, $3)
    ON CONFLICT(one) DO UPDATE SET version = excluded.version,
        readable_from = excluded.readable_from, written_by = excluded.written_by";

/// This release, as stamps record it.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{place} holds {name} schema version {} (written by fieldgate {}), which only releases knowing version {} or later can read; this is fieldgate {RELEASE}, which knows versions up to {known}. Nothing was changed: run the newer release again, or restore a backup made before it",
        stored.version, stored.written_by, stored.readable_from
    )]
    Newer {
        place: String,
        name: &'static str,
        stored: Stamp,
        known: u32,
    },
    #[error("{place}: migrating the {name} to schema version {version} ({what}) failed, nothing was changed: {source}")]
    Migration {
        place: String,
        name: &'static str,
        version: u32,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{place}: the {name}'s schema version cannot be read: {source}")]
    Stamp {
        place: String,
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What opening a database does to its schema.
#[derive(Debug)]
pub enum Plan<'a> {
    /// It is at this release's version.
    Current,
    /// Run these migrations, then stamp it.
    Migrate {
        migrations: &'a [Migration],
        stamp: Stamp,
    },
    /// A newer release wrote it, and this one may still use it as it is.
    NewerReadable(Stamp),
}

impl Schema {
    /// The version this release writes.
    pub fn latest(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// What to do with a database stamped `stored` (None: no stamp, release 0.1 or new).
    pub fn plan(&self, place: &str, stored: Option<Stamp>) -> Result<Plan<'_>, SchemaError> {
        let latest = self.latest();
        let stored = stored.unwrap_or(Stamp {
            version: 0,
            readable_from: 0,
            written_by: "0.1".into(),
        });
        if stored.version > latest {
            return if stored.readable_from <= latest {
                Ok(Plan::NewerReadable(stored))
            } else {
                Err(SchemaError::Newer {
                    place: place.into(),
                    name: self.name,
                    stored,
                    known: latest,
                })
            };
        }
        if stored.version == latest {
            return Ok(Plan::Current);
        }
        let pending = &self.migrations[stored.version as usize..];
        let readable_from = pending
            .iter()
            .filter(|m| !m.older_can_read)
            .map(|m| m.version)
            .fold(stored.readable_from, u32::max);
        Ok(Plan::Migrate {
            migrations: pending,
            stamp: Stamp {
                version: latest,
                readable_from,
                written_by: RELEASE.into(),
            },
        })
    }

    /// Logs that a newer release's database, left readable, is used as it is.
    pub fn used_as_newer(&self, place: &str, stamp: &Stamp) {
        tracing::info!(
            place,
            version = stamp.version,
            written_by = stamp.written_by,
            known = self.latest(),
            "the {} was migrated by a newer release, which left it readable: used as it is",
            self.name
        );
    }

    /// Brings the SQLite database on `conn` up to date (`place` names it in messages),
    /// under the write lock. Returns the plan it carried out.
    pub fn migrate_sqlite(&self, conn: &mut Connection, place: &str) -> Result<(), SchemaError> {
        let stamp_err = |e: rusqlite::Error| SchemaError::Stamp {
            place: place.into(),
            name: self.name,
            source: Box::new(e),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(stamp_err)?;
        tx.execute_batch(STAMP_TABLE).map_err(stamp_err)?;
        let stored = tx
            .query_row(STAMP_READ, [], |r| {
                Ok(Stamp {
                    version: r.get(0)?,
                    readable_from: r.get(1)?,
                    written_by: r.get(2)?,
                })
            })
            .optional()
            .map_err(stamp_err)?;
        match self.plan(place, stored)? {
            Plan::Current => return Ok(()),
            Plan::NewerReadable(stamp) => {
                self.used_as_newer(place, &stamp);
                return Ok(());
            }
            Plan::Migrate { migrations, stamp } => {
                for m in migrations {
                    let failed = |e: rusqlite::Error| SchemaError::Migration {
                        place: place.into(),
                        name: self.name,
                        version: m.version,
                        what: m.what,
                        source: Box::new(e),
                    };
                    for step in m.steps {
                        tx.execute_batch(step.sql).map_err(failed)?;
                    }
                    tracing::info!(place, version = m.version, "{}: {}", self.name, m.what);
                }
                tx.execute(
                    &STAMP_WRITE.replace('$', "?"),
                    rusqlite::params![stamp.version, stamp.readable_from, stamp.written_by],
                )
                .map_err(stamp_err)?;
            }
        }
        tx.commit().map_err(stamp_err)
    }
}

/// The stamp of the SQLite database on `conn`, if it has one (tests, `check`).
pub fn stamp_sqlite(conn: &Connection) -> rusqlite::Result<Option<Stamp>> {
    let has = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |_| Ok(()),
        )
        .optional()?;
    if has.is_none() {
        return Ok(None);
    }
    conn.query_row(STAMP_READ, [], |r| {
        Ok(Stamp {
            version: r.get(0)?,
            readable_from: r.get(1)?,
            written_by: r.get(2)?,
        })
    })
    .optional()
}

/// Stamps the database on `conn` as written by a release that knows `version`, readable
/// from `readable_from` (tests: how a database from a newer release looks).
pub fn stamp_as(
    conn: &Connection,
    version: u32,
    readable_from: u32,
    written_by: &str,
) -> rusqlite::Result<()> {
    conn.execute_batch(STAMP_TABLE)?;
    conn.execute(
        &STAMP_WRITE.replace('$', "?"),
        rusqlite::params![version, readable_from, written_by],
    )?;
    Ok(())
}

/// The tables a schema's migrations create, with the owner of each, in order: what
/// `CREATE TABLE` statements of its steps name (a table renamed into place counts under
/// its final name; see `renamed`).
pub fn tables(schema: &Schema) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for m in schema.migrations {
        for step in m.steps {
            for name in created(step.sql) {
                let name = renamed(step.sql, &name).unwrap_or(name);
                if !out.iter().any(|(t, o)| *t == name && *o == step.owner) {
                    out.push((name, step.owner));
                }
            }
        }
    }
    out
}

/// Names after `CREATE TABLE [IF NOT EXISTS]` in `sql`.
fn created(sql: &str) -> Vec<String> {
    let upper = sql.to_uppercase();
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(at) = upper[rest..].find("CREATE TABLE") {
        let mut tail = sql[rest + at + "CREATE TABLE".len()..].trim_start();
        if tail.to_uppercase().starts_with("IF NOT EXISTS") {
            tail = tail["IF NOT EXISTS".len()..].trim_start();
        }
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
        rest += at + "CREATE TABLE".len();
    }
    out
}

/// The name `ALTER TABLE table RENAME TO name` in `sql` gives `table`.
fn renamed(sql: &str, table: &str) -> Option<String> {
    let pattern = format!("ALTER TABLE {table} RENAME TO ");
    let at = sql.find(&pattern)?;
    Some(
        sql[at + pattern.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// The format version `v` of a JSON document, read before the rest so that a newer
/// format is refused by name rather than as malformed. None if it has none.
pub fn json_format(bytes: &[u8]) -> Option<u8> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        v: u8,
    }
    serde_json::from_slice::<Versioned>(bytes).ok().map(|d| d.v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &[Step] = &[Step {
        owner: "a",
        sql: "CREATE TABLE IF NOT EXISTS t(x INTEGER NOT NULL);",
        postgres: None,
    }];
    const TWO: &[Step] = &[Step {
        owner: "a",
        sql: "ALTER TABLE t ADD COLUMN y INTEGER NOT NULL DEFAULT 7;",
        postgres: None,
    }];
    const THREE: &[Step] = &[Step {
        owner: "a",
        sql: "CREATE TABLE t_new(x INTEGER NOT NULL, z TEXT);
              INSERT INTO t_new SELECT x, y FROM t; DROP TABLE t;
              ALTER TABLE t_new RENAME TO t;",
        postgres: None,
    }];
    const SCHEMA: Schema = Schema {
        name: "test database",
        migrations: &[
            Migration {
                version: 1,
                what: "t",
                older_can_read: false,
                steps: ONE,
            },
            Migration {
                version: 2,
                what: "t.y",
                older_can_read: true,
                steps: TWO,
            },
            Migration {
                version: 3,
                what: "t.y becomes t.z",
                older_can_read: false,
                steps: THREE,
            },
        ],
    };
    const UP_TO_TWO: Schema = Schema {
        name: "test database",
        migrations: SCHEMA.migrations.split_at(2).0,
    };

    #[test]
    fn a_new_database_gets_every_migration_and_a_stamp() {
        let mut c = Connection::open_in_memory().unwrap();
        SCHEMA.migrate_sqlite(&mut c, "mem").unwrap();
        let s = stamp_sqlite(&c).unwrap().unwrap();
        assert_eq!((s.version, s.readable_from), (3, 3));
        assert_eq!(s.written_by, RELEASE);
        // Opening again changes nothing.
        SCHEMA.migrate_sqlite(&mut c, "mem").unwrap();
        assert_eq!(tables(&SCHEMA), [("t".to_string(), "a")]);
    }

    #[test]
    fn an_older_database_is_migrated_forward_keeping_its_rows() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x INTEGER NOT NULL); INSERT INTO t VALUES (5);")
            .unwrap();
        SCHEMA.migrate_sqlite(&mut c, "mem").unwrap();
        let z: String = c
            .query_row("SELECT z FROM t WHERE x = 5", [], |r| r.get(0))
            .unwrap();
        assert_eq!(z, "7");
    }

    #[test]
    fn a_newer_database_is_refused_by_name_unless_it_stays_readable() {
        let mut c = Connection::open_in_memory().unwrap();
        // Written by a release at version 2, which older code (knowing 1) may open.
        UP_TO_TWO.migrate_sqlite(&mut c, "mem").unwrap();
        let one = Schema {
            name: "test database",
            migrations: SCHEMA.migrations.split_at(1).0,
        };
        one.migrate_sqlite(&mut c, "mem").unwrap();
        assert_eq!(stamp_sqlite(&c).unwrap().unwrap().version, 2, "untouched");
        // At version 3 it is not readable by either.
        SCHEMA.migrate_sqlite(&mut c, "mem").unwrap();
        for older in [&one, &UP_TO_TWO] {
            let e = older.migrate_sqlite(&mut c, "/var/lib/x.db").unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, SchemaError::Newer { .. }), "{text}");
            assert!(
                text.contains("/var/lib/x.db holds test database schema version 3")
                    && text.contains(&format!("knows versions up to {}", older.latest())),
                "{text}"
            );
        }
    }

    #[test]
    fn a_failed_migration_changes_nothing() {
        const BAD: &[Step] = &[Step {
            owner: "a",
            sql: "ALTER TABLE t ADD COLUMN w INTEGER; SELECT * FROM missing;",
            postgres: None,
        }];
        let bad = Schema {
            name: "test database",
            migrations: &[
                Migration {
                    version: 1,
                    what: "t",
                    older_can_read: false,
                    steps: ONE,
                },
                Migration {
                    version: 2,
                    what: "broken",
                    older_can_read: true,
                    steps: BAD,
                },
            ],
        };
        let mut c = Connection::open_in_memory().unwrap();
        let e = bad.migrate_sqlite(&mut c, "mem").unwrap_err().to_string();
        assert!(e.contains("to schema version 2 (broken) failed"), "{e}");
        assert_eq!(stamp_sqlite(&c).unwrap(), None);
        let has_t: Option<i64> = c
            .query_row("SELECT 1 FROM sqlite_master WHERE name = 't'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap();
        assert_eq!(has_t, None, "migration 1 rolled back too");
    }
}
