//! The TFLite twin of the default embedder (written from the same weights as
//! the ONNX one) gives the same embeddings in LiteRT as the ONNX embedder in
//! ONNX Runtime, on real photos.

use crate::common;

use cbr::models::{self, EmbedderChoice};
use cbr::preprocess::Resample;

#[test]
fn lite0_tflite_twin_matches_onnx() {
    common::setup_runtime();
    cbr::litert::install().expect("installing LiteRT");
    let onnx_choice =
        EmbedderChoice { embedder: "efficientnet-lite0".into(), ..Default::default() };
    let mut onnx = models::open_embedder(&onnx_choice).unwrap();
    // The twin resizes as MediaPipe does by default; the runtimes are compared on one input.
    let default_twin =
        models::open_embedder(&EmbedderChoice { tflite: true, ..onnx_choice.clone() }).unwrap();
    assert_eq!(default_twin.preprocess.resample, Resample::Mediapipe);
    let antialiased = Some(Resample::Antialiased);
    let mut tflite = models::open_embedder(&EmbedderChoice {
        tflite: true,
        resample: antialiased,
        ..onnx_choice
    })
    .unwrap();
    assert!(matches!(tflite.model, cbr::embedder::EmbedderModel::Tflite { .. }));
    assert_eq!((onnx.info.dim, tflite.info.dim), (1280, 1280));
    assert_eq!(tflite.preprocess.layout, cbr::preprocess::Layout::Nhwc);
    assert_eq!(tflite.preprocess.mean, onnx.preprocess.mean);

    let images: Vec<_> =
        common::images_in(&crate::fixtures::scenes()).into_iter().step_by(48).collect();
    assert!(images.len() >= 8);
    let (mut worst, mut largest) = (0f32, 0f32);
    for path in &images {
        let a = onnx
            .embed(
                &cbr::decode::load_tensor(path, &onnx.preprocess, &Default::default()).unwrap(),
                1,
            )
            .unwrap();
        let b = tflite
            .embed(
                &cbr::decode::load_tensor(path, &tflite.preprocess, &Default::default()).unwrap(),
                1,
            )
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
            largest = largest.max(x.abs());
        }
    }
    eprintln!("Lite0 TFLite (LiteRT) vs ONNX (ONNX Runtime), {} photos x 1280: max |diff| {worst:e} (largest value {largest})", images.len());
    assert!(largest > 1.0, "embeddings look degenerate");
    assert!(worst <= 2e-4, "embeddings differ by up to {worst}");

    // Writing the twin is deterministic.
    let graph = cbr::onnx::load(&models::pull("efficientnet-lite0").unwrap()).unwrap();
    let again = cbr::zoo::tflite_twin::embedder_tflite(&graph, None).unwrap();
    assert_eq!(again, std::fs::read(models::pull_tflite("efficientnet-lite0").unwrap()).unwrap());
}
