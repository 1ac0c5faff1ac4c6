//! The dot-product kernels, for the head and search alike: f32 (an AVX2+FMA
//! version chosen at run time, since the release build targets baseline
//! x86-64, whose SSE2 code is about half as fast and has no fused
//! multiply-add, and a portable one) and int8 (an int8 index's rows against
//! the quantized query; integer sums are exact, so every version agrees).

/// Dot product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
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
        if has_avx2_fma() {
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

/// Dot product with eight independent partial sums, which the compiler turns
/// into SIMD (a single running sum cannot be reordered, so it stays scalar).
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for i in 0..chunks {
        let (x, y) = (&a[i * 8..i * 8 + 8], &b[i * 8..i * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_fma() -> bool {
    // std caches the CPUID result, so this is a load and a test.
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
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

    /// Four independent 8-lane accumulators hide the FMA latency.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
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
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] =
                _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
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
}
