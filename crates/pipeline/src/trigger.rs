//! The retrain trigger (DESIGN §3): enough new interactions since the last
//! training, or too long since it, or the live model's quality dropped. When it
//! fires, the increment is exported with a metadata sidecar, once per training
//! cycle (a trigger that keeps firing every hour would flood the notifier).

use manirec_store::{now_ms, Objects, Store};
use serde::{Deserialize, Serialize};

use crate::export::{
    commit_export, prepare_export, publish_export, ExportOptions, ExportSummary, Format,
    PreparedExport,
};
use crate::{NoProgress, Result};

/// State key: when the serving model was last renewed (Unix ms): a promotion,
/// or the loop's training in answer to the trigger (whether its candidate wins
/// or not). A candidate trained by hand and never promoted does not move it.
pub const LAST_TRAINING_AT: &str = "training.last_at";
/// State key: when the trigger last fired (Unix ms).
const LAST_FIRED_AT: &str = "trigger.last_fired_at";

/// Thresholds (configuration `[trigger]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    /// New interactions since the last training that call for a new model.
    pub min_new_interactions: u64,
    /// Days after which a model is retrained anyway.
    pub max_days: f64,
    /// Relative quality drop of the live model that calls for a new one.
    pub max_quality_drop: f64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            min_new_interactions: 10_000,
            max_days: 7.0,
            max_quality_drop: 0.10,
        }
    }
}

/// The live model's quality now and when it was deployed (same metric).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quality {
    /// At promotion.
    pub at_deployment: f64,
    /// On the most recent real interactions.
    pub recent: f64,
}

/// The trigger's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerCheck {
    /// Whether a new model is due.
    pub should_retrain: bool,
    /// Why (empty when not).
    pub reasons: Vec<String>,
    /// Interactions written since the last training (all, if never trained).
    pub new_interactions: u64,
    /// Days since the last training (`null` if never trained).
    pub days_since_last: Option<f64>,
    /// Relative quality drop, when a quality signal is available.
    pub quality_drop: Option<f64>,
    /// Whether the trigger already fired in this training cycle.
    pub already_fired: bool,
}

/// Evaluates the trigger. `quality` comes from the models (absent until a model
/// is live).
pub fn check(
    store: &Store,
    config: &TriggerConfig,
    quality: Option<Quality>,
) -> Result<TriggerCheck> {
    let last_training = state_ms(store, LAST_TRAINING_AT)?;
    let last_fired = state_ms(store, LAST_FIRED_AT)?;
    let new_interactions = store.count_interactions_since(last_training)?;
    let days_since_last = last_training.map(|t| (now_ms() - t) as f64 / 86_400_000.0);
    let quality_drop = quality
        .filter(|q| q.at_deployment > 0.0)
        .map(|q| (q.at_deployment - q.recent) / q.at_deployment);
    let mut reasons = Vec::new();
    if new_interactions >= config.min_new_interactions {
        reasons.push(format!(
            "{new_interactions} new interactions since the last training (threshold {})",
            config.min_new_interactions
        ));
    }
    match days_since_last {
        Some(days) if days >= config.max_days => reasons.push(format!(
            "{days:.1} days since the last training (threshold {})",
            config.max_days
        )),
        None if new_interactions > 0 => reasons.push("no model has been trained yet".into()),
        _ => {}
    }
    if let Some(drop) = quality_drop.filter(|d| *d > config.max_quality_drop) {
        reasons.push(format!(
            "live model quality dropped {:.1} % (threshold {:.1} %)",
            drop * 100.0,
            config.max_quality_drop * 100.0
        ));
    }
    Ok(TriggerCheck {
        should_retrain: !reasons.is_empty(),
        reasons,
        new_interactions,
        days_since_last,
        quality_drop,
        already_fired: matches!((last_fired, last_training), (Some(f), Some(t)) if f > t)
            || (last_fired.is_some() && last_training.is_none()),
    })
}

/// An increment computed on the store's thread, to be written without it.
pub type PendingIncrement = PreparedExport;

/// The interactions written since the last export, as
/// `training-data/incremental-<ms>.csv` and its `.meta.json` sidecar: the same
/// export as `manirec export --incremental`.
pub fn increment(store: &Store) -> Result<PendingIncrement> {
    prepare_export(
        store,
        ExportOptions {
            incremental: true,
            format: Format::Csv,
        },
        &NoProgress,
    )
}

/// Writes an increment to the object store.
pub async fn publish(objects: &Objects, pending: &PendingIncrement) -> Result<ExportSummary> {
    publish_export(objects, pending).await?;
    Ok(pending.summary.clone())
}

/// Moves the export watermark past a published increment and remembers that the
/// trigger fired in this training cycle.
pub fn mark_fired(store: &Store, pending: &PendingIncrement) -> Result<()> {
    commit_export(store, pending)?;
    Ok(store.state_set(LAST_FIRED_AT, &now_ms().to_string())?)
}

/// [`increment`], [`publish`] and [`mark_fired`] in one go, for single-threaded callers.
pub async fn fire(store: &Store, objects: &Objects) -> Result<ExportSummary> {
    let pending = increment(store)?;
    let published = publish(objects, &pending).await?;
    mark_fired(store, &pending)?;
    Ok(published)
}

/// Restarts the trigger's clock and its count of new interactions: called when
/// a model is promoted and when the loop has trained its candidate.
pub fn mark_trained(store: &Store) -> Result<()> {
    Ok(store.state_set(LAST_TRAINING_AT, &now_ms().to_string())?)
}

fn state_ms(store: &Store, key: &str) -> Result<Option<i64>> {
    Ok(store.state_get(key)?.and_then(|v| v.parse().ok()))
}
