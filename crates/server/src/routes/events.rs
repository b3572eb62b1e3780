//! `POST /v1/events`: storefront batches. Each member is judged on its own; the
//! valid ones are stored (durably) before the answer, the invalid ones come back
//! with their index and what is wrong.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use manirec_store::BehaviorEvent;
use serde::Serialize;
use serde_json::Value;

use crate::{ApiError, AppState};

/// Longest id accepted (event, product, user, session, device, request).
const MAX_ID: usize = 256;
/// Event times accepted: from 2000-01-01 to a week ahead of the server's clock.
const EARLIEST_MS: i64 = 946_684_800_000;
const FUTURE_SLACK_MS: i64 = 7 * 86_400_000;
/// Largest `properties` object accepted, bytes of JSON: enough for a page's
/// context, too little to fill the disk through one event.
pub(crate) const MAX_PROPERTIES: usize = 4096;

#[derive(Serialize)]
pub struct Answer {
    accepted: u64,
    duplicates: u64,
    /// Events whose user_id was dropped for want of a valid user token.
    #[serde(skip_serializing_if = "is_zero")]
    unsigned_user_ids: u64,
    rejected: Vec<Rejected>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Rejected {
    index: usize,
    error: String,
}

pub async fn post_events(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Answer>, ApiError> {
    let body = body?;
    // sendBeacon posts text/plain to avoid a CORS preflight: the body is JSON whatever the type says.
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    let members = match parsed {
        Value::Array(members) => members,
        Value::Object(mut o) => match o.remove("events") {
            Some(Value::Array(members)) => members,
            _ => return Err(expected_array()),
        },
        _ => return Err(expected_array()),
    };
    let max = state.config().max_batch_events;
    if members.len() > max {
        return Err(ApiError::too_large(format!(
            "{} events in one batch; send at most {max}",
            members.len()
        )));
    }
    let now = manirec_store::now_ms();
    let key = &state.config().jobs.user_key;
    let mut valid = Vec::with_capacity(members.len());
    let mut rejected = Vec::new();
    let mut unsigned = 0u64;
    for (index, member) in members.iter().enumerate() {
        match validate(member, now) {
            Ok(mut event) => {
                // A user_id is the shopper's only with their token: without
                // it the event stays anonymous (an `identify` links nothing),
                // and one with nothing else to stand on is refused.
                if let Some(user) = event.user_id.as_deref() {
                    let token = member.get("user_token").and_then(Value::as_str);
                    if state.shopper(user, token, &headers).is_err() {
                        event.user_id = None;
                        unsigned += 1;
                        if event.session_id.is_none() && event.device_id.is_none() {
                            rejected.push(Rejected {
                                index,
                                error: "user_id needs a valid user_token".into(),
                            });
                            continue;
                        }
                    }
                }
                // Emails never reach the store: the same keyed hash as training.
                event.user_id = event.user_id.map(|u| key.user_id(&u));
                valid.push(event);
            }
            Err(error) => rejected.push(Rejected { index, error }),
        }
    }
    let (accepted, duplicates) = if valid.is_empty() {
        (0, 0)
    } else {
        state.db().insert_events(valid).await?
    };
    state
        .metrics()
        .events(accepted, duplicates, rejected.len() as u64);
    if !rejected.is_empty() {
        // The daily report's "refused" count.
        let n = rejected.len() as u64;
        if let Err(e) = state.db().call(move |s| s.add_rejected_events(n)).await? {
            tracing::warn!(error = %e, "could not count refused events");
        }
    }
    Ok(Json(Answer {
        accepted,
        duplicates,
        unsigned_user_ids: unsigned,
        rejected,
    }))
}

fn expected_array() -> ApiError {
    ApiError::bad_request(
        "invalid_batch",
        "expected a JSON array of events (or {\"events\": [...]})",
    )
}

fn id(v: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("{name} must be a string")),
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_ID {
        return Err(format!("{name} is longer than {MAX_ID} characters"));
    }
    Ok(Some(text))
}

fn validate(member: &Value, now_ms: i64) -> Result<BehaviorEvent, String> {
    let Value::Object(o) = member else {
        return Err("an event must be a JSON object".into());
    };
    let event_id = id(o.get("event_id"), "event_id")?.ok_or("event_id is required")?;
    let event_type = id(o.get("event_type"), "event_type")?.ok_or("event_type is required")?;
    let product_id = id(o.get("product_id"), "product_id")?.ok_or("product_id is required")?;
    let user_id = id(o.get("user_id"), "user_id")?;
    let session_id = id(o.get("session_id"), "session_id")?;
    let device_id = id(o.get("device_id"), "device_id")?;
    if user_id.is_none() && session_id.is_none() && device_id.is_none() {
        return Err("one of user_id, session_id, device_id is required".into());
    }
    let timestamp_ms = match o.get("timestamp") {
        Some(Value::Number(n)) => n.as_f64().map(|f| f as i64),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
    .ok_or("timestamp must be Unix milliseconds or an RFC 3339 string")?;
    if !(EARLIEST_MS..=now_ms + FUTURE_SLACK_MS).contains(&timestamp_ms) {
        return Err("timestamp is out of range (before 2000 or more than a week ahead; milliseconds expected)".into());
    }
    let request_id = id(o.get("request_id"), "request_id")?;
    if request_id.is_none() && matches!(event_type.as_str(), "rec_impression" | "rec_click") {
        return Err(format!(
            "{event_type} needs the request_id of the recommendation shown"
        ));
    }
    let properties = match o.get("properties") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => {
            let text = p.to_string();
            if text.len() > MAX_PROPERTIES {
                return Err(format!(
                    "properties is {} bytes of JSON; at most {MAX_PROPERTIES} are kept",
                    text.len()
                ));
            }
            Some(text)
        }
        Some(_) => return Err("properties must be a JSON object".into()),
    };
    Ok(BehaviorEvent {
        event_id,
        event_type,
        product_id,
        user_id,
        session_id,
        device_id,
        timestamp_ms,
        request_id,
        properties,
    })
}

/// Whatever a storefront posts, `validate` answers an event or a reason, never
/// a panic, and an event it accepts keeps the contract's limits. CI runs
/// proptest's default number of cases; `scripts/fuzz` a million.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "event_id",
        "event_type",
        "product_id",
        "user_id",
        "session_id",
        "device_id",
        "timestamp",
        "request_id",
        "properties",
        "user_token",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (946_684_800_000i64..1_900_000_000_000).prop_map(Value::from),
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-][01][0-9]:00)"
                .prop_map(Value::from),
            prop::sample::select(&["product_view", "rec_click", "rec_impression", "purchase"][..])
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "[a-z0-9-]{0,200}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn event() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => "[a-z_]{0,8}"],
            value(),
            0..10,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn an_event_is_validated_or_refused_never_a_panic(
            member in prop_oneof![4 => event(), 1 => value()],
        ) {
            let now = 1_800_000_000_000;
            if let Ok(e) = validate(&member, now) {
                for id in [&e.event_id, &e.event_type, &e.product_id] {
                    prop_assert!(!id.is_empty() && id.chars().count() <= MAX_ID);
                }
                prop_assert!(e.user_id.is_some() || e.session_id.is_some() || e.device_id.is_some());
                prop_assert!((EARLIEST_MS..=now + FUTURE_SLACK_MS).contains(&e.timestamp_ms));
                prop_assert!(e.properties.as_ref().is_none_or(|p| p.len() <= MAX_PROPERTIES));
                if matches!(e.event_type.as_str(), "rec_impression" | "rec_click") {
                    prop_assert!(e.request_id.is_some());
                }
            }
        }
    }
}
