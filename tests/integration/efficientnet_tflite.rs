//! The TFLite twin of the default embedder (written from the same weights as
//! the ONNX one) gives the same embeddings in LiteRT as the ONNX embedder in
//! ONNX Runtime, on real photos; so does the int8 embedder cbr quantizes, which stays close
//! to the float one.

use crate::common;

use cbr::models::{self, EmbedderChoice};
use cbr_core::preprocess::Resample;

#[test]
fn lite0_tflite_twin_matches_onnx() {
    common::setup_runtime();
    cbr::runtime::litert::install().expect("installing LiteRT");
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
    assert_eq!(tflite.preprocess.layout, cbr_core::preprocess::Layout::Nhwc);
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
    let graph = cbr_core::onnx::load(&models::pull("efficientnet-lite0").unwrap()).unwrap();
    let again = cbr::zoo::tflite_twin::embedder_tflite(&graph, None).unwrap();
    assert_eq!(again, std::fs::read(models::pull_tflite("efficientnet-lite0").unwrap()).unwrap());
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// `efficientnet-lite0-int8` (issue 16): quantized by cbr (QDQ ONNX and a fully quantized TFLite
/// twin with the same scales), calibrated on scikit-image's photographs, deterministic.
/// Compared on the fixtures' crops of the same photographs and on Fashion-MNIST.
#[test]
fn lite0_int8_twins_agree_and_stay_near_the_float_embedder() {
    common::setup_runtime();
    cbr::runtime::litert::install().expect("installing LiteRT");
    let choice = |name: &str, tflite: bool| EmbedderChoice {
        embedder: name.into(),
        tflite,
        resample: Some(Resample::Antialiased),
        ..Default::default()
    };
    let mut float = models::open_embedder(&choice("efficientnet-lite0", false)).unwrap();
    let mut onnx = models::open_embedder(&choice("efficientnet-lite0-int8", false)).unwrap();
    let mut tflite = models::open_embedder(&choice("efficientnet-lite0-int8", true)).unwrap();
    assert_eq!((onnx.info.dim, tflite.info.dim), (1280, 1280));

    // The ONNX graph is QDQ: int8 weights behind DequantizeLinear, activations through
    // QuantizeLinear; the TFLite twin's convolutions are int8.
    let q_path = models::pull("efficientnet-lite0-int8").unwrap();
    let q = cbr_core::onnx::load(&q_path).unwrap();
    let g = q.graph.as_ref().unwrap();
    let count = |op: &str| g.node.iter().filter(|n| n.op_type() == op).count();
    assert_eq!((count("Conv"), count("QuantizeLinear")), (49, 59));
    let int8_weights = g.initializer.iter().filter(|t| t.data_type == Some(3)).count();
    assert!(int8_weights >= 49, "{int8_weights} int8 initializers");
    let t_bytes = std::fs::read(models::pull_tflite("efficientnet-lite0-int8").unwrap()).unwrap();
    let f_bytes = std::fs::read(models::pull("efficientnet-lite0").unwrap()).unwrap();
    let q_bytes = std::fs::read(&q_path).unwrap();
    assert!(
        q_bytes.len() * 3 < f_bytes.len() && t_bytes.len() * 3 < f_bytes.len(),
        "int8 files of {} and {} bytes against {} float",
        q_bytes.len(),
        t_bytes.len(),
        f_bytes.len()
    );

    let mut images: Vec<_> =
        common::images_in(&crate::fixtures::scenes()).into_iter().step_by(24).collect();
    images.extend(common::images_in(&crate::fixtures::fashion_mnist()).into_iter().step_by(50));
    assert!(images.len() >= 20);
    let (mut to_float, mut twins, mut sum) = (1f32, 1f32, 0f32);
    for path in &images {
        let tensor = cbr::decode::load_tensor(path, &float.preprocess, &Default::default());
        let tensor = tensor.unwrap();
        let (f, o) = (float.embed(&tensor, 1).unwrap(), onnx.embed(&tensor, 1).unwrap());
        let nhwc = cbr::decode::load_tensor(path, &tflite.preprocess, &Default::default());
        let t = tflite.embed(&nhwc.unwrap(), 1).unwrap();
        let c = cosine(&f, &o);
        (to_float, sum) = (to_float.min(c), sum + c);
        twins = twins.min(cosine(&o, &t));
    }
    let mean = sum / images.len() as f32;
    eprintln!(
        "int8 vs float ONNX embeddings on {} images: cosine min {to_float:.4}, mean {mean:.4}; \
         int8 TFLite (LiteRT) vs int8 ONNX: min {twins:.5}",
        images.len()
    );
    assert!(
        to_float >= 0.95 && mean >= 0.98,
        "int8 drifts from float: min {to_float}, mean {mean}"
    );
    assert!(twins >= 0.999, "the int8 twins disagree: cosine {twins}");

    // Quantizing is deterministic: calibrating again gives the recorded ranges, and both files
    // come out byte for byte.
    let lite0 = models::find("efficientnet-lite0-int8").unwrap();
    let p = lite0.preprocess();
    let (tensors, n) = models::calibration_tensors(&p).unwrap();
    assert_eq!(n, 9 * 12);
    let float_graph = cbr_core::onnx::load(&models::pull("efficientnet-lite0").unwrap()).unwrap();
    let ranges = cbr::zoo::quantize::calibrate(&float_graph, &p, &tensors, n).unwrap();
    assert_eq!(ranges, cbr::zoo::quantize::ranges_of(&q).unwrap());
    assert_eq!(models::quantize(lite0, &float_graph).unwrap(), q);
    let twin = cbr::zoo::tflite_twin::embedder_tflite(&float_graph, Some(&ranges)).unwrap();
    assert!(twin == t_bytes, "the int8 TFLite twin is not deterministic");
}
