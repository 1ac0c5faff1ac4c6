//! The dot-product kernels, for the head and search alike: f32 (an AVX2
//! version chosen at run time, since the release build targets baseline
//! x86-64, whose SSE2 code is about half as fast, and a portable one) and int8
//! (an int8 index's rows against the quantized query; integer sums are exact).
//!
//! Every version of a kernel gives the same bits: a model file is the same
//! whichever machine builds it, natively or in WebAssembly. So the f32 dot
//! product is defined by one order of operations ([`dot_portable`]: 32
//! running sums, each a multiply then an add, no fused multiply-add, reduced
//! in a fixed tree), which the AVX2 version performs in four 8-lane registers.

/// Dot product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked above).
            return unsafe { x86::dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// Dot products of `query` with each `dim`-long row of `rows`, into `out`.
pub fn dots(rows: &[f32], dim: usize, query: &[f32], out: &mut [f32]) {
    debug_assert_eq!(rows.len(), out.len() * dim);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
                // SAFETY: as in `dot`.
                *o = unsafe { x86::dot_avx2(r, query) };
            }
            return;
        }
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot_portable(r, query);
    }
}

/// Exact dot product of two equal-length int8 slices.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked above).
            return unsafe { x86::dot_i8_avx2(a, b) };
        }
    }
    dot_i8_portable(a, b)
}

/// Sums of 16 lanes of i8 x i8 products in i32: a loop the compiler
/// vectorises (`pmaddwd`). A 1280-long row cannot overflow (|sum| ≤ 1280 · 127²).
#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 =
        ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as i32 * y as i32).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] as i32 * y[k] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Dot product with 32 running sums (element `i` goes to sum `i % 32` while
/// whole blocks of 32 remain, then blocks of 8 to the first 8 sums), reduced
/// as the AVX2 version reduces its four registers, then the last elements
/// added one by one. Independent sums let the compiler use SIMD; the fixed
/// order makes every version agree to the bit.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [[0f32; 8]; 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            for (l, s) in acc.iter_mut().enumerate() {
                *s += a[i + 8 * k + l] * b[i + 8 * k + l];
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        for (l, s) in acc[0].iter_mut().enumerate() {
            *s += a[i + l] * b[i + l];
        }
        i += 8;
    }
    let s: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]));
    let q: [f32; 4] = std::array::from_fn(|l| s[l] + s[l + 4]);
    let mut sum = (q[0] + q[2]) + (q[1] + q[3]);
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    // std caches the CPUID result, so this is a load and a test.
    std::is_x86_feature_detected!("avx2")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The portable int8 loop, compiled with AVX2 enabled (twice as wide).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        super::dot_i8_portable(a, b)
    }

    /// [`super::dot_portable`]'s operations in four 8-lane registers (four
    /// independent sums hide the add latency): the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY (every load below): indices stay below `n`, the length of
        // both slices' common prefix.
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
            i += 32;
        }
        while i + 8 <= n {
            let p = _mm256_mul_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_add_ps(acc[0], p);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let q = _mm_add_ps(lo, hi);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut sum = _mm_cvtss_f32(q);
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_reference_for_every_tail_length() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 1280] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for got in [dot(&a, &b) as f64, dot_portable(&a, &b) as f64] {
                assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "n={n}: {got} vs {want}");
            }
            let ai: Vec<i8> = (0..n).map(|i| ((i * 7 % 255) as i32 - 127) as i8).collect();
            let bi: Vec<i8> = (0..n).map(|i| ((i * 5 % 255) as i32 - 127) as i8).collect();
            let want_i: i32 = ai.iter().zip(&bi).map(|(x, y)| *x as i32 * *y as i32).sum();
            assert_eq!((dot_i8(&ai, &bi), dot_i8_portable(&ai, &bi)), (want_i, want_i), "n={n}");
            let mut out = vec![0f32; 1];
            if n > 0 {
                dots(&a, n, &b, &mut out);
                assert!((out[0] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }

    #[test]
    fn every_dot_version_gives_the_same_bits() {
        // Values whose products and sums round: any other order of operations shows.
        let mut rng = crate::rng::SplitMix64::new(5);
        for n in [1usize, 5, 8, 13, 31, 32, 33, 40, 63, 64, 100, 1280, 1283] {
            let a = rng.uniform_vec(n, -1.0, 1.0);
            let b = rng.uniform_vec(n, -1.0, 1.0);
            assert_eq!(dot(&a, &b).to_bits(), dot_portable(&a, &b).to_bits(), "n={n}");
            let mut out = vec![0f32; 1];
            dots(&a, n, &b, &mut out);
            assert_eq!(out[0].to_bits(), dot_portable(&a, &b).to_bits(), "n={n}");
        }
    }
}
