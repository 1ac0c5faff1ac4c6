//! Head fit + file write, natively, in-process: what `cbr build --embeddings` spends after
//! reading the shards (the head with its rule, calibration and unknown entry, then the ONNX
//! file), timed over repeats, for bench/wasm_build.sh to set beside the WebAssembly build.
//!
//! `cargo run --release --example head_speed -- 'parts/*.parquet' EMBEDDER.onnx [REPEATS]`
//! prints one JSON line: {rows, classes, bytes, ms: [..], median_ms, sha256}.

use std::time::Instant;

use cbr_core::build::{head_from_index, BuildRequest};
use cbr_core::format::{write_classifier, EmbedderGraph, WriteOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (pattern, embedder) = match &args[..] {
        [p, e, ..] => (p.clone(), e.clone()),
        _ => anyhow::bail!("usage: head_speed 'parts/*.parquet' EMBEDDER.onnx [REPEATS]"),
    };
    let repeats: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let request = BuildRequest::default();
    let head_opts = request.head_options();
    let shards = cbr::shard::expand(&[pattern])?;
    let (info, preprocess, _, index) =
        cbr::shard::read_index(&shards, head_opts.power_exponent(), head_opts.index_dtype)?;
    let graph = cbr_core::onnx::decode(&std::fs::read(&embedder)?)?;
    let mut ms = Vec::new();
    let mut bytes = Vec::new();
    let mut classes = 0;
    for _ in 0..repeats {
        let start = Instant::now();
        let head = head_from_index(index.clone(), &head_opts, &info.name)?;
        classes = head.labels.len();
        let options = WriteOptions { tflite: request.tflite_options(), ..WriteOptions::default() };
        bytes = write_classifier(EmbedderGraph::Onnx(&graph), &info, &preprocess, head, &options)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "rows": index.len(), "classes": classes, "bytes": bytes.len(), "ms": ms,
            "median_ms": sorted[sorted.len() / 2], "sha256": cbr_core::digest::sha256_hex(&bytes),
        })
    );
    Ok(())
}
