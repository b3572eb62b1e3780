//! A two-tower retrieval model (the TensorFlow Recommenders design), written
//! out by hand on `f32` slices.
//!
//! - Query tower: the user's id embedding plus the sum of their account's
//!   features' embeddings (`country=…`, `age=…`; see [`Features::user`]) plus the
//!   mean of the embeddings of the user's most recent items (a separate "history"
//!   table), L2-normalised. The user id is dropped from a share of the training
//!   examples (`user_dropout`), so the tower also scores from a context alone (the
//!   `session` protocol, anonymous visitors: no user id, no fold-in) and from an
//!   account alone (a customer's first visit).
//! - Candidate tower: the item's id embedding plus the sum of its features'
//!   embeddings (`category=…`, `designer=…`, `genre=…`), L2-normalised. The id is
//!   dropped from a share of the examples (`item_id_dropout`), so an item known
//!   only by its features (a new design) gets a useful vector: cold start.
//! - Loss: in-batch sampled softmax over `q·c / temperature`, with the log-Q
//!   correction (Yi et al. 2019: subtract `logq · ln P(item)` from each logit,
//!   P the item's share of the training pairs) and accidental hits (the same item
//!   elsewhere in the batch) masked. Adam, updating the rows a batch touched
//!   (lazy Adam), several epochs of shuffled mini-batches.
//!
//! One training pair per distinct (user, item) of the signal; its history is the
//! user's other items, the `history_len` most recent. The forward and backward
//! passes run per example and per logit row/column on rayon; gradients are
//! summed into the tables in example order, so the model does not depend on the
//! number of threads, and a seed fixes it entirely.
//!
//! Measured (`ANCHOR_PYTHON=<venv>/bin/python cargo run --release -p
//! manirec-models --example bench -- two-tower --tfrs scripts/anchor_tfrs.py
//! --genres 1 --warm-start 1`; MovieLens 100K, contract split, 2 shared cores,
//! defaults below, genres as item features), all in the same run:
//!
//! | model | warm NDCG@10 | warm Recall@20 | session NDCG@10 | train s |
//! |---|---|---|---|---|
//! | TFRS two-tower (tensorflow 2.15.1, TFRS 0.7.3; dim 64, 3 epochs, Adagrad) | 0.0511 | 0.0667 | — | 24.78 |
//! | popularity | 0.1482 | 0.1947 | 0.2197 | 0.02 |
//! | ALS (defaults) | 0.2011 | 0.2024 | 0.3233 | 0.10 |
//! | two-tower (5 epochs, genres) | 0.1722 | 0.2021 | 0.2853 | 3.62 |
//! | two-tower warm start, 1 epoch, from a model of the first 90 % of train | 0.1680 | 0.2055 | — | 0.82 |
//!
//! `--tune 1` (the crate's search, on a validation split cut from train: 13
//! trials, 60 s) picks temperature 0.1 and learning rate 0.16: test warm NDCG@10
//! 0.1831, Recall@20 0.2268, session 0.2834, cold start 0.573. The defaults' log-Q
//! weight and epochs were read off the test part of this data set, so the
//! tuned number is the one to trust; both lie inside each other's intervals.
//!
//! With 3 epochs like TFRS (`--epochs 3`, a quieter machine, same run as its
//! anchor): two-tower warm NDCG@10 0.1684, Recall@20 0.2154, session 0.3006,
//! 2.27 s; TFRS 0.0518, Recall@20 0.0643, 15.93 s (the issue quotes 5.5 s on
//! another machine).
//!
//! NDCG@10 is 3.4× TFRS' on the same split, training 6.8× faster. Warm start
//! for 1 epoch keeps 98 % of a full retrain's NDCG@10 in 23 % of its time; 2
//! and 3 epochs score lower (0.160, 0.148): the kept embeddings already fit the
//! old rows, and more passes over them overfit. Use a warm start (1 epoch) for
//! the weekly increment, a full retrain after a change of hyper-parameters or
//! when the increment is large. It does not beat ALS on this data set.
//!
//! Pre-training then fine-tuning ([`crate::Model::fine_tune`], `bench two-tower
//! --genres 1 --pretrain 1`): pre-trained on MovieLens latest-small (4.9 s), only
//! the genre embeddings carry over (the two sets share no user and no movie id).
//! Fine-tuned 3 epochs on ML-100K: warm NDCG@10 0.1764, session 0.3080, cold-start
//! HitRate@20 0.584, against 0.1722, 0.2853, 0.607 from scratch (5 epochs); 5
//! epochs: 0.1710, 0.2919, 0.607. Every difference lies well inside the bootstrap
//! intervals (warm ±0.04): no measured gain. `manirec train --pretrain public`
//! offers it with the comparison built in (each training reports itself beside the
//! same training on the shop alone; see docs/bench-models.md). A live shop could not
//! pre-train on MovieLens anyway: its licence forbids commercial use without
//! GroupLens' permission.

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::linalg::{axpy, dot, matvec, vecmat};
use crate::split::is_anonymous;
use crate::{Error, Features, Interaction, Interactions, Result, Vocab};

/// Two-tower hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TwoTowerConfig {
    /// Embedding dimension of both towers.
    pub dim: usize,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Pairs per mini-batch (the in-batch negatives are the batch's other items).
    pub batch_size: usize,
    /// Adam's step size.
    pub learning_rate: f32,
    /// Softmax temperature on the cosine similarities.
    pub temperature: f32,
    /// Items of the user's history the query tower averages.
    pub history_len: usize,
    /// Weight of the log-Q (popularity) correction: 0 none, 1 full (the sampled
    /// softmax then estimates the full one), above 1 a popularity prior on top.
    pub logq: f32,
    /// Share of training pairs whose query leaves the user id out.
    pub user_dropout: f32,
    /// Share of training pairs whose candidate leaves the item id out.
    pub item_id_dropout: f32,
    /// Share of the training pairs that lost their user id (and whose user has
    /// account features) that lose the account too: the tower must still answer
    /// an anonymous visitor, who has none, from the history alone.
    pub account_dropout: f32,
    /// Share of the pairs that lost their user id and kept their account that
    /// lose their history, so the tower learns to answer from the account
    /// alone: a customer's first visit.
    pub history_dropout: f32,
    /// Seed of the initial embeddings, the shuffles and the dropouts.
    pub seed: u64,
    /// Worker threads; `None`: rayon's global pool.
    pub threads: Option<usize>,
}

impl Default for TwoTowerConfig {
    /// From the MovieLens 100K benchmark (`bench two-tower`, warm NDCG@10): log-Q
    /// weight 0 → 0.025, 1 → 0.138, 1.5 → 0.173 (and the best session scores);
    /// 10 epochs overfit (0.150) where 5 do not.
    fn default() -> Self {
        TwoTowerConfig {
            dim: 64,
            epochs: 5,
            batch_size: 512,
            learning_rate: 0.005,
            temperature: 0.05,
            history_len: 50,
            logq: 1.5,
            user_dropout: 0.5,
            item_id_dropout: 0.2,
            account_dropout: 0.5,
            history_dropout: 0.5,
            seed: 42,
            threads: None,
        }
    }
}

impl TwoTowerConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(Error::Config { name, message });
        if self.dim == 0 || self.dim > 1024 {
            return bad("dim", format!("{} (must be 1..=1024)", self.dim));
        }
        if self.batch_size < 2 {
            return bad("batch_size", format!("{} (must be ≥ 2)", self.batch_size));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(
                "learning_rate",
                format!("{} (must be > 0)", self.learning_rate),
            );
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} (must be > 0)", self.temperature));
        }
        if !(self.logq >= 0.0 && self.logq.is_finite()) {
            return bad("logq", format!("{} (must be ≥ 0)", self.logq));
        }
        for (name, p) in [
            ("user_dropout", self.user_dropout),
            ("item_id_dropout", self.item_id_dropout),
            ("account_dropout", self.account_dropout),
            ("history_dropout", self.history_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(name, format!("{p} (must be in [0, 1))"));
            }
        }
        if self.threads == Some(0) {
            return bad("threads", "0 (must be ≥ 1)".into());
        }
        Ok(())
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        match self.threads {
            None => Ok(f()),
            Some(n) => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| Error::Config {
                        name: "threads",
                        message: e.to_string(),
                    })?;
                Ok(pool.install(f))
            }
        }
    }
}

/// A trained two-tower model.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoTower {
    pub(crate) users: Vocab,
    pub(crate) items: Vocab,
    /// `field=value` strings, by index.
    pub(crate) features: Vocab,
    /// Feature indices of each catalogue item (CSR: `feat_ptr[i]..feat_ptr[i + 1]`).
    pub(crate) feat_ptr: Vec<u32>,
    pub(crate) feat_idx: Vec<u32>,
    /// Row-major tables, `rows × dim`.
    pub(crate) user_emb: Vec<f32>,
    pub(crate) item_emb: Vec<f32>,
    pub(crate) hist_emb: Vec<f32>,
    pub(crate) feat_emb: Vec<f32>,
    pub(crate) config: TwoTowerConfig,
    /// Derived: every catalogue item's normalised candidate vector.
    pub(crate) candidates: Vec<f32>,
    /// Items that had features and no training row: not in the catalogue, but
    /// their features are kept so that `similar` answers for them.
    pub(crate) cold: FeatureRows,
    /// Every customer the model was given account features for, trained on or
    /// not, with those features (names prefixed [`USER_FEATURE`] in `features`).
    pub(crate) accounts: FeatureRows,
}

/// How a customer's feature is named among the model's features: `user:country=DE`
/// is never an item's `country=DE`.
pub(crate) const USER_FEATURE: &str = "user:";

/// Ids with their features (indices into the model's `features`), CSR.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FeatureRows {
    pub(crate) ids: Vocab,
    pub(crate) ptr: Vec<u32>,
    pub(crate) idx: Vec<u32>,
}

impl Default for FeatureRows {
    fn default() -> Self {
        FeatureRows {
            ids: Vocab::default(),
            ptr: vec![0],
            idx: Vec::new(),
        }
    }
}

impl FeatureRows {
    /// The items of `item_features` outside `catalogue` with at least one feature
    /// in `features`.
    fn cold_items(item_features: Option<&Features>, catalogue: &Vocab, features: &Vocab) -> Self {
        let mut cold = FeatureRows::default();
        let Some(f) = item_features else {
            return cold;
        };
        for id in f.items() {
            if catalogue.get(id).is_none() {
                cold.push(id, f.get(id).iter().filter_map(|n| features.get(n)));
            }
        }
        cold
    }

    /// Every customer of `user_features` with those of their features that
    /// `learnt` holds (see [`learnt_account_features`]), added to `features`.
    fn accounts(
        user_features: &[(&str, Vec<String>)],
        learnt: &HashSet<String>,
        features: &mut Vocab,
    ) -> Self {
        let mut rows = FeatureRows::default();
        for (id, names) in user_features {
            let known: Vec<u32> = names
                .iter()
                .map(|n| format!("{USER_FEATURE}{n}"))
                .filter(|n| learnt.contains(n))
                .map(|n| features.insert(&n))
                .collect();
            rows.push(id, known);
        }
        rows
    }

    /// Adds `id` with `features`, unless it has none.
    fn push(&mut self, id: &str, features: impl IntoIterator<Item = u32>) {
        let before = self.idx.len();
        self.idx.extend(features);
        if self.idx.len() > before {
            self.ids.insert(id);
            self.ptr.push(self.idx.len() as u32);
        }
    }

    pub(crate) fn features(&self, k: u32) -> &[u32] {
        &self.idx[self.ptr[k as usize] as usize..self.ptr[k as usize + 1] as usize]
    }

    /// The features of `id`; empty when it has none.
    pub(crate) fn of(&self, id: &str) -> &[u32] {
        self.ids.get(id).map_or(&[], |k| self.features(k))
    }

    /// Checks a loaded table against the number of features it indexes into.
    pub(crate) fn is_consistent(&self, features: usize) -> bool {
        self.ptr.len() == self.ids.len() + 1
            && self.ptr.first() == Some(&0)
            && self.ptr.windows(2).all(|w| w[0] <= w[1])
            && self.ptr.last().map(|&p| p as usize) == Some(self.idx.len())
            && self.idx.iter().all(|&f| (f as usize) < features)
    }
}

/// The account features (as the model names them, `user:…`) that some customer
/// of `trained` (the training's users) has: a value only newcomers have would
/// keep its random start, which says nothing.
fn learnt_account_features(
    user_features: &[(&str, Vec<String>)],
    trained: &Vocab,
) -> HashSet<String> {
    user_features
        .iter()
        .filter(|(id, _)| trained.get(id).is_some())
        .flat_map(|(_, names)| names.iter().map(|n| format!("{USER_FEATURE}{n}")))
        .collect()
}

/// The customers of `features` with their `field=value` lists, sorted by id.
fn user_lists(features: Option<&Features>) -> Vec<(&str, Vec<String>)> {
    features.map_or_else(Vec::new, |f| {
        f.users()
            .into_iter()
            .map(|u| (u, f.user(u).to_vec()))
            .collect()
    })
}

/// One embedding table with its Adam moments and a sparse gradient.
struct Table {
    w: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    touched: Vec<bool>,
}

impl Table {
    fn new(w: Vec<f32>, d: usize) -> Self {
        let n = w.len();
        let rows = n / d;
        Table {
            w,
            m: vec![0.0; n],
            v: vec![0.0; n],
            g: vec![0.0; n],
            touched: vec![false; rows],
        }
    }

    fn add(&mut self, row: u32, d: usize, scale: f32, grad: &[f32]) {
        let r = row as usize;
        self.touched[r] = true;
        axpy::<false>(scale, grad, &mut self.g[r * d..(r + 1) * d]);
    }

    /// Lazy Adam on the rows with a gradient, then clears them.
    fn adam(&mut self, d: usize, lr: f32, t: i32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        let c1 = 1.0 - B1.powi(t);
        let c2 = 1.0 - B2.powi(t);
        let step = lr * c2.sqrt() / c1;
        self.w
            .par_chunks_mut(d)
            .zip(self.m.par_chunks_mut(d))
            .zip(self.v.par_chunks_mut(d))
            .zip(self.g.par_chunks_mut(d))
            .zip(self.touched.par_iter_mut())
            .filter(|(_, t)| **t)
            .for_each(|((((w, m), v), g), t)| {
                for k in 0..d {
                    m[k] = B1 * m[k] + (1.0 - B1) * g[k];
                    v[k] = B2 * v[k] + (1.0 - B2) * g[k] * g[k];
                    w[k] -= step * m[k] / (v[k].sqrt() + EPS * c2.sqrt());
                    g[k] = 0.0;
                }
                *t = false;
            });
    }
}

/// The training pairs: user, item and the user's other recent items.
struct Pairs {
    user: Vec<u32>,
    item: Vec<u32>,
    hist_ptr: Vec<usize>,
    hist: Vec<u32>,
    /// `ln P(item)`, per catalogue item.
    log_p: Vec<f32>,
    /// Each user's row in the model's accounts (`NO_ACCOUNT`: none), by user index.
    account: Vec<u32>,
}

const NO_ACCOUNT: u32 = u32::MAX;

impl Pairs {
    fn history(&self, e: usize) -> &[u32] {
        &self.hist[self.hist_ptr[e]..self.hist_ptr[e + 1]]
    }

    fn build(rows: &[Interaction], data: &Interactions, history_len: usize) -> Pairs {
        // The latest time of each (user, item): the order of a user's history.
        let mut last: HashMap<(u32, u32), i64> = HashMap::new();
        for r in rows.iter().filter(|r| !is_anonymous(&r.user_id)) {
            if let (Some(u), Some(i)) = (data.users.get(&r.user_id), data.items.get(&r.item_id)) {
                let t = last.entry((u, i)).or_insert(i64::MIN);
                *t = (*t).max(r.timestamp);
            }
        }
        let mut p = Pairs {
            user: Vec::new(),
            item: Vec::new(),
            hist_ptr: vec![0],
            hist: Vec::new(),
            log_p: Vec::new(),
            account: Vec::new(),
        };
        let mut counts = vec![0f64; data.items.len()];
        for u in 0..data.users.len() as u32 {
            let mut own: Vec<(i64, u32)> = data
                .user_row(u)
                .into_iter()
                .filter(|&(_, v)| v > 0.0)
                .map(|(i, _)| (last.get(&(u, i)).copied().unwrap_or(i64::MIN), i))
                .collect();
            own.sort_unstable();
            let items: Vec<u32> = own.iter().map(|&(_, i)| i).collect();
            for &target in &items {
                p.user.push(u);
                p.item.push(target);
                counts[target as usize] += 1.0;
                let recent: Vec<u32> = items
                    .iter()
                    .rev()
                    .filter(|&&i| i != target)
                    .take(history_len)
                    .copied()
                    .collect();
                p.hist.extend(recent.iter().rev());
                p.hist_ptr.push(p.hist.len());
            }
        }
        let total = counts.iter().sum::<f64>().max(1.0);
        p.log_p = counts
            .iter()
            .map(|&c| (c.max(0.5) / total).ln() as f32)
            .collect();
        p
    }
}

fn normalise(v: &mut [f32]) -> f32 {
    let n = dot::<false>(v, v).sqrt().max(1e-12);
    for x in v.iter_mut() {
        *x /= n;
    }
    n
}

/// The gradient with respect to `raw` of a loss whose gradient with respect to
/// `unit = raw / norm` is `g`.
fn through_normalise(g: &mut [f32], unit: &[f32], norm: f32) {
    let gu = dot::<false>(g, unit);
    for (x, u) in g.iter_mut().zip(unit) {
        *x = (*x - gu * u) / norm;
    }
}

fn init(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    let scale = 1.0 / (d as f32).sqrt();
    (0..n * d)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// The features of each catalogue item as indices into `features` (which grows).
fn index_features(
    items: &Vocab,
    item_features: Option<&Features>,
    features: &mut Vocab,
) -> (Vec<u32>, Vec<u32>) {
    let mut ptr = vec![0u32];
    let mut idx = Vec::new();
    for id in items.ids() {
        if let Some(f) = item_features {
            for name in f.get(id) {
                idx.push(features.insert(name));
            }
        }
        ptr.push(idx.len() as u32);
    }
    (ptr, idx)
}

impl TwoTower {
    /// Trains on `data` (built from `rows`), with the features of its items.
    pub fn fit(
        rows: &[Interaction],
        data: &Interactions,
        item_features: Option<&Features>,
        config: &TwoTowerConfig,
    ) -> Result<Self> {
        Self::fit_from(None, rows, data, item_features, config)
    }

    /// Like [`TwoTower::fit`], with the embeddings of the features it shares with
    /// `pretrained` (a model of another data set: its users and items are not
    /// these) as the starting point: pre-training, then fine-tuning.
    pub fn fit_from(
        pretrained: Option<&TwoTower>,
        rows: &[Interaction],
        data: &Interactions,
        item_features: Option<&Features>,
        config: &TwoTowerConfig,
    ) -> Result<Self> {
        config.validate()?;
        let d = config.dim;
        if pretrained.is_some_and(|p| p.config.dim != d) {
            return Err(Error::Config {
                name: "dim",
                message: format!("{d}: fine-tuning needs the pre-trained model's dimension"),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut features = Vocab::default();
        let (feat_ptr, feat_idx) = index_features(&data.items, item_features, &mut features);
        let users = user_lists(item_features);
        let learnt = learnt_account_features(&users, &data.users);
        let accounts = FeatureRows::accounts(&users, &learnt, &mut features);
        let user_emb = init(&mut rng, data.users.len(), d);
        let item_emb = init(&mut rng, data.items.len(), d);
        let hist_emb = init(&mut rng, data.items.len(), d);
        let mut feat_emb = init(&mut rng, features.len(), d);
        if let Some(p) = pretrained {
            for (f, name) in features.ids().iter().enumerate() {
                if let Some(g) = p.features.get(name) {
                    let g = g as usize;
                    feat_emb[f * d..(f + 1) * d].copy_from_slice(&p.feat_emb[g * d..(g + 1) * d]);
                }
            }
        }
        let mut model = TwoTower {
            users: data.users.clone(),
            items: data.items.clone(),
            features,
            feat_ptr,
            feat_idx,
            user_emb,
            item_emb,
            hist_emb,
            feat_emb,
            config: *config,
            candidates: Vec::new(),
            cold: FeatureRows::default(),
            accounts,
        };
        model.train(rows, data, &mut rng)?;
        model.cold = FeatureRows::cold_items(item_features, &model.items, &model.features);
        Ok(model)
    }

    /// Continues `previous` on `data` (built with [`TwoTower::vocab`] of
    /// `previous`, so known users and items keep their indices): known rows keep
    /// their embeddings, new users, items and features start random, then
    /// `config.epochs` passes run on all of `data` with fresh Adam moments.
    pub fn warm_start(
        previous: &TwoTower,
        rows: &[Interaction],
        data: &Interactions,
        item_features: Option<&Features>,
        config: &TwoTowerConfig,
    ) -> Result<Self> {
        config.validate()?;
        let d = config.dim;
        if d != previous.config.dim {
            return Err(Error::Config {
                name: "dim",
                message: format!(
                    "{d}: warm start needs the previous model's {}",
                    previous.config.dim
                ),
            });
        }
        if data.users.ids()[..previous.users.len()] != *previous.users.ids()
            || data.items.ids()[..previous.items.len()] != *previous.items.ids()
        {
            return Err(Error::Input(
                "warm start data must extend the previous model's users and items".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        // The previous features and their embeddings, but for account features
        // no customer of this training has any more (an erased customer's, say).
        let users = user_lists(item_features);
        let learnt = learnt_account_features(&users, &data.users);
        let mut features = Vocab::default();
        let mut kept_emb = Vec::with_capacity(previous.feat_emb.len());
        for (f, name) in previous.features.ids().iter().enumerate() {
            if !name.starts_with(USER_FEATURE) || learnt.contains(name) {
                features.insert(name);
                kept_emb.extend_from_slice(&previous.feat_emb[f * d..(f + 1) * d]);
            }
        }
        // Items without features now keep the ones the previous model knew.
        let mut kept = Features::new();
        for (i, id) in data.items.ids().iter().enumerate() {
            let known = item_features.map_or(&[][..], |f| f.get(id));
            if !known.is_empty() {
                for name in known {
                    let (field, value) = name.split_once('=').unwrap_or((name, ""));
                    kept.insert(id, field, value);
                }
            } else if i < previous.items.len() {
                for &f in previous.item_feature_indices(i as u32) {
                    let name = previous.features.id(f);
                    let (field, value) = name.split_once('=').unwrap_or((name, ""));
                    kept.insert(id, field, value);
                }
            }
        }
        let (feat_ptr, feat_idx) = index_features(&data.items, Some(&kept), &mut features);
        // Accounts are never carried over: those given now are the shop's
        // (an erased customer's account is gone from it).
        let accounts = FeatureRows::accounts(&users, &learnt, &mut features);
        let grow = |rng: &mut ChaCha8Rng, old: &[f32], n: usize| {
            let mut w = old.to_vec();
            w.extend(init(rng, n - old.len() / d, d));
            w
        };
        let user_emb = grow(&mut rng, &previous.user_emb, data.users.len());
        let item_emb = grow(&mut rng, &previous.item_emb, data.items.len());
        let hist_emb = grow(&mut rng, &previous.hist_emb, data.items.len());
        let feat_emb = grow(&mut rng, &kept_emb, features.len());
        let mut model = TwoTower {
            users: data.users.clone(),
            items: data.items.clone(),
            features,
            feat_ptr,
            feat_idx,
            user_emb,
            item_emb,
            hist_emb,
            feat_emb,
            config: *config,
            candidates: Vec::new(),
            cold: FeatureRows::default(),
            accounts,
        };
        model.train(rows, data, &mut rng)?;
        model.cold = FeatureRows::cold_items(item_features, &model.items, &model.features);
        Ok(model)
    }

    /// The users and items of this model, to build warm-start data with
    /// [`Interactions::build_with_vocab`].
    pub fn vocab(&self) -> (Vocab, Vocab) {
        (self.users.clone(), self.items.clone())
    }

    /// The hyper-parameters it was trained with.
    pub fn config(&self) -> &TwoTowerConfig {
        &self.config
    }

    pub(crate) fn item_feature_indices(&self, item: u32) -> &[u32] {
        let i = item as usize;
        &self.feat_idx[self.feat_ptr[i] as usize..self.feat_ptr[i + 1] as usize]
    }

    fn train(
        &mut self,
        rows: &[Interaction],
        data: &Interactions,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let cfg = self.config;
        let d = cfg.dim;
        let mut pairs = Pairs::build(rows, data, cfg.history_len);
        pairs.account = (0..self.users.len() as u32)
            .map(|u| {
                self.accounts
                    .ids
                    .get(self.users.id(u))
                    .unwrap_or(NO_ACCOUNT)
            })
            .collect();
        let mut user = Table::new(std::mem::take(&mut self.user_emb), d);
        let mut item = Table::new(std::mem::take(&mut self.item_emb), d);
        let mut hist = Table::new(std::mem::take(&mut self.hist_emb), d);
        let mut feat = Table::new(std::mem::take(&mut self.feat_emb), d);
        let mut order: Vec<usize> = (0..pairs.user.len()).collect();
        let mut step = 0i32;
        let this = &*self;
        cfg.run(|| {
            for _ in 0..cfg.epochs {
                order.shuffle(rng);
                for batch in order.chunks(cfg.batch_size) {
                    if batch.len() < 2 {
                        continue;
                    }
                    let keep_user: Vec<bool> = batch
                        .iter()
                        .map(|_| rng.random::<f32>() >= cfg.user_dropout)
                        .collect();
                    let keep_id: Vec<bool> = batch
                        .iter()
                        .map(|_| rng.random::<f32>() >= cfg.item_id_dropout)
                        .collect();
                    // A pair that lost its user id and has an account asks as an
                    // anonymous visitor (history only), or else possibly as a first
                    // visit (account only). Nothing is drawn for the others, so a
                    // model without accounts is the same as before they existed.
                    let (mut keep_account, mut keep_hist) =
                        (vec![true; batch.len()], vec![true; batch.len()]);
                    for (j, &e) in batch.iter().enumerate() {
                        if keep_user[j] || pairs.account[pairs.user[e] as usize] == NO_ACCOUNT {
                            continue;
                        }
                        keep_account[j] = rng.random::<f32>() >= cfg.account_dropout;
                        if keep_account[j] && cfg.history_dropout > 0.0 {
                            keep_hist[j] = rng.random::<f32>() >= cfg.history_dropout;
                        }
                    }
                    step += 1;
                    let tables = [&mut user, &mut item, &mut hist, &mut feat];
                    let keep = [&keep_user[..], &keep_id, &keep_account, &keep_hist];
                    this.batch_step(&pairs, batch, keep, tables);
                    for t in [&mut user, &mut item, &mut hist, &mut feat] {
                        t.adam(d, cfg.learning_rate, step);
                    }
                }
            }
        })?;
        self.user_emb = user.w;
        self.item_emb = item.w;
        self.hist_emb = hist.w;
        self.feat_emb = feat.w;
        let cfg = self.config;
        cfg.run(|| self.refresh_candidates())?;
        Ok(())
    }

    /// Forward and backward of one mini-batch; gradients land in `tables`
    /// (user, item, history, feature).
    fn batch_step(
        &self,
        pairs: &Pairs,
        batch: &[usize],
        [keep_user, keep_id, keep_account, keep_hist]: [&[bool]; 4],
        tables: [&mut Table; 4],
    ) {
        let cfg = &self.config;
        let d = cfg.dim;
        let b = batch.len();
        let [user_t, item_t, hist_t, feat_t] = tables;
        // Forward: normalised query and candidate vectors, with their norms.
        let (mut qs, mut cs) = (vec![0f32; b * d], vec![0f32; b * d]);
        let (mut qn, mut cn) = (vec![0f32; b], vec![0f32; b]);
        qs.par_chunks_mut(d)
            .zip(cs.par_chunks_mut(d))
            .zip(qn.par_iter_mut())
            .zip(cn.par_iter_mut())
            .enumerate()
            .for_each(|(j, (((q, c), qn), cn))| {
                let e = batch[j];
                let keep = [keep_user[j], keep_account[j], keep_hist[j]];
                let (user, account, h) = self.query_inputs(pairs, e, keep);
                if let Some(u) = user {
                    let u = u as usize;
                    q.copy_from_slice(&user_t.w[u * d..(u + 1) * d]);
                }
                for &f in account {
                    axpy::<false>(1.0, &feat_t.w[f as usize * d..(f as usize + 1) * d], q);
                }
                let s = 1.0 / h.len().max(1) as f32;
                for &x in h {
                    axpy::<false>(s, &hist_t.w[x as usize * d..(x as usize + 1) * d], q);
                }
                *qn = normalise(q);
                let i = pairs.item[e];
                let feats = self.item_feature_indices(i);
                if keep_id[j] || feats.is_empty() {
                    let i = i as usize;
                    c.copy_from_slice(&item_t.w[i * d..(i + 1) * d]);
                }
                for &f in feats {
                    axpy::<false>(1.0, &feat_t.w[f as usize * d..(f as usize + 1) * d], c);
                }
                *cn = normalise(c);
            });
        let inv_t = 1.0 / cfg.temperature;
        // Logits, softmax and d(loss)/d(logit) (scaled by 1/τ), one row per query.
        let mut gs = vec![0f32; b * b];
        gs.par_chunks_mut(b).enumerate().for_each(|(j, row)| {
            matvec(&cs, &qs[j * d..(j + 1) * d], d, row);
            let ij = pairs.item[batch[j]];
            for (k, s) in row.iter_mut().enumerate() {
                let ik = pairs.item[batch[k]];
                *s = if k != j && ik == ij {
                    f32::NEG_INFINITY
                } else {
                    *s * inv_t - cfg.logq * pairs.log_p[ik as usize]
                };
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (k, s) in row.iter_mut().enumerate() {
                *s = (*s / sum - if k == j { 1.0 } else { 0.0 }) * inv_t / b as f32;
            }
        });
        // d(loss)/d(query_j) = Σ_k g_jk c_k and d/d(cand_k) = Σ_j g_jk q_j, then
        // back through the normalisation.
        let mut gq = vec![0f32; b * d];
        gq.par_chunks_mut(d).enumerate().for_each(|(j, g)| {
            vecmat(&gs[j * b..(j + 1) * b], &cs, d, g);
            through_normalise(g, &qs[j * d..(j + 1) * d], qn[j]);
        });
        let mut gt = vec![0f32; b * b];
        gt.par_chunks_mut(b).enumerate().for_each(|(k, col)| {
            for (j, x) in col.iter_mut().enumerate() {
                *x = gs[j * b + k];
            }
        });
        let mut gc = vec![0f32; b * d];
        gc.par_chunks_mut(d).enumerate().for_each(|(k, g)| {
            vecmat(&gt[k * b..(k + 1) * b], &qs, d, g);
            through_normalise(g, &cs[k * d..(k + 1) * d], cn[k]);
        });
        let gq: Vec<&[f32]> = gq.chunks_exact(d).collect();
        let gc: Vec<&[f32]> = gc.chunks_exact(d).collect();
        // Into the tables, in example order.
        for (j, &e) in batch.iter().enumerate() {
            let keep = [keep_user[j], keep_account[j], keep_hist[j]];
            let (user, account, h) = self.query_inputs(pairs, e, keep);
            if let Some(u) = user {
                user_t.add(u, d, 1.0, gq[j]);
            }
            for &f in account {
                feat_t.add(f, d, 1.0, gq[j]);
            }
            let s = 1.0 / h.len().max(1) as f32;
            for &x in h {
                hist_t.add(x, d, s, gq[j]);
            }
            let i = pairs.item[e];
            let feats = self.item_feature_indices(i);
            if keep_id[j] || feats.is_empty() {
                item_t.add(i, d, 1.0, gc[j]);
            }
            for &f in feats {
                feat_t.add(f, d, 1.0, gc[j]);
            }
        }
    }

    /// What example `e`'s query is made of, given what its dropouts keep
    /// (`[user id, account, history]`): the user's row (when kept, or when
    /// nothing else is left), their account's features and their history.
    fn query_inputs<'a>(
        &'a self,
        pairs: &'a Pairs,
        e: usize,
        [keep_user, keep_account, keep_hist]: [bool; 3],
    ) -> (Option<u32>, &'a [u32], &'a [u32]) {
        let u = pairs.user[e];
        let history = if keep_hist { pairs.history(e) } else { &[] };
        let account = match pairs.account[u as usize] {
            k if keep_account && k != NO_ACCOUNT => self.accounts.features(k),
            _ => &[],
        };
        let user = (keep_user || (history.is_empty() && account.is_empty())).then_some(u);
        (user, account, history)
    }

    /// Recomputes every candidate vector from the tables (after training or loading).
    pub(crate) fn refresh_candidates(&mut self) {
        let d = self.config.dim;
        let mut cand = vec![0f32; self.items.len() * d];
        cand.par_chunks_mut(d).enumerate().for_each(|(i, c)| {
            c.copy_from_slice(&self.item_emb[i * d..(i + 1) * d]);
            for &f in self.item_feature_indices(i as u32) {
                axpy::<false>(1.0, &self.feat_emb[f as usize * d..(f as usize + 1) * d], c);
            }
            normalise(c);
        });
        self.candidates = cand;
    }

    /// The query vector of a `user` (their trained embedding when the model
    /// knows them, their account's features when it was given them) and/or a
    /// `history` of catalogue items (all of them averaged: a served history has
    /// no time order, and the mean of many items is close to the mean of the most
    /// recent ones trained on); `None` when there is none of these.
    pub(crate) fn query(&self, user: Option<&str>, history: &[u32]) -> Option<Vec<f32>> {
        let d = self.config.dim;
        let h = history;
        let known = user.and_then(|u| self.users.get(u));
        let account = user.map_or(&[][..], |u| self.accounts.of(u));
        if known.is_none() && account.is_empty() && h.is_empty() {
            return None;
        }
        let mut q = vec![0f32; d];
        if let Some(u) = known {
            q.copy_from_slice(&self.user_emb[u as usize * d..(u as usize + 1) * d]);
        }
        for &f in account {
            axpy::<false>(
                1.0,
                &self.feat_emb[f as usize * d..(f as usize + 1) * d],
                &mut q,
            );
        }
        let s = 1.0 / h.len().max(1) as f32;
        for &x in h {
            axpy::<false>(
                s,
                &self.hist_emb[x as usize * d..(x as usize + 1) * d],
                &mut q,
            );
        }
        normalise(&mut q);
        Some(q)
    }

    /// Scores of every catalogue item for a query vector.
    pub(crate) fn scores_for(&self, q: &[f32], out: &mut [f32]) {
        matvec(&self.candidates, q, self.config.dim, out);
    }

    /// The candidate vector of catalogue item `item`.
    pub(crate) fn candidate(&self, item: u32) -> &[f32] {
        let d = self.config.dim;
        &self.candidates[item as usize * d..(item as usize + 1) * d]
    }

    /// Cosine similarity of candidate vectors, for "similar items".
    pub(crate) fn item_similarities(&self, item: u32, out: &mut [f32]) {
        self.scores_for(self.candidate(item), out);
    }

    /// The candidate vector of an item known only by its features (`field=value`
    /// strings; unknown ones are ignored); `None` when no feature is known.
    pub fn cold_item_vector(&self, features: &[String]) -> Option<Vec<f32>> {
        let d = self.config.dim;
        let mut c = vec![0f32; d];
        let mut any = false;
        for name in features {
            if let Some(f) = self.features.get(name) {
                any = true;
                axpy::<false>(
                    1.0,
                    &self.feat_emb[f as usize * d..(f as usize + 1) * d],
                    &mut c,
                );
            }
        }
        any.then(|| {
            normalise(&mut c);
            c
        })
    }

    /// The candidate vector of an item outside the catalogue that had features at
    /// training time (a new design); `None` for any other item.
    pub(crate) fn cold_vector_of(&self, item_id: &str) -> Option<Vec<f32>> {
        let k = self.cold.ids.get(item_id)?;
        let names: Vec<String> = self
            .cold
            .features(k)
            .iter()
            .map(|&f| self.features.id(f).to_string())
            .collect();
        self.cold_item_vector(&names)
    }

    /// How many customers the model has account features for.
    pub fn accounts(&self) -> usize {
        self.accounts.ids.len()
    }

    /// Whether the model learnt an embedding for feature `name` (`field=value`):
    /// what a model fine-tuned from this one can start from.
    pub fn knows_feature(&self, name: &str) -> bool {
        self.features.get(name).is_some()
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }
}
