//! cbr-core: everything that turns numbers into a classifier file and back, with no file
//! system, no threads required, no runtime and no front end, so that it compiles to
//! WebAssembly and builds classifiers in a browser exactly as the command line does.
//!
//! - [`head`]: the retrieval head (rules, discriminant, calibration, unknown entry), its
//!   [`head::plan`] and the interpreter;
//! - [`format`]: the one reader and the one writer of classifier files, over [`onnx`] and
//!   [`tflite`] (the lowerings of the plan live with each format);
//! - [`meta`]: what a model records about itself; [`priors`]: the embedders' calibration priors;
//! - [`edit`]: add, remove and relabel index rows of a model's bytes;
//! - [`pixels`]: resize and normalise decoded pixels into the embedder's input;
//! - [`predict`]: a model's scores into an answer (top-k, "unknown");
//! - [`kernels`], [`rng`], [`digest`], [`error`]: small shared pieces.
// Every `unsafe` says why it is sound (checked by clippy in CI).
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod build;
pub mod digest;
pub mod edit;
pub mod error;
pub mod format;
pub mod head;
pub mod kernels;
pub mod meta;
pub mod onnx;
pub mod pixels;
pub mod predict;
pub mod preprocess;
pub mod priors;
pub mod rng;
pub mod tflite;
