//! The embedding network: an image model turning preprocessed image tensors
//! into embedding vectors, either an ONNX model run in ONNX Runtime or a
//! `.tflite` model run in LiteRT (chosen by the file's content).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::Session;

use crate::runtime::litert::run_tflite;
use crate::runtime::litert::{self, Quantization};
use crate::runtime::onnxruntime::{run_batched, session_from_bytes, SessionMemory};
use cbr_core::format::{EmbedderGraph, ModelFormat};
use cbr_core::onnx::{self, DataType, ModelProto};
use cbr_core::preprocess::{Layout, Preprocess};

pub use cbr_core::meta::EmbedderInfo;

/// The input as declared by the model: layout, and fixed sizes where the model fixes them.
#[derive(Clone, Debug, PartialEq)]
pub struct InputShape {
    pub layout: Layout,
    /// `Some(n)` when the batch size is fixed.
    pub batch: Option<i64>,
    pub height: Option<i64>,
    pub width: Option<i64>,
}

/// The network behind an embedder, in one of the two formats cbr runs.
// A process holds one or two embedders: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum EmbedderModel {
    Onnx {
        session: Session,
        /// The decoded ONNX graph, kept so the retrieval head can be appended to it.
        model: ModelProto,
    },
    Tflite {
        model: litert::Model,
        /// The `.tflite` file, kept so the retrieval head can be appended to it.
        bytes: Vec<u8>,
        /// Index of the embedding output.
        output: usize,
    },
}

impl EmbedderModel {
    /// The format of the embedder's file, which a classifier built on it is written in.
    pub fn format(&self) -> ModelFormat {
        match self {
            EmbedderModel::Onnx { .. } => ModelFormat::Onnx,
            EmbedderModel::Tflite { .. } => ModelFormat::Tflite,
        }
    }

    /// The graph a classifier on this embedder is written on.
    pub fn graph(&self) -> EmbedderGraph<'_> {
        match self {
            EmbedderModel::Onnx { model, .. } => EmbedderGraph::Onnx(model),
            EmbedderModel::Tflite { bytes, .. } => EmbedderGraph::Tflite(bytes),
        }
    }
}

/// An embedder, loaded and ready to run.
pub struct Embedder {
    pub model: EmbedderModel,
    pub info: EmbedderInfo,
    pub preprocess: Preprocess,
    /// The largest batch one run may take (1 for fixed-batch-1 models).
    pub max_batch: usize,
}

/// The image input as a model file declares it, whatever its format.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredInput {
    pub name: String,
    pub shape: InputShape,
    /// Set for uint8/int8 (quantized) TFLite inputs.
    pub quantization: Option<Quantization>,
    /// Whether the input is int8 (rather than uint8) when quantized.
    pub signed: bool,
}

impl DeclaredInput {
    /// The normalisation that makes a quantized input receive the raw pixels
    /// (uint8: `q = pixel`; int8: `q = pixel - 128`), which is how quantized
    /// image models are fed; `None` for float inputs.
    pub fn raw_pixel_normalisation(&self) -> Option<(f32, f32)> {
        let q = self.quantization?;
        let mean = q.zero_point as f32 + if self.signed { 128.0 } else { 0.0 };
        Some((mean, 1.0 / q.scale))
    }
}

/// Reads the image input of a model file (`.onnx` or `.tflite`).
pub fn declared_input(bytes: &[u8]) -> Result<DeclaredInput> {
    if litert::is_tflite(bytes) {
        let model = litert::Model::from_bytes(bytes)?;
        return tflite_input(&model);
    }
    let model = onnx::decode(bytes).context("not a valid ONNX model (nor a TFLite one)")?;
    let (name, shape) = input_shape(&model)?;
    Ok(DeclaredInput { name, shape, quantization: None, signed: false })
}

fn tflite_input(model: &litert::Model) -> Result<DeclaredInput> {
    let inputs = model.inputs();
    if inputs.len() != 1 {
        bail!(
            "an embedder must have exactly one input (an image tensor); this one has {}",
            inputs.len()
        );
    }
    let t = inputs[0];
    let dims = &t.shape;
    if dims.len() != 4 {
        bail!("input {:?} must be 4-dimensional (an image batch), found shape {dims:?}", t.name);
    }
    let layout = match (dims[1], dims[3]) {
        (_, 3) => Layout::Nhwc,
        (3, _) => Layout::Nchw,
        _ => bail!(
            "input {:?} has shape {dims:?}: neither dim 3 nor dim 1 is 3 colour channels",
            t.name
        ),
    };
    let (h, w) = match layout {
        Layout::Nhwc => (dims[1], dims[2]),
        Layout::Nchw => (dims[2], dims[3]),
    };
    Ok(DeclaredInput {
        name: t.name.clone(),
        shape: InputShape { layout, batch: Some(dims[0]), height: Some(h), width: Some(w) },
        quantization: t.quantization,
        signed: t.element == litert::ElementType::I8,
    })
}

/// Finds the image input of an embedder and reads its declared shape.
pub fn input_shape(model: &ModelProto) -> Result<(String, InputShape)> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    // Older exporters list initializers as inputs too; the image is the one that is not.
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_deref().unwrap_or("")))
        .collect();
    if inputs.len() != 1 {
        bail!(
            "an embedder must have exactly one input (an image tensor); this one has {}",
            inputs.len()
        );
    }
    let input = inputs[0];
    let name = input.name.clone().unwrap_or_default();
    let (elem, dims) =
        onnx::tensor_type(input).ok_or_else(|| anyhow!("input {name} is not a tensor"))?;
    if elem != DataType::Float as i32 {
        bail!(
            "input {name} must be float32 (ONNX type {elem} found); quantized-input ONNX models \
             are not supported"
        );
    }
    if dims.len() != 4 {
        bail!("input {name} must be 4-dimensional (an image batch), found {} dims", dims.len());
    }
    let layout = match (dims[1], dims[3]) {
        (Some(3), _) => Layout::Nchw,
        (_, Some(3)) => Layout::Nhwc,
        _ => bail!(
            "input {name} has shape {dims:?}: cannot tell NCHW from NHWC \
             (neither dim 1 nor dim 3 is 3 channels)"
        ),
    };
    let (h, w) = match layout {
        Layout::Nchw => (dims[2], dims[3]),
        Layout::Nhwc => (dims[1], dims[2]),
    };
    Ok((name, InputShape { layout, batch: dims[0], height: h, width: w }))
}

/// Picks the embedding output: the one named `wanted`, else the first output.
pub fn output_name(model: &ModelProto, wanted: Option<&str>) -> Result<String> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let names: Vec<&str> = graph.output.iter().filter_map(|o| o.name.as_deref()).collect();
    match wanted {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => bail!("the model has no output named {w:?}; its outputs are {names:?}"),
        None => {
            names.first().map(|s| s.to_string()).ok_or_else(|| anyhow!("the model has no outputs"))
        }
    }
}

impl Embedder {
    /// Loads an embedder from an `.onnx` or `.tflite` file. `preprocess` must
    /// match the model's input (its size and layout are checked against the model).
    pub fn open(
        path: &Path,
        name: &str,
        output: Option<&str>,
        preprocess: Preprocess,
    ) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read embedder {}", path.display()))?;
        Self::from_bytes(&bytes, name, output, preprocess)
            .with_context(|| format!("embedder {}", path.display()))
    }

    /// Like [`Embedder::open`], from the bytes of an `.onnx` or `.tflite` file.
    pub fn from_bytes(
        bytes: &[u8],
        name: &str,
        output: Option<&str>,
        preprocess: Preprocess,
    ) -> Result<Self> {
        if litert::is_tflite(bytes) {
            return Self::from_tflite(bytes, name, output, preprocess);
        }
        let model = onnx::decode(bytes).context("not a valid ONNX model (nor a TFLite one)")?;
        let (input, shape) = input_shape(&model)?;
        check_preprocess(&shape, &preprocess)?;
        let output = output_name(&model, output)?;
        let max_batch = match shape.batch {
            Some(n) => n as usize,
            None => 32,
        };
        let session = session_from_bytes(bytes, SessionMemory::Arena)?;
        let embedder = Embedder {
            model: EmbedderModel::Onnx { session, model },
            info: EmbedderInfo {
                name: name.to_string(),
                sha256: crate::cache::sha256_hex(bytes),
                input,
                output,
                dim: 0,
            },
            preprocess,
            max_batch,
        };
        embedder.with_probed_dim()
    }

    fn from_tflite(
        bytes: &[u8],
        name: &str,
        output: Option<&str>,
        preprocess: Preprocess,
    ) -> Result<Self> {
        let model = litert::Model::from_bytes(bytes)?;
        let input = tflite_input(&model)?;
        check_preprocess(&input.shape, &preprocess)?;
        let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
        let index = match output {
            Some(w) => model.output_index(w).ok_or_else(|| {
                anyhow!("the model has no output named {w:?}; its outputs are {names:?}")
            })?,
            None if names.is_empty() => bail!("the model has no outputs"),
            None => 0,
        };
        let embedder = Embedder {
            info: EmbedderInfo {
                name: name.to_string(),
                sha256: crate::cache::sha256_hex(bytes),
                input: input.name,
                output: names[index].to_string(),
                dim: 0,
            },
            model: EmbedderModel::Tflite { model, bytes: bytes.to_vec(), output: index },
            preprocess,
            max_batch: input.shape.batch.unwrap_or(1).max(1) as usize,
        };
        embedder.with_probed_dim()
    }

    /// Runs one blank image to learn (and check) the embedding size.
    fn with_probed_dim(mut self) -> Result<Self> {
        let probe = vec![0.0f32; self.preprocess.tensor_len()];
        let e = self.embed(&probe, 1)?;
        if e.is_empty() {
            bail!("output {:?} is empty", self.info.output);
        }
        self.info.dim = e.len();
        Ok(self)
    }

    /// Embeds `n` images whose tensors are concatenated in `tensors`;
    /// returns `n * dim` values. Splits into runs of at most `max_batch`.
    pub fn embed(&mut self, tensors: &[f32], n: usize) -> Result<Vec<f32>> {
        match &mut self.model {
            EmbedderModel::Onnx { session, .. } => run_batched(
                session,
                &self.preprocess,
                &self.info.input,
                &self.info.output,
                self.max_batch,
                tensors,
                n,
            ),
            EmbedderModel::Tflite { model, output, .. } => {
                run_tflite(model, *output, self.preprocess.tensor_len(), self.max_batch, tensors, n)
            }
        }
    }
}

fn check_preprocess(shape: &InputShape, p: &Preprocess) -> Result<()> {
    if shape.layout != p.layout {
        bail!("the model's input is {:?} but the preprocessing says {:?}", shape.layout, p.layout);
    }
    if let Some(h) = shape.height {
        if h != p.height as i64 {
            bail!("the model's input height is {h} but the preprocessing says {}", p.height);
        }
    }
    if let Some(w) = shape.width {
        if w != p.width as i64 {
            bail!("the model's input width is {w} but the preprocessing says {}", p.width);
        }
    }
    Ok(())
}
