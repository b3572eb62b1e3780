//! Storefront behaviour events, stored in arrival order.

use rusqlite::params;

use crate::{now_ms, Result, Store};

/// One storefront event as it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviorEvent {
    /// The client's idempotency key.
    pub event_id: String,
    /// `product_view`, `product_click`, `add_to_cart`, …
    pub event_type: String,
    /// The product concerned.
    pub product_id: String,
    /// The shop's user id, when logged in.
    pub user_id: Option<String>,
    /// The storefront session.
    pub session_id: Option<String>,
    /// The stable anonymous device id.
    pub device_id: Option<String>,
    /// When it happened, Unix milliseconds (client clock).
    pub timestamp_ms: i64,
    /// The recommendation request it answers, for impressions and clicks.
    pub request_id: Option<String>,
    /// Free-form properties, as a JSON object.
    pub properties: Option<String>,
}

impl Store {
    /// Stores events in one transaction; an `event_id` already stored is a duplicate.
    /// Returns `(accepted, duplicates)`.
    pub fn insert_events(&mut self, events: &[BehaviorEvent]) -> Result<(u64, u64)> {
        let tx = self.conn.transaction()?;
        let received_at = now_ms();
        let mut accepted = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO behavior_events (event_id, event_type, product_id, user_id, session_id,
                    device_id, timestamp_ms, request_id, properties, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (event_id) DO NOTHING",
            )?;
            for e in events {
                accepted += stmt.execute(params![
                    e.event_id,
                    e.event_type,
                    e.product_id,
                    e.user_id,
                    e.session_id,
                    e.device_id,
                    e.timestamp_ms,
                    e.request_id,
                    e.properties,
                    received_at
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok((accepted, events.len() as u64 - accepted))
    }

    /// Event counts by type.
    pub fn event_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT event_type, COUNT(*) FROM behavior_events GROUP BY 1 ORDER BY 2 DESC, 1",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivered_event_id_is_a_duplicate() {
        let mut store = Store::open_in_memory().unwrap();
        let e = BehaviorEvent {
            event_id: "e1".into(),
            event_type: "product_view".into(),
            product_id: "p".into(),
            user_id: None,
            session_id: Some("s".into()),
            device_id: None,
            timestamp_ms: 1,
            request_id: None,
            properties: None,
        };
        assert_eq!(
            store.insert_events(std::slice::from_ref(&e)).unwrap(),
            (1, 0)
        );
        assert_eq!(store.insert_events(&[e]).unwrap(), (0, 1));
    }
}
