//! The exported retrieval head computes, in ONNX Runtime, exactly what
//! `RetrievalHead::scores` computes in Rust: for even and very uneven class
//! sizes (which take the multi-level max plan), and for old and new opsets
//! (ReduceMax's axes moved from an attribute to an input in opset 18).

use crate::common;

use cbr::build::model_bytes;
use cbr::classifier::Classifier;
use cbr::embedder::Embedder;
use cbr_core::head::{graph, plan_max, Aggregation, HeadOptions, IndexDtype, RetrievalHead};
use cbr_core::onnx::{self, ModelProto};
use cbr_core::preprocess::{Layout, Preprocess};
use cbr_core::rng::SplitMix64;

/// Deterministic pseudo-random values in (-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    SplitMix64::new(seed).uniform_vec(n, -1.0, 1.0)
}

const DIM: usize = 8;

fn tiny_embedder(opset: i64) -> ModelProto {
    cbr::testing::tiny_onnx_embedder(DIM, opset, 7)
}

fn preprocess() -> Preprocess {
    Preprocess::raw(2, 2, Layout::Nchw)
}

fn check(class_sizes: &[usize], opset: i64) {
    check_with(class_sizes, opset, &HeadOptions::original());
}

fn check_with(class_sizes: &[usize], opset: i64, opts: &HeadOptions) {
    common::setup_runtime();
    let bytes = onnx::encode(&tiny_embedder(opset));
    let mut embedder = Embedder::from_bytes(&bytes, "tiny", None, preprocess()).unwrap();
    let mut labels = Vec::new();
    for (c, &n) in class_sizes.iter().enumerate() {
        labels.extend(std::iter::repeat_n(format!("class{c:03}"), n));
    }
    let index = noise(11, labels.len() * DIM);
    let head = RetrievalHead::new(&index, DIM, &labels, opts).unwrap();
    let model = model_bytes(&embedder, &head, false).unwrap();
    let mut classifier = Classifier::from_bytes(&model).unwrap();

    let queries = 5;
    let inputs = noise(23, queries * 12);
    let got = classifier.scores(&inputs, queries).unwrap();
    let embeddings = embedder.embed(&inputs, queries).unwrap();
    for q in 0..queries {
        let want = head.scores(&embeddings[q * DIM..(q + 1) * DIM]);
        // One score per class, and the unknown entry last when the head has one.
        assert_eq!(got[q].len(), class_sizes.len() + head.novelty.is_some() as usize);
        assert_eq!(got[q].len(), want.len());
        for (g, w) in got[q].iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-5,
                "sizes {class_sizes:?}, opset {opset}, {opts:?}: graph {g} vs direct {w}"
            );
        }
    }
}

#[test]
fn equal_class_sizes() {
    check(&[3, 3, 3, 3], 13);
}

#[test]
fn one_image_per_class() {
    check(&[1; 7], 13);
}

#[test]
fn very_uneven_class_sizes_use_several_levels() {
    let sizes = [1, 200, 2, 3, 1, 1, 7, 1, 1, 2, 1, 1];
    let groups: Vec<Vec<u32>> = {
        let mut start = 0u32;
        sizes
            .iter()
            .map(|&n| {
                let g = (start..start + n as u32).collect();
                start += n as u32;
                g
            })
            .collect()
    };
    assert!(plan_max(groups).len() >= 2, "this case should exercise the multi-level plan");
    check(&sizes, 13);
}

#[test]
fn opset_18_reduce_max_takes_axes_as_input() {
    check(&[1, 200, 2, 3, 1, 1, 7], 18);
}

#[test]
fn op_count_does_not_grow_with_classes() {
    common::setup_runtime();
    let bytes = onnx::encode(&tiny_embedder(13));
    let embedder = Embedder::from_bytes(&bytes, "tiny", None, preprocess()).unwrap();
    let count = |classes: usize| {
        let labels: Vec<String> = (0..classes * 2).map(|i| format!("c{:05}", i / 2)).collect();
        let head = RetrievalHead::new(
            &noise(3, labels.len() * DIM),
            DIM,
            &labels,
            &HeadOptions { aggregation: Aggregation::Blend, ..HeadOptions::default() },
        )
        .unwrap();
        let model = onnx::decode(&model_bytes(&embedder, &head, false).unwrap()).unwrap();
        model.graph.unwrap().node.len()
    };
    assert_eq!(count(10), count(10_000));
}

#[test]
fn every_aggregation_centred_and_calibrated() {
    let sizes = [1, 30, 2, 3, 4, 1, 7];
    for aggregation in Aggregation::ALL {
        for center in [false, true] {
            for calibrate in [false, true] {
                let power = if center { 0.5 } else { 1.0 };
                let opts = HeadOptions {
                    aggregation,
                    power,
                    center,
                    calibrate,
                    target_precision: Some(0.8),
                    threshold: None,
                    ..HeadOptions::default()
                };
                check_with(&sizes, 13, &opts);
            }
        }
    }
}

#[test]
fn calibrated_scores_are_probabilities() {
    common::setup_runtime();
    let bytes = onnx::encode(&tiny_embedder(13));
    let embedder = Embedder::from_bytes(&bytes, "tiny", None, preprocess()).unwrap();
    let labels: Vec<String> = (0..40).map(|i| format!("c{}", i % 4)).collect();
    let head =
        RetrievalHead::new(&noise(5, 40 * DIM), DIM, &labels, &HeadOptions::default()).unwrap();
    assert!(head.temperature.is_some() && head.novelty.is_some(), "{:?}", head.calibration);
    let mut classifier =
        Classifier::from_bytes(&model_bytes(&embedder, &head, false).unwrap()).unwrap();
    for row in classifier.scores(&noise(9, 3 * 12), 3).unwrap() {
        // Four classes and the unknown entry: probabilities summing to 1.
        assert_eq!(row.len(), 5);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
    assert_eq!(classifier.threshold(), head.threshold);
}

#[test]
fn compact_index_dtypes_compute_what_the_rust_head_computes() {
    for index_dtype in [IndexDtype::F16, IndexDtype::Int8] {
        check_with(&[1, 30, 2, 3], 13, &HeadOptions { index_dtype, ..HeadOptions::default() });
        check_with(&[2, 2, 5], 13, &HeadOptions { index_dtype, ..HeadOptions::original() });
    }
}

#[test]
fn compact_index_dtypes_make_smaller_files() {
    common::setup_runtime();
    let embedder =
        Embedder::from_bytes(&onnx::encode(&tiny_embedder(13)), "tiny", None, preprocess())
            .unwrap();
    let labels: Vec<String> = (0..4000).map(|i| format!("c{}", i % 4)).collect();
    let size = |index_dtype| {
        let opts = HeadOptions { index_dtype, calibrate: false, ..HeadOptions::original() };
        model_bytes(
            &embedder,
            &RetrievalHead::new(&noise(5, 4000 * DIM), DIM, &labels, &opts).unwrap(),
            false,
        )
        .unwrap()
        .len()
    };
    let (f32_size, f16_size, int8_size) =
        (size(IndexDtype::F32), size(IndexDtype::F16), size(IndexDtype::Int8));
    // Rows are 8 values here: f16 saves 16 bytes a row, int8 saves 24 but adds a 4-byte scale.
    assert!(f32_size - f16_size >= 4000 * 15, "{f32_size} vs {f16_size}");
    assert!(f32_size - int8_size >= 4000 * 19, "{f32_size} vs {int8_size}");
}

/// What `cbr add`/`remove` rely on: the model carries its index exactly, and
/// its embedder can be recovered so that a new head gives the same bytes.
#[test]
fn stored_index_and_embedder_read_back_exactly() {
    common::setup_runtime();
    for opset in [13, 18] {
        let embedder =
            Embedder::from_bytes(&onnx::encode(&tiny_embedder(opset)), "tiny", None, preprocess())
                .unwrap();
        let labels: Vec<String> = (0..30).map(|i| format!("c{}", i % 3)).collect();
        for index_dtype in IndexDtype::ALL {
            for opts in [
                HeadOptions { index_dtype, ..HeadOptions::default() },
                HeadOptions { index_dtype, ..HeadOptions::original() },
            ] {
                let head = RetrievalHead::new(&noise(5, 30 * DIM), DIM, &labels, &opts).unwrap();
                let bytes = model_bytes(&embedder, &head, false).unwrap();
                let model = onnx::decode(&bytes).unwrap();
                let index = graph::read_index(&model, &head.labels, &head.class_sizes()).unwrap();
                assert_eq!(index, head.index, "{opts:?}");
                let again = RetrievalHead::from_index(index.clone(), &opts).unwrap();
                let mut stripped = Embedder::from_bytes(
                    &onnx::encode(&graph::embedder_of(&model, &embedder.info.output).unwrap()),
                    "tiny",
                    None,
                    preprocess(),
                )
                .unwrap();
                stripped.info = embedder.info.clone();
                assert!(
                    model_bytes(&stripped, &again, false).unwrap() == bytes,
                    "opset {opset}, {opts:?}: the rebuilt model differs"
                );
            }
        }
    }
}

/// An int8 index stays int8 in the file (transposed, as `MatMulInteger`
/// reads it; no float copy for a runtime to fold), and models written before
/// the int8 query (rows `[rows, dim]` under the f32 name) still read back.
#[test]
fn int8_rows_are_stored_once_as_int8_and_the_older_layout_reads_back() {
    common::setup_runtime();
    let embedder =
        Embedder::from_bytes(&onnx::encode(&tiny_embedder(13)), "tiny", None, preprocess())
            .unwrap();
    let labels: Vec<String> = (0..30).map(|i| format!("c{}", i % 3)).collect();
    let opts = HeadOptions { index_dtype: IndexDtype::Int8, ..HeadOptions::default() };
    let head = RetrievalHead::new(&noise(5, 30 * DIM), DIM, &labels, &opts).unwrap();
    let mut model = onnx::decode(&model_bytes(&embedder, &head, false).unwrap()).unwrap();
    let g = model.graph.as_mut().unwrap();
    let big: Vec<(&str, Vec<i64>, i32)> = g
        .initializer
        .iter()
        .filter(|t| t.dims.iter().product::<i64>() >= (30 * DIM) as i64)
        .map(|t| (t.name.as_deref().unwrap_or(""), t.dims.clone(), t.data_type.unwrap_or(0)))
        .collect();
    assert_eq!(
        big,
        vec![(graph::INDEX_UNITS_BY_DIM, vec![DIM as i64, 30], onnx::DataType::Int8 as i32)]
    );
    assert!(g.node.iter().any(|n| n.op_type.as_deref() == Some("MatMulInteger")));
    assert!(!g.node.iter().any(|n| n.input.iter().any(|i| i == graph::INDEX_UNITS_BY_DIM)
        && n.op_type.as_deref() != Some("MatMulInteger")));

    // The older layout: the same values as [rows, dim] under INDEX_UNITS.
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(graph::INDEX_UNITS_BY_DIM))
        .unwrap();
    let by_dim = t.raw_data.clone().unwrap();
    let mut rows = vec![0u8; by_dim.len()];
    for (k, column) in by_dim.chunks_exact(30).enumerate() {
        for (r, &v) in column.iter().enumerate() {
            rows[r * DIM + k] = v;
        }
    }
    t.name = Some(graph::INDEX_UNITS.to_string());
    t.dims = vec![30, DIM as i64];
    t.raw_data = Some(rows);
    let index = graph::read_index(&model, &head.labels, &head.class_sizes()).unwrap();
    assert_eq!(index, head.index);
}
