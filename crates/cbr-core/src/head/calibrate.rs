//! What the index can say about itself, by leave-one-out: each index image in
//! turn is scored against the others, as an unseen query would be. From those
//! scores we fit the softmax temperature (minimum negative log-likelihood) and
//! choose the "unknown" threshold that keeps a target precision.

use rayon::prelude::*;

use super::interpret::{sigmoid, Evaluation};
use super::rules::{self, CENTROIDS, DISCRIMINANT};
use super::{
    discriminant, l2_normalize, softmax, Aggregation, HeadOptions, Novelty, Prior, RetrievalHead,
};
use crate::kernels::dot;

/// Leave-one-out queries are capped so calibration stays fast on big indexes:
/// at most this many, and at most `LOO_BUDGET / rows` when matching every row.
const MAX_LOO_QUERIES: usize = 2000;
const LOO_BUDGET: usize = 20_000_000;

pub use crate::meta::Calibration;

/// One leave-one-out query: class similarities (`-inf` for a class left with
/// no images), the true class and, when the head measures novelty, the
/// query's cosine to the nearest class mean (its own class without it).
#[derive(Clone, Debug)]
pub struct Sample {
    pub scores: Vec<f32>,
    pub truth: usize,
    pub novelty: Option<f32>,
}

/// The first row of each source image, in row order: one leave-one-out query per image.
pub fn image_rows(head: &RetrievalHead) -> Vec<usize> {
    let mut firsts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, &img) in head.row_image.iter().enumerate() {
        if seen.insert(img) {
            firsts.push(i);
        }
    }
    firsts
}

/// Scores every (sampled) index image against the rest of the index.
pub fn leave_one_out(head: &RetrievalHead) -> Vec<Sample> {
    let n = head.len();
    let firsts = image_rows(head);
    let cap = if head.aggregation.uses_max() {
        MAX_LOO_QUERIES.min((LOO_BUDGET / n.max(1)).max(50))
    } else {
        MAX_LOO_QUERIES
    };
    let queries: Vec<usize> = if firsts.len() > cap {
        (0..cap).map(|k| firsts[k * firsts.len() / cap]).collect() // evenly spaced: deterministic
    } else {
        firsts
    };
    leave_one_out_rows(head, &queries).into_iter().flatten().collect()
}

/// Scores index rows `queries` (first rows of their images, as [`image_rows`] gives) against
/// the rest of the index, each with its whole image left out, with no cap (`cbr check` scores
/// every image). `None` for an image whose class has no other image.
pub fn leave_one_out_rows(head: &RetrievalHead, queries: &[usize]) -> Vec<Option<Sample>> {
    let dim = head.dim;
    let n = head.len();
    let sums = head.class_sums();
    let sizes = head.class_sizes();
    // Per-class sums of the unit rows, for the novelty of a query whose own
    // rows leave its class mean.
    let unit_sums = if head.class_means.is_empty() { Vec::new() } else { unit_class_sums(head) };
    let plan = rules::plan(head);
    let centroids = plan.linear(CENTROIDS);
    let discriminant = plan.linear(DISCRIMINANT);
    // Class means for the discriminant's correction, computed once for all queries.
    let means: Vec<f64> = if discriminant.is_some() {
        sums.chunks_exact(dim)
            .zip(&sizes)
            .flat_map(|(s, &k)| s.iter().map(move |x| *x as f64 / k.max(1) as f64))
            .collect()
    } else {
        Vec::new()
    };
    queries
        .par_iter()
        .map(|&i| {
            let q = head.row(i);
            let q = &q[..];
            let image = head.row_image[i];
            let truth = head.row_class[i] as usize;
            // Rows of the query's own image, all in its class.
            let own: Vec<usize> = (0..n).filter(|&j| head.row_image[j] == image).collect();
            if own.len() >= sizes[truth] {
                return None; // its class has no other image: nothing to recognise it by
            }
            // The head's own plan, from the query (an index row is a query
            // already projected) with the query's image left out: its rows
            // match nothing, and what was computed from them is corrected.
            let mut e = Evaluation::empty(&plan).excluding_rows(&own);
            e.set(plan.query, q.to_vec());
            if let Some(c) = centroids {
                // Its class centroid without its rows.
                let mut s = e.value(c).to_vec();
                let mut own_class = sums[truth * dim..(truth + 1) * dim].to_vec();
                for &j in &own {
                    for (a, x) in own_class.iter_mut().zip(head.row(j).iter()) {
                        *a -= x;
                    }
                }
                l2_normalize(&mut own_class);
                s[truth] = dot(&own_class, q);
                e.set(c, s);
            }
            if let Some(d) = discriminant {
                e.set(d, discriminant_loo(head, q, &own, truth, &sums, &sizes, &means));
            }
            let scores = e.value(plan.class_similarities).to_vec();
            let novelty = (!unit_sums.is_empty()).then(|| {
                let unit = head.index.row(i);
                let unit = &unit[..];
                let mut own_class = unit_sums[truth * dim..(truth + 1) * dim].to_vec();
                for &j in &own {
                    for (a, x) in own_class.iter_mut().zip(head.index.row(j).iter()) {
                        *a -= x;
                    }
                }
                l2_normalize(&mut own_class);
                head.class_means
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(c, m)| if c == truth { dot(&own_class, unit) } else { dot(m, unit) })
                    .fold(f32::NEG_INFINITY, f32::max)
            });
            Some(Sample { scores, truth, novelty })
        })
        .collect()
}

/// Leave-one-out class scores of a discriminant head for index row `q`
/// (whose image has rows `own`, in class `truth`). The query leaves its class
/// mean exactly, and the shared covariance by a rank-one downdate
/// (Sherman–Morrison): without that, the covariance would already know the
/// query's own deviation and the estimate would be far too optimistic.
fn discriminant_loo(
    head: &RetrievalHead,
    q: &[f32],
    own: &[usize],
    truth: usize,
    sums: &[f32],
    sizes: &[usize],
    means: &[f64],
) -> Vec<f32> {
    let dim = head.dim;
    let d = head.discriminant.as_ref().expect("discriminant heads have one");
    let qd: Vec<f64> = q.iter().map(|x| *x as f64).collect();
    let dot64 = discriminant::dot64;
    let nc = sizes[truth] as f64;
    let m = own.len() as f64;
    // The query image's mean row, its class mean with and without it.
    let mut own_sum = vec![0f64; dim];
    for &j in own {
        for (a, x) in own_sum.iter_mut().zip(head.row(j).iter()) {
            *a += *x as f64;
        }
    }
    let class_sum: Vec<f64> =
        sums[truth * dim..(truth + 1) * dim].iter().map(|x| *x as f64).collect();
    let mean_with: Vec<f64> = class_sum.iter().map(|s| s / nc).collect();
    let mean_without: Vec<f64> =
        class_sum.iter().zip(&own_sum).map(|(s, o)| (s - o) / (nc - m)).collect();
    // Rank-one downdate Σ' = Σ - α u uᵀ with u the image's deviation. One
    // solve serves both: Σ⁻¹u = Σ⁻¹own/m − w_c and Σ⁻¹μ' = (nc·w_c − Σ⁻¹own)/(nc − m).
    let u: Vec<f64> = own_sum.iter().zip(&mean_with).map(|(o, mu)| o / m - mu).collect();
    let s_own = d.solve(&own_sum);
    let w_c: Vec<f64> =
        d.weights[truth * dim..(truth + 1) * dim].iter().map(|x| *x as f64).collect();
    let z: Vec<f64> = s_own.iter().zip(&w_c).map(|(s, w)| s / m - w).collect();
    // Leaving the image out removes k·m·u uᵀ from the scatter (k = nc/(nc-m):
    // its class mean moves too) and one n from the normaliser; the shrinkage
    // target's small change is ignored. Checked against exact refits.
    let n = head.len() as f64;
    let alpha = (1.0 - discriminant::SHRINKAGE) * (nc / (nc - m)) * m / n;
    let rescale = (n - m) / n;
    let denom = 1.0 - alpha * dot64(&u, &z);
    let gamma = if denom > 1e-6 { alpha / denom } else { 0.0 };
    let qz = dot64(&qd, &z);
    let mut scores = Vec::with_capacity(head.labels.len());
    for (k, (w, b)) in d.weights.chunks_exact(dim).zip(&d.bias).enumerate() {
        if k == truth {
            continue;
        }
        let zm = dot64(&z, &means[k * dim..(k + 1) * dim]);
        let score = q.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
            + *b as f64
            + gamma * qz * zm
            - 0.5 * gamma * zm * zm;
        scores.push((k, (rescale * score) as f32));
    }
    let w_own: Vec<f64> = w_c.iter().zip(&s_own).map(|(w, s)| (nc * w - s) / (nc - m)).collect();
    let zm = dot64(&z, &mean_without);
    let own_score = dot64(&qd, &w_own) + gamma * qz * zm
        - 0.5 * (dot64(&mean_without, &w_own) + gamma * zm * zm);
    let mut out = vec![0f32; head.labels.len()];
    for (k, v) in scores {
        out[k] = v;
    }
    out[truth] = (rescale * own_score) as f32;
    out
}

fn argmax(s: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in s.iter().enumerate() {
        if *v > s[best] {
            best = i;
        }
    }
    best
}

/// Mean negative log-likelihood of the true classes under softmax(s / t).
fn nll(samples: &[Sample], t: f32) -> f64 {
    samples
        .iter()
        .map(|s| -libm::log(softmax(&s.scores, t)[s.truth].max(1e-12) as f64))
        .sum::<f64>()
        / samples.len() as f64
}

/// The temperature minimising the NLL: golden-section search on log t, over
/// a range relative to the spread of the scores (cosines and discriminant
/// scores differ in scale by orders of magnitude).
pub fn fit_temperature(samples: &[Sample]) -> f32 {
    let spread = {
        let mut total = 0f64;
        for s in samples {
            let finite: Vec<f64> =
                s.scores.iter().filter(|v| v.is_finite()).map(|v| *v as f64).collect();
            let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
            total += (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                / finite.len().max(1) as f64)
                .sqrt();
        }
        (total / samples.len().max(1) as f64).max(1e-6)
    };
    let (mut a, mut b) = (libm::log(spread * 1e-3), libm::log(spread * 1e2));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if nll(samples, libm::exp(c) as f32) < nll(samples, libm::exp(d) as f32) {
            b = d;
        } else {
            a = c;
        }
    }
    libm::exp((a + b) / 2.0) as f32
}

/// Expected calibration error of top-1 confidence, 15 equal-width bins.
pub fn ece(confidence: &[f32], correct: &[bool]) -> f32 {
    const BINS: usize = 15;
    let mut conf = [0f64; BINS];
    let mut acc = [0f64; BINS];
    let mut count = [0usize; BINS];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        conf[b] += c as f64;
        acc[b] += ok as u8 as f64;
        count[b] += 1;
    }
    let n = confidence.len().max(1) as f64;
    (0..BINS).filter(|&b| count[b] > 0).map(|b| (acc[b] - conf[b]).abs() / n).sum::<f64>() as f32
}

/// The lowest threshold on the top score whose accepted queries still reach
/// `target` precision (or, if none does, the most precise one). Returns the
/// threshold and the share of queries it accepts.
pub fn threshold_for_precision(top: &[f32], correct: &[bool], target: f32) -> Option<(f32, f32)> {
    if top.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..top.len()).collect();
    order.sort_by(|&a, &b| top[b].total_cmp(&top[a]));
    let mut right = 0usize;
    let mut best: Option<(usize, f32)> = None; // (accepted count, precision)
    let mut best_any = (1usize, -1f32);
    for (k, &i) in order.iter().enumerate() {
        right += correct[i] as usize;
        let accepted = k + 1;
        // Only cut between distinct scores: ties are accepted or rejected together.
        if accepted < order.len() && top[order[accepted]] == top[i] {
            continue;
        }
        let precision = right as f32 / accepted as f32;
        if precision >= target {
            best = Some((accepted, precision));
        }
        if precision > best_any.1 {
            best_any = (accepted, precision);
        }
    }
    let accepted = best.map(|b| b.0).unwrap_or(best_any.0);
    Some((top[order[accepted - 1]], accepted as f32 / top.len() as f32))
}

/// Per-class sums of the unit rows (before centring), `labels.len()` x `dim`.
fn unit_class_sums(head: &RetrievalHead) -> Vec<f32> {
    let dim = head.dim;
    let mut s = vec![0f32; head.labels.len() * dim];
    for (i, &c) in head.row_class.iter().enumerate() {
        for (a, x) in
            s[c as usize * dim..(c as usize + 1) * dim].iter_mut().zip(head.index.row(i).iter())
        {
            *a += x;
        }
    }
    s
}

/// The temperature of `prior` for this head's class similarities: the
/// prior's is for cosines; a discriminant over one row per class is the
/// centroid cosine times `dim / SHRINKAGE` (its covariance is the shrinkage
/// target alone, `SHRINKAGE / dim · I`), so its temperature scales the same.
pub fn prior_temperature(head: &RetrievalHead, prior: &Prior) -> f32 {
    match head.aggregation {
        Aggregation::Discriminant => {
            (prior.temperature as f64 * head.dim as f64 / discriminant::SHRINKAGE) as f32
        }
        Aggregation::Max | Aggregation::Centroid | Aggregation::Blend => prior.temperature,
    }
}

/// How sharply `p_known` rises around the offset: the median leave-one-out
/// query sits at `p_known` = 0.99, so photos like the index are answered
/// with nearly their full class probability. Bounded so a tight or a
/// degenerate spread gives a usable slope.
const MEDIAN_KNOWN: f64 = 0.99;
const SCALE_RANGE: (f32, f32) = (5.0, 200.0);

/// Chooses the novelty offset and scale from leave-one-out queries, so that
/// `known_target` of them are answered (their best entry is a class, not
/// unknown) with softmax temperature `t`. An entry is answered when
/// `p_known · m > 1 − p_known` (m: the top class probability), that is when
/// `s + ln(m) / scale > offset`.
pub fn fit_novelty(samples: &[Sample], t: f32, known_target: f32) -> Option<Novelty> {
    let s: Vec<f32> = samples.iter().filter_map(|x| x.novelty).collect();
    if s.is_empty() || s.len() != samples.len() {
        return None;
    }
    let quantile = |v: &[f32], q: f32| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v[((q * v.len() as f32) as usize).min(v.len() - 1)]
    };
    let lowest_answered = quantile(&s, 1.0 - known_target);
    let median = quantile(&s, 0.5);
    let logit = libm::log(MEDIAN_KNOWN / (1.0 - MEDIAN_KNOWN)) as f32;
    let scale = if median > lowest_answered {
        (logit / (median - lowest_answered)).clamp(SCALE_RANGE.0, SCALE_RANGE.1)
    } else {
        SCALE_RANGE.1
    };
    let mut margin: Vec<f32> = samples
        .iter()
        .zip(&s)
        .map(|(x, &s)| {
            let m = softmax(&x.scores, t).into_iter().fold(0f32, f32::max).max(1e-12);
            s + libm::logf(m) / scale
        })
        .collect();
    margin.sort_by(f32::total_cmp);
    // Reject the lowest (1 − target) share: the offset sits halfway between
    // the last rejected margin and the first answered one.
    let rejected = ((1.0 - known_target) * margin.len() as f32).floor() as usize;
    let offset = if rejected == 0 {
        margin[0] - 0.5 / scale
    } else {
        0.5 * (margin[rejected - 1] + margin[rejected.min(margin.len() - 1)])
    };
    let answered = margin.iter().filter(|&&m| m > offset).count() as f32 / margin.len() as f32;
    Some(Novelty {
        offset,
        scale,
        source: "leave-one-out".into(),
        known_target,
        known_accepted: Some(answered),
    })
}

/// Fits the temperature, the unknown entry (for `opts.known_target`) and,
/// for `opts.target_precision`, the threshold. With no leave-one-out query
/// (every class has one image) the temperature and the unknown entry come
/// from `opts.prior`, when there is one.
pub fn calibrate(head: &RetrievalHead, opts: &HeadOptions) -> (Calibration, Option<Novelty>) {
    let target_precision = opts.target_precision;
    let samples = leave_one_out(head);
    if samples.is_empty() {
        // Every class has a single image: leave-one-out has nothing to
        // compare, so the embedder's prior speaks instead.
        let temperature = opts.prior.as_ref().map(|p| prior_temperature(head, p));
        let novelty = match (&opts.prior, opts.known_target) {
            (Some(p), Some(target)) => Some(Novelty {
                offset: p.novelty_offset,
                scale: p.novelty_scale,
                source: format!("prior: {}", p.source),
                known_target: target,
                known_accepted: None,
            }),
            _ => None,
        };
        let calibration = Calibration {
            temperature,
            threshold: None,
            target_precision,
            samples: 0,
            accuracy: None,
            ece_unfitted: None,
            ece: None,
            coverage: 1.0,
        };
        return (calibration, novelty);
    }
    let correct: Vec<bool> = samples.iter().map(|s| argmax(&s.scores) == s.truth).collect();
    let unfitted: Vec<f32> =
        samples.iter().map(|s| softmax(&s.scores, 1.0).into_iter().fold(0f32, f32::max)).collect();
    let t = fit_temperature(&samples);
    let novelty = opts.known_target.and_then(|target| fit_novelty(&samples, t, target));
    // The top score as the model gives it: times p_known with an unknown entry.
    let fitted: Vec<f32> = samples
        .iter()
        .map(|s| {
            let top = softmax(&s.scores, t).into_iter().fold(0f32, f32::max);
            match (&novelty, s.novelty) {
                (Some(n), Some(v)) => top * sigmoid(n.scale * (v - n.offset)),
                _ => top,
            }
        })
        .collect();
    let (threshold, coverage) =
        match target_precision.and_then(|p| threshold_for_precision(&fitted, &correct, p)) {
            Some((th, cov)) => (Some(th), cov),
            None => (None, 1.0),
        };
    let calibration = Calibration {
        temperature: Some(t),
        threshold,
        target_precision,
        samples: samples.len(),
        accuracy: Some(correct.iter().filter(|&&c| c).count() as f32 / samples.len() as f32),
        ece_unfitted: Some(ece(&unfitted, &correct)),
        ece: Some(ece(&fitted, &correct)),
        coverage,
    };
    (calibration, novelty)
}

/// Chooses only the threshold, on raw class similarities (no softmax).
pub fn calibrate_threshold_only(head: &RetrievalHead, target_precision: f32) -> Calibration {
    let samples = leave_one_out(head);
    let correct: Vec<bool> = samples.iter().map(|s| argmax(&s.scores) == s.truth).collect();
    let top: Vec<f32> = samples
        .iter()
        .map(|s| s.scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let (threshold, coverage) = match threshold_for_precision(&top, &correct, target_precision) {
        Some((t, c)) => (Some(t), c),
        None => (None, 1.0),
    };
    Calibration {
        temperature: None,
        threshold,
        target_precision: Some(target_precision),
        samples: samples.len(),
        accuracy: if samples.is_empty() {
            None
        } else {
            Some(correct.iter().filter(|&&c| c).count() as f32 / samples.len() as f32)
        },
        ece_unfitted: None,
        ece: None,
        coverage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_keeps_target_precision_with_most_coverage() {
        // Scores 0.9..0.1; the 3rd and 5th best are wrong.
        let top = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let ok = [true, true, false, true, false, true];
        // Precision at k=1..6: 1, 1, .67, .75, .6, .67 -> 0.75 reachable up to k=4.
        assert_eq!(threshold_for_precision(&top, &ok, 0.75), Some((0.6, 4.0 / 6.0)));
        assert_eq!(threshold_for_precision(&top, &ok, 1.0), Some((0.8, 2.0 / 6.0)));
        assert_eq!(threshold_for_precision(&top, &ok, 0.5), Some((0.4, 1.0)));
        // Unreachable target: the most precise cut.
        assert_eq!(threshold_for_precision(&[0.9, 0.8], &[false, true], 0.99), Some((0.8, 1.0)));
    }

    #[test]
    fn ties_are_cut_together() {
        let top = [0.6, 0.5, 0.5, 0.4];
        let ok = [true, true, false, false];
        // Accepting one 0.5 means accepting both, which drops precision to 2/3.
        assert_eq!(threshold_for_precision(&top, &ok, 1.0), Some((0.6, 0.25)));
    }

    #[test]
    fn ece_of_perfectly_calibrated_bins_is_zero() {
        let conf = [0.75f32; 4];
        assert!(ece(&conf, &[true, true, true, false]) < 1e-6);
        assert!((ece(&[1.0, 1.0], &[false, false]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn leave_one_out_excludes_the_query_image_and_its_augmented_rows() {
        // Class a: image 0 (two rows: photo + mirror), image 1. Class b: image 2.
        let emb = [1.0, 0.0, 1.0, 0.01, 0.0, 1.0, -1.0, 0.0];
        let labels: Vec<String> = ["a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let h =
            RetrievalHead::with_images(&emb, 2, &labels, &[0, 0, 1, 2], &HeadOptions::original())
                .unwrap();
        let s = leave_one_out(&h);
        // Image 0 vs the rest: its twin is excluded, so class a's best is image 1 (0,1): cos ~0.
        assert_eq!(s.len(), 2, "class b's only image gives no sample");
        assert_eq!(s[0].truth, 0);
        assert!(s[0].scores[0].abs() < 0.02, "{:?}", s[0].scores);
        assert!((s[0].scores[1] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn centroid_leave_one_out_removes_the_query_from_its_centroid() {
        let emb = [1.0, 0.0, 0.0, 1.0, 0.0, -1.0];
        let labels: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let opts = HeadOptions { aggregation: Aggregation::Centroid, ..HeadOptions::original() };
        let h = RetrievalHead::new(&emb, 2, &labels, &opts).unwrap();
        let s = leave_one_out(&h);
        // Query (1,0) against class a without it = (0,1): cos 0; class b (0,-1): cos 0.
        assert!(s[0].scores[0].abs() < 1e-6, "{:?}", s[0].scores);
    }

    #[test]
    fn novelty_offset_answers_the_target_share_of_leave_one_out_queries() {
        // Confident queries (one class far ahead) with novelty 0.50, 0.51, …, 0.69.
        let samples: Vec<Sample> = (0..20)
            .map(|i| Sample {
                scores: vec![1.0, 0.0],
                truth: 0,
                novelty: Some(0.5 + 0.01 * i as f32),
            })
            .collect();
        let n = fit_novelty(&samples, 0.01, 0.9).unwrap();
        assert_eq!(n.known_accepted, Some(0.9));
        // The two least similar queries are the ones answered "unknown".
        let answered = |s: &Sample| {
            let p = sigmoid(n.scale * (s.novelty.unwrap() - n.offset));
            p * softmax(&s.scores, 0.01)[0] > 1.0 - p
        };
        let rejected: Vec<usize> = (0..20).filter(|&i| !answered(&samples[i])).collect();
        assert_eq!(rejected, vec![0, 1]);
        // The median query is nearly sure to be known.
        let median = sigmoid(n.scale * (samples[10].novelty.unwrap() - n.offset));
        assert!(median > 0.98, "p_known at the median {median}");
        // Without novelty values there is nothing to fit.
        let bare: Vec<Sample> =
            samples.iter().map(|s| Sample { novelty: None, ..s.clone() }).collect();
        assert!(fit_novelty(&bare, 0.01, 0.9).is_none());
    }

    #[test]
    fn one_image_per_class_takes_the_prior_scaled_to_the_rule() {
        let emb = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let prior = Prior {
            source: "test".into(),
            temperature: 0.05,
            novelty_offset: 0.4,
            novelty_scale: 20.0,
        };
        let mut first: Option<Vec<f32>> = None;
        for aggregation in Aggregation::ALL {
            let opts =
                HeadOptions { aggregation, prior: Some(prior.clone()), ..HeadOptions::default() };
            let h = RetrievalHead::new(&emb, 3, &labels, &opts).unwrap();
            let n = h.novelty.as_ref().expect("an unknown entry from the prior");
            assert_eq!((n.offset, n.scale, n.source.as_str()), (0.4, 20.0, "prior: test"));
            let want = match aggregation {
                Aggregation::Discriminant => 0.05 * 3.0 / discriminant::SHRINKAGE as f32,
                _ => 0.05,
            };
            assert!((h.temperature.unwrap() - want).abs() < 1e-6, "{aggregation}");
            // Given "known", the class probabilities are the same for every
            // rule: the prior's temperature is scaled to the rule's scores.
            let s = h.scores(&[1.0, 0.2, 0.0]);
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let given_known: Vec<f32> = s[..3].iter().map(|p| p / (1.0 - s[3])).collect();
            match &first {
                None => first = Some(given_known),
                Some(f) => {
                    for (a, b) in f.iter().zip(&given_known) {
                        assert!((a - b).abs() < 1e-4, "{aggregation}: {given_known:?} vs {f:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn fitted_temperature_sharpens_confident_correct_scores() {
        let samples: Vec<Sample> = (0..50)
            .map(|i| Sample {
                scores: vec![0.6, 0.3, 0.2],
                truth: if i < 45 { 0 } else { 1 },
                novelty: None,
            })
            .collect();
        let t = fit_temperature(&samples);
        let p = softmax(&samples[0].scores, t)[0];
        assert!((p - 0.9).abs() < 0.02, "fitted p(top) = {p} at t = {t}");
    }
}
