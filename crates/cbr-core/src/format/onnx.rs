//! ONNX classifier files: reading their outline (metadata, inputs, outputs,
//! tensor names) without decoding the weights, and writing them.

use anyhow::{Context, Result};
use prost::Message;

use super::RowsIn;
use crate::error::Error;
use crate::head::RetrievalHead;
use crate::head::EMBEDDING;
use crate::meta::{ClassifierInfo, GraphSignature, TensorDecl, METADATA_KEY};
use crate::onnx::{self, ModelProto, StringStringEntryProto, ValueInfoProto};
use crate::onnx::{value_info, DataType, Dim};

// The parts of the ONNX messages a reader of the metadata needs, with the
// field numbers of onnx.proto: prost skips every other field (the weights)
// without copying it, so reading a 1 GB model's metadata costs no 1 GB.
#[derive(Clone, PartialEq, Message)]
struct ModelOutline {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphOutline>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphOutline {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeOutline>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorName>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeOutline {
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorName {
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
}

fn decl(v: &ValueInfoProto) -> TensorDecl {
    let shape = onnx::tensor_type(v).map(|(_, dims)| dims).unwrap_or_default();
    TensorDecl { name: v.name.clone().unwrap_or_default(), shape }
}

/// The cbr metadata JSON, the graph's signature and its node count.
pub(super) fn outline(bytes: &[u8]) -> Result<(String, GraphSignature, usize)> {
    let model = ModelOutline::decode(bytes)
        .map_err(|e| Error::bad_input(format!("neither an ONNX nor a TFLite model ({e})")))?;
    let graph = model
        .graph
        .ok_or_else(|| Error::bad_input("neither an ONNX nor a TFLite model (no graph)"))?;
    let json = model
        .metadata_props
        .into_iter()
        .find(|e| e.key.as_deref() == Some(METADATA_KEY))
        .and_then(|e| e.value)
        .ok_or_else(|| {
            Error::bad_input("this ONNX file has no cbr metadata: it was not built by `cbr build`")
        })?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    // Older exporters list initializers as inputs too; those are weights, not inputs.
    let inputs: Vec<TensorDecl> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_deref().unwrap_or("")))
        .map(decl)
        .collect();
    let outputs: Vec<TensorDecl> = graph.output.iter().map(decl).collect();
    let mut tensors: std::collections::HashSet<String> =
        graph.node.iter().flat_map(|n| n.output.iter().cloned()).collect();
    tensors.extend(inputs.iter().map(|i| i.name.clone()));
    let operations = graph.node.len();
    Ok((json, GraphSignature { inputs, outputs, tensors }, operations))
}

/// What an ONNX classifier says in its `doc_string`.
fn classifier_doc(head: &RetrievalHead, embedder: &str) -> String {
    format!(
        "Classification-by-retrieval model: {} classes from {} index rows, embedder {}, \
         aggregation {}. Output `scores` [batch, classes{}]; labels in metadata key `{METADATA_KEY}`.",
        head.labels.len(),
        head.len(),
        embedder,
        head.aggregation,
        if head.novelty.is_some() { " + 1: the last is \"unknown\"; the best entry is the answer" } else { "" }
    )
}

/// The ONNX classifier: `head` appended to `embedder` (or, with the rows in a
/// sidecar, the embedder alone with its `embedding` output), with `info`.
pub(super) fn write_onnx(
    embedder: &ModelProto,
    mut info: ClassifierInfo,
    head: RetrievalHead,
    rows: RowsIn,
) -> Result<Vec<u8>> {
    let mut model = match rows {
        RowsIn::Sidecar => embedding_model(embedder, &info.embedder.output, head.dim)?,
        RowsIn::Model => head
            .append_to(embedder, &info.embedder.output)
            .context("cannot append the retrieval head")?,
    };
    if rows == RowsIn::Sidecar {
        info.index = Some(crate::meta::IndexInfo {
            rows: head.len(),
            dim: head.dim,
            mean: head.center.clone(),
        });
        // The sidecar search gives class similarities only (max rule over
        // the retrieved rows): its scores have no unknown entry.
        info.unknown_label = None;
        info.novelty = None;
    }
    onnx::set_metadata(&mut model, METADATA_KEY, &info.to_json());
    model.producer_name = Some("cbr".into());
    model.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    model.doc_string = Some(classifier_doc(&head, &info.embedder.name));
    // The graph has its own copy of the rows now (see `write_classifier`).
    drop(head);
    Ok(onnx::encode(&model))
}

/// The embedder alone, with its (flattened) embedding as the one output
/// `embedding` — the model file that goes with a sidecar index.
fn embedding_model(
    embedder: &ModelProto,
    embedding_output: &str,
    dim: usize,
) -> Result<ModelProto> {
    let mut model = embedder.clone();
    let graph = model.graph.as_mut().ok_or_else(|| anyhow::anyhow!("the embedder has no graph"))?;
    let batch = crate::head::graph::expose_embedding(graph, embedding_output, &[EMBEDDING])?;
    graph.output = vec![value_info(EMBEDDING, DataType::Float, &[batch, Dim::Fixed(dim as i64)])];
    Ok(model)
}
