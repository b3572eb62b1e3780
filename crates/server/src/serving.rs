//! What answers recommendations, held as one immutable snapshot that is swapped
//! whole: the active model, the running experiment with its two models, and the
//! catalogue rules. And the log of answers, written in batches off the request
//! path (an answer is never slowed by its own log line).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use manirec_models::evaluate::Protocol;
use manirec_pipeline::experiments::{assign, Variant};
use manirec_pipeline::serving::{measured_to_win, version_for, CatalogRules, Catalogue, LiveModel};
use manirec_store::{Experiment, ModelVersion, RecommendationLog};

use crate::{ApiError, AppState};

/// Log entries kept in memory before a write is forced.
const LOG_BATCH: usize = 2_000;

/// One snapshot of what serves.
#[derive(Default)]
pub struct Serving {
    /// The active version.
    pub active: Option<Arc<LiveModel>>,
    /// The version that measured best under the session protocol on the
    /// active version's dataset, when not the active one
    /// (`manirec_pipeline::serving::version_for`): it answers anonymous
    /// sessions outside experiments.
    pub session: Option<Arc<LiveModel>>,
    /// Likewise under the first-visit protocol: it answers, outside
    /// experiments, a customer with no history whom it knows by their account
    /// and the chosen model was not trained on (see [`Serving::for_first_visit`]).
    pub first_visit: Option<Arc<LiveModel>>,
    /// The running experiment and its arms' models.
    pub experiment: Option<RunningExperiment>,
    /// The shop's rules.
    pub rules: Arc<CatalogRules>,
    /// Designers and categories.
    pub catalogue: Arc<Catalogue>,
}

/// An experiment being served.
pub struct RunningExperiment {
    /// As stored.
    pub experiment: Experiment,
    /// The control's model.
    pub control: Arc<LiveModel>,
    /// The treatment's model.
    pub treatment: Arc<LiveModel>,
}

impl Serving {
    /// The model, experiment and arm for a shopper (`unit`: their training id).
    /// Without a running experiment, or for a stranger, the active model
    /// answers as `control` outside any experiment.
    pub fn choose(&self, unit: Option<&str>) -> Option<(Arc<LiveModel>, Option<i64>, Variant)> {
        if let (Some(exp), Some(unit)) = (&self.experiment, unit) {
            let variant = assign(&exp.experiment, unit);
            let model = match variant {
                Variant::Control => &exp.control,
                Variant::Treatment => &exp.treatment,
            };
            return Some((model.clone(), Some(exp.experiment.id), variant));
        }
        if let (Some(s), Some(unit)) = (&self.session, unit) {
            // An anonymous visitor: a session or a device not linked to a customer.
            if unit.starts_with("session:") || unit.starts_with("device:") {
                return Some((s.clone(), None, Variant::Control));
            }
        }
        self.active.clone().map(|m| (m, None, Variant::Control))
    }

    /// The model for `unit`'s first visit instead of `chosen` (see
    /// [`Serving::first_visit`]): a customer (not a session or device) whom
    /// `chosen` was not trained on and the first-visit model knows by their
    /// account. It is theirs only when they have no history either, which the
    /// caller checks.
    pub fn for_first_visit(&self, unit: &str, chosen: &LiveModel) -> Option<Arc<LiveModel>> {
        let model = self.first_visit.as_ref()?;
        let customer = !unit.starts_with("session:") && !unit.starts_with("device:");
        (customer && !chosen.model.knows_user(unit) && model.model.knows_account(unit))
            .then(|| model.clone())
    }
}

/// The next snapshot: versions already loaded in `current` are reused.
pub(crate) async fn load(state: &AppState, current: &Serving) -> Result<Serving, ApiError> {
    let (active, session, first_visit, experiment, rules, catalogue) = state
        .db()
        // Reads only: off the writer's thread, so ingestion never waits for it.
        .read(|s| -> manirec_pipeline::Result<_> {
            let active = s.active_model_version()?;
            let session = version_for(s, Protocol::Session)?;
            let first_visit = version_for(s, Protocol::FirstVisit)?;
            let experiment = match s.running_experiment()? {
                Some(e) => {
                    let control = s.model_version(&e.control)?;
                    let treatment = s.model_version(&e.treatment)?;
                    Some((e, control, treatment))
                }
                None => None,
            };
            let rules = CatalogRules::load(s)?;
            let catalogue = Catalogue::load(s, &rules.hidden)?;
            Ok((active, session, first_visit, experiment, rules, catalogue))
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
    let active = match active {
        Some(v) => Some(model(state, &mut loaded, &v).await?),
        None => None,
    };
    let session = model_for(state, &mut loaded, session, "sessions").await;
    let first_visit = model_for(state, &mut loaded, first_visit, "first visits").await;
    let experiment = match experiment {
        Some((e, Some(c), Some(t))) => {
            let control = model(state, &mut loaded, &c).await;
            let treatment = model(state, &mut loaded, &t).await;
            match (control, treatment) {
                (Ok(control), Ok(treatment)) => Some(RunningExperiment {
                    experiment: e,
                    control,
                    treatment,
                }),
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(experiment = e.id, error = %err, "cannot load an arm's model; serving the active model to everyone");
                    None
                }
            }
        }
        Some((e, _, _)) => {
            tracing::error!(experiment = e.id, "an arm's model version is missing from the registry; serving the active model to everyone");
            None
        }
        None => None,
    };
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
    Ok(Serving {
        active,
        session,
        first_visit,
        experiment,
        rules,
        catalogue,
    })
}

/// The model of `version` for one kind of request (`what`), when there is one
/// and it loads: a failure leaves those requests to the active model, loudly.
async fn model_for(
    state: &AppState,
    loaded: &mut HashMap<String, Arc<LiveModel>>,
    version: Option<ModelVersion>,
    what: &str,
) -> Option<Arc<LiveModel>> {
    let v = version?;
    match model(state, loaded, &v).await {
        Ok(m) => Some(m),
        Err(err) => {
            tracing::error!(version = %v.version, error = %err, "cannot load the model for {what}; the active model answers them");
            None
        }
    }
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

    #[test]
    fn a_customers_first_visit_goes_to_the_model_that_knows_their_account() {
        use manirec_models::{Features, Interaction, ModelKind, ModelSpec};
        // Customers c0..c39 bought; c40 has an account and nothing else.
        let rows: Vec<Interaction> = (0..400)
            .map(|n| {
                let user = format!("c{}", n % 40);
                Interaction::rating(user, format!("i{}", n % 13), 1.0, n as i64)
            })
            .collect();
        let mut features = Features::new();
        for u in 0..=40 {
            features.insert_user(&format!("c{u}"), "country", "de");
        }
        let train = |kind, f: Option<&Features>| {
            let mut spec = ModelSpec::new(kind);
            spec.als.factors = 4;
            spec.two_tower.dim = 8;
            spec.two_tower.epochs = 1;
            let model = manirec_models::train(&rows, &spec, f).unwrap();
            Arc::new(LiveModel::new(kind.as_str().into(), model))
        };
        let active = train(ModelKind::Als, None);
        let first = train(ModelKind::TwoTower, Some(&features));
        let serving = Serving {
            active: Some(active.clone()),
            first_visit: Some(first.clone()),
            ..Serving::default()
        };
        let route = |unit: &str| {
            let chosen = serving.choose(Some(unit)).unwrap().0;
            serving
                .for_first_visit(unit, &chosen)
                .map(|m| m.version.clone())
        };
        assert_eq!(route("c40").as_deref(), Some("two-tower"));
        assert_eq!(route("c3"), None, "the active model was trained on c3");
        assert_eq!(route("c41"), None, "no account");
        assert_eq!(route("session:s1"), None, "a visitor, not a customer");
        // Popularity, or a model of histories, knows no one: the account answers.
        let popular = train(ModelKind::Popular, None);
        assert!(serving.for_first_visit("c3", &popular).is_some());
        let without = Serving {
            active: Some(active),
            ..Serving::default()
        };
        assert!(without.for_first_visit("c40", &first).is_none());

        // The account answers only when the model's first-visit report won.
        let answer = |live: &LiveModel| {
            let ask = manirec_pipeline::serving::Ask {
                user: Some("c40"),
                past: &Default::default(),
                k: 5,
                category: None,
                exclude: &[],
            };
            let rules = CatalogRules::default();
            let items =
                manirec_pipeline::serving::recommend(live, &ask, &rules, &Catalogue::default());
            items.into_iter().map(|s| s.item_id).collect::<Vec<_>>()
        };
        let popular_answer: Vec<String> = first
            .model
            .most_popular(5, None)
            .into_iter()
            .map(|s| s.item_id)
            .collect();
        assert_eq!(answer(&first), popular_answer, "not measured to win");
        let trusted = LiveModel::new("m".into(), first.model.clone()).answering_first_visits(true);
        assert_ne!(answer(&trusted), popular_answer);
    }
}
