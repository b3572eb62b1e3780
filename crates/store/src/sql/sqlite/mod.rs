//! The embedded backend: one SQLite file in WAL mode. One writer at a time
//! (every write transaction takes the lock at `BEGIN IMMEDIATE`, so a
//! read-then-write never fails to upgrade), readers beside it.

mod migrations;

#[cfg(test)]
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, OpenFlags};

use super::{Begin, Row, ToParam, Value};
use crate::{Error, Result};

pub(crate) use migrations::MIGRATIONS;

/// Statements kept prepared per connection: every statement of the hot paths
/// (ingestion, a recommendation's reads) stays compiled.
const STATEMENT_CACHE: usize = 128;

/// How long a statement waits for another connection's lock before it fails
/// with [`Error::Busy`].
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A SQLite connection.
pub(crate) struct Sqlite {
    conn: Connection,
    /// How often a cached statement was compiled again before it ran (see
    /// [`Sqlite::reprepared`]).
    #[cfg(test)]
    reprepared: Cell<u64>,
}

/// The query planner's stability guarantee: a statement's plan never depends
/// on the values bound to it. Without it SQLite (3.50) compiles a cached
/// statement again each time a value its plan may use is bound, as a
/// `LIMIT ?` is (and with statistics, any indexed `column = ?`): the history
/// and unsynced-events reads of every recommendation were parsed and planned
/// anew, a fifth of a busy server's time (docs/bench-serve.md).
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(map)?;
    Ok(())
}

fn open_error(target: &Path, e: impl std::fmt::Display) -> Error {
    Error::Open {
        target: target.display().to_string(),
        reason: e.to_string(),
    }
}

impl Sqlite {
    /// Opens (creating if needed) the file, in WAL mode, and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_error(path, e))?;
        }
        let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        // WAL can only be set on a file; the pragma answers the mode in force.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_error(path, e))?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "database opened");
        Self::configure(conn)
    }

    /// An in-memory database, for tests and scratch work.
    pub fn open_in_memory() -> Result<Self> {
        Self::configure(Connection::open_in_memory().map_err(map)?)
    }

    fn configure(conn: Connection) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        stable_plans(&conn)?;
        // FULL: a committed transaction survives a power cut, not only a crash, so
        // "acknowledged" means "on disk". Group commits keep the fsyncs few.
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(map)?;
        let db = Sqlite {
            conn,
            #[cfg(test)]
            reprepared: Cell::new(0),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The file, when the database has one.
    pub fn path(&self) -> Option<&Path> {
        self.conn.path().filter(|p| !p.is_empty()).map(Path::new)
    }

    /// Another connection to the same file, read-only (`None` in memory). Its
    /// schema is the writer's: it never migrates, and any write fails.
    pub fn reader(&self) -> Result<Option<Self>> {
        let Some(path) = self.path() else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        stable_plans(&conn)?;
        // No memory map, and SQLite's default page cache: a reader drops both
        // whenever another connection commits, and on a busy server (events, the
        // answer log) the munmap and the page faults after it, or the freeing of
        // a large cache, cost the answers served beside them their p99
        // (docs/bench-serve.md: known customers on the large shop, p99 46 ms
        // mapped, 13.5 ms with a 64 MiB cache, 6.4 ms like this). The OS keeps the
        // file's pages; a read(2) of one is cheap.
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA mmap_size = 0;")
            .map_err(map)?;
        Ok(Some(Sqlite {
            conn,
            #[cfg(test)]
            reprepared: Cell::new(0),
        }))
    }

    fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(map)?;
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            self.begin(Begin::Exclusive)?;
            let applied = self
                .conn
                .execute_batch(sql)
                .and_then(|()| self.conn.pragma_update(None, "user_version", version))
                .and_then(|()| self.conn.execute_batch("COMMIT"));
            if let Err(e) = applied {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(map(e));
            }
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }

    /// The schema version in the file.
    pub fn version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(map)
    }

    pub fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(map)?;
        let done = stmt.execute(bind(params)).map_err(map);
        self.count_reprepares(&stmt);
        done
    }

    /// Statements compiled again since the connection opened (after a schema
    /// change, or, without [`stable_plans`], on binding a value their plan
    /// may depend on).
    #[cfg(test)]
    pub fn reprepared(&self) -> u64 {
        self.reprepared.get()
    }

    fn count_reprepares(&self, stmt: &CachedStatement<'_>) {
        #[cfg(test)]
        self.reprepared.set(
            self.reprepared.get() + stmt.reset_status(rusqlite::StatementStatus::RePrepare) as u64,
        );
        #[cfg(not(test))]
        let _ = stmt;
    }

    /// Sets how long a statement waits for a lock.
    pub fn set_busy_timeout(&self, wait: Duration) -> Result<()> {
        self.conn.busy_timeout(wait).map_err(map)
    }

    pub fn batch(&self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(map)
    }

    pub fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: &mut dyn FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(map)?;
        let mut rows = stmt.query(bind(params)).map_err(map)?;
        let mut each = || -> Result<()> {
            while let Some(row) = rows.next().map_err(map)? {
                f(&Row::Sqlite(row))?;
            }
            Ok(())
        };
        let done = each();
        drop(rows);
        self.count_reprepares(&stmt);
        done
    }

    pub fn begin(&self, kind: Begin) -> Result<()> {
        if !self.conn.is_autocommit() {
            // A transaction left open by a panic in an earlier caller: end it.
            self.conn.execute_batch("ROLLBACK").map_err(map)?;
        }
        // Every write transaction takes the lock up front: a deferred one that
        // reads first would fail (not wait) when it later tries to write
        // beside another writer.
        let sql = match kind {
            Begin::Write | Begin::Exclusive => "BEGIN IMMEDIATE",
            Begin::Snapshot => "BEGIN DEFERRED",
        };
        self.conn.execute_batch(sql).map_err(map)
    }

    #[cfg(test)]
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    pub fn end(&self, commit: bool) -> Result<()> {
        self.batch(if commit { "COMMIT" } else { "ROLLBACK" })
    }
}

fn bind<'p>(params: &'p [&'p dyn ToParam]) -> impl rusqlite::Params + 'p {
    rusqlite::params_from_iter(params.iter().map(|p| p.param()))
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(r) => ValueRef::Real(r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Column `idx` of a SQLite row.
pub(crate) fn value<'r>(row: &'r rusqlite::Row<'_>, idx: usize) -> Result<Value<'r>> {
    Ok(match row.get_ref(idx).map_err(map)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(std::str::from_utf8(t).map_err(|e| Error::Decode {
            column: idx,
            reason: e.to_string(),
        })?),
        ValueRef::Blob(b) => Value::Blob(b),
    })
}

/// SQLite's errors, sorted by what a caller can do about them.
pub(crate) fn map(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
        rusqlite::Error::SqliteFailure(code, _) => match code.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::Busy(e.to_string()),
            ErrorCode::ConstraintViolation => Error::Constraint(e.to_string()),
            ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::PermissionDenied => {
                Error::Open {
                    target: "the database file".into(),
                    reason: e.to_string(),
                }
            }
            _ => Error::Query(e.to_string()),
        },
        _ => Error::Query(e.to_string()),
    }
}
