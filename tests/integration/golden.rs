//! Golden answers: what `cbr classify --json` says about real photos, for every
//! aggregation rule, output format, TFLite block and index dtype, recorded from
//! the binary and kept in `tests/golden/*.json`. It guards refactors of the
//! head: the answers may move only in the last float bits.
//!
//! Data comes from a registry, not `../shared`: Fashion-MNIST from Debian's
//! `dataset-fashion-mnist` (written as class folders by
//! `scripts/fashion_mnist_folders.py`), 5 index images and 2 queries per
//! class (10 classes: 20 queries).
//!
//! Compared: the same images in the same order, the same accepted label (or
//! unknown), the same top-3 labels in the same order, and every score within
//! [`SCORE_TOLERANCE`].
//!
//! To record new answers after a change that is meant to change them, run
//! `CBR_BLESS=1 cargo test --release --test integration golden::` and commit the files.

use crate::common;

use std::path::Path;

use serde_json::Value;

/// Absolute tolerance on a score. Labels and their order must match exactly; scores may move
/// in their last bits, and those of calibrated heads more: τ is fitted by an optimiser over
/// leave-one-out sums, so a change of summation order (the one AVX2/FMA dot kernel replacing
/// the head's portable one) moves τ slightly, which moved probabilities by up to 1.3e-4
/// (largest seen; max/centroid/blend rules; discriminant and original stayed within 1e-5).
const SCORE_TOLERANCE: f64 = 2e-4;

const INDEX_PER_CLASS: usize = 5;
const QUERIES_PER_CLASS: usize = 2;
const TOP_K: &str = "3";

/// The head choices: each aggregation rule with the defaults, and the original CBR.
const RULES: [(&str, &[&str]); 5] = [
    ("max", &["--aggregate", "max"]),
    ("centroid", &["--aggregate", "centroid"]),
    ("blend", &["--aggregate", "blend"]),
    ("discriminant", &["--aggregate", "discriminant"]),
    ("original", &["--original"]),
];

/// Output formats: (name, extension, extra build flags).
const FORMATS: [(&str, &str, &[&str]); 3] = [
    ("onnx", "onnx", &[]),
    ("tflite-float", "tflite", &["--tflite-block", "float"]),
    ("tflite-int8", "tflite", &["--tflite-block", "int8"]),
];

const DTYPES: [&str; 3] = ["f32", "f16", "int8"];

/// Writes Fashion-MNIST class folders under `dir` and splits them into index and queries.
fn fashion_mnist(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let all = dir.join("all");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fashion_mnist_folders.py");
    let out = common::python()
        .arg(&script)
        .arg(&all)
        .arg((INDEX_PER_CLASS + QUERIES_PER_CLASS).to_string())
        .output()
        .expect("cannot run Python (needed to write the Fashion-MNIST images)");
    assert!(
        out.status.success(),
        "{} failed: {}\nInstall the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist).",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    common::split_folder(&all, INDEX_PER_CLASS, &dir.join("split"))
}

/// `cbr classify --json` lines reduced to what is compared, with paths relative to `queries`.
fn answers(stdout: &str, queries: &Path) -> Value {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let path = v["path"].as_str().expect("path");
        let image = Path::new(path).strip_prefix(queries).unwrap_or(Path::new(path));
        assert!(v.get("error").is_none(), "classify failed on {path}: {line}");
        out.push(serde_json::json!({
            "image": image.to_string_lossy(),
            "label": v["label"],
            "top": v["top"],
        }));
    }
    Value::Array(out)
}

/// Differences between recorded (`want`) and current (`got`) answers, as messages.
fn compare(case: &str, want: &Value, got: &Value, worst: &mut f64) -> Vec<String> {
    let (want, got) = (want.as_array().unwrap(), got.as_array().unwrap());
    if want.len() != got.len() {
        return vec![format!("{case}: {} answers recorded, {} now", want.len(), got.len())];
    }
    let mut errors = Vec::new();
    for (w, g) in want.iter().zip(got) {
        let image = w["image"].as_str().unwrap_or("?");
        if w["image"] != g["image"] || w["label"] != g["label"] {
            errors.push(format!(
                "{case} {image}: recorded {} → {}, now {} → {}",
                w["image"], w["label"], g["image"], g["label"]
            ));
            continue;
        }
        let (wt, gt) = (w["top"].as_array().unwrap(), g["top"].as_array().unwrap());
        let labels = |t: &[Value]| t.iter().map(|s| s["label"].clone()).collect::<Vec<_>>();
        if labels(wt) != labels(gt) {
            errors.push(format!(
                "{case} {image}: top labels {:?} now {:?}",
                labels(wt),
                labels(gt)
            ));
            continue;
        }
        for (ws, gs) in wt.iter().zip(gt) {
            let (a, b) = (ws["score"].as_f64().unwrap(), gs["score"].as_f64().unwrap());
            let d = (a - b).abs();
            *worst = worst.max(d);
            if d > SCORE_TOLERANCE {
                errors.push(format!(
                    "{case} {image}: {} scored {a}, now {b} (|diff| {d:.2e} > {SCORE_TOLERANCE:e})",
                    ws["label"]
                ));
            }
        }
    }
    errors
}

#[test]
fn classify_answers_match_the_recorded_ones() {
    common::setup();
    let bless = std::env::var_os("CBR_BLESS").is_some_and(|v| v == "1");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = fashion_mnist(tmp.path());
    let query_files = common::images_in(&queries);
    assert_eq!(query_files.len(), 10 * QUERIES_PER_CLASS);

    let mut cases: Vec<(String, &str, Vec<&str>)> = Vec::new();
    for (format, ext, format_args) in FORMATS {
        for (rule, rule_args) in RULES {
            for dtype in DTYPES {
                let mut args = format_args.to_vec();
                args.extend_from_slice(rule_args);
                args.extend_from_slice(&["--index-dtype", dtype]);
                cases.push((format!("{format}-{rule}-{dtype}"), ext, args));
            }
        }
    }
    // The max rule from a sidecar index (approximate search beside the model).
    cases.push(("onnx-max-ivf".into(), "onnx", vec!["--aggregate", "max", "--index", "ivf"]));

    let mut errors = Vec::new();
    let mut worst = 0f64;
    for (case, ext, args) in &cases {
        let model = tmp.path().join(format!("{case}.{ext}"));
        let model_s = model.to_str().unwrap();
        let mut build = vec!["build", index.to_str().unwrap(), "-o", model_s, "--quiet"];
        build.extend_from_slice(args);
        common::run_ok(&build);
        let mut classify = vec!["classify", model_s, "--json", "--top-k", TOP_K];
        classify.extend(query_files.iter().map(|p| p.to_str().unwrap()));
        let got = answers(&common::run_ok(&classify), &queries);
        let file = golden.join(format!("{case}.json"));
        if bless {
            std::fs::create_dir_all(&golden).unwrap();
            // One answer per line: small, and a diff shows which image moved.
            let lines: Vec<String> =
                got.as_array().unwrap().iter().map(|a| a.to_string()).collect();
            let text = format!("[\n{}\n]\n", lines.join(",\n"));
            std::fs::write(&file, text).unwrap();
            continue;
        }
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!("{}: {e} (record it with CBR_BLESS=1)", file.display())
            }))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        errors.extend(compare(case, &want, &got, &mut worst));
    }
    eprintln!("golden: {} cases, largest score difference {worst:.2e}", cases.len());
    assert!(errors.is_empty(), "{} differences:\n{}", errors.len(), errors.join("\n"));
}
