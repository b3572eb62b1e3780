//! One Shoplazza delivery (a signed webhook, or an order the reconciliation poll
//! fetched) applied to the store: the order mirrored, a paid order's rows
//! reconciled (purchase 5.0; simulated view 3.0, 5–60 minutes earlier,
//! `source = 'webhook'`), the delivery recorded, all in one transaction. A
//! redelivery, or the same order under another topic, changes nothing; a stale
//! delivery (older `updated_at` than one applied) is recorded and ignored.
//! Signature checks belong to the HTTP edge, before this is called.
//!
//! A `products/create|update|delete` delivery updates the catalogue the same
//! way: the design mirrored (or marked deleted) and the delivery recorded in
//! one transaction. Serving's catalogue is rebuilt from the mirror every 30 s,
//! so a new design is recommendable within a minute, without a retrain.

use manirec_store::{DeliveryOutcome, ProductChange, Source, Store, WebhookDelivery};
use serde_json::Value;

use crate::identity::UserKey;
use crate::orders::{is_paid, order_rows, Catalog, Simulation};
use crate::report::Rejection;
use crate::shoplazza::{category_for_type, parse_order, parse_product};

/// A delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Idempotency key.
    pub delivery_id: String,
    /// Topic (`orders/paid`, …).
    pub topic: String,
    /// The shop's domain, when given.
    pub shop_domain: Option<String>,
    /// The parsed JSON body.
    pub payload: Value,
    /// `webhook` or `poll`.
    pub source: &'static str,
}

/// Whether a topic carries an order.
pub fn is_order_topic(topic: &str) -> bool {
    topic.starts_with("orders/")
}

/// Whether a topic carries a product (`products/create|update|delete`).
pub fn is_product_topic(topic: &str) -> bool {
    matches!(
        topic,
        "products/create" | "products/update" | "products/delete"
    )
}

fn apply_product(
    store: &mut Store,
    mut record: WebhookDelivery,
    delivery: &Delivery,
) -> crate::Result<Result<DeliveryOutcome, Rejection>> {
    let change = if delivery.topic == "products/delete" {
        let p = match delivery.payload.get("product") {
            Some(inner) if inner.is_object() => inner,
            _ => &delivery.payload,
        };
        let Some(id) = p.get("id").and_then(crate::import::shop::json_text) else {
            return Ok(Err("the deleted product has no id".into()));
        };
        record.order_id = Some(format!("product:{id}"));
        ProductChange::Delete { id }
    } else {
        let parsed = match parse_product(&delivery.payload) {
            Ok(p) => p,
            Err(r) => return Ok(Err(r)),
        };
        let mut product = parsed.product;
        let mut category = None;
        if product.category_id.is_none() {
            if let Some(t) = parsed.product_type.as_deref() {
                let (id, new) = category_for_type(&store.categories()?, t);
                product.category_id = Some(id);
                category = new;
            }
        }
        record.order_id = Some(format!("product:{}", product.id));
        record.order_updated_at = parsed.updated_at;
        ProductChange::Upsert {
            product: Box::new(product),
            category,
        }
    };
    Ok(Ok(store.apply_product_delivery(&record, &change)?))
}

/// Applies a delivery. A payload of an order topic that is not an order is a
/// [`Rejection`] (nothing is recorded, so a corrected redelivery still applies).
pub fn apply(
    store: &mut Store,
    key: &UserKey,
    seed: u64,
    delivery: &Delivery,
) -> crate::Result<Result<DeliveryOutcome, Rejection>> {
    let mut record = WebhookDelivery {
        delivery_id: delivery.delivery_id.clone(),
        topic: delivery.topic.clone(),
        shop_domain: delivery.shop_domain.clone(),
        order_id: None,
        financial_status: None,
        order_updated_at: None,
    };
    if is_product_topic(&delivery.topic) {
        return apply_product(store, record, delivery);
    }
    if !is_order_topic(&delivery.topic) {
        return Ok(Ok(store.apply_delivery(&record, None, None, &[])?));
    }
    let parsed = match parse_order(&delivery.payload, &delivery.topic, delivery.source) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    let mut order = parsed.order;
    if delivery.topic == "orders/cancelled" && !order.financial_status.contains("refund") {
        order.financial_status = "cancelled".into();
    }
    record.order_id = Some(order.order_id.clone());
    record.financial_status = Some(order.financial_status.clone());
    record.order_updated_at = parsed.updated_at;
    // Who the order belongs to: an erased customer's order is not applied.
    let owner = order.email.as_deref().map(|e| key.user_id_for_email(e));
    let rows = match (&order.email, is_paid(&order.financial_status)) {
        (Some(email), true) => {
            let simulation = Simulation {
                seed,
                view_before: 300..=3600,
                similar_views: false,
            };
            let (rows, _) = order_rows(
                &order,
                &key.user_id_for_email(email),
                parsed.purchased_at,
                Source::Webhook,
                Some(&simulation),
                &Catalog::default(),
            );
            Some(rows)
        }
        _ => None,
    };
    Ok(Ok(store.apply_delivery(
        &record,
        Some(&order),
        rows.as_ref(),
        &owner.as_deref().into_iter().collect::<Vec<_>>(),
    )?))
}
