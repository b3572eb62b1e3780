//! What serving reads and writes besides the model: the log of recommendations
//! answered, the shop's catalogue rules (hidden, pinned, boosted items), and a
//! shopper's events that sync has not turned into interactions yet.

use std::collections::BTreeSet;

use crate::sql::params;
use serde::Serialize;

use crate::{Error, Result, Store};

/// One recommendation answer, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendationLog {
    /// The id handed to the storefront; impressions and clicks carry it back.
    pub request_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// The shopper's training id, when known.
    pub user_id: Option<String>,
    /// `recommendations`, `similar` or `popular`.
    pub endpoint: &'static str,
    /// The model version that answered.
    pub model_version: Option<String>,
    /// The experiment the shopper was assigned in, if one was running.
    pub experiment_id: Option<i64>,
    /// `control` or `treatment`.
    pub variant: &'static str,
    /// What was shown, best first.
    pub items: Vec<String>,
}

/// A catalogue rule's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Never shown.
    Hide,
    /// Shown at a fixed position (`value`, 1 = first) whenever it is allowed.
    Pin,
    /// Ranked higher by `value` (1.0 lifts the last candidate to the first).
    Boost,
}

impl RuleKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Hide => "hide",
            RuleKind::Pin => "pin",
            RuleKind::Boost => "boost",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "hide" => Ok(RuleKind::Hide),
            "pin" => Ok(RuleKind::Pin),
            "boost" => Ok(RuleKind::Boost),
            other => Err(Error::Decode {
                column: 1,
                reason: format!("unknown rule {other:?}"),
            }),
        }
    }
}

/// One catalogue rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogRule {
    /// The item.
    pub item_id: String,
    /// What the rule does.
    pub rule: RuleKind,
    /// Pin position or boost strength; 0 for a hide.
    pub value: f64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A storefront event not yet synced, as serving reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentEvent {
    /// `product_view`, `purchase`, …
    pub event_type: String,
    /// The product.
    pub product_id: String,
    /// Unix ms.
    pub timestamp_ms: i64,
}

/// Statuses of an end product the shop does not show (from the shop's own
/// columns kept in `attributes`).
const UNLISTED: [&str; 6] = [
    "draft",
    "hidden",
    "archived",
    "unpublished",
    "deleted",
    "inactive",
];

/// Whether an end product's own columns say the shop does not show it:
/// `published` false (or 0, "0", "false", "no"), or an unlisted `status`.
fn unlisted(attributes: &serde_json::Value) -> bool {
    use serde_json::Value;
    let unpublished = match attributes.get("published") {
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "0" | "false" | "no"),
        _ => false,
    };
    let status = attributes
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| UNLISTED.contains(&s.to_lowercase().as_str()));
    unpublished || status
}

impl Store {
    /// Logs recommendation answers in one transaction; a request id already
    /// logged is kept as it was. Returns how many were new.
    pub fn insert_recommendation_log(&mut self, rows: &[RecommendationLog]) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        for r in rows {
            new += tx.execute(
                "INSERT INTO recommendation_log (request_id, created_at, user_id, endpoint,
                     model_version, experiment_id, variant, items)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (request_id) DO NOTHING",
                params![
                    r.request_id,
                    r.created_at,
                    r.user_id,
                    r.endpoint,
                    r.model_version,
                    r.experiment_id,
                    r.variant,
                    serde_json::to_string(&r.items)?,
                ],
            )? as u64;
        }
        tx.commit()?;
        Ok(new)
    }

    /// How many answers are logged (all, or of one experiment).
    pub fn count_recommendation_log(&self, experiment_id: Option<i64>) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM recommendation_log WHERE CAST(?1 AS BIGINT) IS NULL OR experiment_id = ?1",
            params![experiment_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Deletes logged answers older than `before_ms`; returns how many.
    pub fn delete_recommendation_log_before(&self, before_ms: i64) -> Result<u64> {
        Ok(self.conn.execute(
            "DELETE FROM recommendation_log WHERE created_at < ?1",
            params![before_ms],
        )? as u64)
    }

    /// Sets (or replaces) the rule of `item_id`.
    pub fn set_catalog_rule(&self, item_id: &str, rule: RuleKind, value: f64) -> Result<()> {
        if item_id.trim().is_empty() {
            return Err(Error::Invalid("a rule needs an item id".into()));
        }
        if rule == RuleKind::Pin && !(value >= 1.0 && value.fract() == 0.0) {
            return Err(Error::Invalid(format!(
                "a pin's position is a whole number from 1 (first), not {value}"
            )));
        }
        if rule == RuleKind::Boost && !(value.is_finite() && value > 0.0) {
            return Err(Error::Invalid(format!(
                "a boost is a positive strength (1.0 lifts the last candidate to the first), not {value}"
            )));
        }
        let value = if rule == RuleKind::Hide { 0.0 } else { value };
        self.conn.execute(
            "INSERT INTO catalog_rules (item_id, rule, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (item_id) DO UPDATE SET rule = excluded.rule, value = excluded.value,
                 updated_at = excluded.updated_at",
            params![item_id.trim(), rule.as_str(), value, crate::now_ms()],
        )?;
        Ok(())
    }

    /// Removes the rule of `item_id`; returns whether there was one.
    pub fn remove_catalog_rule(&self, item_id: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM catalog_rules WHERE item_id = ?1",
            params![item_id],
        )? > 0)
    }

    /// Every rule, by item id.
    pub fn catalog_rules(&self) -> Result<Vec<CatalogRule>> {
        self.conn.query_map(
            "SELECT item_id, rule, value, updated_at FROM catalog_rules ORDER BY item_id",
            params![],
            |r| {
                Ok(CatalogRule {
                    item_id: r.get(0)?,
                    rule: RuleKind::parse(r.text(1)?)?,
                    value: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            },
        )
    }

    /// Items never to show: hidden by a rule, or end products the shop marks as
    /// unpublished (`published` false or a draft/hidden/archived `status`).
    pub fn hidden_items(&self) -> Result<Vec<String>> {
        let mut hidden: BTreeSet<String> = self
            .conn
            .query_map(
                "SELECT item_id FROM catalog_rules WHERE rule = 'hide'",
                params![],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
        // The shop's own columns are free-form JSON: read here rather than
        // by each engine's JSON functions, which disagree on bad JSON.
        self.conn.query_each(
            "SELECT id, attributes FROM shop_end_products WHERE attributes IS NOT NULL",
            params![],
            |r| {
                if let Ok(attributes) = serde_json::from_str::<serde_json::Value>(r.text(1)?) {
                    if unlisted(&attributes) {
                        hidden.insert(r.get(0)?);
                    }
                }
                Ok(())
            },
        )?;
        Ok(hidden.into_iter().collect())
    }

    /// Events of a shopper that sync has not reached yet (newest last): by the
    /// customer's training id, or by the session of a `session:<id>` shopper.
    pub fn unsynced_events(&self, user_id: &str, limit: usize) -> Result<Vec<RecentEvent>> {
        let watermark = self.sync_watermark()?;
        let (user, session) = match user_id.strip_prefix("session:") {
            Some(s) => (None, Some(s)),
            None => (Some(user_id), None),
        };
        self.conn.query_map(
            "SELECT event_type, product_id, timestamp_ms FROM (
                 SELECT seq, event_type, product_id, timestamp_ms FROM behavior_events
                 WHERE seq > ?1 AND (user_id = ?2 OR (user_id IS NULL AND session_id = ?3))
                 ORDER BY seq DESC LIMIT ?4) AS recent
             ORDER BY seq",
            params![watermark, user, session, limit as i64],
            |r| {
                Ok(RecentEvent {
                    event_type: r.get(0)?,
                    product_id: r.get(1)?,
                    timestamp_ms: r.get(2)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BehaviorEvent;

    #[test]
    fn a_shoppers_unsynced_events_are_found_by_index_not_by_scan() {
        let store = Store::open_in_memory().unwrap();
        let plan: Vec<String> = store
            .conn
            .query_map(
                "EXPLAIN QUERY PLAN SELECT seq FROM behavior_events
                 WHERE seq > ?1 AND (user_id = ?2 OR (user_id IS NULL AND session_id = ?3))
                 ORDER BY seq DESC LIMIT ?4",
                params![0, "u_1", "s1", 10],
                |r| r.get::<String>(3),
            )
            .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("behavior_events_user_seq"), "{plan}");
        assert!(plan.contains("behavior_events_session_seq"), "{plan}");
    }

    fn event(
        id: &str,
        kind: &str,
        item: &str,
        session: &str,
        request: Option<&str>,
    ) -> BehaviorEvent {
        BehaviorEvent {
            event_id: id.into(),
            event_type: kind.into(),
            product_id: item.into(),
            user_id: None,
            session_id: Some(session.into()),
            device_id: None,
            timestamp_ms: 1_700_000_000_000,
            request_id: request.map(str::to_owned),
            properties: None,
        }
    }

    #[test]
    fn rules_are_validated_and_hidden_items_include_unpublished_products() {
        let store = Store::open_in_memory().unwrap();
        store.set_catalog_rule("e1", RuleKind::Hide, 0.0).unwrap();
        store.set_catalog_rule("e2", RuleKind::Pin, 1.0).unwrap();
        assert!(store.set_catalog_rule("e3", RuleKind::Pin, 0.5).is_err());
        assert!(store.set_catalog_rule("e3", RuleKind::Boost, -1.0).is_err());
        store
            .conn
            .execute(
                "INSERT INTO shop_end_products (id, attributes, updated_at) VALUES
                   ('e4', '{\"status\": \"Draft\"}', 0), ('e5', '{\"published\": 0}', 0),
                   ('e6', '{\"published\": 1}', 0), ('e7', 'not json', 0), ('e8', NULL, 0)",
                crate::sql::params![],
            )
            .unwrap();
        assert_eq!(store.hidden_items().unwrap(), ["e1", "e4", "e5"]);
        // A pin replaces the hide of the same item.
        store.set_catalog_rule("e1", RuleKind::Pin, 2.0).unwrap();
        assert_eq!(store.hidden_items().unwrap(), ["e4", "e5"]);
        assert_eq!(store.catalog_rules().unwrap().len(), 2);
        assert!(store.remove_catalog_rule("e1").unwrap());
        assert!(!store.remove_catalog_rule("e1").unwrap());
    }

    #[test]
    fn the_log_is_idempotent_and_unsynced_events_are_the_shoppers_own() {
        let mut store = Store::open_in_memory().unwrap();
        let log = RecommendationLog {
            request_id: "r1".into(),
            created_at: 1,
            user_id: Some("session:s1".into()),
            endpoint: "recommendations",
            model_version: Some("m1".into()),
            experiment_id: None,
            variant: "control",
            items: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            store
                .insert_recommendation_log(&[log.clone(), log.clone()])
                .unwrap(),
            1
        );
        assert_eq!(store.insert_recommendation_log(&[log]).unwrap(), 0);
        assert_eq!(store.count_recommendation_log(None).unwrap(), 1);
        store
            .insert_events(&[
                event("e1", "product_view", "a", "s1", None),
                event("e2", "product_view", "b", "s2", None),
                event("e3", "add_to_cart", "c", "s1", None),
            ])
            .unwrap();
        let mine = store.unsynced_events("session:s1", 10).unwrap();
        let items: Vec<_> = mine.iter().map(|e| e.product_id.as_str()).collect();
        assert_eq!(items, ["a", "c"]);
        assert_eq!(
            store.unsynced_events("session:s1", 1).unwrap()[0].product_id,
            "c"
        );
        assert!(store.unsynced_events("u_nobody", 10).unwrap().is_empty());
    }

    #[test]
    fn a_recommendations_reads_are_not_compiled_again_on_each_call() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .insert_events(&[
                event("e1", "product_view", "a", "s1", None),
                event("e2", "purchase", "b", "s2", None),
            ])
            .unwrap();
        // Someone erased, so that the erasure check runs its query.
        let target = crate::ForgetTarget {
            emails: vec![],
            ids: vec!["u_gone".into()],
        };
        store.forget(&target, &|e| e.to_owned()).unwrap();
        // Each read a recommendation makes (and sync's), for several shoppers.
        // Without the planner's stability guarantee, a statement whose plan
        // may depend on a bound value (the `LIMIT ?` of the history and the
        // unsynced events, sync's batch) is parsed and planned again every
        // time: 12 here.
        for user in ["u_1", "session:s1", "session:s2", "u_2"] {
            store.sync_watermark().unwrap();
            store.forgotten_among(&[user]).unwrap();
            store.linked_users(&[user.to_owned()]).unwrap();
            store.user_history(user, 500).unwrap();
            store.purchased_items(user).unwrap();
            store.unsynced_events(user, 500).unwrap();
            store.item_details(&["a".into(), "b".into()]).unwrap();
            store.events_after(0, 20_000).unwrap();
        }
        assert_eq!(store.conn.statements_reprepared(), 0);
    }
}
