//! cbr: classification-by-retrieval.
// Every `unsafe` says why it is sound (checked by clippy in CI).
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod build;
pub mod cache;
pub mod classifier;
pub mod dataset;
pub mod decode;
pub mod edit;
pub mod embedder;
pub mod embedding_cache;
pub mod eval;
pub mod head;
pub mod kernels;
pub mod litert;
pub mod models;
pub mod onnx;
pub mod preprocess;
pub mod rng;
pub mod runtime;
pub mod search;
pub mod serve;
pub mod shard;
pub mod sidecar;
pub mod tflite;
pub mod zoo;
