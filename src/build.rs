//! Building a classifier: embed the labelled images (decoding in parallel,
//! overlapped with inference), compute the retrieval head, and produce the
//! model file's bytes.
//!
//! One unreadable image never loses the work done on the others: it is
//! reported, skipped and counted (unless `strict`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::classifier::{ClassifierInfo, FORMAT_VERSION, METADATA_KEY};
use crate::dataset::LabelledImage;
use crate::decode::{self, DecodeLimits};
use crate::embedder::Embedder;
use crate::head::{Aggregation, RetrievalHead};
use crate::onnx;

/// Choices for a build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub aggregation: Aggregation,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    pub limits: DecodeLimits,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { aggregation: Aggregation::Max, strict: false, limits: DecodeLimits::default() }
    }
}

/// An image that could not be used, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The embeddings of the images that could be read.
#[derive(Clone, Debug, Default)]
pub struct Embedded {
    /// `labels.len()` rows of `dim` raw embedding values.
    pub embeddings: Vec<f32>,
    pub dim: usize,
    pub labels: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub skipped: Vec<Skipped>,
    /// Wall time of decoding + embedding.
    pub seconds: f64,
}

/// How many images are decoded together before being handed to the embedder.
/// Big enough to keep both cores busy decoding, small enough to bound memory.
const DECODE_CHUNK: usize = 32;

/// Embeds `images`. Decoding runs on the rayon pool one chunk ahead of the
/// embedder, so decode and inference overlap. `progress` is called with the
/// number of images done so far.
pub fn embed_images(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    strict: bool,
    limits: &DecodeLimits,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Embedded> {
    let start = Instant::now();
    let preprocess = embedder.preprocess.clone();
    let per = preprocess.tensor_len();
    let mut out = Embedded { dim: embedder.info.dim, ..Default::default() };
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Result<Vec<f32>, decode::DecodeError>>>(1);
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            for chunk in images.chunks(DECODE_CHUNK) {
                let decoded: Vec<_> = chunk.par_iter().map(|img| decode::load_tensor(&img.path, &preprocess, limits)).collect();
                if tx.send(decoded).is_err() {
                    return; // the consumer stopped (an error): stop decoding too
                }
            }
            drop(tx);
        });
        let mut done = 0;
        let mut batch = Vec::with_capacity(DECODE_CHUNK * per);
        for (chunk, decoded) in images.chunks(DECODE_CHUNK).zip(rx.iter()) {
            batch.clear();
            let mut ok = Vec::with_capacity(chunk.len());
            for (img, result) in chunk.iter().zip(decoded) {
                match result {
                    Ok(t) => {
                        batch.extend_from_slice(&t);
                        ok.push(img);
                    }
                    Err(e) if strict => bail!("{}: {e} (--strict stops at the first unreadable image)", img.path.display()),
                    Err(e) => out.skipped.push(Skipped { path: img.path.clone(), reason: e.to_string() }),
                }
            }
            if !ok.is_empty() {
                let e = embedder.embed(&batch, ok.len())?;
                out.embeddings.extend_from_slice(&e);
                for img in ok {
                    out.labels.push(img.label.clone());
                    out.paths.push(img.path.clone());
                }
            }
            done += chunk.len();
            progress(done);
        }
        Ok(())
    })?;
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// Checks that every class that had images still has at least one usable one.
pub fn check_classes(images: &[LabelledImage], embedded: &Embedded) -> Result<()> {
    let mut wanted: Vec<&str> = images.iter().map(|i| i.label.as_str()).collect();
    wanted.sort();
    wanted.dedup();
    for label in wanted {
        if !embedded.labels.iter().any(|l| l == label) {
            // The caller prints the skip list only after a successful build,
            // so say here why this class's images were skipped.
            let paths: HashSet<&std::path::Path> =
                images.iter().filter(|i| i.label == label).map(|i| i.path.as_path()).collect();
            let skipped: Vec<&Skipped> = embedded.skipped.iter().filter(|s| paths.contains(s.path.as_path())).collect();
            let mut msg = format!("class {label:?} has no readable images: all {} were skipped", skipped.len());
            for s in skipped.iter().take(3) {
                msg.push_str(&format!("\n  {}: {}", s.path.display(), s.reason));
            }
            if skipped.len() > 3 {
                msg.push_str(&format!("\n  ... and {} more", skipped.len() - 3));
            }
            bail!(msg);
        }
    }
    if embedded.labels.is_empty() {
        bail!("no readable images");
    }
    Ok(())
}

/// The complete model file for `head` on top of `embedder`: the embedder's
/// graph, the head, and the metadata, encoded deterministically.
pub fn model_bytes(embedder: &Embedder, head: &RetrievalHead) -> Result<Vec<u8>> {
    let mut model = head.append_to(&embedder.model, &embedder.info.output).context("cannot append the retrieval head")?;
    let info = ClassifierInfo {
        format: FORMAT_VERSION,
        cbr_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: head.labels.clone(),
        images_per_label: head.class_sizes(),
        embedder: embedder.info.clone(),
        preprocess: embedder.preprocess.clone(),
        aggregation: head.aggregation,
    };
    onnx::set_metadata(&mut model, METADATA_KEY, &info.to_json());
    model.producer_name = Some("cbr".into());
    model.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    model.doc_string = Some(format!(
        "Classification-by-retrieval model: {} classes from {} images, embedder {}, aggregation {}. Output `scores` [batch, classes]; labels in metadata key `{METADATA_KEY}`.",
        head.labels.len(),
        head.len(),
        embedder.info.name,
        head.aggregation
    ));
    Ok(onnx::encode(&model))
}

/// What a build did.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub classes: usize,
    pub images: usize,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

/// Embeds `images`, computes the head and returns the model bytes.
pub fn build(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    opts: &BuildOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<u8>, BuildReport)> {
    let embedded = embed_images(embedder, images, opts.strict, &opts.limits, progress)?;
    check_classes(images, &embedded)?;
    let head = RetrievalHead::new(&embedded.embeddings, embedded.dim, &embedded.labels, opts.aggregation)?;
    let bytes = model_bytes(embedder, &head)?;
    let report = BuildReport { classes: head.labels.len(), images: head.len(), skipped: embedded.skipped, seconds: embedded.seconds };
    Ok((bytes, report))
}
