//! The jobs `serve` runs on its own: every `sync_interval`, the reconciliation
//! poll (when configured), then sync, then the retrain trigger; on the
//! `[schedule]` periods, the weekly loop (`retrain --run`), the data-quality
//! report and retention. A periodic job runs when its last successful run is
//! older than its period (the journal says when), so a restart neither skips
//! nor repeats it. A failing job is logged and retried later; ingestion never
//! waits for it.

use manirec_pipeline::export::ExportSummary;
use manirec_pipeline::sync::{sync, SyncSummary};
use manirec_pipeline::training;
use manirec_pipeline::trigger::{self, TriggerCheck};
use manirec_pipeline::NoProgress;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{ApiError, AppState};

/// What one tick did.
#[derive(Debug, Serialize)]
pub struct Tick {
    /// The poll, when configured.
    pub poll: Option<crate::poll::PollSummary>,
    /// The sync.
    pub sync: SyncSummary,
    /// The trigger's verdict after the sync.
    pub trigger: TriggerCheck,
    /// The increment exported when the trigger fired.
    pub fired: Option<ExportSummary>,
}

/// How often the periodic jobs run (`[schedule]` in manirec.toml); 0 turns a
/// job off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Minutes between runs of the weekly loop (it trains only when the
    /// trigger says so, and settles a running A/B test when it has evidence).
    pub retrain_minutes: u64,
    /// Hours between data-quality reports.
    pub report_hours: u64,
    /// Hours between retention runs.
    pub retention_hours: u64,
    /// Age in days past which retention deletes interactions, events and logged answers.
    pub retention_days: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            retrain_minutes: 60,
            report_hours: 24,
            retention_hours: 24,
            retention_days: 365,
        }
    }
}

/// Runs ticks forever (the first one after one interval), and the periodic jobs.
///
/// The background tasks live in a `JoinSet` owned by this future: aborting it
/// (as `serve` does on shutdown) aborts them all, so none keeps the store alive.
pub async fn run(state: AppState) {
    let schedule = state.config().schedule.clone();
    let mut tasks = tokio::task::JoinSet::new();
    periodic(
        &mut tasks,
        &state,
        "retrain",
        schedule.retrain_minutes * 60,
        |s| async move {
            crate::jobs::retrain(&s, false, "schedule")
                .await
                .map(|r| serde_json::json!({"status": r.status, "outcome": r.outcome}))
        },
    );
    periodic(
        &mut tasks,
        &state,
        "quality",
        schedule.report_hours * 3600,
        |s| async move { crate::jobs::quality_report(&s, "schedule").await },
    );
    periodic(
        &mut tasks,
        &state,
        "retention",
        schedule.retention_hours * 3600,
        |s| async move { crate::jobs::retention(&s, "schedule").await },
    );
    tasks.spawn(crate::serving::flush_forever(
        state.clone(),
        std::time::Duration::from_millis(250),
    ));
    // Promotions are noticed within half a minute, without a restart.
    let watcher = state.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            every.tick().await;
            if let Err(e) = watcher.refresh_model().await {
                tracing::warn!(error = %e, "could not load the active model");
            }
        }
    });
    let mut interval = tokio::time::interval(state.config().sync_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval.tick().await;
    loop {
        interval.tick().await;
        match tick(&state).await {
            Ok(t) => tracing::info!(
                synced = t.sync.synced,
                should_retrain = t.trigger.should_retrain,
                "scheduled sync"
            ),
            Err(e) => tracing::error!(error = %e, "scheduled sync failed"),
        }
    }
}

/// One round: poll, sync, trigger (and notify when it fires).
pub async fn tick(state: &AppState) -> Result<Tick, ApiError> {
    let config = state.config();
    let poll = match &config.poll {
        Some(p) => {
            match crate::poll::poll_orders(state.db(), p, &config.user_key, config.simulation_seed)
                .await
            {
                Ok(summary) => Some(summary),
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation poll failed; webhooks still flow");
                    None
                }
            }
        }
        None => None,
    };
    let quality = quality(state).await;
    let weights = config.weights.clone();
    let thresholds = config.trigger.clone();
    let (sync, trigger, pending) = state
        .db()
        .call(move |store| -> manirec_pipeline::Result<_> {
            let sync = sync(store, &weights, &NoProgress)?;
            let check = trigger::check(store, &thresholds, quality)?;
            let pending = if check.should_retrain && !check.already_fired {
                Some(trigger::increment(store)?)
            } else {
                None
            };
            Ok((sync, check, pending))
        })
        .await?
        .map_err(ApiError::internal)?;
    state.metrics().synced(sync.synced);
    let fired = match pending {
        Some(pending) => {
            let increment = trigger::publish(state.objects(), &pending)
                .await
                .map_err(ApiError::internal)?;
            state
                .db()
                .call(move |s| trigger::mark_fired(s, &pending))
                .await?
                .map_err(ApiError::internal)?;
            crate::notify::spawn(
                config.notify_url.clone(),
                json!({"event": "retrain_triggered", "reasons": trigger.reasons,
                       "new_interactions": trigger.new_interactions,
                       "days_since_last": trigger.days_since_last, "export": increment}),
            );
            Some(increment)
        }
        None => None,
    };
    Ok(Tick {
        poll,
        sync,
        trigger,
        fired,
    })
}

/// The active model's quality signal for the trigger; a failure is logged and
/// leaves the trigger to its other reasons.
async fn quality(state: &AppState) -> Option<trigger::Quality> {
    let inputs = state
        .db()
        .call(|store| training::quality_inputs(store))
        .await
        .ok()?;
    let inputs = match inputs {
        Ok(Some(inputs)) => inputs,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "no quality signal for the retrain trigger");
            return None;
        }
    };
    match training::quality_of(state.objects(), &inputs).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "no quality signal for the retrain trigger");
            None
        }
    }
}

/// Runs `job` whenever its last finished run is older than `period_s`
/// (checked every few minutes); `period_s == 0` turns it off.
fn periodic<F, Fut>(
    tasks: &mut tokio::task::JoinSet<()>,
    state: &AppState,
    job: &'static str,
    period_s: u64,
    run: F,
) where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>> + Send,
{
    if period_s == 0 {
        return;
    }
    let state = state.clone();
    tasks.spawn(async move {
        let period_ms = period_s as i64 * 1000;
        let check = std::time::Duration::from_secs(period_s.clamp(1, 300));
        loop {
            tokio::time::sleep(check).await;
            let last = state
                .db()
                .call(move |s| s.last_job_finish(job, &["ok", "skipped", "failed"]))
                .await;
            let due = match last {
                Ok(Ok(Some(at))) => manirec_store::now_ms() - at >= period_ms,
                Ok(Ok(None)) => true,
                _ => false,
            };
            if !due {
                continue;
            }
            match run(state.clone()).await {
                Ok(summary) => tracing::info!(job, %summary, "scheduled job done"),
                Err(e) => tracing::error!(job, error = %e, "scheduled job failed"),
            }
        }
    });
}
