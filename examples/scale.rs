//! The scale benchmark's Rust side (driven by bench/scale.sh): makes the
//! synthetic vectors, and times cbr's own search (exact and IVF) and the
//! exported ONNX head in ONNX Runtime on them. Prints one JSON object per
//! measurement on stdout.
//!
//!   cargo run --release --example scale -- gen --dir D --n N --clusters C --queries Q
//!   cargo run --release --example scale -- search --dir D --singles S --batch B [--ivf]
//!   cargo run --release --example scale -- onnx --dir D --classes C1,C2 --singles S --batch B
//!   cargo run --release --example scale -- shards --dir D --classes C --parts P --out PARTS

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use cbr::search::synthetic::Clusters;
use cbr::search::{FlatIndex, Hit, IvfIndex, IvfParams};
use cbr_cli::serve::lru;
use cbr_core::head::{HeadOptions, ImageId, Index, IndexDtype, RetrievalHead, SCORES};
use cbr_core::onnx::{self, node, value_info, DataType, Dim, ModelProto, OperatorSetIdProto};
use clap::{Parser, Subcommand};
use ort::session::{OutputSelector, RunOptions};
use ort::value::TensorRef;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write rows.f32, classes.u32, queries.f32 (raw little-endian) and meta.json into --dir.
    Gen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 1280)]
        dim: usize,
        #[arg(long)]
        clusters: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
    },
    /// Time FlatIndex (and with --ivf the IVF index) on the vectors in --dir.
    Search {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        singles: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        ivf: bool,
        /// Cells probed per query, one measurement each (0 = the index default).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        nprobe: Vec<usize>,
        /// IVF cells (0 = the default, √N).
        #[arg(long, default_value_t = 0)]
        lists: usize,
        /// IVF training rows per cell (0 = the default).
        #[arg(long, default_value_t = 0)]
        train_per_list: usize,
    },
    /// Time the exported ONNX head built from the rows in --dir, for each class count.
    Onnx {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_delimiter = ',')]
        classes: Vec<usize>,
        #[arg(long, default_value_t = 50)]
        singles: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// How the index rows are stored (f32, f16, int8).
        #[arg(long, default_value = "f32")]
        dtype: IndexDtype,
    },
    /// Write the rows in --dir as `cbr embed` shards of the default embedder
    /// (C contiguous classes, one made-up path per row), for timing
    /// `cbr build --embeddings` on them.
    Shards {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        classes: usize,
        #[arg(long, default_value_t = 8)]
        parts: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

struct Vectors {
    n: usize,
    dim: usize,
    rows: Vec<f32>,
    classes: Vec<u32>,
    queries: Vec<f32>,
}

fn write_raw(path: &Path, words: impl Iterator<Item = [u8; 4]>) -> Result<()> {
    cbr::cache::write_atomic_with(path, |w| {
        for b in words {
            w.write_all(&b)?;
        }
        Ok(())
    })
}

/// Reads a file of little-endian 4-byte words, converting in chunks (the
/// vector files are up to 5 GB: no second copy of them).
fn read_words<T>(path: &Path, convert: impl Fn([u8; 4]) -> T) -> Result<Vec<T>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len() as usize;
    if !len.is_multiple_of(4) {
        bail!("{} is not whole 4-byte words", path.display());
    }
    let mut out = Vec::with_capacity(len / 4);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let take = left.min(buf.len());
        f.read_exact(&mut buf[..take])
            .with_context(|| format!("cannot read {}", path.display()))?;
        out.extend(buf[..take].chunks_exact(4).map(|c| convert(c.try_into().expect("4 bytes"))));
        left -= take;
    }
    Ok(out)
}

/// Rows and dimension from `dir/meta.json`.
fn shape(dir: &Path) -> Result<(usize, usize)> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("meta.json")).context("meta.json (run `gen` first)")?,
    )?;
    let n = meta["n"].as_u64().ok_or_else(|| anyhow!("meta.json: no n"))? as usize;
    let dim = meta["dim"].as_u64().ok_or_else(|| anyhow!("meta.json: no dim"))? as usize;
    Ok((n, dim))
}

/// The rows of `dir/rows.f32` as a `dtype` index in `classes` contiguous
/// classes, read 8192 rows at a time.
fn read_index(
    dir: &Path,
    n: usize,
    dim: usize,
    classes: usize,
    dtype: IndexDtype,
) -> Result<Index> {
    let path = dir.join("rows.f32");
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    if f.metadata()?.len() != (n * dim * 4) as u64 {
        bail!("{} does not hold {n} rows of {dim}", path.display());
    }
    let mut index = Index::empty(dim, dtype);
    index.reserve(n);
    let mut bytes = vec![0u8; 8192 * dim * 4];
    let mut start = 0;
    while start < n {
        let rows = (n - start).min(8192);
        let bytes = &mut bytes[..rows * dim * 4];
        f.read_exact(bytes).with_context(|| format!("cannot read {}", path.display()))?;
        let block: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let labels: Vec<String> =
            (start..start + rows).map(|i| format!("c{:06}", i * classes / n)).collect();
        let ids: Vec<ImageId> =
            (start..start + rows).map(|i| ImageId::from_index(i as u32)).collect();
        index.push_embeddings(&block, &labels, &ids, None)?;
        start += rows;
    }
    Ok(index)
}

fn load(dir: &Path) -> Result<Vectors> {
    let (n, dim) = shape(dir)?;
    let rows = read_words(&dir.join("rows.f32"), f32::from_le_bytes)?;
    let classes = read_words(&dir.join("classes.u32"), u32::from_le_bytes)?;
    let queries = read_words(&dir.join("queries.f32"), f32::from_le_bytes)?;
    if rows.len() != n * dim || classes.len() != n || queries.len() % dim != 0 {
        bail!("the files in {} do not match meta.json", dir.display());
    }
    Ok(Vectors { n, dim, rows, classes, queries })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median single-query latency (ms) after two warm-up queries.
fn time_singles(
    queries: &[f32],
    dim: usize,
    count: usize,
    mut run: impl FnMut(&[f32]) -> Result<()>,
) -> Result<f64> {
    let qs: Vec<&[f32]> = queries.chunks_exact(dim).collect();
    for q in qs.iter().take(2) {
        run(q)?;
    }
    let mut t = Vec::new();
    for q in qs.iter().cycle().take(count) {
        let start = Instant::now();
        run(q)?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(t))
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Gen { dir, n, dim, clusters, queries } => {
            std::fs::create_dir_all(&dir)?;
            let g = Clusters { dim, clusters, spread: 1.0, seed: 42 };
            let start = Instant::now();
            let (rows, classes) = g.sample(n, 0);
            let (q, _) = g.sample(queries, 1);
            let gen_s = start.elapsed().as_secs_f64();
            write_raw(&dir.join("rows.f32"), rows.iter().map(|x| x.to_le_bytes()))?;
            write_raw(&dir.join("classes.u32"), classes.iter().map(|x| x.to_le_bytes()))?;
            write_raw(&dir.join("queries.f32"), q.iter().map(|x| x.to_le_bytes()))?;
            std::fs::write(
                dir.join("meta.json"),
                json!({"n": n, "dim": dim, "clusters": clusters, "queries": queries}).to_string(),
            )?;
            println!(
                "{}",
                json!({"what": "gen", "n": n, "dim": dim, "clusters": clusters, "seconds": gen_s})
            );
        }
        Cmd::Search { dir, singles, batch, k, ivf, nprobe, lists, train_per_list } => {
            let v = load(&dir)?;
            let (n, dim) = (v.n, v.dim);
            let batch_q = &v.queries[..batch.min(v.queries.len() / dim) * dim];
            let nb = batch_q.len() / dim;
            let flat = FlatIndex::new(v.rows, dim)?;
            let single_ms = time_singles(&v.queries, dim, singles, |q| {
                std::hint::black_box(flat.search(q, k));
                Ok(())
            })?;
            let start = Instant::now();
            let exact = flat.search_batch(batch_q, k);
            let batch_s = start.elapsed().as_secs_f64();
            // Agreement with FAISS's top-1 (written by bench/scale_faiss.py), if present.
            let faiss_top1 = match read_words(&dir.join("faiss_top1.u32"), u32::from_le_bytes) {
                Ok(ids) => {
                    let same = ids
                        .iter()
                        .zip(&exact)
                        .filter(|(f, e)| e.first().map(|h| h.row) == Some(**f))
                        .count();
                    Some(same as f64 / ids.len().min(exact.len()).max(1) as f64)
                }
                Err(_) => None,
            };
            println!(
                "{}",
                json!({"what": "cbr-flat", "n": n, "dim": dim, "k": k, "single_ms": single_ms, "batch": nb,
                       "batch_qps": nb as f64 / batch_s, "top1_agrees_with_faiss": faiss_top1})
            );
            if ivf {
                let rows = flat.into_rows();
                let start = Instant::now();
                let mut params = IvfParams { lists, ..IvfParams::default() };
                if train_per_list > 0 {
                    params.train_per_list = train_per_list;
                }
                let index = IvfIndex::build(&rows, dim, &v.classes, &params)?;
                let build_s = start.elapsed().as_secs_f64();
                drop(rows);
                // Ids in `exact` are build-order rows, as are the IVF's.
                let exact_ids: Vec<Option<u32>> =
                    exact.iter().map(|h| h.first().map(|h: &Hit| h.row)).collect();
                for &probe in &nprobe {
                    let probe = if probe == 0 { index.nprobe } else { probe };
                    let single_ms = time_singles(&v.queries, dim, singles.max(200), |q| {
                        std::hint::black_box(index.search(q, k, probe));
                        Ok(())
                    })?;
                    let start = Instant::now();
                    let approx = index.search_batch(batch_q, k, probe);
                    let batch_s = start.elapsed().as_secs_f64();
                    let same = approx
                        .iter()
                        .zip(&exact_ids)
                        .filter(|(a, e)| a.first().map(|h| h.row) == **e)
                        .count();
                    println!(
                        "{}",
                        json!({"what": "cbr-ivf", "n": n, "dim": dim, "k": k, "lists": index.lists(), "nprobe": probe, "default_nprobe": probe == index.nprobe,
                               "build_s": build_s, "single_ms": single_ms, "batch": nb, "batch_qps": nb as f64 / batch_s,
                               "recall_at_1": same as f64 / nb as f64})
                    );
                }
                let path = dir.join("index.ivf");
                let start = Instant::now();
                index.save(&path)?;
                let save_s = start.elapsed().as_secs_f64();
                let size = std::fs::metadata(&path)?.len();
                drop(index);
                let start = Instant::now();
                let loaded = IvfIndex::load(&path)?;
                let load_s = start.elapsed().as_secs_f64();
                drop(loaded);
                std::fs::remove_file(&path)?;
                println!(
                    "{}",
                    json!({"what": "cbr-ivf-file", "n": n, "file_bytes": size, "save_s": save_s, "load_s": load_s})
                );
            }
        }
        Cmd::Shards { dir, classes, parts, out } => {
            let (n, dim) = shape(&dir)?;
            let embedder = cbr::models::open_embedder(&Default::default())?;
            if embedder.info.dim != dim {
                bail!(
                    "the rows are {dim}-d, the default embedder's embeddings {}-d",
                    embedder.info.dim
                );
            }
            std::fs::create_dir_all(&out)?;
            let mut f = std::fs::File::open(dir.join("rows.f32"))?;
            for part in 0..parts {
                let (a, b) = (part * n / parts, (part + 1) * n / parts);
                let mut bytes = vec![0u8; (b - a) * dim * 4];
                f.read_exact(&mut bytes)?;
                let label = |i: usize| format!("c{:06}", i * classes / n);
                let embedded = cbr::pipeline::Embedded {
                    embeddings: bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                    dim,
                    labels: (a..b).map(label).collect(),
                    images: (0..(b - a) as u32).collect(),
                    paths: (a..b)
                        .map(|i| PathBuf::from(format!("{}/{i:07}.jpg", label(i))))
                        .collect(),
                    ids: (a..b).map(|i| ImageId::from_index(i as u32)).collect(),
                    ..Default::default()
                };
                let shard = cbr::shard::Shard { index: part, count: parts };
                let path = out.join(format!("part-{part}.parquet"));
                cbr::shard::write(&path, &embedded, &embedder.info, &embedder.preprocess, shard)?;
            }
            println!("{}", json!({"what": "shards", "n": n, "classes": classes, "parts": parts}));
        }
        Cmd::Onnx { dir, classes, singles, batch, dtype } => {
            cbr::runtime::onnxruntime::install()?;
            // Where the memory goes (docs/scale.md "Known limits"): the peak resident memory of
            // each phase, and what stays resident after it.
            let mut phases = serde_json::Map::new();
            lru::reset_peak_resident();
            let (n, dim) = shape(&dir)?;
            let queries = read_words(&dir.join("queries.f32"), f32::from_le_bytes)?;
            for &c in &classes {
                if c > n {
                    bail!("{c} classes need at least {c} rows");
                }
                let per_value = match dtype {
                    IndexDtype::F32 => 4,
                    IndexDtype::F16 => 2,
                    IndexDtype::Int8 => 1,
                };
                let weight_bytes = (n * dim * per_value) as u64;
                if weight_bytes >= (2u64 << 30) - (64 << 20) {
                    println!(
                        "{}",
                        json!({"what": "onnx-head", "n": n, "classes": c, "dtype": dtype.name(), "skipped": format!("{dtype} index weights exceed the 2 GB protobuf limit of one ONNX file")})
                    );
                    continue;
                }
                // Contiguous classes (row i in class i·c/n), so the rows are in
                // canonical order and the head need not copy them to sort.
                // The rows are read a block at a time into the index, as a
                // build from embedding shards does: no f32 copy of all of them.
                let opts = HeadOptions { index_dtype: dtype, ..HeadOptions::original() };
                let index = read_index(&dir, n, dim, c, dtype)?;
                phase(&mut phases, "read rows into the index");
                let head = RetrievalHead::from_index(index, &opts)?;
                phase(&mut phases, "head");
                let embedder = passthrough(dim);
                let model = head.append_to(&embedder, "features")?;
                let ops = model.graph.as_ref().map_or(0, |g| g.node.len()) - 1;
                drop(head);
                phase(&mut phases, "graph");
                let bytes = onnx::encode(&model);
                drop(model);
                phase(&mut phases, "encode");
                let path = dir.join("head.onnx");
                cbr::cache::write_atomic(&path, &bytes)?;
                let size = bytes.len();
                drop(bytes);
                phase(&mut phases, "write");
                // Loaded twice: from the file's bytes (as `Classifier::from_bytes` and a
                // server's upload do), then by ONNX Runtime from the path (as `Classifier::open`).
                let start = Instant::now();
                let file = std::fs::read(&path)?;
                let session = cbr::runtime::onnxruntime::session_from_bytes(
                    &file,
                    cbr::runtime::onnxruntime::SessionMemory::Arena,
                )?;
                let load_bytes_s = start.elapsed().as_secs_f64();
                drop(file);
                drop(session);
                lru::release_free_memory();
                phase(&mut phases, "load in ONNX Runtime from bytes");
                let start = Instant::now();
                let mut session = cbr::runtime::onnxruntime::session_from_file(
                    &path,
                    cbr::runtime::onnxruntime::SessionMemory::Arena,
                )?;
                let load_s = start.elapsed().as_secs_f64();
                phase(&mut phases, "load in ONNX Runtime from the file");
                let options =
                    RunOptions::new()?.with_outputs(OutputSelector::no_default().with(SCORES));
                let mut run = |q: &[f32], b: usize| -> Result<()> {
                    let t = TensorRef::from_array_view(([b, dim], q))?;
                    let out = session.run_with_options(ort::inputs!["input" => t], &options)?;
                    std::hint::black_box(out[SCORES].try_extract_tensor::<f32>()?);
                    Ok(())
                };
                let single_ms = time_singles(&queries, dim, singles, |q| run(q, 1))?;
                let nb = batch.min(queries.len() / dim);
                let batch_q = &queries[..nb * dim];
                run(&batch_q[..dim * nb.min(8)], nb.min(8))?;
                let start = Instant::now();
                run(batch_q, nb)?;
                let batch_s = start.elapsed().as_secs_f64();
                phase(&mut phases, "classify");
                drop(session);
                std::fs::remove_file(&path)?;
                println!(
                    "{}",
                    json!({"what": "onnx-head", "n": n, "classes": c, "dtype": dtype.name(), "ops": ops, "file_bytes": size, "load_s": load_s, "load_from_bytes_s": load_bytes_s,
                           "single_ms": single_ms, "batch": nb, "batch_qps": nb as f64 / batch_s, "memory": phases.clone()})
                );
            }
        }
    }
    Ok(())
}

/// Records the peak resident memory since the last phase, and what is resident now.
fn phase(phases: &mut serde_json::Map<String, serde_json::Value>, name: &str) {
    let (peak, now) = (lru::peak_resident_bytes(), lru::resident_bytes());
    phases.insert(name.into(), json!({"peak_mb": peak >> 20, "after_mb": now >> 20}));
    lru::reset_peak_resident();
}

/// An "embedder" that passes its input through: input [batch, dim] → features.
fn passthrough(dim: usize) -> ModelProto {
    let mut g = onnx::GraphProto { name: Some("passthrough".into()), ..Default::default() };
    g.input.push(value_info(
        "input",
        DataType::Float,
        &[Dim::Symbolic("batch".into()), Dim::Fixed(dim as i64)],
    ));
    g.node.push(node("Identity", "features", &["input"], &["features"], vec![]));
    g.output.push(value_info(
        "features",
        DataType::Float,
        &[Dim::Symbolic("batch".into()), Dim::Fixed(dim as i64)],
    ));
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(g),
        ..Default::default()
    }
}
