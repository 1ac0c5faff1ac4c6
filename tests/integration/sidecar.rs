//! Models with a sidecar index (`cbr build --index ivf`): the real binary,
//! the default embedder and real photos (Fashion-MNIST, `fixtures::fashion_mnist`).
//! Classifying through the sidecar gives the single-file model's answers
//! (max rule) when every cell is probed, nearly always with few cells, and
//! the pair of files is deterministic and fails clearly when incomplete.

use crate::common;

use std::path::Path;

use crate::fixtures;
use common::{images_in, run, run_ok, setup, split_folder};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// (label or null, top-3 [(label, score)]) per image, from `classify --json`.
fn classify(model: &Path, images: &[std::path::PathBuf]) -> Vec<(Value, Vec<(String, f64)>)> {
    let mut args = vec!["classify", s(model), "--json", "--top-k", "3"];
    args.extend(images.iter().map(|p| s(p)));
    run_ok(&args)
        .lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let top = v["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|t| (t["label"].as_str().unwrap().to_string(), t["score"].as_f64().unwrap()))
                .collect();
            (v["label"].clone(), top)
        })
        .collect()
}

#[test]
fn sidecar_classification_matches_the_single_file_model() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&fixtures::fashion_mnist(), 10, tmp.path());
    let images = images_in(&queries);
    assert_eq!(images.len(), 400, "expected the 400 Fashion-MNIST query images");
    let max = ["--aggregate", "max", "--calibrate", "false", "--quiet"];
    let build = |out: &Path, extra: &[&str]| {
        let mut args = vec!["build", s(&index), "-o", s(out)];
        args.extend(max);
        args.extend(extra);
        run_ok(&args);
    };
    let single = tmp.path().join("single.onnx");
    let exact = tmp.path().join("exact.onnx");
    let approx = tmp.path().join("approx.onnx");
    build(&single, &["--index", "single"]);
    build(&exact, &["--index", "ivf", "--ivf-nprobe", "1000"]);
    build(&approx, &["--index", "ivf", "--ivf-nprobe", "2"]);
    assert!(!tmp.path().join("single.ivf").exists(), "a single-file model writes no index file");
    assert!(tmp.path().join("exact.ivf").is_file() && tmp.path().join("approx.ivf").is_file());
    let info: Value = serde_json::from_str(&run_ok(&["info", "--json", s(&exact)])).unwrap();
    assert_eq!(info["index"]["rows"].as_u64(), Some(100), "{info}");
    // The embedder-only model is smaller than the one holding the rows.
    assert!(std::fs::metadata(&exact).unwrap().len() < std::fs::metadata(&single).unwrap().len());

    let want = classify(&single, &images);
    let got = classify(&exact, &images);
    assert_eq!(want.len(), images.len());
    for ((w, g), image) in want.iter().zip(&got).zip(&images) {
        assert_eq!(w.0, g.0, "{}: label", image.display());
        assert_eq!(w.1.len(), g.1.len(), "{}: {:?} vs {:?}", image.display(), w.1, g.1);
        for (a, b) in w.1.iter().zip(&g.1) {
            assert_eq!(a.0, b.0, "{}: {:?} vs {:?}", image.display(), w.1, g.1);
            assert!((a.1 - b.1).abs() < 1e-4, "{}: {:?} vs {:?}", image.display(), w.1, g.1);
        }
    }
    // Two of the index's cells per query: still nearly always the same answer.
    let few = classify(&approx, &images);
    let same = want.iter().zip(&few).filter(|(w, f)| w.1[0].0 == f.1[0].0).count();
    let agreement = same as f64 / images.len() as f64;
    assert!(agreement >= 0.9, "top-1 agreement with 2 probed cells: {agreement}");
}

#[test]
fn sidecar_models_are_deterministic_and_fail_clearly_when_incomplete() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&fixtures::fashion_mnist(), 5, tmp.path());
    let a = tmp.path().join("a.onnx");
    let b = tmp.path().join("b.onnx");
    for out in [&a, &b] {
        run_ok(&[
            "build",
            s(&index),
            "-o",
            s(out),
            "--aggregate",
            "max",
            "--index",
            "ivf",
            "--quiet",
        ]);
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same images, same model file"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("a.ivf")).unwrap(),
        std::fs::read(tmp.path().join("b.ivf")).unwrap(),
        "same index file"
    );

    let image = images_in(&queries)[0].clone();
    // A renamed pair still works; a model without its index names the missing file.
    let renamed = tmp.path().join("shop.onnx");
    std::fs::rename(&a, &renamed).unwrap();
    std::fs::rename(tmp.path().join("a.ivf"), tmp.path().join("shop.ivf")).unwrap();
    run_ok(&["classify", s(&renamed), s(&image)]);
    std::fs::remove_file(tmp.path().join("shop.ivf")).unwrap();
    let out = run(&["classify", s(&renamed), s(&image)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("shop.ivf") && err.contains("missing"), "{err}");
    // A corrupt index names the file and the problem.
    let bytes = std::fs::read(tmp.path().join("b.ivf")).unwrap();
    std::fs::write(tmp.path().join("b.ivf"), &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&["classify", s(&b), s(&image)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("b.ivf") && err.contains("truncated"), "{err}");

    // The approximate index serves the max rule only.
    let out = run(&[
        "build",
        s(&index),
        "-o",
        s(&tmp.path().join("c.onnx")),
        "--index",
        "ivf",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--aggregate max"), "{err}");
}
