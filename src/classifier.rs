//! A built cbr model: its metadata (everything `classify` needs, stored in the
//! ONNX file's `metadata_props` or the TFLite file's `cbr` metadata entry) and
//! running it on images, in ONNX Runtime or LiteRT.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::Session;
use serde::{Deserialize, Serialize};

use crate::embedder::{run_batched, run_tflite, session_from_bytes, EmbedderInfo};
use crate::head::calibrate::Calibration;
use crate::head::{Aggregation, EMBEDDING, SCORES};
use crate::litert;
use crate::preprocess::Preprocess;
use crate::sidecar::{IndexInfo, Sidecar};

/// The `metadata_props` key holding [`ClassifierInfo`] as JSON.
pub const METADATA_KEY: &str = "cbr";
/// Version of the metadata layout; bumped on incompatible changes.
/// 2: the index is stored as unit rows with image ids and the head options
/// (editable with `cbr add`/`remove`/`relabel`).
pub const FORMAT_VERSION: u32 = 2;

/// What a cbr model says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// Version of cbr that wrote the file.
    pub cbr_version: String,
    /// Class names, in the order of the `scores` output.
    pub labels: Vec<String>,
    /// Index images per class, in class order.
    pub images_per_label: Vec<usize>,
    pub embedder: EmbedderInfo,
    pub preprocess: Preprocess,
    pub aggregation: Aggregation,
    /// The power transform exponent applied to embeddings first, if any.
    #[serde(default)]
    pub power: Option<f32>,
    /// Whether the index mean is subtracted before normalising (CL2N).
    #[serde(default)]
    pub center: bool,
    /// Softmax temperature of `scores`; absent when `scores` are raw similarities.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Below this top score, the answer is "unknown".
    #[serde(default)]
    pub threshold: Option<f32>,
    /// What leave-one-out on the index measured when calibrating.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Whether mirrored copies of the index images were added as extra rows.
    #[serde(default)]
    pub augment: bool,
    /// The options the head was built with (format 2 on), so an edit rebuilds it the same way.
    #[serde(default)]
    pub head_options: Option<crate::head::HeadOptions>,
    /// Present when the index rows are in a sidecar file ([`crate::sidecar`])
    /// and the model's only output is `embedding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexInfo>,
}

impl ClassifierInfo {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata serialises")
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let info: ClassifierInfo =
            serde_json::from_str(s).context("the cbr metadata is not valid")?;
        if info.format > FORMAT_VERSION {
            bail!("the model was written by a newer cbr (format {}, this cbr reads up to {FORMAT_VERSION}): upgrade cbr", info.format);
        }
        Ok(info)
    }
}

/// One class and its score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// The answer for one image: the best classes, and the label, or `None` when
/// the best class scores below the model's unknown threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The accepted label, or `None` for "unknown".
    pub label: Option<String>,
    /// The best `k` classes, best first.
    pub top: Vec<Scored>,
}

/// The runtime a classifier runs in, by file format.
enum Runner {
    Onnx(Session),
    Tflite {
        model: litert::Model,
        /// Index of the `scores` output.
        scores: usize,
    },
}

/// A cbr model loaded into ONNX Runtime (`.onnx`) or LiteRT (`.tflite`).
pub struct Classifier {
    runner: Runner,
    pub info: ClassifierInfo,
    /// The largest batch one run may take.
    pub max_batch: usize,
    /// The sidecar index, for models that keep their rows beside the file.
    pub sidecar: Option<Sidecar>,
}

impl Classifier {
    /// Loads a model file written by `cbr build`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
        let mut classifier =
            Self::from_bytes(&bytes).with_context(|| format!("model {}", path.display()))?;
        if let Some(index) = &classifier.info.index {
            let info = &classifier.info;
            classifier.sidecar =
                Some(Sidecar::open(path, index, info.power, info.labels.len(), info.temperature)?);
        }
        Ok(classifier)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if litert::is_tflite(bytes) {
            return Self::from_tflite(bytes);
        }
        let session = session_from_bytes(bytes)?;
        let json = session
            .metadata()
            .map_err(|e| anyhow!("cannot read model metadata: {e}"))?
            .custom(METADATA_KEY)
            .ok_or_else(|| {
                anyhow!("this ONNX file has no cbr metadata: it was not built by `cbr build`")
            })?;
        let info = ClassifierInfo::from_json(&json)?;
        let max_batch = match session.inputs().first().map(|i| i.dtype()) {
            Some(ort::value::ValueType::Tensor { shape, .. })
                if shape.first().copied().unwrap_or(-1) > 0 =>
            {
                shape[0] as usize
            }
            _ => 16,
        };
        Ok(Classifier { runner: Runner::Onnx(session), info, max_batch, sidecar: None })
    }

    fn from_tflite(bytes: &[u8]) -> Result<Self> {
        let info = crate::tflite::read_info(bytes)?;
        litert::ensure()?;
        let model = litert::Model::from_bytes(bytes)?;
        let scores = model
            .output_index(SCORES)
            .ok_or_else(|| anyhow!("the TFLite model has no output named {SCORES:?}"))?;
        let inputs = model.inputs();
        let max_batch = match inputs.as_slice() {
            [one] => one.shape.first().copied().unwrap_or(1).max(1) as usize,
            other => bail!("the TFLite model has {} inputs; a cbr classifier has one", other.len()),
        };
        Ok(Classifier { runner: Runner::Tflite { model, scores }, info, max_batch, sidecar: None })
    }

    /// Class scores for `n` preprocessed images concatenated in `tensors`;
    /// returns one row of `labels.len()` scores per image.
    pub fn scores(&mut self, tensors: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let classes = self.info.labels.len();
        let info = &self.info;
        if info.index.is_some() {
            let sidecar = self.sidecar.as_ref().ok_or_else(|| {
                anyhow!(
                    "this model keeps its index in a file beside it: open it with Classifier::open"
                )
            })?;
            let Runner::Onnx(session) = &mut self.runner else {
                bail!("a sidecar index needs an ONNX model")
            };
            let embeddings = run_batched(
                session,
                &info.preprocess,
                &info.embedder.input,
                EMBEDDING,
                self.max_batch,
                tensors,
                n,
            )?;
            return sidecar.scores(&embeddings, n);
        }
        let flat = match &mut self.runner {
            Runner::Onnx(session) => run_batched(
                session,
                &info.preprocess,
                &info.embedder.input,
                SCORES,
                self.max_batch,
                tensors,
                n,
            )?,
            Runner::Tflite { model, scores } => run_tflite(
                model,
                *scores,
                info.preprocess.tensor_len(),
                self.max_batch,
                tensors,
                n,
            )?,
        };
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
        let scores = self.scores(tensors, n)?;
        let threshold = threshold.or(self.threshold());
        Ok(scores
            .iter()
            .map(|s| {
                let top = self.top_k(s, k.max(1));
                let label = match (top.first(), threshold) {
                    (Some(best), Some(t)) if best.score < t => None,
                    (Some(best), _) => Some(best.label.clone()),
                    (None, _) => None,
                };
                Prediction { label, top: top.into_iter().take(k).collect() }
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
}
