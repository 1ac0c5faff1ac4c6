//! End-to-end tests of the `cbr` command line: the real binary, the real
//! default embedder, real photos: Fashion-MNIST for accuracy, crops of
//! scikit-image's colour photographs (`fixtures::scenes`) for everything else.
//!
//! Every test works in its own temporary folder and passes absolute paths.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{images_in, run, run_ok, setup, split_folder};
use crate::fixtures;
use serde_json::Value;

pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that a command failed with exit code 1 and returns its stderr.
pub fn expect_failure(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: expected cbr to fail, it succeeded.\nstdout:\n{}\nstderr:\n{err}",
        stdout(o)
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected exit code 1 (an error, not a crash); stderr:\n{err}"
    );
    assert!(
        err.starts_with("error: ") || err.contains("\nerror: "),
        "{what}: the failure should print `error: ...`; stderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "{what}: cbr panicked instead of reporting an error:\n{err}"
    );
    err
}

/// `cbr info --json MODEL`, parsed.
pub fn info(model: &Path) -> Value {
    serde_json::from_str(&run_ok(&["info", "--json", s(model)]))
        .expect("info --json prints one JSON document")
}

/// `labels` and `images_per_label` of a model, as (label, count) pairs.
pub fn class_counts(model: &Path) -> Vec<(String, u64)> {
    let i = info(model);
    let labels = i["labels"].as_array().expect("info has labels");
    let counts = i["images_per_label"].as_array().expect("info has images_per_label");
    assert_eq!(labels.len(), counts.len(), "one image count per label: {i}");
    labels
        .iter()
        .zip(counts)
        .map(|(l, n)| (l.as_str().unwrap().to_string(), n.as_u64().unwrap()))
        .collect()
}

/// The class folders of an image set, sorted.
fn classes_of(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> =
        fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

/// The images of one class folder, sorted.
fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Copies (real copies, not links) the first `per_class` images of the first
/// `classes` classes of the colour photo set into `dest/<class>/`. Returns the class names.
fn copy_photos(dest: &Path, classes: usize, per_class: usize) -> Vec<String> {
    copy_classes(&fixtures::scenes(), dest, classes, per_class)
}

/// [`copy_photos`] from any image set `root`.
pub fn copy_classes(root: &Path, dest: &Path, classes: usize, per_class: usize) -> Vec<String> {
    let mut names = Vec::new();
    for class in classes_of(root).into_iter().take(classes) {
        let name = class.file_name().unwrap().to_str().unwrap().to_string();
        let out = dest.join(&name);
        fs::create_dir_all(&out).unwrap();
        for f in files_of(&class).into_iter().take(per_class) {
            fs::copy(&f, out.join(f.file_name().unwrap())).unwrap();
        }
        names.push(name);
    }
    names
}

/// Real photos that are in no index built by `copy_photos` with <= 10 per class.
fn query_photos(classes: usize, per_class: usize) -> Vec<PathBuf> {
    query_photos_of(&fixtures::scenes(), classes, per_class)
}

/// [`query_photos`] from any image set `root`.
pub fn query_photos_of(root: &Path, classes: usize, per_class: usize) -> Vec<PathBuf> {
    classes_of(root)
        .iter()
        .take(classes)
        .flat_map(|c| files_of(c).into_iter().skip(10).take(per_class))
        .collect()
}

/// Fails when `dir` holds a `.cbr-tmp-*` file: a write must rename or remove its temporary file.
fn assert_no_temp_files(dir: &Path) {
    let left = common::temp_files(dir);
    assert!(left.is_empty(), "no .cbr-tmp-* files may be left in {}: {left:?}", dir.display());
}

/// Fails unless `model` still holds exactly `before`, with no temporary file beside it.
fn assert_model_untouched(model: &Path, before: &[u8]) {
    assert!(
        fs::read(model).unwrap() == before,
        "a failed build must leave the existing {} byte-for-byte unchanged",
        model.display()
    );
    assert_no_temp_files(model.parent().unwrap());
}

/// Adds the three kinds of bad file to a copied data set; returns their paths
/// (in the order a sorted build meets them).
fn add_bad_files(root: &Path, classes: &[String]) -> Vec<PathBuf> {
    let empty = root.join(&classes[0]).join("empty.jpg");
    fs::write(&empty, b"").unwrap();
    let real = files_of(&root.join(&classes[1]))[0].clone();
    let bytes = fs::read(&real).unwrap();
    let truncated = root.join(&classes[1]).join("truncated.jpg");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = root.join(&classes[2]).join("notes.jpg");
    fs::write(&text, "this is a text file, not a photo\n").unwrap();
    vec![empty, truncated, text]
}

/// Builds from the first 5 images of each class of `set`, classifies the rest
/// with `classify --json` (checking every line's shape) and returns
/// (correct, queries).
pub fn five_shot(set: &Path, min_queries: usize) -> (usize, usize) {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(set, 5, tmp.path());
    let model = tmp.path().join("five-shot.onnx");
    run_ok(&["build", s(&index), "-o", s(&model), "--quiet"]);

    let images = images_in(&queries);
    assert!(
        images.len() >= min_queries,
        "expected {min_queries} query images in {}, found {}",
        set.display(),
        images.len()
    );
    let mut args = vec!["classify", s(&model), "--json", "--top-k", "1"];
    args.extend(images.iter().map(|p| s(p)));
    let out = run_ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        images.len(),
        "classify --json must print exactly one line per query image"
    );

    let mut correct = 0;
    for (line, image) in lines.iter().zip(&images) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let obj = v.as_object().expect("each line is a JSON object");
        let keys: BTreeSet<&str> = obj.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["path", "label", "unknown", "top"]),
            "a result line has exactly the keys path, label, unknown and top: {line}"
        );
        assert_eq!(
            obj["unknown"].as_bool(),
            Some(obj["label"].is_null()),
            "unknown is true exactly when label is null: {line}"
        );
        if let Some(label) = obj["label"].as_str() {
            assert_eq!(
                Some(label),
                obj["top"][0]["label"].as_str(),
                "an accepted label is the top class: {line}"
            );
        }
        assert_eq!(
            obj["path"].as_str(),
            Some(s(image)),
            "lines come in the order of the arguments, with the path as given"
        );
        let top = obj["top"].as_array().expect("top is an array");
        assert_eq!(top.len(), 1, "--top-k 1 gives one entry: {line}");
        let entry = top[0].as_object().expect("a top entry is an object");
        let keys: BTreeSet<&str> = entry.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["label", "score"]),
            "a top entry has exactly label and score: {line}"
        );
        let score = entry["score"].as_f64().expect("score is a number");
        assert!((0.0..=1.0).contains(&score), "a calibrated score is a probability, got {score}");
        let truth = image.parent().unwrap().file_name().unwrap().to_str().unwrap();
        if entry["label"].as_str() == Some(truth) {
            correct += 1;
        }
    }
    (correct, images.len())
}

#[test]
fn accuracy_five_shot_on_fashion_mnist() {
    let (correct, n) = five_shot(&fixtures::fashion_mnist(), 450);
    let accuracy = correct as f64 / n as f64;
    println!("5-shot top-1 accuracy on Fashion-MNIST: {accuracy:.3} ({correct}/{n})");
    assert!(accuracy >= FASHION_MIN, "5-shot top-1 accuracy on Fashion-MNIST is {accuracy:.3} ({correct}/{n}), expected >= {FASHION_MIN} (measured 0.727; chance is 0.1)");
}

/// 5-shot top-1 on the 450 Fashion-MNIST queries, default head: measured 0.727 (327/450).
const FASHION_MIN: f64 = 0.65;

#[test]
fn builds_are_deterministic_and_info_describes_the_model() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_photos(&data, 3, 3);
    let a = tmp.path().join("a.onnx");
    let b = tmp.path().join("b.onnx");
    run_ok(&["build", s(&data), "-o", s(&a)]);
    run_ok(&["build", s(&data), "-o", s(&b)]);
    let (ba, bb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(
        ba == bb,
        "two builds of the same folder must give byte-identical files ({} vs {} bytes)",
        ba.len(),
        bb.len()
    );

    let i = info(&a);
    let labels: Vec<&str> =
        i["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let mut sorted = labels.clone();
    sorted.sort();
    assert_eq!(labels, sorted, "labels are listed sorted");
    assert_eq!(labels, classes, "the labels are the class folder names");
    assert_eq!(i["images_per_label"], serde_json::json!([3, 3, 3]), "3 images per class: {i}");
    assert_eq!(i["embedder"]["name"], "efficientnet-lite0", "the default embedder: {i}");
    assert_eq!(i["embedder"]["dim"], 1280, "EfficientNet-Lite0 embeds to 1280-d: {i}");
    assert_eq!(
        (i["preprocess"]["width"].as_u64(), i["preprocess"]["height"].as_u64()),
        (Some(224), Some(224)),
        "224x224 input: {i}"
    );
    assert_eq!(i["aggregation"], "discriminant", "the default head: {i}");
    assert_eq!(i["center"], true, "{i}");
    assert!(i["temperature"].as_f64().is_some_and(|t| t > 0.0), "calibrated: {i}");

    // The human-readable form says the same.
    let text = run_ok(&["info", s(&a)]);
    assert!(
        text.contains("efficientnet-lite0") && text.contains("224x224"),
        "info names embedder and input size:\n{text}"
    );
    for c in &classes {
        assert!(text.contains(c.as_str()), "info lists class {c}:\n{text}");
    }
}

#[test]
fn classify_prints_one_human_line_per_image() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_photos(&data, 4, 3);
    let model = tmp.path().join("m.onnx");
    run_ok(&["build", s(&data), "-o", s(&model), "--quiet"]);
    let queries = query_photos(4, 1);
    for k in [1usize, 3] {
        let k_str = k.to_string();
        let mut args = vec!["classify", s(&model), "--top-k", &k_str];
        args.extend(queries.iter().map(|p| s(p)));
        let out = run_ok(&args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), queries.len(), "one line per image:\n{out}");
        for (line, q) in lines.iter().zip(&queries) {
            let prefix = format!("{}: ", s(q));
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("line should start with `{prefix}`: {line}"));
            // Below the model's threshold: `unknown (best: label (0.123), ...)`.
            let rest = match rest.strip_prefix("unknown (best: ") {
                Some(r) => r
                    .strip_suffix(')')
                    .unwrap_or_else(|| panic!("unknown line must end with `)`: {line}")),
                None => rest,
            };
            let entries: Vec<&str> = rest.split(", ").collect();
            assert_eq!(entries.len(), k, "--top-k {k} gives {k} entries: {line}");
            let mut last = f64::INFINITY;
            for e in entries {
                // `label (0.123)`
                let (label, score) = e
                    .rsplit_once(" (")
                    .unwrap_or_else(|| panic!("entry `{e}` is not `label (score)`: {line}"));
                let score =
                    score.strip_suffix(')').unwrap_or_else(|| panic!("entry `{e}` lacks `)`"));
                assert!(!label.is_empty(), "empty label in {line}");
                let (_, decimals) = score
                    .split_once('.')
                    .unwrap_or_else(|| panic!("score {score} has no decimals: {line}"));
                assert_eq!(decimals.len(), 3, "scores have 3 decimals: {line}");
                let v: f64 = score
                    .parse()
                    .unwrap_or_else(|_| panic!("score `{score}` is not a number: {line}"));
                assert!(v <= last, "entries are best first: {line}");
                last = v;
            }
        }
        if k == 1 {
            let right = lines
                .iter()
                .zip(&queries)
                .filter(|(l, q)| {
                    l.contains(q.parent().unwrap().file_name().unwrap().to_str().unwrap())
                })
                .count();
            println!("human output, top-1 right on {right}/{} queries", queries.len());
        }
    }
}

#[test]
fn bad_images_are_skipped_and_counted_or_stop_a_strict_build() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_photos(&data, 3, 3);
    let bad = add_bad_files(&data, &classes);
    let model = tmp.path().join("m.onnx");
    let out = run(&["build", s(&data), "-o", s(&model)]);
    let err = stderr(&out);
    assert!(out.status.success(), "a build with a few bad files must succeed; stderr:\n{err}");
    let reasons = ["empty", "truncated", "not a recognised image"];
    for (path, reason) in bad.iter().zip(reasons) {
        let line = err.lines().find(|l| l.contains(s(path))).unwrap_or_else(|| {
            panic!("stderr should name the bad file {}:\n{err}", path.display())
        });
        assert!(
            line.contains(reason),
            "the line about {} should give the reason `{reason}`: {line}",
            path.display()
        );
    }
    assert!(err.contains("3 skipped"), "the summary should say `3 skipped`:\n{err}");
    assert_eq!(
        class_counts(&model),
        classes.iter().map(|c| (c.clone(), 3)).collect::<Vec<_>>(),
        "the model holds the 3 good images of each class and none of the bad files"
    );

    // --strict: fails at the first bad file (sorted order: class 0's empty file) and writes nothing.
    let strict_model = tmp.path().join("strict.onnx");
    let out = run(&["build", s(&data), "-o", s(&strict_model), "--strict"]);
    let err = expect_failure(&out, "--strict build over bad files");
    assert!(
        err.contains(s(&bad[0])),
        "the --strict error should name the first bad file {}:\n{err}",
        bad[0].display()
    );
    assert!(
        !strict_model.exists(),
        "a failed --strict build must not write {}",
        strict_model.display()
    );
    assert_no_temp_files(tmp.path());
}

#[test]
fn failed_build_leaves_existing_model_untouched() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let classes = copy_photos(&good, 2, 2);
    let out_dir = tmp.path().join("models");
    fs::create_dir_all(&out_dir).unwrap();
    let model = out_dir.join("out.onnx");
    run_ok(&["build", s(&good), "-o", s(&model), "--quiet"]);
    let before = fs::read(&model).unwrap();

    // A --strict build over a bad file, to the same path.
    let bad = tmp.path().join("bad");
    copy_photos(&bad, 2, 2);
    fs::write(bad.join(&classes[1]).join("broken.jpg"), b"GIF89a not really").unwrap();
    let out = run(&["build", s(&bad), "-o", s(&model), "--strict"]);
    expect_failure(&out, "--strict build over a broken file");
    assert_model_untouched(&model, &before);

    // An input folder with an empty class folder, to the same path.
    let holey = tmp.path().join("holey");
    copy_photos(&holey, 1, 2);
    fs::create_dir_all(holey.join("zzz_empty_class")).unwrap();
    let out = run(&["build", s(&holey), "-o", s(&model)]);
    expect_failure(&out, "build with an empty class folder");
    assert_model_untouched(&model, &before);

    // A successful build of another folder replaces it, and leaves no temporary file either.
    fs::remove_dir(holey.join("zzz_empty_class")).unwrap();
    run_ok(&["build", s(&holey), "-o", s(&model), "--quiet", "--threshold", "0.5"]);
    assert!(
        fs::read(&model).unwrap() != before,
        "a successful build over a different folder replaces the model"
    );
    assert_no_temp_files(&out_dir);
}

#[test]
fn errors_are_clear_and_name_the_culprit() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out_model = t.join("never.onnx");

    // An empty class folder.
    let data = t.join("data");
    copy_photos(&data, 2, 2);
    let empty_class = data.join("099.Empty_Class");
    fs::create_dir_all(&empty_class).unwrap();
    let err = expect_failure(&run(&["build", s(&data), "-o", s(&out_model)]), "empty class folder");
    assert!(
        err.contains(s(&empty_class)) && err.contains("empty"),
        "the error should name the empty folder {}:\n{err}",
        empty_class.display()
    );
    fs::remove_dir(&empty_class).unwrap();

    // An input folder with no class folders.
    let bare = t.join("bare");
    fs::create_dir_all(&bare).unwrap();
    let err = expect_failure(
        &run(&["build", s(&bare), "-o", s(&out_model)]),
        "folder without class folders",
    );
    assert!(
        err.contains(s(&bare)) && err.contains("class folders"),
        "the error should name {} and explain the layout:\n{err}",
        bare.display()
    );

    // A missing input path.
    let missing = t.join("no-such-folder");
    let err = expect_failure(&run(&["build", s(&missing), "-o", s(&out_model)]), "missing input");
    assert!(
        err.contains(s(&missing)) && err.contains("does not exist"),
        "the error should name {}:\n{err}",
        missing.display()
    );

    // A CSV manifest with a missing file.
    let csv = t.join("train.csv");
    let real =
        files_of(&data.join(classes_of(&fixtures::scenes())[0].file_name().unwrap()))[0].clone();
    fs::write(&csv, format!("path,label\n{},bird\nphotos/gone.jpg,bird\n", real.display()))
        .unwrap();
    let err = expect_failure(
        &run(&["build", s(&csv), "-o", s(&out_model)]),
        "manifest with a missing file",
    );
    assert!(
        err.contains("gone.jpg") && err.contains("line 3") && err.contains("not found"),
        "the error should name the missing file and its line:\n{err}"
    );

    // An unknown embedder name lists the known ones.
    let err = expect_failure(
        &run(&["build", s(&data), "-o", s(&out_model), "--embedder", "resnet-9000"]),
        "unknown embedder",
    );
    assert!(
        err.contains("resnet-9000") && err.contains("efficientnet-lite0"),
        "the error should name the bad embedder and list the known ones:\n{err}"
    );
    assert!(!out_model.exists(), "no failed build may write {}", out_model.display());

    // classify with a non-model file (a JPEG) as the model.
    let model = t.join("m.onnx");
    run_ok(&["build", s(&data), "-o", s(&model), "--quiet"]);
    let err =
        expect_failure(&run(&["classify", s(&real), s(&real)]), "classify with a JPEG as model");
    assert!(err.contains(s(&real)), "the error should name the file given as model:\n{err}");
    let err = expect_failure(&run(&["info", s(&real)]), "info of a JPEG");
    assert!(err.contains(s(&real)), "info's error should name the file:\n{err}");
    let absent_model = t.join("absent.onnx");
    let err = expect_failure(
        &run(&["classify", s(&absent_model), s(&real)]),
        "classify with a missing model",
    );
    assert!(err.contains(s(&absent_model)), "the error should name the missing model:\n{err}");

    // classify with a missing image: others still classified, exit non-zero.
    let gone = t.join("gone.jpg");
    let other = query_photos(1, 1)[0].clone();
    let out = run(&["classify", s(&model), s(&real), s(&gone), s(&other)]);
    let err = expect_failure(&out, "classify with a missing image");
    assert!(err.contains(s(&gone)), "stderr should name the missing image:\n{err}");
    let printed = stdout(&out);
    assert_eq!(
        printed.lines().count(),
        2,
        "the two readable images are still classified:\n{printed}"
    );
    assert!(
        printed.contains(s(&real)) && printed.contains(s(&other)),
        "both readable images are printed:\n{printed}"
    );
    // ... and with --json, the failure is a JSON line of its own.
    let out = run(&["classify", s(&model), "--json", s(&real), s(&gone), s(&other)]);
    expect_failure(&out, "classify --json with a missing image");
    let lines: Vec<Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 3, "one JSON line per argument: {lines:?}");
    let bad: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(bad.len(), 1, "exactly one error line: {lines:?}");
    assert_eq!(
        bad[0]["path"].as_str(),
        Some(s(&gone)),
        "the error line names the missing image: {lines:?}"
    );
}

#[test]
fn builds_from_a_csv_manifest() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let classes = copy_photos(&photos, 2, 3);
    // Relative paths (to the manifest's folder); 3 images of one class, 2 of the other.
    let mut csv = String::from("path,label\n");
    for (i, c) in classes.iter().enumerate() {
        for f in files_of(&photos.join(c)).into_iter().take(3 - i) {
            let rel = f.strip_prefix(tmp.path()).unwrap();
            csv.push_str(&format!(
                "{},{}\n",
                rel.display(),
                if i == 0 { "albatross" } else { "laysan" }
            ));
        }
    }
    let manifest = tmp.path().join("train.csv");
    fs::write(&manifest, csv).unwrap();
    let model = tmp.path().join("m.onnx");
    // Run from elsewhere: relative paths must resolve against the manifest, not the working directory.
    let out = common::cbr()
        .current_dir(std::env::temp_dir())
        .args(["build", s(&manifest), "-o", s(&model)])
        .output()
        .unwrap();
    assert!(out.status.success(), "building from a manifest failed:\n{}", stderr(&out));
    assert_eq!(
        class_counts(&model),
        vec![("albatross".to_string(), 3), ("laysan".to_string(), 2)],
        "labels come from the CSV"
    );
    let q = query_photos(1, 1);
    let line = run_ok(&["classify", s(&model), "-k", "1", s(&q[0])]);
    assert!(
        line.contains("albatross") || line.contains("laysan"),
        "classify uses the manifest's labels: {line}"
    );
}

/// A 30x30 PNG of a real photo (900 pixels), under a 1000-pixel limit.
fn small_png(src: &Path, dest: &Path) {
    let img = image::open(src).unwrap().resize_exact(30, 30, image::imageops::FilterType::Triangle);
    img.to_rgb8().save(dest).unwrap();
}

#[test]
fn pixel_limit_skips_big_photos_and_names_an_emptied_class() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_photos(&data, 2, 2);
    // Each class gets two small versions of its photos; the full-size photos exceed 1000 pixels.
    let mut big = Vec::new();
    for c in &classes {
        for f in files_of(&data.join(c)) {
            small_png(
                &f,
                &data
                    .join(c)
                    .join(format!("small_{}.png", f.file_stem().unwrap().to_str().unwrap())),
            );
            big.push(f);
        }
    }
    let model = tmp.path().join("m.onnx");
    let out = run(&["build", s(&data), "-o", s(&model), "--max-pixels", "1000"]);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "the small PNGs fit the limit, so the build must succeed:\n{err}"
    );
    for f in &big {
        let line = err
            .lines()
            .find(|l| l.contains(s(f)))
            .unwrap_or_else(|| panic!("stderr should name the big photo {}:\n{err}", f.display()));
        assert!(line.contains("megapixels"), "the reason should mention megapixels: {line}");
    }
    assert!(
        err.contains(&format!("{} skipped", big.len())),
        "the summary should count {} skipped:\n{err}",
        big.len()
    );
    assert_eq!(
        class_counts(&model),
        classes.iter().map(|c| (c.clone(), 2)).collect::<Vec<_>>(),
        "only the small PNGs are in the index"
    );

    // A class whose photos are all too big: the build fails and says which class.
    let only_big = copy_photos(&tmp.path().join("tmp3"), 3, 2).pop().unwrap();
    let from = tmp.path().join("tmp3").join(&only_big);
    fs::rename(&from, data.join(&only_big)).unwrap();
    let model2 = tmp.path().join("m2.onnx");
    let out = run(&["build", s(&data), "-o", s(&model2), "--max-pixels", "1000"]);
    let err = expect_failure(&out, "a class with only over-limit photos");
    assert!(
        err.contains(&only_big),
        "the error should name the class {only_big} that lost all its images:\n{err}"
    );
    assert!(err.contains("megapixels"), "the error should say why the class's images were skipped (megapixels), not refer to a list that was never printed:\n{err}");
    assert!(!model2.exists(), "the failed build must not write a model");
}

/// An ONNX file given by path as the embedder, with its normalisation given by
/// flags: `dim`-d output, `size`x`size` NCHW input, (x - mean) / std; photos from
/// the image set `photos`.
pub fn onnx_embedder_given_by_path(
    embedder: &Path,
    photos: &Path,
    dim: u64,
    size: u64,
    mean: &str,
    std: &str,
) {
    setup();
    assert!(embedder.is_file(), "missing test embedder {}", embedder.display());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_classes(photos, &data, 3, 4);
    let model = tmp.path().join("by-path.onnx");
    let out = run(&[
        "build",
        s(&data),
        "-o",
        s(&model),
        "--embedder",
        s(embedder),
        "--mean",
        mean,
        "--std",
        std,
        "--original",
    ]);
    assert!(out.status.success(), "build with an .onnx embedder failed:\n{}", stderr(&out));
    let i = info(&model);
    assert_eq!(
        i["embedder"]["name"].as_str(),
        embedder.file_name().unwrap().to_str(),
        "the embedder is named by its file: {i}"
    );
    assert_eq!(i["embedder"]["dim"], dim, "the embedding size: {i}");
    let p = &i["preprocess"];
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(size), Some(size)),
        "input size from the model: {i}"
    );
    assert_eq!(p["layout"], "nchw", "layout from the model: {i}");
    let (m, d): (f64, f64) = (mean.parse().unwrap(), std.parse().unwrap());
    assert_eq!(p["mean"], serde_json::json!([m, m, m]), "{i}");
    assert_eq!(p["std"], serde_json::json!([d, d, d]), "{i}");
    assert_eq!(class_counts(&model), classes.iter().map(|c| (c.clone(), 4)).collect::<Vec<_>>());

    // Several images at once (through a fixed-batch-1 model in the extended tier).
    let queries = query_photos_of(photos, 3, 2);
    let mut args = vec!["classify", s(&model), "--json", "-k", "3"];
    args.extend(queries.iter().map(|p| s(p)));
    let out = run_ok(&args);
    let lines: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), queries.len(), "one line per query:\n{out}");
    for l in &lines {
        let top = l["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "3 classes ranked: {l}");
        assert!(
            top.iter().all(|t| classes.iter().any(|c| t["label"] == c.as_str())),
            "labels are the class names: {l}"
        );
    }
    // With --original (max cosine, raw scores) an index image is its own best match: its class scores ~1.
    let own = files_of(&data.join(&classes[1]))[0].clone();
    let out = run_ok(&["classify", s(&model), "--json", "-k", "1", s(&own)]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["top"][0]["label"],
        classes[1].as_str(),
        "an index image is classified as its own class: {v}"
    );
    assert!(
        v["top"][0]["score"].as_f64().unwrap() > 0.999,
        "an index image matches itself with cosine ~1: {v}"
    );

    // Without --mean/--std, an unknown model is refused with advice.
    let model2 = tmp.path().join("no-norm.onnx");
    let err = expect_failure(
        &run(&["build", s(&data), "-o", s(&model2), "--embedder", s(embedder)]),
        "unknown embedder without --mean/--std",
    );
    assert!(
        err.contains("--mean") && err.contains("--std"),
        "the error should tell the user to give --mean and --std:\n{err}"
    );
    assert!(err.contains(s(embedder)), "the error should name the embedder file:\n{err}");
    assert!(!model2.exists(), "the refused build must not write a model");
}

/// Issue 12, item 9: labels and file names are printed escaped (a newline in
/// a file name cannot forge a report line, ANSI escapes do not reach the
/// terminal); "embedded N" leaves out skipped files; `-q` keeps a one-line
/// skip count; ONNX Runtime writes nothing under $HOME outside cbr's cache,
/// and LiteRT prints no INFO line.
#[test]
fn reports_are_escaped_and_the_runtimes_stay_quiet_and_in_the_cache() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_photos(&data, 2, 3);
    let evil_class = "evil\u{1b}[31mred";
    fs::rename(data.join(&classes[1]), data.join(evil_class)).unwrap();
    fs::write(data.join(&classes[0]).join("x\nskipped forged.jpg"), b"not an image").unwrap();
    // A home of its own: whatever the runtimes write there is visible.
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let cache = cbr::cache::dir().unwrap();
    let in_home = |args: &[&str]| -> Output {
        common::cbr()
            .args(args)
            .env("HOME", &home)
            .env("CBR_CACHE_DIR", &cache)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("ORT_DISABLE_TELEMETRY")
            .env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("TF_BUILD")
            .output()
            .unwrap()
    };
    let model = tmp.path().join("m.onnx");
    let out = in_home(&["build", s(&data), "-o", s(&model), "--no-cache"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains('\u{1b}'), "an escape reached the terminal:\n{err}");
    let skip_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("skipped")).collect();
    assert_eq!(skip_lines.len(), 1, "one bad file, one line:\n{err}");
    assert!(skip_lines[0].contains("x\\nskipped forged.jpg"), "{}", skip_lines[0]);
    assert!(
        err.contains("embedded 6 in"),
        "6 images embedded, the skipped file is not one:\n{err}"
    );

    let out = in_home(&["build", s(&data), "-o", s(&model), "--no-cache", "-q"]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out).lines().collect::<Vec<_>>(),
        ["skipped 1 unreadable image (run without -q to list them)"]
    );

    let out = in_home(&["info", s(&model)]);
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("evil\\u{1b}[31mred"), "{text}");
    let query = data.join(&classes[0]).join("q\nfake: line.jpg");
    fs::copy(files_of(&data.join(evil_class))[0].clone(), &query).unwrap();
    let out = in_home(&["classify", s(&model), s(&query)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(!stdout(&out).contains('\u{1b}'));
    assert!(
        !home.join(".cache").join("Microsoft").exists(),
        "ONNX Runtime wrote into {}",
        home.join(".cache/Microsoft").display()
    );

    // LiteRT: no "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    let tfl = tmp.path().join("m.tflite");
    let out = in_home(&["build", s(&data), "--format", "tflite", "-o", s(&tfl), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = in_home(&["classify", s(&tfl), s(&query)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("XNNPACK"), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "classify prints nothing on stderr");
    assert!(!home.join(".cache").join("Microsoft").exists());
}

/// The default embedder's ONNX file, given by path instead of by name.
#[test]
fn onnx_embedder_given_by_path_default_embedder_file() {
    let embedder = setup().to_path_buf();
    onnx_embedder_given_by_path(&embedder, &fixtures::scenes(), 1280, 224, "127", "128");
}
