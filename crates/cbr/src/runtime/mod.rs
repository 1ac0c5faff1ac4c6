//! The runtimes cbr runs models in: ONNX Runtime ([`onnxruntime`], `.onnx`)
//! and LiteRT ([`litert`], `.tflite`), both loaded at run time from their
//! PyPI wheels; and [`Runner`], a classifier loaded into the one its format needs.

pub mod litert;
pub mod onnxruntime;

use anyhow::{anyhow, Result};

use cbr_core::format::{ModelFile, ModelFormat};
use cbr_core::head::SCORES;
use cbr_core::meta::ClassifierInfo;

use onnxruntime::SessionMemory;

/// A classifier loaded into its runtime: ONNX Runtime for `.onnx`, LiteRT for `.tflite`.
pub enum Runner {
    Onnx(ort::session::Session),
    Tflite {
        model: crate::runtime::litert::Model,
        /// Index of the `scores` output.
        scores: usize,
    },
}

impl Runner {
    /// Loads the model file `bytes`, already [`read`] as `file`. `memory` applies to ONNX
    /// Runtime (LiteRT's buffers are sized once, at load).
    pub fn open(file: &ModelFile, bytes: &[u8], memory: SessionMemory) -> Result<Runner> {
        match file.format {
            ModelFormat::Onnx => {
                Ok(Runner::Onnx(crate::runtime::onnxruntime::session_from_bytes(bytes, memory)?))
            }
            ModelFormat::Tflite => open_tflite(bytes),
        }
    }

    /// The largest batch one run may take: the input's fixed batch, else 16
    /// (ONNX) or 1 (TFLite runs one image per invocation).
    pub fn max_batch(&self, file: &ModelFile) -> usize {
        match self {
            Runner::Onnx(_) => file.fixed_batch().unwrap_or(16),
            Runner::Tflite { .. } => file.fixed_batch().unwrap_or(1).max(1),
        }
    }

    /// Runs `n` preprocessed images and returns the flat values of `output`
    /// (`scores`, or `embedding` for sidecar models).
    pub fn run(
        &mut self,
        info: &ClassifierInfo,
        output: &str,
        max_batch: usize,
        tensors: &[f32],
        n: usize,
    ) -> Result<Vec<f32>> {
        match self {
            Runner::Onnx(session) => crate::runtime::onnxruntime::run_batched(
                session,
                &info.preprocess,
                &info.embedder.input,
                output,
                max_batch,
                tensors,
                n,
            ),
            Runner::Tflite { model, scores } => {
                if output != SCORES {
                    return Err(anyhow!("a TFLite classifier has only the {} output", SCORES));
                }
                crate::runtime::litert::run_tflite(
                    model,
                    *scores,
                    info.preprocess.tensor_len(),
                    max_batch,
                    tensors,
                    n,
                )
            }
        }
    }
}

/// Loads a TFLite classifier into LiteRT.
fn open_tflite(bytes: &[u8]) -> Result<Runner> {
    crate::runtime::litert::ensure()?;
    let model = crate::runtime::litert::Model::from_bytes(bytes)?;
    let scores = model
        .output_index(SCORES)
        .ok_or_else(|| anyhow!("the TFLite model has no output named {SCORES:?}"))?;
    let inputs = model.inputs().len();
    if inputs != 1 {
        return Err(crate::error::Error::bad_input(format!(
            "the TFLite model has {inputs} inputs; a cbr classifier has one"
        ))
        .into());
    }
    Ok(Runner::Tflite { model, scores })
}
