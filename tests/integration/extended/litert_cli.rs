//! TFLite classifiers on a uint8 TFLite embedder from ../shared/models and on
//! the default embedder's twin, with sane accuracy on CUB birds.

use serde_json::Value;

use crate::common::{dataset, run, run_ok, setup, shared, split_folder};
use crate::litert_cli::{accuracy, default_embedder_tflite, is_tflite, s};

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
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
    default_embedder_tflite(&index, &queries, "cub200_010", 0.6);
}
