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
use crate::embedder::{Embedder, EmbedderModel};
use crate::head::{HeadOptions, RetrievalHead};
use crate::onnx;

/// Choices for a build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub head: HeadOptions,
    /// Add a mirror image of every index image as an extra row.
    pub augment: bool,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    pub limits: DecodeLimits,
    /// For a TFLite embedder: the retrieval block (float or int8) and the model's name, author etc.
    pub tflite: crate::tflite::TfliteOptions,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            head: HeadOptions::default(),
            augment: false,
            strict: false,
            limits: DecodeLimits::default(),
            tflite: crate::tflite::TfliteOptions::default(),
        }
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
    /// The source image of each row (an index into `paths`).
    pub images: Vec<u32>,
    pub paths: Vec<PathBuf>,
    pub skipped: Vec<Skipped>,
    /// Wall time of decoding + embedding.
    pub seconds: f64,
}

/// How many images are decoded together before being handed to the embedder.
/// Big enough to keep both cores busy decoding, small enough to bound memory.
pub const DECODE_CHUNK: usize = 32;

/// Decodes `paths` chunk by chunk on the rayon pool, one chunk ahead of
/// `consume`, which gets each chunk's index range and per-image results. This
/// overlaps decoding with whatever `consume` does (inference). An error from
/// `consume` stops decoding.
pub fn decode_ahead<P: AsRef<std::path::Path> + Sync>(
    paths: &[P],
    preprocess: &crate::preprocess::Preprocess,
    limits: &DecodeLimits,
    mut consume: impl FnMut(std::ops::Range<usize>, Vec<Result<Vec<f32>, decode::DecodeError>>) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Result<Vec<f32>, decode::DecodeError>>>(1);
    std::thread::scope(|s| -> Result<()> {
        // `move`: the sender must drop when decoding ends, or the loop below never does.
        s.spawn(move || {
            for chunk in paths.chunks(DECODE_CHUNK) {
                let decoded: Vec<_> = chunk.par_iter().map(|p| decode::load_tensor(p, preprocess, limits)).collect();
                if tx.send(decoded).is_err() {
                    return; // the consumer stopped (an error): stop decoding too
                }
            }
        });
        let mut start = 0;
        for decoded in rx.iter() {
            let end = start + decoded.len();
            let result = consume(start..end, decoded);
            if result.is_err() {
                drop(rx); // unblocks and stops the decoder
                return result;
            }
            start = end;
        }
        Ok(())
    })
}

/// Embeds `images`, decoding one chunk ahead of the embedder. `progress` is
/// called with the number of images done so far. With `augment`, each image
/// also gives a row for its mirror image.
pub fn embed_images(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    augment: bool,
    strict: bool,
    limits: &DecodeLimits,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Embedded> {
    let start = Instant::now();
    let preprocess = embedder.preprocess.clone();
    let per = preprocess.tensor_len();
    let mut out = Embedded { dim: embedder.info.dim, ..Default::default() };
    let paths: Vec<&std::path::Path> = images.iter().map(|i| i.path.as_path()).collect();
    let mut batch = Vec::with_capacity(DECODE_CHUNK * per * 2);
    decode_ahead(&paths, &preprocess, limits, |range, decoded| {
        batch.clear();
        let mut ok = Vec::with_capacity(range.len());
        for (img, result) in images[range.clone()].iter().zip(decoded) {
            match result {
                Ok(mut t) => {
                    batch.extend_from_slice(&t);
                    if augment {
                        decode::flip_horizontal(&mut t, &preprocess);
                        batch.extend_from_slice(&t);
                    }
                    ok.push(img);
                }
                Err(e) if strict => bail!("{}: {e} (--strict stops at the first unreadable image)", img.path.display()),
                Err(e) => out.skipped.push(Skipped { path: img.path.clone(), reason: e.to_string() }),
            }
        }
        if !ok.is_empty() {
            let copies = if augment { 2 } else { 1 };
            let e = embedder.embed(&batch, ok.len() * copies)?;
            out.embeddings.extend_from_slice(&e);
            for img in ok {
                let id = out.paths.len() as u32;
                for _ in 0..copies {
                    out.labels.push(img.label.clone());
                    out.images.push(id);
                }
                out.paths.push(img.path.clone());
            }
        }
        progress(range.end);
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
/// graph, the head, and the metadata, encoded deterministically; an ONNX file
/// for an ONNX embedder, a `.tflite` file for a TFLite one.
pub fn model_bytes(embedder: &Embedder, head: &RetrievalHead, augment: bool) -> Result<Vec<u8>> {
    model_bytes_with(embedder, head, augment, &crate::tflite::TfliteOptions::default())
}

/// [`model_bytes`] with the TFLite choices (used when the embedder is a `.tflite`).
pub fn model_bytes_with(embedder: &Embedder, head: &RetrievalHead, augment: bool, tflite: &crate::tflite::TfliteOptions) -> Result<Vec<u8>> {
    let info = ClassifierInfo {
        format: FORMAT_VERSION,
        cbr_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: head.labels.clone(),
        images_per_label: head.class_sizes(),
        embedder: embedder.info.clone(),
        preprocess: embedder.preprocess.clone(),
        aggregation: head.aggregation,
        power: head.power,
        center: head.center.is_some(),
        temperature: head.temperature,
        threshold: head.threshold,
        calibration: head.calibration.clone(),
        augment,
    };
    let graph = match &embedder.model {
        EmbedderModel::Onnx { model, .. } => model,
        // A TFLite embedder gives a TFLite classifier: the same head, appended by the TFLite writer.
        EmbedderModel::Tflite { bytes, .. } => {
            return crate::tflite::classifier_bytes(bytes, head, &info, tflite)
                .context("cannot write the TFLite classifier");
        }
    };
    let mut model = head.append_to(graph, &embedder.info.output).context("cannot append the retrieval head")?;
    onnx::set_metadata(&mut model, METADATA_KEY, &info.to_json());
    model.producer_name = Some("cbr".into());
    model.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    model.doc_string = Some(format!(
        "Classification-by-retrieval model: {} classes from {} index rows, embedder {}, aggregation {}. Output `scores` [batch, classes]; labels in metadata key `{METADATA_KEY}`.",
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
    /// Images used (rows may be more, with augmentation).
    pub images: usize,
    pub calibration: Option<crate::head::calibrate::Calibration>,
    pub threshold: Option<f32>,
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
    let classes = crate::dataset::class_counts(images).len();
    if classes == 1 && opts.head.threshold.is_none() {
        bail!(
            "only one class ({:?}): every image would be that class with the top score. \
             A one-class model needs an explicit --threshold on the cosine similarity \
             (e.g. --threshold 0.5; check values with `cbr classify` on images that are and are not the class)",
            images[0].label
        );
    }
    let embedded = embed_images(embedder, images, opts.augment, opts.strict, &opts.limits, progress)?;
    check_classes(images, &embedded)?;
    let head = RetrievalHead::with_images(&embedded.embeddings, embedded.dim, &embedded.labels, &embedded.images, &opts.head)?;
    let bytes = model_bytes_with(embedder, &head, opts.augment, &opts.tflite)?;
    let report = BuildReport {
        classes: head.labels.len(),
        images: embedded.paths.len(),
        skipped: embedded.skipped,
        seconds: embedded.seconds,
        calibration: head.calibration.clone(),
        threshold: head.threshold,
    };
    Ok((bytes, report))
}
