//! Exact maximum-inner-product top-k over f32 rows.
//!
//! One query streams the rows once through an AVX2 dot product, split across
//! threads when there are enough rows to pay for it. A batch is tiled (query
//! tile x row block) and each tile is one matrix product (`matrixmultiply`,
//! cache-blocked like BLAS), so the rows are read once per query tile instead
//! of once per query.

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::{Hit, TopK};
use cbr_core::kernels;

/// Queries of one batch tile (the rows are read once per tile).
const QUERY_TILE: usize = 256;
/// Rows per matrix product in a batch (the score tile is QUERY_TILE x ROW_BLOCK).
const ROW_BLOCK: usize = 1024;
/// Rows per task of a single query: below about this much work, threads cost
/// more than they save.
const SINGLE_CHUNK: usize = 16384;
/// Batches smaller than this use the single-query path per query.
const MIN_GEMM_BATCH: usize = 4;

/// `n` rows of `dim` floats, searched exhaustively.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatIndex {
    dim: usize,
    rows: Vec<f32>,
}

impl FlatIndex {
    pub fn new(rows: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            bail!("{} values do not make rows of {dim}", rows.len());
        }
        if rows.len() / dim > u32::MAX as usize {
            bail!("{} rows: at most {} are supported", rows.len() / dim, u32::MAX);
        }
        Ok(FlatIndex { dim, rows })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    pub fn into_rows(self) -> Vec<f32> {
        self.rows
    }

    /// The `k` rows with the largest inner product with `query`, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        search_rows(&self.rows, self.dim, query, k)
    }

    /// [`FlatIndex::search`] for each of the `queries.len() / dim` queries.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        search_rows_batch(&self.rows, self.dim, queries, k)
    }
}

/// Exact top-k of one query over `rows` (row ids are positions in `rows`).
pub fn search_rows(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
    assert_eq!(query.len(), dim, "query length");
    let n = rows.len() / dim;
    let scan = |first: usize, part: &[f32]| {
        let mut top = TopK::new(k);
        let mut scores = [0f32; 256];
        for (b, block) in part.chunks(256 * dim).enumerate() {
            let m = block.len() / dim;
            kernels::dots(block, dim, query, &mut scores[..m]);
            top.push_scores(&scores[..m], (first + b * 256) as u32);
        }
        top
    };
    if n <= SINGLE_CHUNK || rayon::current_num_threads() == 1 {
        return scan(0, rows).into_hits();
    }
    rows.par_chunks(SINGLE_CHUNK * dim)
        .enumerate()
        .map(|(c, part)| scan(c * SINGLE_CHUNK, part))
        .reduce(
            || TopK::new(k),
            |mut a, b| {
                a.merge(b);
                a
            },
        )
        .into_hits()
}

/// Exact top-k of each query over `rows`.
pub fn search_rows_batch(rows: &[f32], dim: usize, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
    assert_eq!(queries.len() % dim, 0, "queries are not rows of {dim}");
    let nq = queries.len() / dim;
    let n = rows.len() / dim;
    if nq < MIN_GEMM_BATCH {
        return queries.chunks_exact(dim).map(|q| search_rows(rows, dim, q, k)).collect();
    }
    // Tasks: (query tile, row segment). With few query tiles, the rows are
    // split into segments too so every thread has work.
    let tiles = nq.div_ceil(QUERY_TILE);
    let threads = rayon::current_num_threads();
    let blocks = n.div_ceil(ROW_BLOCK).max(1);
    let segments = (2 * threads).div_ceil(tiles).clamp(1, blocks);
    let seg_blocks = blocks.div_ceil(segments);
    let partial: Vec<(usize, Vec<TopK>)> = (0..tiles * segments)
        .into_par_iter()
        .map(|task| {
            let (tile, seg) = (task / segments, task % segments);
            let q0 = tile * QUERY_TILE;
            let qn = (nq - q0).min(QUERY_TILE);
            let q = &queries[q0 * dim..(q0 + qn) * dim];
            let mut tops: Vec<TopK> = (0..qn).map(|_| TopK::new(k)).collect();
            let mut scores = vec![0f32; qn * ROW_BLOCK];
            let first = (seg * seg_blocks * ROW_BLOCK).min(n);
            let last = ((seg + 1) * seg_blocks * ROW_BLOCK).min(n);
            let mut r0 = first;
            while r0 < last {
                let rn = (last - r0).min(ROW_BLOCK);
                let block = &rows[r0 * dim..(r0 + rn) * dim];
                scores_tile(q, qn, block, rn, dim, &mut scores[..qn * rn]);
                for (t, s) in tops.iter_mut().zip(scores.chunks_exact(rn)) {
                    t.push_scores(s, r0 as u32);
                }
                r0 += rn;
            }
            (tile, tops)
        })
        .collect();
    let mut out: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    for (tile, tops) in partial {
        for (i, t) in tops.into_iter().enumerate() {
            out[tile * QUERY_TILE + i].merge(t);
        }
    }
    out.into_iter().map(TopK::into_hits).collect()
}

/// Rows per block of a self-join (the score tile is SELF_BLOCK x SELF_BLOCK).
const SELF_BLOCK: usize = 256;

/// Each row's `k` nearest *other* rows by inner product, best first: the
/// self-join of `rows` (near-duplicates, neighbourhoods). The rows are cut
/// into blocks and only block pairs `(a, b)` with `a <= b` are multiplied,
/// each tile feeding both sides, so the work is half of `n` searches and the
/// memory one tile per task plus each thread's top-k lists, never `n x n`.
pub fn self_join(rows: &[f32], dim: usize, k: usize) -> Vec<Vec<Hit>> {
    assert!(dim > 0 && rows.len().is_multiple_of(dim), "rows are not rows of {dim}");
    let n = rows.len() / dim;
    let blocks = n.div_ceil(SELF_BLOCK);
    let block = |b: usize| (b * SELF_BLOCK, ((b + 1) * SELF_BLOCK).min(n));
    (0..blocks)
        .into_par_iter()
        .fold(
            || (0..n).map(|_| TopK::new(k)).collect::<Vec<TopK>>(),
            |mut tops, a| {
                let (a0, a1) = block(a);
                let an = a1 - a0;
                let mut scores = vec![0f32; SELF_BLOCK * SELF_BLOCK];
                for b in a..blocks {
                    let (b0, b1) = block(b);
                    let bn = b1 - b0;
                    let out = &mut scores[..an * bn];
                    scores_tile(
                        &rows[a0 * dim..a1 * dim],
                        an,
                        &rows[b0 * dim..b1 * dim],
                        bn,
                        dim,
                        out,
                    );
                    for (i, s) in out.chunks_exact(bn).enumerate() {
                        let row = a0 + i;
                        for (j, &score) in s.iter().enumerate() {
                            let other = b0 + j;
                            // The diagonal tile holds each pair twice and every row against itself.
                            if other <= row && a == b {
                                continue;
                            }
                            tops[row].push(Hit { row: other as u32, score });
                            tops[other].push(Hit { row: row as u32, score });
                        }
                    }
                }
                tops
            },
        )
        .reduce(
            || (0..n).map(|_| TopK::new(k)).collect(),
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.merge(y);
                }
                a
            },
        )
        .into_iter()
        .map(TopK::into_hits)
        .collect()
}

/// `out` (qn x rn, row-major) = queries (qn x dim) · block (rn x dim)ᵀ.
fn scores_tile(queries: &[f32], qn: usize, block: &[f32], rn: usize, dim: usize, out: &mut [f32]) {
    assert!(queries.len() >= qn * dim && block.len() >= rn * dim && out.len() >= qn * rn);
    // SAFETY: the asserts above bound every access the strides describe:
    // A is qn x dim row-major, B = blockᵀ is dim x rn (column stride dim),
    // C is qn x rn row-major.
    unsafe {
        matrixmultiply::sgemm(
            qn,
            dim,
            rn,
            1.0,
            queries.as_ptr(),
            dim as isize,
            1,
            block.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            rn as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::synthetic::Clusters;

    /// Brute force in f64 with a full sort: the reference.
    fn reference(rows: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<u32> {
        let mut s: Vec<(f64, u32)> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum(), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn self_join_finds_each_rows_nearest_others() {
        // Several blocks, a last partial block, and an exact duplicate pair.
        let dim = 24;
        let g = Clusters { dim, clusters: 12, spread: 1.0, seed: 3 };
        let (mut rows, _) = g.sample(600, 0);
        for r in rows.chunks_exact_mut(dim) {
            cbr_core::head::l2_normalize(r);
        }
        let copy = rows[17 * dim..18 * dim].to_vec();
        rows[530 * dim..531 * dim].copy_from_slice(&copy);
        let got = self_join(&rows, dim, 4);
        assert_eq!(got.len(), 600);
        for (i, hits) in got.iter().enumerate() {
            let q = &rows[i * dim..(i + 1) * dim];
            let want: Vec<u32> = reference(&rows, dim, q, 6)
                .into_iter()
                .filter(|&r| r as usize != i)
                .take(4)
                .collect();
            let rows_got: Vec<u32> = hits.iter().map(|h| h.row).collect();
            assert_eq!(rows_got, want, "row {i}");
        }
        assert_eq!(got[17][0].row, 530);
        assert_eq!(got[530][0].row, 17);
        assert!(self_join(&[], dim, 3).is_empty());
    }

    #[test]
    fn exact_top_k_matches_brute_force_single_and_batch() {
        // Enough rows for the multi-threaded single-query path and several
        // row blocks and query tiles in the batch path.
        let dim = 48;
        let g = Clusters { dim, clusters: 30, spread: 1.5, seed: 1 };
        let (rows, _) = g.sample(40_000, 0);
        let (queries, _) = g.sample(70, 1);
        let index = FlatIndex::new(rows.clone(), dim).unwrap();
        let batch = index.search_batch(&queries, 5);
        assert_eq!(batch.len(), 70);
        for (q, got_batch) in queries.chunks_exact(dim).zip(&batch) {
            let want = reference(&rows, dim, q, 5);
            let single: Vec<u32> = index.search(q, 5).iter().map(|h| h.row).collect();
            let batch_rows: Vec<u32> = got_batch.iter().map(|h| h.row).collect();
            assert_eq!(single, want);
            assert_eq!(batch_rows, want);
            let exact =
                kernels::dot(&rows[want[0] as usize * dim..(want[0] as usize + 1) * dim], q);
            assert!((got_batch[0].score - exact).abs() < 1e-5);
        }
        // A tiny batch takes the per-query path; k larger than n returns all.
        let small = FlatIndex::new(rows[..3 * dim].to_vec(), dim).unwrap();
        let all = small.search_batch(&queries[..2 * dim], 10);
        assert_eq!(all[0].len(), 3);
        assert!(FlatIndex::new(vec![0.0; 5], 2).is_err());
    }
}
