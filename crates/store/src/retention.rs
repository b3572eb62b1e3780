//! Deleting data: retention by age, and one customer's data on request (GDPR).
//!
//! Both run in one transaction: either everything named is gone, or nothing is.

use std::collections::{BTreeMap, BTreeSet};

use crate::sql::{params, Conn};

use crate::{Result, Store};

/// Rows deleted by table.
pub type RetentionCounts = BTreeMap<String, u64>;

/// Who to forget: what the request named. The store widens it to every id the
/// mirror links to it (an account's email, an order's customer id, the sessions
/// and devices of the customer's events).
#[derive(Debug, Clone, Default)]
pub struct ForgetTarget {
    /// Emails (any case and spacing).
    pub emails: Vec<String>,
    /// The shop's ids, session or device ids, training user ids.
    pub ids: Vec<String>,
}

impl Store {
    /// Deletes training interactions older than `cutoff` (Unix seconds) and
    /// behaviour events that happened before it.
    pub fn delete_older_than(&mut self, cutoff: i64) -> Result<RetentionCounts> {
        let tx = self.conn.transaction()?;
        let mut counts = RetentionCounts::new();
        counts.insert(
            "training_interactions".into(),
            tx.execute(
                "DELETE FROM training_interactions WHERE timestamp < ?1",
                params![cutoff],
            )? as u64,
        );
        counts.insert(
            "behavior_events".into(),
            tx.execute(
                "DELETE FROM behavior_events WHERE timestamp_ms < ?1",
                params![cutoff.saturating_mul(1000)],
            )? as u64,
        );
        tx.commit()?;
        Ok(counts)
    }

    /// Deletes everything that belongs to `target`: mirror orders (with their
    /// items) and accounts, behaviour events (with the sessions and devices they
    /// link to the customer) and training interactions. `training_id` turns a
    /// normalised email into its training user id (the keyed hash).
    pub fn forget(
        &mut self,
        target: &ForgetTarget,
        training_id: &dyn Fn(&str) -> String,
    ) -> Result<RetentionCounts> {
        // Exclusive: it reads then writes what it read; under load it waits
        // for the writer instead of failing on the upgrade.
        let tx = self.conn.transaction_exclusive()?;
        let mut emails: BTreeSet<String> = target.emails.iter().map(|e| normalize(e)).collect();
        let mut ids: BTreeSet<String> = target.ids.iter().map(|i| i.trim().to_owned()).collect();
        ids.retain(|i| !i.is_empty());
        let mut orders = BTreeSet::new();

        // Widen through the mirror until nothing new is found.
        loop {
            let before = (emails.len(), ids.len(), orders.len());
            for (order_id, email, customer) in
                query3(&tx, "SELECT order_id, email, customer_id FROM shop_orders")?
            {
                let email = email.map(|e| normalize(&e));
                // The hashed id (what exports and logs show) names the email too.
                let linked = email
                    .as_ref()
                    .is_some_and(|e| emails.contains(e) || ids.contains(&training_id(e)))
                    || customer.as_ref().is_some_and(|c| ids.contains(c));
                if linked {
                    orders.insert(order_id);
                    emails.extend(email);
                    ids.extend(customer);
                }
            }
            for (id, email, _) in query3(&tx, "SELECT id, email, NULL FROM shop_accounts")? {
                let email = email.map(|e| normalize(&e));
                if ids.contains(&id)
                    || email
                        .as_ref()
                        .is_some_and(|e| emails.contains(e) || ids.contains(&training_id(e)))
                {
                    ids.insert(id);
                    emails.extend(email);
                }
            }
            if before == (emails.len(), ids.len(), orders.len()) {
                break;
            }
        }
        emails.retain(|e| !e.is_empty());

        // Every id the customer's rows can carry.
        let mut people: BTreeSet<String> = ids.clone();
        people.extend(emails.iter().map(|e| training_id(e)));
        people.extend(emails.iter().cloned());
        // Sessions and devices seen with the customer's user id are theirs too
        // (the anonymous browsing before they logged in).
        let mut linked = BTreeSet::new();
        for who in &people {
            tx.query_each(
                "SELECT session_id, device_id FROM behavior_events WHERE user_id = ?1",
                params![who],
                |r| {
                    linked.extend(r.get::<Option<String>>(0)?);
                    linked.extend(r.get::<Option<String>>(1)?);
                    Ok(())
                },
            )?;
        }
        // Their anonymous training ids, and the links that tied them to the customer.
        people.extend(linked.iter().map(|l| crate::session_user(l)));
        people.extend(linked.iter().map(|l| crate::device_user(l)));
        people.extend(linked);

        let mut counts = RetentionCounts::new();
        let mut add =
            |table: &str, n: usize| *counts.entry(table.to_owned()).or_default() += n as u64;
        for who in &people {
            add(
                "behavior_events",
                tx.execute(
                    "DELETE FROM behavior_events
                     WHERE user_id = ?1 OR session_id = ?1 OR device_id = ?1",
                    params![who],
                )?,
            );
            add(
                "training_interactions",
                tx.execute(
                    "DELETE FROM training_interactions WHERE user_id = ?1",
                    params![who],
                )?,
            );
        }
        for id in &orders {
            add(
                "training_interactions",
                tx.execute(
                    "DELETE FROM training_interactions WHERE origin = ?1",
                    params![format!("order:{id}")],
                )?,
            );
            add(
                "shop_order_items",
                tx.execute(
                    "DELETE FROM shop_order_items WHERE order_id = ?1",
                    params![id],
                )?,
            );
            add(
                "shop_orders",
                tx.execute("DELETE FROM shop_orders WHERE order_id = ?1", params![id])?,
            );
        }
        for id in &ids {
            add(
                "shop_accounts",
                tx.execute("DELETE FROM shop_accounts WHERE id = ?1", params![id])?,
            );
        }
        for who in &people {
            add(
                "identity_links",
                tx.execute(
                    "DELETE FROM identity_links WHERE user_id = ?1 OR anonymous_id = ?1",
                    params![who],
                )?,
            );
            add(
                "recommendation_log",
                tx.execute(
                    "DELETE FROM recommendation_log WHERE user_id = ?1",
                    params![who],
                )?,
            );
        }
        // Every id erased, so that no writer brings the customer back (a
        // webhook, the poll, a re-import, an event): the hashed id of each
        // email, never the email itself.
        let now = crate::now_ms();
        for id in people.iter().filter(|p| !emails.contains(*p)) {
            tx.execute(
                "INSERT INTO forgotten_users (user_id, forgotten_at) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO NOTHING",
                params![id, now],
            )?;
        }
        for table in [
            "training_interactions",
            "behavior_events",
            "shop_orders",
            "shop_order_items",
            "shop_accounts",
            "identity_links",
            "recommendation_log",
        ] {
            counts.entry(table.to_owned()).or_default();
        }
        tx.commit()?;
        Ok(counts)
    }
}

impl Store {
    /// Every id erased on request: training ids (an email's keyed hash), the
    /// shop's customer and account ids, session and device ids.
    pub fn forgotten_users(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .conn
            .query_map("SELECT user_id FROM forgotten_users", params![], |r| {
                r.get(0)
            })?
            .into_iter()
            .collect())
    }

    /// Those of `ids` that were erased on request.
    pub fn forgotten_among(&self, ids: &[&str]) -> Result<std::collections::HashSet<String>> {
        forgotten_among(&self.conn, ids)
    }
}

/// Those of `ids` in `forgotten_users`, inside the caller's transaction (a
/// writer checks and writes in one).
pub(crate) fn forgotten_among(
    conn: &Conn,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::new();
    // Almost always empty: one cheap look spares the writers the lookups.
    let any: Option<i64> =
        conn.query_opt("SELECT 1 FROM forgotten_users LIMIT 1", params![], |r| {
            r.get(0)
        })?;
    if any.is_none() {
        return Ok(found);
    }
    let ids: BTreeSet<&str> = ids.iter().copied().filter(|i| !i.is_empty()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    for chunk in crate::sql::fixed_chunks(&ids, &[256, 64, 16, 4, 1]) {
        let slots: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
        let params: Vec<&dyn crate::sql::ToParam> = chunk
            .iter()
            .map(|i| i as &dyn crate::sql::ToParam)
            .collect();
        found.extend(conn.query_map(
            &format!(
                "SELECT user_id FROM forgotten_users WHERE user_id IN ({})",
                slots.join(", ")
            ),
            &params,
            |r| r.get::<String>(0),
        )?);
    }
    Ok(found)
}

fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

type Triple = (String, Option<String>, Option<String>);

fn query3(tx: &Conn, sql: &str) -> Result<Vec<Triple>> {
    tx.query_map(sql, params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Account, BehaviorEvent, Interaction, InteractionKey, ShopOrder, Source};

    fn interaction(user: &str, ts: i64, origin: Option<&str>) -> Interaction {
        Interaction {
            key: InteractionKey {
                user_id: user.into(),
                item_id: "p".into(),
                timestamp: ts,
                interaction_type: "view".into(),
            },
            rating: 1.0,
            source: Source::Realtime,
            synthetic: false,
            quantity: 1,
            origin: origin.map(Into::into),
        }
    }

    fn event(id: &str, user: Option<&str>, session: &str, ts_ms: i64) -> BehaviorEvent {
        BehaviorEvent {
            event_id: id.into(),
            event_type: "product_view".into(),
            product_id: "p".into(),
            user_id: user.map(Into::into),
            session_id: Some(session.into()),
            device_id: None,
            timestamp_ms: ts_ms,
            request_id: None,
            properties: None,
        }
    }

    #[test]
    fn retention_deletes_by_age_only() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .insert_interactions(&[interaction("a", 100, None), interaction("a", 200, None)])
            .unwrap();
        store
            .insert_events(&[
                event("e1", None, "s", 99_999),
                event("e2", None, "s", 200_000),
            ])
            .unwrap();
        let c = store.delete_older_than(150).unwrap();
        assert_eq!(c["training_interactions"], 1);
        assert_eq!(c["behavior_events"], 1);
        assert_eq!(store.table_counts().unwrap()["training_interactions"], 1);
    }

    #[test]
    fn forgetting_an_email_reaches_accounts_orders_events_sessions_and_hashes() {
        forget_ana(vec!["ANA@x.com ".into()], vec![]);
    }

    #[test]
    fn forgetting_the_hashed_id_that_logs_show_reaches_the_raw_email_rows_too() {
        forget_ana(vec![], vec!["h(ana@x.com)".into()]);
    }

    fn forget_ana(emails: Vec<String>, ids: Vec<String>) {
        let mut store = Store::open_in_memory().unwrap();
        let hash = |e: &str| format!("h({e})");
        store
            .upsert_accounts(&[
                Account {
                    id: "42".into(),
                    email: Some("Ana@X.com".into()),
                    created_at: None,
                    attributes: None,
                },
                Account {
                    id: "43".into(),
                    email: Some("ben@x.com".into()),
                    created_at: None,
                    attributes: None,
                },
            ])
            .unwrap();
        store
            .upsert_orders(&[ShopOrder {
                order_id: "o1".into(),
                email: Some(" ana@x.com".into()),
                customer_id: None,
                financial_status: "paid".into(),
                created_at: 1,
                line_items_raw: "[]".into(),
                lines: vec![crate::OrderLine {
                    product_id: "p".into(),
                    variant_id: None,
                    quantity: 1,
                    price: None,
                    title: None,
                }],
                attributes: None,
                source: "import".into(),
            }])
            .unwrap();
        store
            .insert_interactions(&[
                interaction("h(ana@x.com)", 1, Some("order:o1")),
                interaction("42", 2, None),
                interaction("s-ana", 3, None),
                interaction("h(ben@x.com)", 4, None),
                interaction("s-other", 5, None),
            ])
            .unwrap();
        store
            .insert_events(&[
                event("e1", Some("42"), "s-ana", 1),
                event("e2", None, "s-ana", 2),
                event("e3", None, "s-other", 3),
            ])
            .unwrap();
        // What she was shown (as a session) is hers too; another shopper's stays.
        let shown = |id: &str, user: &str| crate::RecommendationLog {
            request_id: id.into(),
            created_at: 1,
            user_id: Some(user.into()),
            endpoint: "recommendations",
            model_version: None,
            experiment_id: None,
            variant: "control",
            items: vec!["p1".into()],
        };
        store
            .insert_recommendation_log(&[
                shown("r1", "session:s-ana"),
                shown("r2", "session:s-other"),
            ])
            .unwrap();

        let c = store.forget(&ForgetTarget { emails, ids }, &hash).unwrap();
        assert_eq!(c["training_interactions"], 3);
        assert_eq!(c["behavior_events"], 2);
        assert_eq!(c["shop_orders"], 1);
        assert_eq!(c["shop_order_items"], 1);
        assert_eq!(c["shop_accounts"], 1);
        assert_eq!(c["recommendation_log"], 1);
        assert_eq!(store.count_recommendation_log(None).unwrap(), 1);
        let left = store.table_counts().unwrap();
        assert_eq!(left["training_interactions"], 2);
        assert_eq!(left["behavior_events"], 1);
        assert_eq!(left["shop_accounts"], 1);

        // Every id erased is remembered (the email only as its hash), and an
        // event carrying any of them is answered as taken and not stored.
        let forgotten = store.forgotten_users().unwrap();
        for id in ["h(ana@x.com)", "42", "s-ana", "session:s-ana"] {
            assert!(forgotten.contains(id), "{id} not remembered: {forgotten:?}");
        }
        assert!(!forgotten.contains("ana@x.com"));
        assert!(!forgotten.contains("s-other"));
        let taken = store
            .insert_events(&[
                event("e4", None, "s-ana", 4),
                event("e5", Some("42"), "s-new", 5),
                event("e6", None, "s-other", 6),
                // Ben, signed in on the session Ana used (a shared laptop):
                // his event stays, without her session.
                event("e7", Some("ben"), "s-ana", 7),
            ])
            .unwrap();
        assert_eq!(taken, (4, 0));
        assert_eq!(store.table_counts().unwrap()["behavior_events"], 3);
        let session: Option<String> = store
            .conn
            .query_row(
                "SELECT session_id FROM behavior_events WHERE event_id = 'e7'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(session, None);

        let again = store
            .forget(
                &ForgetTarget {
                    emails: vec!["ana@x.com".into()],
                    ids: vec![],
                },
                &hash,
            )
            .unwrap();
        assert!(again.values().all(|&n| n == 0), "{again:?}");
    }
}
