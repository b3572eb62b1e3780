//! One Shoplazza delivery (a signed webhook, or an order the reconciliation poll
//! fetched) applied to the store: the order mirrored, a paid order's rows
//! reconciled (purchase 5.0; simulated view 3.0, 5–60 minutes earlier,
//! `source = 'webhook'`), the delivery recorded, all in one transaction. A
//! redelivery, or the same order under another topic, changes nothing; a stale
//! delivery (older `updated_at` than one applied) is recorded and ignored.
//! Signature checks belong to the HTTP edge, before this is called.

use manirec_store::{DeliveryOutcome, Source, Store, WebhookDelivery};
use serde_json::Value;

use crate::identity::UserKey;
use crate::orders::{is_paid, order_rows, Catalog, Simulation};
use crate::report::Rejection;
use crate::shoplazza::parse_order;

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
    if !is_order_topic(&delivery.topic) {
        return Ok(Ok(store.apply_delivery(&record, None, None)?));
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
    )?))
}
