//! A shrinkage linear discriminant, computed in closed form from the index
//! (no iterative training): class means, the within-class covariance shrunk
//! towards a scaled identity, and per class `w = Σ⁻¹ μ`, `b = -½ μ·w`.
//! The score of a query `x` is `x·w + b`: one Gemm with a bias in the graph.
//!
//! Shrinkage (half covariance, half identity) keeps Σ well conditioned with
//! a handful of images per class in hundreds of dimensions; with one image
//! per class there is no within-class spread and this reduces to the
//! nearest centroid.

use std::borrow::Cow;

use rayon::prelude::*;

/// Weight of the identity in the shrunk covariance.
pub const SHRINKAGE: f64 = 0.5;
/// The covariance is estimated from at most this many rows (evenly spaced).
const MAX_COVARIANCE_ROWS: usize = 20_000;
/// Rows of the covariance matrix per task: a band (32 x 1,280 f64 = 320 KB) stays in cache
/// while every centred row passes once.
const COVARIANCE_BAND: usize = 32;

/// The discriminant for `classes` classes over `dim`-dimensional rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Discriminant {
    /// `classes` x `dim` weights.
    pub weights: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
    /// Lower-triangular Cholesky factor of the shrunk covariance (dim x dim),
    /// kept to solve against it when calibrating by leave-one-out.
    pub cholesky: Vec<f64>,
}

/// Class means (`classes` x `dim`) of the rows labelled by `row_class` (row `i` is `row(i)`).
fn class_means<'r>(
    row: &impl Fn(usize) -> Cow<'r, [f32]>,
    dim: usize,
    row_class: &[u32],
    classes: usize,
) -> Vec<f64> {
    let mut m = vec![0f64; classes * dim];
    let mut n = vec![0usize; classes];
    for (i, &c) in row_class.iter().enumerate() {
        n[c as usize] += 1;
        for (a, x) in m[c as usize * dim..(c as usize + 1) * dim].iter_mut().zip(row(i).iter()) {
            *a += *x as f64;
        }
    }
    for (c, chunk) in m.chunks_exact_mut(dim).enumerate() {
        for a in chunk {
            *a /= n[c].max(1) as f64;
        }
    }
    m
}

impl Discriminant {
    /// The discriminant of `row_class.len()` rows, row `i` being `row(i)`: rows are
    /// read one at a time, so an int8 index is never widened whole (5 GB at a million rows).
    pub fn fit<'r>(
        row: impl Fn(usize) -> Cow<'r, [f32]>,
        dim: usize,
        row_class: &[u32],
        classes: usize,
    ) -> Discriminant {
        let means = class_means(&row, dim, row_class, classes);
        let n = row_class.len();
        let step = n.div_ceil(MAX_COVARIANCE_ROWS).max(1);
        let centred: Vec<Vec<f64>> = (0..n)
            .step_by(step)
            .map(|i| {
                let c = row_class[i] as usize;
                row(i)
                    .iter()
                    .zip(&means[c * dim..(c + 1) * dim])
                    .map(|(x, m)| *x as f64 - m)
                    .collect()
            })
            .collect();
        let count = centred.len().max(1) as f64;
        // Within-class covariance. Each task owns a band of rows of the matrix and streams the
        // centred rows once for the whole band, not once per matrix row (at 10,000 rows of
        // 1,280 values that was ~100 GB of memory traffic, most of a build's head time). Every
        // element still sums the rows in the same order: the result is the same, bit for bit.
        let mut sigma = vec![0f64; dim * dim];
        sigma.par_chunks_mut(COVARIANCE_BAND * dim).enumerate().for_each(|(b, band)| {
            let first = b * COVARIANCE_BAND;
            for v in &centred {
                for (k, row) in band.chunks_exact_mut(dim).enumerate() {
                    let vi = v[first + k];
                    if vi != 0.0 {
                        for (r, x) in row.iter_mut().zip(v) {
                            *r += vi * x;
                        }
                    }
                }
            }
            for r in band.iter_mut() {
                *r /= count;
            }
        });
        let trace: f64 = (0..dim).map(|i| sigma[i * dim + i]).sum();
        let scale = if trace > 1e-12 { trace / dim as f64 } else { 1.0 / dim as f64 };
        for (k, s) in sigma.iter_mut().enumerate() {
            *s *= 1.0 - SHRINKAGE;
            if k % (dim + 1) == 0 {
                *s += SHRINKAGE * scale;
            }
        }
        let cholesky = cholesky(&sigma, dim);
        let solved: Vec<(Vec<f32>, f32)> = means
            .par_chunks_exact(dim)
            .map(|m| {
                let w = solve(&cholesky, dim, m);
                let b = -0.5 * m.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
                (w.into_iter().map(|x| x as f32).collect(), b as f32)
            })
            .collect();
        let mut weights = Vec::with_capacity(classes * dim);
        let mut bias = Vec::with_capacity(classes);
        for (w, b) in solved {
            weights.extend(w);
            bias.push(b);
        }
        Discriminant { weights, bias, cholesky }
    }

    /// `Σ⁻¹ v`.
    pub fn solve(&self, v: &[f64]) -> Vec<f64> {
        solve(&self.cholesky, v.len(), v)
    }
}

/// Dot product with independent partial sums (vectorises; see `crate::kernels::dot`).
pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let mut acc = [0f64; 4];
    let chunks = n / 4;
    for i in 0..chunks {
        for k in 0..4 {
            acc[k] += a[i * 4 + k] * b[i * 4 + k];
        }
    }
    let mut tail = 0f64;
    for i in chunks * 4..n {
        tail += a[i] * b[i];
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// Cholesky factor `L` (row-major, lower triangle) of a symmetric positive
/// definite matrix `a` (n x n).
pub fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let d =
            (a[j * n + j] - dot64(&l[j * n..j * n + j], &l[j * n..j * n + j])).max(1e-18).sqrt();
        l[j * n + j] = d;
        // Column j below the diagonal; rows are independent.
        let (done, rest) = l.split_at_mut((j + 1) * n);
        let lj = &done[j * n..j * n + j];
        rest.par_chunks_exact_mut(n).enumerate().for_each(|(off, row)| {
            let i = j + 1 + off;
            row[j] = (a[i * n + j] - dot64(&row[..j], lj)) / d;
        });
    }
    l
}

/// Solves `L Lᵀ x = b` for the Cholesky factor `L`.
pub fn solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0f64; n];
    for i in 0..n {
        y[i] = (b[i] - dot64(&l[i * n..i * n + i], &y[..i])) / l[i * n + i];
    }
    // Back substitution with Lᵀ, walking rows of L (contiguous) instead of its columns.
    let mut x = y;
    for k in (0..n).rev() {
        x[k] /= l[k * n + k];
        let xk = x[k];
        for (xi, lki) in x[..k].iter_mut().zip(&l[k * n..k * n + k]) {
            *xi -= lki * xk;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]]; A x = [2, 1] -> x = [0.5, 0].
        let a = [4.0, 2.0, 2.0, 3.0];
        let l = cholesky(&a, 2);
        assert_eq!(l[1], 0.0);
        let x = solve(&l, 2, &[2.0, 1.0]);
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn discriminant_matches_a_direct_computation() {
        // Two classes in 2-D, two rows each.
        let rows = [1.0f32, 0.0, 0.8, 0.2, 0.0, 1.0, 0.2, 0.8];
        let cls = [0, 0, 1, 1];
        let d = Discriminant::fit(|i| Cow::Borrowed(&rows[2 * i..2 * i + 2]), 2, &cls, 2);
        // Means (0.9, 0.1) and (0.1, 0.9); deviations ±(0.1, -0.1) in both.
        // S_w = [[0.01, -0.01], [-0.01, 0.01]]; trace/2 = 0.01;
        // Σ = 0.5 S_w + 0.5 * 0.01 I = [[0.01, -0.005], [-0.005, 0.01]].
        let sigma = [0.01, -0.005, -0.005, 0.01];
        let det: f64 = sigma[0] * sigma[3] - sigma[1] * sigma[2];
        let inv = [sigma[3] / det, -sigma[1] / det, -sigma[2] / det, sigma[0] / det];
        let m0 = [0.9, 0.1];
        let w0 = [inv[0] * m0[0] + inv[1] * m0[1], inv[2] * m0[0] + inv[3] * m0[1]];
        let b0 = -0.5 * (m0[0] * w0[0] + m0[1] * w0[1]);
        assert!(
            (d.weights[0] as f64 - w0[0]).abs() < 1e-3
                && (d.weights[1] as f64 - w0[1]).abs() < 1e-3,
            "{:?} vs {w0:?}",
            d.weights
        );
        assert!((d.bias[0] as f64 - b0).abs() < 1e-3, "{} vs {b0}", d.bias[0]);
    }

    #[test]
    fn one_image_per_class_reduces_to_nearest_centroid() {
        let rows = [0.6f32, 0.8, 1.0, 0.0];
        let d = Discriminant::fit(|i| Cow::Borrowed(&rows[2 * i..2 * i + 2]), 2, &[0, 1], 2);
        // Σ = 0.5/2 I: w = 4 m, b = -2 |m|^2 = -2; scores rank like cosines.
        assert!(
            (d.weights[0] - 2.4).abs() < 1e-5 && (d.weights[1] - 3.2).abs() < 1e-5,
            "{:?}",
            d.weights
        );
        assert!((d.bias[0] + 2.0).abs() < 1e-5);
    }
}
