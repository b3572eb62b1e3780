//! `GET /v1/recommendations`, `GET /v1/items/{id}/similar`, `GET /v1/popular`:
//! answers from the serving snapshot (active model, experiment arms, catalogue
//! rules), each with a `request_id` that impressions and clicks carry back, and
//! each logged for attribution.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use manirec_models::Scored;
use manirec_pipeline::experiments::Variant;
use manirec_pipeline::serving::{self, past, training_user, Ask, LiveModel, Past};
use manirec_store::RecommendationLog;
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
}

#[derive(Serialize)]
pub struct Recommendations {
    request_id: String,
    model_version: String,
    variant: &'static str,
    items: Vec<Scored>,
}

#[derive(Serialize)]
pub struct Items {
    request_id: String,
    model_version: String,
    items: Vec<Scored>,
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
) -> Result<Json<Recommendations>, ApiError> {
    let k = k(p.k)?;
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
    let (user, known, chosen) = state
        .db()
        .read(move |store| -> manirec_pipeline::Result<_> {
            let user = training_user(store, &key, user_id.as_deref(), session_id.as_deref())?;
            let chosen = snapshot.choose(user.as_deref());
            let known = match (&user, &chosen) {
                (Some(u), Some((live, _, _))) => {
                    past(store, u, &weights, live.model.needs_history(Some(u)))?
                }
                _ => Past::default(),
            };
            Ok((user, known, chosen))
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
    let request_id = log(
        &state,
        "recommendations",
        user,
        &live,
        experiment_id,
        variant,
        &items,
    );
    Ok(Json(Recommendations {
        request_id,
        model_version: live.version.clone(),
        variant: variant.as_str(),
        items,
    }))
}

#[derive(Deserialize)]
pub struct ListParams {
    k: Option<usize>,
    category: Option<String>,
}

pub async fn similar(
    State(state): State<AppState>,
    Path(item): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Items>, ApiError> {
    let k = k(p.k)?;
    list(&state, "similar", |live, serving| {
        serving::similar(live, &item, k, &serving.rules, &serving.catalogue)
    })
}

pub async fn popular(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Items>, ApiError> {
    let category = category(&state.serving(), p.category.as_deref())?;
    let k = k(p.k)?;
    list(&state, "popular", |live, serving| {
        serving::popular(
            live,
            k,
            category.as_deref(),
            &serving.rules,
            &serving.catalogue,
        )
    })
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
fn list(
    state: &AppState,
    endpoint: &'static str,
    answer: impl FnOnce(&LiveModel, &crate::Serving) -> Vec<Scored>,
) -> Result<Json<Items>, ApiError> {
    let serving = state.serving();
    let live = serving.active.clone().ok_or_else(no_model)?;
    let items = answer(&live, &serving);
    let request_id = log(state, endpoint, None, &live, None, Variant::Control, &items);
    Ok(Json(Items {
        request_id,
        model_version: live.version.clone(),
        items,
    }))
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
