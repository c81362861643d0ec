//! One connection to the cloud's database for identity, access, audit and the device
//! registry: SQLite on a single node, PostgreSQL in the scale-out mode, where any number
//! of API servers share it.
//!
//! Statements are written once, in the SQL both databases speak, with `$1`-style
//! parameters (SQLite reads them as `?1`). Table definitions are written for SQLite and
//! translated (`INTEGER` → `BIGINT`, `BLOB` → `BYTEA`, an `INTEGER PRIMARY KEY` → an
//! identity column). The PostgreSQL client runs on a thread of its own (`Link`): the
//! blocking `postgres` client carries its own small runtime, which must be neither made
//! nor dropped inside the async server.

use crate::cloud::schema::CLOUD;
use crate::schema::{Plan, Schema, SchemaError, Stamp};
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// With the causes (the client's own message is a bare "db error").
    #[error("database (PostgreSQL): {0}")]
    Postgres(String),
    #[error("database: column {column}: {problem}")]
    Column { column: usize, problem: String },
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        DbError::Postgres(with_causes(&e))
    }
}

/// `e` and its causes, one after the other.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// Parameters for a statement: `args![a, b]`.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::cloud::sql::Value::from($v)),*][..]
    };
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) => f.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0.get(i).ok_or(DbError::Column {
            column: i,
            problem: "no such column".into(),
        })
    }

    fn wrong(i: usize, want: &str, got: &Value) -> DbError {
        DbError::Column {
            column: i,
            problem: format!("wanted {want}, found {got:?}"),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(Row::wrong(i, "an integer", other)),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(Row::wrong(i, "text", other)),
        }
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Blob(v) => Ok(Some(v.clone())),
            other => Err(Row::wrong(i, "bytes", other)),
        }
    }

    /// A number (SQLite may keep a whole REAL as an integer).
    pub fn opt_real(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(*v)),
            Value::Int(v) => Ok(Some(*v as f64)),
            other => Err(Row::wrong(i, "a number", other)),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?
            .ok_or_else(|| Row::wrong(i, "an integer", &Value::Null))
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| Row::wrong(i, "text", &Value::Null))
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>, DbError> {
        self.opt_blob(i)?
            .ok_or_else(|| Row::wrong(i, "bytes", &Value::Null))
    }
}

/// Runs statements: the database itself, or one transaction of it.
pub trait Exec {
    /// Rows changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError>;

    fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}

/// `$1` → `?1`, outside quoted strings.
fn sqlite_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A table definition written for SQLite, for PostgreSQL.
pub fn postgres_ddl(ddl: &str) -> String {
    ddl.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
    .replace("BLOB", "BYTEA")
}

/// Statements on a SQLite connection held elsewhere (the sample store's).
pub struct Lite<'a>(pub &'a rusqlite::Connection);

impl Exec for Lite<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let mut st = self.0.prepare_cached(&sqlite_sql(sql))?;
        Ok(st.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut st = self.0.prepare_cached(&sqlite_sql(sql))?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef;
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => Value::Blob(v.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

/// Statements on a PostgreSQL client or transaction.
pub struct Pg<'a, C>(pub &'a mut C);

fn pg_params(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    let mut row = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref t => {
                return Err(DbError::Column {
                    column: i,
                    problem: format!("the type {t} is not read here"),
                })
            }
        };
        row.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(row))
}

thread_local! {
    /// Prepared statements of the connection this thread (a `Link`'s) holds: a statement
    /// is parsed and planned once, then each use is one round trip.
    static PREPARED: std::cell::RefCell<std::collections::HashMap<String, postgres::Statement>> =
        Default::default();
}

impl<C: postgres::GenericClient> Pg<'_, C> {
    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(st) = PREPARED.with(|p| p.borrow().get(sql).cloned()) {
            return Ok(st);
        }
        let st = self.0.prepare(sql)?;
        PREPARED.with(|p| p.borrow_mut().insert(sql.to_string(), st.clone()));
        Ok(st)
    }
}

impl<C: postgres::GenericClient> Exec for Pg<'_, C> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let st = self.prepared(sql)?;
        Ok(self.0.execute(&st, &pg_params(args))?)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let st = self.prepared(sql)?;
        self.0
            .query(&st, &pg_params(args))?
            .iter()
            .map(pg_row)
            .collect()
    }
}

type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// The connection settings of `url`. Without an `sslmode`, TLS is required for any
/// server but one on loopback or a local socket: the client's own default, `prefer`,
/// falls back to plain text when a man in the middle refuses TLS. An explicit
/// `sslmode` is the operator's to choose.
pub fn pg_config(url: &str) -> Result<postgres::Config, DbError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| DbError::Postgres(format!("the database URL: {e}")))?;
    let explicit = url.contains("sslmode=");
    let local = config.get_hosts().iter().all(|h| match h {
        postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        postgres::config::Host::Unix(_) => true,
    });
    if !explicit && !local {
        config.ssl_mode(postgres::config::SslMode::Require);
    }
    Ok(config)
}

/// A PostgreSQL client on a thread of its own.
pub struct Link {
    jobs: mpsc::Sender<Job>,
}

impl Link {
    /// Connects to `url` (TLS as its `sslmode` says; the server's certificate must chain
    /// to the system's roots or to `ca`), then runs `init` (making tables). A connection
    /// the server closed (a restart, a failover) is opened again, `init` included, at the
    /// next job; the job that found it closed got its error.
    pub fn connect(
        url: &str,
        ca: Option<&Path>,
        init: impl Fn(&mut postgres::Client) -> Result<(), DbError> + Send + 'static,
    ) -> Result<Link, DbError> {
        crate::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(ca) = ca {
            let certs = crate::tls::load_certs(ca)
                .map_err(|e| DbError::Postgres(format!("{}: {e}", ca.display())))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| DbError::Postgres(format!("{}: {e}", ca.display())))?;
            }
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let config = pg_config(url)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let open = || -> Result<postgres::Client, DbError> {
                    let mut db = config.connect(tls.clone())?;
                    init(&mut db)?;
                    Ok(db)
                };
                let mut db = match open() {
                    Ok(db) => {
                        let _ = ready.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for job in queue {
                    if db.is_closed() {
                        match open() {
                            Ok(again) => {
                                tracing::info!("PostgreSQL connection opened again");
                                // Statements belong to the connection they were made on.
                                PREPARED.with(|p| p.borrow_mut().clear());
                                db = again;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL is unreachable")
                            }
                        }
                    }
                    job(&mut db);
                }
            })
            .map_err(|e| DbError::Postgres(e.to_string()))?;
        started.recv().map_err(|_| Link::ended())??;
        Ok(Link { jobs })
    }

    fn ended() -> DbError {
        DbError::Postgres("the connection thread ended".into())
    }

    /// Runs `f` with the client on its thread and waits for the answer.
    pub fn run<T: Send + 'static, E: From<DbError> + Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |db| {
                let _ = answer.send(f(db));
            }))
            .map_err(|_| Link::ended())?;
        answered.recv().map_err(|_| Link::ended())?
    }
}

/// Brings the PostgreSQL database up to date with `schema` in one transaction, under an
/// advisory lock so that servers starting together migrate it once.
pub(crate) fn migrate_postgres(
    db: &mut postgres::Client,
    schema: &Schema,
    place: &str,
) -> Result<(), DbError> {
    let stamp_err = |e: postgres::Error| SchemaError::Stamp {
        place: place.into(),
        name: schema.name,
        source: Box::new(DbError::from(e)),
    };
    let mut tx = db.transaction().map_err(stamp_err)?;
    // Not a NOTICE for every table that exists already.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(stamp_err)?;
    tx.execute("SELECT pg_advisory_xact_lock(7316)", &[])
        .map_err(stamp_err)?;
    tx.batch_execute(&postgres_ddl(crate::schema::STAMP_TABLE))
        .map_err(stamp_err)?;
    let stored = tx
        .query_opt(crate::schema::STAMP_READ, &[])
        .map_err(stamp_err)?
        .map(|r| Stamp {
            version: r.get::<_, i64>(0) as u32,
            readable_from: r.get::<_, i64>(1) as u32,
            written_by: r.get(2),
        });
    match schema.plan(place, stored)? {
        Plan::Current => return Ok(()),
        Plan::NewerReadable(stamp) => {
            schema.used_as_newer(place, &stamp);
            return Ok(());
        }
        Plan::Migrate { migrations, stamp } => {
            for m in migrations {
                for step in m.steps {
                    let ddl = match step.postgres {
                        Some(ddl) => ddl.to_string(),
                        None => postgres_ddl(step.sql),
                    };
                    tx.batch_execute(&ddl).map_err(|e| SchemaError::Migration {
                        place: place.into(),
                        name: schema.name,
                        version: m.version,
                        what: m.what,
                        source: Box::new(DbError::from(e)),
                    })?;
                }
                tracing::info!(place, version = m.version, "{}: {}", schema.name, m.what);
            }
            tx.execute(
                crate::schema::STAMP_WRITE,
                &[
                    &i64::from(stamp.version),
                    &i64::from(stamp.readable_from),
                    &stamp.written_by,
                ],
            )
            .map_err(stamp_err)?;
        }
    }
    tx.commit().map_err(stamp_err)?;
    Ok(())
}

/// `f` in one transaction under the advisory transaction lock `lock`.
pub fn pg_serialized<T>(
    db: &mut postgres::Client,
    lock: i64,
    f: impl FnOnce(&mut dyn Exec) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut tx = db.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
    let v = f(&mut Pg(&mut tx))?;
    tx.commit()?;
    Ok(v)
}

/// The cloud's database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Link),
}

impl Db {
    /// A SQLite file (WAL; writers wait up to ten seconds for each other), its schema
    /// brought up to date.
    pub fn sqlite(path: &Path) -> Result<Db, DbError> {
        let mut db = rusqlite::Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // A commit is on disk before it returns: the ingest acknowledges after it.
        db.pragma_update(None, "synchronous", "FULL")?;
        CLOUD.migrate_sqlite(&mut db, &path.display().to_string())?;
        Ok(Db::Sqlite(db))
    }

    /// A database in memory, with the schema (tests, benches).
    pub fn memory() -> Result<Db, DbError> {
        let mut db = rusqlite::Connection::open_in_memory()?;
        CLOUD.migrate_sqlite(&mut db, "memory")?;
        Ok(Db::Sqlite(db))
    }

    /// The PostgreSQL database at `url`, its schema brought up to date (again after a
    /// reconnect: a restored backup may be older).
    pub fn postgres(url: &str, ca: Option<&Path>) -> Result<Db, DbError> {
        let place = crate::cloud::redact(url);
        Ok(Db::Postgres(Link::connect(url, ca, move |db| {
            migrate_postgres(db, &CLOUD, &place)
        })?))
    }

    /// A `postgres://` URL or a SQLite file.
    pub fn open(location: &str, ca: Option<&Path>) -> Result<Db, DbError> {
        if is_postgres_url(location) {
            Db::postgres(location, ca)
        } else {
            Db::sqlite(Path::new(location))
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(c) => Lite(c).execute(sql, args),
            Db::Postgres(link) => {
                let (sql, args) = (sql.to_string(), args.to_vec());
                link.run(move |db| Pg(db).execute(&sql, &args))
            }
        }
    }

    pub fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            Db::Sqlite(c) => Lite(c).query(sql, args),
            Db::Postgres(link) => {
                let (sql, args) = (sql.to_string(), args.to_vec());
                link.run(move |db| Pg(db).query(&sql, &args))
            }
        }
    }

    pub fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Runs `f` in one transaction that no other `serialized(lock, …)` of any server
    /// overlaps: SQLite's write lock taken at the start (`BEGIN IMMEDIATE`), PostgreSQL's
    /// advisory transaction lock `lock`. Rolled back if `f` fails.
    pub fn serialized<T: Send + 'static>(
        &self,
        lock: i64,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        match self {
            Db::Sqlite(c) => sqlite_transaction(c, f),
            Db::Postgres(link) => link.run(move |db| pg_serialized(db, lock, f)),
        }
    }

    /// Runs `f` in one transaction, rolled back if it fails (on SQLite with the write
    /// lock taken at the start; on PostgreSQL beside other servers' transactions).
    pub fn transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        match self {
            Db::Sqlite(c) => sqlite_transaction(c, f),
            Db::Postgres(link) => link.run(move |db| {
                let mut tx = db.transaction()?;
                let v = f(&mut Pg(&mut tx))?;
                tx.commit()?;
                Ok(v)
            }),
        }
    }
}

/// `f` in a SQLite transaction that holds the write lock from its start.
fn sqlite_transaction<T>(
    c: &rusqlite::Connection,
    f: impl FnOnce(&mut dyn Exec) -> Result<T, DbError>,
) -> Result<T, DbError> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    match f(&mut Lite(c)) {
        Ok(v) => {
            c.execute_batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

impl Exec for &Db {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        Db::execute(self, sql, args)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        Db::query(self, sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_tables_translate() {
        assert_eq!(
            sqlite_sql("SELECT '$1', a FROM t WHERE b = $1 AND c = $12"),
            "SELECT '$1', a FROM t WHERE b = ?1 AND c = ?12"
        );
        assert_eq!(
            postgres_ddl("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB)"),
            "CREATE TABLE t(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, b BYTEA)"
        );
    }

    #[test]
    fn sqlite_rows_parameters_and_serialized_rollback() {
        let db = Db::memory().unwrap();
        db.execute(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)",
            &[],
        )
        .unwrap();
        db.execute(
            "INSERT INTO t(name, data) VALUES ($1, $2)",
            args!["a", vec![1u8, 2]],
        )
        .unwrap();
        db.execute(
            "INSERT INTO t(name, data) VALUES ($1, $2)",
            args![None::<String>, None::<Vec<u8>>],
        )
        .unwrap();
        let rows = db
            .query("SELECT id, name, data FROM t ORDER BY id", &[])
            .unwrap();
        assert_eq!(rows[0].int(0).unwrap(), 1);
        assert_eq!(rows[0].text(1).unwrap(), "a");
        assert_eq!(rows[0].blob(2).unwrap(), vec![1, 2]);
        assert_eq!(rows[1].opt_text(1).unwrap(), None);
        assert!(rows[0].int(1).is_err());
        let failed: Result<(), DbError> = db.serialized(1, |tx| {
            tx.execute("DELETE FROM t", &[])?;
            Err(DbError::Postgres("stop".into()))
        });
        assert!(failed.is_err());
        assert_eq!(db.query("SELECT id FROM t", &[]).unwrap().len(), 2);
    }

    /// From reading (issue 11): the client's default `sslmode=prefer` let a man in the
    /// middle downgrade the connection to plain text.
    #[test]
    fn tls_is_required_for_remote_databases_unless_the_url_says_otherwise() {
        use postgres::config::SslMode;
        let mode = |url: &str| pg_config(url).unwrap().get_ssl_mode();
        assert_eq!(mode("postgres://fg@db.example.net/fg"), SslMode::Require);
        assert_eq!(mode("postgres://fg@10.0.0.5:5432/fg"), SslMode::Require);
        assert_eq!(
            mode("postgres://fg@db.example.net/fg?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(mode("postgres://fg@127.0.0.1:5432/fg"), SslMode::Prefer);
        assert_eq!(mode("postgres://fg@localhost/fg"), SslMode::Prefer);
        assert_eq!(mode("postgres://fg@[::1]:5432/fg"), SslMode::Prefer);
        assert!(pg_config("postgres://fg@host/fg?sslmode=sometimes").is_err());
    }
}
