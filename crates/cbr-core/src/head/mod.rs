//! The retrieval head: the layers appended to an embedder that turn it into a
//! classifier, computed (not trained) from the embeddings of the index images.
//!
//! ```text
//! embedding ─ L2 ─ [− index mean ─ L2] ─┬─ Gemm(index rows) ─▶ similarities [B, N] ─ max per class ─┐
//!                                       └─ Gemm(class centroids) ─────────────────────────────────┴▶ class_similarities [B, C]
//!                                                                        ─ softmax(· / τ) ─▶ scores [B, C]
//! ```
//!
//! - [`Aggregation`] turns instance similarities into class similarities:
//!   `max` (the original rule: the best-matching image), `centroid` (cosine to
//!   the normalised mean of the class's images), or `blend` (their average).
//! - `center` subtracts the mean of the index embeddings before the second
//!   normalisation (SimpleShot's CL2N), which removes the direction all
//!   embeddings share and so spreads the classes apart.
//! - Calibration fits a softmax temperature τ on the index itself by
//!   leave-one-out, so `scores` are probabilities that mean something (with
//!   one image per class, τ comes from the embedder's prior).
//! - "Unknown" is the last entry of `scores`: `1 − p_known`, where `p_known`
//!   is a sigmoid of the query's cosine to the nearest class mean (before
//!   centring), its offset chosen by leave-one-out so that a target share of
//!   known photos is answered. The class entries are `p_known ·` the softmax,
//!   so the best entry is the answer. An optional threshold on the top score
//!   (for a target precision, or given) can add "unknown" answers.
//!
//! A head is described once, as data: [`rules::plan`] turns it into a
//! [`plan::HeadPlan`] (the ordered steps with their weights), which
//! [`interpret`] computes in Rust ([`RetrievalHead::scores`], evaluation,
//! calibration), [`graph`] lowers to ONNX nodes and `crate::tflite::head` to
//! TFLite operators. A new aggregation rule is its own code plus its plan
//! (in [`rules`]); see [`plan`].

pub mod calibrate;
pub mod discriminant;
pub mod graph;
pub mod index;
pub mod interpret;
pub mod plan;
pub mod rules;

use std::borrow::Cow;

use anyhow::{bail, Result};

pub use index::{ImageId, Index, IndexDtype};
pub use plan::{plan_max, HeadPlan, MaxLevel};

/// Names of the graph outputs of every cbr model.
pub const SCORES: &str = "scores";
pub const CLASS_SIMILARITIES: &str = "class_similarities";
pub const SIMILARITIES: &str = "similarities";
pub const EMBEDDING: &str = "embedding";

// The head's options are model metadata: they live in crate::meta so that
// metadata readers need not depend on the head.
pub use crate::meta::{Aggregation, HeadOptions, Novelty, Prior};

/// The name of the unknown entry of `scores`, unless a class already has it.
pub const UNKNOWN_LABEL: &str = "unknown";

/// The unknown entry's name for a model with these classes: [`UNKNOWN_LABEL`],
/// or, when a class is called that, the first of `(unknown)`, `(unknown 2)`, … that is free.
pub fn unknown_label_for(labels: &[String]) -> String {
    let taken = |l: &str| labels.iter().any(|x| x == l);
    if !taken(UNKNOWN_LABEL) {
        return UNKNOWN_LABEL.to_string();
    }
    (1..)
        .map(|n| if n == 1 { "(unknown)".to_string() } else { format!("(unknown {n})") })
        .find(|l| !taken(l))
        .expect("some name is free")
}

/// The computed retrieval layers.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalHead {
    /// Class names in class order (sorted).
    pub labels: Vec<String>,
    /// Embedding length.
    pub dim: usize,
    /// The stored index in canonical order (by class, then image id): what
    /// the model carries and every other field is computed from.
    pub index: Index,
    /// With `center` over an f32 or f16 index, the index rows centred and
    /// renormalised (row `i` is `(units[i] − center) · inverse_norms[i]`); else empty, since the rows
    /// are the units themselves (see [`RetrievalHead::rows`]).
    centred_rows: Vec<f32>,
    /// With `center`, `1 / |units[i] − center|` per row; else empty.
    pub inverse_norms: Vec<f32>,
    /// The class of each row, non-decreasing.
    pub row_class: Vec<u32>,
    /// The source image of each row, numbered in row order (rows of one
    /// image, such as a photo and its mirror image, share a number).
    pub row_image: Vec<u32>,
    /// The options the head was built with.
    pub options: HeadOptions,
    pub aggregation: Aggregation,
    /// The power transform exponent, if not 1.
    pub power: Option<f32>,
    /// The index mean subtracted before the second normalisation.
    pub center: Option<Vec<f32>>,
    /// Class centroids (`labels.len()` x `dim`), normalised; empty unless the
    /// aggregation uses them.
    pub centroids: Vec<f32>,
    /// The discriminant, for [`Aggregation::Discriminant`].
    pub discriminant: Option<discriminant::Discriminant>,
    /// Softmax temperature; `None` leaves `scores` as raw class similarities.
    pub temperature: Option<f32>,
    /// Below this top score the answer is "unknown".
    pub threshold: Option<f32>,
    /// Normalised class means of the uncentred unit rows (`labels.len()` x
    /// `dim`): what novelty is measured against; empty without `novelty`.
    pub class_means: Vec<f32>,
    /// The unknown entry of `scores`, when the head has one.
    pub novelty: Option<Novelty>,
    /// What leave-one-out on the index measured while calibrating.
    pub calibration: Option<calibrate::Calibration>,
}

/// L2-normalises `v` in place. A zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

/// The power transform `sign(x)·|x|^p`, in place.
pub fn power_transform(v: &mut [f32], p: f32) {
    for x in v.iter_mut() {
        *x = x.signum() * libm::powf(x.abs(), p);
        if x.is_nan() {
            *x = 0.0;
        }
    }
}

/// Softmax of `s / temperature`, ignoring `-inf` entries (probability 0).
pub fn softmax(s: &[f32], temperature: f32) -> Vec<f32> {
    let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> =
        s.iter()
            .map(|&x| {
                if x == f32::NEG_INFINITY {
                    0.0
                } else {
                    libm::exp(((x - m) / temperature) as f64)
                }
            })
            .collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| (v / z) as f32).collect()
}

impl RetrievalHead {
    /// Builds a head from raw index embeddings (`labels.len()` rows of `dim`),
    /// each row its own image.
    pub fn new(
        embeddings: &[f32],
        dim: usize,
        labels: &[String],
        opts: &HeadOptions,
    ) -> Result<Self> {
        let images: Vec<u32> = (0..labels.len() as u32).collect();
        Self::with_images(embeddings, dim, labels, &images, opts)
    }

    /// Like [`RetrievalHead::new`], where `images[i]` says which source image
    /// row `i` came from (rows of one image, e.g. a photo and its mirror
    /// image, are left out together when calibrating).
    pub fn with_images(
        embeddings: &[f32],
        dim: usize,
        labels: &[String],
        images: &[u32],
        opts: &HeadOptions,
    ) -> Result<Self> {
        let ids: Vec<ImageId> = images.iter().map(|&i| ImageId::from_index(i)).collect();
        let power = opts.power_exponent();
        let index = Index::from_embeddings(embeddings, dim, labels, &ids, power, opts.index_dtype)?;
        Self::from_index(index, opts)
    }

    /// Builds a head from stored index rows (made with `opts.power` and
    /// `opts.index_dtype`), in any order: the head is the same whatever the
    /// order, which is what makes an edited model equal a fresh build.
    pub fn from_index(index: Index, opts: &HeadOptions) -> Result<Self> {
        if index.is_empty() {
            bail!("no index images: a classifier needs at least one image per class");
        }
        if index.dtype != opts.index_dtype {
            bail!(
                "the index rows are stored as {} but the options say {}",
                index.dtype,
                opts.index_dtype
            );
        }
        let index = if index.is_sorted() { index } else { index.sorted() };
        let dim = index.dim;
        let mut classes: Vec<String> = index.labels.clone();
        classes.dedup(); // sorted by label already
        let mut row_class = Vec::with_capacity(index.len());
        let mut row_image = Vec::with_capacity(index.len());
        for i in 0..index.len() {
            if i > 0
                && index.labels[i] == index.labels[i - 1]
                && index.images[i] == index.images[i - 1]
            {
                row_image.push(row_image[i - 1]);
            } else {
                row_image.push(row_image.last().map_or(0, |&n: &u32| n + 1));
            }
            row_class.push(row_class.last().map_or(0, |&c: &u32| {
                if index.labels[i] == index.labels[i - 1] {
                    c
                } else {
                    c + 1
                }
            }));
        }
        let power = opts.power_exponent();
        let (rows, inverse_norms, center) = if opts.center {
            let n = index.len() as f64;
            let mut mean = vec![0f64; dim];
            for i in 0..index.len() {
                for (m, x) in mean.iter_mut().zip(index.row(i).iter()) {
                    *m += *x as f64;
                }
            }
            let mean: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
            // An int8 index is matched from its stored rows (see `plan::Centring`):
            // only f32 and f16 heads keep the centred rows, computed once.
            let keep_rows = index.dtype != IndexDtype::Int8;
            let mut rows = Vec::with_capacity(if keep_rows { index.len() * dim } else { 0 });
            let mut inverse_norms = Vec::with_capacity(index.len());
            let mut r = vec![0f32; dim];
            for i in 0..index.len() {
                for ((x, u), m) in r.iter_mut().zip(index.row(i).iter()).zip(&mean) {
                    *x = u - m;
                }
                let norm = r.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
                // A row equal to the mean has no direction: it matches nothing.
                let k = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
                if keep_rows {
                    rows.extend(r.iter().map(|x| x * k));
                }
                inverse_norms.push(k);
            }
            (rows, inverse_norms, Some(mean))
        } else {
            (Vec::new(), Vec::new(), None)
        };
        let mut head = RetrievalHead {
            labels: classes,
            dim,
            index,
            centred_rows: rows,
            inverse_norms,
            row_class,
            row_image,
            options: opts.clone(),
            aggregation: opts.aggregation,
            power,
            center,
            centroids: Vec::new(),
            discriminant: None,
            temperature: None,
            threshold: None,
            class_means: Vec::new(),
            novelty: None,
            calibration: None,
        };
        if opts.aggregation.uses_centroid() {
            head.centroids = head.class_sums();
            for c in head.centroids.chunks_exact_mut(dim) {
                l2_normalize(c);
            }
        }
        if opts.aggregation == Aggregation::Discriminant {
            let d = discriminant::Discriminant::fit(
                |i| head.row(i),
                dim,
                &head.row_class,
                head.labels.len(),
            );
            head.discriminant = Some(d);
        }
        if opts.calibrate && head.labels.len() > 1 {
            if opts.known_target.is_some() {
                head.class_means = head.unit_class_means();
            }
            let (cal, novelty) = calibrate::calibrate(&head, opts);
            head.temperature = cal.temperature;
            head.threshold = cal.threshold;
            head.novelty = novelty;
            head.calibration = Some(cal);
            if head.novelty.is_none() {
                head.class_means = Vec::new();
            }
        } else if let Some(p) = opts.target_precision {
            let cal = calibrate::calibrate_threshold_only(&head, p);
            head.threshold = cal.threshold;
            head.calibration = Some(cal);
        }
        if opts.threshold.is_some() {
            head.threshold = opts.threshold;
        }
        Ok(head)
    }

    /// Normalised per-class means of the unit rows before centring
    /// (`labels.len()` x `dim`): what the novelty score compares a query to.
    pub fn unit_class_means(&self) -> Vec<f32> {
        let dim = self.dim;
        let mut s = vec![0f32; self.labels.len() * dim];
        for (i, &c) in self.row_class.iter().enumerate() {
            for (a, x) in
                s[c as usize * dim..(c as usize + 1) * dim].iter_mut().zip(self.index.row(i).iter())
            {
                *a += x;
            }
        }
        for c in s.chunks_exact_mut(dim) {
            l2_normalize(c);
        }
        s
    }

    /// Index rows as the query meets them (`len()` x `dim`); a copy for an
    /// int8 index (prefer [`RetrievalHead::row`] there).
    pub fn rows(&self) -> Cow<'_, [f32]> {
        match self.centring() {
            Some(c) if self.index.dtype == IndexDtype::Int8 => {
                Cow::Owned(c.centred_rows(&self.index))
            }
            Some(c) => Cow::Borrowed(c.rows),
            None => self.index.units(),
        }
    }

    /// Index row `i` as the query meets it.
    pub fn row(&self, i: usize) -> Cow<'_, [f32]> {
        let dim = self.dim;
        match &self.center {
            Some(m) if self.index.dtype == IndexDtype::Int8 => {
                let k = self.inverse_norms[i];
                Cow::Owned(self.index.row(i).iter().zip(m).map(|(u, m)| (u - m) * k).collect())
            }
            Some(_) => Cow::Borrowed(&self.centred_rows[i * dim..(i + 1) * dim]),
            None => self.index.row(i),
        }
    }

    /// Number of index rows.
    pub fn len(&self) -> usize {
        self.row_class.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_class.is_empty()
    }

    /// Number of index rows per class, in class order.
    pub fn class_sizes(&self) -> Vec<usize> {
        let mut n = vec![0; self.labels.len()];
        for &c in &self.row_class {
            n[c as usize] += 1;
        }
        n
    }

    /// Row indices of each class, in class order.
    pub fn groups(&self) -> Vec<Vec<u32>> {
        let mut g = vec![Vec::new(); self.labels.len()];
        for (i, &c) in self.row_class.iter().enumerate() {
            g[c as usize].push(i as u32);
        }
        g
    }

    /// Per-class sums of the rows (`labels.len()` x `dim`), not normalised.
    pub fn class_sums(&self) -> Vec<f32> {
        let mut s = vec![0f32; self.labels.len() * self.dim];
        for (i, &c) in self.row_class.iter().enumerate() {
            let r = self.row(i);
            for (a, x) in
                s[c as usize * self.dim..(c as usize + 1) * self.dim].iter_mut().zip(r.iter())
            {
                *a += x;
            }
        }
        s
    }

    /// What the similarity step needs of the centring (`None` without it).
    pub fn centring(&self) -> Option<plan::Centring<'_>> {
        self.center.as_deref().map(|mean| plan::Centring {
            mean,
            inverse_norms: &self.inverse_norms,
            rows: &self.centred_rows,
        })
    }

    /// The head as data (see [`plan`]): what the model file computes.
    pub fn plan(&self) -> HeadPlan<'_> {
        rules::plan(self)
    }

    /// A raw query embedding as the head sees it: normalised, centred, normalised.
    pub fn project(&self, query: &[f32]) -> Vec<f32> {
        let plan = self.plan();
        interpret::evaluate(&plan, query, plan.query)
    }

    /// Cosine similarity of a raw query embedding to every index row.
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        let plan = self.plan();
        let similarities = plan.similarities.expect("a head's plan matches its index rows");
        interpret::evaluate(&plan, query, similarities)
    }

    /// One similarity per class for a raw query embedding (before softmax).
    pub fn class_similarities(&self, query: &[f32]) -> Vec<f32> {
        let plan = self.plan();
        interpret::evaluate(&plan, query, plan.class_similarities)
    }

    /// `scores` for a raw query embedding: probabilities when calibrated
    /// (with the unknown entry last when the head has one), else class
    /// similarities. The exported graph computes the same thing.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        let plan = self.plan();
        interpret::evaluate(&plan, query, plan.scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn head_sorts_rows_by_class_and_normalises() {
        let emb = [3.0, 4.0, 1.0, 0.0, 0.0, 2.0];
        let h = RetrievalHead::new(&emb, 2, &labels(&["b", "a", "b"]), &HeadOptions::original())
            .unwrap();
        assert_eq!(h.labels, vec!["a", "b"]);
        assert_eq!(h.row_class, vec![0, 1, 1]);
        assert_eq!(h.row_image, vec![0, 1, 2]);
        assert_eq!(
            h.index.images,
            vec![ImageId::from_index(1), ImageId::from_index(0), ImageId::from_index(2)]
        );
        assert_eq!(&h.rows()[..], [1.0, 0.0, 0.6, 0.8, 0.0, 1.0]);
        assert_eq!(h.class_sizes(), vec![1, 2]);
        // Query along y: class a's only image is orthogonal, class b has (0,1).
        assert_eq!(h.scores(&[0.0, 5.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn centroid_is_cosine_to_normalised_mean() {
        // Class b: (1,0) and (0,1) -> centroid (1,1)/sqrt2.
        let emb = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
        let opts = HeadOptions { aggregation: Aggregation::Centroid, ..HeadOptions::original() };
        let h = RetrievalHead::new(&emb, 2, &labels(&["b", "b", "a"]), &opts).unwrap();
        let s = h.scores(&[1.0, 1.0]);
        assert!((s[1] - 1.0).abs() < 1e-6, "{s:?}");
        assert!((s[0] + std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{s:?}");
        let s = h.scores(&[1.0, 0.0]);
        assert!((s[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn blend_averages_max_and_centroid() {
        let emb = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
        let opts = HeadOptions { aggregation: Aggregation::Blend, ..HeadOptions::original() };
        let h = RetrievalHead::new(&emb, 2, &labels(&["b", "b", "a"]), &opts).unwrap();
        let s = h.scores(&[1.0, 0.0]);
        // b: max 1, centroid 1/sqrt2; a: max -1, centroid -1.
        assert!((s[1] - 0.5 * (1.0 + std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-6, "{s:?}");
        assert!((s[0] + 1.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn centering_subtracts_the_index_mean() {
        // Both index rows share +y; centring leaves only the x difference.
        let emb = [1.0, 1.0, -1.0, 1.0];
        let opts = HeadOptions { center: true, ..HeadOptions::original() };
        let h = RetrievalHead::new(&emb, 2, &labels(&["a", "b"]), &opts).unwrap();
        let m = h.center.as_ref().unwrap();
        assert!(
            (m[0]).abs() < 1e-6 && (m[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{m:?}"
        );
        assert!((h.rows()[0] - 1.0).abs() < 1e-6 && h.rows()[1].abs() < 1e-6, "{:?}", h.rows());
        let s = h.scores(&[2.0, 1.9]);
        assert!(s[0] > 0.99 && s[1] < -0.99, "{s:?}");
    }

    #[test]
    fn softmax_sums_to_one_and_sharpens_with_low_temperature() {
        let p = softmax(&[0.5, 0.4, f32::NEG_INFINITY], 0.1);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[2], 0.0);
        assert!((p[0] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn head_rejects_mismatched_input() {
        assert!(RetrievalHead::new(&[1.0, 2.0, 3.0], 2, &labels(&["a"]), &HeadOptions::original())
            .is_err());
        assert!(RetrievalHead::new(&[], 2, &[], &HeadOptions::original()).is_err());
    }
}
