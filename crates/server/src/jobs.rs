//! The long jobs that `serve` schedules, the admin API triggers and the command
//! line runs: the weekly loop (`retrain`), the daily data-quality report, and
//! retention. Each runs on a connection of its own, off the async threads, so
//! ingestion and recommendations never wait for a training; each is journaled
//! in `job_runs`.

use manirec_pipeline::retrain::{self, RetrainContext, RetrainRun};
use manirec_pipeline::sync::sync;
use manirec_pipeline::NoProgress;
use manirec_store::{Objects, Store};
use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::{ApiError, AppState};

/// Runs `f` on a second connection to the store, on a blocking thread (with a
/// handle to drive the object store's async calls).
pub(crate) async fn on_own_connection<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Store, &Objects, &Handle) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let mut store = state
        .db()
        .call(|s| s.reopen())
        .await?
        .map_err(ApiError::internal)?;
    let objects = state.objects().clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || f(&mut store, &objects, &handle))
        .await
        .map_err(ApiError::internal)
}

/// The weekly loop, once: sync the events first (so they count), then
/// [`retrain::run`]. Serving picks up a promotion or a new experiment at once.
pub async fn retrain(
    state: &AppState,
    force: bool,
    started_by: &'static str,
) -> Result<RetrainRun, ApiError> {
    let weights = state.config().weights.clone();
    let synced = state
        .db()
        .call(move |s| sync(s, &weights, &NoProgress))
        .await?
        .map_err(ApiError::internal)?;
    state.metrics().synced(synced.synced);
    let config = state.config().clone();
    let run = on_own_connection(state, move |store, objects, handle| {
        handle.block_on(retrain::run(&RetrainContext {
            store,
            objects,
            trigger: &config.trigger,
            retrain: &config.retrain,
            experiments: &config.experiments,
            force,
            started_by,
        }))
    })
    .await?
    .map_err(ApiError::from_pipeline)?;
    if let Err(e) = state.refresh_model().await {
        tracing::warn!(error = %e, "could not reload serving after the retrain run");
    }
    if run.status != "skipped" {
        // Awaited (the notifier gives up on its own): a command that ends here
        // must not drop the notice.
        if let Some(sent) = crate::notify::spawn(
            state.config().notify_url.clone(),
            json!({"event": "retrain_run", "run": run}),
        ) {
            let _ = sent.await;
        }
    }
    Ok(run)
}

/// The data-quality report, written to the object store and journaled.
pub async fn quality_report(state: &AppState, started_by: &'static str) -> Result<Value, ApiError> {
    journaled(state, "quality", started_by, |store, objects, handle| {
        let report = handle.block_on(manirec_pipeline::quality::report(store, objects))?;
        Ok(serde_json::to_value(report).unwrap_or_default())
    })
    .await
}

/// Retention: interactions, events and logged answers older than the configured
/// age are deleted.
pub async fn retention(state: &AppState, started_by: &'static str) -> Result<Value, ApiError> {
    let days = state.config().schedule.retention_days;
    journaled(state, "retention", started_by, move |store, _, _| {
        let now = manirec_store::now_ms();
        let cleanup = manirec_pipeline::retention::cleanup(store, days, now / 1000)?;
        let logs = store.delete_recommendation_log_before(now - i64::from(days) * 86_400_000)?;
        Ok(json!({"cleanup": cleanup, "recommendation_log_deleted": logs}))
    })
    .await
}

async fn journaled(
    state: &AppState,
    job: &'static str,
    started_by: &'static str,
    f: impl FnOnce(&mut Store, &Objects, &Handle) -> manirec_pipeline::Result<Value> + Send + 'static,
) -> Result<Value, ApiError> {
    on_own_connection(state, move |store, objects, handle| {
        let id = store.start_job_run(job, started_by)?;
        let result = f(store, objects, handle);
        match &result {
            Ok(summary) => {
                store.add_job_step(id, job, summary)?;
                store.finish_job_run(id, "ok", None)?;
            }
            Err(e) => store.finish_job_run(id, "failed", Some(&e.to_string()))?,
        }
        result
    })
    .await?
    .map_err(ApiError::from_pipeline)
}
