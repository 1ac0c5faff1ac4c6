//! Decode cost of photos for an embedder input: the full decode against the
//! reduced (DCT-scaled) one `cbr` uses for large JPEGs, per image, one thread,
//! and how far apart the two input tensors are. Used by bench/phone_photos.sh.
//!
//!     cargo run --release --example decode_speed -- 224 photo1.jpg photo2.jpg ...

use std::time::Instant;

use cbr::decode::{self, DecodeLimits};
use cbr_core::preprocess::{Layout, Preprocess};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size: u32 = args.first().and_then(|s| s.parse().ok()).unwrap_or(224);
    let p = Preprocess {
        mean: [127.0; 3],
        std: [128.0; 3],
        ..Preprocess::raw(size, size, Layout::Nchw)
    };
    let limits = DecodeLimits::default();
    let files: Vec<Vec<u8>> = args[1..].iter().map(std::fs::read).collect::<Result<_, _>>()?;
    anyhow::ensure!(!files.is_empty(), "usage: decode_speed SIZE FILE...");
    let (mut full_s, mut reduced_s, mut max_diff, mut mean_diff) = (0.0, 0.0, 0f32, 0f64);
    for bytes in &files {
        let t = Instant::now();
        let img = decode::decode_rgb(bytes, &limits)?;
        let mut full = vec![0f32; p.tensor_len()];
        cbr_core::pixels::to_tensor(&img, &p, &mut full);
        full_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let reduced = decode::bytes_to_tensor(bytes, &p, &limits)?;
        reduced_s += t.elapsed().as_secs_f64();
        // In grey levels (the tensor is (pixel - 127) / 128).
        for (a, b) in full.iter().zip(&reduced) {
            let d = (a - b).abs() * 128.0;
            max_diff = max_diff.max(d);
            mean_diff += d as f64;
        }
    }
    let n = files.len() as f64;
    println!(
        "images={} full_ms={:.1} reduced_ms={:.1} speedup={:.2} mean_abs_diff_grey={:.2} max_abs_diff_grey={:.0}",
        files.len(),
        1e3 * full_s / n,
        1e3 * reduced_s / n,
        full_s / reduced_s,
        mean_diff / (n * p.tensor_len() as f64),
        max_diff
    );
    Ok(())
}
