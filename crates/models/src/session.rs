//! Session models: a visitor scored from the ordered items of their session only.
//!
//! Two shapes, both sparse so that they train on 100 000 items in minutes:
//!
//! - [`ItemGraph`]: one sparse item × item weight matrix, the `neighbours`
//!   strongest weights per row; a session scores `Σ_i w_i · W[i, ·]` over its
//!   context items `i`. Three ways to build `W`:
//!   - item-kNN (Sarwar et al. 2001; Aiolli 2013 for the asymmetric cosine):
//!     `W[i, j] = x_i·x_j / (‖x_i‖^(2a) ‖x_j‖^(2(1−a)) + shrink)` over the user ×
//!     item matrix (binary or weighted), `a = 0.5` the plain cosine;
//!   - RP3beta (Paudel et al. 2017, Dacrema et al. 2019): the two-step random
//!     walk item → user → item with each transition probability raised to `alpha`,
//!     divided by the target's popularity to the power `beta`;
//!   - SR, sequential rules (Ludewig & Jannach 2018): `W[a, b] += 1 / d` each time
//!     `b` follows `a` within `steps` positions (`d` the distance) in a training
//!     sequence (a user's rows in time order).
//! - [`Vsknn`]: V-SKNN (Ludewig & Jannach 2018), session-based kNN. The training
//!   sessions are kept; a visitor's neighbours are the `neighbours` most similar
//!   among the `sample` most recent sessions sharing an item with the context
//!   (similarity: the context's recency weights of the shared items over the
//!   square root of the neighbour's length), and an item scores the summed
//!   similarity of the neighbours holding it. With
//!   [`SessionConfig::position_decay`] > 0 it is STAN-like (Garg et al. 2019): a
//!   neighbour's items vote less the farther they sit, in the neighbour's visit,
//!   from the shared item most recent in the context.
//!
//! - Blend ([`ItemGraph::blend`]): item-kNN, RP3beta, SR and a sparse EASE
//!   (the collaborative model, each item's strongest weights of B) summed with
//!   tuned weights, each graph's rows scaled to 1 first.
//!
//! The order of the context matters: its distinct items are weighted by how
//! recently they were seen, `w = 1 / (1 + recency · d)` with `d = 0` for the most
//! recent item ([`context`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::matrix::Csr;
use crate::{Error, Interaction, Interactions, Result, Signal, SyntheticPolicy};

/// Session models' hyper-parameters (each kind reads its own).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// Item-kNN, RP3beta, SR: weights kept per item row; V-SKNN: neighbour sessions.
    pub neighbours: usize,
    /// Item-kNN: the shrinkage added to the similarity's denominator.
    pub shrink: f32,
    /// Item-kNN: the asymmetric cosine's `a` in [0, 1] (0.5 = cosine).
    pub asymmetry: f32,
    /// RP3beta: the power of each transition probability.
    pub alpha: f32,
    /// RP3beta: the power of the target's popularity it is divided by.
    pub beta: f32,
    /// SR: the largest distance between two items of a rule.
    pub steps: usize,
    /// V-SKNN: the most recent candidate sessions compared with the context.
    pub sample: usize,
    /// How fast a context item's weight falls with its distance from the most
    /// recent one: `1 / (1 + recency · d)`; 0 weighs the whole context alike.
    pub recency: f32,
    /// Item-kNN, RP3beta: train on the signal's values (`true`) or on which
    /// pairs exist (`false`).
    pub weighted: bool,
    /// Blend: the weights of item-kNN, RP3beta, SR and (sparsified) EASE, each
    /// graph's rows scaled to a largest weight of 1 first; 0 leaves one out.
    pub blend: [f32; 4],
    /// V-SKNN, STAN's third factor (Garg et al. 2019): a neighbour's item at
    /// distance `d` (positions in the neighbour's visit) from the shared item
    /// most recent in the context votes `exp(−position_decay · d)` of the
    /// similarity; 0 (the default) is plain V-SKNN.
    pub position_decay: f32,
}

impl Default for SessionConfig {
    /// The papers' usual settings (neighbourhoods of 100, SR's 10 steps, V-SKNN's
    /// 1 000 most recent sessions); `tune` moves them.
    fn default() -> Self {
        SessionConfig {
            neighbours: 100,
            shrink: 10.0,
            asymmetry: 0.5,
            alpha: 1.0,
            beta: 0.5,
            steps: 10,
            sample: 1000,
            recency: 1.0,
            weighted: false,
            blend: [1.0, 1.0, 1.0, 0.5],
            position_decay: 0.0,
        }
    }
}

impl SessionConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, message: String| Err(Error::Config { name, message });
        if self.neighbours == 0 {
            return bad("neighbours", "0 (must be ≥ 1)".into());
        }
        if !(self.shrink >= 0.0 && self.shrink.is_finite()) {
            return bad("shrink", format!("{} (must be ≥ 0)", self.shrink));
        }
        if !(0.0..=1.0).contains(&self.asymmetry) {
            return bad(
                "asymmetry",
                format!("{} (must be in [0, 1])", self.asymmetry),
            );
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad("alpha", format!("{} (must be > 0)", self.alpha));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return bad("beta", format!("{} (must be ≥ 0)", self.beta));
        }
        if self.steps == 0 {
            return bad("steps", "0 (must be ≥ 1)".into());
        }
        if self.sample == 0 {
            return bad("sample", "0 (must be ≥ 1)".into());
        }
        if !self.blend.iter().all(|w| *w >= 0.0 && w.is_finite())
            || self.blend.iter().all(|w| *w == 0.0)
        {
            return bad(
                "blend",
                format!("{:?} (weights ≥ 0, not all 0)", self.blend),
            );
        }
        if !(self.recency >= 0.0 && self.recency.is_finite()) {
            return bad("recency", format!("{} (must be ≥ 0)", self.recency));
        }
        if !(self.position_decay >= 0.0 && self.position_decay.is_finite()) {
            return bad(
                "position_decay",
                format!("{} (must be ≥ 0)", self.position_decay),
            );
        }
        Ok(())
    }
}

/// The context of a session: its distinct items, most recent first, each with its
/// recency weight `1 / (1 + recency · d)` (`d` = how many distinct items were seen
/// after it). Rows are `(item, weight, timestamp, synthetic)`; their order breaks
/// timestamp ties (later in the slice = more recent); synthetic rows follow
/// `signal`'s policy (dropped only under `Exclude`).
pub fn context(
    rows: impl IntoIterator<Item = (u32, f32, i64, bool)>,
    signal: &Signal,
    recency: f32,
) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, i64)> = rows
        .into_iter()
        .filter(|r| !(r.3 && signal.synthetic == SyntheticPolicy::Exclude))
        .map(|r| (r.0, r.2))
        .collect();
    v.sort_by_key(|r| r.1); // stable: ties keep their order
    let mut out: Vec<(u32, f32)> = Vec::new();
    for &(i, _) in v.iter().rev() {
        if out.iter().all(|p| p.0 != i) {
            let d = out.len() as f32;
            out.push((i, 1.0 / (1.0 + recency * d)));
        }
    }
    out
}

/// A sparse item × item model (item-kNN, RP3beta, SR).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemGraph {
    /// Row `i`: the items `i` leads to, and how strongly.
    pub(crate) w: Csr,
}

/// The `k` largest `(column, value)` pairs of a dense accumulator's touched
/// columns, sorted by column.
fn top_row(cands: &mut Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    cands.retain(|p| p.1 > 0.0 && p.1.is_finite());
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        cands.truncate(k);
    }
    cands.sort_unstable_by_key(|p| p.0);
    std::mem::take(cands)
}

/// Rows `0..n` of a sparse matrix, each from `f(i, acc, touched)`: `f` adds into
/// the dense accumulator and lists the columns it touched; the `k` largest stay.
fn build_rows(n: usize, k: usize, f: impl Fn(usize, &mut [f32], &mut Vec<u32>) + Sync) -> Csr {
    let rows: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0f32; n], Vec::<u32>::new()),
            |(acc, touched), i| {
                f(i, acc, touched);
                let mut cands: Vec<(u32, f32)> = touched
                    .iter()
                    .map(|&j| {
                        let v = acc[j as usize];
                        acc[j as usize] = 0.0;
                        (j, v)
                    })
                    .filter(|&(j, _)| j as usize != i)
                    .collect();
                acc[i] = 0.0;
                touched.clear();
                top_row(&mut cands, k)
            },
        )
        .collect();
    Csr::from_rows(rows)
}

/// The user × item values the item models train on: the signal's or 1.
fn values(data: &Interactions, weighted: bool) -> Csr {
    let mut ui = data.ui.clone();
    if !weighted {
        ui.data.iter_mut().for_each(|v| *v = 1.0);
    }
    ui
}

/// Each user's rows in time order (ties in the given order), as item indices,
/// consecutive repeats collapsed; anonymous users and excluded synthetic rows out.
fn sequences(rows: &[Interaction], data: &Interactions, signal: &Signal) -> Vec<Vec<u32>> {
    let mut by_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); data.users.len()];
    for r in rows {
        if r.synthetic && signal.synthetic == SyntheticPolicy::Exclude {
            continue;
        }
        if let (Some(u), Some(i)) = (data.users.get(&r.user_id), data.items.get(&r.item_id)) {
            by_user[u as usize].push((r.timestamp, i));
        }
    }
    by_user
        .into_iter()
        .map(|mut s| {
            s.sort_by_key(|p| p.0);
            let mut out: Vec<u32> = Vec::with_capacity(s.len());
            for (_, i) in s {
                if out.last() != Some(&i) {
                    out.push(i);
                }
            }
            out
        })
        .collect()
}

impl ItemGraph {
    /// Item-kNN with (asymmetric) cosine and shrinkage.
    pub fn item_knn(data: &Interactions, config: &SessionConfig) -> Result<Self> {
        config.validate()?;
        let n = data.items.len();
        let ui = values(data, config.weighted);
        let iu = ui.transpose(n);
        let norm: Vec<f32> = (0..n)
            .map(|i| iu.row(i).1.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        let (a, shrink) = (config.asymmetry, config.shrink);
        let w = build_rows(n, config.neighbours, |i, acc, touched| {
            let (users, xs) = iu.row(i);
            for (&u, &xu) in users.iter().zip(xs) {
                let (js, vs) = ui.row(u as usize);
                for (&j, &v) in js.iter().zip(vs) {
                    if acc[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    acc[j as usize] += xu * v;
                }
            }
            for &j in touched.iter() {
                let den = norm[i].powf(2.0 * a) * norm[j as usize].powf(2.0 * (1.0 - a)) + shrink;
                acc[j as usize] /= den.max(f32::MIN_POSITIVE);
            }
        });
        Ok(ItemGraph { w })
    }

    /// RP3beta: `W[i, j] = Σ_u P(u | i)^alpha P(j | u)^alpha / pop(j)^beta`.
    pub fn rp3beta(data: &Interactions, config: &SessionConfig) -> Result<Self> {
        config.validate()?;
        let n = data.items.len();
        let ui = values(data, config.weighted);
        let iu = ui.transpose(n);
        let alpha = config.alpha;
        let user_sum: Vec<f32> = (0..ui.n_rows())
            .map(|u| ui.row(u).1.iter().sum::<f32>())
            .collect();
        let item_sum: Vec<f32> = (0..n).map(|i| iu.row(i).1.iter().sum::<f32>()).collect();
        let pop_pow: Vec<f32> = (0..n)
            .map(|j| (iu.row(j).0.len() as f32).max(1.0).powf(config.beta))
            .collect();
        let w = build_rows(n, config.neighbours, |i, acc, touched| {
            let (users, xs) = iu.row(i);
            for (&u, &xu) in users.iter().zip(xs) {
                let p_iu = (xu / item_sum[i]).powf(alpha);
                let us = user_sum[u as usize];
                let (js, vs) = ui.row(u as usize);
                for (&j, &v) in js.iter().zip(vs) {
                    if acc[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    acc[j as usize] += p_iu * (v / us).powf(alpha);
                }
            }
            for &j in touched.iter() {
                acc[j as usize] /= pop_pow[j as usize];
            }
        });
        Ok(ItemGraph { w })
    }

    /// SR: rules `a → b` weighted `1 / distance` within `steps` positions.
    pub fn sequential_rules(
        rows: &[Interaction],
        data: &Interactions,
        config: &SessionConfig,
    ) -> Result<Self> {
        config.validate()?;
        let n = data.items.len();
        let seqs = sequences(rows, data, &data.signal);
        // Where each item occurs: (sequence, position).
        let mut occ: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
        for (s, seq) in seqs.iter().enumerate() {
            for (p, &i) in seq.iter().enumerate() {
                occ[i as usize].push((s as u32, p as u32));
            }
        }
        let steps = config.steps;
        let w = build_rows(n, config.neighbours, |i, acc, touched| {
            for &(s, p) in &occ[i] {
                let seq = &seqs[s as usize];
                let p = p as usize;
                for (d, &j) in seq.iter().enumerate().skip(p + 1).take(steps) {
                    if acc[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    acc[j as usize] += 1.0 / (d - p) as f32;
                }
            }
        });
        Ok(ItemGraph { w })
    }

    /// EASE's weights as a graph: each active item's `neighbours` largest
    /// weights of its row of B (a sparse EASE: the same scores on the kept
    /// weights, `x · B`, for a fraction of the memory at serving).
    pub fn sparse_ease(
        data: &Interactions,
        ease: &crate::EaseConfig,
        config: &SessionConfig,
    ) -> Result<Self> {
        let e = crate::Ease::fit(data, ease)?;
        let n = data.items.len();
        let rows: Vec<Vec<(u32, f32)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let p = e.position[i];
                if p == crate::ease::INACTIVE {
                    return Vec::new();
                }
                let mut cands: Vec<(u32, f32)> = e
                    .row(p as usize)
                    .into_iter()
                    .map(|(q, v)| (e.active[q as usize], v))
                    .collect();
                top_row(&mut cands, config.neighbours)
            })
            .collect();
        Ok(ItemGraph {
            w: Csr::from_rows(rows),
        })
    }

    /// The blend of item-kNN, RP3beta, SR and sparse EASE by
    /// [`SessionConfig::blend`]: every graph's rows scaled to a largest weight of
    /// 1, then summed with their weights. A session's score is linear in the
    /// graph, so this is exactly the weighted sum of the models' (scaled) scores.
    pub fn blend(
        rows: &[Interaction],
        data: &Interactions,
        ease: &crate::EaseConfig,
        config: &SessionConfig,
    ) -> Result<Self> {
        config.validate()?;
        let mut parts: Vec<(f32, ItemGraph)> = Vec::new();
        for (k, &w) in config.blend.iter().enumerate() {
            if w > 0.0 {
                parts.push((w, Self::blend_member(k, rows, data, ease, config)?));
            }
        }
        let refs: Vec<(f32, &ItemGraph)> = parts.iter().map(|(w, g)| (*w, g)).collect();
        Ok(Self::merge(&refs, data.items.len()))
    }

    /// Member `k` of the blend (0 item-kNN, 1 RP3beta, 2 SR, 3 sparse EASE).
    pub(crate) fn blend_member(
        k: usize,
        rows: &[Interaction],
        data: &Interactions,
        ease: &crate::EaseConfig,
        config: &SessionConfig,
    ) -> Result<Self> {
        match k {
            0 => Self::item_knn(data, config),
            1 => Self::rp3beta(data, config),
            2 => Self::sequential_rules(rows, data, config),
            _ => Self::sparse_ease(data, ease, config),
        }
    }

    /// What member `k` of the blend depends on besides the training rows and
    /// their signal: two equal keys build the same graph (`tune` builds each
    /// member once per key and searches the weights over them).
    pub(crate) fn blend_member_key(
        k: usize,
        ease: &crate::EaseConfig,
        config: &SessionConfig,
    ) -> String {
        let c = config;
        match k {
            0 => format!(
                "knn {} {} {} {}",
                c.neighbours, c.shrink, c.asymmetry, c.weighted
            ),
            1 => format!("rp3 {} {} {} {}", c.neighbours, c.alpha, c.beta, c.weighted),
            2 => format!("sr {} {}", c.neighbours, c.steps),
            _ => format!(
                "ease {} {} {} {} {}",
                c.neighbours, ease.lambda, ease.max_items, ease.min_users, ease.neighbours
            ),
        }
    }

    /// `Σ w · graph` over `parts`, each graph's rows scaled to a largest weight
    /// of 1 first; `n` items.
    pub(crate) fn merge(parts: &[(f32, &ItemGraph)], n: usize) -> Self {
        let merged: Vec<Vec<(u32, f32)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut row: Vec<(u32, f32)> = Vec::new();
                for (w, g) in parts {
                    if i >= g.w.n_rows() {
                        continue;
                    }
                    let (js, vs) = g.w.row(i);
                    let max = vs.iter().fold(0f32, |a, &b| a.max(b));
                    if max > 0.0 {
                        row.extend(js.iter().zip(vs).map(|(&j, &v)| (j, w * v / max)));
                    }
                }
                row.sort_by_key(|p| p.0);
                let mut out: Vec<(u32, f32)> = Vec::with_capacity(row.len());
                for (j, v) in row {
                    match out.last_mut() {
                        Some(last) if last.0 == j => last.1 += v,
                        _ => out.push((j, v)),
                    }
                }
                out.retain(|p| p.1 > 0.0);
                out
            })
            .collect();
        ItemGraph {
            w: Csr::from_rows(merged),
        }
    }

    /// Adds `Σ_i w_i · W[i, ·]` into `out` (zeroed first).
    pub(crate) fn scores_for(&self, ctx: &[(u32, f32)], out: &mut [f32]) {
        out.fill(0.0);
        for &(i, wi) in ctx {
            if (i as usize) < self.w.n_rows() {
                let (js, vs) = self.w.row(i as usize);
                for (&j, &v) in js.iter().zip(vs) {
                    out[j as usize] += wi * v;
                }
            }
        }
    }

    /// Whether any context item has a row with weights.
    pub(crate) fn knows(&self, ctx: &[(u32, f32)]) -> bool {
        ctx.iter()
            .any(|&(i, _)| (i as usize) < self.w.n_rows() && !self.w.row(i as usize).0.is_empty())
    }

    /// Weights stored (nonzeros).
    pub fn nnz(&self) -> usize {
        self.w.nnz()
    }
}

/// V-SKNN: the training sessions and, per item, the sessions holding it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vsknn {
    /// Session × item (distinct items, each at its last visit, in visit order),
    /// sessions oldest first by their last row.
    pub(crate) sessions: Csr,
    /// Item × session, sessions in increasing index (oldest first).
    pub(crate) postings: Csr,
    pub(crate) config: SessionConfig,
}

impl Vsknn {
    /// Keeps every user's distinct items as a session, ordered by their last row.
    pub fn fit(rows: &[Interaction], data: &Interactions, config: &SessionConfig) -> Result<Self> {
        config.validate()?;
        let mut last: Vec<i64> = vec![i64::MIN; data.users.len()];
        for r in rows {
            if let Some(u) = data.users.get(&r.user_id) {
                last[u as usize] = last[u as usize].max(r.timestamp);
            }
        }
        let seqs = sequences(rows, data, &data.signal);
        let mut order: Vec<usize> = (0..seqs.len()).filter(|&u| !seqs[u].is_empty()).collect();
        order.sort_by_key(|&u| (last[u], u));
        let sessions = Csr::from_rows(order.iter().map(|&u| {
            // Distinct items in visit order, each where it was last seen.
            let seq = &seqs[u];
            let mut seen = std::collections::HashSet::new();
            let mut s: Vec<(u32, f32)> = seq
                .iter()
                .rev()
                .filter(|&&i| seen.insert(i))
                .map(|&i| (i, 1.0))
                .collect();
            s.reverse();
            s
        }));
        Ok(Self::from_sessions(sessions, data.items.len(), *config))
    }

    pub(crate) fn from_sessions(sessions: Csr, n_items: usize, config: SessionConfig) -> Self {
        let postings = sessions.transpose(n_items);
        Vsknn {
            sessions,
            postings,
            config,
        }
    }

    /// Scores of every item for the context `ctx` (see the module).
    pub(crate) fn scores_for(&self, ctx: &[(u32, f32)], out: &mut [f32]) {
        out.fill(0.0);
        let n_items = self.postings.n_rows();
        // Candidate sessions and their dot product with the context.
        let mut dot: std::collections::HashMap<u32, f32> = std::collections::HashMap::new();
        for &(i, w) in ctx {
            if (i as usize) < n_items {
                for &s in self.postings.row(i as usize).0 {
                    *dot.entry(s).or_default() += w;
                }
            }
        }
        let mut cands: Vec<(u32, f32)> = dot.into_iter().collect();
        // The most recent `sample` (a larger index is more recent).
        if cands.len() > self.config.sample {
            let k = self.config.sample;
            cands.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
            cands.truncate(k);
        }
        for c in cands.iter_mut() {
            let len = self.sessions.row(c.0 as usize).0.len().max(1) as f32;
            c.1 /= len.sqrt();
        }
        let k = self.config.neighbours.min(cands.len());
        if k == 0 {
            return;
        }
        cands.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        let top = &mut cands[..k];
        // A fixed summation order: the same bits on every run and after a reload.
        top.sort_unstable_by_key(|c| c.0);
        let decay = self.config.position_decay;
        for &(s, sim) in top.iter() {
            let items = self.sessions.row(s as usize).0;
            if decay <= 0.0 {
                for &j in items {
                    out[j as usize] += sim;
                }
                continue;
            }
            // The context's most recent item that the neighbour holds.
            let Some(q) = ctx
                .iter()
                .find_map(|&(i, _)| items.iter().position(|&j| j == i))
            else {
                continue;
            };
            for (p, &j) in items.iter().enumerate() {
                out[j as usize] += sim * (-decay * p.abs_diff(q) as f32).exp();
            }
        }
    }

    /// Whether any context item occurs in a training session.
    pub(crate) fn knows(&self, ctx: &[(u32, f32)]) -> bool {
        ctx.iter().any(|&(i, _)| {
            (i as usize) < self.postings.n_rows() && !self.postings.row(i as usize).0.is_empty()
        })
    }
}
