//! The integration tests, as one test binary (each binary links the whole
//! library: one link instead of one per file). The default tier runs on data
//! from package registries (`fixtures`); the extended tier (`extended::`) on
//! ../shared, run by `scripts/test.sh` when it exists.

mod common;
mod fixtures;
mod support;

mod check;
mod cli;
mod decode_formats;
mod device_build;
mod edit;
mod efficientnet_convert;
mod efficientnet_tflite;
mod eval;
mod export_web;
mod extended;
mod golden;
mod hardening;
mod head_graph;
mod litert_cli;
mod module_graph;
mod onnxruntime_client;
mod serve_api;
mod serve_browser;
mod shards;
mod sidecar;
mod tflite_clients;
mod tflite_writer;
mod wasm_core;
