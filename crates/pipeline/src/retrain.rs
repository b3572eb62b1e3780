//! The weekly loop, by itself: what the design's Monday-to-Friday did by hand.
//!
//! One run: settle the running A/B test if it has the evidence (promote the
//! winner or roll back), else check the trigger → export the increment → build
//! the dataset → train a candidate (full or warm start) → evaluate candidate and
//! active model on the same test set → start an A/B test when the candidate is
//! not worse (or promote it at once when nothing is active). While a test runs
//! no new candidate is trained: one question at a time.
//!
//! Every step is journaled in `job_runs` (the dashboard reads it); the run holds
//! the job's lease, so two loops never overlap. A failing step ends the run as
//! `failed` with its reason and leaves the registry as it was: the active model
//! keeps serving.

use manirec_models::evaluate::{self, EvalOptions, Protocol, RankedList};
use manirec_models::{ModelKind, ModelSpec};
use manirec_store::{Actor, Job, JobStart, JobStatus, Objects, Outcome, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dataset::{self, BuildOptions};
use crate::experiments::{self, Decision, ExperimentConfig};
use crate::training::{self, TrainRequest};
use crate::trigger::{self, Quality, TriggerConfig};
use crate::{Error, NoProgress, Result};

/// How the loop trains and decides (`[retrain]` in manirec.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrainConfig {
    /// The model kind of a candidate; default: the active model's kind (its
    /// hyper-parameters too), or EASE when nothing is active.
    pub model: Option<String>,
    /// Continue from the active model instead of training from scratch (ALS,
    /// two-tower; other kinds always train in full).
    pub warm_start: bool,
    /// Build a new major dataset version (a full rebuild) instead of appending.
    pub full_dataset: bool,
    /// The candidate may trail the active model's offline NDCG@10 by this
    /// fraction and still go to an A/B test (the test decides).
    pub tolerance: f64,
    /// Percent of shoppers the A/B test sends to the candidate.
    pub traffic: u8,
    /// Start an A/B test; without, a candidate that is not worse is promoted.
    pub ab_test: bool,
    /// A two-tower candidate embeds customers' accounts (see
    /// `training::add_account_features`).
    pub accounts: bool,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig {
            model: None,
            warm_start: false,
            full_dataset: false,
            tolerance: 0.02,
            traffic: 50,
            ab_test: true,
            accounts: false,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainRun {
    /// Its journal id (`job_runs`).
    pub run_id: i64,
    /// How it finished.
    pub status: JobStatus,
    /// In a sentence.
    pub outcome: String,
    /// The steps, as journaled.
    pub steps: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
    /// The candidate trained, if any.
    pub candidate: Option<String>,
    /// The experiment started or settled, if any.
    pub experiment_id: Option<i64>,
    /// The active version when the run ended.
    pub active: Option<String>,
}

/// Everything a run needs.
pub struct RetrainContext<'a> {
    /// The store.
    pub store: &'a Store,
    /// The object store.
    pub objects: &'a Objects,
    /// The trigger's thresholds.
    pub trigger: &'a TriggerConfig,
    /// Training and decision.
    pub retrain: &'a RetrainConfig,
    /// A/B evidence and attribution.
    pub experiments: &'a ExperimentConfig,
    /// Train even when the trigger says no.
    pub force: bool,
    /// Who started it (a scheduled start runs only when due).
    pub start: JobStart,
    /// The shop's user key (a two-tower candidate embeds customers' accounts).
    pub user_key: &'a crate::identity::UserKey,
}

/// Runs the loop once.
pub async fn run(ctx: &RetrainContext<'_>) -> Result<RetrainRun> {
    let store = ctx.store;
    let run_id = store.start_job_run(Job::Retrain, ctx.start)?;
    let mut journal = Journal {
        store,
        run_id,
        candidate: None,
        experiment_id: None,
    };
    let result = steps(ctx, &mut journal).await;
    let (status, outcome, error) = match result {
        Ok((status, outcome)) => (status, outcome, None),
        Err(e) => {
            let message = e.to_string();
            tracing::error!(run = run_id, error = %message, "retrain run failed; the active model keeps serving");
            (
                JobStatus::Failed,
                "failed; the active model keeps serving".to_owned(),
                Some(message),
            )
        }
    };
    store.finish_job_run(run_id, status, error.as_deref())?;
    let steps = store.job_run(run_id)?.map(|r| r.steps).unwrap_or_default();
    Ok(RetrainRun {
        run_id,
        status,
        outcome,
        steps,
        error,
        candidate: journal.candidate,
        experiment_id: journal.experiment_id,
        active: store.active_model_version()?.map(|v| v.version),
    })
}

struct Journal<'a> {
    store: &'a Store,
    run_id: i64,
    candidate: Option<String>,
    experiment_id: Option<i64>,
}

impl Journal<'_> {
    fn step(&self, name: &str, detail: serde_json::Value) -> Result<()> {
        tracing::info!(run = self.run_id, step = name, %detail, "retrain");
        Ok(self.store.add_job_step(self.run_id, name, &detail)?)
    }
}

async fn steps(ctx: &RetrainContext<'_>, journal: &mut Journal<'_>) -> Result<(JobStatus, String)> {
    let (store, objects) = (ctx.store, ctx.objects);

    if let Some(running) = store.running_experiment()? {
        let status = experiments::status(store, Some(running.id), ctx.experiments)?;
        journal.experiment_id = Some(running.id);
        journal.step(
            "experiment",
            serde_json::to_value(&status).map_err(json_error)?,
        )?;
        let outcome = match status.decision {
            Decision::Continue => {
                return Ok((
                    JobStatus::Skipped,
                    format!(
                        "experiment {} ({} vs {}) is still collecting evidence: {}",
                        running.id, running.control, running.treatment, status.reason
                    ),
                ))
            }
            Decision::Promote => Outcome::Promoted,
            Decision::RollBack => Outcome::RolledBack,
        };
        experiments::stop(store, Some(running.id), outcome)?;
        let verb = if outcome == Outcome::Promoted {
            format!("{} promoted", running.treatment)
        } else {
            format!(
                "{} rolled back, {} keeps serving",
                running.treatment, running.control
            )
        };
        journal.step(
            "experiment_stopped",
            json!({"experiment_id": running.id, "outcome": outcome.as_str(), "reason": status.reason}),
        )?;
        return Ok((
            JobStatus::Ok,
            format!("experiment {}: {verb} ({})", running.id, status.reason),
        ));
    }

    let quality: Option<Quality> = match training::quality(store, objects).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "no quality signal for the retrain trigger");
            None
        }
    };
    let check = trigger::check(store, ctx.trigger, quality)?;
    journal.step("trigger", serde_json::to_value(&check).map_err(json_error)?)?;
    if !check.should_retrain && !ctx.force {
        return Ok((
            JobStatus::Skipped,
            format!(
                "no retrain due ({} new interactions since the last training)",
                check.new_interactions
            ),
        ));
    }
    if !check.already_fired {
        let increment = trigger::fire(store, objects).await?;
        journal.step(
            "export",
            serde_json::to_value(&increment).map_err(json_error)?,
        )?;
    }

    let built = dataset::build(
        store,
        objects,
        BuildOptions {
            full: ctx.retrain.full_dataset,
            csv: false,
            include_public: false,
        },
        &NoProgress,
    )
    .await?;
    journal.step(
        "dataset",
        json!({"version": built.version, "created": built.created, "rows": built.rows,
               "train_rows": built.train_rows, "test_rows": built.test_rows}),
    )?;

    let active = store.active_model_version()?;
    if let Some(a) = active
        .as_ref()
        .filter(|a| a.dataset_version == built.version)
    {
        if !ctx.force {
            return Ok((
                JobStatus::Skipped,
                format!(
                    "nothing new to learn: {} was trained on {}, which is still the latest data",
                    a.version, built.version
                ),
            ));
        }
    }
    let spec = candidate_spec(ctx.retrain, active.as_ref())?;
    let warm_start = ctx.retrain.warm_start
        && matches!(spec.kind, ModelKind::Als | ModelKind::TwoTower)
        && active
            .as_ref()
            .is_some_and(|a| a.kind == spec.kind.as_str());
    let trained = training::train(
        store,
        objects,
        &TrainRequest {
            spec,
            dataset: Some(built.version.clone()),
            warm_start,
            tune: None,
            pretrain: None,
            accounts: ctx.retrain.accounts.then(|| ctx.user_key.clone()),
        },
    )
    .await?;
    journal.candidate = Some(trained.model_version.clone());
    // The trigger's question is answered, whichever way the comparison goes.
    trigger::mark_trained(store)?;
    journal.step(
        "train",
        json!({"model_version": trained.model_version, "model": trained.model,
               "dataset": trained.dataset, "train_seconds": trained.train_seconds,
               "warm_started_from": trained.warm_started_from,
               "ndcg@10": trained.metrics.get("ndcg@10")}),
    )?;

    let Some(active) = active else {
        store.promote_model_version(&trained.model_version)?;
        journal.step(
            "promote",
            json!({"model_version": trained.model_version, "reason": "no model was active"}),
        )?;
        return Ok((
            JobStatus::Ok,
            format!(
                "{} trained and promoted (no model was active)",
                trained.model_version
            ),
        ));
    };

    let scores = compare_offline(
        store,
        objects,
        &[&active.version, &trained.model_version],
        &built.version,
    )
    .await?;
    let (active_ndcg, candidate_ndcg) = (scores[0], scores[1]);
    let floor = active_ndcg * (1.0 - ctx.retrain.tolerance);
    let not_worse = candidate_ndcg >= floor;
    journal.step(
        "compare",
        json!({"dataset": built.version, "protocol": "warm", "metric": "ndcg@10",
               "active": {"model_version": active.version, "ndcg@10": active_ndcg},
               "candidate": {"model_version": trained.model_version, "ndcg@10": candidate_ndcg},
               "tolerance": ctx.retrain.tolerance, "not_worse": not_worse}),
    )?;
    if !not_worse {
        store.retire_model_version(&trained.model_version)?;
        return Ok((
            JobStatus::Ok,
            format!(
                "{} is worse offline (ndcg@10 {candidate_ndcg:.4} < {floor:.4}): retired, {} keeps serving",
                trained.model_version, active.version
            ),
        ));
    }
    if candidate_ndcg.to_bits() == active_ndcg.to_bits() {
        // Equal offline scores on the same users: most likely the same rankings
        // (the same data and parameters); an A/B test between them measures noise.
        store.retire_model_version(&trained.model_version)?;
        journal.step(
            "retire",
            json!({"model_version": trained.model_version,
                   "reason": "offline score equal to the active model's: nothing to test"}),
        )?;
        return Ok((
            JobStatus::Ok,
            format!(
                "{} scores exactly as {} offline (ndcg@10 {candidate_ndcg:.4}): retired, no A/B test between equals; {} keeps serving",
                trained.model_version, active.version, active.version
            ),
        ));
    }
    if !ctx.retrain.ab_test {
        store.promote_model_version(&trained.model_version)?;
        journal.step(
            "promote",
            json!({"model_version": trained.model_version, "reason": "not worse offline; A/B tests are off"}),
        )?;
        return Ok((JobStatus::Ok, format!("{} promoted", trained.model_version)));
    }
    let exp = experiments::start(
        store,
        &active.version,
        &trained.model_version,
        ctx.retrain.traffic,
        Actor::Retrain,
    )?;
    journal.experiment_id = Some(exp.id);
    journal.step(
        "experiment_started",
        json!({"experiment_id": exp.id, "control": exp.control, "treatment": exp.treatment,
               "traffic": exp.traffic}),
    )?;
    Ok((
        JobStatus::Ok,
        format!(
            "{} is not worse offline (ndcg@10 {candidate_ndcg:.4} vs {active_ndcg:.4}): A/B test {} started on {} % of shoppers",
            trained.model_version, exp.id, exp.traffic
        ),
    ))
}

/// The candidate's kind and hyper-parameters.
fn candidate_spec(
    config: &RetrainConfig,
    active: Option<&manirec_store::ModelVersion>,
) -> Result<ModelSpec> {
    let active_spec = active.and_then(|a| serde_json::from_str::<ModelSpec>(&a.params).ok());
    match &config.model {
        Some(kind) => {
            let kind: ModelKind = kind
                .parse()
                .map_err(|e: manirec_models::Error| Error::Data(format!("[retrain] model: {e}")))?;
            Ok(match active_spec {
                Some(spec) if spec.kind == kind => spec,
                _ => ModelSpec::new(kind),
            })
        }
        None => Ok(active_spec.unwrap_or_else(|| ModelSpec::new(ModelKind::Ease))),
    }
}

/// Warm-protocol NDCG@10 of each version on one dataset version's test part,
/// so a candidate and the active model are judged on the same users and the
/// same relevant items. The users, their histories and what counts as a hit
/// come from the dataset (its train part's catalogue); each model ranks with
/// what it knows, so an older model that never saw a newer item cannot hit it —
/// exactly what serving it would do.
pub async fn compare_offline(
    store: &Store,
    objects: &Objects,
    versions: &[&str],
    dataset: &str,
) -> Result<Vec<f64>> {
    let dv = training::dataset_version(store, Some(dataset))?;
    let rows = training::load_dataset(objects, &dv).await?;
    let base = training::baseline(&rows, &training::item_features(store)?)?;
    let catalogue = base.items();
    let cases = evaluate::cases(&rows.train, &rows.test, Protocol::Warm, catalogue);
    let options = EvalOptions {
        bootstrap: 0,
        seed: 0,
    };
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let model =
            training::load_model(objects, &training::model_version(store, Some(v))?).await?;
        let own = evaluate::cases(&rows.train, &rows.test, Protocol::Warm, model.items());
        let lists: Vec<RankedList> = evaluate::rank(&model, &own)
            .into_iter()
            .zip(&own)
            .map(|(list, case)| RankedList {
                user_id: case.user_id.clone(),
                context: None,
                items: list
                    .into_iter()
                    .map(|i| model.items().id(i).to_owned())
                    .collect(),
            })
            .collect();
        let scores = evaluate::score_ranked(&lists, &cases, catalogue, &options);
        out.push(scores.metrics.get("ndcg@10").copied().unwrap_or(0.0));
    }
    Ok(out)
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Data(e.to_string())
}
