//! cbr: classification-by-retrieval.
pub mod cache;
pub mod onnx;
pub mod runtime;
pub mod preprocess;
