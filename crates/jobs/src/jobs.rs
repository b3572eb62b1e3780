//! The long jobs that `serve` schedules, the admin API triggers and the command
//! line runs: the weekly loop (`retrain`), the daily data-quality report, and
//! retention. Each runs on a connection of its own, off the async threads, so
//! ingestion and recommendations never wait for a training; each is journaled
//! in `job_runs`.

use manirec_pipeline::quality::QualityReport;
use manirec_pipeline::retention::Cleanup;
use manirec_pipeline::retrain::{self, RetrainContext, RetrainRun};
use manirec_pipeline::sync::{sync_batch, SyncSummary};
use manirec_store::{Job, JobStart, JobStatus, Objects, Store};
use serde::Serialize;
use serde_json::json;
use tokio::runtime::Handle;

use crate::{Db, Error, Jobs, Result};

/// While a job runs, renews the heartbeat of the leases (running `job_runs`
/// rows) this process holds, so that another replica takes one over only
/// when its holder stopped renewing it (see `manirec_store`'s `jobs.rs`).
async fn heartbeat(db: Db) {
    let every = std::time::Duration::from_millis(manirec_store::HEARTBEAT_EVERY_MS as u64);
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match db.call(|s| s.renew_job_leases()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not renew a job's lease"),
            Err(_) => return,
        }
    }
}

impl Jobs {
    /// Runs `f` on a second connection to the store, on a blocking thread (with a
    /// handle to drive the object store's async calls).
    pub async fn on_own_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store, &Objects, &Handle) -> T + Send + 'static,
    ) -> Result<T> {
        let mut store = self.db().call(|s| s.reopen()).await??;
        let objects = self.objects().clone();
        let handle = Handle::current();
        let heartbeat = tokio::spawn(heartbeat(self.db().clone()));
        let out = tokio::task::spawn_blocking(move || f(&mut store, &objects, &handle)).await;
        heartbeat.abort();
        let _ = heartbeat.await;
        out.map_err(|e| Error::Panicked(e.to_string()))
    }

    /// Sync: the events not yet turned into interactions, on the store's
    /// thread, one batch per turn: event writes queued meanwhile go in between
    /// batches, so a long backlog never holds ingestion up.
    pub async fn sync(&self) -> Result<SyncSummary> {
        let weights = std::sync::Arc::new(self.config().weights.clone());
        let mut summary = self.db().call(|s| SyncSummary::from_watermark(s)).await??;
        loop {
            let weights = weights.clone();
            let (next, more) = self
                .db()
                .call(move |s| {
                    let more = sync_batch(s, &weights, &mut summary)?;
                    Ok::<_, manirec_pipeline::Error>((summary, more))
                })
                .await??;
            summary = next;
            if !more {
                break;
            }
        }
        summary.stitched = self.db().call(|s| s.apply_identity_links()).await??;
        self.observer().synced(summary.synced);
        Ok(summary)
    }

    /// The weekly loop, once: sync the events first (so they count), then
    /// [`retrain::run`]. The observer hears of a promotion or a new experiment
    /// before this returns; a run that did something is notified.
    pub async fn retrain(&self, force: bool, start: impl Into<JobStart>) -> Result<RetrainRun> {
        let start = start.into();
        self.sync().await?;
        let config = self.config().clone();
        let run = self
            .on_own_connection(move |store, objects, handle| {
                handle.block_on(retrain::run(&RetrainContext {
                    store,
                    objects,
                    trigger: &config.trigger,
                    retrain: &config.retrain,
                    experiments: &config.experiments,
                    force,
                    start,
                    user_key: &config.user_key,
                }))
            })
            .await??;
        self.observer().serving_changed().await;
        if run.status != JobStatus::Skipped {
            // Awaited (the notifier gives up on its own): a command that ends here
            // must not drop the notice.
            if let Some(sent) = crate::notify::spawn(
                self.config().notify_url.clone(),
                json!({"event": "retrain_run", "run": run}),
            ) {
                let _ = sent.await;
            }
        }
        Ok(run)
    }

    /// The data-quality report, written to the object store and journaled.
    pub async fn report(&self, start: impl Into<JobStart>) -> Result<QualityReport> {
        self.journaled(Job::Quality, start.into(), |store, objects, handle| {
            handle.block_on(manirec_pipeline::quality::report(store, objects))
        })
        .await
    }

    /// Retention: interactions, behaviour events and logged recommendation
    /// answers older than `days` days are deleted, journaled as a `retention`
    /// run. The scheduler and `manirec cleanup` both call this.
    pub async fn retention(&self, days: u32, start: impl Into<JobStart>) -> Result<Cleanup> {
        self.journaled(Job::Retention, start.into(), move |store, _, _| {
            manirec_pipeline::retention::cleanup(store, days, manirec_store::now_ms() / 1000)
        })
        .await
    }

    /// Runs `f` on its own connection as a run of `job` in `job_runs`: one
    /// step holding its summary, then `ok`, or `failed` with the error.
    async fn journaled<T: Serialize + Send + 'static>(
        &self,
        job: Job,
        start: JobStart,
        f: impl FnOnce(&mut Store, &Objects, &Handle) -> manirec_pipeline::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on_own_connection(move |store, objects, handle| -> Result<T> {
            let id = store.start_job_run(job, start)?;
            let result = f(store, objects, handle);
            match &result {
                Ok(summary) => {
                    let summary = serde_json::to_value(summary).unwrap_or_default();
                    store.add_job_step(id, job.as_str(), &summary)?;
                    store.finish_job_run(id, JobStatus::Ok, None)?;
                }
                Err(e) => store.finish_job_run(id, JobStatus::Failed, Some(&e.to_string()))?,
            }
            Ok(result?)
        })
        .await?
    }
}
