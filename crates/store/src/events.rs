//! Storefront behaviour events, stored in arrival order.

use crate::sql::{params, ToParam};

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

/// The training user id of an anonymous session.
pub fn session_user(session_id: &str) -> String {
    format!("session:{session_id}")
}

/// The training user id of an anonymous device.
pub fn device_user(device_id: &str) -> String {
    format!("device:{device_id}")
}

/// Events per INSERT, largest first: 9 parameters each stays far below
/// SQLite's (32,766) and PostgreSQL's (65,535) limits, and a batch is cut into
/// these sizes only, so the statement caches hold four shapes, not two hundred.
const EVENT_CHUNKS: &[usize] = &[200, 50, 10, 1];

impl Store {
    /// Stores events in one transaction; an `event_id` already stored is a duplicate.
    /// Returns `(accepted, duplicates)`.
    pub fn insert_events(&mut self, events: &[BehaviorEvent]) -> Result<(u64, u64)> {
        Ok(self.insert_event_batches(&[events])?[0])
    }

    /// Stores several requests' events in one transaction (group commit): one
    /// `(accepted, duplicates)` per batch. An accepted event that carries a user id
    /// and a session or device id links them (first link wins), so that anonymous
    /// history can join the customer. An event of a shopper erased on request
    /// (any of its ids in `forgotten_users`) counts as accepted and is dropped.
    pub fn insert_event_batches(
        &mut self,
        batches: &[&[BehaviorEvent]],
    ) -> Result<Vec<(u64, u64)>> {
        let tx = self.conn.transaction()?;
        let received_at = now_ms();
        let ids: Vec<&str> = batches
            .iter()
            .flat_map(|events| events.iter())
            .flat_map(|e| [&e.user_id, &e.session_id, &e.device_id])
            .filter_map(|id| id.as_deref())
            .collect();
        let forgotten = crate::retention::forgotten_among(&tx, &ids)?;
        let mut out = Vec::with_capacity(batches.len());
        let erased = |id: &Option<String>| id.as_ref().is_some_and(|id| forgotten.contains(id));
        for events in batches {
            // An erased customer's events, or an anonymous event of an erased
            // session or device, are answered as taken (the client did nothing
            // wrong and must not retry them) and never stored. Another
            // customer on an erased device (a shared laptop) keeps their
            // event, without the erased ids.
            let mut cleaned: Vec<std::borrow::Cow<'_, BehaviorEvent>> = Vec::new();
            for e in events.iter() {
                if erased(&e.user_id)
                    || (e.user_id.is_none() && (erased(&e.session_id) || erased(&e.device_id)))
                {
                    continue;
                }
                if erased(&e.session_id) || erased(&e.device_id) {
                    let mut e = e.clone();
                    if erased(&e.session_id) {
                        e.session_id = None;
                    }
                    if erased(&e.device_id) {
                        e.device_id = None;
                    }
                    cleaned.push(std::borrow::Cow::Owned(e));
                } else {
                    cleaned.push(std::borrow::Cow::Borrowed(e));
                }
            }
            let kept: Vec<&BehaviorEvent> = cleaned.iter().map(|e| e.as_ref()).collect();
            let mut accepted = (events.len() - kept.len()) as u64;
            for chunk in crate::sql::fixed_chunks(&kept, EVENT_CHUNKS) {
                // One statement per chunk (a round trip per event is what a
                // database server's ingestion rate is bounded by); RETURNING
                // names the ones that were new, in order.
                let rows: Vec<String> = (0..chunk.len())
                    .map(|i| {
                        let p = i * 9;
                        format!(
                            "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?1)",
                            p + 2,
                            p + 3,
                            p + 4,
                            p + 5,
                            p + 6,
                            p + 7,
                            p + 8,
                            p + 9,
                            p + 10
                        )
                    })
                    .collect();
                let mut values: Vec<&dyn ToParam> = Vec::with_capacity(1 + chunk.len() * 9);
                values.push(&received_at);
                for e in chunk {
                    values.extend([
                        &e.event_id as &dyn ToParam,
                        &e.event_type,
                        &e.product_id,
                        &e.user_id,
                        &e.session_id,
                        &e.device_id,
                        &e.timestamp_ms,
                        &e.request_id,
                        &e.properties,
                    ]);
                }
                let new: Vec<String> = tx.query_map(
                    &format!(
                        "INSERT INTO behavior_events (event_id, event_type, product_id, user_id,
                            session_id, device_id, timestamp_ms, request_id, properties, received_at)
                         VALUES {}
                         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                        rows.join(", ")
                    ),
                    &values,
                    |r| r.get(0),
                )?;
                accepted += new.len() as u64;
                let mut new: std::collections::HashSet<String> = new.into_iter().collect();
                for e in chunk {
                    // An id repeated in one request was stored once: its first copy.
                    if !new.remove(&e.event_id) {
                        continue;
                    }
                    let Some(user) = &e.user_id else { continue };
                    let anonymous = e
                        .session_id
                        .as_deref()
                        .map(session_user)
                        .into_iter()
                        .chain(e.device_id.as_deref().map(device_user));
                    for id in anonymous {
                        tx.execute(
                            "INSERT INTO identity_links (anonymous_id, user_id, linked_at) VALUES (?1, ?2, ?3)
                             ON CONFLICT (anonymous_id) DO NOTHING",
                            params![id, user, received_at],
                        )?;
                    }
                }
            }
            out.push((accepted, events.len() as u64 - accepted));
        }
        tx.commit()?;
        Ok(out)
    }

    /// Up to `limit` events with a sequence number above `after`, in sequence order.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, BehaviorEvent)>> {
        self.conn.query_map(
            "SELECT seq, event_id, event_type, product_id, user_id, session_id, device_id,
                    timestamp_ms, request_id, properties
             FROM behavior_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    BehaviorEvent {
                        event_id: r.get(1)?,
                        event_type: r.get(2)?,
                        product_id: r.get(3)?,
                        user_id: r.get(4)?,
                        session_id: r.get(5)?,
                        device_id: r.get(6)?,
                        timestamp_ms: r.get(7)?,
                        request_id: r.get(8)?,
                        properties: r.get(9)?,
                    },
                ))
            },
        )
    }

    /// The highest event sequence number (0 when there are none).
    pub fn last_event_seq(&self) -> Result<i64> {
        self.conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM behavior_events",
            params![],
            |r| r.get(0),
        )
    }

    /// Event counts by type.
    pub fn event_counts(&self) -> Result<Vec<(String, i64)>> {
        self.conn.query_map(
            "SELECT event_type, COUNT(*) FROM behavior_events GROUP BY 1 ORDER BY 2 DESC, 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
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
