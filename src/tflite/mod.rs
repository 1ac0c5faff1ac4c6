//! TFLite output: the flatbuffers schema code and the classifier writer.

/// flatc-generated TFLite model (`schema::model`) and metadata (`schema::metadata`) types, compiled
/// in the `tflite_schema` path crate (crates/tflite_schema) so they are built once.
pub use tflite_schema as schema;
