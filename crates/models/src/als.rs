//! Implicit ALS (Hu, Koren & Volinsky 2008): weighted matrix factorisation of
//! binary preferences with confidence `1 + alpha * value`.
//!
//! Each half-iteration solves every user (then every item) against the other
//! side's fixed factors with a few conjugate-gradient steps warm-started from the
//! previous solution, as Takács et al. (2011) and the `implicit` library do: cost
//! O(nnz·f + rows·f²) per step instead of the O(nnz·f²) of forming each normal
//! matrix. Rows are independent, so they run on rayon's threads, and every sum
//! has a fixed order, so a model does not depend on the number of threads.
//!
//! Fold-in solves one user exactly (Cholesky, f64) from a handful of
//! interactions against the trained item factors: the `session` protocol and
//! anonymous visitors. Warm start extends a previous model with new users and
//! items and refines all factors with a few iterations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::linalg::{axpy, cholesky_solve, dot, has_fma, symv};
use crate::matrix::Csr;
use crate::{Error, Interaction, Interactions, Result, Signal, Vocab};

/// ALS hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlsConfig {
    /// Latent dimensions.
    pub factors: usize,
    /// Alternations (one user pass and one item pass each).
    pub iterations: usize,
    /// L2 penalty λ on every factor (not scaled by counts, as in `implicit`).
    pub regularization: f32,
    /// Confidence slope: confidence = 1 + alpha · value.
    pub alpha: f32,
    /// Conjugate-gradient steps per row and half-iteration.
    pub cg_steps: usize,
    /// Seed of the initial factors.
    pub seed: u64,
    /// Worker threads; `None`: rayon's global pool.
    pub threads: Option<usize>,
}

impl Default for AlsConfig {
    /// 64 factors, 15 iterations, 3 CG steps (`implicit`'s solver); λ = 40 and
    /// α = 1 from the benchmark's sweep (MovieLens 100K warm NDCG@10 0.143 at the
    /// old λ = 10, α = 2 → 0.201; latest-small 0.124 → 0.134).
    fn default() -> Self {
        AlsConfig {
            factors: 64,
            iterations: 15,
            regularization: 40.0,
            alpha: 1.0,
            cg_steps: 3,
            seed: 42,
            threads: None,
        }
    }
}

impl AlsConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(Error::Config { name, message });
        if self.factors == 0 || self.factors > 1024 {
            return bad("factors", format!("{} (must be 1..=1024)", self.factors));
        }
        if !(self.regularization >= 0.0 && self.regularization.is_finite()) {
            return bad(
                "regularization",
                format!("{} (must be ≥ 0)", self.regularization),
            );
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return bad("alpha", format!("{} (must be ≥ 0)", self.alpha));
        }
        if self.cg_steps == 0 {
            return bad("cg_steps", "0 (must be ≥ 1)".into());
        }
        if self.threads == Some(0) {
            return bad("threads", "0 (must be ≥ 1)".into());
        }
        Ok(())
    }

    /// Runs `f` on the configured number of threads.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
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

/// A trained implicit-ALS model.
#[derive(Debug, Clone, PartialEq)]
pub struct Als {
    pub(crate) users: Vocab,
    pub(crate) items: Vocab,
    /// Row-major, `users.len() × factors`.
    pub(crate) user_factors: Vec<f32>,
    /// Row-major, `items.len() × factors`.
    pub(crate) item_factors: Vec<f32>,
    pub(crate) config: AlsConfig,
    pub(crate) signal: Signal,
    /// `Yᵀ Y` (f × f), for fold-in; derived from the item factors.
    pub(crate) yty: Vec<f32>,
    /// Each item factor's norm, for similar items; derived from the item factors.
    pub(crate) item_norms: Vec<f32>,
}

impl Als {
    /// Trains on `data` from random factors.
    pub fn fit(data: &Interactions, config: &AlsConfig) -> Result<Self> {
        config.validate()?;
        let f = config.factors;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        // Small positive factors, as `implicit` starts (rand * 0.01).
        let mut init =
            |n: usize| -> Vec<f32> { (0..n * f).map(|_| rng.random::<f32>() * 0.01).collect() };
        let user_factors = init(data.users.len());
        let item_factors = init(data.items.len());
        Self::iterate(data, config, user_factors, item_factors)
    }

    /// Trains on `data` starting from `previous`: known users and items keep their
    /// factors, new users are folded in against the previous items, new items start
    /// small and random; then `config.iterations` alternations refine everything.
    /// `data` must have been built with [`Als::vocab`] of `previous` so that indices agree.
    pub fn warm_start(previous: &Als, data: &Interactions, config: &AlsConfig) -> Result<Self> {
        config.validate()?;
        let f = config.factors;
        if f != previous.config.factors {
            return Err(Error::Config {
                name: "factors",
                message: format!(
                    "{f}: warm start needs the previous model's {}",
                    previous.config.factors
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
        let mut item_factors = previous.item_factors.clone();
        item_factors.extend(
            (0..(data.items.len() - previous.items.len()) * f).map(|_| rng.random::<f32>() * 0.01),
        );
        let mut user_factors = previous.user_factors.clone();
        for u in previous.users.len()..data.users.len() {
            let known: Vec<(u32, f32)> = data
                .user_row(u as u32)
                .into_iter()
                .filter(|&(i, _)| (i as usize) < previous.items.len())
                .collect();
            let x = previous.fold_in_row(&known);
            user_factors.extend(x);
        }
        Self::iterate(data, config, user_factors, item_factors)
    }

    /// The users and items of this model, to build warm-start data with
    /// [`Interactions::build_with_vocab`].
    pub fn vocab(&self) -> (Vocab, Vocab) {
        (self.users.clone(), self.items.clone())
    }

    fn iterate(
        data: &Interactions,
        config: &AlsConfig,
        mut x: Vec<f32>,
        mut y: Vec<f32>,
    ) -> Result<Self> {
        let f = config.factors;
        // Confidences minus one, the only form the solver needs: c - 1 = alpha · value.
        let mut cu = data.ui.clone();
        for v in &mut cu.data {
            *v *= config.alpha;
        }
        let ci = cu.transpose(data.items.len());
        config.run(|| {
            for _ in 0..config.iterations {
                half_step(&cu, &mut x, &y, f, config);
                half_step(&ci, &mut y, &x, f, config);
            }
        })?;
        let yty = config.run(|| gram(&y, f))?;
        Ok(Als {
            users: data.users.clone(),
            items: data.items.clone(),
            user_factors: x,
            item_norms: item_norms(&y, f),
            item_factors: y,
            config: *config,
            signal: data.signal,
            yty,
        })
    }

    /// Latent dimensions.
    pub fn factors(&self) -> usize {
        self.config.factors
    }

    /// The hyper-parameters it was trained with.
    pub fn config(&self) -> &AlsConfig {
        &self.config
    }

    /// A known user's factors.
    pub(crate) fn user_vector(&self, user: u32) -> &[f32] {
        let f = self.config.factors;
        &self.user_factors[user as usize * f..(user as usize + 1) * f]
    }

    /// The exact least-squares user vector for `(item, value)` pairs against the
    /// fixed item factors: (YᵀY + λI + Σ (c−1) y yᵀ) x = Σ c y.
    pub(crate) fn fold_in_row(&self, row: &[(u32, f32)]) -> Vec<f32> {
        let f = self.config.factors;
        if row.is_empty() {
            return vec![0.0; f];
        }
        let mut a: Vec<f64> = self.yty.iter().map(|&v| v as f64).collect();
        for d in 0..f {
            a[d * f + d] += self.config.regularization as f64;
        }
        let mut b = vec![0f64; f];
        let mut y = vec![0f64; f];
        for &(i, v) in row {
            for (to, &from) in y
                .iter_mut()
                .zip(&self.item_factors[i as usize * f..(i as usize + 1) * f])
            {
                *to = from as f64;
            }
            let cm1 = (self.config.alpha * v) as f64;
            for r in 0..f {
                let yr = y[r];
                b[r] += (1.0 + cm1) * yr;
                // The lower triangle only: the solve reads no other entry.
                let w = cm1 * yr;
                for (a, &yc) in a[r * f..=r * f + r].iter_mut().zip(&y[..=r]) {
                    *a += w * yc;
                }
            }
        }
        match cholesky_solve(&a, &b) {
            Some(x) => x.into_iter().map(|v| v as f32).collect(),
            None => vec![0.0; f],
        }
    }

    /// Folds in a visitor from raw interactions (signal as in training, decayed
    /// relative to the newest of them); items unknown to the model are ignored.
    pub fn fold_in(&self, rows: &[Interaction]) -> Vec<f32> {
        let now = rows.iter().map(|r| r.timestamp).max().unwrap_or(0);
        let row = self.signal.aggregate(
            rows.iter().filter_map(|r| {
                self.items
                    .get(&r.item_id)
                    .map(|i| (i, r.weight, r.timestamp, r.synthetic))
            }),
            now,
        );
        self.fold_in_row(&row)
    }

    /// Scores of every item for a user vector.
    pub(crate) fn scores_for(&self, x: &[f32], out: &mut [f32]) {
        let f = self.config.factors;
        if has_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { scores_fma(&self.item_factors, x, f, out) }
        } else {
            scores_generic::<false>(&self.item_factors, x, f, out)
        }
    }

    /// Cosine similarity of item factors, for "similar items" (all items).
    pub(crate) fn item_similarities(&self, item: u32, out: &mut [f32]) {
        let f = self.config.factors;
        let y = &self.item_factors[item as usize * f..(item as usize + 1) * f];
        self.scores_for(y, out);
        let n0 = self.item_norms[item as usize];
        for (s, nj) in out.iter_mut().zip(&self.item_norms) {
            *s /= n0 * nj;
        }
    }
}

/// The norm of every row of `y` (`f` wide), floored away from zero.
pub(crate) fn item_norms(y: &[f32], f: usize) -> Vec<f32> {
    y.chunks_exact(f)
        .map(|v| dot::<false>(v, v).sqrt().max(1e-12))
        .collect()
}

#[inline(always)]
fn scores_generic<const FMA: bool>(items: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(items.chunks_exact(f)) {
        *o = dot::<FMA>(y, x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_fma(items: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
    scores_generic::<true>(items, x, f, out)
}
#[cfg(not(target_arch = "x86_64"))]
unsafe fn scores_fma(items: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
    scores_generic::<false>(items, x, f, out)
}

/// `Yᵀ Y` in a fixed summation order: fixed-size chunks summed in parallel, the
/// partial matrices added in chunk order.
pub(crate) fn gram(y: &[f32], f: usize) -> Vec<f32> {
    const CHUNK: usize = 2048;
    let partials: Vec<Vec<f32>> = y
        .par_chunks(CHUNK * f)
        .map(|block| {
            let mut g = vec![0f32; f * f];
            for row in block.chunks_exact(f) {
                for (r, &yr) in row.iter().enumerate() {
                    let out = &mut g[r * f..(r + 1) * f];
                    if has_fma() {
                        // SAFETY: AVX2 and FMA are present (checked).
                        unsafe { axpy_fma(yr, row, out) }
                    } else {
                        axpy::<false>(yr, row, out)
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0f32; f * f];
    for p in partials {
        for (a, b) in g.iter_mut().zip(p) {
            *a += b;
        }
    }
    g
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma(a: f32, x: &[f32], y: &mut [f32]) {
    axpy::<true>(a, x, y)
}
#[cfg(not(target_arch = "x86_64"))]
unsafe fn axpy_fma(a: f32, x: &[f32], y: &mut [f32]) {
    axpy::<false>(a, x, y)
}

/// One half-iteration: every row of `c` (values are c − 1) re-solved into `x`
/// against the fixed `y`. Common factor counts get a build where the length is a
/// constant, so the compiler unrolls the kernels and keeps vectors in registers.
fn half_step(c: &Csr, x: &mut [f32], y: &[f32], f: usize, config: &AlsConfig) {
    let mut a = gram(y, f);
    for d in 0..f {
        a[d * f + d] += config.regularization;
    }
    let fma = has_fma();
    let steps = config.cg_steps;
    macro_rules! fixed {
        ($n:literal) => {
            x.par_chunks_mut(f)
                .enumerate()
                .with_min_len(64)
                .for_each(|(u, xu)| {
                    let (idx, val) = c.row(u);
                    solve_fixed::<$n>(fma, &a, idx, val, y, xu, steps)
                })
        };
    }
    match f {
        16 => fixed!(16),
        32 => fixed!(32),
        64 => fixed!(64),
        128 => fixed!(128),
        _ => x
            .par_chunks_mut(f)
            .enumerate()
            .with_min_len(64)
            .for_each_init(
                || vec![0f32; 3 * f],
                |scratch, (u, xu)| {
                    let (idx, val) = c.row(u);
                    let (r, rest) = scratch.split_at_mut(f);
                    let (p, ap) = rest.split_at_mut(f);
                    if fma {
                        // SAFETY: AVX2 and FMA are present (checked).
                        unsafe { cg_row_fma(&a, idx, val, y, xu, r, p, ap, steps) }
                    } else {
                        cg_row::<false>(&a, idx, val, y, xu, r, p, ap, steps)
                    }
                },
            ),
    }
}

/// One row with `F` factors known at compile time.
#[inline(always)]
fn solve_fixed<const F: usize>(
    fma: bool,
    a: &[f32],
    idx: &[u32],
    val: &[f32],
    y: &[f32],
    xu: &mut [f32],
    steps: usize,
) {
    let (mut r, mut p, mut ap) = ([0f32; F], [0f32; F], [0f32; F]);
    let x: &mut [f32; F] = xu.try_into().expect("row of F factors");
    if fma {
        // SAFETY: AVX2 and FMA are present (checked by the caller).
        unsafe { cg_fixed_fma::<F>(a, idx, val, y, x, &mut r, &mut p, &mut ap, steps) }
    } else {
        cg_row::<false>(a, idx, val, y, x, &mut r, &mut p, &mut ap, steps)
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cg_fixed_fma<const F: usize>(
    a: &[f32],
    idx: &[u32],
    val: &[f32],
    y: &[f32],
    x: &mut [f32; F],
    r: &mut [f32; F],
    p: &mut [f32; F],
    ap: &mut [f32; F],
    steps: usize,
) {
    cg_row::<true>(a, idx, val, y, x, r, p, ap, steps)
}
#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "x86_64"))]
unsafe fn cg_fixed_fma<const F: usize>(
    a: &[f32],
    idx: &[u32],
    val: &[f32],
    y: &[f32],
    x: &mut [f32; F],
    r: &mut [f32; F],
    p: &mut [f32; F],
    ap: &mut [f32; F],
    steps: usize,
) {
    cg_row::<false>(a, idx, val, y, x, r, p, ap, steps)
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cg_row_fma(
    a: &[f32],
    idx: &[u32],
    val: &[f32],
    y: &[f32],
    x: &mut [f32],
    r: &mut [f32],
    p: &mut [f32],
    ap: &mut [f32],
    steps: usize,
) {
    cg_row::<true>(a, idx, val, y, x, r, p, ap, steps)
}
#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "x86_64"))]
unsafe fn cg_row_fma(
    a: &[f32],
    idx: &[u32],
    val: &[f32],
    y: &[f32],
    x: &mut [f32],
    r: &mut [f32],
    p: &mut [f32],
    ap: &mut [f32],
    steps: usize,
) {
    cg_row::<false>(a, idx, val, y, x, r, p, ap, steps)
}

/// Conjugate gradient on (A + Σ (c−1) y yᵀ) x = Σ c y, from the current `x`,
/// where `A` = YᵀY + λI and `cm1` holds c − 1 per nonzero.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn cg_row<const FMA: bool>(
    a: &[f32],
    idx: &[u32],
    cm1: &[f32],
    y: &[f32],
    x: &mut [f32],
    r: &mut [f32],
    p: &mut [f32],
    ap: &mut [f32],
    steps: usize,
) {
    let f = x.len();
    // r = b − A x = −A x + Σ (c − (c−1) yᵀx) y
    symv::<FMA>(a, x, r);
    for v in r.iter_mut() {
        *v = -*v;
    }
    for (&i, &c1) in idx.iter().zip(cm1) {
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        let w = (c1 + 1.0) - c1 * dot::<FMA>(yi, x);
        axpy::<FMA>(w, yi, r);
    }
    p.copy_from_slice(r);
    let mut rs_old = dot::<FMA>(r, r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..steps {
        symv::<FMA>(a, p, ap);
        for (&i, &c1) in idx.iter().zip(cm1) {
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            axpy::<FMA>(c1 * dot::<FMA>(yi, p), yi, ap);
        }
        let pap = dot::<FMA>(p, ap);
        if pap <= 0.0 {
            break;
        }
        let step = rs_old / pap;
        axpy::<FMA>(step, p, x);
        axpy::<FMA>(-step, ap, r);
        let rs_new = dot::<FMA>(r, r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        for (pi, ri) in p.iter_mut().zip(r.iter()) {
            *pi = madd_beta::<FMA>(beta, *pi, *ri);
        }
        rs_old = rs_new;
    }
}

#[inline(always)]
fn madd_beta<const FMA: bool>(beta: f32, p: f32, r: f32) -> f32 {
    crate::linalg::madd::<FMA>(beta, p, r)
}
