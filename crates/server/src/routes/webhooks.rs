//! `POST /webhooks/shoplazza`: verify the signature over the raw bytes, then
//! parse, then apply in one transaction. 200 on accept or redelivery, 401 on a
//! bad or missing signature, 400 on an unparseable payload, 413 when too large,
//! 503 while no secret is configured (Shoplazza retries, so nothing is lost).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use manirec_pipeline::webhook::Delivery;
use manirec_store::DeliveryOutcome;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Checks `X-Shoplazza-Hmac-Sha256`: base64 of HMAC-SHA256(secret, raw body),
/// compared in constant time.
fn verify(secret: &str, body: &[u8], signature: Option<&str>) -> Result<(), ApiError> {
    let signature = signature.ok_or_else(|| {
        ApiError::unauthorized("missing_signature", "X-Shoplazza-Hmac-Sha256 is missing")
    })?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| ApiError::unauthorized("bad_signature", "the signature is not base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| {
        ApiError::unauthorized("bad_signature", "the signature does not match the body")
    })
}

pub async fn post_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let topic = header(&headers, "x-shoplazza-topic")
        .unwrap_or("unknown")
        .to_owned();
    let result = handle(&state, &headers, &topic, body).await;
    let outcome = match &result {
        Ok(o) => outcome_name(o),
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => "unauthorized",
        Err(e) if e.status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        Err(e) if e.status == axum::http::StatusCode::BAD_REQUEST => "invalid",
        Err(_) => "error",
    };
    state.metrics().webhook(&topic, outcome);
    let outcome = result?;
    tracing::info!(%topic, outcome = outcome_name(&outcome), "webhook");
    Ok(Json(
        json!({"status": outcome_name(&outcome), "detail": outcome}),
    ))
}

fn outcome_name(o: &DeliveryOutcome) -> &'static str {
    match o {
        DeliveryOutcome::Duplicate => "duplicate",
        DeliveryOutcome::Stale => "stale",
        DeliveryOutcome::Recorded => "recorded",
        DeliveryOutcome::Forgotten => "forgotten",
        DeliveryOutcome::Applied { .. } | DeliveryOutcome::Product { .. } => "applied",
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    topic: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<DeliveryOutcome, ApiError> {
    let secret = state.config().shoplazza_secret.clone().ok_or_else(|| {
        ApiError::unavailable("webhooks are refused until MANIREC_SHOPLAZZA_SECRET is set")
    })?;
    let body = body?;
    verify(&secret, &body, header(headers, "x-shoplazza-hmac-sha256"))?;
    if topic == "unknown" {
        return Err(ApiError::bad_request(
            "missing_topic",
            "X-Shoplazza-Topic is missing",
        ));
    }
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the payload is not JSON: {e}"))
    })?;
    // Without a deduplication id, the same bytes under the same topic are the same delivery.
    let delivery_id = header(headers, "x-shoplazza-deduplication-id")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut h = Sha256::new();
            h.update(topic.as_bytes());
            h.update([0]);
            h.update(&body);
            format!("sha256:{}", hex::encode(h.finalize()))
        });
    let shop_domain = header(headers, "x-shoplazza-shop-domain").map(str::to_owned);
    let delivery = Delivery {
        delivery_id,
        topic: topic.to_owned(),
        shop_domain,
        payload,
        source: "webhook",
    };
    state
        .db()
        .apply_delivery(
            state.config().jobs.user_key.clone(),
            state.config().jobs.simulation_seed,
            delivery,
        )
        .await
        .map_err(|e| match e {
            // A delivery that failed to apply is ours (500: Shoplazza retries),
            // never the sender's.
            manirec_jobs::Error::Pipeline(e) => ApiError::internal(e),
            e => e.into(),
        })?
        .map_err(|r| {
            let mut message = r.reason;
            if let Some(d) = r.detail {
                message = format!("{message}: {d}");
            }
            ApiError::bad_request("invalid_order", message)
        })
}
