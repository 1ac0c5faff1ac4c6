//! Running a built cbr model on images (in ONNX Runtime or LiteRT, through
//! [`cbr_core::format::Runner`]): class scores, the top classes, and the label or
//! "unknown". What the model says about itself is [`cbr_core::meta`].

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use image::RgbImage;

use crate::decode::{DecodeError, DecodeLimits};
use crate::runtime::onnxruntime::SessionMemory;
use crate::runtime::Runner;
use crate::sidecar::Sidecar;
use cbr_core::format::{self, ModelFile, ModelFormat};
use cbr_core::head::{EMBEDDING, SCORES};

pub use cbr_core::meta::{ClassifierInfo, FORMAT_VERSION, METADATA_KEY};
pub use cbr_core::predict::{answer, predict_row, top_k, Prediction, Scored};

/// [`format::read`] of a file, its errors naming the file; also returns the bytes.
pub fn read_model_file(path: &Path) -> Result<(Vec<u8>, ModelFile)> {
    // The path escaped: a control character in it cannot forge a line or drive the terminal.
    let shown = crate::printable::path(path);
    let bytes = std::fs::read(path)
        .map_err(|e| crate::error::Error::from_io(e, format!("cannot read model {shown}")))?;
    let file = format::read(&bytes).with_context(|| format!("model {shown}"))?;
    Ok((bytes, file))
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
            let (bytes, file) = read_model_file(path)?;
            let runner = match file.format {
                ModelFormat::Onnx => {
                    drop(bytes);
                    crate::runtime::onnxruntime::session_from_file(path, memory).map(Runner::Onnx)
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
        Ok(scores.iter().map(|s| answer(&self.info, s, k, threshold)).collect())
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
            let batch = cbr_core::pixels::tensors_of_rgb(chunk, &preprocess);
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
