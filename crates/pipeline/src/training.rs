//! Training, evaluation and the model registry's files.
//!
//! A model is trained on a dataset version's files exactly as they were
//! published: `train.parquet` and `test.parquet` are read back from the object
//! store (and checked against the manifest's SHA-256), never rebuilt. Items get
//! their category from the shop mirror. Every training is evaluated on the
//! contract's `warm` protocol beside popularity trained on the same rows; the
//! artifact (`models/<version>/model.safetensors`) and a metadata sidecar
//! (`models/<version>/meta.json`) go to the object store, and the version is
//! registered as a candidate. A candidate does not move the retrain trigger's
//! clock: only a promotion (or the loop's own answer to the trigger) does, so a
//! model trained by hand and never promoted leaves the trigger counting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use bytes::Bytes;
use manirec_models::evaluate::{self, ColdStart, EvalOptions, Protocol, RankedList, Report};
use manirec_models::tune::{self, TuneOptions};
use manirec_models::{Features, Interaction, Model, ModelKind, ModelSpec};
use manirec_store::{
    now_ms, DatasetStatus, DatasetVersion, ItemAttributes, ModelStatus, ModelVersion, Objects,
    ScanFilter, Store,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::dataset::Manifest;
use crate::export::sha256_hex;
use crate::identity::UserKey;
use crate::trigger::{mark_trained, Quality};
use crate::{Error, Result};

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Kind and hyper-parameters.
    pub spec: ModelSpec,
    /// The dataset version; `None`: the latest ready one.
    pub dataset: Option<String>,
    /// Start from the active model of the same kind (ALS and two-tower).
    pub warm_start: bool,
    /// Search hyper-parameters first (on a validation split cut from train).
    pub tune: Option<TuneOptions>,
    /// Pre-train on the store's public interactions first (two-tower only).
    pub pretrain: Option<Pretrain>,
    /// Embed customers' accounts (two-tower; see [`add_account_features`]): the
    /// shop's user key, which finds each account's customer id. The training then
    /// reports the `first_visit` protocol, which decides whether serving trusts
    /// them. `None` (the default): items' features only.
    pub accounts: Option<UserKey>,
}

/// Pre-training a two-tower model on the store's public interactions (`import
/// --source public`, never part of the shop's datasets), then fine-tuning it on
/// the shop's dataset. Only the embeddings of features both data sets name
/// alike carry over (ids of another data set mean nothing in the shop), so the
/// public items need features: a sister shop's designers and categories, say.
#[derive(Debug, Clone, Default)]
pub struct Pretrain {
    /// The public items' features (see [`crate::import::features_csv`]).
    pub features: Features,
}

/// What pre-training did, and what it changed against the same training on
/// the shop's data alone.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainSummary {
    /// Where the pre-training rows came from (`public`).
    pub source: &'static str,
    /// Public interactions pre-trained on.
    pub rows: usize,
    /// Their distinct users and items.
    pub users: usize,
    /// Their distinct items.
    pub items: usize,
    /// Features of the shop's items the pre-trained model had learnt: the only
    /// embeddings that carry over.
    pub features_shared: usize,
    /// Wall time of the pre-training, seconds.
    pub pretrain_seconds: f64,
    /// The same spec trained on the shop's data alone, evaluated on the same
    /// users (warm protocol): what pre-training is measured against.
    pub shop_alone: BTreeMap<String, f64>,
    /// 95 % interval of the NDCG@10 difference, fine-tuned minus shop alone
    /// (paired resamples).
    pub ndcg10_gain_ci: [f64; 2],
    /// Whether that interval lies above zero.
    pub helped: bool,
}

/// What `train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// The new (candidate) version.
    pub model_version: String,
    /// `popular`, `als`, `ease`.
    pub model: String,
    /// The dataset version.
    pub dataset: String,
    /// Wall time of the training alone (not loading nor evaluating), seconds.
    pub train_seconds: f64,
    /// Warm-protocol metrics on the dataset's test part.
    pub metrics: BTreeMap<String, f64>,
    /// Their 95 % bootstrap intervals.
    pub metrics_ci: BTreeMap<String, [f64; 2]>,
    /// Popularity's metrics on the same users.
    pub baseline: BTreeMap<String, f64>,
    /// Users evaluated.
    pub users_evaluated: usize,
    /// Whether the model beats popularity (NDCG@10 lift interval above 0).
    pub beats_baseline: bool,
    /// 95 % interval of the warm NDCG@10 lift over popularity (paired resamples).
    pub ndcg10_lift_ci: [f64; 2],
    /// Said loudly when it does not.
    pub warning: Option<String>,
    /// The hyper-parameters used.
    pub params: ModelSpec,
    /// The version it was warm-started from.
    pub warm_started_from: Option<String>,
    /// Pre-training, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<PretrainSummary>,
    /// The search, when `--tune`.
    pub tune: Option<serde_json::Value>,
    /// Two-tower only: new items (in test, not in train) against per-category popularity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStart>,
    /// The same evaluation under the session protocol (new visitors scored from
    /// the first half of their session): what serving reads to pick the model
    /// that answers anonymous sessions.
    pub session: ProtocolScores,
    /// Two-tower with account features only: the `first_visit` protocol (new
    /// customers scored from their account alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_visit: Option<ProtocolScores>,
    /// Object key of the artifact.
    pub artifact: String,
    /// SHA-256 of the artifact.
    pub sha256: String,
}

/// A model's evaluation at training under a protocol other than `warm`.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolScores {
    /// Users evaluated.
    pub users_evaluated: usize,
    /// The model's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Their 95 % bootstrap intervals.
    pub metrics_ci: BTreeMap<String, [f64; 2]>,
    /// Popularity's metrics on the same users.
    pub baseline: BTreeMap<String, f64>,
    /// 95 % interval of the NDCG@10 lift over popularity (paired resamples).
    pub ndcg10_lift_ci: [f64; 2],
    /// Whether that interval lies above zero.
    pub beats_baseline: bool,
}

impl From<Report> for ProtocolScores {
    fn from(r: Report) -> Self {
        ProtocolScores {
            users_evaluated: r.users_evaluated,
            metrics: r.metrics,
            metrics_ci: r.metrics_ci,
            baseline: r.baseline,
            ndcg10_lift_ci: r.ndcg10_lift_ci,
            beats_baseline: r.beats_baseline,
        }
    }
}

/// What `evaluate` did.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateSummary {
    /// The version evaluated.
    pub model_version: String,
    /// Its kind.
    pub model: String,
    /// The dataset version it was trained on (and is evaluated on).
    pub dataset: String,
    /// Protocol, users, metrics with intervals, popularity beside them, the verdict.
    #[serde(flatten)]
    pub report: manirec_models::evaluate::Report,
    /// Two-tower only: new items (in test, not in train) against per-category popularity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStart>,
}

/// One line of `models list`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `m1`, …
    pub version: String,
    /// Kind.
    pub model: String,
    /// Dataset version.
    pub dataset: String,
    /// Where it is in its life.
    pub status: ModelStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub promoted_at: Option<String>,
    /// Warm metrics at training.
    pub metrics: BTreeMap<String, f64>,
    /// Popularity's, same users.
    pub baseline: BTreeMap<String, f64>,
    /// Hyper-parameters.
    pub params: serde_json::Value,
    /// Object key of the artifact.
    pub artifact: Option<String>,
    /// SHA-256 of the artifact.
    pub sha256: Option<String>,
}

/// `models list`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Oldest first.
    pub models: Vec<ModelInfo>,
}

/// `models promote`.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    /// The version now active.
    pub model_version: String,
    /// The version it replaced (now retired).
    pub retired: Option<String>,
    /// The registry after the change.
    pub models: Vec<ModelInfo>,
}

/// A dataset version's rows, read back from its Parquet files.
#[derive(Debug, Clone)]
pub struct DatasetRows {
    /// The version.
    pub version: String,
    /// Train part, time order.
    pub train: Vec<Interaction>,
    /// Test part, time order.
    pub test: Vec<Interaction>,
}

fn data(message: impl std::fmt::Display) -> Error {
    Error::Data(message.to_string())
}

fn model_error(e: manirec_models::Error) -> Error {
    Error::Data(e.to_string())
}

/// The dataset version `version`, or the latest ready one.
pub fn dataset_version(store: &Store, version: Option<&str>) -> Result<DatasetVersion> {
    let v = match version {
        Some(v) => store.dataset_version(v)?.ok_or_else(|| {
            data(format!(
                "no dataset version {v} (see `manirec dataset list`)"
            ))
        })?,
        None => store
            .latest_ready_dataset_version()?
            .ok_or_else(|| data("no dataset version yet: run `manirec dataset build` first"))?,
    };
    if v.status != DatasetStatus::Ready {
        return Err(data(format!(
            "dataset version {} is not ready (status {})",
            v.version, v.status
        )));
    }
    Ok(v)
}

/// Reads a dataset version's train and test rows from its Parquet files,
/// checking each file's SHA-256 against the manifest.
pub async fn load_dataset(objects: &Objects, version: &DatasetVersion) -> Result<DatasetRows> {
    let manifest: Manifest = serde_json::from_str(
        version
            .manifest
            .as_deref()
            .ok_or_else(|| data(format!("dataset {} has no manifest", version.version)))?,
    )
    .map_err(|e| data(format!("dataset {} manifest: {e}", version.version)))?;
    let mut parts: HashMap<&str, Vec<Interaction>> = HashMap::new();
    for part in ["train", "test"] {
        let file = manifest
            .files
            .iter()
            .find(|f| f.part == part && f.format == "parquet")
            .ok_or_else(|| {
                data(format!(
                    "dataset {} has no {part} Parquet file",
                    version.version
                ))
            })?;
        let bytes = objects.get(&file.key).await?;
        let sha = sha256_hex(&bytes);
        if sha != file.sha256 {
            return Err(data(format!(
                "{}: SHA-256 {sha} does not match the manifest's {}",
                file.key, file.sha256
            )));
        }
        let rows = read_parquet(bytes).map_err(|e| data(format!("{}: {e}", file.key)))?;
        if rows.len() as u64 != file.rows {
            return Err(data(format!(
                "{}: {} rows, the manifest says {}",
                file.key,
                rows.len(),
                file.rows
            )));
        }
        parts.insert(part, rows);
    }
    Ok(DatasetRows {
        version: version.version.clone(),
        train: parts.remove("train").unwrap_or_default(),
        test: parts.remove("test").unwrap_or_default(),
    })
}

fn strings(col: &ArrayRef) -> std::result::Result<Vec<String>, String> {
    if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
        return Ok(s.iter().map(|v| v.unwrap_or_default().to_owned()).collect());
    }
    if let Some(d) = col.as_any_dictionary_opt() {
        let values = d
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("dictionary values are not strings")?;
        return Ok(d
            .normalized_keys()
            .into_iter()
            .map(|k| values.value(k).to_owned())
            .collect());
    }
    Err(format!("unexpected string column type {}", col.data_type()))
}

fn column<'a, T: 'static>(
    batch: &'a arrow_array::RecordBatch,
    name: &str,
) -> std::result::Result<&'a T, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name}"))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| format!("column {name} has an unexpected type"))
}

/// Parquet bytes (the dataset files' schema) as engine rows.
pub fn read_parquet(bytes: Bytes) -> std::result::Result<Vec<Interaction>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let named = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| format!("no column {n}"))
        };
        let users = strings(&named("user_id")?)?;
        let items = strings(&named("item_id")?)?;
        let kinds = strings(&named("interaction_type")?)?;
        let ratings = column::<Float64Array>(&batch, "rating")?;
        let times = column::<Int64Array>(&batch, "timestamp")?;
        let synthetic = column::<BooleanArray>(&batch, "synthetic")?;
        for (i, ((user_id, item_id), interaction_type)) in
            users.into_iter().zip(items).zip(kinds).enumerate()
        {
            out.push(Interaction {
                user_id,
                item_id,
                weight: ratings.value(i) as f32,
                timestamp: times.value(i),
                interaction_type,
                synthetic: synthetic.is_valid(i) && synthetic.value(i),
            });
        }
    }
    Ok(out)
}

/// The items' features from the shop mirror: `category`, `base` (base product),
/// `designer`, `price_band` (0: under 10, 1: under 20, 2: under 40, 3: under 80,
/// 4: 80 and more, in the shop's currency) and `kind` (base or end product).
/// Popularity uses the category; the two-tower model embeds them all.
pub fn item_features(store: &Store) -> Result<Features> {
    let mut f = Features::new();
    for a in store.item_attributes()? {
        add_item_features(&mut f, &a);
    }
    Ok(f)
}

/// The account fields a customer's features come from (matched without regard
/// to case; an account's other columns, names and addresses among them, never
/// reach a model).
pub const ACCOUNT_FIELDS: &[&str] = &[
    "country",
    "country_code",
    "province",
    "province_code",
    "state",
    "region",
    "city",
    "language",
    "locale",
    "currency",
    "gender",
    "age",
    "age_group",
    "occupation",
    "customer_group",
    "tier",
    "role",
];

/// Adds each account's features to `f`, under the customer id its email gives
/// (`key`, as orders and the storefront compute it): the [`ACCOUNT_FIELDS`] of
/// the account's columns as labels, strings lower-cased (up to 32 characters:
/// longer ones are free text, not a group), numbers and booleans as written;
/// `age` by decade (34, or "34", is `age=30`; an age that is no number is left
/// out, a birth date names too few people).
pub fn add_account_features(f: &mut Features, store: &Store, key: &UserKey) -> Result<()> {
    for account in store.accounts()? {
        let Some(email) = account.email.as_deref().filter(|e| !e.trim().is_empty()) else {
            continue;
        };
        let Some(attributes) = account.attributes.as_deref().and_then(|a| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a).ok()
        }) else {
            continue;
        };
        let user = key.user_id_for_email(email);
        for (field, value) in &attributes {
            let field = field.trim().to_lowercase();
            if !ACCOUNT_FIELDS.contains(&field.as_str()) {
                continue;
            }
            if let Some(value) = account_feature_value(&field, value) {
                f.insert_user(&user, &field, &value);
            }
        }
    }
    Ok(())
}

fn account_feature_value(field: &str, v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    if field == "age" {
        let age = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|a| (0.0..150.0).contains(a))?;
        return Some(((age / 10.0).floor() as u32 * 10).to_string());
    }
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty() && s.chars().count() <= 32).then(|| s.to_lowercase())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One item's features, by [`item_features`]' rules: serving embeds a design
/// added after training from the same names the model learnt.
pub(crate) fn add_item_features(f: &mut Features, a: &ItemAttributes) {
    let id = &a.item_id;
    f.insert(id, "kind", a.kind);
    if let Some(c) = &a.category_id {
        f.insert(id, "category", c);
    }
    if let Some(b) = &a.base_product_id {
        f.insert(id, "base", b);
    }
    if let Some(d) = &a.designer_id {
        f.insert(id, "designer", d);
    }
    if let Some(p) = a.price.filter(|p| p.is_finite()) {
        let band = [10.0, 20.0, 40.0, 80.0].iter().filter(|&&t| p >= t).count();
        f.insert(id, "price_band", &band.to_string());
    }
}

/// Object key of a version's artifact.
pub fn artifact_key(version: &str) -> String {
    format!("models/{version}/model.safetensors")
}

/// Loads a registered version's artifact, checking its SHA-256.
pub async fn load_model(objects: &Objects, v: &ModelVersion) -> Result<Model> {
    let key = v
        .artifact_key
        .as_deref()
        .ok_or_else(|| data(format!("model {} has no artifact yet", v.version)))?;
    let bytes = objects.get(key).await?;
    if let Some(expected) = &v.sha256 {
        let sha = sha256_hex(&bytes);
        if &sha != expected {
            return Err(data(format!(
                "{key}: SHA-256 {sha} does not match the registry's {expected}"
            )));
        }
    }
    Model::from_bytes(&bytes).map_err(model_error)
}

/// Popularity trained on a dataset's train part: every evaluation's baseline.
pub fn baseline(rows: &DatasetRows, features: &Features) -> Result<Model> {
    manirec_models::train(
        &rows.train,
        &ModelSpec::new(ModelKind::Popular),
        Some(features),
    )
    .map_err(model_error)
}

/// The report as the registry stores it.
fn report_json(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "protocol": report.protocol,
        "users_evaluated": report.users_evaluated,
        "metrics": report.metrics,
        "metrics_ci": report.metrics_ci,
        "baseline": report.baseline,
        "baseline_ci": report.baseline_ci,
        "ndcg10_lift_ci": report.ndcg10_lift_ci,
        "beats_baseline": report.beats_baseline,
    })
}

/// Trains, evaluates (warm and session, beside popularity), writes the artifact and
/// registers a candidate.
pub async fn train(store: &Store, objects: &Objects, req: &TrainRequest) -> Result<TrainSummary> {
    let dv = dataset_version(store, req.dataset.as_deref())?;
    let rows = load_dataset(objects, &dv).await?;
    if rows.train.is_empty() {
        return Err(data(format!("dataset {} has no train rows", dv.version)));
    }
    let mut features = item_features(store)?;
    match (&req.accounts, req.spec.kind) {
        (Some(key), ModelKind::TwoTower) => add_account_features(&mut features, store, key)?,
        (Some(_), kind) => tracing::warn!(
            model = %kind,
            "customers' accounts are embedded by two-tower models only: {kind} trains without them"
        ),
        (None, _) => {}
    }
    let mut spec = req.spec;
    if req.pretrain.is_some() {
        if spec.kind != ModelKind::TwoTower {
            return Err(data(format!(
                "--pretrain is for two-tower only, not {}: only its feature \
                 embeddings can carry over from another data set",
                spec.kind
            )));
        }
        if req.warm_start {
            return Err(data(
                "--pretrain and --warm-start both choose where training starts: pick one",
            ));
        }
    }
    let tuned = match &req.tune {
        Some(opts) => {
            let report =
                tune::tune(&rows.train, &spec, Some(&features), opts).map_err(model_error)?;
            spec = report.best;
            Some(serde_json::json!({
                "best_ndcg10": report.best_ndcg10,
                "validation_users": report.validation_users,
                "protocol": report.protocol,
                "trials": report.trials.len(),
            }))
        }
        None => None,
    };
    let previous = if req.warm_start {
        if !matches!(spec.kind, ModelKind::Als | ModelKind::TwoTower) {
            return Err(data(format!(
                "--warm-start is for ALS and two-tower only, not {}",
                spec.kind
            )));
        }
        let active = store
            .active_model_version()?
            .filter(|v| v.kind == spec.kind.as_str())
            .ok_or_else(|| {
                data(format!(
                    "--warm-start needs an active {} model (see `manirec models promote`)",
                    if spec.kind == ModelKind::Als {
                        "ALS"
                    } else {
                        "two-tower"
                    }
                ))
            })?;
        let prev = load_model(objects, &active).await?;
        // A warm start continues the previous embeddings: their size is not a choice.
        if let Some(t) = prev.two_tower() {
            spec.two_tower.dim = t.dim();
        }
        if let Some(a) = prev.als() {
            spec.als.factors = a.factors();
        }
        Some((active.version.clone(), prev))
    } else {
        None
    };
    let start = match (previous, &req.pretrain) {
        (Some((version, model)), _) => Start::WarmFrom(version, Box::new(model)),
        (None, Some(p)) => pretrain(store, &spec, p, &features, &rows.train)?,
        (None, None) => Start::Fresh,
    };
    let params = serde_json::to_string(&spec).map_err(data)?;
    crate::sweep_orphans(store)?;
    let version = store.reserve_model_version(spec.kind.as_str(), &dv.version, &params)?;
    let result = train_reserved(store, objects, &version, &spec, &rows, &features, start).await;
    match result {
        Ok(mut summary) => {
            summary.tune = tuned;
            Ok(summary)
        }
        Err(e) => {
            let _ = store.abandon_model_version(&version);
            Err(e)
        }
    }
}

/// Where a training starts.
enum Start {
    /// From random embeddings.
    Fresh,
    /// From the active version (its registry name) of the same kind.
    WarmFrom(String, Box<Model>),
    /// From a model pre-trained on other data.
    Pretrained(Box<(Model, PretrainSummary)>),
}

/// Pre-trains `spec` (two-tower) on the store's public interactions with
/// their items' `pretrain.features`; `shop` are the shop items' features and
/// `train` the rows fine-tuning will read: the features of their items are
/// the ones that can carry over.
fn pretrain(
    store: &Store,
    spec: &ModelSpec,
    pretrain: &Pretrain,
    shop: &Features,
    train: &[Interaction],
) -> Result<Start> {
    let mut rows = Vec::new();
    store.scan_training_rows(
        ScanFilter {
            include_public: true,
            ..ScanFilter::default()
        },
        |r| {
            if r.source == "public" {
                rows.push(Interaction {
                    user_id: r.user_id.to_owned(),
                    item_id: r.item_id.to_owned(),
                    weight: r.rating as f32,
                    timestamp: r.timestamp,
                    interaction_type: r.interaction_type.to_owned(),
                    synthetic: r.synthetic,
                });
            }
        },
    )?;
    if rows.is_empty() {
        return Err(data(
            "no public interactions to pre-train on: import some with \
             `manirec import --interactions FILE --source public`",
        ));
    }
    let started = Instant::now();
    let model =
        manirec_models::train(&rows, spec, Some(&pretrain.features)).map_err(model_error)?;
    let pretrain_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let tt = model
        .two_tower()
        .expect("a two-tower spec trains a two-tower model");
    let trained_items: HashSet<&str> = train.iter().map(|r| r.item_id.as_str()).collect();
    let shared: HashSet<&str> = trained_items
        .into_iter()
        .flat_map(|i| shop.get(i))
        .map(String::as_str)
        .filter(|f| tt.knows_feature(f))
        .collect();
    let users: HashSet<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    let summary = PretrainSummary {
        source: "public",
        rows: rows.len(),
        users: users.len(),
        items: model.items().len(),
        features_shared: shared.len(),
        pretrain_seconds,
        shop_alone: BTreeMap::new(),
        ndcg10_gain_ci: [0.0, 0.0],
        helped: false,
    };
    Ok(Start::Pretrained(Box::new((model, summary))))
}

async fn train_reserved(
    store: &Store,
    objects: &Objects,
    version: &str,
    spec: &ModelSpec,
    rows: &DatasetRows,
    features: &Features,
    start: Start,
) -> Result<TrainSummary> {
    let started = Instant::now();
    let model = match &start {
        Start::WarmFrom(_, prev) => Model::warm_start(prev, &rows.train, spec, Some(features)),
        Start::Pretrained(pre) => Model::fine_tune(&pre.0, &rows.train, spec, Some(features)),
        Start::Fresh => manirec_models::train(&rows.train, spec, Some(features)),
    }
    .map_err(model_error)?;
    let train_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let (warm_started_from, pretrained) = match start {
        Start::WarmFrom(version, _) => (Some(version), None),
        Start::Pretrained(pre) => (None, Some(pre.1)),
        Start::Fresh => (None, None),
    };
    // Pre-training is measured against the same training on the shop alone.
    let pretrained = match pretrained {
        Some(mut summary) => {
            let alone =
                manirec_models::train(&rows.train, spec, Some(features)).map_err(model_error)?;
            let (versus, _) = evaluate::evaluate(
                &model,
                &alone,
                &rows.train,
                &rows.test,
                Protocol::Warm,
                &EvalOptions::default(),
            )
            .map_err(model_error)?;
            summary.shop_alone = versus.baseline;
            summary.ndcg10_gain_ci = versus.ndcg10_lift_ci;
            summary.helped = versus.beats_baseline;
            Some(summary)
        }
        None => None,
    };
    let base = baseline(rows, features)?;
    let (report, _) = evaluate::evaluate(
        &model,
        &base,
        &rows.train,
        &rows.test,
        Protocol::Warm,
        &EvalOptions::default(),
    )
    .map_err(model_error)?;
    let (session, _) = evaluate::evaluate(
        &model,
        &base,
        &rows.train,
        &rows.test,
        Protocol::Session,
        &EvalOptions::default(),
    )
    .map_err(model_error)?;
    let first_visit = match model.two_tower() {
        Some(tt) if tt.accounts() > 0 => Some(
            evaluate::evaluate(
                &model,
                &base,
                &rows.train,
                &rows.test,
                Protocol::FirstVisit,
                &EvalOptions::default(),
            )
            .map_err(model_error)?
            .0,
        ),
        _ => None,
    };
    let cold_start = evaluate::cold_start(&model, &rows.train, &rows.test, features);
    let bytes = model.to_bytes().map_err(model_error)?;
    let sha = sha256_hex(&bytes);
    let key = artifact_key(version);
    let params = serde_json::to_string(spec).map_err(data)?;
    let mut metrics = report_json(&report);
    // The registry's report is the warm one (the contract's), with the session
    // protocol's beside it under "session".
    metrics["session"] = report_json(&session);
    if let Some(r) = &first_visit {
        metrics["first_visit"] = report_json(r);
    }
    let meta = serde_json::json!({
        "model_version": version,
        "model": spec.kind.as_str(),
        "dataset": rows.version,
        "params": spec,
        "warm_started_from": warm_started_from,
        "pretrained": pretrained,
        "train_seconds": train_seconds,
        "evaluation": metrics,
        "cold_start": cold_start,
        "artifact": {"key": key, "format": "safetensors", "bytes": bytes.len(), "sha256": sha},
        "created_at": now_ms(),
    });
    objects.put(&key, Bytes::from(bytes)).await?;
    objects
        .put(
            &format!("models/{version}/meta.json"),
            Bytes::from(serde_json::to_vec_pretty(&meta).map_err(data)?),
        )
        .await?;
    store.register_model_candidate(version, &params, &metrics.to_string(), &key, &sha)?;
    Ok(TrainSummary {
        model_version: version.to_owned(),
        model: spec.kind.as_str().to_owned(),
        dataset: rows.version.clone(),
        train_seconds,
        metrics: report.metrics,
        metrics_ci: report.metrics_ci,
        baseline: report.baseline,
        users_evaluated: report.users_evaluated,
        beats_baseline: report.beats_baseline,
        ndcg10_lift_ci: report.ndcg10_lift_ci,
        warning: report.warning,
        params: *spec,
        warm_started_from,
        pretrain: pretrained,
        tune: None,
        cold_start,
        session: ProtocolScores::from(session),
        first_visit: first_visit.map(ProtocolScores::from),
        artifact: key,
        sha256: sha,
    })
}

/// The version `version`, or the active one, or the latest trained one.
pub fn model_version(store: &Store, version: Option<&str>) -> Result<ModelVersion> {
    let v = match version {
        Some(v) => store
            .model_version(v)?
            .ok_or_else(|| data(format!("no model version {v} (see `manirec models list`)")))?,
        None => match store.active_model_version()? {
            Some(v) => v,
            None => store.latest_model_version()?.ok_or_else(|| {
                data("no model trained yet: run `manirec train --model ease` first")
            })?,
        },
    };
    if v.status == ModelStatus::Training {
        return Err(data(format!(
            "model version {} has not finished training",
            v.version
        )));
    }
    Ok(v)
}

/// Evaluates a registered version on its dataset's test part under `protocol`,
/// beside popularity trained on the same train part. Returns the summary and
/// the ranked lists (for `--dump`).
pub async fn evaluate_version(
    store: &Store,
    objects: &Objects,
    version: Option<&str>,
    protocol: Protocol,
) -> Result<(EvaluateSummary, Vec<RankedList>)> {
    let v = model_version(store, version)?;
    let model = load_model(objects, &v).await?;
    let dv = dataset_version(store, Some(&v.dataset_version))?;
    let rows = load_dataset(objects, &dv).await?;
    let features = item_features(store)?;
    let base = baseline(&rows, &features)?;
    let (report, lists) = evaluate::evaluate(
        &model,
        &base,
        &rows.train,
        &rows.test,
        protocol,
        &EvalOptions::default(),
    )
    .map_err(model_error)?;
    let cold_start = evaluate::cold_start(&model, &rows.train, &rows.test, &features);
    Ok((
        EvaluateSummary {
            model_version: v.version,
            model: v.kind,
            dataset: v.dataset_version,
            report,
            cold_start,
        },
        lists,
    ))
}

fn info(v: ModelVersion) -> ModelInfo {
    let metrics: serde_json::Value = v
        .metrics
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let map = |key: &str| -> BTreeMap<String, f64> {
        serde_json::from_value(metrics[key].clone()).unwrap_or_default()
    };
    ModelInfo {
        metrics: map("metrics"),
        baseline: map("baseline"),
        params: serde_json::from_str(&v.params).unwrap_or_default(),
        created_at: crate::time::rfc3339_ms(v.created_at),
        promoted_at: v.promoted_at.map(crate::time::rfc3339_ms),
        version: v.version,
        model: v.kind,
        dataset: v.dataset_version,
        status: v.status,
        artifact: v.artifact_key,
        sha256: v.sha256,
    }
}

/// Every model version, oldest first.
pub fn list(store: &Store) -> Result<ModelList> {
    Ok(ModelList {
        models: store.model_versions()?.into_iter().map(info).collect(),
    })
}

/// Makes `version` active, retiring the previous active version.
pub fn promote(store: &Store, version: &str) -> Result<Promotion> {
    let retired = store.promote_model_version(version)?;
    mark_trained(store)?;
    Ok(Promotion {
        model_version: version.to_owned(),
        retired,
        models: list(store)?.models,
    })
}

/// What the quality-drop signal reads from the store: the active version, its
/// warm NDCG@10 at training, and the latest ready dataset version.
#[derive(Debug, Clone)]
pub struct QualityInputs {
    /// The active model version.
    pub active: ModelVersion,
    /// Its warm NDCG@10 recorded at training.
    pub at_deployment: f64,
    /// The latest ready dataset version (the most recent real interactions).
    pub latest: DatasetVersion,
}

/// The store's part of [`quality`] (`None` while no model is active or no
/// dataset exists).
pub fn quality_inputs(store: &Store) -> Result<Option<QualityInputs>> {
    let Some(active) = store.active_model_version()? else {
        return Ok(None);
    };
    let at_deployment = active
        .metrics
        .as_deref()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|m| m["metrics"]["ndcg@10"].as_f64());
    let (Some(at_deployment), Some(latest)) =
        (at_deployment, store.latest_ready_dataset_version()?)
    else {
        return Ok(None);
    };
    Ok(Some(QualityInputs {
        active,
        at_deployment,
        latest,
    }))
}

/// The object store's and the engine's part of [`quality`]: the active model's
/// warm NDCG@10 on the latest dataset's test part, scored on the model's own
/// catalogue (`None` when no user can be scored).
pub async fn quality_of(objects: &Objects, inputs: &QualityInputs) -> Result<Option<Quality>> {
    let model = load_model(objects, &inputs.active).await?;
    let rows = load_dataset(objects, &inputs.latest).await?;
    let cases = evaluate::cases(&rows.train, &rows.test, Protocol::Warm, model.items());
    if cases.is_empty() {
        return Ok(None);
    }
    let scores = evaluate::score(
        &model,
        &cases,
        &EvalOptions {
            bootstrap: 0,
            seed: 0,
        },
    );
    Ok(Some(Quality {
        at_deployment: inputs.at_deployment,
        recent: scores.metrics.get("ndcg@10").copied().unwrap_or(0.0),
    }))
}

/// The quality-drop signal of the retrain trigger: the active model's warm
/// NDCG@10 at training (recorded in the registry) vs on the latest ready
/// dataset's test part (the most recent real interactions). `None` when no
/// model is active or nothing can be scored.
pub async fn quality(store: &Store, objects: &Objects) -> Result<Option<Quality>> {
    match quality_inputs(store)? {
        Some(inputs) => quality_of(objects, &inputs).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use manirec_store::Account;

    use super::*;

    #[test]
    fn account_features_come_from_the_listed_fields_under_the_customer_id() {
        let mut store = Store::open_in_memory().unwrap();
        let account = |id: &str, email: Option<&str>, attributes: &str| Account {
            id: id.into(),
            email: email.map(String::from),
            created_at: Some(1_700_000_000),
            attributes: Some(attributes.into()),
        };
        store
            .upsert_accounts(&[
                account(
                    "1",
                    Some(" Ana@Example.com"),
                    r#"{"Country": "DE", "age": 34, "first_name": "Ana", "vip": true, "tier": "gold"}"#,
                ),
                account("2", None, r#"{"country": "FR"}"#),
                account(
                    "3",
                    Some("bo@example.com"),
                    r#"{"country": "a long free text that names no group at all", "customer_group": 1234, "age": "1990-05-01", "city": {"name": "Paris"}}"#,
                ),
                account("4", Some("cy@example.com"), "not json"),
                account("5", Some("di@example.com"), r#"{"age": "47", "occupation": "Nurse"}"#),
            ])
            .unwrap();
        let key = UserKey::from_bytes([3; 32]);
        let mut f = Features::new();
        add_account_features(&mut f, &store, &key).unwrap();
        // The id orders and the storefront compute from the same email.
        let ana = key.user_id_for_email("ana@example.com");
        assert_eq!(f.user(&ana), ["age=30", "country=de", "tier=gold"]);
        let bo = key.user_id_for_email("bo@example.com");
        assert_eq!(
            f.user(&bo),
            ["customer_group=1234"],
            "a label, not a quantity"
        );
        let di = key.user_id_for_email("di@example.com");
        assert_eq!(f.user(&di), ["age=40", "occupation=nurse"]);
        assert_eq!(
            f.users().len(),
            3,
            "no email, or no readable columns: nothing"
        );
    }
}
