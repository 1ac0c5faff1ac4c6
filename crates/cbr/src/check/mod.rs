//! `cbr check`: a data-quality report of a labelled image set before a model is shipped, from
//! the index's own leave-one-out (each image scored by the head built from all the others, as
//! `cbr build` would build it) and the embeddings' cosines:
//!
//! - likely mislabelled images: another class is the leave-one-out best and the image's own
//!   label gets at most [`CheckOptions::mislabel_fraction`] of chance (`1 / classes`);
//! - near-duplicates (cosine of the L2-normalised embeddings ≥
//!   [`CheckOptions::duplicate_cosine`], from a self-join) within a class, and across classes,
//!   where they are a label conflict; exact duplicate files, which the pipeline skips, too;
//! - outliers: images far from the rest of their own class (a robust z-score of the cosine to
//!   the class mean without them, within the class);
//! - the most confusable class pairs (leave-one-out probability exchanged between two classes);
//! - classes that need more images (too few, or leave-one-out accuracy well below the rest).
//!
//! Plain data in, plain data out: the caller embeds (the same pipeline as `cbr build`) and
//! [`report`] presents the result as text, JSON (`cbr-check/1`) or HTML.

pub mod report;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::pipeline::Embedded;
use cbr_core::head::calibrate::{self, Sample};
use cbr_core::head::{l2_normalize, softmax, HeadOptions, ImageId, Index, RetrievalHead};
use cbr_core::kernels::dot;

/// The version of the JSON document (`"schema"`); bumped when a field changes meaning or goes.
pub const SCHEMA: &str = "cbr-check/1";

/// Thresholds of the report (the defaults are documented in the README with how they were
/// chosen).
#[derive(Clone, Debug, Serialize)]
pub struct Thresholds {
    /// Likely mislabelled: another class is best and the own label's leave-one-out probability
    /// is at most this fraction of chance (`1 / classes`). Chosen on CUB-10 and Tiny ImageNet
    /// with 5% of labels flipped (seed 1; the README reports seed 0).
    pub mislabel_fraction: f32,
    /// Near-duplicates: cosine of the L2-normalised raw embeddings at least this. With
    /// EfficientNet-Lite0, 84% of edited copies (JPEG quality 30, half size, 80-90% centre
    /// crops, +30% brightness) of CUB photos reach 0.90; no two distinct photos of Tiny ImageNet
    /// do (highest 0.894), and in CUB-10 only two burst shots of one bird.
    pub duplicate_cosine: f32,
    /// Outliers: robust z-score (median and MAD within the class) at most minus this.
    pub outlier_z: f32,
    /// A class with fewer images needs more (also: no outlier statistics below it).
    pub min_images: usize,
    /// A class whose leave-one-out accuracy is this far below the overall one needs more images.
    pub weak_margin: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            mislabel_fraction: 0.25,
            duplicate_cosine: 0.90,
            outlier_z: 3.5,
            min_images: 5,
            weak_margin: 0.25,
        }
    }
}

/// How to check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// The head whose leave-one-out is used: the build's (pass it through
    /// `models::head_options_for` so a known embedder's prior applies).
    pub head: HeadOptions,
    pub thresholds: Thresholds,
}

/// An image that another class claims.
#[derive(Clone, Debug, Serialize)]
pub struct Mislabel {
    pub path: String,
    pub label: String,
    /// The leave-one-out best class.
    pub suggested: String,
    /// Leave-one-out probability of the image's own label.
    pub p_label: f32,
    /// Leave-one-out probability of the suggested class.
    pub p_suggested: f32,
}

/// Two images with (nearly) the same embedding.
#[derive(Clone, Debug, Serialize)]
pub struct Duplicate {
    pub a: String,
    pub b: String,
    pub label_a: String,
    pub label_b: String,
    pub cosine: f32,
    /// The same bytes (within a class, the pipeline kept only `a`).
    pub exact: bool,
    /// In different classes: a label conflict.
    pub across_classes: bool,
}

/// An image far from the rest of its class.
#[derive(Clone, Debug, Serialize)]
pub struct Outlier {
    pub path: String,
    pub label: String,
    /// Cosine to the normalised mean of the other images of its class.
    pub class_similarity: f32,
    /// The median of that cosine in its class.
    pub class_median: f32,
    /// Robust z-score of `class_similarity` within the class (negative: farther).
    pub z: f32,
    /// Cosine to the nearest other image of its class.
    pub nearest_in_class: f32,
}

/// Two classes the index tells apart badly.
#[derive(Clone, Debug, Serialize)]
pub struct ConfusablePair {
    pub a: String,
    pub b: String,
    /// Images of `a` whose leave-one-out best is `b`.
    pub a_as_b: usize,
    pub b_as_a: usize,
    /// Mean leave-one-out probability one class's images give the other, over both classes.
    pub confusion: f32,
}

/// One class's figures, and whether it needs more images.
#[derive(Clone, Debug, Serialize)]
pub struct ClassHealth {
    pub label: String,
    pub images: usize,
    /// Share of its images whose leave-one-out best is the class (none with one image).
    pub loo_accuracy: Option<f32>,
    pub needs_more: bool,
    /// Why it needs more images, as sentences.
    pub reasons: Vec<String>,
}

/// An image that could not be used (unreadable, too big, ...).
#[derive(Clone, Debug, Serialize)]
pub struct SkippedImage {
    pub path: String,
    pub reason: String,
}

/// Leave-one-out over every image.
#[derive(Clone, Debug, Serialize)]
pub struct LooSummary {
    /// Images scored (an image alone in its class cannot be).
    pub images: usize,
    pub accuracy: f32,
    /// The softmax temperature of the probabilities, fitted on them as `cbr build` calibrates.
    pub temperature: f32,
}

/// Everything `cbr check` found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub schema: &'static str,
    pub dataset: String,
    pub embedder: String,
    pub classes: usize,
    /// Images used (readable, not exact duplicates within their class).
    pub images: usize,
    pub thresholds: Thresholds,
    /// None when no class has two images.
    pub leave_one_out: Option<LooSummary>,
    /// Most confident first.
    pub mislabelled: Vec<Mislabel>,
    /// Across classes first, then by cosine.
    pub duplicates: Vec<Duplicate>,
    /// Farthest first.
    pub outliers: Vec<Outlier>,
    /// Most confused first.
    pub confusable_pairs: Vec<ConfusablePair>,
    /// Classes that need more images first, then by leave-one-out accuracy.
    pub classes_health: Vec<ClassHealth>,
    pub skipped: Vec<SkippedImage>,
    pub embed_seconds: f64,
    pub check_seconds: f64,
}

/// How many confusable pairs are reported.
const PAIRS: usize = 20;
/// Neighbours per image in the duplicate self-join: a group larger than this of near-copies
/// still shows every image in some pair.
const NEIGHBOURS: usize = 8;

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The image number of a head row built from [`ImageId::from_index`] ids.
fn image_of(id: &ImageId) -> usize {
    u32::from_be_bytes([id.0[12], id.0[13], id.0[14], id.0[15]]) as usize
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, x)| if *x > v[b] { i } else { b })
}

/// Checks the embedded images `embedded` of `dataset` (one row per image: no mirror rows).
pub fn check(
    embedded: &Embedded,
    dataset: &str,
    embedder: &str,
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let start = std::time::Instant::now();
    let t = &opts.thresholds;
    let n = embedded.paths.len();
    let dim = embedded.dim;
    if embedded.labels.len() != n || embedded.embeddings.len() != n * dim {
        bail!("cbr check takes one embedding per image (no mirror rows)");
    }
    if n == 0 {
        bail!("no readable images to check");
    }
    let mut classes: Vec<String> = embedded.labels.clone();
    classes.sort();
    classes.dedup();
    let class_of: HashMap<&str, usize> =
        classes.iter().enumerate().map(|(c, l)| (l.as_str(), c)).collect();
    let label_class: Vec<usize> = embedded.labels.iter().map(|l| class_of[l.as_str()]).collect();
    let paths: Vec<String> = embedded.paths.iter().map(|p| path_string(p)).collect();

    // The embedder's own cosine: raw embeddings, L2-normalised (no power transform or
    // centring, which depend on the head and on the whole set).
    let mut units = embedded.embeddings.clone();
    units.par_chunks_exact_mut(dim).for_each(l2_normalize);

    let mut duplicates = near_duplicates(&units, dim, embedded, &paths, t.duplicate_cosine);
    for s in &embedded.skipped {
        if let Some(kept) = &s.duplicate_of {
            let label = embedded
                .paths
                .iter()
                .position(|p| p == kept)
                .map_or(String::new(), |i| embedded.labels[i].clone());
            duplicates.push(Duplicate {
                a: path_string(kept),
                b: path_string(&s.path),
                label_a: label.clone(),
                label_b: label,
                cosine: 1.0,
                exact: true,
                across_classes: false,
            });
        }
    }
    duplicates.sort_by(|x, y| {
        y.across_classes
            .cmp(&x.across_classes)
            .then(y.cosine.total_cmp(&x.cosine))
            .then(x.a.cmp(&y.a))
            .then(x.b.cmp(&y.b))
    });

    // Leave-one-out of the head `cbr build` would build, every image scored.
    let (probs, temperature) = leave_one_out_probabilities(embedded, &classes, &opts.head)?;
    let scored: Vec<(usize, &Vec<f32>)> =
        probs.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (i, p))).collect();
    let flagged = claimed(&probs, &label_class, t.mislabel_fraction);
    let mut mislabelled: Vec<Mislabel> = scored
        .iter()
        .filter_map(|&(i, p)| {
            let truth = label_class[i];
            let best = argmax(p);
            flagged[i].then(|| Mislabel {
                path: paths[i].clone(),
                label: classes[truth].clone(),
                suggested: classes[best].clone(),
                p_label: p[truth],
                p_suggested: p[best],
            })
        })
        .collect();
    mislabelled.sort_by(|a, b| {
        a.p_label
            .total_cmp(&b.p_label)
            .then(b.p_suggested.total_cmp(&a.p_suggested))
            .then(a.path.cmp(&b.path))
    });

    let mut outliers: Vec<Outlier> = outliers(&units, dim, &label_class, classes.len(), t)
        .into_iter()
        .filter(|(i, ..)| !flagged[*i])
        .map(|(i, class_similarity, class_median, z, nearest_in_class)| Outlier {
            path: paths[i].clone(),
            label: embedded.labels[i].clone(),
            class_similarity,
            class_median,
            z,
            nearest_in_class,
        })
        .collect();
    outliers.sort_by(|a, b| a.z.total_cmp(&b.z).then(a.path.cmp(&b.path)));

    // Per-class accuracy and the probability each class's images give the others.
    let c = classes.len();
    let mut mass = vec![0f64; c * c];
    let mut counts = vec![0usize; c * c];
    let mut scored_in = vec![0usize; c];
    for &(i, p) in &scored {
        let truth = label_class[i];
        scored_in[truth] += 1;
        counts[truth * c + argmax(p)] += 1;
        for (m, &x) in mass[truth * c..(truth + 1) * c].iter_mut().zip(p.iter()) {
            *m += x as f64;
        }
    }
    let correct: usize = (0..c).map(|k| counts[k * c + k]).sum();
    let mut pairs: Vec<ConfusablePair> = Vec::new();
    for a in 0..c {
        for b in a + 1..c {
            let both = (scored_in[a] + scored_in[b]) as f64;
            let m = mass[a * c + b] + mass[b * c + a];
            if both > 0.0 && m > 0.0 {
                pairs.push(ConfusablePair {
                    a: classes[a].clone(),
                    b: classes[b].clone(),
                    a_as_b: counts[a * c + b],
                    b_as_a: counts[b * c + a],
                    confusion: (m / both) as f32,
                });
            }
        }
    }
    pairs.sort_by(|x, y| y.confusion.total_cmp(&x.confusion).then(x.a.cmp(&y.a)));
    pairs.truncate(PAIRS);
    // Pairs no image confuses and that exchange almost no probability are not worth a line.
    pairs.retain(|p| p.a_as_b + p.b_as_a > 0 || p.confusion >= 0.01);

    let overall = (!scored.is_empty()).then(|| correct as f32 / scored.len() as f32);
    let mut sizes = vec![0usize; c];
    for &k in &label_class {
        sizes[k] += 1;
    }
    let mut classes_health: Vec<ClassHealth> = (0..c)
        .map(|k| {
            let loo_accuracy =
                (scored_in[k] > 0).then(|| counts[k * c + k] as f32 / scored_in[k] as f32);
            let mut reasons = Vec::new();
            if sizes[k] < t.min_images {
                reasons.push(format!(
                    "only {} image{} (at least {} recommended)",
                    sizes[k],
                    if sizes[k] == 1 { "" } else { "s" },
                    t.min_images
                ));
            }
            if let (Some(acc), Some(all)) = (loo_accuracy, overall) {
                if acc < all - t.weak_margin {
                    reasons.push(format!(
                        "leave-one-out accuracy {:.0}% (all classes: {:.0}%)",
                        100.0 * acc,
                        100.0 * all
                    ));
                }
            }
            ClassHealth {
                label: classes[k].clone(),
                images: sizes[k],
                loo_accuracy,
                needs_more: !reasons.is_empty(),
                reasons,
            }
        })
        .collect();
    classes_health.sort_by(|a, b| {
        b.needs_more
            .cmp(&a.needs_more)
            .then(a.loo_accuracy.unwrap_or(-1.0).total_cmp(&b.loo_accuracy.unwrap_or(-1.0)))
            .then(a.label.cmp(&b.label))
    });

    let leave_one_out = match (overall, temperature) {
        (Some(accuracy), Some(temperature)) => {
            Some(LooSummary { images: scored.len(), accuracy, temperature })
        }
        _ => None,
    };
    Ok(CheckReport {
        schema: SCHEMA,
        dataset: dataset.to_string(),
        embedder: embedder.to_string(),
        classes: c,
        images: n,
        thresholds: t.clone(),
        leave_one_out,
        mislabelled,
        duplicates,
        outliers,
        confusable_pairs: pairs,
        classes_health,
        skipped: embedded
            .skipped
            .iter()
            .filter(|s| s.duplicate_of.is_none())
            .map(|s| SkippedImage { path: path_string(&s.path), reason: s.reason.clone() })
            .collect(),
        embed_seconds: embedded.seconds,
        check_seconds: start.elapsed().as_secs_f64(),
    })
}

/// One image's leave-one-out probability per class, if it was scored.
type Probabilities = Option<Vec<f32>>;

/// Each image's leave-one-out class probabilities over `classes` (sorted; `None` for an image
/// alone in its class) and the softmax temperature they use, fitted on them as `cbr build`
/// calibrates (minimum negative log-likelihood), on every image rather than a sample.
fn leave_one_out_probabilities(
    embedded: &Embedded,
    classes: &[String],
    head_opts: &HeadOptions,
) -> Result<(Vec<Probabilities>, Option<f32>)> {
    let n = embedded.paths.len();
    let ids: Vec<ImageId> = (0..n as u32).map(ImageId::from_index).collect();
    let power = head_opts.power_exponent();
    let index = Index::from_embeddings(
        &embedded.embeddings,
        embedded.dim,
        &embedded.labels,
        &ids,
        power,
        head_opts.index_dtype,
    )?;
    // Calibration is done below on every image: the head's own (on a sample, with the unknown
    // entry and threshold) would only cost time.
    let opts = HeadOptions { calibrate: false, target_precision: None, ..head_opts.clone() };
    let head = RetrievalHead::from_index(index, &opts)?;
    let mut out = vec![None; n];
    if head.labels.len() < 2 {
        return Ok((out, None));
    }
    let queries = calibrate::image_rows(&head);
    let samples: Vec<(usize, Sample)> = queries
        .iter()
        .zip(calibrate::leave_one_out_rows(&head, &queries))
        .filter_map(|(&r, s)| s.map(|s| (image_of(&head.index.images[r]), s)))
        .collect();
    if samples.is_empty() {
        return Ok((out, None));
    }
    // The build's calibration, on every image rather than a sample of them.
    let plain: Vec<Sample> = samples.iter().map(|(_, s)| s.clone()).collect();
    let temperature = calibrate::fit_temperature(&plain);
    // Every class has an image, so the head's classes are `classes`.
    debug_assert_eq!(head.labels, classes);
    for (image, s) in samples {
        out[image] = Some(softmax(&s.scores, temperature));
    }
    Ok((out, Some(temperature)))
}

/// Images another class claims: its leave-one-out best is not their label, which gets at most
/// `fraction` of chance.
fn claimed(probs: &[Option<Vec<f32>>], label_class: &[usize], fraction: f32) -> Vec<bool> {
    probs
        .iter()
        .zip(label_class)
        .map(|(p, &truth)| {
            p.as_ref().is_some_and(|p| argmax(p) != truth && p[truth] <= fraction / p.len() as f32)
        })
        .collect()
}

/// Pairs of images whose normalised embeddings have a cosine of at least `threshold`, from each
/// image's nearest others ([`crate::search::flat::self_join`]); `exact` when the files' bytes
/// are the same.
fn near_duplicates(
    units: &[f32],
    dim: usize,
    embedded: &Embedded,
    paths: &[String],
    threshold: f32,
) -> Vec<Duplicate> {
    let hits = crate::search::flat::self_join(units, dim, NEIGHBOURS);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, hits) in hits.iter().enumerate() {
        for h in hits.iter().filter(|h| h.score >= threshold) {
            let j = h.row as usize;
            if !seen.insert((i.min(j), i.max(j))) {
                continue;
            }
            let (a, b) = (i.min(j), i.max(j));
            out.push(Duplicate {
                a: paths[a].clone(),
                b: paths[b].clone(),
                label_a: embedded.labels[a].clone(),
                label_b: embedded.labels[b].clone(),
                cosine: h.score.min(1.0),
                exact: embedded.ids[a] == embedded.ids[b],
                across_classes: embedded.labels[a] != embedded.labels[b],
            });
        }
    }
    out
}

/// Images far from the rest of their class: (image, cosine to the class mean without it, the
/// class median of that cosine, robust z-score, cosine to the nearest other image of the
/// class). Classes with fewer than `min_images` images have no statistics to judge by.
fn outliers(
    units: &[f32],
    dim: usize,
    label_class: &[usize],
    classes: usize,
    t: &Thresholds,
) -> Vec<(usize, f32, f32, f32, f32)> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in label_class.iter().enumerate() {
        members[c].push(i);
    }
    members
        .par_iter()
        .filter(|m| m.len() >= t.min_images.max(3))
        .flat_map_iter(|m| {
            let row = |i: usize| &units[i * dim..(i + 1) * dim];
            let mut sum = vec![0f32; dim];
            for &i in m {
                for (a, x) in sum.iter_mut().zip(row(i)) {
                    *a += x;
                }
            }
            let sims: Vec<f32> = m
                .iter()
                .map(|&i| {
                    let mut rest: Vec<f32> = sum.iter().zip(row(i)).map(|(s, x)| s - x).collect();
                    l2_normalize(&mut rest);
                    dot(&rest, row(i))
                })
                .collect();
            let median = median(&sims);
            let deviations: Vec<f32> = sims.iter().map(|s| (s - median).abs()).collect();
            // 1.4826 · MAD estimates the standard deviation of a normal sample; the floor
            // keeps a class of near-identical images from calling a tiny difference extreme.
            let sigma = (1.4826 * median_of(deviations)).max(0.01);
            m.iter()
                .zip(&sims)
                .filter_map(|(&i, &s)| {
                    let z = (s - median) / sigma;
                    (z <= -t.outlier_z).then(|| {
                        let nearest = m
                            .iter()
                            .filter(|&&j| j != i)
                            .map(|&j| dot(row(i), row(j)))
                            .fold(f32::NEG_INFINITY, f32::max);
                        (i, s, median, z, nearest)
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn median(v: &[f32]) -> f32 {
    median_of(v.to_vec())
}

fn median_of(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    let k = v.len();
    if k == 0 {
        return f32::NAN;
    }
    if k % 2 == 1 {
        v[k / 2]
    } else {
        0.5 * (v[k / 2 - 1] + v[k / 2])
    }
}

#[cfg(test)]
mod tests;
