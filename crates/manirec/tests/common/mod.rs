//! Test harness: the real `manirec` binary on a temp data dir, and shop files
//! the tests write themselves (as a SQLite file and as a D1 dump of the same SQL).
#![allow(dead_code)]

pub mod browser;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A fixed user key, so that two data dirs hash emails the same way.
pub const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A training interaction as a comparable tuple:
/// `(user_id, item_id, rating, timestamp, interaction_type, source, synthetic, quantity)`.
pub type Row = (String, String, f64, i64, String, String, bool, i64);

pub struct DataDir {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database this data dir's store lives in, when not the
    /// default SQLite file (dropped with it).
    pub postgres: Option<manirec_store::testing::TestDatabase>,
}

impl DataDir {
    /// A data dir on the default store, or, when `MANIREC_TEST_BACKEND` is
    /// `postgres` (the second pass of `scripts/test`), on a fresh PostgreSQL
    /// database: every integration test runs on both engines.
    pub fn new() -> Self {
        if std::env::var("MANIREC_TEST_BACKEND").as_deref() == Ok("postgres") {
            return Self::on_postgres();
        }
        DataDir {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// A data dir whose store is a fresh database on the test PostgreSQL
    /// server (`MANIREC_TEST_POSTGRES_URL`, which `scripts/test` sets).
    pub fn on_postgres() -> Self {
        DataDir {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(manirec_store::testing::postgres()),
        }
    }

    /// The store's URL, as MANIREC_DATABASE_URL would name it.
    pub fn database_url(&self) -> String {
        match &self.postgres {
            Some(db) => db.url().to_string(),
            None => format!("sqlite://{}", self.path().join("data/manirec.db").display()),
        }
    }

    /// The store, opened in this process.
    pub fn store(&self) -> manirec_store::Store {
        manirec_store::Store::connect(&self.database_url()).unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_manirec"));
        cmd.arg("--data-dir")
            .arg(self.path().join("data"))
            .args(args)
            .env("MANIREC_USER_KEY", KEY)
            .env_remove("MANIREC_DATA_DIR")
            .env_remove("MANIREC_DATABASE_URL")
            .env_remove("MANIREC_OBJECT_STORE");
        if let Some(db) = &self.postgres {
            cmd.env("MANIREC_DATABASE_URL", db.url());
        }
        cmd
    }

    /// Runs `manirec --json ARGS`, expects success, returns the JSON summary.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().unwrap();
        assert!(
            out.status.success(),
            "manirec {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `manirec --json ARGS` and expects failure.
    pub fn fails(&self, args: &[&str]) -> Output {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().unwrap();
        assert!(!out.status.success(), "manirec {args:?} should have failed");
        out
    }

    /// The store's tables, read the same way on SQLite and PostgreSQL.
    pub fn db(&self) -> TestDb {
        TestDb {
            url: self.database_url(),
        }
    }

    /// Every training interaction, sorted, as comparable tuples.
    pub fn interactions(&self) -> Vec<Row> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT user_id, item_id, rating, timestamp, interaction_type, source, synthetic, quantity
                 FROM training_interactions ORDER BY user_id, item_id, timestamp, interaction_type",
            )
            .unwrap();
        stmt.query_map(&[], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

/// A data dir's store, for tests that look into its tables: SQL in the
/// subset both engines read alike, `?N` placeholders, columns read back by
/// index as any `Deserialize` type (an integer 0/1 reads as a bool too).
/// Shaped like rusqlite's API, so a test reads as it would on SQLite.
pub struct TestDb {
    url: String,
}

/// One row of a [`TestDb`] query.
pub struct TestRow(Vec<Value>);

impl TestRow {
    pub fn get<T: serde::de::DeserializeOwned>(&self, idx: usize) -> Result<T, serde_json::Error> {
        let v = self.0.get(idx).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v.clone()).or_else(|e| match v.as_i64() {
            Some(b @ (0 | 1)) => serde_json::from_value(Value::Bool(b == 1)).map_err(|_| e),
            _ => Err(e),
        })
    }
}

/// A prepared query of a [`TestDb`].
pub struct TestStatement<'a> {
    db: &'a TestDb,
    sql: String,
}

impl TestDb {
    fn rows(&self, sql: &str, params: &[Value]) -> Result<Vec<TestRow>, String> {
        manirec_store::testing::query(&self.url, sql, params)
            .map(|rows| {
                rows.into_iter()
                    .map(|r| match r {
                        Value::Array(columns) => TestRow(columns),
                        other => TestRow(vec![other]),
                    })
                    .collect()
            })
            .map_err(|e| format!("{sql}: {e}"))
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&TestRow) -> Result<T, serde_json::Error>,
    ) -> Result<T, String> {
        let rows = self.rows(sql, params)?;
        let row = rows.first().ok_or_else(|| format!("{sql}: no row"))?;
        f(row).map_err(|e| format!("{sql}: {e}"))
    }

    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, String> {
        self.rows(sql, params).map(|r| r.len())
    }

    pub fn prepare(&self, sql: &str) -> Result<TestStatement<'_>, String> {
        Ok(TestStatement {
            db: self,
            sql: sql.to_owned(),
        })
    }
}

impl TestStatement<'_> {
    pub fn query_map<T>(
        &mut self,
        params: &[Value],
        mut f: impl FnMut(&TestRow) -> Result<T, serde_json::Error>,
    ) -> Result<std::vec::IntoIter<Result<T, serde_json::Error>>, String> {
        let rows = self.db.rows(&self.sql, params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

/// A shop described as SQL, written both as a SQLite file and as a D1 dump.
pub struct ShopSql {
    pub statements: Vec<String>,
}

impl ShopSql {
    pub fn new() -> Self {
        ShopSql {
            statements: vec!["PRAGMA defer_foreign_keys=TRUE;".into()],
        }
    }

    pub fn sql(mut self, statement: &str) -> Self {
        self.statements.push(statement.trim().to_owned());
        self
    }

    pub fn write_sqlite(&self, path: &Path) -> PathBuf {
        let _ = std::fs::remove_file(path);
        let conn = rusqlite::Connection::open(path).unwrap();
        for s in &self.statements {
            conn.execute_batch(s).unwrap();
        }
        path.to_owned()
    }

    pub fn write_dump(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.statements.join("\n") + "\n").unwrap();
        path.to_owned()
    }
}

/// A small, fully known shop in the textbook schema.
///
/// - categories: tees (base 1, 2, 3), mugs (base 10, 11)
/// - end products: e-a (on base 1), e-b (on base 2), e-m (on base 10)
/// - orders: 3 paid (4 distinct products), 1 pending, 1 refunded
/// - images: 4 viewed design images, 1 unviewed, 1 mockup, 1 without entity
pub fn textbook_shop() -> ShopSql {
    ShopSql::new()
        .sql("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT, created_at TEXT);")
        .sql("INSERT INTO accounts VALUES (1, 'Ana@Example.com', '2025-01-02 10:00:00'), (2, 'ben@example.com', '2025-02-03 11:00:00');")
        .sql("CREATE TABLE base_products (id INTEGER PRIMARY KEY, title TEXT, category_id INTEGER, price REAL);")
        .sql("INSERT INTO base_products VALUES (1, 'Tee 1', 7, 19.9), (2, 'Tee 2', 7, 21.0), (3, 'Tee 3', 7, 18.0), (10, 'Mug 1', 8, 12.0), (11, 'Mug 2', 8, 14.0);")
        .sql("CREATE TABLE end_products (id TEXT PRIMARY KEY, base_product_id INTEGER, designer_id INTEGER, title TEXT);")
        .sql("INSERT INTO end_products VALUES ('e-a', 1, 1, 'Cat tee'), ('e-b', 2, 1, 'Space tee'), ('e-m', 10, 2, 'Cat mug');")
        .sql("CREATE TABLE images (id INTEGER PRIMARY KEY, type TEXT, entity_id TEXT, view_count INTEGER, created_at TEXT);")
        .sql("INSERT INTO images VALUES
              (1, 'design', 'e-a', 120, '2025-03-01 09:00:00'),
              (2, 'design', 'e-a', 7,   '2025-03-01 09:00:00'),
              (3, 'design', 'e-b', 3,   '2025-03-02 09:00:00'),
              (4, 'design', 'e-m', 1,   '2025-03-03 09:00:00'),
              (5, 'design', 'e-m', 0,   '2025-03-03 09:00:00'),
              (6, 'mockup', 'e-m', 50,  '2025-03-03 09:00:00'),
              (7, 'design', NULL,  9,   '2025-03-03 09:00:00');")
        .sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, shoplazza_id TEXT, email TEXT, financial_status TEXT, line_items TEXT, created_at TEXT);")
        .sql(r#"INSERT INTO orders VALUES
              (1, '11218-00000001', 'Ana@Example.com', 'paid', '[{"product_id":"e-a","quantity":1,"price":"19.90"},{"product_id":"e-m","quantity":2,"price":"12.00"}]', '2025-04-01 12:00:00'),
              (2, '11218-00000002', ' ana@example.com ', 'paid', '[{"product_id":"e-b","quantity":1},{"product_id":"e-b","quantity":1}]', '2025-04-05 08:30:00'),
              (3, '11218-00000003', 'ben@example.com', 'paid', '[{"product_id":2,"quantity":1}]', '2025-04-06T10:00:00Z'),
              (4, '11218-00000004', 'ben@example.com', 'pending', '[{"product_id":"e-a","quantity":1}]', '2025-04-07 10:00:00'),
              (5, '11218-00000005', 'cy@example.com', 'refunded', '[{"product_id":"e-m","quantity":1}]', '2025-04-08 10:00:00');"#)
}
