//! The model file formats cbr writes and reads, ONNX and TFLite: everything
//! that depends on which one a file is lives here (sniffing, reading and
//! validating a classifier's metadata, writing a classifier,
//! file extension, download name, content type), so the command line, the editor and the server share it.
//!
//! - [`read`] is the one reader of a classifier's metadata: it checks every
//!   field ([`ClassifierInfo::validate`]) and the fields against the graph
//!   ([`ClassifierInfo::validate_against`]) and the head's stored tensors (shapes, finite
//!   values, int8 scales above 0: `stored`) before anything is allocated or run.
//! - [`write_classifier`] is the one writer: the embedder's graph, the head and
//!   the metadata, in the embedder's format.
//!
//! Running a classifier (ONNX Runtime, LiteRT) is `cbr::runtime::Runner`'s.

mod onnx;
mod stored;
mod tflite;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::head::RetrievalHead;
use crate::meta::{ClassifierInfo, EmbedderInfo, GraphSignature, FORMAT_VERSION};
use crate::preprocess::Preprocess;

use onnx::write_onnx;

/// A model file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Onnx,
    Tflite,
}

impl ModelFormat {
    pub const ALL: [ModelFormat; 2] = [ModelFormat::Onnx, ModelFormat::Tflite];

    /// The format of a model file's bytes: TFLite files carry the `TFL3`
    /// flatbuffer identifier; anything else is read as ONNX (a protobuf, which
    /// has no magic number: decoding tells).
    pub fn sniff(bytes: &[u8]) -> ModelFormat {
        if bytes.len() >= 8 && &bytes[4..8] == b"TFL3" {
            ModelFormat::Tflite
        } else {
            ModelFormat::Onnx
        }
    }

    /// The format a file name asks for, from its extension.
    pub fn from_path(path: &Path) -> Option<ModelFormat> {
        let ext = path.extension()?.to_str()?;
        ModelFormat::ALL.into_iter().find(|f| ext.eq_ignore_ascii_case(f.extension()))
    }

    /// The format to write `path` in: `explicit` if given, else from the
    /// extension (`.tflite`), else ONNX.
    pub fn for_output(path: &Path, explicit: Option<ModelFormat>) -> ModelFormat {
        explicit.unwrap_or_else(|| ModelFormat::from_output_path(path))
    }

    /// The format an output path asks for: `.tflite` (any case) is TFLite, anything else ONNX.
    pub fn from_output_path(path: &Path) -> ModelFormat {
        ModelFormat::from_path(path).unwrap_or(ModelFormat::Onnx)
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Tflite => "tflite",
        }
    }

    /// The name people know the format by.
    pub fn title(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "ONNX",
            ModelFormat::Tflite => "TFLite",
        }
    }

    /// The HTTP content type of a model file (neither format has a registered one).
    pub fn content_type(self) -> &'static str {
        "application/octet-stream"
    }

    /// The file name a model called `model` is downloaded as.
    pub fn download_name(self, model: &str) -> String {
        format!("{model}.{}", self.extension())
    }

    /// The file name a server keeps a built model under.
    pub fn stored_name(self) -> String {
        format!("model.{}", self.extension())
    }

    /// Refuses to write this format on an embedder of the other one: a
    /// classifier is written in its embedder's format.
    pub fn check_embedder(self, has: ModelFormat, name: &str) -> Result<()> {
        if has == self {
            return Ok(());
        }
        let article = if has == ModelFormat::Tflite { "a .tflite" } else { "an ONNX" };
        Err(Error::bad_input(format!(
            "a {} classifier cannot be built on {article} embedder ({name}): give an embedder in \
             the same format, a known model name, or --format {}",
            self.title(),
            has.extension()
        ))
        .into())
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

/// What a model file is and says about itself, validated.
#[derive(Clone, Debug)]
pub struct ModelFile {
    pub format: ModelFormat,
    pub info: ClassifierInfo,
    /// The graph's inputs, outputs and tensor names.
    pub signature: GraphSignature,
    /// Operators (TFLite) or graph nodes (ONNX) of the main graph.
    pub operations: usize,
}

impl ModelFile {
    /// The batch size the model's input fixes, if it fixes one.
    pub fn fixed_batch(&self) -> Option<usize> {
        let input = self.signature.inputs.iter().find(|i| i.name == self.info.embedder.input)?;
        match input.shape.first() {
            Some(Some(n)) if *n > 0 => Some(*n as usize),
            _ => None,
        }
    }
}

/// Reads a classifier's metadata from the bytes of its model file, and
/// checks it on its own and against the graph. Errors are [`Error`]s of kind
/// `BadInput` (not a model, not a cbr model, invalid metadata).
pub fn read(bytes: &[u8]) -> Result<ModelFile> {
    let format = ModelFormat::sniff(bytes);
    let (json, signature, operations) = match format {
        ModelFormat::Onnx => onnx::outline(bytes)?,
        ModelFormat::Tflite => tflite::outline(bytes)?,
    };
    let info = ClassifierInfo::from_json(&json).map_err(|e| Error::bad_input(format!("{e:#}")))?;
    info.validate_against(&signature).map_err(Error::from)?;
    if format == ModelFormat::Onnx {
        let tensors = stored::head_tensors(bytes)
            .map_err(|e| Error::bad_input(format!("not a valid ONNX model ({e})")))?;
        stored::check(&tensors, &info).map_err(|e| Error::bad_input(format!("{e:#}")))?;
    }
    Ok(ModelFile { format, info, signature, operations })
}

/// What a model built from `head` on this embedder says about itself (the
/// `cbr` metadata of its ONNX or TFLite file).
pub fn classifier_info(
    embedder_info: &EmbedderInfo,
    preprocess: &Preprocess,
    head: &RetrievalHead,
    augment: bool,
) -> ClassifierInfo {
    ClassifierInfo {
        format: FORMAT_VERSION,
        cbr_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: head.labels.clone(),
        images_per_label: head.class_sizes(),
        embedder: embedder_info.clone(),
        preprocess: preprocess.clone(),
        aggregation: head.aggregation,
        power: head.power,
        center: head.center.is_some(),
        temperature: head.temperature,
        threshold: head.threshold,
        calibration: head.calibration.clone(),
        augment,
        head_options: Some(head.options.clone()),
        unknown_label: head.novelty.as_ref().map(|_| crate::head::unknown_label_for(&head.labels)),
        novelty: head.novelty.clone(),
        index: None,
    }
}

/// The graph a classifier is written on: an embedder in either format.
#[derive(Clone, Copy)]
pub enum EmbedderGraph<'a> {
    Onnx(&'a crate::onnx::ModelProto),
    /// The embedder's `.tflite` file.
    Tflite(&'a [u8]),
}

impl<'a> EmbedderGraph<'a> {
    pub fn format(&self) -> ModelFormat {
        match self {
            EmbedderGraph::Onnx(_) => ModelFormat::Onnx,
            EmbedderGraph::Tflite(_) => ModelFormat::Tflite,
        }
    }
}

/// Where a classifier's index rows go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowsIn {
    /// In the model file, as the head's weights.
    #[default]
    Model,
    /// In a sidecar index beside it (`crate::sidecar`); the model file is the
    /// embedder alone (ONNX only).
    Sidecar,
}

/// The choices for writing a classifier beyond the head itself.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Whether the index holds mirrored copies of its images (recorded in the metadata).
    pub augment: bool,
    pub rows: RowsIn,
    /// For TFLite: the retrieval block's arithmetic and the model's name, author etc.
    pub tflite: crate::tflite::TfliteOptions,
}

/// The complete classifier file for `head` on `embedder`, in the embedder's
/// format, encoded deterministically.
///
/// The head is taken by value: an ONNX file's graph holds its own copy of the
/// index rows, so the head's are let go before the file is encoded (a
/// million int8 rows peak at twice the file, not three times).
pub fn write_classifier(
    embedder: EmbedderGraph<'_>,
    embedder_info: &EmbedderInfo,
    preprocess: &Preprocess,
    head: RetrievalHead,
    opts: &WriteOptions,
) -> Result<Vec<u8>> {
    let info = classifier_info(embedder_info, preprocess, &head, opts.augment);
    // Nothing is written that the reader would refuse.
    info.validate().map_err(Error::from)?;
    match (embedder, opts.rows) {
        (EmbedderGraph::Onnx(model), rows) => write_onnx(model, info, head, rows),
        (EmbedderGraph::Tflite(bytes), RowsIn::Model) => {
            crate::tflite::classifier_bytes(bytes, &head, &info, &opts.tflite)
                .context("cannot write the TFLite classifier")
        }
        (EmbedderGraph::Tflite(_), RowsIn::Sidecar) => Err(Error::unsupported(
            "a sidecar index (--index ivf) needs an ONNX embedder; this one is TFLite",
        )
        .into()),
    }
}
