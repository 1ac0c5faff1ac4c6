//! TFLite embedders run in LiteRT from Rust give the same embeddings as the
//! Python `ai_edge_litert` Interpreter on the same input tensors.

use crate::common;

use std::path::Path;

use cbr::models::{self, EmbedderChoice};

const PIP_HINT: &str =
    "pip install ai-edge-litert==2.3.0 numpy (scripts/setup.sh installs them into .venv/)";

/// Embeds `tensors` (n images) with the Python LiteRT Interpreter.
fn python_embeddings(model: &Path, tensors: &[f32], n: usize, dir: &Path) -> Vec<f32> {
    let input = dir.join("inputs.f32");
    let output = dir.join("outputs.f32");
    std::fs::write(&input, tensors.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/litert_embed.py");
    let out = common::python()
        .arg(&script)
        .arg(model)
        .arg(&input)
        .arg(n.to_string())
        .arg(&output)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {PIP_HINT}"));
    assert!(
        out.status.success(),
        "litert_embed.py failed:\n{}\n({PIP_HINT})",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn uint8_mobilenet_v3_matches_python_litert() {
    cbr::runtime::litert::install().expect("installing LiteRT");
    let model = common::shared().join("models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite");
    assert!(model.is_file(), "{} is missing", model.display());
    let mut embedder = models::open_embedder(&EmbedderChoice {
        embedder: model.to_string_lossy().into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(embedder.info.dim, 1024);
    // The uint8 input is fed raw pixels: normalisation (p - 128) / (1 / 0.007874).
    let p = embedder.preprocess.clone();
    assert_eq!((p.width, p.height, p.layout), (224, 224, cbr_core::preprocess::Layout::Nhwc));
    assert_eq!(p.mean, [128.0; 3]);

    let images: Vec<_> =
        common::images_in(&common::dataset("cub200_010")).into_iter().step_by(50).collect();
    assert!(images.len() >= 8);
    let tensors: Vec<f32> = images
        .iter()
        .flat_map(|path| cbr::decode::load_tensor(path, &p, &Default::default()).unwrap())
        .collect();
    let ours = embedder.embed(&tensors, images.len()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = python_embeddings(&model, &tensors, images.len(), dir.path());
    assert_eq!(ours.len(), reference.len());
    let worst = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!(
        "LiteRT (Rust) vs ai_edge_litert (Python), {} images x 1024: max |diff| {worst:e}",
        images.len()
    );
    assert_eq!(worst, 0.0, "embeddings differ by up to {worst}");
    // Real photos give real, varied embeddings (not a constant output).
    assert!(ours[..1024] != ours[1024..2048]);
    assert!(ours.iter().any(|&v| v > 0.1));
}
