//! An approximate index for millions of rows: an inverted file (IVF-flat).
//!
//! Spherical k-means splits the rows into `lists` cells around unit
//! centroids; a query scores the centroids, then scans exactly the rows of
//! its `nprobe` best cells. With √n cells and a few dozen probed, a query
//! reads a few percent of the rows. Everything is seeded and single-valued
//! (ties broken by row), so the same rows give a byte-identical file.
//!
//! File layout (little-endian): magic `CBR-IVF1`; u32 dim, u32 lists,
//! u64 rows, u32 nprobe, u32 reserved; f32 centroids [lists x dim]; u64 list
//! offsets [lists + 1]; u32 row ids [rows] in list order; u32 class of each
//! row id [rows]; f32 rows [rows x dim] in list order.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::flat::{search_rows, search_rows_batch};
use super::{Hit, TopK};
use cbr_core::kernels;
use cbr_core::rng::SplitMix64;

const MAGIC: &[u8; 8] = b"CBR-IVF1";

/// How to build an [`IvfIndex`].
#[derive(Clone, Debug, PartialEq)]
pub struct IvfParams {
    /// Number of cells; 0 picks √rows, growing to 4√rows at a million rows
    /// (smaller cells keep recall up when the rows form many more clusters
    /// than there are cells; measured in bench/README.md).
    pub lists: usize,
    /// Cells scanned per query by default; 0 picks lists / 16 (at least 16).
    pub nprobe: usize,
    /// k-means rounds on the training sample.
    pub iterations: usize,
    /// Training sample size per cell (the sample is every (rows/sample)-th
    /// row), at most [`MAX_TRAIN`] rows in all.
    pub train_per_list: usize,
    pub seed: u64,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams { lists: 0, nprobe: 0, iterations: 8, train_per_list: 32, seed: 0x00c0_ffee }
    }
}

/// Rows grouped by nearest centroid.
#[derive(Clone, Debug, PartialEq)]
pub struct IvfIndex {
    dim: usize,
    /// Unit centroids, `lists` x `dim`.
    centroids: Vec<f32>,
    /// Rows of cell `l` are positions `offsets[l]..offsets[l + 1]`.
    offsets: Vec<u64>,
    /// Original row id of each stored position.
    ids: Vec<u32>,
    /// Class of each original row id.
    classes: Vec<u32>,
    /// The rows in cell order (`ids.len()` x `dim`).
    rows: Vec<f32>,
    /// Default number of cells scanned per query.
    pub nprobe: usize,
}

impl IvfIndex {
    /// Builds the index over unit rows (`classes.len()` x `dim`); `classes[i]`
    /// is carried along for row `i`.
    pub fn build(rows: &[f32], dim: usize, classes: &[u32], params: &IvfParams) -> Result<Self> {
        if dim == 0 || rows.len() != classes.len() * dim {
            bail!("{} values do not make {} rows of {dim}", rows.len(), classes.len());
        }
        let n = classes.len();
        if n == 0 {
            bail!("cannot index zero rows");
        }
        if n > u32::MAX as usize {
            bail!("{n} rows: at most {} are supported", u32::MAX);
        }
        let lists = if params.lists == 0 { default_lists(n) } else { params.lists }.min(n);
        let nprobe =
            if params.nprobe == 0 { (lists / 16).max(16) } else { params.nprobe }.min(lists);

        // Training sample: evenly strided rows.
        let sample = (lists * params.train_per_list.max(1)).min(MAX_TRAIN).max(lists).min(n);
        let stride = n as f64 / sample as f64;
        let train_ids: Vec<usize> = (0..sample).map(|i| (i as f64 * stride) as usize).collect();
        let mut train = Vec::with_capacity(sample * dim);
        for &i in &train_ids {
            train.extend_from_slice(&rows[i * dim..(i + 1) * dim]);
        }
        let mut rng = SplitMix64::new(params.seed);
        let mut centroids = Vec::with_capacity(lists * dim);
        for i in pick_distinct(&mut rng, sample, lists) {
            centroids.extend_from_slice(&train[i * dim..(i + 1) * dim]);
        }
        for _ in 0..params.iterations {
            let assign = nearest(&centroids, dim, &train);
            let mut sums = vec![0f64; lists * dim];
            let mut counts = vec![0usize; lists];
            for (t, &l) in train.chunks_exact(dim).zip(&assign) {
                counts[l as usize] += 1;
                for (s, x) in sums[l as usize * dim..(l as usize + 1) * dim].iter_mut().zip(t) {
                    *s += *x as f64;
                }
            }
            for (l, c) in centroids.chunks_exact_mut(dim).enumerate() {
                if counts[l] == 0 {
                    // An empty cell restarts at a random training row.
                    let i = (rng.next_u64() % sample as u64) as usize;
                    c.copy_from_slice(&train[i * dim..(i + 1) * dim]);
                    continue;
                }
                for (x, s) in c.iter_mut().zip(&sums[l * dim..(l + 1) * dim]) {
                    *x = *s as f32;
                }
                cbr_core::head::l2_normalize(c);
            }
        }
        drop(train);

        let assign = nearest(&centroids, dim, rows);
        let mut offsets = vec![0u64; lists + 1];
        for &l in &assign {
            offsets[l as usize + 1] += 1;
        }
        for l in 0..lists {
            offsets[l + 1] += offsets[l];
        }
        let mut next: Vec<u64> = offsets[..lists].to_vec();
        let mut ids = vec![0u32; n];
        for (i, &l) in assign.iter().enumerate() {
            ids[next[l as usize] as usize] = i as u32;
            next[l as usize] += 1;
        }
        let mut stored = vec![0f32; n * dim];
        stored.par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(dst, &i)| {
            dst.copy_from_slice(&rows[i as usize * dim..(i as usize + 1) * dim])
        });
        Ok(IvfIndex {
            dim,
            centroids,
            offsets,
            ids,
            classes: classes.to_vec(),
            rows: stored,
            nprobe,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The class stored with row `id`.
    pub fn class_of(&self, id: u32) -> u32 {
        self.classes[id as usize]
    }

    /// Approximate top-k: scans the rows of the `nprobe` cells whose
    /// centroids best match the query. Row ids are the build's row order.
    pub fn search(&self, query: &[f32], k: usize, nprobe: usize) -> Vec<Hit> {
        assert_eq!(query.len(), self.dim, "query length");
        let cells = search_rows(&self.centroids, self.dim, query, nprobe.max(1));
        let mut top = TopK::new(k);
        let mut scores = Vec::new();
        for cell in cells {
            let (a, b) = (
                self.offsets[cell.row as usize] as usize,
                self.offsets[cell.row as usize + 1] as usize,
            );
            scores.resize(b - a, 0.0);
            kernels::dots(&self.rows[a * self.dim..b * self.dim], self.dim, query, &mut scores);
            let mut floor = top.floor();
            for (s, &id) in scores.iter().zip(&self.ids[a..b]) {
                if *s >= floor {
                    top.push(Hit { row: id, score: *s });
                    floor = top.floor();
                }
            }
        }
        top.into_hits()
    }

    /// [`IvfIndex::search`] for each query, in parallel.
    pub fn search_batch(&self, queries: &[f32], k: usize, nprobe: usize) -> Vec<Vec<Hit>> {
        queries.par_chunks_exact(self.dim).map(|q| self.search(q, k, nprobe)).collect()
    }

    /// Exact top-k over every row (the reference for recall).
    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<Hit> {
        self.exact_ids(search_rows(&self.rows, self.dim, query, k))
    }

    /// [`IvfIndex::search_exact`] for a batch.
    pub fn search_exact_batch(&self, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        search_rows_batch(&self.rows, self.dim, queries, k)
            .into_iter()
            .map(|h| self.exact_ids(h))
            .collect()
    }

    fn exact_ids(&self, hits: Vec<Hit>) -> Vec<Hit> {
        let mut top = TopK::new(hits.len());
        for h in hits {
            top.push(Hit { row: self.ids[h.row as usize], score: h.score });
        }
        top.into_hits()
    }

    /// Writes the index to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::cache::write_atomic_with(path, |w| {
            w.write_all(MAGIC)?;
            w.write_all(&(self.dim as u32).to_le_bytes())?;
            w.write_all(&(self.lists() as u32).to_le_bytes())?;
            w.write_all(&(self.len() as u64).to_le_bytes())?;
            w.write_all(&(self.nprobe as u32).to_le_bytes())?;
            w.write_all(&0u32.to_le_bytes())?;
            write_f32(w, &self.centroids)?;
            for o in &self.offsets {
                w.write_all(&o.to_le_bytes())?;
            }
            write_u32(w, &self.ids)?;
            write_u32(w, &self.classes)?;
            write_f32(w, &self.rows)
        })
    }

    /// Reads an index written by [`IvfIndex::save`], checking its structure.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |what: String| {
            anyhow::anyhow!("{} is not a valid cbr index file: {what}", path.display())
        };
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open index {}", path.display()))?;
        let len =
            file.metadata().with_context(|| format!("cannot read index {}", path.display()))?.len();
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        let mut head = [0u8; 32];
        if len < 32 {
            return Err(bad(format!("{len} bytes is shorter than the header")));
        }
        r.read_exact(&mut head).with_context(|| format!("cannot read index {}", path.display()))?;
        if &head[..8] != MAGIC {
            return Err(bad("wrong magic bytes (not written by cbr, or a newer format)".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (dim, lists, n, nprobe) = (
            u32_at(8) as u64,
            u32_at(12) as u64,
            u64::from_le_bytes(head[16..24].try_into().expect("8 bytes")),
            u32_at(24) as usize,
        );
        if dim == 0 || lists == 0 || lists > n.max(1) || n > u32::MAX as u64 {
            return Err(bad(format!("impossible header (dim {dim}, {lists} cells, {n} rows)")));
        }
        let want = 32 + 4 * lists * dim + 8 * (lists + 1) + 8 * n + 4 * n * dim;
        if len != want {
            return Err(bad(format!(
                "{len} bytes, but its header promises {want} (truncated or corrupt)"
            )));
        }
        let (dim, lists, n) = (dim as usize, lists as usize, n as usize);
        let io = |e: std::io::Error| {
            anyhow::Error::new(e).context(format!("cannot read index {}", path.display()))
        };
        let centroids = read_f32(&mut r, lists * dim).map_err(io)?;
        let mut offsets = vec![0u64; lists + 1];
        let mut b8 = [0u8; 8];
        for o in offsets.iter_mut() {
            r.read_exact(&mut b8).map_err(io)?;
            *o = u64::from_le_bytes(b8);
        }
        let ids = read_u32(&mut r, n).map_err(io)?;
        let classes = read_u32(&mut r, n).map_err(io)?;
        let rows = read_f32(&mut r, n * dim).map_err(io)?;
        if offsets[0] != 0 || offsets[lists] != n as u64 || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(bad("cell offsets are not increasing from 0 to the row count".into()));
        }
        let mut seen = vec![false; n];
        for &i in &ids {
            if i as usize >= n || std::mem::replace(&mut seen[i as usize], true) {
                return Err(bad(format!("row id {i} is out of range or repeated")));
            }
        }
        if centroids.iter().any(|x| !x.is_finite()) {
            return Err(bad("a centroid is not finite".into()));
        }
        Ok(IvfIndex { dim, centroids, offsets, ids, classes, rows, nprobe: nprobe.clamp(1, lists) })
    }
}

/// Largest k-means training sample (its cost is sample x cells x dim per round).
pub const MAX_TRAIN: usize = 65536;

/// √n cells, times up to 4 as n grows from 250k to 1M rows.
fn default_lists(n: usize) -> usize {
    let grow = (n as f64 / 250_000.0).clamp(1.0, 4.0);
    ((n as f64).sqrt() * grow).round().max(1.0) as usize
}

/// `count` distinct indices below `n`, seeded (partial Fisher–Yates).
fn pick_distinct(rng: &mut SplitMix64, n: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..count.min(n) {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count.min(n));
    all
}

/// Index of the best centroid for each row.
fn nearest(centroids: &[f32], dim: usize, rows: &[f32]) -> Vec<u32> {
    // Chunked so the per-query result vectors of a million rows never exist at once.
    rows.par_chunks(65536 * dim)
        .flat_map_iter(|part| {
            search_rows_batch(centroids, dim, part, 1).into_iter().map(|h| h[0].row)
        })
        .collect()
}

fn write_f32(w: &mut dyn Write, v: &[f32]) -> std::io::Result<()> {
    for chunk in v.chunks(16384) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

fn write_u32(w: &mut dyn Write, v: &[u32]) -> std::io::Result<()> {
    for chunk in v.chunks(16384) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

fn read_words(r: &mut impl Read, n: usize, mut put: impl FnMut([u8; 4])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut left = n * 4;
    while left > 0 {
        let take = left.min(buf.len());
        r.read_exact(&mut buf[..take])?;
        for w in buf[..take].chunks_exact(4) {
            put(w.try_into().expect("4 bytes"));
        }
        left -= take;
    }
    Ok(())
}

fn read_f32(r: &mut impl Read, n: usize) -> std::io::Result<Vec<f32>> {
    let mut v = Vec::with_capacity(n);
    read_words(r, n, |b| v.push(f32::from_le_bytes(b)))?;
    Ok(v)
}

fn read_u32(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u32>> {
    let mut v = Vec::with_capacity(n);
    read_words(r, n, |b| v.push(u32::from_le_bytes(b)))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::synthetic::Clusters;
    use crate::search::FlatIndex;

    fn sample() -> (Vec<f32>, Vec<u32>, Vec<f32>, usize) {
        let dim = 64;
        let g = Clusters { dim, clusters: 100, spread: 1.0, seed: 3 };
        let (rows, classes) = g.sample(4000, 0);
        let (queries, _) = g.sample(300, 1);
        (rows, classes, queries, dim)
    }

    #[test]
    fn recall_at_1_against_exact_search() {
        let (rows, classes, queries, dim) = sample();
        let ivf = IvfIndex::build(&rows, dim, &classes, &IvfParams::default()).unwrap();
        assert_eq!(ivf.lists(), 63);
        let flat = FlatIndex::new(rows.clone(), dim).unwrap();
        let exact = flat.search_batch(&queries, 1);
        let approx = ivf.search_batch(&queries, 1, ivf.nprobe);
        let hits = exact.iter().zip(&approx).filter(|(e, a)| e[0].row == a[0].row).count();
        let recall = hits as f64 / exact.len() as f64;
        assert!(recall >= 0.99, "recall@1 {recall}");
        // Probing every cell is exact; its reference search agrees too.
        for (q, e) in queries.chunks_exact(dim).zip(&exact).take(20) {
            assert_eq!(ivf.search(q, 1, ivf.lists())[0].row, e[0].row);
            assert_eq!(ivf.search_exact(q, 1)[0].row, e[0].row);
            assert_eq!(ivf.class_of(e[0].row), classes[e[0].row as usize]);
        }
        assert_eq!(
            ivf.search_exact_batch(&queries[..8 * dim], 3),
            flat.search_batch(&queries[..8 * dim], 3)
        );
    }

    #[test]
    fn build_is_deterministic_and_save_load_round_trips() {
        let (rows, classes, queries, dim) = sample();
        let params = IvfParams { lists: 20, ..IvfParams::default() };
        let a = IvfIndex::build(&rows, dim, &classes, &params).unwrap();
        let b = IvfIndex::build(&rows, dim, &classes, &params).unwrap();
        assert_eq!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("a.ivf"), dir.path().join("b.ivf"));
        a.save(&pa).unwrap();
        b.save(&pb).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        let loaded = IvfIndex::load(&pa).unwrap();
        assert_eq!(loaded, a);
        assert_eq!(loaded.search(&queries[..dim], 5, 4), a.search(&queries[..dim], 5, 4));
    }

    #[test]
    fn corrupt_files_are_rejected_naming_the_file() {
        let (rows, classes, _, dim) = sample();
        let a = IvfIndex::build(&rows[..500 * dim], dim, &classes[..500], &IvfParams::default())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.ivf");
        a.save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], needle: &str| {
            std::fs::write(&path, bytes).unwrap();
            let e = format!("{:#}", IvfIndex::load(&path).unwrap_err());
            assert!(e.contains("shop.ivf") && e.contains(needle), "{e}");
        };
        check(&good[..good.len() - 10], "truncated");
        check(&good[..10], "shorter than the header");
        let mut bad = good.clone();
        bad[0] = b'X';
        check(&bad, "magic");
        // Corrupt the first row id (after header, centroids and offsets).
        let ids_at = 32 + 4 * a.lists() * dim + 8 * (a.lists() + 1);
        let mut bad = good.clone();
        bad[ids_at..ids_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&bad, "row id");
        let e = format!("{:#}", IvfIndex::load(&dir.path().join("missing.ivf")).unwrap_err());
        assert!(e.contains("missing.ivf"), "{e}");
    }
}
