//! The reconciliation poll Shoplazza recommends as a backstop for missed
//! webhooks: `GET /openapi/2022-01/orders?updated_at_min=…&limit=250&page=N`
//! with the shop's access token, then the same for `products`, so that a
//! design added while its webhook was lost still reaches the catalogue. Every
//! order or product goes through the same path as a webhook (delivery id
//! `poll:<id>:<updated_at>`, or `poll-product:…`), so what a webhook already
//! brought changes nothing. Each resource keeps its `updated_at` watermark in
//! the store, re-read with an overlap: repeats cost nothing, gaps would lose rows.

use std::time::Duration;

use manirec_pipeline::identity::UserKey;
use manirec_pipeline::webhook::Delivery;
use manirec_store::DeliveryOutcome;
use serde::Serialize;
use serde_json::Value;

use crate::{Db, Error, Result};

/// Rows per page (Shoplazza's maximum).
const PAGE_SIZE: usize = 250;
/// Pages per run, a guard against a misbehaving API.
const MAX_PAGES: u32 = 1000;
/// Re-read this much before the watermark.
const OVERLAP_SECS: i64 = 600;

/// One of the shop's resources the poll reads.
struct Resource {
    /// Its path under `/openapi/2022-01/`, and the key of its list in the answer.
    name: &'static str,
    /// The webhook topic its rows are applied as.
    topic: &'static str,
    /// Delivery ids: `<prefix>:<id>:<updated_at>`.
    prefix: &'static str,
    /// The state key of its watermark.
    watermark: &'static str,
}

const ORDERS: Resource = Resource {
    name: "orders",
    topic: "orders/poll",
    prefix: "poll",
    watermark: "poll.updated_at_min",
};

const PRODUCTS: Resource = Resource {
    name: "products",
    topic: "products/update",
    prefix: "poll-product",
    watermark: "poll.products.updated_at_min",
};

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

/// What a poll run did: orders (the fields kept from before products were
/// polled) and products.
#[derive(Debug, Default, Serialize)]
pub struct PollSummary {
    /// Pages of orders fetched.
    pub pages: u32,
    /// Orders seen.
    pub orders: u64,
    /// Orders applied (new or changed state).
    pub applied: u64,
    /// Orders already known in this state.
    pub unchanged: u64,
    /// Orders that could not be read.
    pub rejected: u64,
    /// The orders' new watermark (Unix s).
    pub updated_at_min: Option<i64>,
    /// The same counts for products.
    pub products: Polled,
}

/// What the poll did with one resource.
#[derive(Debug, Default, Serialize)]
pub struct Polled {
    /// Pages fetched.
    pub pages: u32,
    /// Rows seen.
    pub seen: u64,
    /// Rows applied (new or changed).
    pub applied: u64,
    /// Rows already known in this state.
    pub unchanged: u64,
    /// Rows that could not be read.
    pub rejected: u64,
    /// The new watermark (Unix s).
    pub updated_at_min: Option<i64>,
    /// Why this resource could not be polled (the products of a token
    /// without their scope), when the rest was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Polls orders, then products. The shop's refusal of products (a token
/// without that scope) is reported and does not fail the orders' poll.
pub async fn poll_shop(
    db: &Db,
    config: &PollConfig,
    key: &UserKey,
    seed: u64,
) -> Result<PollSummary> {
    let orders = poll(db, config, key, seed, &ORDERS).await?;
    let products = match poll(db, config, key, seed, &PRODUCTS).await {
        Ok(products) => products,
        Err(e @ (Error::ShopApi(_) | Error::Http(_))) => {
            tracing::warn!(error = %e, "the products poll failed; orders were polled");
            Polled {
                error: Some(e.to_string()),
                ..Polled::default()
            }
        }
        Err(e) => return Err(e),
    };
    Ok(PollSummary {
        pages: orders.pages,
        orders: orders.seen,
        applied: orders.applied,
        unchanged: orders.unchanged,
        rejected: orders.rejected,
        updated_at_min: orders.updated_at_min,
        products,
    })
}

/// Fetches every row of `resource` updated since its watermark and applies it.
async fn poll(
    db: &Db,
    config: &PollConfig,
    key: &UserKey,
    seed: u64,
    resource: &Resource,
) -> Result<Polled> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Http(e.to_string()))?;
    let watermark = resource.watermark;
    let since: Option<i64> = db
        .call(move |s| s.state_get(watermark))
        .await??
        .and_then(|v| v.parse().ok());
    let mut summary = Polled {
        updated_at_min: since,
        ..Default::default()
    };
    let mut newest = since;
    for page in 1..=MAX_PAGES {
        let mut request = client
            .get(format!(
                "{}/openapi/2022-01/{}",
                config.base_url.trim_end_matches('/'),
                resource.name
            ))
            .header("Access-Token", &config.access_token)
            .query(&[("limit", PAGE_SIZE.to_string()), ("page", page.to_string())]);
        if let Some(since) = since {
            let from =
                chrono::DateTime::from_timestamp(since - OVERLAP_SECS, 0).unwrap_or_default();
            request = request.query(&[("updated_at_min", from.to_rfc3339())]);
        }
        let response = request.send().await.map_err(|e| {
            Error::ShopApi(format!("the {} API is unreachable: {e}", resource.name))
        })?;
        if !response.status().is_success() {
            return Err(Error::ShopApi(format!(
                "the {} API answered {} on page {page}",
                resource.name,
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| Error::ShopApi(format!("the {} API sent no JSON: {e}", resource.name)))?;
        let rows = match body
            .get(resource.name)
            .or_else(|| body.get("data").and_then(|d| d.get(resource.name)))
        {
            Some(Value::Array(rows)) => rows.clone(),
            _ => Vec::new(),
        };
        summary.pages = page;
        let count = rows.len();
        for row in rows {
            summary.seen += 1;
            let updated = row
                .get("updated_at")
                .and_then(Value::as_str)
                .and_then(manirec_pipeline::time::parse_timestamp);
            newest = newest.max(updated);
            let id = row.get("id").map(|v| v.to_string()).unwrap_or_default();
            let delivery_id = format!(
                "{}:{}:{}",
                resource.prefix,
                id.trim_matches('"'),
                updated.unwrap_or(0)
            );
            let outcome = db
                .apply_delivery(
                    key.clone(),
                    seed,
                    Delivery {
                        delivery_id,
                        topic: resource.topic.into(),
                        shop_domain: None,
                        payload: row,
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
                    tracing::warn!(resource = resource.name, reason = %r.reason, "polled row rejected");
                }
            }
        }
        if count < PAGE_SIZE {
            break;
        }
    }
    if let Some(newest) = newest.filter(|n| Some(*n) != since) {
        db.call(move |s| s.state_set(watermark, &newest.to_string()))
            .await??;
    }
    summary.updated_at_min = newest;
    Ok(summary)
}
