//! The reconciliation poll Shoplazza recommends as a backstop for missed
//! webhooks: `GET /openapi/2022-01/orders?updated_at_min=…&limit=250&page=N`
//! with the shop's access token. Every order goes through the same path as a
//! webhook (delivery id `poll:<order>:<updated_at>`), so what a webhook already
//! brought changes nothing. The `updated_at` watermark is kept in the store and
//! re-read with an overlap: repeats cost nothing, gaps would lose orders.

use std::time::Duration;

use manirec_pipeline::identity::UserKey;
use manirec_pipeline::webhook::Delivery;
use manirec_store::DeliveryOutcome;
use serde::Serialize;
use serde_json::Value;

use crate::{Db, Error, Result};

/// Orders per page (Shoplazza's maximum).
const PAGE_SIZE: usize = 250;
/// Pages per run, a guard against a misbehaving API.
const MAX_PAGES: u32 = 1000;
/// Re-read this much before the watermark.
const OVERLAP_SECS: i64 = 600;
const WATERMARK: &str = "poll.updated_at_min";

/// Where the shop's API is.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// `https://<shop>.myshoplaza.com` (or a local server in tests).
    pub base_url: String,
    /// The shop's access token.
    pub access_token: String,
    /// How often `serve` polls.
    pub interval: Duration,
}

/// What a poll run did.
#[derive(Debug, Default, Serialize)]
pub struct PollSummary {
    /// Pages fetched.
    pub pages: u32,
    /// Orders seen.
    pub orders: u64,
    /// Orders applied (new or changed state).
    pub applied: u64,
    /// Orders already known in this state.
    pub unchanged: u64,
    /// Orders that could not be read.
    pub rejected: u64,
    /// The new watermark (Unix s).
    pub updated_at_min: Option<i64>,
}

/// Fetches every order updated since the watermark and applies it.
pub async fn poll_orders(
    db: &Db,
    config: &PollConfig,
    key: &UserKey,
    seed: u64,
) -> Result<PollSummary> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Http(e.to_string()))?;
    let since: Option<i64> = db
        .call(|s| s.state_get(WATERMARK))
        .await??
        .and_then(|v| v.parse().ok());
    let mut summary = PollSummary {
        updated_at_min: since,
        ..Default::default()
    };
    let mut newest = since;
    for page in 1..=MAX_PAGES {
        let mut request = client
            .get(format!(
                "{}/openapi/2022-01/orders",
                config.base_url.trim_end_matches('/')
            ))
            .header("Access-Token", &config.access_token)
            .query(&[("limit", PAGE_SIZE.to_string()), ("page", page.to_string())]);
        if let Some(since) = since {
            let from =
                chrono::DateTime::from_timestamp(since - OVERLAP_SECS, 0).unwrap_or_default();
            request = request.query(&[("updated_at_min", from.to_rfc3339())]);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::OrdersApi(format!("the orders API is unreachable: {e}")))?;
        if !response.status().is_success() {
            return Err(Error::OrdersApi(format!(
                "the orders API answered {} on page {page}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| Error::OrdersApi(format!("the orders API sent no JSON: {e}")))?;
        let orders = match body
            .get("orders")
            .or_else(|| body.get("data").and_then(|d| d.get("orders")))
        {
            Some(Value::Array(orders)) => orders.clone(),
            _ => Vec::new(),
        };
        summary.pages = page;
        let count = orders.len();
        for order in orders {
            summary.orders += 1;
            let updated = order
                .get("updated_at")
                .and_then(Value::as_str)
                .and_then(manirec_pipeline::time::parse_timestamp);
            newest = newest.max(updated);
            let id = order.get("id").map(|v| v.to_string()).unwrap_or_default();
            let delivery_id = format!("poll:{}:{}", id.trim_matches('"'), updated.unwrap_or(0));
            let outcome = db
                .apply_delivery(
                    key.clone(),
                    seed,
                    Delivery {
                        delivery_id,
                        topic: "orders/poll".into(),
                        shop_domain: None,
                        payload: order,
                        source: "poll",
                    },
                )
                .await?;
            match outcome {
                Ok(DeliveryOutcome::Applied { .. } | DeliveryOutcome::Product { .. }) => {
                    summary.applied += 1
                }
                Ok(_) => summary.unchanged += 1,
                Err(r) => {
                    summary.rejected += 1;
                    tracing::warn!(reason = %r.reason, "polled order rejected");
                }
            }
        }
        if count < PAGE_SIZE {
            break;
        }
    }
    if let Some(newest) = newest.filter(|n| Some(*n) != since) {
        db.call(move |s| s.state_set(WATERMARK, &newest.to_string()))
            .await??;
    }
    summary.updated_at_min = newest;
    Ok(summary)
}
