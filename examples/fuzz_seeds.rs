//! Writes the fuzzing harness's seed corpora (fuzz/, scripts/fuzz.sh): small real classifier
//! files (every rule's head, f32, f16 and int8 rows, on cbr's tiny test embedder, so a mutation
//! reaches the head quickly), their metadata JSON, a CSV manifest and a Parquet shard. The image
//! seeds are the test fixtures' photographs, copied by the script.
//!
//!     cargo run --release --example fuzz_seeds -- fuzz/corpus

use std::path::{Path, PathBuf};

use anyhow::Result;
use cbr_core::format::{self, EmbedderGraph, WriteOptions};
use cbr_core::head::{Aggregation, HeadOptions, ImageId, IndexDtype, RetrievalHead};
use cbr_core::meta::EmbedderInfo;
use cbr_core::preprocess::{Layout, Preprocess};

const DIM: usize = 8;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let info = EmbedderInfo {
        name: "tiny".into(),
        sha256: "0".repeat(64),
        input: "input".into(),
        output: "features".into(),
        dim: DIM,
    };
    let preprocess = Preprocess::raw(2, 2, Layout::Nchw);
    let labels: Vec<String> = (0..6).map(|i| format!("class{}", i / 2)).collect();
    let embeddings = cbr_core::rng::SplitMix64::new(5).uniform_vec(6 * DIM, 0.0, 4.0);
    let embedder = cbr::testing::tiny_onnx_embedder(DIM, 17, 7);
    for aggregation in Aggregation::ALL {
        for dtype in IndexDtype::ALL {
            let opts = HeadOptions { aggregation, index_dtype: dtype, ..HeadOptions::default() };
            let head = RetrievalHead::new(&embeddings, DIM, &labels, &opts)?;
            let bytes = format::write_classifier(
                EmbedderGraph::Onnx(&embedder),
                &info,
                &preprocess,
                head,
                &WriteOptions::default(),
            )?;
            let name = format!("{}-{dtype}.onnx", aggregation.name());
            write(&out.join("model_read"), &name, &bytes)?;
            write(&out.join("model_edit"), &name, &bytes)?;
            let json = format::read(&bytes)?.info.to_json();
            write(&out.join("metadata_json"), &format!("{name}.json"), json.as_bytes())?;
        }
    }
    write(&out.join("csv_manifest"), "m.csv", b"path,label\na.jpg,cat\n\"a.jpg\", dog \n")?;
    // A shard of the same embeddings, as `cbr embed` writes one.
    let embedded = cbr::pipeline::Embedded {
        embeddings: embeddings.clone(),
        dim: DIM,
        labels: labels.clone(),
        images: (0..6).collect(),
        paths: (0..6).map(|i| PathBuf::from(format!("{i}.jpg"))).collect(),
        ids: (0..6).map(ImageId::from_index).collect(),
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    let shard = dir.path().join("s.parquet");
    cbr::shard::write(&shard, &embedded, &info, &preprocess, "0/1".parse()?)?;
    write(&out.join("parquet_shard"), "s.parquet", &std::fs::read(&shard)?)?;
    println!("seeds in {}", out.display());
    Ok(())
}
