//! Opening the database, applying migrations, and the connection settings every
//! writer relies on (WAL, foreign keys, a busy timeout).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::migrations::MIGRATIONS;
use crate::{Error, Result};

/// How much of the database file a reader maps (address space, not memory).
const READER_MMAP_BYTES: u64 = 4 << 30;

/// Row counts per table, for summaries and reports.
pub type TableCounts = BTreeMap<String, i64>;

/// The relational store. One value per thread or task; SQLite serialises writers,
/// and WAL lets readers run beside one writer.
pub struct Store {
    pub(crate) conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::Open {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        // WAL can only be set on a file; the pragma answers the mode in force.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "database opened");
        Self::configure(conn)
    }

    /// A second connection to the same database file, for a long job that
    /// runs beside the connection that ingests (WAL lets both proceed).
    pub fn reopen(&self) -> Result<Self> {
        match self.conn.path().filter(|p| !p.is_empty()) {
            Some(path) => Store::open(Path::new(path)),
            None => Err(Error::Invalid(
                "an in-memory store has no file to open again".into(),
            )),
        }
    }

    /// Another connection to the same database file, read-only, for readers that
    /// run beside the one writer (WAL lets them: each read sees the last commit
    /// before it began). `None` for an in-memory store, which has no file to share.
    /// Its schema is the writer's: it never migrates, and any write fails.
    pub fn reader(&self) -> Result<Option<Store>> {
        let Some(path) = self.conn.path().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Open {
            path: path.into(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Reads of a user's rows touch pages scattered over the file (rows are
        // stored in arrival order): map the file rather than pay a read(2) per
        // page. Reads only, so a torn page cannot be written back.
        conn.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA mmap_size = {READER_MMAP_BYTES};"
        ))?;
        Ok(Some(Store { conn }))
    }

    /// Runs `f` in one read transaction: every query inside it sees the same
    /// snapshot, as if no write could come between them.
    pub fn read_snapshot<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T> {
        if !self.conn.is_autocommit() {
            // A caller panicked inside an earlier snapshot: end it first.
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        // A read transaction has nothing to lose: COMMIT only ends the snapshot.
        self.conn.execute_batch("COMMIT")?;
        Ok(out)
    }

    /// An in-memory store, for tests and scratch work.
    pub fn open_in_memory() -> Result<Self> {
        Self::configure(Connection::open_in_memory()?)
    }

    fn configure(conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(30))?;
        // FULL: a committed transaction survives a power cut, not only a crash, so
        // "acknowledged" means "on disk". Group commits keep the fsyncs few.
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    fn migrate(&mut self) -> Result<()> {
        let known = Self::schema_version();
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }

    /// Row counts of every table manirec owns.
    pub fn table_counts(&self) -> Result<TableCounts> {
        const TABLES: &[&str] = &[
            "shop_orders",
            "shop_order_items",
            "shop_base_products",
            "shop_end_products",
            "shop_images",
            "shop_accounts",
            "behavior_events",
            "training_interactions",
        ];
        let mut counts = TableCounts::new();
        for table in TABLES {
            let n: i64 =
                self.conn
                    .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            counts.insert(table.to_string(), n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/manirec.db");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let v: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, Store::schema_version());
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_reader_sees_commits_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manirec.db");
        let writer = Store::open(&path).unwrap();
        let reader = writer
            .reader()
            .unwrap()
            .expect("a file-backed store has readers");
        writer
            .conn
            .execute(
                "INSERT INTO state (key, value, updated_at) VALUES ('k', 'v', 0)",
                [],
            )
            .unwrap();
        let seen = reader
            .read_snapshot(|r| {
                r.conn
                    .query_row("SELECT value FROM state WHERE key = 'k'", [], |row| {
                        row.get::<_, String>(0)
                    })
                    .unwrap()
            })
            .unwrap();
        assert_eq!(seen, "v");
        assert!(reader.conn.execute("DELETE FROM state", []).is_err());
        assert!(Store::open_in_memory().unwrap().reader().unwrap().is_none());
    }

    #[test]
    fn a_newer_schema_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manirec.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(Error::SchemaTooNew { found: 999, .. })
        ));
    }
}
