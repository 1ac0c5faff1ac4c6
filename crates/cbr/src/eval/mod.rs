//! `cbr eval`: how well would a classifier built from K images per class do?
//!
//! Every image is embedded once (with `--augment`, its mirror image too); all
//! splits and head configurations are then computed on the stored embeddings
//! with [`RetrievalHead`], whose math is the exported graph's.
//!
//! Protocol, for each K and each seed: a random split puts K images of every
//! class in the index and the rest are queries (only their photo row, never
//! the mirror row). Each head configuration (every [`Aggregation`] with the
//! default centring and calibration, plus the `original` rule) is built from
//! the same index and scored on the same queries; top-1 and top-5 accuracy
//! are averaged over seeds with a 95% t-interval. The default configuration
//! also gets per-class metrics, a confusion matrix, calibration and an
//! open-set test: ~20% of the classes are held out entirely as "unknown".

pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::pipeline::Embedded;
use cbr_core::head::{calibrate, softmax, Aggregation, HeadOptions, IndexDtype, RetrievalHead};
use cbr_core::rng::SplitMix64;

const STREAM_SPLIT: u64 = 1;
const STREAM_UNKNOWN: u64 = 2;

// ---------------------------------------------------------------- data

/// The embedded data set, grouped by source image.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Class of each source image.
    pub image_class: Vec<usize>,
    /// Embedding rows of each source image; the first is the photo (later
    /// ones, with augmentation, its mirror image).
    pub image_rows: Vec<Vec<usize>>,
    pub embeddings: Vec<f32>,
    pub dim: usize,
    /// Path of each source image (may be empty in tests).
    pub paths: Vec<PathBuf>,
}

impl Dataset {
    /// From rows of `dim` values, each with its label and source image id.
    pub fn from_rows(
        embeddings: Vec<f32>,
        dim: usize,
        labels: &[String],
        images: &[u32],
        paths: Vec<PathBuf>,
    ) -> Result<Self> {
        if dim == 0 || embeddings.len() != labels.len() * dim || images.len() != labels.len() {
            bail!(
                "{} embedding values do not make {} rows of {dim}",
                embeddings.len(),
                labels.len()
            );
        }
        let mut classes: Vec<String> = labels.to_vec();
        classes.sort();
        classes.dedup();
        let n_images = images.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut image_class = vec![usize::MAX; n_images];
        let mut image_rows = vec![Vec::new(); n_images];
        for (row, (label, &img)) in labels.iter().zip(images).enumerate() {
            let c = classes.binary_search(label).expect("label is a class");
            let img = img as usize;
            if image_class[img] != usize::MAX && image_class[img] != c {
                bail!("image {img} has rows of two classes");
            }
            image_class[img] = c;
            image_rows[img].push(row);
        }
        // Images without rows (skipped) keep no rows: drop them from the id space.
        let keep: Vec<usize> = (0..n_images).filter(|&i| !image_rows[i].is_empty()).collect();
        let paths = if paths.len() == n_images {
            keep.iter().map(|&i| paths[i].clone()).collect()
        } else {
            Vec::new()
        };
        Ok(Dataset {
            classes,
            image_class: keep.iter().map(|&i| image_class[i]).collect(),
            image_rows: keep.iter().map(|&i| std::mem::take(&mut image_rows[i])).collect(),
            embeddings,
            dim,
            paths,
        })
    }

    pub fn from_embedded(e: &Embedded) -> Result<Self> {
        Self::from_rows(e.embeddings.clone(), e.dim, &e.labels, &e.images, e.paths.clone())
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.embeddings[r * self.dim..(r + 1) * self.dim]
    }

    /// Images of each class, in image order.
    pub fn class_images(&self) -> Vec<Vec<usize>> {
        let mut g = vec![Vec::new(); self.classes.len()];
        for (i, &c) in self.image_class.iter().enumerate() {
            g[c].push(i);
        }
        g
    }
}

/// Writes `embeddings.f32` (raw little-endian rows), `labels.txt` (one per
/// row), `images.txt` (source image index per row) and `paths.txt` (one per
/// source image) into `dir`, for `bench/logreg_reference.py`.
pub fn dump(e: &Embedded, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bytes = Vec::with_capacity(e.embeddings.len() * 4);
    for v in &e.embeddings {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::cache::write_atomic(&dir.join("embeddings.f32"), &bytes)?;
    let lines = |v: Vec<String>| v.into_iter().map(|s| s + "\n").collect::<String>().into_bytes();
    crate::cache::write_atomic(&dir.join("labels.txt"), &lines(e.labels.clone()))?;
    crate::cache::write_atomic(
        &dir.join("images.txt"),
        &lines(e.images.iter().map(|i| i.to_string()).collect()),
    )?;
    crate::cache::write_atomic(
        &dir.join("paths.txt"),
        &lines(e.paths.iter().map(|p| p.to_string_lossy().into_owned()).collect()),
    )?;
    crate::cache::write_atomic(
        &dir.join("meta.json"),
        serde_json::json!({ "dim": e.dim, "rows": e.labels.len() }).to_string().as_bytes(),
    )?;
    Ok(())
}

// ---------------------------------------------------------------- splits

/// Source images in the index and as queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub index: Vec<usize>,
    pub queries: Vec<usize>,
}

/// How many of a class's `n` images go to the index for `shots`: `shots` when
/// there are more, else all but one (one left as a query), and at least one.
pub fn index_count(n: usize, shots: usize) -> usize {
    if n > shots {
        shots
    } else {
        n.saturating_sub(1).max(1).min(n)
    }
}

/// The split for `seed`: each class's images are shuffled by a generator
/// seeded from `seed` (the same permutation for every K, so smaller indexes
/// are subsets of larger ones) and the first [`index_count`] go to the index.
pub fn split(class_images: &[Vec<usize>], shots: usize, seed: u64) -> Split {
    let mut rng = SplitMix64::stream(seed, STREAM_SPLIT);
    let mut s = Split { index: Vec::new(), queries: Vec::new() };
    for imgs in class_images {
        let mut v = imgs.clone();
        rng.shuffle(&mut v);
        let k = index_count(v.len(), shots);
        s.index.extend_from_slice(&v[..k]);
        s.queries.extend_from_slice(&v[k..]);
    }
    s
}

/// The classes held out as unknown for `seed`: `fraction` of them, rounded,
/// at least one and leaving at least two known. Sorted. Empty with < 3 classes.
pub fn unknown_classes(n_classes: usize, fraction: f64, seed: u64) -> Vec<usize> {
    if n_classes < 3 {
        return Vec::new();
    }
    let n = ((n_classes as f64 * fraction).round() as usize).clamp(1, n_classes - 2);
    let mut c: Vec<usize> = (0..n_classes).collect();
    SplitMix64::stream(seed, STREAM_UNKNOWN).shuffle(&mut c);
    let mut u = c[..n].to_vec();
    u.sort();
    u
}

// ---------------------------------------------------------------- metrics

/// Rank of the true class (0 = top): classes scoring higher, plus equal
/// scores at lower class indices (the first maximum wins, like argmax).
pub fn rank_of(scores: &[f32], truth: usize) -> usize {
    let t = scores[truth];
    scores.iter().enumerate().filter(|&(j, &s)| s > t || (s == t && j < truth)).count()
}

/// The first maximum.
pub fn argmax(s: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in s.iter().enumerate() {
        if *v > s[best] {
            best = i;
        }
    }
    best
}

/// Share of queries whose true class is among the `k` best.
pub fn top_k_accuracy(scores: &[Vec<f32>], truths: &[usize], k: usize) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    scores.iter().zip(truths).filter(|(s, &t)| rank_of(s, t) < k).count() as f64
        / scores.len() as f64
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
pub fn t_critical_95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        // Cornish-Fisher: z + (z^3 + z) / (4 df), within 0.001 beyond 30.
        _ => 1.959964 + (1.959964f64.powi(3) + 1.959964) / (4.0 * df as f64),
    }
}

/// A mean over seeds with its 95% confidence half-width (none for one value).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stat {
    pub mean: f64,
    /// Half-width of the 95% t-interval: mean ± ci95.
    pub ci95: Option<f64>,
    pub values: Vec<f64>,
}

impl Stat {
    /// From per-seed values; NaN values (undefined for a seed) are left out.
    pub fn of(values: &[f64]) -> Stat {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        let mean = if n == 0 { f64::NAN } else { v.iter().sum::<f64>() / n as f64 };
        let ci95 = if n < 2 {
            None
        } else {
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            Some(t_critical_95(n - 1) * (var / n as f64).sqrt())
        };
        Stat { mean, ci95, values: values.to_vec() }
    }
}

/// Area under the ROC curve of `positive` scores against `negative` ones: the
/// chance a random positive scores above a random negative, ties counting half.
pub fn auroc(positive: &[f32], negative: &[f32]) -> Option<f64> {
    if positive.is_empty() || negative.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> =
        positive.iter().map(|&s| (s, true)).chain(negative.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with average ranks for ties.
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
        rank_sum_pos += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (p, n) = (positive.len() as f64, negative.len() as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// `m[truth][predicted]` counts.
pub fn confusion_matrix(truths: &[usize], predicted: &[usize], n_classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; n_classes]; n_classes];
    for (&t, &p) in truths.iter().zip(predicted) {
        m[t][p] += 1;
    }
    m
}

/// Precision and recall of one class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub label: String,
    /// Correct / predicted as this class (none if never predicted).
    pub precision: Option<f64>,
    /// Correct / queries of this class (none without queries).
    pub recall: Option<f64>,
    /// Queries of this class (summed over seeds).
    pub support: u64,
    pub predicted: u64,
}

/// Per-class precision and recall from a confusion matrix.
pub fn per_class_metrics(m: &[Vec<u64>], labels: &[String]) -> Vec<ClassMetrics> {
    (0..m.len())
        .map(|c| {
            let support: u64 = m[c].iter().sum();
            let predicted: u64 = m.iter().map(|r| r[c]).sum();
            let ok = m[c][c] as f64;
            ClassMetrics {
                label: labels[c].clone(),
                precision: (predicted > 0).then(|| ok / predicted as f64),
                recall: (support > 0).then(|| ok / support as f64),
                support,
                predicted,
            }
        })
        .collect()
}

/// One bin of a reliability diagram.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
    /// Mean confidence and accuracy of the bin's queries (none when empty).
    pub confidence: Option<f64>,
    pub accuracy: Option<f64>,
}

/// Equal-width bins of top-score confidence against accuracy.
pub fn reliability_bins(confidence: &[f32], correct: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let mut conf = vec![0f64; bins];
    let mut acc = vec![0f64; bins];
    let mut count = vec![0u64; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        conf[b] += c as f64;
        acc[b] += ok as u8 as f64;
        count[b] += 1;
    }
    (0..bins)
        .map(|b| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: count[b],
            confidence: (count[b] > 0).then(|| conf[b] / count[b] as f64),
            accuracy: (count[b] > 0).then(|| acc[b] / count[b] as f64),
        })
        .collect()
}

// ---------------------------------------------------------------- protocol

/// A head configuration compared by `cbr eval`.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub options: HeadOptions,
    /// `HeadOptions::default()`: gets the detailed report.
    pub default: bool,
}

/// Every aggregation with the default centring and calibration (and the
/// prior of `embedder`), then `original`.
pub fn configs(embedder: &str) -> Vec<Config> {
    let d = crate::models::head_options_for(&HeadOptions::default(), embedder);
    let mut v: Vec<Config> = Aggregation::ALL
        .into_iter()
        .map(|a| {
            let options = HeadOptions { aggregation: a, ..d.clone() };
            Config { name: a.name().to_string(), default: options == d, options }
        })
        .collect();
    v.push(Config { name: "original".into(), options: HeadOptions::original(), default: false });
    // The compact index dtypes: what storing rows in f16 or int8 costs.
    for (base, name) in [
        (d.clone(), "discriminant"),
        (HeadOptions { aggregation: Aggregation::Max, ..d.clone() }, "max"),
    ] {
        for dtype in [IndexDtype::F16, IndexDtype::Int8] {
            if name == "max" && dtype == IndexDtype::F16 {
                continue;
            }
            v.push(Config {
                name: format!("{name} {dtype}"),
                options: HeadOptions { index_dtype: dtype, ..base.clone() },
                default: false,
            });
        }
    }
    v
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Index images per class; each K is a separate evaluation.
    pub shots: Vec<usize>,
    pub seeds: usize,
    /// Share of classes held out as unknown in the open-set test.
    pub unknown_fraction: f64,
    /// Confusion pairs kept (with example images) in the report.
    pub pairs: usize,
    /// The embedder's name: its calibration prior is used (one image per class).
    pub embedder: String,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            shots: vec![5],
            seeds: 5,
            unknown_fraction: 0.2,
            pairs: 20,
            embedder: String::new(),
        }
    }
}

/// One configuration's accuracy over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResult {
    pub name: String,
    pub aggregation: String,
    pub center: bool,
    pub calibrate: bool,
    pub default: bool,
    pub top1: Stat,
    pub top5: Stat,
    /// Why the head could not be built, if it could not (for some seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A frequent confusion, with example images.
#[derive(Clone, Debug, Serialize)]
pub struct ConfusedPair {
    pub truth: String,
    pub predicted: String,
    /// Queries of `truth` predicted as `predicted`, summed over seeds.
    pub count: u64,
    /// Share of `truth`'s queries.
    pub rate: f64,
    /// Some of those queries.
    pub examples: Vec<String>,
    /// Some images of the predicted class, for comparison.
    pub predicted_examples: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibrationResult {
    /// Expected calibration error (15 bins) of the top softmax score on the
    /// held-out queries with τ = 1 ("unfitted") and with the fitted τ.
    pub ece_unfitted: Stat,
    pub ece_fitted: Stat,
    pub temperature: Stat,
    /// Which scores the reliability diagram shows: "fitted" or, when no
    /// temperature could be fitted (one image per class), "unfitted".
    pub reliability_of: String,
    /// 10 bins, queries of all seeds.
    pub reliability: Vec<ReliabilityBin>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenSetResult {
    pub unknown_classes: usize,
    pub known_classes: usize,
    /// AUROC of the model's "known" score (1 − its unknown entry, or the top
    /// score for a model without one): known-class vs unknown-class queries.
    pub auroc: Stat,
    /// The model's own threshold on the top score, if it has one.
    pub threshold: Stat,
    /// With the model's own decision (its unknown entry, and threshold):
    /// accuracy of answered known queries, share of known queries answered,
    /// share of unknown queries answered "unknown".
    pub known_accuracy_accepted: Stat,
    pub known_accepted: Stat,
    pub unknown_rejected: Stat,
}

/// Known-class queries against images of no known class (`cbr eval --unknown DIR`).
#[derive(Clone, Debug, Serialize)]
pub struct FarUnknownResult {
    /// Images of no known class scored (every seed scores all of them).
    pub images: usize,
    /// AUROC of the model's "known" score (1 − its unknown entry, or the top
    /// score without one): known-class queries vs the unknown images.
    pub auroc: Stat,
    /// Share of unknown images answered when the known score's cut answers
    /// 95% of the known queries.
    pub fpr_at_95_tpr: Stat,
    /// With the model's own decision: share of known queries answered, share
    /// answered with the right class (of all known queries), share of
    /// unknown images answered "unknown".
    pub known_accepted: Stat,
    pub known_right_and_accepted: Stat,
    pub unknown_rejected: Stat,
    /// Top-1 of the same heads on the known queries with no unknown answer.
    pub top1_no_threshold: Stat,
}

/// The detailed report of the default configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Detail {
    pub config: String,
    pub labels: Vec<String>,
    /// `confusion[truth][predicted]`, summed over seeds.
    pub confusion: Vec<Vec<u64>>,
    pub per_class: Vec<ClassMetrics>,
    pub confused_pairs: Vec<ConfusedPair>,
    pub calibration: CalibrationResult,
    pub open_set: Option<OpenSetResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShotResult {
    pub shots: usize,
    /// Index and query images per seed (the same for every seed).
    pub index_images: usize,
    pub query_images: usize,
    pub configs: Vec<ConfigResult>,
    pub detail: Option<Detail>,
    /// With `--unknown`: the default configuration against images of no known class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub far_unknown: Option<FarUnknownResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub embedder: String,
    pub classes: usize,
    pub images: usize,
    pub skipped: usize,
    pub augment: bool,
    pub seeds: usize,
    pub embed_seconds: f64,
    pub eval_seconds: f64,
    pub results: Vec<ShotResult>,
}

/// Rows of `images` as (embeddings, labels, image ids) for a head.
fn index_rows(ds: &Dataset, images: &[usize]) -> (Vec<f32>, Vec<String>, Vec<u32>) {
    let mut e = Vec::new();
    let mut l = Vec::new();
    let mut ids = Vec::new();
    for &i in images {
        for &r in &ds.image_rows[i] {
            e.extend_from_slice(ds.row(r));
            l.push(ds.classes[ds.image_class[i]].clone());
            ids.push(i as u32);
        }
    }
    (e, l, ids)
}

/// Class similarities of each query image (its photo row) in the dataset's
/// class order (`-inf` for classes the head does not know).
fn query_similarities(ds: &Dataset, head: &RetrievalHead, queries: &[usize]) -> Vec<Vec<f32>> {
    let to_global: Vec<usize> = head
        .labels
        .iter()
        .map(|l| ds.classes.binary_search(l).expect("head class is a class"))
        .collect();
    let same = to_global.len() == ds.classes.len();
    queries
        .par_iter()
        .map(|&i| {
            let s = head.class_similarities(ds.row(ds.image_rows[i][0]));
            if same {
                s
            } else {
                let mut g = vec![f32::NEG_INFINITY; ds.classes.len()];
                for (v, &c) in s.iter().zip(&to_global) {
                    g[c] = *v;
                }
                g
            }
        })
        .collect()
}

/// The model's `scores` for each query image (its photo row), in the
/// head's class order, with the unknown entry last when the head has one.
fn model_scores(ds: &Dataset, head: &RetrievalHead, queries: &[usize]) -> Vec<Vec<f32>> {
    let plan = head.plan();
    queries
        .par_iter()
        .map(|&i| {
            cbr_core::head::interpret::evaluate(&plan, ds.row(ds.image_rows[i][0]), plan.scores)
        })
        .collect()
}

/// How sure a model is that an image is of one of its classes: 1 − its
/// unknown entry, or (without one) its top score.
fn known_score(head: &RetrievalHead, scores: &[f32]) -> f32 {
    if scores.len() > head.labels.len() {
        1.0 - scores[head.labels.len()]
    } else {
        top_of(scores)
    }
}

/// The model's answer for one row of its scores (a class index of the
/// head, or `None` for "unknown"), as `cbr classify` decides it.
fn answer(head: &RetrievalHead, scores: &[f32]) -> Option<usize> {
    let classes = head.labels.len();
    let p = crate::classifier::predict_row(&head.labels, scores, classes, 1, head.threshold, true);
    p.label.map(|l| head.labels.binary_search(&l).expect("a head label"))
}

fn top_of(p: &[f32]) -> f32 {
    p.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
}

fn path_string(ds: &Dataset, i: usize) -> String {
    ds.paths.get(i).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| format!("#{i}"))
}

/// Runs the protocol for one K.
pub fn evaluate_shots(
    ds: &Dataset,
    shots: usize,
    opts: &EvalOptions,
    unknown_images: Option<&Dataset>,
) -> Result<ShotResult> {
    let cfgs = configs(&opts.embedder);
    let class_images = ds.class_images();
    let nc = ds.classes.len();
    let mut top1 = vec![Vec::new(); cfgs.len()];
    let mut top5 = vec![Vec::new(); cfgs.len()];
    let mut errors: Vec<Option<String>> = vec![None; cfgs.len()];
    let mut confusion = vec![vec![0u64; nc]; nc];
    let mut examples: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    let (mut ece0, mut ece1, mut temps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rel_conf, mut rel_ok, mut rel_fitted) = (Vec::new(), Vec::new(), true);
    let mut open = Vec::new();
    let mut far = Vec::new();
    let mut sizes = (0, 0);
    let has_default = cfgs.iter().any(|c| c.default);

    for seed in 0..opts.seeds as u64 {
        let sp = split(&class_images, shots, seed);
        sizes = (sp.index.len(), sp.queries.len());
        if sp.queries.is_empty() {
            bail!("no query images left with {shots} index images per class: use fewer --shots");
        }
        let truths: Vec<usize> = sp.queries.iter().map(|&i| ds.image_class[i]).collect();
        let (e, l, ids) = index_rows(ds, &sp.index);
        for (ci, cfg) in cfgs.iter().enumerate() {
            let head = match RetrievalHead::with_images(&e, ds.dim, &l, &ids, &cfg.options) {
                Ok(h) => h,
                Err(err) => {
                    errors[ci] = Some(format!("{err:#}"));
                    top1[ci].push(f64::NAN);
                    top5[ci].push(f64::NAN);
                    continue;
                }
            };
            let sims = query_similarities(ds, &head, &sp.queries);
            top1[ci].push(top_k_accuracy(&sims, &truths, 1));
            top5[ci].push(top_k_accuracy(&sims, &truths, 5));
            if !cfg.default {
                continue;
            }
            let mut correct = Vec::with_capacity(sims.len());
            let (mut c0, mut c1) = (Vec::new(), Vec::new());
            // The model's own scores: the confidence in its best class is
            // that class's probability (times p_known with an unknown entry).
            let answers = model_scores(ds, &head, &sp.queries);
            for (((s, &t), &img), a) in sims.iter().zip(&truths).zip(&sp.queries).zip(&answers) {
                let p = argmax(s);
                confusion[t][p] += 1;
                if p != t {
                    let ex = examples.entry((t, p)).or_default();
                    if ex.len() < 4 {
                        ex.push(img);
                    }
                }
                correct.push(p == t);
                c0.push(top_of(&softmax(s, 1.0)));
                if head.temperature.is_some() {
                    c1.push(top_of(&a[..head.labels.len()]));
                }
            }
            ece0.push(calibrate::ece(&c0, &correct) as f64);
            match head.temperature {
                Some(tau) => {
                    ece1.push(calibrate::ece(&c1, &correct) as f64);
                    temps.push(tau as f64);
                }
                None => {
                    ece1.push(f64::NAN);
                    temps.push(f64::NAN);
                    rel_fitted = false;
                }
            }
            rel_conf.push((c0, c1));
            rel_ok.push(correct);
        }
        if has_default {
            let cfg = cfgs.iter().find(|c| c.default).expect("a default configuration");
            open.push(open_set_seed(
                ds,
                &class_images,
                shots,
                seed,
                opts.unknown_fraction,
                &cfg.options,
            )?);
            if let Some(u) = unknown_images {
                far.push(far_unknown_seed(ds, u, &sp, &cfg.options)?);
            }
        }
    }

    let configs = cfgs
        .iter()
        .enumerate()
        .map(|(i, c)| ConfigResult {
            name: c.name.clone(),
            aggregation: c.options.aggregation.name().to_string(),
            center: c.options.center,
            calibrate: c.options.calibrate,
            default: c.default,
            top1: Stat::of(&top1[i]),
            top5: Stat::of(&top5[i]),
            error: errors[i].clone(),
        })
        .collect();

    let detail = if has_default && !rel_ok.is_empty() {
        let cfg = cfgs.iter().find(|c| c.default).expect("a default configuration");
        let (mut conf, mut ok) = (Vec::new(), Vec::new());
        for ((c0, c1), o) in rel_conf.into_iter().zip(rel_ok) {
            conf.extend(if rel_fitted { c1 } else { c0 });
            ok.extend(o);
        }
        let class_images_ref = &class_images;
        let mut pairs: Vec<((usize, usize), u64)> = (0..nc)
            .flat_map(|t| (0..nc).filter(move |&p| p != t).map(move |p| (t, p)))
            .map(|(t, p)| ((t, p), confusion[t][p]))
            .filter(|x| x.1 > 0)
            .collect();
        pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let confused_pairs = pairs
            .into_iter()
            .take(opts.pairs)
            .map(|((t, p), n)| ConfusedPair {
                truth: ds.classes[t].clone(),
                predicted: ds.classes[p].clone(),
                count: n,
                rate: n as f64 / confusion[t].iter().sum::<u64>().max(1) as f64,
                examples: examples
                    .get(&(t, p))
                    .map(|v| v.iter().map(|&i| path_string(ds, i)).collect())
                    .unwrap_or_default(),
                predicted_examples: class_images_ref[p]
                    .iter()
                    .take(2)
                    .map(|&i| path_string(ds, i))
                    .collect(),
            })
            .collect();
        let open_set = open.iter().all(|o| o.is_some()).then(|| {
            let o: Vec<&OpenSeed> = open.iter().map(|o| o.as_ref().expect("checked")).collect();
            let col = |f: &dyn Fn(&OpenSeed) -> f64| {
                Stat::of(&o.iter().map(|x| f(x)).collect::<Vec<_>>())
            };
            OpenSetResult {
                unknown_classes: o[0].unknown,
                known_classes: nc - o[0].unknown,
                auroc: col(&|x| x.auroc),
                threshold: col(&|x| x.threshold),
                known_accuracy_accepted: col(&|x| x.rates.0),
                known_accepted: col(&|x| x.rates.1),
                unknown_rejected: col(&|x| x.rates.2),
            }
        });
        Some(Detail {
            config: cfg.name.clone(),
            labels: ds.classes.clone(),
            per_class: per_class_metrics(&confusion, &ds.classes),
            confusion,
            confused_pairs,
            calibration: CalibrationResult {
                ece_unfitted: Stat::of(&ece0),
                ece_fitted: Stat::of(&ece1),
                temperature: Stat::of(&temps),
                reliability_of: if rel_fitted { "fitted" } else { "unfitted" }.into(),
                reliability: reliability_bins(&conf, &ok, 10),
            },
            open_set: open_set.filter(|o| o.auroc.mean.is_finite()),
        })
    } else {
        None
    };
    let far_unknown = (!far.is_empty()).then(|| {
        let col = |f: &dyn Fn(&FarSeed) -> f64| Stat::of(&far.iter().map(f).collect::<Vec<_>>());
        FarUnknownResult {
            images: unknown_images.map_or(0, |u| u.image_class.len()),
            auroc: col(&|x| x.auroc),
            fpr_at_95_tpr: col(&|x| x.fpr_at_95_tpr),
            known_accepted: col(&|x| x.known_accepted),
            known_right_and_accepted: col(&|x| x.known_right_and_accepted),
            unknown_rejected: col(&|x| x.unknown_rejected),
            top1_no_threshold: col(&|x| x.top1),
        }
    });
    Ok(ShotResult {
        shots,
        index_images: sizes.0,
        query_images: sizes.1,
        configs,
        detail,
        far_unknown,
    })
}

struct FarSeed {
    auroc: f64,
    fpr_at_95_tpr: f64,
    known_accepted: f64,
    known_right_and_accepted: f64,
    unknown_rejected: f64,
    top1: f64,
}

/// One seed against images of no known class: the default head on the
/// split's index, its known queries and every unknown image.
fn far_unknown_seed(
    ds: &Dataset,
    unknown: &Dataset,
    sp: &Split,
    options: &HeadOptions,
) -> Result<FarSeed> {
    let (e, l, ids) = index_rows(ds, &sp.index);
    let head = RetrievalHead::with_images(&e, ds.dim, &l, &ids, options)?;
    let known = model_scores(ds, &head, &sp.queries);
    let all: Vec<usize> = (0..unknown.image_class.len()).collect();
    let other = model_scores(unknown, &head, &all);
    let truth = |i: usize| head.labels.binary_search(&ds.classes[ds.image_class[i]]).ok();
    let known_scores: Vec<f32> = known.iter().map(|s| known_score(&head, s)).collect();
    let unknown_scores: Vec<f32> = other.iter().map(|s| known_score(&head, s)).collect();
    let answers: Vec<Option<usize>> = known.iter().map(|s| answer(&head, s)).collect();
    let n = known.len().max(1) as f64;
    let accepted = answers.iter().filter(|a| a.is_some()).count() as f64 / n;
    let right = answers.iter().zip(&sp.queries).filter(|(a, &i)| a.is_some() && **a == truth(i));
    let right = right.count() as f64 / n;
    let top1 = known
        .iter()
        .zip(&sp.queries)
        .filter(|(s, &i)| Some(argmax(&s[..head.labels.len()])) == truth(i))
        .count() as f64
        / n;
    let rejected = other.iter().filter(|s| answer(&head, s).is_none()).count() as f64
        / other.len().max(1) as f64;
    // The cut answering 95% of known queries, and the unknown images above it.
    let mut sorted = known_scores.clone();
    sorted.sort_by(f32::total_cmp);
    let cut = sorted[((0.05 * sorted.len() as f64) as usize).min(sorted.len() - 1)];
    let fpr = unknown_scores.iter().filter(|&&s| s >= cut).count() as f64
        / unknown_scores.len().max(1) as f64;
    Ok(FarSeed {
        auroc: auroc(&known_scores, &unknown_scores).unwrap_or(f64::NAN),
        fpr_at_95_tpr: fpr,
        known_accepted: accepted,
        known_right_and_accepted: right,
        unknown_rejected: rejected,
        top1,
    })
}

struct OpenSeed {
    unknown: usize,
    auroc: f64,
    threshold: f64,
    rates: (f64, f64, f64),
}

/// One seed of the open-set test (none with fewer than 3 classes).
fn open_set_seed(
    ds: &Dataset,
    class_images: &[Vec<usize>],
    shots: usize,
    seed: u64,
    fraction: f64,
    options: &HeadOptions,
) -> Result<Option<OpenSeed>> {
    let unknown = unknown_classes(ds.classes.len(), fraction, seed);
    if unknown.is_empty() {
        return Ok(None);
    }
    let is_unknown = |c: usize| unknown.binary_search(&c).is_ok();
    let sp = split(class_images, shots, seed);
    let index: Vec<usize> =
        sp.index.iter().copied().filter(|&i| !is_unknown(ds.image_class[i])).collect();
    let known_q: Vec<usize> =
        sp.queries.iter().copied().filter(|&i| !is_unknown(ds.image_class[i])).collect();
    let unknown_q: Vec<usize> =
        (0..ds.image_class.len()).filter(|&i| is_unknown(ds.image_class[i])).collect();
    let (e, l, ids) = index_rows(ds, &index);
    let head = RetrievalHead::with_images(&e, ds.dim, &l, &ids, options)?;
    let truth = |i: usize| head.labels.binary_search(&ds.classes[ds.image_class[i]]).ok();
    // Each query: the model's known score, its answer, and whether that is the true class.
    let answered = |qs: &[usize]| -> Vec<(f32, Option<usize>, bool)> {
        model_scores(ds, &head, qs)
            .into_iter()
            .zip(qs)
            .map(|(s, &i)| {
                let a = answer(&head, &s);
                (known_score(&head, &s), a, a.is_some() && a == truth(i))
            })
            .collect()
    };
    let k = answered(&known_q);
    let u = answered(&unknown_q);
    let ks: Vec<f32> = k.iter().map(|x| x.0).collect();
    let us: Vec<f32> = u.iter().map(|x| x.0).collect();
    let n_acc = k.iter().filter(|x| x.1.is_some()).count();
    let frac = |n: usize, d: usize| if d == 0 { f64::NAN } else { n as f64 / d as f64 };
    Ok(Some(OpenSeed {
        unknown: unknown.len(),
        auroc: auroc(&ks, &us).unwrap_or(f64::NAN),
        threshold: head.threshold.map(|t| t as f64).unwrap_or(f64::NAN),
        rates: (
            frac(k.iter().filter(|x| x.2).count(), n_acc),
            frac(n_acc, k.len()),
            frac(u.iter().filter(|x| x.1.is_none()).count(), u.len()),
        ),
    }))
}

/// Refuses options that cannot give a result.
pub fn check_options(opts: &EvalOptions) -> Result<()> {
    if opts.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if opts.shots.is_empty() || opts.shots.contains(&0) {
        bail!("--shots must be at least 1 image per class");
    }
    if !(0.0..1.0).contains(&opts.unknown_fraction) {
        bail!("the unknown-class fraction must be in [0, 1)");
    }
    Ok(())
}

/// Runs every K of `opts` on the embedded data set.
pub fn evaluate(
    ds: &Dataset,
    opts: &EvalOptions,
    unknown_images: Option<&Dataset>,
    progress: &dyn Fn(usize),
) -> Result<Vec<ShotResult>> {
    if ds.classes.len() < 2 {
        bail!("evaluation needs at least two classes");
    }
    check_options(opts)?;
    opts.shots
        .iter()
        .map(|&k| {
            progress(k);
            evaluate_shots(ds, k, opts, unknown_images)
        })
        .collect()
}

/// Evaluates embedded images: [`evaluate`] plus what the report says about
/// the data. `progress` is called with each K as it starts.
pub fn run(
    dataset: &str,
    embedder: &str,
    e: &Embedded,
    unknown_images: Option<&Embedded>,
    augment: bool,
    opts: &EvalOptions,
    progress: &dyn Fn(usize),
) -> Result<EvalReport> {
    let ds = Dataset::from_embedded(e)?;
    let unknown = unknown_images.map(Dataset::from_embedded).transpose()?;
    let start = std::time::Instant::now();
    let results = evaluate(&ds, opts, unknown.as_ref(), progress)?;
    Ok(EvalReport {
        dataset: dataset.to_string(),
        embedder: embedder.to_string(),
        classes: ds.classes.len(),
        images: ds.image_class.len(),
        skipped: e.skipped.len(),
        augment,
        seeds: opts.seeds,
        embed_seconds: e.seconds,
        eval_seconds: start.elapsed().as_secs_f64(),
        results,
    })
}

#[cfg(test)]
mod tests;
