//! cbr: classification-by-retrieval.
// Every `unsafe` says why it is sound (checked by clippy in CI).
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod build;
pub mod cache;
pub mod check;
pub mod classifier;
pub mod dataset;
pub mod decode;
pub mod edit;
pub mod embedder;
pub mod embedding_cache;
pub mod error;
pub mod eval;
pub mod export_web;
pub mod format;
pub mod head;
pub mod kernels;
pub mod litert;
pub mod lock;
pub mod meta;
pub mod models;
pub mod onnx;
pub mod pipeline;
pub mod preprocess;
pub mod printable;
pub mod quiet_stderr;
pub mod rng;
pub mod runtime;
pub mod search;
pub mod serve;
pub mod shard;
pub mod sidecar;
pub mod testing;
pub mod tflite;
pub mod zoo;

#[cfg(test)]
mod module_graph;
