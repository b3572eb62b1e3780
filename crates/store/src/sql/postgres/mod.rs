//! The PostgreSQL backend, for shops past one machine: any number of `serve`
//! replicas on one database.
//!
//! Writers take turns, as on SQLite: every write transaction first takes one
//! transaction-scoped advisory lock. That keeps the invariants the rest of
//! manirec was built on: sequence numbers (`behavior_events.seq`,
//! `training_interactions.id`) become visible in the order they were drawn, so
//! a watermark never skips a row committed late; and a read-then-write
//! (the next version number, a lease) never races another replica's. Readers
//! never wait for it. Group commits keep the writers' turns few.
//!
//! The client is the synchronous `postgres` crate: a `Store` is one connection
//! owned by one thread, as with SQLite. That client drives its socket with a
//! runtime of its own, which tokio refuses to start on a thread already
//! running async tasks; every call into it goes through [`off_runtime`], so a
//! command's `async fn` may use the store as it does the SQLite one.

mod migrations;
mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, Statement};

use super::{numbered_placeholders, Begin, Row, ToParam, Value};
use crate::{Error, Result};

pub(crate) use migrations::MIGRATIONS;

/// The advisory lock every write transaction takes (an arbitrary constant:
/// "mr" in ASCII, so another application's locks are unlikely to collide).
const WRITER_LOCK: i64 = 0x6d72_0001;
/// The session lock under which one replica migrates while the others wait.
const MIGRATION_LOCK: i64 = 0x6d72_0002;

type BoxError = Box<dyn StdError + Sync + Send>;

/// A PostgreSQL connection.
pub(crate) struct Postgres {
    url: String,
    /// `None` only while dropping (see `Drop`).
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
    in_transaction: RefCell<bool>,
}

/// `url` without its password, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Postgres {
    /// Connects and migrates.
    pub fn connect(url: &str) -> Result<Self> {
        let db = Self::connect_only(url)?;
        db.migrate()?;
        Ok(db)
    }

    fn connect_only(url: &str) -> Result<Self> {
        let (config, tls) = tls::prepare(url).map_err(|reason| Error::Open {
            target: redacted(url),
            reason,
        })?;
        let client = off_runtime(|| config.connect(tls)).map_err(|e| Error::Open {
            target: redacted(url),
            reason: describe(&e),
        })?;
        Ok(Postgres {
            url: url.to_owned(),
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
            in_transaction: RefCell::new(false),
        })
    }

    /// Another connection that only reads (the server's reader threads).
    pub fn reader(&self) -> Result<Self> {
        let db = Self::connect_only(&self.url)?;
        db.batch("SET default_transaction_read_only = on")?;
        Ok(db)
    }

    /// Another connection, for a long job beside the one that ingests.
    pub fn reopen(&self) -> Result<Self> {
        Self::connect_only(&self.url)
    }

    fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        // Replicas that start together: one migrates, the others wait here and
        // then find nothing left to do.
        self.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
        let result = self.migrate_locked(known);
        let unlocked = self.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
        result.and(unlocked)
    }

    fn migrate_locked(&self, known: i64) -> Result<()> {
        self.batch(
            "CREATE TABLE IF NOT EXISTS manirec_schema (version BIGINT NOT NULL);
             INSERT INTO manirec_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM manirec_schema);",
        )?;
        let found = self.version()?;
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            self.begin(Begin::Exclusive)?;
            let applied = self
                .batch(sql)
                .and_then(|()| self.execute("UPDATE manirec_schema SET version = ?1", &[&version]))
                .and_then(|_| self.end(true));
            if let Err(e) = applied {
                let _ = self.end(false);
                return Err(e);
            }
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }

    /// The schema version of the database.
    pub fn version(&self) -> Result<i64> {
        let mut out = 0;
        self.query_each("SELECT version FROM manirec_schema", &[], &mut |r| {
            out = r.get(0)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `f` on the client, off any async runtime (see the module's text).
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut client = self
            .client
            .try_borrow_mut()
            .map_err(|_| Error::Query("a query was started inside another query's rows".into()))?;
        let client = client
            .as_mut()
            .ok_or_else(|| Error::Query("the connection is closing".into()))?;
        off_runtime(|| f(client)).map_err(map)
    }

    fn prepare(&self, sql: &str) -> Result<Statement> {
        if let Some(stmt) = self.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.with_client(|c| c.prepare(&numbered_placeholders(sql)))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        if !*self.in_transaction.borrow() {
            // Every write takes the writers' lock (see the module's comment),
            // even a lone statement.
            self.begin(Begin::Write)?;
            let out = self.execute(sql, params);
            return match out {
                Ok(n) => self.end(true).map(|()| n),
                Err(e) => {
                    let _ = self.end(false);
                    Err(e)
                }
            };
        }
        let stmt = self.prepare(sql)?;
        let binds: Vec<Bind> = params.iter().map(|p| Bind(p.param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let n = self.with_client(|c| c.execute(&stmt, &refs))?;
        Ok(n as usize)
    }

    pub fn batch(&self, sql: &str) -> Result<()> {
        self.with_client(|c| c.batch_execute(sql))
    }

    pub fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: &mut dyn FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        let stmt = self.prepare(sql)?;
        let binds: Vec<Bind> = params.iter().map(|p| Bind(p.param())).collect();
        // Collected before `f` runs: `f` may query the same connection.
        let rows = self.with_client(|c| {
            let mut it = c.query_raw(&stmt, binds.iter())?;
            let mut rows = Vec::new();
            while let Some(row) = it.next()? {
                rows.push(row);
            }
            Ok(rows)
        })?;
        for row in &rows {
            f(&Row::Postgres(row))?;
        }
        Ok(())
    }

    pub fn begin(&self, kind: Begin) -> Result<()> {
        if *self.in_transaction.borrow() {
            // A transaction left open by a panic in an earlier caller: end it.
            self.batch("ROLLBACK")?;
        }
        let sql = match kind {
            Begin::Write | Begin::Exclusive => {
                format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})")
            }
            Begin::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
        };
        self.batch(&sql)?;
        *self.in_transaction.borrow_mut() = true;
        Ok(())
    }

    #[cfg(test)]
    pub fn in_transaction(&self) -> bool {
        *self.in_transaction.borrow()
    }

    pub fn end(&self, commit: bool) -> Result<()> {
        *self.in_transaction.borrow_mut() = false;
        self.batch(if commit { "COMMIT" } else { "ROLLBACK" })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing the connection blocks on the client's runtime too.
        if let Some(client) = self.client.get_mut().take() {
            off_runtime(move || drop(client));
        }
    }
}

/// Runs `f`, which blocks on the `postgres` client's own runtime, where that
/// is allowed: as is on a plain thread (the server's store threads,
/// `spawn_blocking`), through `block_in_place` on a multi-threaded runtime's
/// worker (a command's `async fn`). A current-thread runtime cannot give its
/// thread up: the client then says so itself, loudly.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A parameter bound to whatever type PostgreSQL inferred for its slot:
/// SQLite's loose typing, kept at the seam so the store's statements bind the
/// same values on both engines.
#[derive(Debug)]
struct Bind<'a>(Value<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(i)?.to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT4) => (i as f32).to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (i != 0).to_sql(ty, out),
            (Value::Int(i), t) if is_text(t) => i.to_string().as_str().to_sql(ty, out),
            (Value::Real(r), &Type::FLOAT8) => r.to_sql(ty, out),
            (Value::Real(r), &Type::FLOAT4) => (r as f32).to_sql(ty, out),
            (Value::Real(r), &Type::INT8) if r.fract() == 0.0 => (r as i64).to_sql(ty, out),
            (Value::Real(r), t) if is_text(t) => r.to_string().as_str().to_sql(ty, out),
            (Value::Text(s), t) if is_text(t) || *t == Type::JSON => s.to_sql(&Type::TEXT, out),
            (Value::Text(s), &Type::INT8) => s.parse::<i64>()?.to_sql(ty, out),
            (Value::Text(s), &Type::FLOAT8) => s.parse::<f64>()?.to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (v, t) => Err(format!("cannot bind {v:?} to a {t} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn is_text(t: &Type) -> bool {
    matches!(
        *t,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// One column of a PostgreSQL row as a [`Value`], whatever its type.
struct Cell<'a>(Value<'a>);

impl<'a> FromSql<'a> for Cell<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(Cell(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::OID => Value::Int(i64::from(u32::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::NUMERIC => Value::Real(numeric(raw)?),
            Type::BYTEA => Value::Blob(raw),
            Type::JSONB => Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or(&[]))?),
            ref t if is_text(t) || *t == Type::JSON => Value::Text(std::str::from_utf8(raw)?),
            ref t => return Err(format!("unsupported column type {t}").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what SUM and AVG of integers return) as f64:
/// ndigits, weight, sign, scale, then base-10000 digits.
fn numeric(raw: &[u8]) -> std::result::Result<f64, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated NUMERIC".into())
    };
    let ndigits = word(0)? as usize;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    if sign == 0xC000 {
        return Ok(f64::NAN);
    }
    let mut value = 0.0;
    for d in 0..ndigits {
        let digit = f64::from(word(4 + d)?);
        value += digit * 10000f64.powi(weight - d as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

/// Column `idx` of a PostgreSQL row.
pub(crate) fn value(row: &postgres::Row, idx: usize) -> Result<Value<'_>> {
    row.try_get::<_, Cell>(idx)
        .map(|c| c.0)
        .map_err(|e| Error::Decode {
            column: idx,
            reason: describe(&e),
        })
}

/// The server's message, its detail and hint when it sent them.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                s.push_str(" (");
                s.push_str(hint);
                s.push(')');
            }
            s
        }
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// PostgreSQL's errors, sorted by what a caller can do about them.
fn map(e: postgres::Error) -> Error {
    let message = describe(&e);
    if e.is_closed() {
        return Error::Unavailable(message);
    }
    match e.code() {
        Some(c)
            if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::FOREIGN_KEY_VIOLATION
                || *c == SqlState::CHECK_VIOLATION
                || *c == SqlState::NOT_NULL_VIOLATION =>
        {
            Error::Constraint(message)
        }
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::QUERY_CANCELED =>
        {
            Error::Busy(message)
        }
        Some(c) if c.code().starts_with("08") || *c == SqlState::ADMIN_SHUTDOWN => {
            Error::Unavailable(message)
        }
        _ => Error::Query(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_decode() {
        // 12345.5 = digits [1, 2345, 5000], weight 1, dscale 1.
        let raw: Vec<u8> = [3i16, 1, 0, 1, 1, 2345, 5000]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&raw).unwrap(), 12345.5);
        let zero: Vec<u8> = [0i16, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&zero).unwrap(), 0.0);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("postgres://shop:secret@db.example:5432/manirec"),
            "postgres://shop:***@db.example:5432/manirec"
        );
    }
}
