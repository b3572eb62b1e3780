//! `GET /v1/recommendations`, `GET /v1/items/{id}/similar`, `GET /v1/popular`:
//! answers from the active model, swapped without a restart.

use axum::extract::{Path, Query, State};
use axum::Json;
use manirec_models::Scored;
use manirec_pipeline::serving::{past, recommend, training_user, Past};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

const MAX_K: usize = 100;

#[derive(Deserialize)]
pub struct RecommendParams {
    user_id: Option<String>,
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
    model_version: String,
    items: Vec<Scored>,
}

fn k(k: Option<usize>) -> usize {
    k.unwrap_or(10).clamp(1, MAX_K)
}

fn live(
    state: &AppState,
) -> Result<std::sync::Arc<manirec_pipeline::serving::LiveModel>, ApiError> {
    state.live_model().ok_or_else(|| {
        ApiError::unavailable(
            "no active model yet: train one (manirec train) and promote it (manirec models promote V)",
        )
    })
}

pub async fn recommendations(
    State(state): State<AppState>,
    Query(p): Query<RecommendParams>,
) -> Result<Json<Recommendations>, ApiError> {
    let live = live(&state)?;
    let key = state.config().user_key.clone();
    let (user_id, session_id) = (p.user_id.clone(), p.session_id.clone());
    let (user, past) = state
        .db()
        .call(move |store| -> manirec_pipeline::Result<_> {
            let user = training_user(store, &key, user_id.as_deref(), session_id.as_deref())?;
            let known = match &user {
                Some(u) => past(store, u)?,
                None => Past {
                    history: Vec::new(),
                    bought: Vec::new(),
                },
            };
            Ok((user, known))
        })
        .await?
        .map_err(ApiError::internal)?;
    let exclude: Vec<String> = p
        .exclude
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let items = recommend(
        &live,
        user.as_deref(),
        &past,
        k(p.k),
        p.category.as_deref(),
        &exclude,
    );
    Ok(Json(Recommendations {
        request_id: request_id(),
        model_version: live.version.clone(),
        variant: "control",
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
    let live = live(&state)?;
    Ok(Json(Items {
        model_version: live.version.clone(),
        items: live.model.similar(&item, k(p.k)),
    }))
}

pub async fn popular(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Items>, ApiError> {
    let live = live(&state)?;
    Ok(Json(Items {
        model_version: live.version.clone(),
        items: live.model.most_popular(k(p.k), p.category.as_deref()),
    }))
}

/// A random 128-bit id: impressions and clicks come back carrying it.
fn request_id() -> String {
    format!("r-{:032x}", rand::random::<u128>())
}
