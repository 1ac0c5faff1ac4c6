//! TFLite classifiers: an embedder `.tflite` with cbr's retrieval head
//! appended, labelled with TFLite Model Metadata so the TFLite Task Library and
//! MediaPipe's ImageClassifier can use it as it is.
//!
//! The embedder's subgraph is copied losslessly (flatc's object API unpacks
//! and packs every table the schema knows: tensors, buffers, operators,
//! opcodes, quantization, signatures, metadata); the head is appended to it
//! ([`head`]); the model gets the `TFLITE_METADATA` entry, a `cbr` entry with
//! the [`ClassifierInfo`] JSON (so cbr reads its own files back), and the
//! `labelmap.txt` zip ([`metadata`]).
//!
//! The only output is `scores` [B, classes]: MediaPipe and the Task Library
//! treat every output tensor as a classification head that needs its own
//! metadata and labels, so `similarities`/`embedding` outputs (as in the ONNX
//! file) would show up as bogus extra heads.

/// Builds one of flatc's object-API structs (`#[non_exhaustive]`, so struct
/// expressions are not allowed outside the schema crate): unset fields keep the
/// schema defaults.
macro_rules! build {
    ($ty:ident { $($f:ident $(: $v:expr)?),* $(,)? }) => {{
        let mut x = $ty::default();
        $( build!(@set x $f $(: $v)?); )*
        x
    }};
    (@set $x:ident $f:ident : $v:expr) => { $x.$f = $v; };
    (@set $x:ident $f:ident) => { $x.$f = $f; };
}

pub mod edit;
pub mod head;
pub mod metadata;

use anyhow::{anyhow, bail, Context, Result};

pub use head::TfliteBlock;
pub use metadata::About;
/// flatc-generated TFLite model (`schema::model`) and metadata (`schema::metadata`) types, compiled
/// in the `tflite_schema` path crate (crates/tflite_schema) so they are built once.
pub use tflite_schema as schema;

use crate::head::{RetrievalHead, SCORES};
use crate::meta::{ClassifierInfo, METADATA_KEY};
use edit::ModelEditor;
use metadata::InputKind;
use schema::model::{MetadataT, TensorMapT, TensorType};

/// Choices for the TFLite file beyond the head itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TfliteOptions {
    pub block: TfliteBlock,
    pub about: About,
}

/// Metadata entries of the embedder that would be wrong for the classifier:
/// its own Model Metadata, an older cbr entry, and the minimum runtime version
/// the converter computed for the embedder's ops alone.
const REPLACED_METADATA: [&str; 3] =
    [metadata::TFLITE_METADATA, METADATA_KEY, "min_runtime_version"];

/// A complete classifier `.tflite`: `embedder_tflite` (whose output, or the
/// output named `info.embedder.output`, is the embedding) followed by `head`,
/// with metadata from `info` and `opts`.
pub fn classifier_bytes(
    embedder_tflite: &[u8],
    head: &RetrievalHead,
    info: &ClassifierInfo,
    opts: &TfliteOptions,
) -> Result<Vec<u8>> {
    if info.labels != head.labels {
        bail!("the classifier info lists different labels from the head");
    }
    let model = edit::unpack(embedder_tflite)?;
    let mut ed = ModelEditor::new(model)?;
    let sub = &ed.model.subgraphs.as_ref().unwrap()[0];
    let outputs = sub.outputs.clone().unwrap_or_default();
    let inputs = sub.inputs.clone().unwrap_or_default();
    let name_of = |t: i32| ed.tensors()[t as usize].name.clone().unwrap_or_default();
    let embedding = match outputs.as_slice() {
        [one] => *one,
        [] => bail!("the embedder's main subgraph has no output"),
        many => *many.iter().find(|&&t| name_of(t) == info.embedder.output).ok_or_else(|| {
            anyhow!(
                "the embedder has {} outputs ({}) and none is named {:?}",
                many.len(),
                many.iter().map(|&t| name_of(t)).collect::<Vec<_>>().join(", "),
                info.embedder.output
            )
        })?,
    };
    let input = match inputs.as_slice() {
        [one] => &ed.tensors()[*one as usize],
        other => bail!("the embedder has {} inputs; cbr needs one image input", other.len()),
    };
    let input_kind = match input.type_ {
        TensorType::FLOAT32 => InputKind::Float,
        TensorType::UINT8 => InputKind::Uint8,
        t => bail!("the embedder's image input is {t:?}; the TFLite image classifiers read float32 or uint8 inputs"),
    };
    if ed.tensors().iter().any(|t| t.name.as_deref() == Some(SCORES)) {
        bail!("the embedder already has a tensor named {SCORES:?}; cbr needs that name for its output");
    }

    let scores = head::append(&mut ed, embedding, head, opts.block)?;
    ed.set_outputs(&[scores]);
    for sig in ed.model.signature_defs.iter_mut().flatten().filter(|s| s.subgraph_index == 0) {
        sig.outputs = Some(vec![build!(TensorMapT {
            name: Some(SCORES.into()),
            tensor_index: scores as u32
        })]);
    }

    // Replace metadata that described the embedder; empty their buffers so they take no space.
    let mut kept = Vec::new();
    for m in ed.model.metadata.take().unwrap_or_default() {
        if REPLACED_METADATA.contains(&m.name.as_deref().unwrap_or("")) {
            if let Some(b) = ed.model.buffers.as_mut().and_then(|b| b.get_mut(m.buffer as usize)) {
                b.data = None;
            }
        } else {
            kept.push(m);
        }
    }
    let tflite_meta = metadata::model_metadata(info, &opts.about, input_kind);
    let b = ed.add_buffer(tflite_meta);
    kept.push(build!(MetadataT { name: Some(metadata::TFLITE_METADATA.into()), buffer: b }));
    let b = ed.add_buffer(info.to_json().into_bytes());
    kept.push(build!(MetadataT { name: Some(METADATA_KEY.into()), buffer: b }));
    ed.model.metadata = Some(kept);
    if ed.model.description.is_none() {
        ed.model.description = Some("cbr classification-by-retrieval classifier".into());
    }

    let bytes = edit::pack(&ed.model);
    // One line per entry of `scores`: the classes, then the unknown entry.
    let labels: Vec<String> =
        (0..info.score_count()).map(|i| info.score_label(i).to_string()).collect();
    let labels = metadata::label_file(&labels);
    metadata::append_zip(bytes, &[(metadata::LABEL_FILE, labels.as_bytes())])
}

/// The root table of a `.tflite` file, verified (with limits big enough for
/// any real model).
pub fn root(bytes: &[u8]) -> Result<schema::model::Model<'_>> {
    schema::model::root_as_model_with_opts(
        &flatbuffers::VerifierOptions {
            max_tables: 1 << 28,
            max_apparent_size: 1 << 31,
            ..Default::default()
        },
        bytes,
    )
    .context("not a TFLite model")
}

/// The `cbr` metadata entry of a `.tflite` written by [`classifier_bytes`], as JSON.
pub fn read_info_json(bytes: &[u8]) -> Result<String> {
    let model = root(bytes)?;
    let entry = model
        .metadata()
        .and_then(|m| m.iter().find(|e| e.name() == Some(METADATA_KEY)))
        .ok_or_else(|| anyhow!("the TFLite model has no {METADATA_KEY:?} metadata entry: it was not written by cbr"))?;
    let data = model
        .buffers()
        .and_then(|b| b.iter().nth(entry.buffer() as usize))
        .and_then(|b| b.data())
        .ok_or_else(|| anyhow!("the {METADATA_KEY:?} metadata entry points at a missing buffer"))?;
    let json = std::str::from_utf8(data.bytes()).context("the cbr metadata is not UTF-8")?;
    Ok(json.to_string())
}

/// Number of operators in the main subgraph (for tests and reports).
pub fn operator_count(bytes: &[u8]) -> Result<usize> {
    Ok(ModelEditor::new(edit::unpack(bytes)?)?.operator_count())
}
