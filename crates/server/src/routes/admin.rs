//! `/admin/*`: the operator's API, behind `Authorization: Bearer
//! <MANIREC_ADMIN_TOKEN>` (off until the token is set). Everything the command
//! line does to a running shop: sync, extract, datasets, training, the weekly
//! loop, the registry, experiments, catalogue rules, reports and the jobs'
//! journal. Long work runs on its own connection (see `jobs`), so ingestion
//! and recommendations carry on meanwhile.

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use manirec_models::{ModelKind, ModelSpec};
use manirec_pipeline::dataset::{self, BuildOptions};
use manirec_pipeline::experiments;
use manirec_pipeline::extract::{extract, ExtractOptions};
use manirec_pipeline::training::{self, TrainRequest};
use manirec_pipeline::NoProgress;
use manirec_store::{Actor, Job, Outcome, RuleKind};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{views, ApiError, AppState};

type Answer = Result<Json<Value>, ApiError>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/overview", get(overview))
        .route("/admin/sync", post(sync))
        .route("/admin/extract", post(run_extract))
        .route("/admin/datasets", get(datasets).post(build_dataset))
        .route("/admin/train", post(train))
        .route("/admin/retrain", post(retrain))
        .route("/admin/models", get(models))
        .route("/admin/models/{version}/promote", post(promote))
        .route(
            "/admin/experiments",
            get(list_experiments).post(start_experiment),
        )
        .route("/admin/experiments/{id}", get(experiment_status))
        .route("/admin/experiments/{id}/stop", post(stop_experiment))
        .route("/admin/rules", get(rules))
        .route("/admin/rules/{item}", put(set_rule).delete(clear_rule))
        .route("/admin/reports/quality", get(last_report).post(run_report))
        .route("/admin/runs", get(runs))
}

/// Whether `headers` carry the admin bearer token (false while the admin API is off).
pub(crate) fn bearer_matches(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = state.config().admin_token.as_deref() else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Digests compared, so the time taken says nothing about the token.
    given.is_some_and(|g| Sha256::digest(g.trim()) == Sha256::digest(token))
}

/// Lets a request through only with the right bearer token.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let Some(token) = state.config().admin_token.as_deref() else {
        return ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "admin_off",
            message: "the admin API is off: set MANIREC_ADMIN_TOKEN and restart serve".into(),
        }
        .into_response();
    };
    let _ = token;
    if !bearer_matches(&state, request.headers()) {
        return ApiError::unauthorized(
            "unauthorized",
            "send Authorization: Bearer <MANIREC_ADMIN_TOKEN>",
        )
        .into_response();
    }
    next.run(request).await
}

fn to_json(v: impl serde::Serialize) -> Answer {
    serde_json::to_value(v)
        .map(Json)
        .map_err(ApiError::internal)
}

/// Runs a store call on the store's thread; pipeline errors keep their meaning.
/// Runs read-only `f` on a reader connection: the writer's thread, which
/// ingestion waits on, never waits for a report.
async fn on_read<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&manirec_store::Store) -> manirec_pipeline::Result<T> + Send + 'static,
) -> Answer {
    let v = state.db().read(f).await?.map_err(ApiError::from_pipeline)?;
    to_json(v)
}

async fn on_db<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut manirec_store::Store) -> manirec_pipeline::Result<T> + Send + 'static,
) -> Answer {
    let v = state.db().call(f).await?.map_err(ApiError::from_pipeline)?;
    to_json(v)
}

async fn overview(State(state): State<AppState>) -> Answer {
    let serving = state.serving();
    let active = serving.active.as_ref().map(|m| m.version.clone());
    let experiment = serving.experiment.as_ref().map(|e| e.experiment.id);
    let config = state.config().jobs.experiments.clone();
    let store_view = state
        .db()
        .read(move |s| -> manirec_pipeline::Result<Value> {
            let experiment = match experiment {
                Some(id) => Some(experiments::status(s, Some(id), &config)?),
                None => None,
            };
            Ok(json!({
                "counts": s.table_counts()?,
                "sync_lag": s.last_event_seq()? - s.sync_watermark()?,
                "models": training::list(s)?.models,
                "datasets": dataset::list(s)?.versions,
                "experiment": experiment,
                "runs": views::job_runs(&s.job_runs(None, 10)?),
                "recommendations_logged": s.count_recommendation_log(None)?,
                "last_quality_report": s.last_quality_report()?.map(|r| r.created_at),
            }))
        })
        .await?
        .map_err(ApiError::from_pipeline)?;
    let mut out = store_view;
    out["serving"] = json!({
        "active": active,
        "experiment": experiment,
        "hidden_items": serving.rules.hidden.len(),
        "pins": serving.rules.pins.len(),
        "boosts": serving.rules.boosts.len(),
    });
    out["latency"] = json!(state.metrics().latencies());
    Ok(Json(out))
}

async fn sync(State(state): State<AppState>) -> Answer {
    let tick = state.jobs().tick().await?;
    to_json(views::TickView::from(&tick))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ExtractBody {
    no_simulated: bool,
    seed: Option<u64>,
}

async fn run_extract(State(state): State<AppState>, body: Option<Json<ExtractBody>>) -> Answer {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let key = state.config().jobs.user_key.clone();
    let options = ExtractOptions {
        simulate: !body.no_simulated,
        seed: body.seed.unwrap_or(ExtractOptions::default().seed),
    };
    let summary = state
        .jobs()
        .on_own_connection(move |store, objects, handle| {
            handle.block_on(extract(store, objects, &key, options, &NoProgress))
        })
        .await?
        .map_err(ApiError::from_pipeline)?;
    to_json(summary)
}

async fn datasets(State(state): State<AppState>) -> Answer {
    on_read(&state, dataset::list).await
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DatasetBody {
    full: bool,
}

async fn build_dataset(State(state): State<AppState>, body: Option<Json<DatasetBody>>) -> Answer {
    let full = body.map(|Json(b)| b.full).unwrap_or(false);
    let built = state
        .jobs()
        .on_own_connection(move |store, objects, handle| {
            handle.block_on(dataset::build(
                store,
                objects,
                BuildOptions {
                    full,
                    csv: false,
                    include_public: false,
                },
                &NoProgress,
            ))
        })
        .await?
        .map_err(ApiError::from_pipeline)?;
    to_json(built)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainBody {
    /// `popular`, `als`, `ease`, …
    model: String,
    dataset: Option<String>,
    #[serde(default)]
    warm_start: bool,
    /// A complete model spec (as `models list` shows in `params`), overriding `model`.
    spec: Option<ModelSpec>,
    /// Two-tower: embed customers' accounts.
    #[serde(default)]
    accounts: bool,
}

async fn train(State(state): State<AppState>, Json(body): Json<TrainBody>) -> Answer {
    let spec = match body.spec {
        Some(spec) => spec,
        None => ModelSpec::new(
            body.model
                .parse::<ModelKind>()
                .map_err(|e| ApiError::bad_request("invalid", e.to_string()))?,
        ),
    };
    let request = TrainRequest {
        spec,
        dataset: body.dataset,
        warm_start: body.warm_start,
        tune: None,
        pretrain: None,
        accounts: body.accounts.then(|| state.config().jobs.user_key.clone()),
    };
    let summary = state
        .jobs()
        .on_own_connection(move |store, objects, handle| {
            handle.block_on(training::train(store, objects, &request))
        })
        .await?
        .map_err(ApiError::from_pipeline)?;
    to_json(summary)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RetrainBody {
    force: bool,
}

async fn retrain(State(state): State<AppState>, body: Option<Json<RetrainBody>>) -> Answer {
    let force = body.map(|Json(b)| b.force).unwrap_or(false);
    to_json(state.jobs().retrain(force, Actor::Admin).await?)
}

async fn models(State(state): State<AppState>) -> Answer {
    on_read(&state, training::list).await
}

async fn promote(State(state): State<AppState>, Path(version): Path<String>) -> Answer {
    let answer = on_db(&state, move |s| training::promote(s, &version)).await?;
    state.refresh_model().await?;
    Ok(answer)
}

async fn list_experiments(State(state): State<AppState>) -> Answer {
    on_read(&state, |s| {
        Ok(json!({"experiments": views::experiments(&s.experiments()?)}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    control: String,
    treatment: String,
    #[serde(default = "half")]
    traffic: u8,
}

fn half() -> u8 {
    50
}

async fn start_experiment(State(state): State<AppState>, Json(b): Json<StartBody>) -> Answer {
    let answer = on_db(&state, move |s| {
        let e = experiments::start(s, &b.control, &b.treatment, b.traffic, Actor::Admin)?;
        Ok(json!({"experiment_id": e.id, "experiment": views::ExperimentView::from(&e)}))
    })
    .await?;
    state.refresh_model().await?;
    Ok(answer)
}

async fn experiment_status(State(state): State<AppState>, Path(id): Path<i64>) -> Answer {
    let config = state.config().jobs.experiments.clone();
    on_read(&state, move |s| experiments::status(s, Some(id), &config)).await
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct StopBody {
    promote: bool,
    roll_back: bool,
    /// Promote even against the test's evidence.
    force: bool,
}

async fn stop_experiment(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: Option<Json<StopBody>>,
) -> Answer {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    if b.promote && b.roll_back {
        return Err(ApiError::bad_request(
            "invalid",
            "promote and roll_back exclude each other",
        ));
    }
    let outcome = match (b.promote, b.roll_back) {
        (true, _) => Outcome::Promoted,
        (_, true) => Outcome::RolledBack,
        _ => Outcome::Stopped,
    };
    let config = state.config().jobs.experiments.clone();
    let answer = on_db(&state, move |s| {
        let e = experiments::stop_checked(s, Some(id), outcome, b.force, &config)?;
        experiments::status(s, Some(e.id), &config)
    })
    .await?;
    state.refresh_model().await?;
    Ok(answer)
}

async fn rules(State(state): State<AppState>) -> Answer {
    on_read(&state, |s| {
        Ok(json!({"rules": views::catalog_rules(&s.catalog_rules()?), "hidden": s.hidden_items()?}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    rule: String,
    #[serde(default)]
    value: f64,
}

async fn set_rule(
    State(state): State<AppState>,
    Path(item): Path<String>,
    Json(b): Json<RuleBody>,
) -> Answer {
    let kind = match b.rule.as_str() {
        "hide" => RuleKind::Hide,
        "pin" => RuleKind::Pin,
        "boost" => RuleKind::Boost,
        other => {
            return Err(ApiError::bad_request(
                "invalid",
                format!("rule {other:?}: expected hide, pin or boost"),
            ))
        }
    };
    let answer = on_db(&state, move |s| {
        s.set_catalog_rule(&item, kind, b.value)?;
        Ok(json!({"rules": views::catalog_rules(&s.catalog_rules()?)}))
    })
    .await?;
    state.refresh_model().await?;
    Ok(answer)
}

async fn clear_rule(State(state): State<AppState>, Path(item): Path<String>) -> Answer {
    let answer = on_db(&state, move |s| {
        Ok(json!({"removed": s.remove_catalog_rule(&item)?,
                  "rules": views::catalog_rules(&s.catalog_rules()?)}))
    })
    .await?;
    state.refresh_model().await?;
    Ok(answer)
}

async fn last_report(State(state): State<AppState>) -> Answer {
    let report = state
        .db()
        .read(|s| s.last_quality_report())
        .await?
        .map_err(ApiError::internal)?;
    match report {
        Some(r) => Ok(Json(
            serde_json::from_str(&r.body).map_err(ApiError::internal)?,
        )),
        None => Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "not_found",
            message: "no data-quality report yet: POST /admin/reports/quality makes one".into(),
        }),
    }
}

async fn run_report(State(state): State<AppState>) -> Answer {
    to_json(state.jobs().report(Actor::Admin).await?)
}

#[derive(Deserialize)]
struct RunsQuery {
    job: Option<Job>,
    limit: Option<usize>,
}

async fn runs(State(state): State<AppState>, Query(q): Query<RunsQuery>) -> Answer {
    let limit = q.limit.unwrap_or(20).clamp(1, 500);
    on_read(&state, move |s| {
        Ok(json!({"runs": views::job_runs(&s.job_runs(q.job, limit)?)}))
    })
    .await
}
