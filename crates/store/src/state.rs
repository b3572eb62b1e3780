//! Small named values: watermarks, last-run timestamps, generated secrets.

use crate::sql::params;

use crate::{now_ms, Result, Store};

impl Store {
    /// The value stored under `key`, if any.
    pub fn state_get(&self, key: &str) -> Result<Option<String>> {
        self.conn.query_opt(
            "SELECT value FROM state WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
    }

    /// Sets `key` to `value`.
    pub fn state_set(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, now_ms()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn state_round_trips_and_overwrites() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.state_get("k").unwrap(), None);
        store.state_set("k", "1").unwrap();
        store.state_set("k", "2").unwrap();
        assert_eq!(store.state_get("k").unwrap().as_deref(), Some("2"));
    }
}
