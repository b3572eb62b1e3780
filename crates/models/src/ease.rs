//! EASE (Steck 2019): the item-item weight matrix with a zero diagonal that best
//! reconstructs the user × item matrix under an L2 penalty, in closed form:
//! P = (XᵀX + λI)⁻¹, B = −P / diag(P) column-wise, B_jj = 0; scores = x·B.
//!
//! The cost of the exact model is the dense inverse: O(n³) time and two n × n
//! f32 matrices for n active items (about 2 s for 10 000 items on 2 cores, and 8×
//! that per doubling; 20 000 items need 3.2 GB). Above [`EaseConfig::max_items`]
//! items (with at least [`EaseConfig::min_users`] users each), training switches
//! to a sparse approximation instead: EASE's column j is exactly the ridge
//! regression of item j's column of X on every other item's (λ the penalty, so
//! `B[·, j] = (G₋ⱼ₋ⱼ + λI)⁻¹ G₋ⱼⱼ` with G = XᵀX), and the sparse variant restricts
//! that regression to j's [`EaseConfig::neighbours`] strongest co-occurring items,
//! one small Cholesky solve per item over a sparse Gram matrix (each row keeping
//! its `4 × neighbours` largest entries). With every item in the neighbourhood it
//! is dense EASE again; on a generated log of 100 000 items it trained in 49 s on
//! one thread with a peak of 690 MB (`docs/bench-models.md`). Items with fewer users score nothing and are
//! recommended only through the popularity fallback.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::matrix::Csr;
use crate::{Error, Interactions, Result, Signal, Vocab};

/// EASE hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EaseConfig {
    /// L2 penalty λ added to the Gram matrix's diagonal.
    pub lambda: f32,
    /// Up to this many active items the exact dense inverse is used; above it,
    /// the sparse neighbourhood solve (see the module).
    pub max_items: usize,
    /// Items with fewer distinct users stay out of the inverse.
    pub min_users: usize,
    /// Worker threads for the Gram matrix and the inverse; `None`: all cores.
    pub threads: Option<usize>,
    /// The sparse solve (above `max_items`): each item's column of B is
    /// regressed on this many of its strongest co-occurring items.
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
}

fn default_neighbours() -> usize {
    DEFAULT_NEIGHBOURS
}

/// [`EaseConfig::neighbours`]' default: within 0.01 NDCG@10 of dense EASE on
/// MovieLens 100K (`docs/bench-models.md`), a 200 × 200 solve per item.
pub const DEFAULT_NEIGHBOURS: usize = 200;

impl Default for EaseConfig {
    /// λ = 1000 (the benchmark's sweep on rating-weighted input: MovieLens 100K
    /// peaks near 3000, latest-small near 500-1000; 1000 is within 0.01 NDCG@10 of
    /// both, and `tune` finds the rest), at most 20 000 items (about 3.2 GB and a
    /// minute on 2 cores; above, the sparse solve), items with at least 2 users
    /// (one user teaches no co-occurrence), neighbourhoods of
    /// [`DEFAULT_NEIGHBOURS`] items.
    fn default() -> Self {
        EaseConfig {
            lambda: 1000.0,
            max_items: 20_000,
            min_users: 2,
            threads: None,
            neighbours: DEFAULT_NEIGHBOURS,
        }
    }
}

impl EaseConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(Error::Config {
                name: "lambda",
                message: format!("{} (must be > 0)", self.lambda),
            });
        }
        if self.max_items == 0 {
            return Err(Error::Config {
                name: "max_items",
                message: "0 (must be ≥ 1)".into(),
            });
        }
        if self.neighbours == 0 {
            return Err(Error::Config {
                name: "neighbours",
                message: "0 (must be ≥ 1)".into(),
            });
        }
        if self.threads == Some(0) {
            return Err(Error::Config {
                name: "threads",
                message: "0 (must be ≥ 1)".into(),
            });
        }
        Ok(())
    }
}

/// A trained EASE model.
#[derive(Debug, Clone, PartialEq)]
pub struct Ease {
    pub(crate) items: Vocab,
    /// Catalogue index of each active item.
    pub(crate) active: Vec<u32>,
    /// Active position of each catalogue item, `u32::MAX` when inactive.
    pub(crate) position: Vec<u32>,
    /// B[i][j] over active positions: how much having i says about j.
    pub(crate) weights: Weights,
    pub(crate) config: EaseConfig,
    pub(crate) signal: Signal,
}

pub(crate) const INACTIVE: u32 = u32::MAX;

/// EASE's weights over active positions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Weights {
    /// Row-major `active × active` (the exact model).
    Dense(Vec<f32>),
    /// Row i: the items j whose neighbourhood holds i, and B[i][j] (the sparse solve).
    Sparse(Csr),
}

impl Ease {
    /// Trains on `data`.
    pub fn fit(data: &Interactions, config: &EaseConfig) -> Result<Self> {
        config.validate()?;
        let n_items = data.items.len();
        let mut users_per_item = vec![0usize; n_items];
        for &i in &data.ui.indices {
            users_per_item[i as usize] += 1;
        }
        let mut order: Vec<u32> = (0..n_items as u32)
            .filter(|&i| users_per_item[i as usize] >= config.min_users.max(1))
            .collect();
        order.sort_by(|&a, &b| {
            users_per_item[b as usize]
                .cmp(&users_per_item[a as usize])
                .then(a.cmp(&b))
        });
        let sparse = order.len() > config.max_items;
        order.sort_unstable();
        let active = order;
        if active.is_empty() {
            return Err(Error::Input("EASE: no item has enough users".into()));
        }
        let mut position = vec![INACTIVE; n_items];
        for (p, &i) in active.iter().enumerate() {
            position[i as usize] = p as u32;
        }
        let n = active.len();
        let run = |f: &mut (dyn FnMut() + Send)| -> Result<()> {
            match config.threads {
                None => f(),
                Some(t) => rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .map_err(|e| Error::Config {
                        name: "threads",
                        message: e.to_string(),
                    })?
                    .install(f),
            }
            Ok(())
        };
        let mut weights = Weights::Dense(Vec::new());
        let mut failure = None;
        run(&mut || {
            let rows = active_rows(data, &position);
            if sparse {
                match sparse_weights(&rows, n, config.lambda, config.neighbours) {
                    Ok(w) => weights = Weights::Sparse(w),
                    Err(e) => failure = Some(e),
                }
                return;
            }
            let g = gram(&rows, n, config.lambda);
            match g.llt(Side::Lower) {
                Ok(llt) => {
                    let p = llt.inverse();
                    weights = Weights::Dense(dense_weights(&p));
                }
                Err(e) => {
                    failure = Some(format!(
                        "Gram matrix not positive definite ({e:?}); raise lambda"
                    ))
                }
            }
        })?;
        if let Some(msg) = failure {
            return Err(Error::Numerical(msg));
        }
        Ok(Ease {
            items: data.items.clone(),
            active,
            position,
            weights,
            config: *config,
            signal: data.signal,
        })
    }

    /// The hyper-parameters it was trained with.
    pub fn config(&self) -> &EaseConfig {
        &self.config
    }

    /// How many items the model scores (the others score nothing).
    pub fn active_items(&self) -> usize {
        self.active.len()
    }

    /// Whether it was trained by the sparse neighbourhood solve (more active
    /// items than [`EaseConfig::max_items`]) rather than the dense inverse.
    pub fn is_sparse(&self) -> bool {
        matches!(self.weights, Weights::Sparse(_))
    }

    /// Row `p` of B (active position `p`) as `(active position, weight)` pairs.
    pub(crate) fn row(&self, p: usize) -> Vec<(u32, f32)> {
        match &self.weights {
            Weights::Dense(b) => {
                let n = self.active.len();
                b[p * n..(p + 1) * n]
                    .iter()
                    .enumerate()
                    .map(|(q, &v)| (q as u32, v))
                    .collect()
            }
            Weights::Sparse(w) => {
                let (js, vs) = w.row(p);
                js.iter().copied().zip(vs.iter().copied()).collect()
            }
        }
    }

    /// Scores of every catalogue item for a history of `(item, value)`; inactive
    /// items score −∞ (the model cannot speak for them).
    pub(crate) fn scores_for(&self, history: &[(u32, f32)], out: &mut [f32]) {
        let n = self.active.len();
        let mut acc = vec![0f32; n];
        for &(i, v) in history {
            let p = self.position[i as usize];
            if p == INACTIVE {
                continue;
            }
            match &self.weights {
                Weights::Dense(b) => {
                    let row = &b[p as usize * n..(p as usize + 1) * n];
                    for (a, w) in acc.iter_mut().zip(row) {
                        *a += v * w;
                    }
                }
                Weights::Sparse(w) => {
                    let (js, ws) = w.row(p as usize);
                    for (&j, &w) in js.iter().zip(ws) {
                        acc[j as usize] += v * w;
                    }
                }
            }
        }
        out.fill(f32::NEG_INFINITY);
        for (&i, a) in self.active.iter().zip(acc) {
            out[i as usize] = a;
        }
    }

    /// B's row of an item: which items its users go on to (−∞ for inactive ones).
    pub(crate) fn item_row(&self, item: u32, out: &mut [f32]) {
        self.scores_for(&[(item, 1.0)], out)
    }
}

/// Users' rows restricted to active items, in active positions.
fn active_rows(data: &Interactions, position: &[u32]) -> Vec<Vec<(u32, f32)>> {
    (0..data.users.len())
        .map(|u| {
            let (c, v) = data.ui.row(u);
            c.iter()
                .zip(v)
                .filter_map(|(&i, &x)| {
                    let p = position[i as usize];
                    (p != INACTIVE).then_some((p, x))
                })
                .collect()
        })
        .collect()
}

/// XᵀX + λI over active items; each thread owns a band of rows and reads every
/// user, so no two threads write the same entry and sums keep a fixed order.
fn gram(rows: &[Vec<(u32, f32)>], n: usize, lambda: f32) -> Mat<f32> {
    let bands = rayon::current_num_threads().max(1) * 4;
    let band = n.div_ceil(bands);
    let parts: Vec<(usize, Vec<f32>)> = (0..bands)
        .into_par_iter()
        .filter_map(|t| {
            let lo = t * band;
            let hi = ((t + 1) * band).min(n);
            if lo >= hi {
                return None;
            }
            let mut g = vec![0f32; (hi - lo) * n];
            for row in rows {
                let start = row.partition_point(|p| (p.0 as usize) < lo);
                for &(i, xi) in &row[start..] {
                    if i as usize >= hi {
                        break;
                    }
                    let out = &mut g[(i as usize - lo) * n..(i as usize - lo + 1) * n];
                    for &(j, xj) in row {
                        out[j as usize] += xi * xj;
                    }
                }
            }
            Some((lo, g))
        })
        .collect();
    let mut m = Mat::<f32>::zeros(n, n);
    for (lo, g) in parts {
        for (r, row) in g.chunks_exact(n).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                m[(lo + r, c)] = v;
            }
        }
    }
    for d in 0..n {
        m[(d, d)] += lambda;
    }
    m
}

/// B = −P / diag(P) column-wise, zero diagonal, row-major.
fn dense_weights(p: &Mat<f32>) -> Vec<f32> {
    let n = p.nrows();
    let diag: Vec<f32> = (0..n).map(|j| p[(j, j)]).collect();
    let mut b = vec![0f32; n * n];
    b.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, out) in row.iter_mut().enumerate() {
            if i != j {
                *out = -p[(i, j)] / diag[j];
            }
        }
    });
    b
}

/// The sparse solve (see the module): B's columns by one ridge regression per
/// item over its `k` strongest co-occurring items, returned as rows (B[i][·]).
fn sparse_weights(
    rows: &[Vec<(u32, f32)>],
    n: usize,
    lambda: f32,
    k: usize,
) -> std::result::Result<Csr, String> {
    // Item × user, to walk each item's users.
    let xt = Csr::from_rows(rows.iter().cloned()).transpose(n);
    // Pass 1: each row of G = XᵀX, its 4k largest off-diagonal entries (sorted
    // by column) and its diagonal.
    let keep = k.saturating_mul(4);
    let g_rows: Vec<(f32, Vec<(u32, f32)>)> = (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0f32; n], Vec::<u32>::new()),
            |(acc, touched), j| {
                let (users, xs) = xt.row(j);
                for (&u, &xj) in users.iter().zip(xs) {
                    for &(a, xa) in &rows[u as usize] {
                        if acc[a as usize] == 0.0 {
                            touched.push(a);
                        }
                        acc[a as usize] += xj * xa;
                    }
                }
                let diag = acc[j];
                let mut cands: Vec<(u32, f32)> = touched
                    .iter()
                    .filter(|&&a| a as usize != j)
                    .map(|&a| (a, acc[a as usize]))
                    .collect();
                for &a in touched.iter() {
                    acc[a as usize] = 0.0;
                }
                touched.clear();
                cands.retain(|p| p.1 > 0.0);
                if cands.len() > keep {
                    cands.select_nth_unstable_by(keep - 1, |x, y| {
                        y.1.total_cmp(&x.1).then(x.0.cmp(&y.0))
                    });
                    cands.truncate(keep);
                }
                cands.sort_unstable_by_key(|p| p.0);
                (diag, cands)
            },
        )
        .collect();
    let diag: Vec<f32> = g_rows.iter().map(|r| r.0).collect();
    let g = Csr::from_rows(g_rows.into_iter().map(|r| r.1));
    // Pass 2: column j of B from (G_NN + λI) b = G_Nj over j's neighbourhood N.
    let cols: Vec<std::result::Result<Vec<(u32, f32)>, String>> = (0..n)
        .into_par_iter()
        .map_init(
            || vec![u32::MAX; n],
            |slot, j| {
                let (cs, vs) = g.row(j);
                let mut nb: Vec<(u32, f32)> = cs.iter().copied().zip(vs.iter().copied()).collect();
                if nb.len() > k {
                    nb.select_nth_unstable_by(k - 1, |x, y| {
                        y.1.total_cmp(&x.1).then(x.0.cmp(&y.0))
                    });
                    nb.truncate(k);
                }
                if nb.is_empty() {
                    return Ok(Vec::new());
                }
                nb.sort_unstable_by_key(|p| p.0);
                let m = nb.len();
                for (s, &(a, _)) in nb.iter().enumerate() {
                    slot[a as usize] = s as u32;
                }
                let mut a_mat = Mat::<f32>::zeros(m, m);
                for (s, &(a, _)) in nb.iter().enumerate() {
                    a_mat[(s, s)] = diag[a as usize] + lambda;
                    let (cs, vs) = g.row(a as usize);
                    for (&b, &v) in cs.iter().zip(vs) {
                        let t = slot[b as usize];
                        if t != u32::MAX {
                            // Either row may have pruned the pair: fill both halves.
                            a_mat[(s, t as usize)] = v;
                            a_mat[(t as usize, s)] = v;
                        }
                    }
                }
                for &(a, _) in &nb {
                    slot[a as usize] = u32::MAX;
                }
                let mut rhs = Mat::<f32>::from_fn(m, 1, |s, _| nb[s].1);
                let llt = a_mat.llt(Side::Lower).map_err(|e| {
                    format!("sparse EASE: neighbourhood Gram matrix not positive definite ({e:?}); raise lambda")
                })?;
                llt.solve_in_place(rhs.as_mut());
                Ok(nb
                    .iter()
                    .enumerate()
                    .map(|(s, &(a, _))| (a, rhs[(s, 0)]))
                    .filter(|p| p.1 != 0.0 && p.1.is_finite())
                    .collect())
            },
        )
        .collect();
    let cols: Vec<Vec<(u32, f32)>> = cols.into_iter().collect::<std::result::Result<_, _>>()?;
    // Column j lists (i, B[i][j]); as rows of B, the transpose.
    Ok(Csr::from_rows(cols).transpose(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interaction, Signal};

    /// 40 items, 300 users with random baskets, and one user holding every
    /// item (so every pair co-occurs and a full neighbourhood is all items).
    fn baskets() -> Vec<Interaction> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut rows = Vec::new();
        for u in 0..300 {
            let group = u % 4;
            for _ in 0..8 {
                let i = if rng.random::<f64>() < 0.7 {
                    group * 10 + rng.random_range(0..10)
                } else {
                    rng.random_range(0..40)
                };
                rows.push(Interaction::rating(
                    format!("u{u}"),
                    format!("i{i}"),
                    1.0 + rng.random_range(0..3) as f32,
                    rows.len() as i64,
                ));
            }
        }
        for i in 0..40 {
            rows.push(Interaction::rating("all", format!("i{i}"), 1.0, 10_000 + i));
        }
        rows
    }

    fn dense_b(e: &Ease) -> Vec<f32> {
        let n = e.active.len();
        let mut out = vec![0f32; n * n];
        for p in 0..n {
            for (q, v) in e.row(p) {
                out[p * n + q as usize] = v;
            }
        }
        out
    }

    #[test]
    fn sparse_ease_with_full_neighbourhoods_is_dense_ease() {
        let data = Interactions::build(&baskets(), &Signal::default()).unwrap();
        let dense_cfg = EaseConfig {
            lambda: 20.0,
            ..EaseConfig::default()
        };
        let sparse_cfg = EaseConfig {
            max_items: 10,
            neighbours: 39,
            ..dense_cfg
        };
        let d = Ease::fit(&data, &dense_cfg).unwrap();
        let s = Ease::fit(&data, &sparse_cfg).unwrap();
        assert!(
            !d.is_sparse() && s.is_sparse(),
            "above max_items it switches"
        );
        assert_eq!(d.active, s.active, "every item enters, no cap");
        let (bd, bs) = (dense_b(&d), dense_b(&s));
        let worst = bd
            .iter()
            .zip(&bs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = bd.iter().fold(0f32, |a, b| a.max(b.abs()));
        assert!(scale > 0.01, "the weights are not trivial");
        assert!(
            worst < 1e-3,
            "largest difference {worst} (weights up to {scale})"
        );
    }

    #[test]
    fn smaller_neighbourhoods_keep_only_that_many_weights_per_column_and_rank_alike() {
        let data = Interactions::build(&baskets(), &Signal::default()).unwrap();
        let cfg = EaseConfig {
            lambda: 20.0,
            ..EaseConfig::default()
        };
        let d = Ease::fit(&data, &cfg).unwrap();
        let s = Ease::fit(
            &data,
            &EaseConfig {
                max_items: 10,
                neighbours: 15,
                ..cfg
            },
        )
        .unwrap();
        let n = s.active.len();
        let mut per_col = vec![0usize; n];
        for p in 0..n {
            for (q, _) in s.row(p) {
                per_col[q as usize] += 1;
            }
        }
        assert!(per_col.iter().all(|&c| c <= 15), "{per_col:?}");
        // A user of group 0 (items 0-9): both rank a group-0 item first.
        let hist: Vec<(u32, f32)> = ["i1", "i2", "i3"]
            .iter()
            .map(|i| (data.items.get(i).unwrap(), 1.0))
            .collect();
        let top = |e: &Ease| {
            let mut out = vec![0f32; n];
            e.scores_for(&hist, &mut out);
            for &(i, _) in &hist {
                out[i as usize] = f32::NEG_INFINITY;
            }
            let best = (0..n).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
            data.items.id(best as u32).to_string()
        };
        let (td, ts) = (top(&d), top(&s));
        let group0 = |id: &str| id[1..].parse::<usize>().unwrap() < 10;
        assert!(group0(&td) && group0(&ts), "dense {td}, sparse {ts}");
    }

    #[test]
    fn a_zero_neighbourhood_is_refused() {
        let cfg = EaseConfig {
            neighbours: 0,
            ..EaseConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
