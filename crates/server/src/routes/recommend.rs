//! `GET /v1/recommendations`, `GET /v1/items/{id}/similar`, `GET /v1/popular`:
//! answers from the serving snapshot (active model, experiment arms, catalogue
//! rules), each with a `request_id` that impressions and clicks carry back, and
//! each logged for attribution. With `details=1` each item also carries what a
//! storefront card shows (title, image, price, product page), read from the
//! shop mirror in one query per answer; without it the answer is unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use manirec_models::Scored;
use manirec_pipeline::experiments::Variant;
use manirec_pipeline::serving::{self, route, Ask, LiveModel, Routed};
use manirec_store::{ItemDetails, RecommendationLog};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

const MAX_K: usize = 100;

#[derive(Deserialize)]
pub struct RecommendParams {
    user_id: Option<String>,
    /// The shopper's signed token; required with `user_id`.
    user_token: Option<String>,
    session_id: Option<String>,
    k: Option<usize>,
    category: Option<String>,
    /// Comma-separated item ids to leave out.
    exclude: Option<String>,
    /// `1`/`true`: each item with its title, image, price and link.
    details: Option<String>,
}

#[derive(Serialize)]
pub struct Recommendations<I> {
    request_id: String,
    model_version: String,
    variant: &'static str,
    items: Vec<I>,
}

#[derive(Serialize)]
pub struct Items<I> {
    request_id: String,
    model_version: String,
    items: Vec<I>,
}

/// An item of a `details=1` answer: the scored item and what the mirror knows
/// of it; an unknown field is left out, not `null`.
#[derive(Serialize)]
pub struct Detailed {
    item_id: String,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// Whether `?details=` asks for details: `1`/`true` yes, absent/`0`/`false`
/// no, anything else a 400.
fn details(asked: Option<&str>) -> Result<bool, ApiError> {
    match asked {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_details",
            format!("details must be 0, 1, true or false; got {other:?}"),
        )),
    }
}

/// The items with their details, read in one query on a reader connection.
async fn with_details(state: &AppState, items: Vec<Scored>) -> Result<Vec<Detailed>, ApiError> {
    let ids: Vec<String> = items.iter().map(|s| s.item_id.clone()).collect();
    let mut known: HashMap<String, ItemDetails> = state
        .db()
        .read(move |store| store.item_details(&ids))
        .await?
        .map_err(ApiError::internal)?;
    let storefront = &state.config().storefront;
    Ok(items
        .into_iter()
        .map(|s| {
            let d = known.remove(&s.item_id).unwrap_or_default();
            Detailed {
                url: storefront.product_url(&s.item_id, d.handle.as_deref()),
                title: d.title,
                image: d.image,
                price: d.price,
                item_id: s.item_id,
                score: s.score,
            }
        })
        .collect())
}

/// How many items to answer: 10 unless asked; 1 to 100, anything else is a 400
/// (a silent clamp would hide a caller's bug).
fn k(k: Option<usize>) -> Result<usize, ApiError> {
    match k.unwrap_or(10) {
        k @ 1..=MAX_K => Ok(k),
        other => Err(ApiError::bad_request(
            "invalid_k",
            format!("k must be 1 to {MAX_K}; got {other}"),
        )),
    }
}

fn no_model() -> ApiError {
    ApiError::unavailable(
        "no active model yet: train one (manirec train) and promote it (manirec models promote V)",
    )
}

pub async fn recommendations(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(p): Query<RecommendParams>,
) -> Result<Response, ApiError> {
    let k = k(p.k)?;
    let details = details(p.details.as_deref())?;
    let serving = state.serving();
    if serving.active.is_none() && serving.experiment.is_none() {
        return Err(no_model());
    }
    if let Some(user) = p.user_id.as_deref().filter(|u| !u.trim().is_empty()) {
        state.shopper(user, p.user_token.as_deref(), &headers)?;
    }
    let category = category(&serving, p.category.as_deref())?;
    let key = state.config().jobs.user_key.clone();
    let weights = state.config().jobs.weights.clone();
    let (user_id, session_id) = (p.user_id.clone(), p.session_id.clone());
    let snapshot = serving.clone();
    // Reads run on the read-only connections, beside the writer.
    let Routed {
        user,
        past: known,
        chosen,
    } = state
        .db()
        .read(move |store| {
            route(
                store,
                &snapshot,
                &key,
                user_id.as_deref(),
                session_id.as_deref(),
                &weights,
            )
        })
        .await?
        .map_err(ApiError::internal)?;
    let (live, experiment_id, variant) = chosen.ok_or_else(no_model)?;
    let exclude: Vec<String> = p
        .exclude
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let items = serving::recommend(
        &live,
        &Ask {
            user: user.as_deref(),
            past: &known,
            k,
            category: category.as_deref(),
            exclude: &exclude,
        },
        &serving.rules,
        &serving.catalogue,
    );
    // Details are read before the answer is logged: a failed read logs nothing.
    let detailed = match details {
        true => Some(with_details(&state, items.clone()).await?),
        false => None,
    };
    let request_id = log(
        &state,
        "recommendations",
        user,
        &live,
        experiment_id,
        variant,
        &items,
    );
    let (model_version, variant) = (live.version.clone(), variant.as_str());
    Ok(match detailed {
        Some(items) => Json(Recommendations {
            request_id,
            model_version,
            variant,
            items,
        })
        .into_response(),
        None => Json(Recommendations {
            request_id,
            model_version,
            variant,
            items,
        })
        .into_response(),
    })
}

#[derive(Deserialize)]
pub struct ListParams {
    k: Option<usize>,
    category: Option<String>,
    /// `1`/`true`: each item with its title, image, price and link.
    details: Option<String>,
}

pub async fn similar(
    State(state): State<AppState>,
    Path(item): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    let k = k(p.k)?;
    let details = details(p.details.as_deref())?;
    list(&state, "similar", details, |live, serving| {
        serving::similar(live, &item, k, &serving.rules, &serving.catalogue)
    })
    .await
}

pub async fn popular(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    let category = category(&state.serving(), p.category.as_deref())?;
    let k = k(p.k)?;
    let details = details(p.details.as_deref())?;
    list(&state, "popular", details, |live, serving| {
        serving::popular(
            live,
            k,
            category.as_deref(),
            &serving.rules,
            &serving.catalogue,
        )
    })
    .await
}

/// The category id of `?category=`, given by id or by name (`Mugs`, `mugs`);
/// an unknown one is a 400 that lists the close matches.
fn category(serving: &crate::Serving, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    match asked.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => serving
            .catalogue
            .resolve_category(c)
            .map(Some)
            .map_err(|e| ApiError::bad_request("unknown_category", e.to_string())),
    }
}

/// A list answered by the active model, outside any experiment, and logged.
async fn list(
    state: &AppState,
    endpoint: &'static str,
    details: bool,
    answer: impl FnOnce(&LiveModel, &crate::Serving) -> Vec<Scored>,
) -> Result<Response, ApiError> {
    let serving = state.serving();
    let live = serving.active.clone().ok_or_else(no_model)?;
    let items = answer(&live, &serving);
    drop(serving);
    let detailed = match details {
        true => Some(with_details(state, items.clone()).await?),
        false => None,
    };
    let request_id = log(state, endpoint, None, &live, None, Variant::Control, &items);
    let model_version = live.version.clone();
    Ok(match detailed {
        Some(items) => Json(Items {
            request_id,
            model_version,
            items,
        })
        .into_response(),
        None => Json(Items {
            request_id,
            model_version,
            items,
        })
        .into_response(),
    })
}

/// Queues the answer for the log and returns its request id.
fn log(
    state: &AppState,
    endpoint: &'static str,
    user_id: Option<String>,
    live: &Arc<LiveModel>,
    experiment_id: Option<i64>,
    variant: Variant,
    items: &[Scored],
) -> String {
    let request_id = request_id();
    state.metrics().recommendation(endpoint, variant.as_str());
    state.log_recommendation(RecommendationLog {
        request_id: request_id.clone(),
        created_at: manirec_store::now_ms(),
        user_id,
        endpoint,
        model_version: Some(live.version.clone()),
        experiment_id,
        variant: variant.as_str(),
        items: items.iter().map(|s| s.item_id.clone()).collect(),
    });
    request_id
}

/// The answer's id: impressions and clicks come back carrying it. The time
/// (ms) first, then 80 random bits: ids grow with time, so the log's index takes
/// them at its end instead of at random pages (which cost the answers served
/// beside each batch a visible p99).
fn request_id() -> String {
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("r-{:012x}{:020x}", manirec_store::now_ms(), random)
}
