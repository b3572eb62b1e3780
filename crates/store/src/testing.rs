//! Throwaway PostgreSQL databases for tests, on the server that
//! `MANIREC_TEST_POSTGRES_URL` names (`scripts/test` starts one in a temporary
//! folder and sets it). Each [`TestDatabase`] is a fresh, empty database,
//! dropped with its guard, so tests run side by side without sharing rows.

use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls};

use crate::sql::{OwnedValue, ToParam};
use crate::{Result, Store};

/// The variable naming the PostgreSQL server tests create their databases on.
pub const SERVER_VAR: &str = "MANIREC_TEST_POSTGRES_URL";

/// A fresh database, dropped when this is.
pub struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// `postgres://…/NAME` of the database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A fresh database on the test server. Panics, saying how to get one, when
/// `MANIREC_TEST_POSTGRES_URL` is unset or the server is down: a test that
/// needs PostgreSQL fails rather than passes without it.
pub fn postgres() -> TestDatabase {
    let admin = std::env::var(SERVER_VAR).unwrap_or_else(|_| {
        panic!(
            "{SERVER_VAR} is not set: run scripts/test (it starts a PostgreSQL server for the \
             tests), or point {SERVER_VAR} at a server where this user may CREATE DATABASE"
        )
    });
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "manirec_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = Client::connect(&admin, NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {SERVER_VAR}: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE on the test PostgreSQL: {e}"));
    let mut url = url::Url::parse(&admin)
        .unwrap_or_else(|e| panic!("{SERVER_VAR} must be a postgres:// URL: {e}"));
    url.set_path(&format!("/{name}"));
    TestDatabase {
        admin,
        name,
        url: url.to_string(),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&self.admin, NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Every row `sql` returns on the store at `url`, each as a JSON array of its
/// columns (integers, reals, text, null; bytes as an array of numbers): for
/// tests that look into the database the same way on either engine. `?N`
/// placeholders take `params` (strings, integers, reals, null).
pub fn query(url: &str, sql: &str, params: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
    let store = Store::connect(url)?;
    let owned: Vec<OwnedValue> = params
        .iter()
        .map(|p| match p {
            serde_json::Value::Null => OwnedValue::Null,
            serde_json::Value::Bool(b) => OwnedValue::Int(i64::from(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => OwnedValue::Int(i),
                None => OwnedValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => OwnedValue::Text(s.clone()),
            other => OwnedValue::Text(other.to_string()),
        })
        .collect();
    let refs: Vec<&dyn ToParam> = owned.iter().map(|v| v as &dyn ToParam).collect();
    store.conn.query_map(sql, &refs, |row| {
        let columns = (0..row.len())
            .map(|i| {
                Ok(match row.owned(i)? {
                    OwnedValue::Null => serde_json::Value::Null,
                    OwnedValue::Int(i) => i.into(),
                    OwnedValue::Real(r) => r.into(),
                    OwnedValue::Text(s) => s.into(),
                    OwnedValue::Blob(b) => b.into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(serde_json::Value::Array(columns))
    })
}
