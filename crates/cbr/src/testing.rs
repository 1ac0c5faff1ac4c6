//! Small real models for tests, examples and benchmarks: an ONNX embedder any
//! ONNX runtime runs, with no download, so the writers, readers and lowerings
//! can be checked end to end in milliseconds.

use cbr_core::onnx::{self, node, tensor_f32, value_info, DataType, Dim, ModelProto};
use cbr_core::rng::SplitMix64;

/// A tiny embedder: a `[batch, 3, 2, 2]` image (see [`cbr_core::preprocess::Preprocess::raw`]),
/// flattened, times a fixed `12 x dim` matrix (uniform in (-1, 1) from `seed`). Input `input`,
/// output `features`.
pub fn tiny_onnx_embedder(dim: usize, opset: i64, seed: u64) -> ModelProto {
    let w = SplitMix64::new(seed).uniform_vec(12 * dim, -1.0, 1.0);
    let mut g = onnx::GraphProto { name: Some("tiny".into()), ..Default::default() };
    g.input.push(value_info(
        "input",
        DataType::Float,
        &[Dim::Symbolic("batch".into()), Dim::Fixed(3), Dim::Fixed(2), Dim::Fixed(2)],
    ));
    g.initializer.push(tensor_f32("w", &[12, dim as i64], &w));
    g.node.push(node("Flatten", "flatten", &["input"], &["flat"], vec![onnx::attr_int("axis", 1)]));
    g.node.push(node("MatMul", "project", &["flat", "w"], &["features"], vec![]));
    g.output.push(value_info(
        "features",
        DataType::Float,
        &[Dim::Symbolic("batch".into()), Dim::Fixed(dim as i64)],
    ));
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(g),
        ..Default::default()
    }
}
