//! Running a built cbr model on images (in ONNX Runtime or LiteRT, through
//! [`crate::format::Runner`]): class scores, the top classes, and the label or
//! "unknown". What the model says about itself is [`crate::meta`].

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use image::RgbImage;

use crate::decode::{DecodeError, DecodeLimits};
use crate::embedder::SessionMemory;
use crate::format::{self, ModelFile, ModelFormat, Runner};
use crate::head::{EMBEDDING, SCORES};
use crate::sidecar::Sidecar;

pub use crate::meta::{ClassifierInfo, FORMAT_VERSION, METADATA_KEY};

/// One class and its score.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// The answer for one image: the best classes, and the label, or `None` for
/// "unknown": when the model's unknown entry is its best score, or the best
/// class scores below the unknown threshold (the model's or the caller's).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The accepted label, or `None` for "unknown".
    pub label: Option<String>,
    /// The best `k` classes, best first (classes only, not the unknown entry).
    pub top: Vec<Scored>,
    /// The model's probability that the image is of none of its classes
    /// (its unknown entry; none for models without one).
    pub unknown_score: Option<f32>,
}

/// A cbr model loaded into ONNX Runtime (`.onnx`) or LiteRT (`.tflite`).
pub struct Classifier {
    runner: Runner,
    pub info: ClassifierInfo,
    pub format: ModelFormat,
    /// The largest batch one run may take.
    pub max_batch: usize,
    /// The sidecar index, for models that keep their rows beside the file.
    pub sidecar: Option<Sidecar>,
}

impl Classifier {
    /// Loads a model file written by `cbr build`; its metadata is checked
    /// first ([`format::read`]), so a damaged file is a clear error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SessionMemory::Arena)
    }

    /// [`Classifier::open`], with a choice of how the runtime keeps its working memory.
    ///
    /// ONNX Runtime reads an ONNX file itself, after cbr has checked its
    /// metadata and let go of its bytes: a model is never in memory twice
    /// beside ONNX Runtime's copy (a million-row head peaks at about twice
    /// its file, not three times). Since the file is read twice, a model
    /// replaced in between (`cbr add` renames a new file over it) is read again.
    pub fn open_with(path: &Path, memory: SessionMemory) -> Result<Self> {
        let mut tries = 0;
        let mut classifier = loop {
            let before = FileVersion::of(path)?;
            let (bytes, file) = format::read_file(path)?;
            let runner = match file.format {
                ModelFormat::Onnx => {
                    drop(bytes);
                    crate::embedder::session_from_file(path, memory).map(Runner::Onnx)
                }
                ModelFormat::Tflite => Runner::open(&file, &bytes, memory),
            };
            let runner =
                runner.with_context(|| format!("model {}", crate::printable::path(path)))?;
            tries += 1;
            if FileVersion::of(path)? == before {
                break Self::with_runner(&file, runner);
            }
            if tries == 3 {
                bail!(
                    "model {} changed three times while it was being loaded",
                    crate::printable::path(path)
                );
            }
        };
        if let Some(index) = &classifier.info.index {
            let info = &classifier.info;
            classifier.sidecar =
                Some(Sidecar::open(path, index, info.power, info.labels.len(), info.temperature)?);
        }
        Ok(classifier)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::load(&format::read(bytes)?, bytes, SessionMemory::Arena)
    }

    fn load(file: &ModelFile, bytes: &[u8], memory: SessionMemory) -> Result<Self> {
        Ok(Self::with_runner(file, Runner::open(file, bytes, memory)?))
    }

    fn with_runner(file: &ModelFile, runner: Runner) -> Self {
        let max_batch = runner.max_batch(file);
        Classifier {
            runner,
            info: file.info.clone(),
            format: file.format,
            max_batch,
            sidecar: None,
        }
    }

    /// The `scores` rows for `n` preprocessed images concatenated in
    /// `tensors`: one score per class, then the unknown entry when the model
    /// has one ([`ClassifierInfo::score_count`] values per image).
    pub fn scores(&mut self, tensors: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let classes = self.info.score_count();
        if self.info.index.is_some() {
            let sidecar = self.sidecar.as_ref().ok_or_else(|| {
                anyhow!(
                    "this model keeps its index in a file beside it: open it with Classifier::open"
                )
            })?;
            let embeddings = self.runner.run(&self.info, EMBEDDING, self.max_batch, tensors, n)?;
            return sidecar.scores(&embeddings, n);
        }
        let flat = self.runner.run(&self.info, SCORES, self.max_batch, tensors, n)?;
        if flat.len() != n * classes {
            bail!("{SCORES} has {} values, expected {n} x {classes}", flat.len());
        }
        Ok(flat.chunks_exact(classes).map(|r| r.to_vec()).collect())
    }

    /// Predictions for `n` preprocessed images: the top `k` classes and the
    /// label (or unknown). `threshold` overrides the model's own threshold.
    pub fn predict(
        &mut self,
        tensors: &[f32],
        n: usize,
        k: usize,
        threshold: Option<f32>,
    ) -> Result<Vec<Prediction>> {
        check_threshold(threshold)?;
        let scores = self.scores(tensors, n)?;
        let classes = self.info.labels.len();
        let labels = &self.info.labels;
        Ok(scores
            .iter()
            .map(|s| match threshold {
                // The caller's threshold replaces the model's decision.
                Some(t) => predict_row(labels, s, classes, k, Some(t), false),
                None => predict_row(labels, s, classes, k, self.threshold(), true),
            })
            .collect())
    }

    /// The model's own unknown threshold, if it has one.
    pub fn threshold(&self) -> Option<f32> {
        self.info.threshold
    }

    /// The `k` best classes for one row of scores, best first (ties: class order).
    pub fn top_k(&self, scores: &[f32], k: usize) -> Vec<Scored> {
        top_k(&self.info.labels, scores, k)
    }

    /// Classifies image files (`cbr classify`, the Python package): decoding runs one chunk
    /// ahead of scoring ([`crate::pipeline::decode_ahead`]). `each` gets every image's index in
    /// `paths` and its prediction, or why it could not be read, in input order; an error from
    /// `each` stops the run.
    pub fn classify_files<P: AsRef<Path> + Sync>(
        &mut self,
        paths: &[P],
        k: usize,
        threshold: Option<f32>,
        limits: &DecodeLimits,
        mut each: impl FnMut(usize, Result<Prediction, DecodeError>) -> Result<()>,
    ) -> Result<()> {
        check_threshold(threshold)?;
        let preprocess = self.info.preprocess.clone();
        crate::pipeline::decode_ahead(paths, &preprocess, limits, |range, decoded| {
            let mut batch = Vec::new();
            let mut ok = Vec::new();
            let mut results: Vec<Option<Result<Prediction, DecodeError>>> =
                Vec::with_capacity(decoded.len());
            for (i, d) in decoded.into_iter().enumerate() {
                match d {
                    Ok(t) => {
                        batch.extend_from_slice(&t);
                        ok.push(i);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            if !ok.is_empty() {
                let predictions = self.predict(&batch, ok.len(), k, threshold)?;
                for (i, p) in ok.into_iter().zip(predictions) {
                    results[i] = Some(Ok(p));
                }
            }
            for (i, r) in range.zip(results) {
                each(i, r.expect("every image was scored or failed"))?;
            }
            Ok(())
        })
    }

    /// Classifies images already in memory (8-bit RGB), preprocessed as the model says, in
    /// batches of at most [`Classifier::max_batch`].
    pub fn classify_rgb(
        &mut self,
        images: &[RgbImage],
        k: usize,
        threshold: Option<f32>,
    ) -> Result<Vec<Prediction>> {
        let preprocess = self.info.preprocess.clone();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.max_batch.max(1)) {
            let batch = crate::decode::tensors_of_rgb(chunk, &preprocess);
            out.extend(self.predict(&batch, chunk.len(), k, threshold)?);
        }
        Ok(out)
    }
}

/// Refuses a caller's threshold that is not a number (NaN, infinite): `BadInput`, before any
/// image is read. A NaN compares false with every score, so it would silently answer every image.
pub fn check_threshold(threshold: Option<f32>) -> Result<()> {
    match threshold {
        Some(t) if !t.is_finite() => Err(crate::error::Error::bad_input(format!(
            "the threshold is {t}; it must be a finite number (0 answers every image)"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// One classified image as `cbr classify --json` prints it (and the Python package returns it):
/// `{"path": ..., "label": ... or null, "unknown": bool, "top": [{"label": ..., "score": ...}]}`;
/// `path` is null for an image given in memory.
pub fn prediction_json(path: Option<&Path>, p: &Prediction) -> serde_json::Value {
    serde_json::json!({
        "path": path.map(|p| p.to_string_lossy()),
        "label": p.label,
        "unknown": p.label.is_none(),
        "top": p.top,
        "unknown_score": p.unknown_score,
    })
}

/// An image that could not be classified, as `cbr classify --json` prints it:
/// `{"path": ..., "error": reason}`.
pub fn failure_json(path: &Path, reason: &str) -> serde_json::Value {
    serde_json::json!({ "path": path.to_string_lossy(), "error": reason })
}

/// The answer for one row of `scores` whose first `classes` entries are the
/// classes (any entry after them is the unknown entry): the best class,
/// unless the best class scores below `threshold` or, with
/// `use_unknown_entry`, the unknown entry scores higher (the model's own
/// decision; a caller's threshold replaces it, `--threshold 0` answers every image).
pub fn predict_row(
    labels: &[String],
    scores: &[f32],
    classes: usize,
    k: usize,
    threshold: Option<f32>,
    use_unknown_entry: bool,
) -> Prediction {
    let (known, unknown) = scores.split_at(classes.min(scores.len()));
    let unknown_score = unknown.first().copied();
    let top = top_k(labels, known, k.max(1));
    let label = match (top.first(), threshold, unknown_score.filter(|_| use_unknown_entry)) {
        (Some(best), _, Some(u)) if u > best.score => None,
        (Some(best), Some(t), _) if best.score < t => None,
        (Some(best), _, _) => Some(best.label.clone()),
        (None, _, _) => None,
    };
    Prediction { label, top: top.into_iter().take(k).collect(), unknown_score }
}

/// The `k` best of `scores`, best first; ties keep class order. Classes
/// scored −inf (not retrieved from a sidecar index) are left out.
pub fn top_k(labels: &[String], scores: &[f32], k: usize) -> Vec<Scored> {
    let mut order: Vec<usize> =
        (0..scores.len()).filter(|&i| scores[i] > f32::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Scored { label: labels[i].clone(), score: scores[i] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_class() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = top_k(&labels, &[0.5, 0.9, 0.5], 3);
        let names: Vec<_> = t.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        assert_eq!(top_k(&labels, &[0.1, 0.2, 0.3], 1)[0].label, "c");
    }

    #[test]
    fn the_unknown_entry_wins_when_it_is_the_best_score() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let p = predict_row(&labels, &[0.3, 0.2, 0.5], 2, 2, None, true);
        assert_eq!((p.label, p.unknown_score, p.top.len()), (None, Some(0.5), 2));
        let p = predict_row(&labels, &[0.6, 0.1, 0.3], 2, 1, None, true);
        assert_eq!(p.label.as_deref(), Some("a"));
        // The model's threshold on the best class applies on top of it.
        assert_eq!(predict_row(&labels, &[0.6, 0.1, 0.3], 2, 1, Some(0.7), true).label, None);
        // A caller's threshold replaces the model's decision.
        let p = predict_row(&labels, &[0.3, 0.2, 0.5], 2, 1, Some(0.0), false);
        assert_eq!((p.label.as_deref(), p.unknown_score), (Some("a"), Some(0.5)));
        // Without an unknown entry, only the threshold can say unknown.
        let p = predict_row(&labels, &[0.6, 0.4], 2, 1, None, true);
        assert_eq!(p.label.as_deref(), Some("a"));
    }
}

/// What tells two versions of a file apart: an atomic replacement is a new
/// inode (Unix), any write changes the length or the modification time.
#[derive(PartialEq)]
struct FileVersion {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileVersion {
    fn of(path: &Path) -> Result<FileVersion> {
        let m = std::fs::metadata(path).map_err(|e| {
            crate::error::Error::from_io(
                e,
                format!("cannot read model {}", crate::printable::path(path)),
            )
        })?;
        Ok(FileVersion {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            },
        })
    }
}
