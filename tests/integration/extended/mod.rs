//! The extended tier: tests on ../shared (or `$CBR_SHARED`): the CUB birds
//! image set and the uint8 TFLite / reference ONNX embedders that no package
//! registry ships. Every test here is `#[ignore]`d so that a plain `cargo test`
//! (the default tier) never reports it as passed; `scripts/test.sh` runs them
//! with `--ignored extended::` when ../shared/datasets exists, and `CBR_EXTENDED=1`
//! (set by `.ci/run`) makes a missing ../shared a failure.

mod cli;
mod embedder_reference;
mod eval;
mod litert_cli;
mod litert_embedder;
mod tflite_clients;
mod tflite_writer;
mod unknown;
