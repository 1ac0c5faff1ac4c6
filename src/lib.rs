//! cbr: classification-by-retrieval.
pub mod build;
pub mod cache;
pub mod classifier;
pub mod dataset;
pub mod decode;
pub mod edit;
pub mod embedder;
pub mod embedding_cache;
pub mod error;
pub mod eval;
pub mod format;
pub mod head;
pub mod litert;
pub mod meta;
pub mod models;
pub mod onnx;
pub mod pipeline;
pub mod preprocess;
pub mod runtime;
pub mod search;
pub mod serve;
pub mod shard;
pub mod sidecar;
pub mod tflite;
pub mod zoo;

#[cfg(test)]
mod module_graph;
