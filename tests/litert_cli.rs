//! End to end through the real binary: TFLite classifiers built on a uint8
//! TFLite embedder and on the default embedder's TFLite twin, classified in
//! LiteRT, with sane accuracy on real bird photos (5 index images per class).

mod common;

use std::path::Path;

use common::{dataset, images_in, run, run_ok, setup, shared, split_folder};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Top-1 accuracy of `cbr classify MODEL` on the query images (label = folder).
fn accuracy(model: &Path, queries: &Path) -> f64 {
    let images = images_in(queries);
    assert!(images.len() > 400, "expected the ~490 cub query images, found {}", images.len());
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

fn is_tflite(path: &Path) -> bool {
    std::fs::read(path).map(|b| cbr::litert::is_tflite(&b)).unwrap_or(false)
}

#[test]
fn tflite_classifiers_from_a_uint8_embedder_and_the_default_one() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&dataset("cub200_010"), 5, tmp.path());

    // A uint8 MobileNetV3 embedder: the classifier is a .tflite (format from the extension).
    let embedder = shared().join("models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite");
    assert!(embedder.is_file(), "{} is missing", embedder.display());
    let m = tmp.path().join("mnv3.tflite");
    run_ok(&["build", s(&index), "--embedder", s(&embedder), "-o", s(&m), "--quiet"]);
    assert!(is_tflite(&m), "{} is not a TFLite file", m.display());
    let info: Value = serde_json::from_str(&run_ok(&["info", "--json", s(&m)])).unwrap();
    assert_eq!(info["labels"].as_array().unwrap().len(), 10);
    assert_eq!(info["embedder"]["dim"], 1024);
    assert!(run_ok(&["info", s(&m)]).contains("TFLite operators"));
    let acc = accuracy(&m, &queries);
    eprintln!(
        "MobileNetV3-Small uint8 TFLite classifier, 5 shots, cub200_010: top-1 {:.1}%",
        100.0 * acc
    );
    assert!(acc > 0.5, "accuracy {acc} (chance is 0.1)");

    // An ONNX classifier cannot sit on a TFLite embedder: a clear error.
    let out = run(&[
        "build",
        s(&index),
        "--embedder",
        s(&embedder),
        "-o",
        s(&tmp.path().join("x.onnx")),
        "--quiet",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ONNX classifier") && err.contains("--format tflite"), "{err}");

    // The default embedder with --format tflite: its TFLite twin.
    let d = tmp.path().join("default.model");
    run_ok(&["build", s(&index), "--format", "tflite", "-o", s(&d), "--quiet"]);
    assert!(is_tflite(&d));
    let acc = accuracy(&d, &queries);
    eprintln!(
        "EfficientNet-Lite0 TFLite classifier, 5 shots, cub200_010: top-1 {:.1}%",
        100.0 * acc
    );
    assert!(acc > 0.6, "accuracy {acc} (chance is 0.1)");

    // It scores like the ONNX classifier built from the same images (ONNX Runtime).
    let o = tmp.path().join("default.onnx");
    run_ok(&["build", s(&index), "-o", s(&o), "--quiet"]);
    let some: Vec<_> = images_in(&queries).into_iter().step_by(12).collect();
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
