//! EASE (Steck 2019): the item-item weight matrix with a zero diagonal that best
//! reconstructs the user × item matrix under an L2 penalty, in closed form:
//! P = (XᵀX + λI)⁻¹, B = −P / diag(P) column-wise, B_jj = 0; scores = x·B.
//!
//! The cost is the dense inverse: O(n³) time and two n × n f32 matrices for n
//! active items (about 2 s for 10 000 items on 2 cores, and 8× that per doubling;
//! 20 000 items need 3.2 GB). So the model is restricted to the
//! [`EaseConfig::max_items`] items with the most users (and at least
//! [`EaseConfig::min_users`]); other catalogue items score nothing and are
//! recommended only through the popularity fallback.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Interactions, Result, Signal, Vocab};

/// EASE hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EaseConfig {
    /// L2 penalty λ added to the Gram matrix's diagonal.
    pub lambda: f32,
    /// At most this many items (the most-used) enter the dense inverse.
    pub max_items: usize,
    /// Items with fewer distinct users stay out of the inverse.
    pub min_users: usize,
    /// Worker threads for the Gram matrix and the inverse; `None`: all cores.
    pub threads: Option<usize>,
}

impl Default for EaseConfig {
    /// λ = 1000 (the benchmark's sweep on rating-weighted input: MovieLens 100K
    /// peaks near 3000, latest-small near 500-1000; 1000 is within 0.01 NDCG@10 of
    /// both, and `tune` finds the rest), at most 20 000 items (about 3.2 GB and a
    /// minute on 2 cores), items with at least 2 users (one user teaches no co-occurrence).
    fn default() -> Self {
        EaseConfig {
            lambda: 1000.0,
            max_items: 20_000,
            min_users: 2,
            threads: None,
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
    /// Row-major `active × active` weights, B[i][j]: how much having i says about j.
    pub(crate) b: Vec<f32>,
    pub(crate) config: EaseConfig,
    pub(crate) signal: Signal,
}

pub(crate) const INACTIVE: u32 = u32::MAX;

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
        order.truncate(config.max_items);
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
        let mut b = Vec::new();
        let mut failure = None;
        run(&mut || {
            let rows = active_rows(data, &position);
            let g = gram(&rows, n, config.lambda);
            match g.llt(Side::Lower) {
                Ok(llt) => {
                    let p = llt.inverse();
                    b = weights(&p);
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
            b,
            config: *config,
            signal: data.signal,
        })
    }

    /// The hyper-parameters it was trained with.
    pub fn config(&self) -> &EaseConfig {
        &self.config
    }

    /// How many items entered the inverse.
    pub fn active_items(&self) -> usize {
        self.active.len()
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
            let row = &self.b[p as usize * n..(p as usize + 1) * n];
            for (a, w) in acc.iter_mut().zip(row) {
                *a += v * w;
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
fn weights(p: &Mat<f32>) -> Vec<f32> {
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
