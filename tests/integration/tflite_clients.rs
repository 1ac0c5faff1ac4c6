//! cbr's `.tflite` classifiers run in clients nobody here wrote:
//! - Google's LiteRT interpreter (`ai-edge-litert`, tests/clients/litert_run.py)
//!   gives the same scores as cbr's Rust head (`RetrievalHead::scores`) on the
//!   same embeddings: max |diff| <= 1e-4 with the float block, and within the
//!   documented tolerance with the int8 block;
//! - MediaPipe's ImageClassifier (tests/clients/mediapipe_classify.py) loads
//!   the file, reads labels, normalisation and score threshold from its TFLite
//!   Model Metadata, and picks the same top-1 labels as cbr.
//!
//! Embedders: the float32 EfficientNet-Lite0 TFLite twin of cbr's default model
//! (`cbr::models::pull_tflite`), whose input normalisation the clients must read
//! from our metadata, on Fashion-MNIST (`fixtures::fashion_mnist`: a set hard
//! enough that scores spread and some queries fall below the unknown threshold);
//! in the extended tier (`extended::tflite_clients`) also
//! the uint8 MobileNetV3-Small (the original iOS app's model) and uint8
//! MobileNetV1/V2 in ../shared/models, on CUB birds. The embeddings cbr's head is
//! given come from running the embedder `.tflite` itself in LiteRT on the same
//! preprocessed pixels, so both sides see bit-identical embeddings and any
//! difference is the head's.

use crate::common;

use std::path::{Path, PathBuf};

use crate::fixtures;
use cbr::classifier::ClassifierInfo;
use cbr::embedder::EmbedderInfo;
use cbr_core::head::{Aggregation, HeadOptions, RetrievalHead};
use cbr_core::preprocess::{Layout, Preprocess};
use cbr_core::tflite::{self, TfliteBlock, TfliteOptions};
use common::{images_in, shared, split_folder};
use serde_json::Value;

const PIP_HINT: &str =
    "pip install ai-edge-litert==2.3.0 mediapipe==1.2.3 numpy pillow (scripts/setup.sh installs them into .venv/)";

/// Max |LiteRT − cbr| for the int8 block, on raw similarities and on calibrated
/// probabilities: int8 weights (per-row scale, ~0.4% of a row's largest entry)
/// and an int8 query (1/128) and output move cosine similarities by up to ~1e-2;
/// a softmax with a small temperature magnifies that.
const INT8_SIMILARITY_TOLERANCE: f64 = 0.03;
const INT8_PROBABILITY_TOLERANCE: f64 = 0.1;

pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn client(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients").join(name)
}

/// Runs a Python client; returns its JSON lines.
pub fn python(script: &str, args: &[&str]) -> Vec<Value> {
    let script = client(script);
    let out = common::python()
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {PIP_HINT}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{err}\n(if a package is missing: {PIP_HINT})",
        script.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("{} printed a non-JSON line ({e}): {l}", script.display())
            })
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array of numbers").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// An embedder `.tflite` and how its input is prepared.
pub struct Embedder {
    pub path: PathBuf,
    pub preprocess: Preprocess,
}

impl Embedder {
    /// A uint8 embedder from ../shared/models: raw pixels in (mean 0, std 1).
    pub fn shared_uint8(file: &str, size: u32) -> Self {
        let path = shared().join("models").join(file);
        assert!(path.is_file(), "embedder {} is missing from ../shared/models", path.display());
        Embedder { path, preprocess: Preprocess::raw(size, size, Layout::Nhwc) }
    }

    /// The float32 TFLite twin of the default embedder, EfficientNet-Lite0: (x - 127) / 128.
    pub fn lite0_float() -> Self {
        Self::twin("efficientnet-lite0")
    }

    /// The fully quantized (int8) TFLite twin of `efficientnet-lite0-int8`, quantized by cbr.
    pub fn lite0_int8() -> Self {
        Self::twin("efficientnet-lite0-int8")
    }

    /// The TFLite twin cbr writes of the known model `name`.
    fn twin(name: &str) -> Self {
        common::setup();
        let path = cbr::models::pull_tflite(name)
            .unwrap_or_else(|e| panic!("writing the TFLite twin of {name}: {e:#}"));
        let preprocess =
            Preprocess { layout: Layout::Nhwc, ..cbr::models::find(name).unwrap().preprocess() };
        Embedder { path, preprocess }
    }

    pub fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The embeddings of `images`, from the embedder itself in LiteRT.
    fn embed(&self, images: &[PathBuf]) -> Vec<Vec<f32>> {
        // The bare embedder has no metadata: give the client its normalisation.
        let (m, sd) = (self.preprocess.mean[0].to_string(), self.preprocess.std[0].to_string());
        litert_with(&self.path, &["--mean", &m, "--std", &sd], images)
    }
}

/// LiteRT's first output for each image (dequantized).
fn litert(model: &Path, images: &[PathBuf]) -> Vec<Vec<f32>> {
    litert_with(model, &[], images)
}

fn litert_with(model: &Path, extra: &[&str], images: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut args = vec![s(model)];
    args.extend(extra);
    args.extend(images.iter().map(|p| s(p)));
    let lines = python("litert_run.py", &args);
    assert_eq!(lines.len(), images.len(), "one line per image");
    lines.iter().map(|l| floats(&l["output"])).collect()
}

/// An image set's split (5 index images per class, the rest queries) with every image's embedding.
struct Data {
    labels: Vec<String>,
    index_embeddings: Vec<f32>,
    queries: Vec<PathBuf>,
    query_embeddings: Vec<Vec<f32>>,
    dim: usize,
}

fn embed_split(embedder: &Embedder, set: &Path, queries_per_class: usize, tmp: &Path) -> Data {
    let (index, queries) = split_folder(set, 5, tmp);
    let index_images = images_in(&index);
    let mut query_images = Vec::new();
    for class in std::fs::read_dir(&queries).unwrap() {
        let class = class.unwrap().path();
        let mut files: Vec<_> =
            std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        query_images.extend(files.into_iter().take(queries_per_class));
    }
    query_images.sort();
    let labels: Vec<String> = index_images
        .iter()
        .map(|p| p.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut all = index_images.clone();
    all.extend(query_images.iter().cloned());
    let emb = embedder.embed(&all);
    let dim = emb[0].len();
    let (idx, q) = emb.split_at(index_images.len());
    Data {
        labels,
        index_embeddings: idx.concat(),
        queries: query_images,
        query_embeddings: q.to_vec(),
        dim,
    }
}

fn info_for(embedder: &Embedder, bytes: &[u8], head: &RetrievalHead) -> ClassifierInfo {
    // The embedder's real input and output names, as `cbr build` records them.
    let opened = cbr::embedder::Embedder::from_bytes(
        bytes,
        &embedder.name(),
        None,
        embedder.preprocess.clone(),
    )
    .expect("opening the embedder in LiteRT");
    let info = EmbedderInfo { dim: head.dim, ..opened.info };
    cbr_core::format::classifier_info(&info, &embedder.preprocess, head, false)
}

fn write_classifier(
    embedder: &Embedder,
    head: &RetrievalHead,
    block: TfliteBlock,
    out: &Path,
) -> ClassifierInfo {
    let bytes = std::fs::read(&embedder.path).unwrap();
    let info = info_for(embedder, &bytes, head);
    let opts = TfliteOptions { block, ..Default::default() };
    let model =
        tflite::classifier_bytes(&bytes, head, &info, &opts).expect("writing the classifier");
    std::fs::write(out, &model).unwrap();
    assert_eq!(cbr_core::format::read(&model).expect("cbr reads its own .tflite back").info, info);
    info
}

fn argmax(v: &[f32]) -> usize {
    let mut b = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[b] {
            b = i;
        }
    }
    b
}

/// (max |LiteRT − cbr|, fraction of queries with the same top-1).
fn compare(model: &Path, head: &RetrievalHead, data: &Data) -> (f64, f64) {
    let out = litert(model, &data.queries);
    let mut worst = 0f64;
    let mut same = 0;
    for (q, got) in data.query_embeddings.iter().zip(&out) {
        let want = head.scores(q);
        assert_eq!(got.len(), want.len(), "scores has one value per class");
        for (a, b) in got.iter().zip(&want) {
            worst = worst.max((*a as f64 - *b as f64).abs());
        }
        same += (argmax(got) == argmax(&want)) as usize;
    }
    (worst, same as f64 / out.len() as f64)
}

fn head(data: &Data, opts: &HeadOptions) -> RetrievalHead {
    RetrievalHead::new(&data.index_embeddings, data.dim, &data.labels, opts).unwrap()
}

/// The configurations every embedder is checked with: the default head
/// (power, centring, discriminant, calibrated softmax) and the original max rule.
fn configs() -> Vec<(&'static str, HeadOptions)> {
    vec![("default", HeadOptions::default()), ("original max", HeadOptions::original())]
}

pub fn check_float_block(embedder: Embedder, set: &Path, all_aggregations: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let embedder_file = embedder.name();
    let data = embed_split(&embedder, set, 3, tmp.path());
    let mut configs = configs();
    if all_aggregations {
        for a in [Aggregation::Centroid, Aggregation::Blend] {
            configs.push((a.name(), HeadOptions { aggregation: a, ..HeadOptions::default() }));
        }
    }
    for (name, opts) in configs {
        let h = head(&data, &opts);
        let model = tmp.path().join(format!("{}.tflite", name.replace(' ', "_")));
        let info = write_classifier(&embedder, &h, TfliteBlock::Float, &model);
        let (worst, top1) = compare(&model, &h, &data);
        println!(
            "{embedder_file} {name} float: max |LiteRT - cbr| = {worst:.2e}, same top-1 {top1:.2}"
        );
        assert!(worst <= 1e-4, "{embedder_file}, {name} head, float block: LiteRT and cbr differ by {worst:.2e} (> 1e-4)");
        assert_eq!(top1, 1.0, "same scores, same top-1");
        // LiteRT's labels are the ones cbr wrote.
        let lines = python("litert_run.py", &[s(&model), s(&data.queries[0])]);
        let labels: Vec<String> = lines[0]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let entries: Vec<String> =
            (0..info.score_count()).map(|i| info.score_label(i).to_string()).collect();
        assert_eq!(
            labels, entries,
            "labelmap.txt (classes, then the unknown entry) read through the TFLite metadata"
        );
    }
}

#[test]
fn litert_float_block_matches_cbr_efficientnet_lite0_float() {
    check_float_block(Embedder::lite0_float(), &fixtures::fashion_mnist(), true);
}

#[test]
fn litert_int8_block_stays_within_tolerance_of_cbr_efficientnet_lite0_float() {
    int8_block_within_tolerance(Embedder::lite0_float(), &fixtures::fashion_mnist());
}

pub fn int8_block_within_tolerance(embedder: Embedder, set: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let data = embed_split(&embedder, set, 3, tmp.path());
    for (name, opts) in configs() {
        let h = head(&data, &opts);
        let model = tmp.path().join(format!("{}_int8.tflite", name.replace(' ', "_")));
        write_classifier(&embedder, &h, TfliteBlock::Int8, &model);
        let (worst, top1) = compare(&model, &h, &data);
        println!("int8 {name}: max |LiteRT - cbr| = {worst:.3}, same top-1 {top1:.2}");
        let tol = if h.temperature.is_some() {
            INT8_PROBABILITY_TOLERANCE
        } else {
            INT8_SIMILARITY_TOLERANCE
        };
        assert!(
            worst <= tol,
            "{name} head, int8 block: LiteRT and cbr differ by {worst:.3} (> {tol})"
        );
        assert!(
            top1 >= 0.9,
            "{name} head, int8 block: same top-1 for only {top1:.2} of the queries"
        );
    }
}

/// A float input: MediaPipe must normalise with our NormalizationOptions.
#[test]
fn mediapipe_image_classifier_reads_the_metadata_and_agrees_on_top1_float_embedder() {
    mediapipe_agrees(Embedder::lite0_float(), &fixtures::fashion_mnist());
}

/// The int8 twin cbr quantizes itself (issue 16) runs in LiteRT inside MediaPipe too.
#[test]
fn mediapipe_image_classifier_agrees_on_top1_with_the_int8_embedder_cbr_quantized() {
    mediapipe_agrees(Embedder::lite0_int8(), &fixtures::fashion_mnist());
}

pub fn mediapipe_agrees(embedder: Embedder, set: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let size = embedder.preprocess.width;
    // PNGs already at the input size: MediaPipe then feeds the same pixels as the
    // PIL preprocessing that made the embeddings (no decoder or resize differences).
    // Queries of the known classes, and scikit-image's photographs, of none of them.
    let (_, queries) = split_folder(set, 5, tmp.path());
    let mut sources: Vec<PathBuf> = images_in(&queries).into_iter().step_by(9).collect();
    let known = sources.len();
    sources.extend(fixtures::photos());
    let png_dir = tmp.path().join("png");
    std::fs::create_dir_all(&png_dir).unwrap();
    let make_png = "import sys, os\nfrom PIL import Image, ImageOps\nout, size = sys.argv[1], int(sys.argv[2])\n\
                    for i, src in enumerate(sys.argv[3:]):\n\
                    \x20   img = ImageOps.exif_transpose(Image.open(src)).convert('RGB').resize((size, size), Image.BILINEAR)\n\
                    \x20   img.save(os.path.join(out, '%03d.png' % i))\n";
    let size_arg = size.to_string();
    let mut args = vec!["-c", make_png, s(&png_dir), &size_arg];
    args.extend(sources.iter().map(|p| s(p)));
    let st = common::python().args(&args).status().expect("python3");
    assert!(st.success(), "making PNGs failed");
    let mut pngs: Vec<PathBuf> =
        std::fs::read_dir(&png_dir).unwrap().map(|e| e.unwrap().path()).collect();
    pngs.sort();
    assert!(known >= 40 && pngs.len() > known, "{known} query PNGs of {}", pngs.len());

    let data = embed_split(&embedder, set, 0, &tmp.path().join("split"));
    let png_embeddings = embedder.embed(&pngs);
    for block in [TfliteBlock::Float, TfliteBlock::Int8] {
        let h = head(&data, &HeadOptions::default());
        let model = tmp.path().join(format!("mp_{block:?}.tflite"));
        let info = write_classifier(&embedder, &h, block, &model);
        let unknown_label =
            info.unknown_label.clone().expect("the default head has an unknown entry");
        let mut args = vec![s(&model)];
        args.extend(pngs.iter().map(|p| s(p)));
        let lines = python("mediapipe_classify.py", &args);
        assert_eq!(lines.len(), pngs.len());
        let (mut same, mut unknown_known, mut unknown_other) = (0, 0, 0);
        for (i, (line, e)) in lines.iter().zip(&png_embeddings).enumerate() {
            let scores = h.scores(e);
            let classes = h.labels.len();
            // cbr's answer: the best entry of `scores` (None: the unknown entry).
            let cbr_top =
                cbr::classifier::predict_row(&h.labels, &scores, classes, 1, h.threshold, true)
                    .label;
            let cats = line["categories"].as_array().unwrap();
            // MediaPipe's: its first category, "unknown" when it is the unknown entry.
            let mp_top = cats
                .first()
                .map(|c| c["label"].as_str().unwrap().to_string())
                .filter(|l| *l != unknown_label);
            if mp_top.is_none() {
                if i < known {
                    unknown_known += 1;
                } else {
                    unknown_other += 1;
                }
            }
            if block == TfliteBlock::Float {
                // Float block: same numbers up to 1e-4, so the same decision except at a near-tie.
                let best = argmax(&scores);
                let mut rest = scores.clone();
                rest.remove(best);
                if scores[best] - rest.iter().cloned().fold(f32::MIN, f32::max) > 1e-3 {
                    assert_eq!(
                        mp_top, cbr_top,
                        "{}: MediaPipe {mp_top:?} vs cbr {cbr_top:?} ({scores:?})",
                        line["path"]
                    );
                }
                if let Some(c) = cats.first() {
                    assert!((c["score"].as_f64().unwrap() - scores[best] as f64).abs() < 1e-4);
                }
            }
            same += (mp_top == cbr_top) as usize;
        }
        let agreement = same as f64 / pngs.len() as f64;
        let other = pngs.len() - known;
        println!(
            "MediaPipe, {}, {block:?} block: same answer as cbr for {same}/{} images; unknown: \
             {unknown_known}/{known} of the known classes, {unknown_other}/{other} scikit-image photos",
            embedder.name(),
            pngs.len()
        );
        assert_eq!(
            unknown_other, other,
            "every photograph of something else is unknown to MediaPipe"
        );
        assert!(
            (unknown_known as f64) < 0.3 * known as f64,
            "MediaPipe answered unknown for {unknown_known} of {known} photos of known classes"
        );
        assert!(
            agreement >= if block == TfliteBlock::Float { 0.97 } else { 0.85 },
            "{block:?}: agreement {agreement:.2}"
        );
    }
}

/// A TFLite classifier's default resample is MediaPipe's own (OpenCV's fixed-point bilinear
/// warp, reproduced in `decode.rs`): on lossless images of any size, MediaPipe's ImageClassifier
/// and `cbr classify` give the same scores to 1e-5. Here PNG copies of the scene photos at their
/// own size (downscaled to the input) and at 97x61 (upscaled, where the border counts). With
/// antialiased resizing, MediaPipe answered otherwise than cbr on 16 of 243 CUB photos.
#[test]
fn mediapipe_resample_is_exact_on_png() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let (index, queries) = split_folder(&fixtures::scenes(), 4, tmp.path());
    let model = tmp.path().join("scenes.tflite");
    common::run_ok(&["build", s(&index), "-o", s(&model), "--quiet"]);
    let info: Value =
        serde_json::from_str(&common::run_ok(&["info", "--json", s(&model)])).unwrap();
    assert_eq!(info["preprocess"]["resample"], "mediapipe", "{}", info["preprocess"]);

    let png_dir = tmp.path().join("png");
    std::fs::create_dir_all(&png_dir).unwrap();
    let make_png = "import sys, os\nfrom PIL import Image\nout = sys.argv[1]\n\
                    for i, src in enumerate(sys.argv[2:]):\n\
                    \x20   img = Image.open(src).convert('RGB')\n\
                    \x20   img.save(os.path.join(out, '%03d_own.png' % i))\n\
                    \x20   img.resize((97, 61), Image.BILINEAR).save(os.path.join(out, '%03d_small.png' % i))\n";
    let sources: Vec<PathBuf> = images_in(&queries).into_iter().step_by(5).take(8).collect();
    let mut args = vec!["-c", make_png, s(&png_dir)];
    args.extend(sources.iter().map(|p| s(p)));
    assert!(common::python().args(&args).status().expect("python3").success());
    let mut pngs: Vec<PathBuf> =
        std::fs::read_dir(&png_dir).unwrap().map(|e| e.unwrap().path()).collect();
    pngs.sort();
    assert_eq!(pngs.len(), 2 * sources.len());

    let mut args = vec![s(&model)];
    args.extend(pngs.iter().map(|p| s(p)));
    let mp = python("mediapipe_classify.py", &args);
    let mut args = vec!["classify", s(&model), "--json", "-k", "100"];
    args.extend(pngs.iter().map(|p| s(p)));
    let ours = common::run_ok(&args);
    let mut worst = 0f64;
    for (line, m) in ours.lines().zip(&mp) {
        let v: Value = serde_json::from_str(line).unwrap();
        let score_of = |label: &str| -> f64 {
            if label == "unknown" {
                return v["unknown_score"].as_f64().unwrap();
            }
            let top = v["top"].as_array().unwrap();
            top.iter().find(|t| t["label"] == label).unwrap()["score"].as_f64().unwrap()
        };
        let cats = m["categories"].as_array().unwrap();
        assert!(!cats.is_empty(), "{m}");
        for c in cats {
            let d = (c["score"].as_f64().unwrap() - score_of(c["label"].as_str().unwrap())).abs();
            worst = worst.max(d);
        }
    }
    println!("MediaPipe vs cbr classify on {} PNGs: max score difference {worst:.2e}", pngs.len());
    assert!(worst <= 1e-5, "MediaPipe's scores differ from cbr's by up to {worst}");
}
