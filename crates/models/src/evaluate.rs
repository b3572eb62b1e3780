//! Offline evaluation, exactly as the contract's protocols define it.
//!
//! - `warm`: users with train and test rows; relevant = their distinct test items
//!   that occur in train and that they did not have in train; recommendations
//!   exclude their train items.
//! - `session`: users only in test with ≥ 2 distinct test items that occur in
//!   train (items not in train are dropped *before* the halving); in time order
//!   the first half (at least one) is the context, the rest is relevant;
//!   recommendations exclude the context; no retraining.
//!
//! `anonymous:` ids are nobody and are never evaluated. Every metric comes with a
//! 95 % bootstrap interval over users, and every report sets the model beside
//! the popularity baseline with resamples shared by both (a paired comparison).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::split::is_anonymous;
use crate::{Error, Interaction, Model, Result, Vocab};

/// The protocols of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Known users, next items.
    Warm,
    /// New users scored from the first half of their session.
    Session,
    /// New customers (not visitors known by a session or device only) scored
    /// from nothing but who they are (their id, so their account's features
    /// where the model has them): a customer's first visit. Every catalogue
    /// item of their test part is relevant.
    FirstVisit,
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warm" => Ok(Protocol::Warm),
            "session" => Ok(Protocol::Session),
            "first-visit" | "first_visit" => Ok(Protocol::FirstVisit),
            _ => Err(Error::Config {
                name: "protocol",
                message: format!("{s:?} (expected warm, session or first-visit)"),
            }),
        }
    }
}

/// The cut-offs of the contract's metrics.
pub const KS: [usize; 2] = [10, 20];
/// The longest list scored (and dumped).
pub const MAX_K: usize = 20;
/// The metric keys, in report order.
pub const METRIC_KEYS: [&str; 7] = [
    "recall@10",
    "ndcg@10",
    "hit_rate@10",
    "map@10",
    "recall@20",
    "ndcg@20",
    "coverage@20",
];

/// One evaluated user.
#[derive(Debug, Clone)]
pub struct Case {
    /// The user.
    pub user_id: String,
    /// Whether the model is told who the user is (`warm`, `first_visit`); a
    /// `session` is scored from its context alone, as an anonymous visitor is
    /// served, even where the user has an account the model embeds.
    pub by_id: bool,
    /// Rows the model may use: `(item, weight, timestamp, synthetic)`; the user's
    /// train rows (`warm`), context rows (`session`) or none (`first_visit`).
    pub rows: Vec<(u32, f32, i64, bool)>,
    /// "Now" of the signal's time decay for these rows.
    pub reference_ts: i64,
    /// The context item ids, in time order (`session` only).
    pub context: Vec<String>,
    /// Items never recommended.
    pub exclude: HashSet<u32>,
    /// Items that count as hits.
    pub relevant: HashSet<u32>,
}

/// A case's rows in the model's item indices (items outside the catalogue dropped).
fn indexed(rows: &[&Interaction], items: &Vocab) -> Vec<(u32, f32, i64, bool)> {
    rows.iter()
        .filter_map(|r| {
            items
                .get(&r.item_id)
                .map(|i| (i, r.weight, r.timestamp, r.synthetic))
        })
        .collect()
}

/// Picks the evaluated users and their relevant sets under `protocol`. Items are
/// indexed by `items` (the catalogue: the items of `train`).
pub fn cases(
    train: &[Interaction],
    test: &[Interaction],
    protocol: Protocol,
    items: &Vocab,
) -> Vec<Case> {
    let mut train_rows: HashMap<&str, Vec<&Interaction>> = HashMap::new();
    for r in train.iter().filter(|r| !is_anonymous(&r.user_id)) {
        train_rows.entry(&r.user_id).or_default().push(r);
    }
    let train_reference = train.iter().map(|r| r.timestamp).max().unwrap_or(0);
    // Users in first-appearance order of the test rows, rows in time order (stable).
    let mut order: Vec<&str> = Vec::new();
    let mut test_rows: HashMap<&str, Vec<&Interaction>> = HashMap::new();
    for r in test.iter().filter(|r| !is_anonymous(&r.user_id)) {
        let e = test_rows.entry(&r.user_id).or_default();
        if e.is_empty() {
            order.push(&r.user_id);
        }
        e.push(r);
    }
    for rows in test_rows.values_mut() {
        rows.sort_by_key(|r| r.timestamp);
    }
    let mut out = Vec::new();
    for user in order {
        let rows = &test_rows[user];
        match (protocol, train_rows.get(user)) {
            (Protocol::Warm, Some(hist)) => {
                let seen: HashSet<u32> =
                    hist.iter().filter_map(|r| items.get(&r.item_id)).collect();
                let relevant: HashSet<u32> = rows
                    .iter()
                    .filter_map(|r| items.get(&r.item_id))
                    .filter(|i| !seen.contains(i))
                    .collect();
                if relevant.is_empty() {
                    continue;
                }
                out.push(Case {
                    user_id: user.to_string(),
                    by_id: true,
                    rows: indexed(hist, items),
                    reference_ts: train_reference,
                    context: Vec::new(),
                    exclude: seen,
                    relevant,
                });
            }
            (Protocol::Session, None) => {
                // Items not in train are dropped first (the contract's order), so
                // the halving counts only items a model can know.
                let rows: Vec<&Interaction> = rows
                    .iter()
                    .copied()
                    .filter(|r| items.get(&r.item_id).is_some())
                    .collect();
                let mut distinct: Vec<&str> = Vec::new();
                let mut first_row: Vec<usize> = Vec::new();
                for (k, r) in rows.iter().enumerate() {
                    if !distinct.contains(&r.item_id.as_str()) {
                        distinct.push(&r.item_id);
                        first_row.push(k);
                    }
                }
                if distinct.len() < 2 {
                    continue;
                }
                let n_ctx = (distinct.len() / 2).max(1);
                let relevant: HashSet<u32> = distinct[n_ctx..]
                    .iter()
                    .filter_map(|id| items.get(id))
                    .collect();
                // The context is what happened before the first relevant item.
                let ctx_rows = &rows[..first_row[n_ctx]];
                out.push(Case {
                    user_id: user.to_string(),
                    by_id: false,
                    rows: indexed(ctx_rows, items),
                    reference_ts: ctx_rows.iter().map(|r| r.timestamp).max().unwrap_or(0),
                    context: distinct[..n_ctx].iter().map(|s| s.to_string()).collect(),
                    exclude: distinct[..n_ctx]
                        .iter()
                        .filter_map(|id| items.get(id))
                        .collect(),
                    relevant,
                });
            }
            (Protocol::FirstVisit, None) if !crate::is_visitor(user) => {
                let relevant: HashSet<u32> =
                    rows.iter().filter_map(|r| items.get(&r.item_id)).collect();
                if relevant.is_empty() {
                    continue;
                }
                out.push(Case {
                    user_id: user.to_string(),
                    by_id: true,
                    rows: Vec::new(),
                    reference_ts: train_reference,
                    context: Vec::new(),
                    exclude: HashSet::new(),
                    relevant,
                });
            }
            _ => {}
        }
    }
    out
}

/// One ranked list, as dumped: `{"user_id", "context" (session only), "items"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedList {
    /// The evaluated user.
    pub user_id: String,
    /// The context items (session protocol).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<Vec<String>>,
    /// The top-20, best first.
    pub items: Vec<String>,
}

/// Metrics with their 95 % bootstrap intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Means over evaluated users (coverage: over the catalogue).
    pub metrics: BTreeMap<String, f64>,
    /// `[low, high]` per metric.
    pub metrics_ci: BTreeMap<String, [f64; 2]>,
}

/// An evaluation: the model's scores beside popularity's on the same users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The protocol.
    pub protocol: Protocol,
    /// Users scored.
    pub users_evaluated: usize,
    /// The model's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Their intervals.
    pub metrics_ci: BTreeMap<String, [f64; 2]>,
    /// Popularity's metrics on the same users.
    pub baseline: BTreeMap<String, f64>,
    /// Their intervals.
    pub baseline_ci: BTreeMap<String, [f64; 2]>,
    /// 95 % interval of the model's NDCG@10 minus popularity's (paired resamples).
    pub ndcg10_lift_ci: [f64; 2],
    /// Whether that interval lies above zero.
    pub beats_baseline: bool,
    /// Set, and meant to be shown, when the model does not beat popularity.
    pub warning: Option<String>,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Seed of the resamples.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// Per-user metric values, in [`METRIC_KEYS`] order without coverage.
type UserMetrics = [f64; 6];

/// Ranks every case with `model`: the top [`MAX_K`] catalogue indices.
pub fn rank(model: &Model, cases: &[Case]) -> Vec<Vec<u32>> {
    let n = model.items().len();
    cases
        .par_iter()
        .map_init(
            || vec![0f32; n],
            |scores, c| {
                let hist = model.history(c.rows.iter().copied(), c.reference_ts);
                let user = c.by_id.then_some(c.user_id.as_str());
                model.score_into(user, &hist, scores);
                model.top_k(scores, MAX_K, &c.exclude, |_| true)
            },
        )
        .collect()
}

fn user_metrics(list: &[u32], relevant: &HashSet<u32>) -> UserMetrics {
    let mut m = [0f64; 6];
    for (slot, k) in KS.iter().enumerate() {
        let k = *k;
        let denom = k.min(relevant.len()) as f64;
        let (mut hits, mut dcg, mut ap) = (0usize, 0f64, 0f64);
        for (pos, item) in list.iter().take(k).enumerate() {
            if relevant.contains(item) {
                hits += 1;
                dcg += 1.0 / ((pos + 2) as f64).log2();
                ap += hits as f64 / (pos + 1) as f64;
            }
        }
        let idcg: f64 = (0..k.min(relevant.len()))
            .map(|p| 1.0 / ((p + 2) as f64).log2())
            .sum();
        let recall = hits as f64 / denom;
        let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
        if slot == 0 {
            m[0] = recall;
            m[1] = ndcg;
            m[2] = (hits > 0) as u8 as f64;
            m[3] = ap / denom;
        } else {
            m[4] = recall;
            m[5] = ndcg;
        }
    }
    m
}

/// Metrics of ranked lists against the cases' relevant sets, with bootstrap
/// intervals drawn by `resamples` (indices into `cases`).
fn score_lists(
    lists: &[Vec<u32>],
    cases: &[Case],
    n_items: usize,
    resamples: &[Vec<u32>],
) -> (Scores, Vec<f64>) {
    let per_user: Vec<UserMetrics> = lists
        .iter()
        .zip(cases)
        .map(|(l, c)| user_metrics(l, &c.relevant))
        .collect();
    let coverage = |who: &mut dyn Iterator<Item = usize>, seen: &mut Vec<bool>| {
        seen.fill(false);
        let mut count = 0usize;
        for u in who {
            for &i in lists[u].iter().take(20) {
                if !seen[i as usize] {
                    seen[i as usize] = true;
                    count += 1;
                }
            }
        }
        count as f64 / n_items.max(1) as f64
    };
    let n = cases.len().max(1) as f64;
    let mut metrics = BTreeMap::new();
    let mut seen = vec![false; n_items];
    let means: Vec<f64> = (0..6)
        .map(|j| per_user.iter().map(|m| m[j]).sum::<f64>() / n)
        .collect();
    let keys = [
        METRIC_KEYS[0],
        METRIC_KEYS[1],
        METRIC_KEYS[2],
        METRIC_KEYS[3],
        METRIC_KEYS[4],
        METRIC_KEYS[5],
    ];
    for (k, v) in keys.iter().zip(&means) {
        metrics.insert(k.to_string(), *v);
    }
    metrics.insert(
        "coverage@20".into(),
        coverage(&mut (0..lists.len()), &mut seen),
    );
    // One row per resample: 6 means and coverage.
    let boot: Vec<[f64; 7]> = resamples
        .iter()
        .map(|idx| {
            let mut s = [0f64; 7];
            for &u in idx {
                for j in 0..6 {
                    s[j] += per_user[u as usize][j];
                }
            }
            for v in s.iter_mut().take(6) {
                *v /= idx.len().max(1) as f64;
            }
            s[6] = coverage(&mut idx.iter().map(|&u| u as usize), &mut seen);
            s
        })
        .collect();
    let mut metrics_ci = BTreeMap::new();
    let all_keys: Vec<&str> = keys.iter().copied().chain(["coverage@20"]).collect();
    for (j, k) in all_keys.iter().enumerate() {
        let mut v: Vec<f64> = boot.iter().map(|b| b[j]).collect();
        let mut ci = percentile_interval(&mut v);
        if *k == "coverage@20" && !v.is_empty() {
            // A resample repeats users, so it covers fewer items than the full set
            // and the percentile interval lies below the estimate; the coverage
            // interval is the resamples' spread, centred on the estimate instead.
            let est = metrics["coverage@20"];
            let median = v[v.len() / 2];
            ci = [
                (est - (median - ci[0])).max(0.0),
                (est + (ci[1] - median)).min(1.0),
            ];
        }
        metrics_ci.insert(k.to_string(), ci);
    }
    let ndcg10: Vec<f64> = boot.iter().map(|b| b[1]).collect();
    (
        Scores {
            metrics,
            metrics_ci,
        },
        ndcg10,
    )
}

/// The 2.5th and 97.5th percentiles (nearest rank); `[0, 0]` when empty.
fn percentile_interval(v: &mut [f64]) -> [f64; 2] {
    if v.is_empty() {
        return [0.0, 0.0];
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    [at(0.025), at(0.975)]
}

fn resamples(n: usize, opts: &EvalOptions) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    if n == 0 {
        return Vec::new();
    }
    (0..opts.bootstrap)
        .map(|_| (0..n).map(|_| rng.random_range(0..n as u32)).collect())
        .collect()
}

/// Scores `model` alone on `cases` (no baseline; `opts.bootstrap` may be 0): tuning.
pub fn score(model: &Model, cases: &[Case], opts: &EvalOptions) -> Scores {
    let lists = rank(model, cases);
    score_lists(
        &lists,
        cases,
        model.items().len(),
        &resamples(cases.len(), opts),
    )
    .0
}

/// Scores ranked lists made elsewhere (another library, a dump read back) on
/// `cases`, whose indices are `items`: a user without a list scores zero, ids
/// outside the catalogue never hit. The same formulas as [`evaluate`].
pub fn score_ranked(
    lists: &[RankedList],
    cases: &[Case],
    items: &Vocab,
    opts: &EvalOptions,
) -> Scores {
    let by_user: HashMap<&str, &RankedList> =
        lists.iter().map(|l| (l.user_id.as_str(), l)).collect();
    let ranked: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| match by_user.get(c.user_id.as_str()) {
            Some(l) => l
                .items
                .iter()
                .filter_map(|id| items.get(id))
                .take(MAX_K)
                .collect(),
            None => Vec::new(),
        })
        .collect();
    score_lists(&ranked, cases, items.len(), &resamples(cases.len(), opts)).0
}

/// Evaluates `model` beside `baseline` (popularity trained on the same `train`)
/// under `protocol`. Returns the report and the model's ranked lists (for
/// [`write_dump`]).
pub fn evaluate(
    model: &Model,
    baseline: &Model,
    train: &[Interaction],
    test: &[Interaction],
    protocol: Protocol,
    opts: &EvalOptions,
) -> Result<(Report, Vec<RankedList>)> {
    let items = model.items();
    let base_items = baseline.items();
    if items.len() != base_items.len() || base_items.ids().iter().any(|id| items.get(id).is_none())
    {
        return Err(Error::Input(
            "model and baseline were trained on different catalogues".into(),
        ));
    }
    let cases = cases(train, test, protocol, items);
    let draws = resamples(cases.len(), opts);
    let lists = rank(model, &cases);
    // The baseline may index the same catalogue in another order (a warm-started model).
    let base_lists: Vec<Vec<u32>> = if items == base_items {
        rank(baseline, &cases)
    } else {
        let base_cases = self::cases(train, test, protocol, base_items);
        rank(baseline, &base_cases)
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .filter_map(|i| items.get(base_items.id(i)))
                    .collect()
            })
            .collect()
    };
    let (m, m_boot) = score_lists(&lists, &cases, items.len(), &draws);
    let (b, b_boot) = score_lists(&base_lists, &cases, items.len(), &draws);
    let mut lift: Vec<f64> = m_boot.iter().zip(&b_boot).map(|(x, y)| x - y).collect();
    let ndcg10_lift_ci = percentile_interval(&mut lift);
    let beats_baseline = !cases.is_empty() && ndcg10_lift_ci[0] > 0.0;
    let warning = (!beats_baseline && baseline.kind() != model.kind()).then(|| {
        format!(
            "{} does NOT beat popularity on the {:?} protocol: ndcg@10 {:.4} vs {:.4} (lift interval [{:.4}, {:.4}], {} users)",
            model.kind(),
            protocol,
            m.metrics["ndcg@10"],
            b.metrics["ndcg@10"],
            ndcg10_lift_ci[0],
            ndcg10_lift_ci[1],
            cases.len()
        )
    });
    let dumped = lists
        .iter()
        .zip(&cases)
        .map(|(l, c)| RankedList {
            user_id: c.user_id.clone(),
            context: (protocol == Protocol::Session).then(|| c.context.clone()),
            items: l.iter().map(|&i| items.id(i).to_string()).collect(),
        })
        .collect();
    Ok((
        Report {
            protocol,
            users_evaluated: cases.len(),
            metrics: m.metrics,
            metrics_ci: m.metrics_ci,
            baseline: b.metrics,
            baseline_ci: b.metrics_ci,
            ndcg10_lift_ci,
            beats_baseline,
            warning,
        },
        dumped,
    ))
}

/// Writes ranked lists as JSON lines, so that anyone can recompute the metrics
/// from the dataset's files.
pub fn write_dump(mut out: impl Write, lists: &[RankedList]) -> Result<()> {
    for l in lists {
        serde_json::to_writer(&mut out, l).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// How well a two-tower model places items that had no interaction at training
/// time (new designs), against per-category popularity.
///
/// - Candidates: every item of `test` that never occurs in `train` and whose
///   features the model knows (at least one `field=value` it was trained with),
///   each embedded from its features alone ([`crate::TwoTower::cold_item_vector`]).
/// - Evaluated: each distinct (user, candidate) pair of `test` whose user has
///   train rows (not `anonymous:`): a known customer who went on to take a new item.
/// - Hit: the item is among the user's top 20 of the candidates. The model ranks
///   them by its query (user id and train history) against their vectors.
/// - `baseline_hit_rate@20`: per-category popularity, the fallback for an item
///   without history: candidates ranked by how many train rows their category
///   has (the same list for everyone; ties by item id).
/// - `user_category_hit_rate@20`: a stronger baseline, candidates of the
///   categories the user took most often in train first, then by category
///   popularity.
///
/// With 20 candidates or fewer every list holds them all: read `items` first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColdStart {
    /// Candidate items (in test, not in train, with known features).
    pub items: usize,
    /// Evaluated (user, item) pairs.
    pub interactions: usize,
    /// The model's HitRate@20.
    #[serde(rename = "hit_rate@20")]
    pub hit_rate_20: f64,
    /// Per-category popularity's HitRate@20.
    #[serde(rename = "baseline_hit_rate@20")]
    pub baseline_hit_rate_20: f64,
    /// The user's own categories, then category popularity.
    #[serde(rename = "user_category_hit_rate@20")]
    pub user_category_hit_rate_20: f64,
}

/// The cold-start report of a two-tower `model` (see [`ColdStart`]); `None` for
/// other kinds.
pub fn cold_start(
    model: &Model,
    train: &[Interaction],
    test: &[Interaction],
    features: &crate::Features,
) -> Option<ColdStart> {
    let tt = model.two_tower()?;
    let items = model.items();
    let in_train: HashSet<&str> = train.iter().map(|r| r.item_id.as_str()).collect();
    let mut cand_ids: Vec<&str> = test
        .iter()
        .map(|r| r.item_id.as_str())
        .filter(|i| !in_train.contains(i))
        .collect::<HashSet<&str>>()
        .into_iter()
        .collect();
    cand_ids.sort_unstable();
    let mut vectors: Vec<f32> = Vec::new();
    cand_ids.retain(|id| match tt.cold_item_vector(features.get(id)) {
        Some(v) => {
            vectors.extend(v);
            true
        }
        None => false,
    });
    let cand_index: HashMap<&str, usize> = cand_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, k))
        .collect();
    let mut category_rows: HashMap<&str, f64> = HashMap::new();
    let mut user_rows: HashMap<&str, Vec<&Interaction>> = HashMap::new();
    for r in train {
        if let Some(c) = features.category(&r.item_id) {
            *category_rows.entry(c).or_default() += 1.0;
        }
        if !is_anonymous(&r.user_id) {
            user_rows.entry(&r.user_id).or_default().push(r);
        }
    }
    let cat_pop = |id: &str| {
        features
            .category(id)
            .and_then(|c| category_rows.get(c))
            .copied()
            .unwrap_or(0.0)
    };
    // Pairs grouped by user, users in first-appearance order.
    let mut order: Vec<&str> = Vec::new();
    let mut wanted: HashMap<&str, Vec<usize>> = HashMap::new();
    for r in test
        .iter()
        .filter(|r| user_rows.contains_key(r.user_id.as_str()))
    {
        if let Some(&k) = cand_index.get(r.item_id.as_str()) {
            let e = wanted.entry(&r.user_id).or_default();
            if e.is_empty() {
                order.push(&r.user_id);
            }
            if !e.contains(&k) {
                e.push(k);
            }
        }
    }
    let top20 = |score: &dyn Fn(usize) -> f64| -> HashSet<usize> {
        let mut idx: Vec<usize> = (0..cand_ids.len()).collect();
        idx.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        idx.truncate(MAX_K);
        idx.into_iter().collect()
    };
    let global = top20(&|k| cat_pop(cand_ids[k]));
    let d = tt.dim();
    let (mut n, mut hits, mut base_hits, mut user_cat_hits) = (0usize, 0usize, 0usize, 0usize);
    for user in order {
        let rows = &user_rows[user];
        let hist: Vec<u32> = rows.iter().filter_map(|r| items.get(&r.item_id)).collect();
        let mine = match tt.query(Some(user), &hist) {
            Some(q) => {
                let s: Vec<f64> = vectors
                    .chunks_exact(d)
                    .map(|c| crate::linalg::dot::<false>(c, &q) as f64)
                    .collect();
                top20(&|k| s[k])
            }
            None => global.clone(),
        };
        let mut own: HashMap<&str, f64> = HashMap::new();
        for r in rows {
            if let Some(c) = features.category(&r.item_id) {
                *own.entry(c).or_default() += 1.0;
            }
        }
        let total = category_rows.values().sum::<f64>() + 1.0;
        let by_user_category = top20(&|k| {
            let id = cand_ids[k];
            let o = features
                .category(id)
                .and_then(|c| own.get(c))
                .copied()
                .unwrap_or(0.0);
            o + cat_pop(id) / total
        });
        for k in &wanted[user] {
            n += 1;
            hits += mine.contains(k) as usize;
            base_hits += global.contains(k) as usize;
            user_cat_hits += by_user_category.contains(k) as usize;
        }
    }
    let rate = |h: usize| if n == 0 { 0.0 } else { h as f64 / n as f64 };
    Some(ColdStart {
        items: cand_ids.len(),
        interactions: n,
        hit_rate_20: rate(hits),
        baseline_hit_rate_20: rate(base_hits),
        user_category_hit_rate_20: rate(user_cat_hits),
    })
}
