//! The `.tflite` writer copies a uint8 embedder from ../shared/models losslessly
//! (quantization parameters included).

use crate::common::shared;
use crate::tflite_writer::copied_losslessly;

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn uint8_embedder_is_copied_losslessly() {
    let p = shared().join("models").join("mobilenet_v1_0.25_128_quant_embedder.tflite");
    let bytes = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("cannot read the embedder {}: {e}", p.display()));
    copied_losslessly(&bytes, 256);
}
