//! Training interactions: one table, one meaning per row, unique on
//! `(user_id, item_id, timestamp, interaction_type)`.
//!
//! Two ways to write, both idempotent:
//! - [`Store::insert_interactions`] for append-only feeds (CSV imports, events):
//!   a row already present is a duplicate and is left alone.
//! - [`Store::reconcile_origins`] for rows derived from a shop record (an order,
//!   the image table): the rows of each `origin` become exactly the derived set,
//!   so re-deriving after the record changed updates rows instead of doubling them.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::sql::{params, Conn, Dialect, Row};
use serde::Serialize;

use crate::{now_ms, Result, Store};

/// The prefix of user ids that stand for no one: item-level signals such as
/// design-image views (`anonymous:image:<id>`). Models must treat such rows as
/// popularity, never as a customer's history; see [`is_anonymous`].
pub const ANONYMOUS_PREFIX: &str = "anonymous:";

/// Whether a training user id stands for no one (see [`ANONYMOUS_PREFIX`]).
pub fn is_anonymous(user_id: &str) -> bool {
    user_id.starts_with(ANONYMOUS_PREFIX)
}

/// Where an interaction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Derived from the shop's database (orders, images).
    ExistingData,
    /// From a Shoplazza webhook.
    Webhook,
    /// From storefront behaviour events.
    Realtime,
    /// A public data set (MovieLens…) brought in for pre-training or benchmarks.
    Public,
}

impl Source {
    /// Every source, in a stable order.
    pub const ALL: [Source; 4] = [
        Source::ExistingData,
        Source::Webhook,
        Source::Realtime,
        Source::Public,
    ];

    /// The name stored in the database and printed in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ExistingData => "existing_data",
            Source::Webhook => "webhook",
            Source::Realtime => "realtime",
            Source::Public => "public",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Source::ALL
            .into_iter()
            .find(|src| src.as_str() == s)
            .ok_or_else(|| {
                format!("unknown source {s:?}; expected one of existing_data, webhook, realtime, public")
            })
    }
}

/// The identity of an interaction: what the unique constraint is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InteractionKey {
    /// User (a keyed hash of an email, a session or device id, or [`ANONYMOUS_USER`]).
    pub user_id: String,
    /// Item (a product id).
    pub item_id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// `purchase`, `view`, `image_view`, `add_to_cart`, …
    pub interaction_type: String,
}

/// One training interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    /// What makes it unique.
    pub key: InteractionKey,
    /// Signal strength (purchase 5.0 … image view 1.0).
    pub rating: f64,
    /// Where it came from.
    pub source: Source,
    /// Simulated rather than observed; never enters an evaluation test set.
    pub synthetic: bool,
    /// Units (line-item quantity, image view count).
    pub quantity: i64,
    /// The record it was derived from (`order:<id>`, `images`), if any.
    pub origin: Option<String>,
}

/// The complete set of rows one origin should have.
#[derive(Debug, Clone)]
pub struct OriginRows {
    /// The origin (`order:<id>`, `images`).
    pub origin: String,
    /// Its rows.
    pub rows: Vec<Interaction>,
}

/// Which of an origin's stored rows a reconciliation may remove when they are no
/// longer derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileScope {
    /// Every row of the origin.
    All,
    /// Only observed rows; simulated ones are kept (simulation switched off).
    RealOnly,
}

/// What a reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReconcileCounts {
    /// New rows.
    pub inserted: u64,
    /// Rows whose rating or quantity changed.
    pub updated: u64,
    /// Rows no longer derived, deleted.
    pub removed: u64,
    /// Rows already present as they are.
    pub unchanged: u64,
}

impl Store {
    /// Appends rows in one transaction; rows already present (by key) are counted
    /// as duplicates and left as they are. Returns `(inserted, duplicates)`.
    pub fn insert_interactions(&mut self, rows: &[Interaction]) -> Result<(u64, u64)> {
        let tx = self.conn.transaction()?;
        let created_at = now_ms();
        let mut inserted = 0;
        for row in without_forgotten(&tx, rows)? {
            inserted += insert_in(&tx, row, created_at)? as u64;
        }
        tx.commit()?;
        Ok((inserted, rows.len() as u64 - inserted))
    }

    /// Makes the stored rows of each origin exactly the given rows (within `scope`),
    /// in one transaction for the whole batch.
    pub fn reconcile_origins(
        &mut self,
        batches: &[OriginRows],
        scope: ReconcileScope,
    ) -> Result<ReconcileCounts> {
        let tx = self.conn.transaction()?;
        let counts = reconcile_in(&tx, batches, scope)?;
        tx.commit()?;
        Ok(counts)
    }

    /// Calls `f` on every interaction of `source` (all sources when `None`), ordered by
    /// timestamp then key, so exports are byte-for-byte reproducible.
    pub fn for_each_interaction(
        &self,
        source: Option<Source>,
        mut f: impl FnMut(&Interaction) -> Result<()>,
    ) -> Result<()> {
        self.conn.query_each(
            "SELECT user_id, item_id, timestamp, interaction_type, rating, source, synthetic,
                    quantity, origin
             FROM training_interactions
             WHERE CAST(?1 AS TEXT) IS NULL OR source = ?1
             ORDER BY timestamp, user_id, item_id, interaction_type",
            params![source.map(Source::as_str)],
            |r| f(&interaction_from_row(r)?),
        )
    }

    /// A user's most recent interactions (at most `limit`), newest first: the
    /// history a recommendation starts from. Read from one index alone
    /// (`training_interactions_user_history`), on every recommendation.
    pub fn user_history(&self, user_id: &str, limit: usize) -> Result<Vec<HistoryRow>> {
        self.conn
            .query_map(USER_HISTORY, params![user_id, limit as i64], |r| {
                Ok(HistoryRow {
                    item_id: r.get(0)?,
                    timestamp: r.get(1)?,
                    interaction_type: r.get(2)?,
                    rating: r.get(3)?,
                    synthetic: r.get(4)?,
                })
            })
    }

    /// Every item a user bought, however long ago.
    /// Read on every recommendation, from the purchases' own index: a heavy
    /// customer's views are not stepped over (SQLite is told the index, as
    /// without statistics its planner prefers the wider unique one).
    pub fn purchased_items(&self, user_id: &str) -> Result<Vec<String>> {
        let sql = match self.conn.dialect() {
            Dialect::Sqlite => {
                "SELECT DISTINCT item_id FROM training_interactions
                 INDEXED BY training_interactions_purchases
                 WHERE user_id = ?1 AND interaction_type = 'purchase' ORDER BY item_id"
            }
            Dialect::Postgres => {
                "SELECT DISTINCT item_id FROM training_interactions
                 WHERE user_id = ?1 AND interaction_type = 'purchase' ORDER BY item_id"
            }
        };
        self.conn.query_map(sql, params![user_id], |r| r.get(0))
    }

    /// Interactions written after `created_after` (Unix ms; all when `None`).
    pub fn count_interactions_since(&self, created_after: Option<i64>) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM training_interactions WHERE CAST(?1 AS BIGINT) IS NULL OR created_at > ?1",
            params![created_after],
            |r| r.get::<i64>(0),
        )? as u64)
    }

    /// Interaction counts by `(source, interaction_type, synthetic)`.
    pub fn interaction_counts(&self) -> Result<Vec<(String, String, bool, i64)>> {
        self.conn.query_map(
            "SELECT source, interaction_type, synthetic, COUNT(*) FROM training_interactions
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }
}

/// [`Store::user_history`]'s statement: every column it reads is in the index.
const USER_HISTORY: &str = "SELECT item_id, timestamp, interaction_type, rating, synthetic
     FROM training_interactions WHERE user_id = ?1
     ORDER BY timestamp DESC, item_id DESC LIMIT ?2";

/// One row of a user's history, as serving reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The item.
    pub item_id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// `purchase`, `view`, …
    pub interaction_type: String,
    /// Its weight.
    pub rating: f64,
    /// Simulated rather than observed.
    pub synthetic: bool,
}

/// An interaction from a row of `SELECT user_id, item_id, timestamp,
/// interaction_type, rating, source, synthetic, quantity, origin`.
fn interaction_from_row(r: &Row) -> Result<Interaction> {
    let source: String = r.get(5)?;
    Ok(Interaction {
        key: InteractionKey {
            user_id: r.get(0)?,
            item_id: r.get(1)?,
            timestamp: r.get(2)?,
            interaction_type: r.get(3)?,
        },
        rating: r.get(4)?,
        source: source.parse().unwrap_or(Source::ExistingData),
        synthetic: r.get(6)?,
        quantity: r.get(7)?,
        origin: r.get(8)?,
    })
}

/// [`Store::reconcile_origins`] inside a caller's transaction.
pub(crate) fn reconcile_in(
    tx: &Conn,
    batches: &[OriginRows],
    scope: ReconcileScope,
) -> Result<ReconcileCounts> {
    let created_at = now_ms();
    let mut counts = ReconcileCounts::default();
    for batch in batches {
        let mut existing: HashMap<InteractionKey, (i64, f64, i64, bool)> = tx
            .query_map(
                "SELECT id, user_id, item_id, timestamp, interaction_type, rating, quantity, synthetic
                 FROM training_interactions WHERE origin = ?1",
                params![&batch.origin],
                |r| {
                    Ok((
                        InteractionKey {
                            user_id: r.get(1)?,
                            item_id: r.get(2)?,
                            timestamp: r.get(3)?,
                            interaction_type: r.get(4)?,
                        },
                        (r.get(0)?, r.get(5)?, r.get(6)?, r.get(7)?),
                    ))
                },
            )?
            .into_iter()
            .collect();
        for row in &batch.rows {
            match existing.remove(&row.key) {
                Some((id, rating, quantity, _)) => {
                    if rating != row.rating || quantity != row.quantity {
                        tx.execute(
                            "UPDATE training_interactions SET rating = ?2, quantity = ?3 WHERE id = ?1",
                            params![id, row.rating, row.quantity],
                        )?;
                        counts.updated += 1;
                    } else {
                        counts.unchanged += 1;
                    }
                }
                None => {
                    // A conflict here means another origin already holds the
                    // same event: it stays single.
                    match insert_in(tx, row, created_at)? {
                        0 => counts.unchanged += 1,
                        _ => counts.inserted += 1,
                    }
                }
            }
        }
        for (_, (id, _, _, synthetic)) in existing {
            if scope == ReconcileScope::All || !synthetic {
                tx.execute(
                    "DELETE FROM training_interactions WHERE id = ?1",
                    params![id],
                )?;
                counts.removed += 1;
            }
        }
    }
    Ok(counts)
}

/// Inserts one interaction unless its key is taken; 1 when it was new.
pub(crate) fn insert_in(conn: &Conn, row: &Interaction, created_at: i64) -> Result<usize> {
    conn.execute(
        "INSERT INTO training_interactions
            (user_id, item_id, rating, timestamp, interaction_type, source, synthetic, quantity, origin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (user_id, item_id, timestamp, interaction_type) DO NOTHING",
        params![
            row.key.user_id,
            row.key.item_id,
            row.rating,
            row.key.timestamp,
            row.key.interaction_type,
            row.source.as_str(),
            row.synthetic,
            row.quantity,
            row.origin,
            created_at
        ],
    )
}

/// `rows` but those of users erased on request, checked in the writer's own
/// transaction: a `forget` that commits while a writer prepares its rows
/// (sync reading events, an import reading its file) still wins.
pub(crate) fn without_forgotten<'a>(
    tx: &crate::sql::Conn,
    rows: &'a [Interaction],
) -> Result<Vec<&'a Interaction>> {
    let users: Vec<&str> = rows.iter().map(|r| r.key.user_id.as_str()).collect();
    let forgotten = crate::retention::forgotten_among(tx, &users)?;
    Ok(rows
        .iter()
        .filter(|r| !forgotten.contains(&r.key.user_id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shoppers_history_is_read_from_the_index_alone() {
        let store = Store::open_in_memory().unwrap();
        let plan: Vec<String> = store
            .conn
            .query_map(
                &format!("EXPLAIN QUERY PLAN {USER_HISTORY}"),
                params!["u_1", 500],
                |r| r.get::<String>(3),
            )
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("COVERING INDEX training_interactions_user_history"),
            "{plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "sorted after reading: {plan}"
        );
    }

    fn row(item: &str, ts: i64, synthetic: bool) -> Interaction {
        Interaction {
            key: InteractionKey {
                user_id: "u".into(),
                item_id: item.into(),
                timestamp: ts,
                interaction_type: if synthetic { "view" } else { "purchase" }.into(),
            },
            rating: if synthetic { 3.0 } else { 5.0 },
            source: Source::ExistingData,
            synthetic,
            quantity: 1,
            origin: Some("order:1".into()),
        }
    }

    #[test]
    fn a_customers_purchases_come_from_their_own_index_views_left_out() {
        let mut store = Store::open_in_memory().unwrap();
        let rows = vec![
            row("b", 1, false),
            row("a", 2, true),
            row("a", 3, false),
            row("b", 4, false),
            row("c", 5, true),
        ];
        store.insert_interactions(&rows).unwrap();
        assert_eq!(store.purchased_items("u").unwrap(), ["a", "b"]);
        assert!(store.purchased_items("nobody").unwrap().is_empty());
    }

    #[test]
    fn insert_counts_duplicates_instead_of_doubling() {
        let mut store = Store::open_in_memory().unwrap();
        let rows = vec![row("a", 1, false), row("b", 2, false), row("a", 1, false)];
        assert_eq!(store.insert_interactions(&rows).unwrap(), (2, 1));
        assert_eq!(store.insert_interactions(&rows).unwrap(), (0, 3));
    }

    #[test]
    fn reconcile_replaces_an_origins_rows_within_scope() {
        let mut store = Store::open_in_memory().unwrap();
        let first = OriginRows {
            origin: "order:1".into(),
            rows: vec![row("a", 10, false), row("a", 5, true)],
        };
        let c = store
            .reconcile_origins(std::slice::from_ref(&first), ReconcileScope::All)
            .unwrap();
        assert_eq!((c.inserted, c.removed), (2, 0));
        let c = store
            .reconcile_origins(std::slice::from_ref(&first), ReconcileScope::All)
            .unwrap();
        assert_eq!((c.inserted, c.unchanged, c.removed), (0, 2, 0));

        // The simulated view moved: with simulation off it is kept ...
        let real_only = OriginRows {
            origin: "order:1".into(),
            rows: vec![row("a", 10, false)],
        };
        let c = store
            .reconcile_origins(&[real_only], ReconcileScope::RealOnly)
            .unwrap();
        assert_eq!((c.inserted, c.removed), (0, 0));
        // ... with it on it is replaced.
        let moved = OriginRows {
            origin: "order:1".into(),
            rows: vec![row("a", 10, false), row("a", 7, true)],
        };
        let c = store
            .reconcile_origins(&[moved], ReconcileScope::All)
            .unwrap();
        assert_eq!((c.inserted, c.removed, c.unchanged), (1, 1, 1));
        let mut n = 0;
        store
            .for_each_interaction(None, |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
    }
}
