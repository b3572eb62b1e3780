//! Opening the database (SQLite file or PostgreSQL URL), migrating it, and the
//! connections beside the writer (readers, a long job's own connection).

use std::collections::BTreeMap;
use std::path::Path;

use crate::sql::postgres::Postgres;
use crate::sql::sqlite::Sqlite;
use crate::sql::{self, Conn, Dialect};
use crate::{Error, Result};

/// Row counts per table, for summaries and reports.
pub type TableCounts = BTreeMap<String, i64>;

/// The relational store: one connection, to SQLite or PostgreSQL. One value
/// per thread; SQLite serialises writers, and WAL lets readers run beside one
/// writer; PostgreSQL writers take the same turns (see `sql::postgres`).
pub struct Store {
    pub(crate) conn: Conn,
}

impl Store {
    /// Opens (creating if needed) the SQLite file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Store {
            conn: Conn::Sqlite(Sqlite::open(path)?),
        })
    }

    /// Opens the database a URL names: `sqlite://PATH` (or a bare path) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (also `postgresql://`, and
    /// libpq's `host=… dbname=…` form), and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Self> {
        if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.contains("host=")
        {
            return Ok(Store {
                conn: Conn::Postgres(Box::new(Postgres::connect(url)?)),
            });
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.contains("://") {
            return Err(Error::Open {
                target: sql::postgres::redacted(url),
                reason: "neither sqlite://PATH nor postgres://…".into(),
            });
        }
        Self::open(Path::new(path))
    }

    /// Which engine this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// A second connection to the same database, for a long job that runs
    /// beside the connection that ingests (WAL lets both proceed).
    pub fn reopen(&self) -> Result<Self> {
        match &self.conn {
            Conn::Sqlite(db) => match db.path() {
                Some(path) => Store::open(path),
                None => Err(Error::Invalid(
                    "an in-memory store has no file to open again".into(),
                )),
            },
            Conn::Postgres(db) => Ok(Store {
                conn: Conn::Postgres(Box::new(db.reopen()?)),
            }),
        }
    }

    /// Another connection to the same database, read-only, for readers that
    /// run beside the one writer (each read sees the last commit before it
    /// began). `None` for an in-memory store, which has no file to share.
    /// Its schema is the writer's: it never migrates, and any write fails.
    pub fn reader(&self) -> Result<Option<Store>> {
        Ok(match &self.conn {
            Conn::Sqlite(db) => db.reader()?.map(|r| Store {
                conn: Conn::Sqlite(r),
            }),
            Conn::Postgres(db) => Some(Store {
                conn: Conn::Postgres(Box::new(db.reader()?)),
            }),
        })
    }

    /// Runs `f` in one read transaction: every query inside it sees the same
    /// snapshot, as if no write could come between them.
    pub fn read_snapshot<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T> {
        let tx = self.conn.snapshot()?;
        let out = f(self);
        // A read transaction has nothing to lose: COMMIT only ends the snapshot.
        tx.commit()?;
        Ok(out)
    }

    /// An in-memory store, for tests and scratch work.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Store {
            conn: Conn::Sqlite(Sqlite::open_in_memory()?),
        })
    }

    /// The schema version this build writes (the same on both engines).
    pub fn schema_version() -> i64 {
        debug_assert_eq!(
            sql::sqlite::MIGRATIONS.len(),
            sql::postgres::MIGRATIONS.len()
        );
        sql::sqlite::MIGRATIONS.len() as i64
    }

    /// The schema version the database holds.
    pub fn database_version(&self) -> Result<i64> {
        match &self.conn {
            Conn::Sqlite(db) => db.version(),
            Conn::Postgres(db) => db.version(),
        }
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
            let n: i64 = self.conn.query_row(
                &format!("SELECT COUNT(*) FROM {table}"),
                sql::params![],
                |r| r.get(0),
            )?;
            counts.insert(table.to_string(), n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::params;

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/manirec.db");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        assert_eq!(store.database_version().unwrap(), Store::schema_version());
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn migrations_apply_once_on_postgres() {
        let db = crate::testing::postgres();
        drop(Store::connect(db.url()).unwrap());
        let store = Store::connect(db.url()).unwrap();
        assert_eq!(store.database_version().unwrap(), Store::schema_version());
        assert_eq!(store.dialect(), Dialect::Postgres);
    }

    #[test]
    fn a_reader_sees_commits_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let pg = crate::testing::postgres();
        for writer in [
            Store::open(&dir.path().join("manirec.db")).unwrap(),
            Store::connect(pg.url()).unwrap(),
        ] {
            let reader = writer
                .reader()
                .unwrap()
                .expect("a shared store has readers");
            writer
                .conn
                .execute(
                    "INSERT INTO state (key, value, updated_at) VALUES ('k', 'v', 0)",
                    params![],
                )
                .unwrap();
            let seen = reader
                .read_snapshot(|r| {
                    r.conn
                        .query_row(
                            "SELECT value FROM state WHERE key = 'k'",
                            params![],
                            |row| row.get::<String>(0),
                        )
                        .unwrap()
                })
                .unwrap();
            assert_eq!(seen, "v");
            assert!(reader.conn.execute("DELETE FROM state", params![]).is_err());
        }
        assert!(Store::open_in_memory().unwrap().reader().unwrap().is_none());
    }

    #[test]
    fn a_newer_schema_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manirec.db");
        drop(Store::open(&path).unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(Error::SchemaTooNew { found: 999, .. })
        ));
        let pg = crate::testing::postgres();
        let store = Store::connect(pg.url()).unwrap();
        store
            .conn
            .execute("UPDATE manirec_schema SET version = 999", params![])
            .unwrap();
        assert!(matches!(
            Store::connect(pg.url()),
            Err(Error::SchemaTooNew { found: 999, .. })
        ));
    }

    #[test]
    fn a_url_names_its_engine() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        assert_eq!(Store::connect(&url).unwrap().dialect(), Dialect::Sqlite);
        assert!(matches!(
            Store::connect("mysql://x@y/z"),
            Err(Error::Open { .. })
        ));
        assert!(matches!(
            Store::connect("postgres://nobody:pw@127.0.0.1:1/none"),
            Err(Error::Open { .. })
        ));
    }
}
