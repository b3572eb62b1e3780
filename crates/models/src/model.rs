//! The trained model behind one type, whatever its kind, with the popularity
//! model it falls back on.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ann::IvfIndex;
use crate::linalg::matvec;
use crate::popular::Popular;
use crate::session::{ItemGraph, SessionConfig, Vsknn};
use crate::{
    Als, AlsConfig, Ease, EaseConfig, Error, Features, Interaction, Interactions, PopularConfig,
    Result, Signal, TwoTower, TwoTowerConfig, Vocab,
};

/// Which algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Time-decayed popularity.
    Popular,
    /// Implicit ALS.
    Als,
    /// EASE.
    Ease,
    /// Two-tower retrieval (query and candidate towers, in-batch softmax).
    #[serde(rename = "two-tower")]
    TwoTower,
    /// Item-kNN, (asymmetric) cosine with shrinkage: a session model.
    #[serde(rename = "item-knn")]
    ItemKnn,
    /// RP3beta random walk: a session model.
    Rp3beta,
    /// Sequential rules: a session model.
    Sr,
    /// V-SKNN session-based kNN: a session model.
    Vsknn,
    /// Item-kNN, RP3beta, SR and sparse EASE blended by tuned weights: a session model.
    Blend,
}

impl ModelKind {
    /// The name used on the command line and in artifacts.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Popular => "popular",
            ModelKind::Als => "als",
            ModelKind::Ease => "ease",
            ModelKind::TwoTower => "two-tower",
            ModelKind::ItemKnn => "item-knn",
            ModelKind::Rp3beta => "rp3beta",
            ModelKind::Sr => "sr",
            ModelKind::Vsknn => "vsknn",
            ModelKind::Blend => "blend",
        }
    }

    /// Every kind, in the order the CLI lists them.
    pub const ALL: [ModelKind; 9] = [
        ModelKind::Popular,
        ModelKind::Als,
        ModelKind::Ease,
        ModelKind::TwoTower,
        ModelKind::ItemKnn,
        ModelKind::Rp3beta,
        ModelKind::Sr,
        ModelKind::Vsknn,
        ModelKind::Blend,
    ];

    /// Whether it scores a visitor from the ordered items of their session
    /// only (item-kNN, RP3beta, SR, V-SKNN): such a model serves sessions and
    /// `tune` scores it on the session protocol.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            ModelKind::ItemKnn
                | ModelKind::Rp3beta
                | ModelKind::Sr
                | ModelKind::Vsknn
                | ModelKind::Blend
        )
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "popular" => Ok(ModelKind::Popular),
            "als" => Ok(ModelKind::Als),
            "ease" => Ok(ModelKind::Ease),
            "two-tower" => Ok(ModelKind::TwoTower),
            "item-knn" => Ok(ModelKind::ItemKnn),
            "rp3beta" => Ok(ModelKind::Rp3beta),
            "sr" => Ok(ModelKind::Sr),
            "vsknn" => Ok(ModelKind::Vsknn),
            "blend" => Ok(ModelKind::Blend),
            _ => Err(Error::Config {
                name: "model",
                message: format!(
                    "{s:?} (expected popular, als, ease, two-tower, item-knn, rp3beta, sr, vsknn or blend)"
                ),
            }),
        }
    }
}

/// Everything that decides a model: the kind, the training signal and every
/// kind's hyper-parameters (only the chosen kind's and popularity's are used).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Which algorithm.
    pub kind: ModelKind,
    /// How rows become training values.
    #[serde(default)]
    pub signal: Signal,
    /// Popularity (also every model's fallback).
    #[serde(default)]
    pub popular: PopularConfig,
    /// ALS hyper-parameters.
    #[serde(default)]
    pub als: AlsConfig,
    /// EASE hyper-parameters.
    #[serde(default)]
    pub ease: EaseConfig,
    /// Two-tower hyper-parameters.
    #[serde(default)]
    pub two_tower: TwoTowerConfig,
    /// Session models' hyper-parameters (item-kNN, RP3beta, SR, V-SKNN).
    #[serde(default)]
    pub session: SessionConfig,
}

impl ModelSpec {
    /// The defaults for `kind`.
    pub fn new(kind: ModelKind) -> Self {
        ModelSpec {
            kind,
            signal: Signal::default(),
            popular: PopularConfig::default(),
            als: AlsConfig::default(),
            ease: EaseConfig::default(),
            two_tower: TwoTowerConfig::default(),
            session: SessionConfig::default(),
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The item.
    pub item_id: String,
    /// Its score (comparable only within one answer).
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inner {
    Popular,
    Als(Als),
    Ease(Ease),
    TwoTower(Box<TwoTower>),
    Graph(ItemGraph),
    Vsknn(Vsknn),
}

/// A trained model: the chosen algorithm plus the popularity model it falls back
/// on for visitors it knows nothing about and for category filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) spec: ModelSpec,
    pub(crate) popular: Popular,
    pub(crate) inner: Inner,
    pub(crate) reference_ts: i64,
}

/// Trains `spec` on `rows` (a dataset's train part). `features` gives items their
/// category (per-category popularity) and, for the two-tower model, every
/// feature its candidate tower embeds.
pub fn train(rows: &[Interaction], spec: &ModelSpec, features: Option<&Features>) -> Result<Model> {
    let data = Interactions::build(rows, &spec.signal)?;
    Model::fit(rows, &data, spec, features)
}

impl Model {
    /// Trains on rows already indexed as `data` (built from `rows` with `spec.signal`).
    pub fn fit(
        rows: &[Interaction],
        data: &Interactions,
        spec: &ModelSpec,
        features: Option<&Features>,
    ) -> Result<Model> {
        let popular = Popular::fit(rows, data, spec.popular, features)?;
        let inner = match spec.kind {
            ModelKind::Popular => Inner::Popular,
            ModelKind::Als => Inner::Als(Als::fit(data, &spec.als)?),
            ModelKind::Ease => Inner::Ease(Ease::fit(data, &spec.ease)?),
            ModelKind::TwoTower => Inner::TwoTower(Box::new(TwoTower::fit(
                rows,
                data,
                features,
                &spec.two_tower,
            )?)),
            ModelKind::ItemKnn => Inner::Graph(ItemGraph::item_knn(data, &spec.session)?),
            ModelKind::Rp3beta => Inner::Graph(ItemGraph::rp3beta(data, &spec.session)?),
            ModelKind::Sr => Inner::Graph(ItemGraph::sequential_rules(rows, data, &spec.session)?),
            ModelKind::Vsknn => Inner::Vsknn(Vsknn::fit(rows, data, &spec.session)?),
            ModelKind::Blend => {
                Inner::Graph(ItemGraph::blend(rows, data, &spec.ease, &spec.session)?)
            }
        };
        Ok(Model {
            spec: *spec,
            popular,
            inner,
            reference_ts: data.reference_ts,
        })
    }

    /// A graph model (item-kNN, RP3beta, SR, blend) around a graph already built
    /// from `rows` (indexed as `data`) with `spec`: `tune` builds the blend's
    /// members once and merges them per trial.
    pub(crate) fn from_graph(
        rows: &[Interaction],
        data: &Interactions,
        spec: &ModelSpec,
        features: Option<&Features>,
        graph: ItemGraph,
    ) -> Result<Model> {
        Ok(Model {
            spec: *spec,
            popular: Popular::fit(rows, data, spec.popular, features)?,
            inner: Inner::Graph(graph),
            reference_ts: data.reference_ts,
        })
    }

    /// A new model from `previous` and `rows` (the new, complete train part):
    /// known users and items keep their factors (ALS) or embeddings (two-tower)
    /// as the starting point, new ones are added; then `spec.als.iterations`
    /// (ALS) or `spec.two_tower.epochs` (two-tower) are run. Only those two
    /// kinds warm-start, each from a model of its own kind.
    pub fn warm_start(
        previous: &Model,
        rows: &[Interaction],
        spec: &ModelSpec,
        features: Option<&Features>,
    ) -> Result<Model> {
        let (users, items) = match (&previous.inner, spec.kind) {
            (Inner::Als(prev), ModelKind::Als) => prev.vocab(),
            (Inner::TwoTower(prev), ModelKind::TwoTower) => prev.vocab(),
            _ => {
                return Err(Error::Config {
                    name: "warm-start",
                    message: format!(
                    "only ALS and two-tower warm-start, each from its own kind (not {} from {})",
                    spec.kind, previous.spec.kind
                ),
                })
            }
        };
        let data = Interactions::build_with_vocab(rows, &spec.signal, users, items)?;
        let popular = Popular::fit(rows, &data, spec.popular, features)?;
        let inner = match &previous.inner {
            Inner::Als(prev) => Inner::Als(Als::warm_start(prev, &data, &spec.als)?),
            Inner::TwoTower(prev) => Inner::TwoTower(Box::new(TwoTower::warm_start(
                prev,
                rows,
                &data,
                features,
                &spec.two_tower,
            )?)),
            _ => unreachable!("checked above"),
        };
        Ok(Model {
            spec: *spec,
            popular,
            inner,
            reference_ts: data.reference_ts,
        })
    }

    /// A two-tower model trained on `rows` starting from the feature embeddings
    /// of `pretrained` (a two-tower model of another data set, e.g. a public
    /// one): pre-training, then fine-tuning. Only features (`genre=…`,
    /// `category=…`) carry over; ids of another data set mean nothing here.
    pub fn fine_tune(
        pretrained: &Model,
        rows: &[Interaction],
        spec: &ModelSpec,
        features: Option<&Features>,
    ) -> Result<Model> {
        let (Some(p), ModelKind::TwoTower) = (pretrained.two_tower(), spec.kind) else {
            return Err(Error::Config {
                name: "fine-tune",
                message: "needs a two-tower model and a two-tower spec".into(),
            });
        };
        let data = Interactions::build(rows, &spec.signal)?;
        let popular = Popular::fit(rows, &data, spec.popular, features)?;
        let tt = TwoTower::fit_from(Some(p), rows, &data, features, &spec.two_tower)?;
        Ok(Model {
            spec: *spec,
            popular,
            inner: Inner::TwoTower(Box::new(tt)),
            reference_ts: data.reference_ts,
        })
    }

    /// What it was trained with.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its algorithm.
    pub fn kind(&self) -> ModelKind {
        self.spec.kind
    }

    /// The catalogue it ranks (every item of its training rows).
    pub fn items(&self) -> &Vocab {
        &self.popular.items
    }

    /// The popularity model inside (every model has one).
    pub fn popular(&self) -> &Popular {
        &self.popular
    }

    /// The ALS model, when it is one.
    pub fn als(&self) -> Option<&Als> {
        match &self.inner {
            Inner::Als(a) => Some(a),
            _ => None,
        }
    }

    /// The EASE model, when it is one.
    pub fn ease(&self) -> Option<&Ease> {
        match &self.inner {
            Inner::Ease(e) => Some(e),
            _ => None,
        }
    }

    /// The two-tower model, when it is one.
    pub fn two_tower(&self) -> Option<&TwoTower> {
        match &self.inner {
            Inner::TwoTower(t) => Some(t),
            _ => None,
        }
    }

    /// Turns raw rows into the model's `(item, value)` history: its signal, decayed
    /// relative to `reference_ts`; rows of items outside the catalogue are ignored.
    /// A session model reads the rows' order instead: distinct items, most recent
    /// first, weighted by recency ([`crate::session::context`]).
    pub(crate) fn history(
        &self,
        rows: impl IntoIterator<Item = (u32, f32, i64, bool)>,
        reference_ts: i64,
    ) -> Vec<(u32, f32)> {
        if self.kind().is_session() {
            return crate::session::context(rows, &self.spec.signal, self.spec.session.recency);
        }
        self.spec.signal.aggregate(rows, reference_ts)
    }

    /// Scores of every catalogue item for a user: ALS uses the trained vector of a
    /// known `user` and folds in `history` otherwise; EASE scores `history`;
    /// two-tower's query tower takes the known `user` and/or `history`;
    /// popularity, and any model with nothing to go on, scores popularity.
    pub(crate) fn score_into(&self, user: Option<&str>, history: &[(u32, f32)], out: &mut [f32]) {
        if !self.personal_scores(user, history, out) {
            out.copy_from_slice(&self.popular.scores);
        }
    }

    /// [`Model::score_into`] when the model has something to go on for this
    /// request: writes `out` and returns true; false (`out` untouched) when the
    /// answer is popularity's.
    fn personal_scores(&self, user: Option<&str>, history: &[(u32, f32)], out: &mut [f32]) -> bool {
        match &self.inner {
            Inner::Als(als) => {
                if let Some(u) = user.and_then(|u| als.users.get(u)) {
                    als.scores_for(als.user_vector(u), out);
                    return true;
                }
                if !history.is_empty() {
                    als.scores_for(&als.fold_in_row(history), out);
                    return true;
                }
            }
            Inner::Ease(ease) => {
                if history
                    .iter()
                    .any(|&(i, _)| ease.position[i as usize] != crate::ease::INACTIVE)
                {
                    ease.scores_for(history, out);
                    return true;
                }
            }
            Inner::TwoTower(tt) => {
                let hist: Vec<u32> = history.iter().map(|&(i, _)| i).collect();
                if let Some(q) = tt.query(user, &hist) {
                    tt.scores_for(&q, out);
                    return true;
                }
            }
            Inner::Graph(g) => {
                if g.knows(history) {
                    g.scores_for(history, out);
                    return true;
                }
            }
            Inner::Vsknn(v) => {
                if v.knows(history) {
                    v.scores_for(history, out);
                    return true;
                }
            }
            Inner::Popular => {}
        }
        false
    }

    /// [`Model::top_k`] of the popularity scores, walking their ranking: the
    /// same items in the same order, after a look at a few items, not all.
    pub(crate) fn top_k_popular(
        &self,
        k: usize,
        exclude: &HashSet<u32>,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        self.popular
            .ranking()
            .iter()
            .copied()
            .filter(|i| !exclude.contains(i) && keep(*i))
            .take(k)
            .collect()
    }

    /// Whether the model was trained on `user_id` itself (ALS' factors,
    /// two-tower's id embedding); the other kinds know no one, only histories.
    pub fn knows_user(&self, user_id: &str) -> bool {
        match &self.inner {
            Inner::Als(als) => als.users.get(user_id).is_some(),
            Inner::TwoTower(tt) => tt.users.get(user_id).is_some(),
            Inner::Ease(_) | Inner::Graph(_) | Inner::Vsknn(_) | Inner::Popular => false,
        }
    }

    /// Whether any of `history`'s items is in the catalogue (what the model
    /// scores a history from; the others it cannot read).
    pub fn knows_any(&self, history: &[Interaction]) -> bool {
        let items = self.items();
        history.iter().any(|r| items.get(&r.item_id).is_some())
    }

    /// Whether the model knows `user_id` by their shop account (a two-tower
    /// model given account features): it can answer their first visit.
    pub fn knows_account(&self, user_id: &str) -> bool {
        self.two_tower()
            .is_some_and(|t| !t.accounts.of(user_id).is_empty())
    }

    /// Whether ranking for `user_id` reads the request's history: not when ALS
    /// was trained on the user (their factors answer), nor for popularity. A
    /// caller may skip loading the history when this is false and the request
    /// does not set `exclude_history`: the answer is the same.
    pub fn needs_history(&self, user_id: Option<&str>) -> bool {
        match &self.inner {
            Inner::Als(als) => user_id.is_none_or(|u| als.users.get(u).is_none()),
            // The query tower reads the user's recent items.
            Inner::Ease(_) | Inner::TwoTower(_) | Inner::Graph(_) | Inner::Vsknn(_) => true,
            Inner::Popular => false,
        }
    }

    /// The top `k` item indices of `scores`, best first, skipping `exclude` and
    /// scores that are not finite; ties go to the more popular, then lower index.
    ///
    /// One pass with a heap of the `k` best so far: an item scoring below the
    /// current `k`-th is dropped on one comparison, so `exclude` and `keep` are
    /// asked only about the few items that would enter. The order is total (the
    /// index breaks every tie), so the answer is the same as sorting everything.
    pub(crate) fn top_k(
        &self,
        scores: &[f32],
        k: usize,
        exclude: &HashSet<u32>,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        if k == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        for (i, &score) in scores.iter().enumerate() {
            self.offer(&mut heap, k, i as u32, score, exclude, &keep);
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|r| r.index)
            .collect()
    }

    /// Offers item `index` with `score` to a heap of the `k > 0` best so far.
    #[inline]
    fn offer(
        &self,
        heap: &mut BinaryHeap<Ranked>,
        k: usize,
        index: u32,
        score: f32,
        exclude: &HashSet<u32>,
        keep: &impl Fn(u32) -> bool,
    ) {
        if !score.is_finite() {
            return;
        }
        let cand = Ranked {
            score,
            pop: self.popular.scores[index as usize],
            index,
        };
        if heap.len() == k {
            let worst = heap.peek().expect("k > 0");
            // Most items stop here: below the k-th best on the score alone.
            if score < worst.score || cand >= *worst {
                return;
            }
        }
        if exclude.contains(&index) || !keep(index) {
            return;
        }
        if heap.len() == k {
            *heap.peek_mut().expect("k > 0") = cand;
        } else {
            heap.push(cand);
        }
    }

    /// [`Model::top_k`] of the scores `query` gives, through `index`: lists are
    /// visited by their bound and the search stops once the `k`-th best found
    /// scores above the next list's bound, so the answer (ties included) is the
    /// one exact scoring gives, with the same scores.
    fn top_k_indexed(
        &self,
        index: &IvfIndex,
        query: &[f32],
        k: usize,
        exclude: &HashSet<u32>,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        let mut block = Vec::new();
        for probe in index.probes(query) {
            if heap.len() == k && heap.peek().expect("k > 0").score > probe.bound {
                break;
            }
            let (ids, rows) = index.list(probe.list);
            block.resize(ids.len(), 0f32);
            matvec(rows, query, query.len(), &mut block);
            for (&i, &score) in ids.iter().zip(&block) {
                self.offer(&mut heap, k, i, score, exclude, &keep);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|r| (r.index, r.score))
            .collect()
    }

    /// The item vectors a retrieval index can be built over (ALS item factors,
    /// two-tower candidate vectors) and their width; `None` for models that do
    /// not score by a dot product with one query vector.
    pub(crate) fn item_vectors(&self) -> Option<(&[f32], usize)> {
        match &self.inner {
            Inner::Als(als) => Some((&als.item_factors, als.factors())),
            Inner::TwoTower(tt) => Some((&tt.candidates, tt.config.dim)),
            Inner::Ease(_) | Inner::Graph(_) | Inner::Vsknn(_) | Inner::Popular => None,
        }
    }

    /// An IVF index over this model's item vectors, for [`Request::index`]:
    /// `None` for models without item vectors and for catalogues small enough
    /// ([`crate::ann::MIN_ITEMS`]) that scoring every item is as fast. Seeded:
    /// the same model gives the same index.
    pub fn retrieval_index(&self) -> Option<IvfIndex> {
        let (vectors, dim) = self.item_vectors()?;
        (vectors.len() / dim >= crate::ann::MIN_ITEMS).then(|| IvfIndex::build(vectors, dim, 17))
    }

    /// The one vector whose dot product with each item vector is the item's
    /// score (see [`Model::score_into`]), when the model scores that way for
    /// this request.
    fn query_vector(&self, user: Option<&str>, history: &[(u32, f32)]) -> Option<Vec<f32>> {
        match &self.inner {
            Inner::Als(als) => match user.and_then(|u| als.users.get(u)) {
                Some(u) => Some(als.user_vector(u).to_vec()),
                None => (!history.is_empty()).then(|| als.fold_in_row(history)),
            },
            Inner::TwoTower(tt) => {
                let hist: Vec<u32> = history.iter().map(|&(i, _)| i).collect();
                tt.query(user, &hist)
            }
            Inner::Ease(_) | Inner::Graph(_) | Inner::Vsknn(_) | Inner::Popular => None,
        }
    }

    /// A request's rows in the model's terms: the rows of catalogue items as
    /// `(item, weight, timestamp, synthetic)`, and the history the model scores
    /// from them (see [`Model::history`]), decayed relative to the latest row.
    #[allow(clippy::type_complexity)]
    fn request_history(
        &self,
        rows: &[Interaction],
    ) -> (Vec<(u32, f32, i64, bool)>, Vec<(u32, f32)>) {
        let items = self.items();
        let idx_rows: Vec<(u32, f32, i64, bool)> = rows
            .iter()
            .filter_map(|r| {
                items
                    .get(&r.item_id)
                    .map(|i| (i, r.weight, r.timestamp, r.synthetic))
            })
            .collect();
        let now = rows
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(self.reference_ts);
        let history = self.history(idx_rows.iter().copied(), now);
        (idx_rows, history)
    }

    /// Top-`k` recommendations for a user.
    ///
    /// `user_id` is used when the model knows it (ALS); `history` is the user's
    /// or visitor's interactions (EASE scores them, ALS folds them in for an unknown
    /// user). `exclude` items never appear; `exclude_history` also removes the
    /// history's items. With `category`, only that category's items are ranked.
    /// When the model has nothing to go on, the answer is popularity; when it has
    /// fewer than `k` items to rank, popularity fills the rest.
    pub fn recommend(&self, req: &Request<'_>) -> Vec<Scored> {
        let items = self.items();
        let (idx_rows, history) = self.request_history(req.history);
        let mut exclude: HashSet<u32> = req.exclude.iter().filter_map(|id| items.get(id)).collect();
        if req.exclude_history {
            exclude.extend(idx_rows.iter().map(|r| r.0));
        }
        let category = match req.category {
            Some(c) => match self.popular.category_index(c) {
                Some(ci) => Some(ci),
                None => return Vec::new(),
            },
            None => None,
        };
        let keep = |i: u32| category.is_none_or(|c| self.popular.in_category(i, c));
        let indexed = req
            .index
            .and_then(|index| Some((index, self.query_vector(req.user_id, &history)?)));
        let ranked: Vec<(u32, f32)> = match indexed {
            Some((index, query)) => self.top_k_indexed(index, &query, req.k, &exclude, keep),
            None => {
                let mut scores = vec![0f32; items.len()];
                let (top, scores) = if self.personal_scores(req.user_id, &history, &mut scores) {
                    (self.top_k(&scores, req.k, &exclude, keep), &scores)
                } else {
                    // Nothing to go on: popularity's ranking, walked.
                    let top = self.top_k_popular(req.k, &exclude, keep);
                    (top, &self.popular.scores)
                };
                top.into_iter().map(|i| (i, scores[i as usize])).collect()
            }
        };
        let mut out: Vec<Scored> = ranked
            .iter()
            .map(|&(i, score)| Scored {
                item_id: items.id(i).to_string(),
                score,
            })
            .collect();
        let mut top: Vec<u32> = ranked.iter().map(|&(i, _)| i).collect();
        if top.len() < req.k {
            exclude.extend(top.iter().copied());
            top = self.top_k_popular(req.k - top.len(), &exclude, keep);
            // Fillers rank below every scored item whatever their raw score.
            let floor = out.last().map_or(0.0, |s| s.score.min(0.0)) - 1.0;
            out.extend(top.iter().enumerate().map(|(r, &i)| Scored {
                item_id: items.id(i).to_string(),
                score: floor - r as f32,
            }));
        }
        out
    }

    /// Items most like `item_id`: ALS by cosine of item factors, EASE by the
    /// item's row of weights, two-tower by cosine of candidate vectors (also for
    /// an item that had features and no row at training time: a new design),
    /// popularity by the most popular of its category.
    pub fn similar(&self, item_id: &str, k: usize) -> Vec<Scored> {
        let items = self.items();
        let Some(item) = items.get(item_id) else {
            // A new design the two-tower model knows by its features only.
            return self
                .two_tower()
                .and_then(|t| t.cold_vector_of(item_id))
                .map_or_else(Vec::new, |v| self.nearest(&v, k));
        };
        let mut scores = vec![0f32; items.len()];
        match &self.inner {
            Inner::Als(a) => a.item_similarities(item, &mut scores),
            Inner::Ease(e) => e.item_row(item, &mut scores),
            Inner::TwoTower(t) => t.item_similarities(item, &mut scores),
            Inner::Graph(g) => g.scores_for(&[(item, 1.0)], &mut scores),
            Inner::Vsknn(v) => v.scores_for(&[(item, 1.0)], &mut scores),
            Inner::Popular => scores.copy_from_slice(&self.popular.scores),
        }
        let cat = self.popular.item_category[item as usize];
        // Popularity knows nothing of likeness but the category.
        let by_category =
            matches!(self.inner, Inner::Popular) && cat != crate::popular::NO_CATEGORY;
        let keep = |i: u32| !by_category || self.popular.in_category(i, cat);
        let exclude = HashSet::from([item]);
        self.top_k(&scores, k, &exclude, keep)
            .into_iter()
            .map(|i| Scored {
                item_id: items.id(i).to_string(),
                score: scores[i as usize],
            })
            .collect()
    }

    /// The catalogue's items most like a design the model was not trained on,
    /// known by its features only (`field=value`, as at training: a design
    /// added to the shop after it): two-tower embeds it from them; other
    /// models, and features the model never saw, give nothing.
    pub fn similar_by_features(&self, features: &[String], k: usize) -> Vec<Scored> {
        self.embed_design(features)
            .map_or_else(Vec::new, |v| self.nearest(&v, k))
    }

    /// The `k` items whose two-tower candidate vectors score highest against `v`.
    fn nearest(&self, v: &[f32], k: usize) -> Vec<Scored> {
        let Some(tt) = self.two_tower() else {
            return Vec::new();
        };
        let mut scores = vec![0f32; self.items().len()];
        tt.scores_for(v, &mut scores);
        self.top_k(&scores, k, &HashSet::new(), |_| true)
            .into_iter()
            .map(|i| Scored {
                item_id: self.items().id(i).to_string(),
                score: scores[i as usize],
            })
            .collect()
    }

    /// Whether the model can rank `item_id` itself: an item of its catalogue,
    /// or (two-tower) one it knew by its features at training. A design added
    /// since is not one: [`Model::embed_design`] embeds it from its features.
    pub fn knows_design(&self, item_id: &str) -> bool {
        self.items().get(item_id).is_some()
            || self
                .two_tower()
                .is_some_and(|t| t.cold.ids.get(item_id).is_some())
    }

    /// The vector of a design the model was not trained on, from its features
    /// (`field=value`, named as at training): two-tower only; `None` for other
    /// models and for features the model never saw. Score it with
    /// [`Model::score_designs`].
    pub fn embed_design(&self, features: &[String]) -> Option<Vec<f32>> {
        self.two_tower()?.cold_item_vector(features)
    }

    /// Scores of designs embedded by [`Model::embed_design`], `(id, vector)`, on
    /// the scale of the scores the model gives catalogue items for `anchor`,
    /// best first; nothing when the model has no vector for `anchor`.
    pub fn score_designs(&self, anchor: Anchor<'_>, designs: &[(&str, &[f32])]) -> Vec<Scored> {
        let Some(tt) = self.two_tower() else {
            return Vec::new();
        };
        let query = match anchor {
            Anchor::Asker { user_id, history } => {
                let (_, history) = self.request_history(history);
                self.query_vector(user_id, &history)
            }
            Anchor::Item(id) => match self.items().get(id) {
                Some(i) => Some(tt.candidate(i).to_vec()),
                None => tt.cold_vector_of(id),
            },
            Anchor::Features(features) => tt.cold_item_vector(features),
        };
        let Some(query) = query else {
            return Vec::new();
        };
        let mut out: Vec<Scored> = designs
            .iter()
            .filter(|(_, v)| v.len() == query.len())
            .map(|(id, v)| {
                // The kernel that scores the catalogue, so scores compare exactly.
                let mut score = [0f32];
                matvec(v, &query, query.len(), &mut score);
                Scored {
                    item_id: (*id).to_owned(),
                    score: score[0],
                }
            })
            .filter(|s| s.score.is_finite())
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.item_id.cmp(&b.item_id))
        });
        out
    }

    /// The `k` most popular items, optionally of one category.
    pub fn most_popular(&self, k: usize, category: Option<&str>) -> Vec<Scored> {
        let cat = match category {
            Some(c) => match self.popular.category_index(c) {
                Some(ci) => Some(ci),
                None => return Vec::new(),
            },
            None => None,
        };
        let keep = |i: u32| cat.is_none_or(|c| self.popular.in_category(i, c));
        let scores = &self.popular.scores;
        self.top_k_popular(k, &HashSet::new(), keep)
            .into_iter()
            .map(|i| Scored {
                item_id: self.items().id(i).to_string(),
                score: scores[i as usize],
            })
            .collect()
    }
}

/// An item in [`Model::top_k`]'s heap, ordered by rank: `Less` ranks first
/// (higher score, then more popular, then lower index), so the heap's top is
/// the worst of the best `k`.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f32,
    pop: f32,
    index: u32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(other.pop.total_cmp(&self.pop))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// What [`Model::score_designs`] scores new designs against.
#[derive(Debug, Clone, Copy)]
pub enum Anchor<'a> {
    /// A shopper: their user id, when the model may know it, and their rows
    /// (as for [`Request`]).
    Asker {
        /// The shop's user id.
        user_id: Option<&'a str>,
        /// Their interactions.
        history: &'a [Interaction],
    },
    /// An item of the catalogue (or one the model knew by its features).
    Item(&'a str),
    /// Another design known by its features only.
    Features(&'a [String]),
}

/// A recommendation request (see [`Model::recommend`]).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The shop's user id, when there is one.
    pub user_id: Option<&'a str>,
    /// The user's or visitor's interactions.
    pub history: &'a [Interaction],
    /// How many items.
    pub k: usize,
    /// Items that must not appear.
    pub exclude: &'a [String],
    /// Also leave out the history's items.
    pub exclude_history: bool,
    /// Only this category.
    pub category: Option<&'a str>,
    /// The model's retrieval index ([`Model::retrieval_index`]), when the caller
    /// keeps one: the same answer, without scoring every item.
    pub index: Option<&'a IvfIndex>,
}

impl<'a> Request<'a> {
    /// `k` items for a known user, no history, nothing excluded.
    pub fn user(user_id: &'a str, k: usize) -> Self {
        Request {
            user_id: Some(user_id),
            history: &[],
            k,
            exclude: &[],
            exclude_history: false,
            category: None,
            index: None,
        }
    }

    /// `k` items for a visitor known only by `history`, whose items are left out.
    pub fn visitor(history: &'a [Interaction], k: usize) -> Self {
        Request {
            user_id: None,
            history,
            k,
            exclude: &[],
            exclude_history: true,
            category: None,
            index: None,
        }
    }
}
