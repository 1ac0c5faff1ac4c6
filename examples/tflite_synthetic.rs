//! Writes a TFLite classifier on a real embedder with a synthetic index, for
//! size and latency measurements at index sizes no image set here has
//! (bench/tflite_block.sh). Rows are pseudo-random non-negative vectors, like
//! pooled ReLU features; `per_class` rows per class.
//!
//!     cargo run --release --example tflite_synthetic -- EMBEDDER.tflite ROWS PER_CLASS float|int8 max|default OUT.tflite

use anyhow::{bail, Context, Result};
use cbr::embedder::EmbedderInfo;
use cbr_core::head::{HeadOptions, RetrievalHead};
use cbr_core::preprocess::{Layout, Preprocess};
use cbr_core::tflite::{self, TfliteOptions};

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        bail!("usage: tflite_synthetic EMBEDDER.tflite ROWS PER_CLASS float|int8 max|default OUT.tflite");
    }
    let embedder = std::fs::read(&a[1]).with_context(|| format!("reading {}", a[1]))?;
    let (rows, per_class): (usize, usize) = (a[2].parse()?, a[3].parse()?);
    let block = a[4].parse()?;
    let opts = match a[5].as_str() {
        "max" => HeadOptions::original(),
        "default" => HeadOptions::default(),
        o => bail!("unknown head {o:?}"),
    };
    // The embedding length is the embedder output's element count.
    let model = tflite::edit::unpack(&embedder)?;
    let sub = &model.subgraphs.as_ref().unwrap()[0];
    let out = &sub.tensors.as_ref().unwrap()[sub.outputs.as_ref().unwrap()[0] as usize];
    let dim = out.shape.as_ref().unwrap()[1..].iter().product::<i32>() as usize;
    // Skewed towards 0, like pooled ReLU features.
    let emb: Vec<f32> = cbr_core::rng::SplitMix64::new(1)
        .uniform_vec(rows * dim, 0.0, 1.0)
        .into_iter()
        .map(|u| u.powi(3) * 4.0)
        .collect();
    let labels: Vec<String> = (0..rows).map(|i| format!("class{:05}", i / per_class)).collect();
    let t = std::time::Instant::now();
    let head = RetrievalHead::new(&emb, dim, &labels, &opts)?;
    let head_s = t.elapsed().as_secs_f64();
    let embedder_info = EmbedderInfo {
        name: a[1].clone(),
        sha256: cbr::cache::sha256_hex(&embedder),
        input: "input".into(),
        output: "embedding".into(),
        dim,
    };
    let preprocess = Preprocess::raw(224, 224, Layout::Nhwc);
    let info = cbr_core::format::classifier_info(&embedder_info, &preprocess, &head, false);
    let t = std::time::Instant::now();
    let bytes = tflite::classifier_bytes(
        &embedder,
        &head,
        &info,
        &TfliteOptions { block, ..Default::default() },
    )?;
    let write_s = t.elapsed().as_secs_f64();
    cbr::cache::write_atomic(std::path::Path::new(&a[6]), &bytes)?;
    println!("rows={rows} classes={} dim={dim} bytes={} operators={} head_s={head_s:.2} write_s={write_s:.2}", head.labels.len(), bytes.len(), tflite::operator_count(&bytes)?);
    Ok(())
}
