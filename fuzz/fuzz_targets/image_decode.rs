//! Image decoding from bytes, every format cbr reads (JPEG through libjpeg-turbo from the
//! mozjpeg crate, PNG, GIF, BMP, WebP, TIFF, PNM), under small limits so that a header's size
//! is checked, never allocated: the full decode, the reduced-scale JPEG path and the tensor.
#![no_main]
use cbr::decode::{self, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_pixels: 4_000_000, max_file_bytes: 16 << 20 };
    if decode::check_header(data, &limits).is_err() {
        return;
    }
    let _ = decode::decode_rgb(data, &limits);
    let _ = decode::decode_rgb_for(data, &limits, (16, 16));
});
