//! The operations, each a request (JSON + blobs) to a response: plain calls
//! of cbr-core, with the same checks and results as the command line's.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use cbr_core::build::{check_class_count, head_from_index, BuildRequest, IndexChoice};
use cbr_core::edit::{EditReport, EditableModel};
use cbr_core::error::{Error, ErrorKind};
use cbr_core::format::{self, EmbedderGraph, ModelFormat, WriteOptions};
use cbr_core::head::{ImageId, Index, IndexDtype};
use cbr_core::meta::{ClassifierInfo, EmbedderInfo};
use cbr_core::preprocess::Preprocess;

use crate::frame::Frame;

/// Runs one framed request and returns the framed response.
pub fn call(request: &[u8]) -> Result<Vec<u8>> {
    let Frame { json, blobs } = Frame::decode(request)
        .map_err(|e| Error::bad_input(format!("a malformed request: {e:#}")))?;
    let op = json.get("op").and_then(Value::as_str).unwrap_or_default().to_string();
    let blob = |i: usize, what: &str| -> Result<&[u8]> {
        blobs
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::bad_input(format!("{op}: no {what} given")).into())
    };
    let response = match op.as_str() {
        "version" => Frame { json: json!({"version": env!("CARGO_PKG_VERSION")}), blobs: vec![] },
        "defaults" => Frame { json: serde_json::to_value(BuildRequest::default())?, blobs: vec![] },
        "info" => info(blob(0, "model file")?)?,
        "build" => build(args(json)?, blob(0, "embedder file")?, blob(1, "embeddings")?)?,
        "add" => {
            let a: AddArgs = args(json)?;
            edited(blob(0, "model file")?, |m| {
                let (power, dtype) = (m.options.power_exponent(), m.options.index_dtype);
                let rows = index(&a.rows, blob(1, "embeddings")?, m.index.dim, power, dtype)?;
                m.add_rows(&rows)
            })?
        }
        "remove" => {
            let a: RemoveArgs = args(json)?;
            edited(blob(0, "model file")?, |m| m.remove_labels(&a.labels))?
        }
        "relabel" => {
            let a: RelabelArgs = args(json)?;
            edited(blob(0, "model file")?, |m| m.relabel(&a.from, &a.to))?
        }
        "pixels" => pixels(args(json)?, blob(0, "RGBA pixels")?)?,
        "answer" => answer(args(json)?, blob(0, "scores")?)?,
        _ => return Err(Error::bad_input(format!("unknown operation {op:?}")).into()),
    };
    Ok(response.encode())
}

/// The response of a failed call: `{"error": message, "kind": "bad input" | ...}`.
pub fn error_response(e: &anyhow::Error) -> Vec<u8> {
    let kind = e.chain().find_map(cbr_core::error::kind_of_cause).unwrap_or(ErrorKind::Internal);
    Frame { json: json!({"error": format!("{e:#}"), "kind": kind.to_string()}), blobs: vec![] }
        .encode()
}

/// The arguments of an operation, from its request's JSON (`op` aside).
fn args<T: serde::de::DeserializeOwned>(mut json: Value) -> Result<T> {
    if let Some(o) = json.as_object_mut() {
        o.remove("op");
    }
    serde_json::from_value(json).map_err(|e| Error::bad_input(format!("{e}")).into())
}

/// Little-endian f32 values.
fn f32s(bytes: &[u8], what: &str) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        bail!(Error::bad_input(format!(
            "{what}: {} bytes is not a whole number of f32",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// What a model file says about itself, validated by the one reader.
fn info(model: &[u8]) -> Result<Frame> {
    let file = format::read(model)?;
    Ok(Frame {
        json: json!({"format": file.format, "info": file.info, "operations": file.operations}),
        blobs: vec![],
    })
}

/// Index rows: one label and one image id (32 hex digits) per row of the
/// embeddings blob; the rows of one image (a photo and its mirror image) share its id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rows {
    labels: Vec<String>,
    image_ids: Vec<String>,
}

impl Rows {
    /// How many images the rows come from.
    fn images(&self) -> usize {
        let mut ids: Vec<&String> = self.image_ids.iter().collect();
        ids.dedup();
        ids.len()
    }
}

/// The index of `rows` over the `dim`-wide embeddings blob, made as the
/// pipeline makes it ([`Index::from_embeddings`]).
fn index(
    rows: &Rows,
    embeddings: &[u8],
    dim: usize,
    power: Option<f32>,
    dtype: IndexDtype,
) -> Result<Index> {
    let values = f32s(embeddings, "embeddings")?;
    let n = rows.labels.len();
    let bad = |m: String| -> anyhow::Error { Error::bad_input(m).into() };
    if rows.image_ids.len() != n {
        return Err(bad(format!("{} image ids for {n} labels", rows.image_ids.len())));
    }
    if values.len() != n * dim {
        return Err(bad(format!(
            "{} embedding values are not {n} rows of {dim} (the embedder's width)",
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("embedding row {} holds {}", i / dim.max(1), values[i])));
    }
    let ids = rows
        .image_ids
        .iter()
        .map(|s| ImageId::parse(s).map_err(|e| bad(format!("image_ids: {e:#}"))))
        .collect::<Result<Vec<_>>>()?;
    Index::from_embeddings(&values, dim, &rows.labels, &ids, power, dtype)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildArgs {
    /// The embedder as the embeddings' maker recorded it (`cbr embed`'s shards,
    /// an exported site's `model.json`); its SHA-256 is checked against the file.
    embedder: EmbedderInfo,
    preprocess: Preprocess,
    #[serde(default)]
    request: serde_json::Value,
    #[serde(flatten)]
    rows: Rows,
}

/// A classifier from embeddings: the head `cbr build` computes, written on
/// the embedder file in its format.
fn build(a: BuildArgs, embedder: &[u8], embeddings: &[u8]) -> Result<Frame> {
    let request = match &a.request {
        Value::Null => BuildRequest::default(),
        options => BuildRequest::from_json(options)?,
    };
    let digest = cbr_core::digest::sha256_hex(embedder);
    if digest != a.embedder.sha256 {
        bail!(Error::bad_input(format!(
            "the embedder file (SHA-256 {}) is not {} ({}), which made the embeddings",
            &digest[..12],
            a.embedder.name,
            &a.embedder.sha256[..a.embedder.sha256.len().min(12)]
        )));
    }
    let has = ModelFormat::sniff(embedder);
    let format = request.format.unwrap_or(has);
    request.check_format(format)?;
    format.check_embedder(has, &a.embedder.name)?;
    if request.index == IndexChoice::Ivf {
        bail!(Error::unsupported("a sidecar index (--index ivf) is written beside a model file: build it with `cbr build`"));
    }
    let head = request.head_options();
    let mut classes = a.rows.labels.clone();
    classes.sort();
    classes.dedup();
    check_class_count(classes.len(), classes.first().map_or("", |l| l), &head)?;
    let index =
        index(&a.rows, embeddings, a.embedder.dim, head.power_exponent(), head.index_dtype)?;
    let rows = index.len();
    let head = head_from_index(index, &head, &a.embedder.name)?;
    let report = json!({
        "classes": head.labels.len(),
        "images": a.rows.images(),
        "rows": rows,
        "calibration": head.calibration,
        "novelty": head.novelty,
        "threshold": head.threshold,
    });
    let decoded;
    let graph = match has {
        ModelFormat::Onnx => {
            decoded = cbr_core::onnx::decode(embedder).context("the embedder file")?;
            EmbedderGraph::Onnx(&decoded)
        }
        ModelFormat::Tflite => EmbedderGraph::Tflite(embedder),
    };
    let options = WriteOptions {
        augment: request.augment,
        tflite: request.tflite_options(),
        ..WriteOptions::default()
    };
    let bytes = format::write_classifier(graph, &a.embedder, &a.preprocess, head, &options)?;
    Ok(Frame { json: report, blobs: vec![bytes] })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddArgs {
    #[serde(flatten)]
    rows: Rows,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveArgs {
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelabelArgs {
    from: String,
    to: String,
}

/// An edit of the model file `model`: the report and the new file.
fn edited(
    model: &[u8],
    edit: impl FnOnce(&mut EditableModel) -> Result<EditReport>,
) -> Result<Frame> {
    let mut m = EditableModel::from_bytes(model)?;
    let r = edit(&mut m)?;
    let report = json!({
        "classes": r.classes, "rows": r.rows, "added": r.added, "removed_rows": r.removed_rows,
    });
    Ok(Frame { json: report, blobs: vec![m.to_bytes()?] })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelArgs {
    width: u32,
    height: u32,
    preprocess: Preprocess,
}

/// RGBA pixels (a canvas's `ImageData`) into the embedder's input tensor.
fn pixels(a: PixelArgs, rgba: &[u8]) -> Result<Frame> {
    let p = &a.preprocess;
    if p.width == 0 || p.height == 0 || a.width == 0 || a.height == 0 {
        bail!(Error::bad_input("an image and an input size must not be empty"));
    }
    let rgb = cbr_core::pixels::rgb_of_rgba(rgba, a.width, a.height).ok_or_else(|| {
        anyhow!(Error::bad_input(format!(
            "{} bytes are not {}x{} RGBA pixels",
            rgba.len(),
            a.width,
            a.height
        )))
    })?;
    let mut out = vec![0f32; p.tensor_len()];
    cbr_core::pixels::to_tensor(&rgb, p, &mut out);
    Ok(Frame { json: json!({"len": out.len()}), blobs: vec![f32_bytes(&out)] })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerArgs {
    info: ClassifierInfo,
    #[serde(default = "three")]
    k: usize,
    #[serde(default)]
    threshold: Option<f32>,
}

fn three() -> usize {
    3
}

/// One row of a model's scores into the answer `cbr classify --json` prints.
fn answer(a: AnswerArgs, scores: &[u8]) -> Result<Frame> {
    let scores = f32s(scores, "scores")?;
    let p = cbr_core::predict::answer(&a.info, &scores, a.k, a.threshold);
    let json = json!({
        "label": p.label, "unknown": p.label.is_none(), "top": p.top, "unknown_score": p.unknown_score,
    });
    Ok(Frame { json, blobs: vec![] })
}
