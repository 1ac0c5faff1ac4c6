//! cbr: classification-by-retrieval on a machine. Everything that touches
//! files, decodes images or runs a model lives here, over the pure
//! `cbr_core` (head, plan, formats, metadata, edits on bytes, pixel path):
//! building from folders and manifests, the embedding pipeline and its cache,
//! ONNX Runtime and LiteRT, shards, the model zoo, evaluation and the
//! data-quality check. The `cbr` binary (command line and server) and the
//! Python package are front ends over it.
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
pub mod lock;
pub mod models;
pub mod pipeline;
pub mod printable;
pub mod quiet_stderr;
pub mod runtime;
pub mod search;
pub mod shard;
pub mod sidecar;
pub mod testing;
pub mod zoo;

#[cfg(test)]
mod format_tests;
