//! The jobs `serve` runs on its own: every `sync_interval`, the reconciliation
//! poll (when configured), then sync, then the retrain trigger; on the
//! `[schedule]` periods, the weekly loop (`retrain --run`), the data-quality
//! report and retention. A periodic job runs when its last successful run is
//! older than its period (the journal says when), so a restart neither skips
//! nor repeats it. A failing job is logged and retried later; ingestion never
//! waits for it.

use std::future::Future;

use manirec_pipeline::export::ExportSummary;
use manirec_pipeline::sync::SyncSummary;
use manirec_pipeline::training;
use manirec_pipeline::trigger::{self, TriggerCheck};
use manirec_store::{Job, JobStart, JobStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Jobs, Result};

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
    /// Age in days past which retention deletes interactions, events and
    /// logged answers (scheduled, and `manirec cleanup`'s default).
    pub retention_days: u32,
    /// Most seconds between two looks at whether a periodic job is due (a
    /// job whose period is shorter is looked at every period).
    pub check_seconds: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            retrain_minutes: 60,
            report_hours: 24,
            retention_hours: 24,
            retention_days: manirec_pipeline::retention::DEFAULT_RETENTION_DAYS,
            check_seconds: 300,
        }
    }
}

impl Jobs {
    /// Runs ticks (the first one after one interval) and the periodic jobs
    /// until `shutdown` resolves; then every job in flight is dropped (a
    /// journaled run left `running` is taken over by the next process).
    pub async fn run_scheduler(&self, shutdown: impl Future<Output = ()>) {
        let schedule = self.config().schedule.clone();
        let mut tasks = tokio::task::JoinSet::new();
        periodic(
            &mut tasks,
            self,
            Job::Retrain,
            schedule.retrain_minutes * 60,
            |jobs, start| async move {
                jobs.retrain(false, start)
                    .await
                    .map(|r| json!({"status": r.status, "outcome": r.outcome}))
            },
        );
        periodic(
            &mut tasks,
            self,
            Job::Quality,
            schedule.report_hours * 3600,
            |jobs, start| async move {
                let report = jobs.report(start).await?;
                Ok(json!({"date": report.date}))
            },
        );
        periodic(
            &mut tasks,
            self,
            Job::Retention,
            schedule.retention_hours * 3600,
            move |jobs, start| async move {
                let cleanup = jobs.retention(schedule.retention_days, start).await?;
                Ok(json!(cleanup.deleted))
            },
        );
        let ticks = self.clone();
        tasks.spawn(async move {
            let mut interval = tokio::time::interval(ticks.config().sync_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval.tick().await;
            loop {
                interval.tick().await;
                match ticks.tick().await {
                    Ok(t) => tracing::info!(
                        synced = t.sync.synced,
                        should_retrain = t.trigger.should_retrain,
                        "scheduled sync"
                    ),
                    Err(e) => tracing::error!(error = %e, "scheduled sync failed"),
                }
            }
        });
        shutdown.await;
        tasks.shutdown().await;
    }

    /// One round: poll (when configured), sync, trigger (and notify when it fires).
    pub async fn tick(&self) -> Result<Tick> {
        let config = self.config();
        let poll = match self.poll().await {
            Ok(summary) => summary,
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation poll failed; webhooks still flow");
                None
            }
        };
        let quality = self.quality().await;
        let thresholds = config.trigger.clone();
        let sync = self.sync().await?;
        let (trigger, pending) = self
            .db()
            .call(move |store| -> manirec_pipeline::Result<_> {
                let check = trigger::check(store, &thresholds, quality)?;
                let pending = if check.should_retrain && !check.already_fired {
                    Some(trigger::increment(store)?)
                } else {
                    None
                };
                Ok((check, pending))
            })
            .await??;
        let fired = match pending {
            Some(pending) => {
                let increment = trigger::publish(self.objects(), &pending).await?;
                self.db()
                    .call(move |s| trigger::mark_fired(s, &pending))
                    .await??;
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
    async fn quality(&self) -> Option<trigger::Quality> {
        let inputs = self
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
        match training::quality_of(self.objects(), &inputs).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "no quality signal for the retrain trigger");
                None
            }
        }
    }
}

/// Runs `job` whenever its last finished run is older than `period_s`
/// (checked every `check_seconds` at most); `period_s == 0` turns it off.
/// The run itself starts only if it is still due when it takes the job's
/// lease ([`JobStart::scheduled`]): of several replicas that find it due
/// together, one runs it.
fn periodic<F, Fut>(
    tasks: &mut tokio::task::JoinSet<()>,
    jobs: &Jobs,
    job: Job,
    period_s: u64,
    run: F,
) where
    F: Fn(Jobs, JobStart) -> Fut + Send + 'static,
    Fut: Future<Output = Result<serde_json::Value>> + Send,
{
    if period_s == 0 {
        return;
    }
    let jobs = jobs.clone();
    tasks.spawn(async move {
        let period_ms = period_s as i64 * 1000;
        let most = jobs.config().schedule.check_seconds.max(1);
        let check = std::time::Duration::from_secs(period_s.clamp(1, most));
        loop {
            tokio::time::sleep(check).await;
            let last = jobs
                .db()
                .call(move |s| {
                    s.last_job_finish(job, &[JobStatus::Ok, JobStatus::Skipped, JobStatus::Failed])
                })
                .await;
            let due = match last {
                Ok(Ok(Some(at))) => manirec_store::now_ms() - at >= period_ms,
                Ok(Ok(None)) => true,
                _ => false,
            };
            if !due {
                continue;
            }
            match run(jobs.clone(), JobStart::scheduled(period_ms)).await {
                Ok(summary) => tracing::info!(%job, %summary, "scheduled job done"),
                // Another replica holds its lease (a run whose heartbeat is
                // fresh) or has just run it.
                Err(crate::Error::Store(manirec_store::Error::Conflict(e)))
                | Err(crate::Error::Pipeline(manirec_pipeline::Error::Store(
                    manirec_store::Error::Conflict(e),
                ))) => tracing::info!(%job, reason = %e, "scheduled job left to another replica"),
                Err(e) => tracing::error!(%job, error = %e, "scheduled job failed"),
            }
        }
    });
}
