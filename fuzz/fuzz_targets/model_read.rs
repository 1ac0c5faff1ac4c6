//! The one model reader on arbitrary bytes, as ONNX and as TFLite (the format is sniffed from
//! the content: bytes 4..8 `TFL3` make TFLite). It must refuse or accept, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cbr_core::format::read(data);
    // The same bytes as the other format.
    let mut tflite = data.to_vec();
    if tflite.len() >= 8 {
        tflite[4..8].copy_from_slice(b"TFL3");
        let _ = cbr_core::format::read(&tflite);
    }
});
