//! Small dense kernels for the factor models: dot products, axpy, a symmetric
//! matrix-vector product and a Cholesky solve, written so that the compiler
//! vectorises them, and compiled twice (plain and AVX2+FMA, picked at run time).
//! Every reduction runs in a fixed order, so results do not depend on threads.

/// `a * b + c`, fused when the caller was compiled with FMA.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

const LANES: usize = 16;

/// Dot product with 16 running sums, reduced in a fixed order.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut s = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = madd::<FMA>(*x, *y, s);
    }
    // Pairwise reduction of the lanes.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    s + acc[0]
}

/// `y += alpha * x`.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = madd::<FMA>(alpha, *xi, *yi);
    }
}

/// `out = m * v` for a symmetric row-major `m` of side `v.len()`, as a sum of
/// scaled rows: no horizontal reductions, and `out` can stay in registers.
#[inline(always)]
pub(crate) fn symv<const FMA: bool>(m: &[f32], v: &[f32], out: &mut [f32]) {
    let f = v.len();
    out.fill(0.0);
    for (vr, row) in v.iter().zip(m.chunks_exact(f)) {
        axpy::<FMA>(*vr, row, out);
    }
}

/// `out[r] = rows[r] · x` for a row-major `rows` of width `f` (scoring a
/// catalogue), on the AVX2+FMA build when the CPU has it.
pub(crate) fn matvec(rows: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
    #[inline(always)]
    fn generic<const FMA: bool>(rows: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
        for (o, y) in out.iter_mut().zip(rows.chunks_exact(f)) {
            *o = dot::<FMA>(y, x);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma(rows: &[f32], x: &[f32], f: usize, out: &mut [f32]) {
        generic::<true>(rows, x, f, out)
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { fma(rows, x, f, out) };
    }
    generic::<false>(rows, x, f, out)
}

/// `out = Σ_r w[r] · rows[r]` for a row-major `rows` of width `f` (a weighted
/// sum of rows, in row order), on the AVX2+FMA build when the CPU has it.
pub(crate) fn vecmat(w: &[f32], rows: &[f32], f: usize, out: &mut [f32]) {
    #[inline(always)]
    fn generic<const FMA: bool>(w: &[f32], rows: &[f32], f: usize, out: &mut [f32]) {
        out.fill(0.0);
        for (wr, row) in w.iter().zip(rows.chunks_exact(f)) {
            axpy::<FMA>(*wr, row, out);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma(w: &[f32], rows: &[f32], f: usize, out: &mut [f32]) {
        generic::<true>(w, rows, f, out)
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { fma(w, rows, f, out) };
    }
    generic::<false>(w, rows, f, out)
}

/// Whether this CPU runs the AVX2+FMA builds.
#[inline]
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Solves `a x = b` for a symmetric positive definite row-major `a` (side `b.len()`),
/// in f64 (fold-in solves one small system per request; accuracy is worth more than
/// speed there). Reads the lower triangle of `a` only. Returns `None` when `a`
/// is not positive definite.
pub(crate) fn cholesky_solve(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![0f64; n * n];
    let mut row_j = Vec::with_capacity(n);
    for j in 0..n {
        row_j.clear();
        row_j.extend_from_slice(&l[j * n..j * n + j]);
        let d = a[j * n + j] - dot_f64(&row_j, &row_j);
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let s = a[i * n + j] - dot_f64(&l[i * n..i * n + j], &row_j);
            l[i * n + j] = s / d;
        }
    }
    let mut y = vec![0f64; n];
    for i in 0..n {
        let s = b[i] - dot_f64(&l[i * n..i * n + i], &y[..i]);
        y[i] = s / l[i * n + i];
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    Some(x)
}

/// Dot product of f64s with 4 running sums, reduced in a fixed order: a
/// Cholesky factorisation's inner products, which one running sum would make a
/// chain of dependent additions (a fold-in's solve was bound by it).
#[inline]
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_the_obvious_loops() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot::<false>(&a, &b) - want).abs() < 1e-3);
        assert!((dot::<true>(&a, &b) - want).abs() < 1e-3);
        let m = [4.0, 1.0, 1.0, 3.0];
        let x = cholesky_solve(&m, &[1.0, 2.0]).unwrap();
        assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12 && (x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
        assert!(cholesky_solve(&[0.0], &[1.0]).is_none());
    }

    #[test]
    fn the_solve_reads_the_lower_triangle_only() {
        // A 9×9 SPD matrix (long enough rows for the 4-way sums and their
        // remainder), then the same with garbage above the diagonal: ALS's
        // fold-in fills the lower triangle alone.
        let n: usize = 9;
        let m: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                1.0 / (1.0 + i.abs_diff(j) as f64) + if i == j { n as f64 } else { 0.0 }
            })
            .collect();
        let b: Vec<f64> = (0..n).map(|i| i as f64 - 2.0).collect();
        let x = cholesky_solve(&m, &b).unwrap();
        for i in 0..n {
            let ax: f64 = (0..n).map(|j| m[i * n + j] * x[j]).sum();
            assert!((ax - b[i]).abs() < 1e-12, "row {i}: {ax} vs {}", b[i]);
        }
        let mut lower = m.clone();
        for i in 0..n {
            for j in i + 1..n {
                lower[i * n + j] = f64::NAN;
            }
        }
        assert_eq!(cholesky_solve(&lower, &b).unwrap(), x);
    }
}
