//! Loading what answers recommendations (`manirec_pipeline::serving::Serving`,
//! held as one immutable snapshot that is swapped whole), reusing the models
//! the current snapshot holds. And the log of answers, written in batches off
//! the request path (an answer is never slowed by its own log line).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use manirec_models::evaluate::Protocol;
use manirec_pipeline::serving::{
    measured_to_win, CatalogRules, Catalogue, LiveModel, Serving, ServingVersions,
};
use manirec_store::{ModelVersion, RecommendationLog};

use crate::{ApiError, AppState};

/// Log entries kept in memory before a write is forced.
const LOG_BATCH: usize = 2_000;

/// The next snapshot: versions already loaded in `current` are reused.
pub(crate) async fn load(state: &AppState, current: &Serving) -> Result<Serving, ApiError> {
    let (versions, rules, catalogue) = state
        .db()
        // Reads only: off the writer's thread, so ingestion never waits for it.
        .read(|s| -> manirec_pipeline::Result<_> {
            let versions = ServingVersions::read(s)?;
            let rules = CatalogRules::load(s)?;
            let catalogue = Catalogue::load(s, &rules.hidden)?;
            Ok((versions, rules, catalogue))
        })
        .await?
        .map_err(ApiError::internal)?;
    let mut loaded: HashMap<String, Arc<LiveModel>> = HashMap::new();
    let known = current
        .active
        .iter()
        .chain(current.session.iter())
        .chain(current.first_visit.iter())
        .chain(
            current
                .experiment
                .iter()
                .flat_map(|e| [&e.control, &e.treatment]),
        );
    for m in known {
        loaded.insert(m.version.clone(), m.clone());
    }
    let rules = if *current.rules == rules {
        current.rules.clone()
    } else {
        Arc::new(rules)
    };
    let catalogue = if *current.catalogue == catalogue {
        current.catalogue.clone()
    } else {
        Arc::new(catalogue)
    };
    for v in versions.each() {
        match model(state, &mut loaded, v).await {
            Ok(_) => {}
            Err(err) if versions.is_active(v) => return Err(err),
            Err(err) => {
                tracing::error!(version = %v.version, error = %err, "cannot load a model; the active model answers the requests it would have");
            }
        }
    }
    Ok(Serving::assemble(&versions, rules, catalogue, &loaded))
}

async fn model(
    state: &AppState,
    loaded: &mut HashMap<String, Arc<LiveModel>>,
    v: &ModelVersion,
) -> Result<Arc<LiveModel>, ApiError> {
    if let Some(m) = loaded.get(&v.version) {
        return Ok(m.clone());
    }
    let model = manirec_pipeline::training::load_model(state.objects(), v)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(version = %v.version, "model loaded");
    let version = v.version.clone();
    let first_visits = measured_to_win(v, Protocol::FirstVisit);
    let live = Arc::new(
        tokio::task::spawn_blocking(move || {
            LiveModel::new(version, model).answering_first_visits(first_visits)
        })
        .await
        .map_err(ApiError::internal)?,
    );
    loaded.insert(v.version.clone(), live.clone());
    Ok(live)
}

/// Answers waiting to be logged.
#[derive(Default)]
pub(crate) struct LogBuffer {
    pending: Mutex<Pending>,
    /// Wakes the flusher early when the buffer is full.
    full: tokio::sync::Notify,
}

/// The queue, and the budget of answers outside experiments (a token bucket).
#[derive(Default)]
struct Pending {
    rows: Vec<RecommendationLog>,
    /// Answers outside experiments that may still be logged now.
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Option<std::time::Instant>,
}

impl LogBuffer {
    /// Queues `entry`, unless it is outside an experiment and the budget of
    /// `per_second` such answers is spent; returns whether it was queued.
    pub(crate) fn push(&self, entry: RecommendationLog, per_second: f64) -> bool {
        let len = {
            let mut pending = self.pending.lock().expect("not poisoned");
            if entry.experiment_id.is_none() {
                if per_second <= 0.0 {
                    return false;
                }
                // At least one answer fits, so a budget under 1 a second logs
                // one answer every 1 / budget seconds rather than none.
                let capacity = per_second.max(1.0);
                let now = std::time::Instant::now();
                pending.tokens = match pending.refilled {
                    None => capacity,
                    Some(t) => (pending.tokens + now.duration_since(t).as_secs_f64() * per_second)
                        .min(capacity),
                };
                pending.refilled = Some(now);
                if pending.tokens < 1.0 {
                    return false;
                }
                pending.tokens -= 1.0;
            }
            pending.rows.push(entry);
            pending.rows.len()
        };
        if len >= LOG_BATCH {
            self.full.notify_one();
        }
        true
    }

    fn take(&self) -> Vec<RecommendationLog> {
        std::mem::take(&mut self.pending.lock().expect("not poisoned").rows)
    }
}

/// Writes what is queued, in one transaction.
pub(crate) async fn flush(state: &AppState) -> Result<u64, ApiError> {
    let batch = state.inner.log.take();
    if batch.is_empty() {
        return Ok(0);
    }
    let (written, batch) = state
        .db()
        .call(move |s| (s.insert_recommendation_log(&batch), batch))
        .await?;
    written.map_err(|e| {
        // Kept for the next flush: a busy database must not lose the log.
        state
            .inner
            .log
            .pending
            .lock()
            .expect("not poisoned")
            .rows
            .extend(batch);
        ApiError::internal(e)
    })
}

/// Flushes the log every `every`, or sooner when a batch fills up.
pub(crate) async fn flush_forever(state: AppState, every: std::time::Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.inner.log.full.notified() => {}
        }
        if let Err(e) = flush(&state).await {
            tracing::warn!(error = %e, "recommendation log write failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(experiment_id: Option<i64>) -> RecommendationLog {
        RecommendationLog {
            request_id: format!("r-{}", rand::random::<u64>()),
            created_at: 0,
            user_id: None,
            endpoint: "recommendations",
            model_version: None,
            experiment_id,
            variant: "control",
            items: Vec::new(),
        }
    }

    #[test]
    fn the_budget_bounds_answers_outside_experiments_only() {
        let log = LogBuffer::default();
        let kept = (0..10).filter(|_| log.push(answer(None), 3.0)).count();
        assert_eq!(
            kept, 3,
            "a burst of the budget, then nothing until it refills"
        );
        assert!((0..10).all(|_| log.push(answer(Some(1)), 3.0)));
        // Under one a second: one answer, then one every 1 / budget seconds.
        let slow = LogBuffer::default();
        assert!(slow.push(answer(None), 0.5));
        assert!(!slow.push(answer(None), 0.5));
        // Nothing outside experiments at 0.
        let none = LogBuffer::default();
        assert!(!none.push(answer(None), 0.0));
        assert_eq!(log.take().len(), 13);
    }
}
