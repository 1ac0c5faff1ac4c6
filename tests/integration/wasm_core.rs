//! cbr-core compiled to WebAssembly writes the very bytes the native build
//! writes: `node scripts/cbr-node.mjs build --embeddings` against `cbr build
//! --embeddings` on the same shards (default rule, `--original`, int8 rows,
//! mirror augmentation; ONNX, and TFLite on the embedder's TFLite twin), and
//! its edits against `cbr add`/`cbr remove`. Needs Node, the module
//! (`scripts/wasm.sh`) and the Node command's Parquet reader
//! (`npm ci --prefix scripts`); `scripts/setup.sh --tests` makes both, and
//! their absence fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{run_ok, setup};
use crate::fixtures;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `node scripts/cbr-node.mjs args...`, panicking with its stderr if it fails.
fn node(args: &[&str]) -> String {
    let wasm = repo().join("web/pkg/cbr_core.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/wasm.sh (or scripts/setup.sh --tests)",
        wasm.display()
    );
    let script = repo().join("scripts/cbr-node.mjs");
    let out = Command::new("node").arg(&script).args(args).output().expect("cannot start node");
    assert!(out.status.success(), "cbr-node {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CSV manifest of the first `per_class` images of the first `classes` Fashion-MNIST classes.
fn manifest(dir: &Path, classes: usize, per_class: usize, name: &str) -> PathBuf {
    let root = fixtures::fashion_mnist();
    let mut labels: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    labels.sort();
    let mut csv = String::from("path,label\n");
    for c in labels.iter().take(classes) {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(c).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(per_class) {
            csv.push_str(&format!(
                "{},{}\n",
                f.display(),
                c.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

/// Embeds `images` into two shards under `dir` with `flags`; returns the shards' pattern.
fn shards(images: &Path, dir: &Path, flags: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..2 {
        let part = dir.join(format!("part-{i}.parquet"));
        let shard = format!("{i}/2");
        let mut args = vec!["embed", s(images), "--shard", &shard, "-o", s(&part), "-q"];
        args.extend(flags);
        run_ok(&args);
    }
    format!("{}/part-*.parquet", dir.display())
}

/// Asserts that `cbr build --embeddings` (with `native_embedder` choosing the embedder as
/// `cbr embed` did) and the Node build on the embedder file write the same file.
fn same_build(
    pattern: &str,
    native_embedder: &[&str],
    embedder: &Path,
    out: &Path,
    flags: &[&str],
) {
    let ext = out.extension().unwrap().to_str().unwrap();
    let native = out.with_extension(format!("native.{ext}"));
    let mut args = vec!["build", "--embeddings", pattern, "-o", s(&native), "-q"];
    args.extend(native_embedder);
    args.extend(flags);
    run_ok(&args);
    let mut args = vec!["build", "--embeddings", pattern, "--embedder", s(embedder), "-o", s(out)];
    args.extend(flags);
    node(&args);
    let (a, b) = (std::fs::read(&native).unwrap(), std::fs::read(out).unwrap());
    assert!(a == b, "{flags:?}: the WebAssembly build wrote other bytes than cbr build");
}

/// The default embedder's ONNX file (pulled by the set-up) and its TFLite twin (made on demand).
fn embedders(dir: &Path, images: &Path) -> (PathBuf, PathBuf) {
    let models = cbr::cache::dir().unwrap().join("models");
    let onnx = models.join("efficientnet-lite0.onnx");
    // A TFLite build makes (and caches) the twin.
    run_ok(&["build", s(images), "-o", s(&dir.join("twin.tflite")), "-q"]);
    (onnx, models.join("efficientnet-lite0.tflite"))
}

#[test]
fn the_webassembly_build_writes_the_bytes_cbr_build_writes() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let images = manifest(dir, 6, 6, "images.csv");
    let (onnx, tflite) = embedders(dir, &images);
    // The known model by name (its preprocessing is known); the twin as a file, with the
    // normalisation EfficientNet-Lite was trained with and the resample a TFLite classifier takes.
    let known: &[&str] = &[];
    let twin_args =
        ["--embedder", s(&tflite), "--mean", "127", "--std", "128", "--resample", "mediapipe"];
    let plain = shards(&images, &dir.join("plain"), known);
    same_build(&plain, known, &onnx, &dir.join("default.onnx"), &[]);
    same_build(&plain, known, &onnx, &dir.join("original.onnx"), &["--original"]);
    let int8 = ["--aggregate", "max", "--index-dtype", "int8"];
    same_build(&plain, known, &onnx, &dir.join("int8.onnx"), &int8);
    let centroid = ["--aggregate", "centroid", "--no-unknown", "--target-precision", "0.9"];
    same_build(&plain, known, &onnx, &dir.join("centroid.onnx"), &centroid);
    let mirrored = shards(&images, &dir.join("mirrored"), &["--augment"]);
    same_build(&mirrored, known, &onnx, &dir.join("augment.onnx"), &["--augment"]);
    let twin = shards(&images, &dir.join("twin"), &twin_args);
    same_build(&twin, &twin_args, &tflite, &dir.join("default.tflite"), &[]);
    let block = ["--tflite-block", "int8", "--name", "shop"];
    same_build(&twin, &twin_args, &tflite, &dir.join("int8.tflite"), &block);
}

#[test]
fn webassembly_edits_write_the_bytes_cbr_edits_write() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let onnx = cbr::cache::dir().unwrap().join("models/efficientnet-lite0.onnx");
    let first = manifest(dir, 4, 5, "first.csv");
    let all = manifest(dir, 5, 5, "all.csv");
    let first_parts = shards(&first, &dir.join("first"), &[]);
    let all_parts = shards(&all, &dir.join("all"), &[]);
    let base = dir.join("base.onnx");
    node(&["build", "--embeddings", &first_parts, "--embedder", s(&onnx), "-o", s(&base)]);
    // Adding the fifth class's rows gives the model of all five, as cbr add does.
    let added = dir.join("added.onnx");
    node(&["add", s(&base), "--embeddings", &all_parts, "-o", s(&added)]);
    let fresh = dir.join("fresh.onnx");
    run_ok(&["build", "--embeddings", &all_parts, "-o", s(&fresh), "-q"]);
    assert!(
        std::fs::read(&added).unwrap() == std::fs::read(&fresh).unwrap(),
        "add then build differ"
    );
    let cli_added = dir.join("cli-added.onnx");
    run_ok(&["add", s(&base), s(&all), "-o", s(&cli_added), "-q"]);
    assert!(
        std::fs::read(&added).unwrap() == std::fs::read(&cli_added).unwrap(),
        "Node add and cbr add differ"
    );
    // Removing it again gives the first model back.
    let removed = dir.join("removed.onnx");
    let fifth = std::fs::read_to_string(&all)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .to_string();
    node(&["remove", s(&added), "--label", &fifth, "-o", s(&removed)]);
    let cli_removed = dir.join("cli-removed.onnx");
    run_ok(&["remove", s(&added), "--label", &fifth, "-o", s(&cli_removed)]);
    let (a, b, c) = (
        std::fs::read(&removed).unwrap(),
        std::fs::read(&cli_removed).unwrap(),
        std::fs::read(&base).unwrap(),
    );
    assert!(a == b, "Node remove and cbr remove differ");
    assert!(a == c, "removing the added class does not give the first model back");
}
