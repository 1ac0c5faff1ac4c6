//! Generated flatbuffers code for the TFLite model format (`model`) and TFLite Model Metadata
//! (`metadata`), with flatc's object API so a model can be unpacked, edited and packed again.
//! The schemas are `../schema.fbs` and `../metadata_schema.fbs`. Do not edit the
//! `*_generated.rs` files: run `tools/gen-tflite-schema.sh` in the cbr repository.

// The generated code names `alloc::`; at the crate root this puts `alloc` in every module's scope.
extern crate alloc;

#[allow(clippy::all, unused_imports, dead_code, non_camel_case_types, non_snake_case, deprecated, mismatched_lifetime_syntaxes, unsafe_op_in_unsafe_fn)]
#[rustfmt::skip]
mod schema_generated;
#[allow(clippy::all, unused_imports, dead_code, non_camel_case_types, non_snake_case, deprecated, mismatched_lifetime_syntaxes, unsafe_op_in_unsafe_fn)]
#[rustfmt::skip]
mod metadata_schema_generated;

/// The runtime crate the generated code is written against.
pub use flatbuffers;
/// TFLite Model Metadata (root table `ModelMetadata`, file identifier `M001`), stored in a model's
/// `TFLITE_METADATA` metadata buffer.
pub use metadata_schema_generated::tflite as metadata;
/// The TFLite model schema (root table `Model`, file identifier `TFL3`).
pub use schema_generated::tflite as model;
