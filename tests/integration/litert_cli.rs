//! End to end through the real binary: TFLite classifiers built on the
//! default embedder's TFLite twin (and, in the extended tier, on a uint8 TFLite
//! embedder), classified in LiteRT, with sane accuracy on real photos (5 index
//! images per class): Fashion-MNIST here, CUB birds in the extended tier.

use crate::common;

use std::path::Path;

use crate::fixtures;
use common::{images_in, run_ok, setup, split_folder};
use serde_json::Value;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Top-1 accuracy of `cbr classify MODEL` on the query images (label = folder).
pub fn accuracy(model: &Path, queries: &Path) -> f64 {
    let images = images_in(queries);
    assert!(images.len() >= 400, "expected 400 or more query images, found {}", images.len());
    let mut args = vec!["classify", s(model), "--json", "--top-k", "1", "--threshold", "0"];
    args.extend(images.iter().map(|p| s(p)));
    let out = run_ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), images.len(), "one line per image");
    let correct = lines
        .iter()
        .zip(&images)
        .filter(|(line, image)| {
            let v: Value = serde_json::from_str(line).unwrap();
            v["label"].as_str() == image.parent().unwrap().file_name().unwrap().to_str()
        })
        .count();
    correct as f64 / images.len() as f64
}

pub fn is_tflite(path: &Path) -> bool {
    std::fs::read(path).map(|b| cbr::runtime::litert::is_tflite(&b)).unwrap_or(false)
}

#[test]
fn tflite_classifier_from_the_default_embedder() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&fixtures::fashion_mnist(), 5, tmp.path());
    // Measured 0.727 top-1 (threshold 0) on these 450 queries, as the ONNX classifier.
    default_embedder_tflite(&index, &queries, "Fashion-MNIST", LITE_TFLITE_MIN);
}

/// 5-shot top-1 of the TFLite classifier on Fashion-MNIST: measured 0.727.
const LITE_TFLITE_MIN: f64 = 0.65;

/// The default embedder with `--format tflite` (its TFLite twin), 5 shots from
/// `index`: accuracy on `queries` above `min_accuracy`, and the same scores as the
/// ONNX classifier from the same images.
pub fn default_embedder_tflite(index: &Path, queries: &Path, what: &str, min_accuracy: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("default.model");
    run_ok(&["build", s(index), "--format", "tflite", "-o", s(&d), "--quiet"]);
    assert!(is_tflite(&d));
    let acc = accuracy(&d, queries);
    eprintln!("EfficientNet-Lite0 TFLite classifier, 5 shots, {what}: top-1 {:.1}%", 100.0 * acc);
    assert!(acc > min_accuracy, "accuracy {acc} (chance is 0.1)");

    // It scores like the ONNX classifier built from the same images (ONNX Runtime), given the
    // TFLite classifier's default resample (MediaPipe's).
    let o = tmp.path().join("default.onnx");
    run_ok(&["build", s(index), "-o", s(&o), "--resample", "mediapipe", "--quiet"]);
    let some: Vec<_> = images_in(queries).into_iter().step_by(12).collect();
    let scores = |model: &Path| -> Vec<Vec<(String, f64)>> {
        let mut args = vec!["classify", s(model), "--json", "--top-k", "10"];
        args.extend(some.iter().map(|p| s(p)));
        run_ok(&args)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let mut top: Vec<(String, f64)> = v["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        (t["label"].as_str().unwrap().to_string(), t["score"].as_f64().unwrap())
                    })
                    .collect();
                top.sort_by(|a, b| a.0.cmp(&b.0));
                top
            })
            .collect()
    };
    let (t, x) = (scores(&d), scores(&o));
    let mut worst = 0f64;
    for (a, b) in t.iter().zip(&x) {
        for ((la, sa), (lb, sb)) in a.iter().zip(b) {
            assert_eq!(la, lb);
            worst = worst.max((sa - sb).abs());
        }
    }
    eprintln!("Lite0 TFLite classifier (LiteRT) vs ONNX classifier (ONNX Runtime), {} photos x 10 classes: max |score diff| {worst:e}", some.len());
    assert!(worst < 1e-3, "scores differ by up to {worst}");
}
