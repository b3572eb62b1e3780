//! Webhook deliveries: each one recorded once, with what it did to the mirror and
//! the interactions, in one transaction.

use crate::sql::{params, Conn};
use serde::Serialize;

use crate::interactions::reconcile_in;
use crate::shop::{upsert_order_in, upsert_row, Upserted};
use crate::{
    now_ms, Category, EndProduct, OriginRows, ReconcileCounts, ReconcileScope, Result, ShopOrder,
    Store,
};

/// One webhook delivery, as the shop sent it.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// The idempotency key (`X-Shoplazza-Deduplication-ID`).
    pub delivery_id: String,
    /// `orders/paid`, `products/update`, …
    pub topic: String,
    /// `X-Shoplazza-Shop-Domain`.
    pub shop_domain: Option<String>,
    /// The order it is about, when it is about one.
    pub order_id: Option<String>,
    /// The order's financial status in this delivery.
    pub financial_status: Option<String>,
    /// The order's `updated_at` in this delivery (Unix s).
    pub order_updated_at: Option<i64>,
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// This delivery id was already processed: nothing changed.
    Duplicate,
    /// An older state of an order than one already applied: recorded, not applied.
    Stale,
    /// A topic manirec does not use: recorded and counted.
    Recorded,
    /// An order of a customer erased on request: recorded (its id only), not
    /// applied, so the customer does not come back.
    Forgotten,
    /// The order was mirrored (and its interactions reconciled when it is paid).
    Applied {
        /// Whether the order row was new.
        new_order: bool,
        /// Whether the order row changed.
        changed_order: bool,
        /// What happened to its interactions.
        interactions: ReconcileCounts,
    },
    /// A product (`products/*`) was mirrored into the catalogue, or removed from it.
    Product {
        /// Whether the product row was new.
        new_product: bool,
        /// Whether the product row changed.
        changed_product: bool,
        /// Whether the delivery removed it (`products/delete`: kept, marked deleted,
        /// so it is never shown again and its history stays).
        removed: bool,
    },
}

/// What a `products/*` delivery does to the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductChange {
    /// Create or update a design, with its category when the shop named a new one.
    Upsert {
        /// The design.
        product: Box<EndProduct>,
        /// Its category, when the delivery named one by `product_type` that the
        /// shop's categories did not have yet.
        category: Option<Category>,
    },
    /// `products/delete`: never shown again.
    Delete {
        /// The product id.
        id: String,
    },
}

impl Store {
    /// Records a delivery and applies it: `order` is mirrored (source as given in the
    /// order), and `rows`, when given, become the order's interactions. Everything in
    /// one transaction; a delivery id seen before changes nothing. `owners` are
    /// the ids the order belongs to besides its customer id (its email's
    /// training id): an order of a customer erased on request is not applied.
    pub fn apply_delivery(
        &mut self,
        delivery: &WebhookDelivery,
        order: Option<&ShopOrder>,
        rows: Option<&OriginRows>,
        owners: &[&str],
    ) -> Result<DeliveryOutcome> {
        let tx = self.conn.transaction()?;
        if !record_delivery(&tx, delivery)? {
            return Ok(DeliveryOutcome::Duplicate);
        }
        let Some(order) = order else {
            tx.commit()?;
            return Ok(DeliveryOutcome::Recorded);
        };
        let mut people = owners.to_vec();
        people.extend(order.customer_id.as_deref());
        if !crate::retention::forgotten_among(&tx, &people)?.is_empty() {
            set_outcome(&tx, &delivery.delivery_id, "forgotten")?;
            tx.commit()?;
            return Ok(DeliveryOutcome::Forgotten);
        }
        if is_stale(&tx, &order.order_id, delivery.order_updated_at)? {
            set_outcome(&tx, &delivery.delivery_id, "stale")?;
            tx.commit()?;
            return Ok(DeliveryOutcome::Stale);
        }
        let upserted = upsert_order_in(&tx, order)?;
        let interactions = match rows {
            Some(rows) => reconcile_in(&tx, std::slice::from_ref(rows), ReconcileScope::All)?,
            None => ReconcileCounts::default(),
        };
        set_outcome(&tx, &delivery.delivery_id, "applied")?;
        tx.commit()?;
        Ok(DeliveryOutcome::Applied {
            new_order: upserted == Upserted::Inserted,
            changed_order: upserted == Upserted::Updated,
            interactions,
        })
    }

    /// Records a `products/*` delivery and applies it to the catalogue, in one
    /// transaction: the design (and a category it names for the first time)
    /// upserted, or a deleted one marked `"status": "deleted"` in its
    /// attributes (so it is hidden everywhere). The delivery's `order_id` is
    /// `product:<id>` and its `order_updated_at` the product's `updated_at`, so an
    /// older state than one already applied is recorded as stale, as for orders.
    pub fn apply_product_delivery(
        &mut self,
        delivery: &WebhookDelivery,
        change: &ProductChange,
    ) -> Result<DeliveryOutcome> {
        let tx = self.conn.transaction()?;
        if !record_delivery(&tx, delivery)? {
            return Ok(DeliveryOutcome::Duplicate);
        }
        if let Some(key) = &delivery.order_id {
            if is_stale(&tx, key, delivery.order_updated_at)? {
                set_outcome(&tx, &delivery.delivery_id, "stale")?;
                tx.commit()?;
                return Ok(DeliveryOutcome::Stale);
            }
        }
        let outcome = match change {
            ProductChange::Upsert { product, category } => {
                if let Some(c) = category {
                    upsert_row(&tx, c)?;
                }
                let upserted = upsert_row(&tx, product.as_ref())?;
                DeliveryOutcome::Product {
                    new_product: upserted == Upserted::Inserted,
                    changed_product: upserted == Upserted::Updated,
                    removed: false,
                }
            }
            ProductChange::Delete { id } => {
                // The shop's own columns are kept; `status` says deleted.
                let stored = tx.query_opt(
                    "SELECT attributes FROM shop_end_products WHERE id = ?1",
                    params![id],
                    |r| r.get::<Option<String>>(0),
                )?;
                let marked = stored.is_some();
                let mut attributes = stored
                    .flatten()
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({}));
                attributes["status"] = "deleted".into();
                tx.execute(
                    "INSERT INTO shop_end_products (id, attributes, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE
                        SET attributes = excluded.attributes, updated_at = excluded.updated_at",
                    params![id, attributes.to_string(), now_ms()],
                )?;
                let marked = usize::from(marked);
                DeliveryOutcome::Product {
                    new_product: marked == 0,
                    changed_product: marked > 0,
                    removed: true,
                }
            }
        };
        set_outcome(&tx, &delivery.delivery_id, "applied")?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Delivery counts by `(topic, outcome)`.
    pub fn delivery_counts(&self) -> Result<Vec<(String, String, i64)>> {
        self.conn.query_map(
            "SELECT topic, outcome, COUNT(*) FROM webhook_deliveries GROUP BY 1, 2 ORDER BY 1, 2",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The financial status of an order in the mirror.
    pub fn order_status(&self, order_id: &str) -> Result<Option<String>> {
        self.conn.query_opt(
            "SELECT financial_status FROM shop_orders WHERE order_id = ?1",
            params![order_id],
            |r| r.get(0),
        )
    }
}

/// Records a delivery as `recorded`; `false` when its id was seen before (a
/// redelivery, which then changes nothing).
fn record_delivery(tx: &Conn, delivery: &WebhookDelivery) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO webhook_deliveries (delivery_id, topic, shop_domain, order_id,
            financial_status, order_updated_at, outcome, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'recorded', ?7)
         ON CONFLICT (delivery_id) DO NOTHING",
        params![
            delivery.delivery_id,
            delivery.topic,
            delivery.shop_domain,
            delivery.order_id,
            delivery.financial_status,
            delivery.order_updated_at,
            now_ms()
        ],
    )?;
    Ok(inserted > 0)
}

/// Whether a state of `key` (an order, or `product:<id>`) updated at `at` is
/// older than one already applied: Shoplazza does not deliver in order.
fn is_stale(tx: &Conn, key: &str, at: Option<i64>) -> Result<bool> {
    let Some(at) = at else {
        return Ok(false);
    };
    let newest: Option<i64> = tx
        .query_opt(
            "SELECT MAX(order_updated_at) FROM webhook_deliveries
             WHERE order_id = ?1 AND outcome = 'applied'",
            params![key],
            |r| r.get(0),
        )?
        .flatten();
    Ok(newest.is_some_and(|newest| at < newest))
}

fn set_outcome(tx: &Conn, delivery_id: &str, outcome: &str) -> Result<()> {
    tx.execute(
        "UPDATE webhook_deliveries SET outcome = ?2 WHERE delivery_id = ?1",
        params![delivery_id, outcome],
    )?;
    Ok(())
}
