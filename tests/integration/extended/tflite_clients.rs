//! cbr's `.tflite` classifiers on uint8 embedders from ../shared/models, in
//! LiteRT and MediaPipe, on CUB birds (see `crate::tflite_clients`).

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{dataset, images_in, split_folder};
use crate::tflite_clients::{
    check_float_block, int8_block_within_tolerance, mediapipe_agrees, python, s, Embedder,
};

const CUB: &str = "cub200_010";

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn litert_float_block_matches_cbr_mobilenet_v3_small_uint8() {
    check_float_block(
        Embedder::shared_uint8("mobilenet_v3_small_224_1.0_uint8_embedder.tflite", 224),
        &dataset(CUB),
        true,
    );
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn litert_float_block_matches_cbr_efficientnet_lite0_float_on_cub() {
    check_float_block(Embedder::lite0_float(), &dataset(CUB), false);
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn litert_float_block_matches_cbr_mobilenet_v1_uint8() {
    check_float_block(
        Embedder::shared_uint8("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 224),
        &dataset(CUB),
        false,
    );
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn litert_float_block_matches_cbr_mobilenet_v2_uint8() {
    check_float_block(
        Embedder::shared_uint8("mobilenet_v2_1.0_224_quant_embedder.tflite", 224),
        &dataset(CUB),
        false,
    );
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn litert_int8_block_stays_within_tolerance_of_cbr() {
    int8_block_within_tolerance(
        Embedder::shared_uint8("mobilenet_v3_small_224_1.0_uint8_embedder.tflite", 224),
        &dataset(CUB),
    );
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn mediapipe_image_classifier_reads_the_metadata_and_agrees_on_top1_uint8_embedder() {
    mediapipe_agrees(
        Embedder::shared_uint8("mobilenet_v3_small_224_1.0_uint8_embedder.tflite", 224),
        &dataset(CUB),
    );
}

/// The real binary end to end: `cbr build --tflite-block int8` with the
/// metadata flags, then MediaPipe reads the model's name, author, version and
/// licence, and classifies; `cbr classify` (LiteRT from Rust) agrees with it.
/// The same flags on an ONNX output are refused.
#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn cli_builds_an_int8_tflite_with_metadata_flags_that_mediapipe_reads() {
    use crate::common::run;
    crate::common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let embedder = Embedder::shared_uint8("mobilenet_v3_small_224_1.0_uint8_embedder.tflite", 224);
    let (index, queries) = split_folder(&dataset(CUB), 5, tmp.path());
    let model = tmp.path().join("birds.tflite");
    let flags = [
        "--name",
        "Birds",
        "--description",
        "Ten bird species",
        "--author",
        "cbr tests",
        "--model-version",
        "7",
        "--license",
        "Apache-2.0",
    ];
    let mut args = vec![
        "build",
        s(&index),
        "--embedder",
        s(&embedder.path),
        "-o",
        s(&model),
        "--tflite-block",
        "int8",
        "--quiet",
    ];
    args.extend(flags);
    crate::common::run_ok(&args);

    let read_about = "import sys\nfrom mediapipe.tasks.metadata import metadata_schema_py_generated as m\n\
                      from mediapipe.tasks.metadata import schema_py_generated as f\n\
                      d = open(sys.argv[1], 'rb').read()\nmodel = f.Model.GetRootAs(d, 0)\n\
                      e = [model.Metadata(i) for i in range(model.MetadataLength()) if model.Metadata(i).Name() == b'TFLITE_METADATA'][0]\n\
                      md = m.ModelMetadata.GetRootAs(model.Buffers(e.Buffer()).DataAsNumpy().tobytes(), 0)\n\
                      print('|'.join(x.decode() for x in [md.Name(), md.Description(), md.Author(), md.Version(), md.License(), md.MinParserVersion()]))\n";
    let out =
        crate::common::python().args(["-c", read_about, s(&model)]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Birds|Ten bird species|cbr tests|7|Apache-2.0|1.0.0"
    );

    let images: Vec<PathBuf> = images_in(&queries).into_iter().step_by(25).collect();
    let mut args = vec![s(&model)];
    args.extend(images.iter().map(|p| s(p)));
    let mp = python("mediapipe_classify.py", &args);
    let mut cargs = vec!["classify", s(&model), "--json"];
    cargs.extend(images.iter().map(|p| s(p)));
    let cbr_out = crate::common::run_ok(&cargs);
    let mut same = 0;
    for (line, m) in cbr_out.lines().zip(&mp) {
        let v: Value = serde_json::from_str(line).unwrap();
        let cbr_label = v["label"].as_str().map(str::to_string);
        // MediaPipe names the model's unknown entry; cbr answers it as no label.
        let mp_label = m["categories"]
            .as_array()
            .unwrap()
            .first()
            .map(|c| c["label"].as_str().unwrap().to_string())
            .filter(|l| l != "unknown");
        if cbr_label != mp_label {
            println!("differ: cbr {cbr_label:?} {} / MediaPipe {}", v["top"], m["categories"]);
        }
        same += (cbr_label == mp_label) as usize;
    }
    // Different JPEG decoders and resizers (image-rs vs MediaPipe's, which does not antialias: issue
    // 15's resize parity, still open) move close calls between similar birds. Measured: 15 of 20
    // since the model answers classes instead of mostly "unknown" (before the unknown entry, the
    // 0.9-precision threshold made both say unknown on most photos, and agree trivially).
    println!("cbr classify vs MediaPipe on {} JPEGs: same answer for {same}", images.len());
    assert!(
        same as f64 >= 0.7 * images.len() as f64,
        "same answer for only {same}/{}",
        images.len()
    );

    let onnx = tmp.path().join("birds.onnx");
    let out = run(&["build", s(&index), "-o", s(&onnx), "--tflite-block", "int8", "--quiet"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("apply to TFLite output")
    );
}

/// Issue 15's parity, on the original photos (no pre-resizing): a TFLite classifier from
/// `cbr build` (the default embedder's TFLite twin, whose default resample is MediaPipe's own)
/// answers in MediaPipe's ImageClassifier as `cbr classify` does, and an ONNX classifier answers
/// in Python onnxruntime (PIL, preprocessing read from the metadata) as `cbr classify` does: the
/// same class, or "unknown" in both, on at least 99% of the held-out CUB photos. What remains
/// are the JPEG decoders (image-rs against MediaPipe's and PIL's libjpeg-turbo): on lossless
/// images the MediaPipe scores equal cbr's to 1e-6 (`mediapipe_resample_is_exact_on_png`).
#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn mediapipe_and_onnxruntime_answer_as_cbr_classify_on_original_photos() {
    crate::common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&dataset(CUB), 5, tmp.path());
    let photos = images_in(&queries);
    assert!(photos.len() >= 200, "{} held-out photos", photos.len());
    for (model, client) in
        [("birds.tflite", "mediapipe_classify.py"), ("birds.onnx", "onnxruntime_scores.py")]
    {
        let model = tmp.path().join(model);
        crate::common::run_ok(&["build", s(&index), "-o", s(&model), "--quiet"]);
        let ours = cbr_answers(&model, &photos);
        let mut args = vec![s(&model)];
        args.extend(photos.iter().map(|p| s(p)));
        let theirs: Vec<Option<String>> = python(client, &args)
            .iter()
            .map(|v| {
                let label = match client {
                    // MediaPipe: its first category (none: every entry below the threshold).
                    "mediapipe_classify.py" => v["categories"][0]["label"].as_str(),
                    _ => v["top1"].as_str(),
                };
                label.filter(|l| *l != "unknown").map(str::to_string)
            })
            .collect();
        assert_eq!(theirs.len(), photos.len());
        let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        for ((p, a), b) in photos.iter().zip(&ours).zip(&theirs).filter(|(x, b)| x.1 != *b) {
            println!("{}: cbr {a:?}, {client} {b:?}", p.display());
        }
        println!(
            "{client} on {}: same answer as cbr classify for {same} of {}",
            model.display(),
            photos.len()
        );
        assert!(
            same as f64 >= 0.99 * photos.len() as f64,
            "{client}: same answer for only {same} of {} photos",
            photos.len()
        );
    }
}

/// The answers of `cbr classify --json`: the label, `None` for unknown.
fn cbr_answers(model: &std::path::Path, images: &[PathBuf]) -> Vec<Option<String>> {
    let mut args = vec!["classify", s(model), "--json"];
    args.extend(images.iter().map(|p| s(p)));
    let out = crate::common::run_ok(&args);
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["label"].as_str().map(str::to_string)
        })
        .collect()
}
