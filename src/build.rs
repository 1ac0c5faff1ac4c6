//! Building a classifier: embed the labelled images (decoding in parallel,
//! overlapped with inference), compute the retrieval head, and produce the
//! model file's bytes.
//!
//! One unreadable image never loses the work done on the others: it is
//! reported, skipped and counted (unless `strict`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::classifier::{ClassifierInfo, FORMAT_VERSION, METADATA_KEY};
use crate::dataset::LabelledImage;
use crate::decode::{self, DecodeLimits};
use crate::embedder::{Embedder, EmbedderInfo, EmbedderModel};
use crate::embedding_cache::{EmbeddingCache, Variant};
use crate::head::{HeadOptions, ImageId, Index, RetrievalHead};
use crate::models::EmbedderChoice;
use crate::onnx;
use crate::preprocess::Preprocess;
use crate::search::{IvfIndex, IvfParams};
use crate::sidecar::{self, IndexChoice, IndexInfo};

/// Choices for a build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub head: HeadOptions,
    /// Add a mirror image of every index image as an extra row.
    pub augment: bool,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    pub limits: DecodeLimits,
    /// Reuse and keep embeddings in cbr's [`EmbeddingCache`].
    pub cache: bool,
    /// For a TFLite embedder: the retrieval block (float or int8) and the model's name, author etc.
    pub tflite: crate::tflite::TfliteOptions,
    /// Index rows in the model, or in a sidecar approximate index.
    pub index: IndexChoice,
    /// The sidecar index's parameters, when there is one.
    pub ivf: IvfParams,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            head: HeadOptions::default(),
            augment: false,
            strict: false,
            limits: DecodeLimits::default(),
            cache: true,
            tflite: crate::tflite::TfliteOptions::default(),
            index: IndexChoice::Auto,
            ivf: IvfParams::default(),
        }
    }
}

/// The file format of a classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelFormat {
    Onnx,
    Tflite,
}

impl ModelFormat {
    /// The format an output path asks for: `.tflite` (any case) is TFLite, anything else ONNX.
    pub fn from_output_path(path: &Path) -> ModelFormat {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tflite")) {
            ModelFormat::Tflite
        } else {
            ModelFormat::Onnx
        }
    }

    /// The format of the classifiers `embedder` gives: its own.
    pub fn of_embedder(embedder: &Embedder) -> ModelFormat {
        match embedder.model {
            EmbedderModel::Onnx { .. } => ModelFormat::Onnx,
            EmbedderModel::Tflite { .. } => ModelFormat::Tflite,
        }
    }
}

/// Refuses TFLite-only choices (block arithmetic, Model Metadata) for another format.
pub fn check_format_options(
    format: ModelFormat,
    tflite: &crate::tflite::TfliteOptions,
) -> Result<()> {
    if format != ModelFormat::Tflite && *tflite != crate::tflite::TfliteOptions::default() {
        bail!(
            "--tflite-block, --name, --description, --author, --model-version and --license apply \
             to TFLite output: use -o NAME.tflite or --format tflite"
        );
    }
    Ok(())
}

/// Opens the embedder for a classifier in `format`: a classifier is written in its embedder's
/// format, so a known model is opened as its TFLite twin for TFLite, and an embedder file in the
/// other format is refused.
pub fn open_embedder_for(choice: &EmbedderChoice, format: ModelFormat) -> Result<Embedder> {
    let choice = EmbedderChoice { tflite: format == ModelFormat::Tflite, ..choice.clone() };
    let embedder = crate::models::open_embedder(&choice)?;
    let has = ModelFormat::of_embedder(&embedder);
    if has != format {
        let (want, has_name, flag) = match has {
            ModelFormat::Tflite => ("ONNX", "a .tflite", "tflite"),
            ModelFormat::Onnx => ("TFLite", "an ONNX", "onnx"),
        };
        bail!(
            "a {want} classifier cannot be built on {has_name} embedder ({}): give an embedder in \
             the same format, a known model name, or --format {flag}",
            embedder.info.name,
        );
    }
    Ok(embedder)
}

/// A built model: the model file's bytes and, for big indexes, the sidecar
/// index that goes beside it ([`crate::sidecar`]).
pub struct Built {
    pub model: Vec<u8>,
    pub index: Option<IvfIndex>,
}

impl Built {
    /// Writes the model to `path` (and its index to [`sidecar::index_path`]),
    /// each atomically; the index first, so a model never names a missing index.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        if let Some(index) = &self.index {
            index.save(&sidecar::index_path(path))?;
        }
        crate::cache::write_atomic(path, &self.model)
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
    /// The content id of each image in `paths`.
    pub ids: Vec<ImageId>,
    pub skipped: Vec<Skipped>,
    /// Images whose embeddings came from the cache.
    pub cached: usize,
    /// Wall time of decoding + embedding.
    pub seconds: f64,
}

impl Embedded {
    /// The index rows of these embeddings, as `opts` store them.
    pub fn index(&self, opts: &HeadOptions) -> Result<Index> {
        let ids: Vec<ImageId> = self.images.iter().map(|&i| self.ids[i as usize]).collect();
        let power = if opts.power != 1.0 { Some(opts.power) } else { None };
        Index::from_embeddings(
            &self.embeddings,
            self.dim,
            &self.labels,
            &ids,
            power,
            opts.index_dtype,
        )
    }
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
    mut consume: impl FnMut(
        std::ops::Range<usize>,
        Vec<Result<Vec<f32>, decode::DecodeError>>,
    ) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Result<Vec<f32>, decode::DecodeError>>>(1);
    std::thread::scope(|s| -> Result<()> {
        // `move`: the sender must drop when decoding ends, or the loop below never does.
        s.spawn(move || {
            for chunk in paths.chunks(DECODE_CHUNK) {
                let decoded: Vec<_> =
                    chunk.par_iter().map(|p| decode::load_tensor(p, preprocess, limits)).collect();
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
///
/// Every file is hashed first: an image whose content already appeared in
/// the same class is skipped as a duplicate, and with `opts.cache` images
/// embedded before (by this embedder) come from the [`EmbeddingCache`]; new
/// embeddings are added to it chunk by chunk, so a killed build loses at most
/// one chunk of work.
///
/// Images whose (label, content) is in `known` (already in a model being
/// extended) are skipped too.
pub fn embed_images(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    opts: &BuildOptions,
    known: &HashSet<(String, ImageId)>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Embedded> {
    let start = Instant::now();
    let preprocess = embedder.preprocess.clone();
    let dim = embedder.info.dim;
    let variants: &[Variant] =
        if opts.augment { &[Variant::Original, Variant::Mirrored] } else { &[Variant::Original] };
    let mut out = Embedded { dim, ..Default::default() };

    // 1. Identify every image by its content, and check what can be checked
    // without decoding, so an image from the cache passes the same checks.
    let ids: Vec<Result<ImageId, decode::DecodeError>> = images
        .par_iter()
        .map(|img| {
            let bytes = decode::read_limited(&img.path, &opts.limits)?;
            decode::check_header(&bytes, &opts.limits)?;
            Ok(ImageId::of_bytes(&bytes))
        })
        .collect();
    let mut first_seen: std::collections::HashMap<(&str, ImageId), &std::path::Path> =
        Default::default();
    // Images to use, in input order, with their embeddings once known.
    let mut kept: Vec<(usize, ImageId, Option<Vec<f32>>)> = Vec::new();
    for (i, (img, id)) in images.iter().zip(ids).enumerate() {
        match id {
            Err(e) if opts.strict => {
                bail!("{}: {e} (--strict stops at the first unreadable image)", img.path.display())
            }
            Err(e) => out.skipped.push(Skipped { path: img.path.clone(), reason: e.to_string() }),
            Ok(id) if known.contains(&(img.label.clone(), id)) => out.skipped.push(Skipped {
                path: img.path.clone(),
                reason: format!("already in the model (class {:?})", img.label),
            }),
            Ok(id) => match first_seen.entry((img.label.as_str(), id)) {
                std::collections::hash_map::Entry::Occupied(e) => out.skipped.push(Skipped {
                    path: img.path.clone(),
                    reason: format!(
                        "same content as {} (class {:?})",
                        e.get().display(),
                        img.label
                    ),
                }),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(&img.path);
                    kept.push((i, id, None));
                }
            },
        }
    }

    // 2. Take what the cache has.
    let mut cache = if opts.cache {
        Some(EmbeddingCache::for_embedder(&embedder.info, &preprocess)?)
    } else {
        None
    };
    if let Some(cache) = &cache {
        for (_, id, found) in kept.iter_mut() {
            let parts: Option<Vec<Vec<f32>>> = variants.iter().map(|&v| cache.get(id, v)).collect();
            *found = parts.map(|p| p.concat());
        }
    }
    out.cached = kept.iter().filter(|k| k.2.is_some()).count();
    let done_before = images.len() - kept.len() + out.cached;
    progress(done_before);

    // 3. Decode and embed the rest, a chunk at a time.
    let todo: Vec<usize> = (0..kept.len()).filter(|&k| kept[k].2.is_none()).collect();
    let paths: Vec<&std::path::Path> =
        todo.iter().map(|&k| images[kept[k].0].path.as_path()).collect();
    let per = preprocess.tensor_len();
    let mut batch = Vec::with_capacity(DECODE_CHUNK * per * variants.len());
    let mut failed = vec![false; kept.len()];
    decode_ahead(&paths, &preprocess, &opts.limits, |range, decoded| {
        batch.clear();
        let mut ok = Vec::with_capacity(range.len());
        for (&k, result) in todo[range.clone()].iter().zip(decoded) {
            let img = &images[kept[k].0];
            match result {
                Ok(mut t) => {
                    batch.extend_from_slice(&t);
                    if opts.augment {
                        decode::flip_horizontal(&mut t, &preprocess);
                        batch.extend_from_slice(&t);
                    }
                    ok.push(k);
                }
                Err(e) if opts.strict => bail!(
                    "{}: {e} (--strict stops at the first unreadable image)",
                    img.path.display()
                ),
                Err(e) => {
                    out.skipped.push(Skipped { path: img.path.clone(), reason: e.to_string() });
                    failed[k] = true;
                }
            }
        }
        if !ok.is_empty() {
            let e = embedder.embed(&batch, ok.len() * variants.len())?;
            let per_image = dim * variants.len();
            if let Some(cache) = cache.as_mut() {
                let mut entries: Vec<(ImageId, Variant, &[f32])> =
                    Vec::with_capacity(ok.len() * variants.len());
                for (j, &k) in ok.iter().enumerate() {
                    for (v, &variant) in variants.iter().enumerate() {
                        let at = j * per_image + v * dim;
                        entries.push((kept[k].1, variant, &e[at..at + dim]));
                    }
                }
                // A cache that cannot be written only costs speed.
                if let Err(err) = cache.put(&entries) {
                    eprintln!("warning: {err:#}; continuing without the embedding cache");
                }
            }
            for (j, &k) in ok.iter().enumerate() {
                kept[k].2 = Some(e[j * per_image..(j + 1) * per_image].to_vec());
            }
        }
        progress(done_before + range.end);
        Ok(())
    })?;

    // 4. Rows in input order.
    for (k, (i, id, found)) in kept.into_iter().enumerate() {
        if failed[k] {
            continue;
        }
        let e = found.expect("every kept image was embedded or failed");
        let image = out.paths.len() as u32;
        out.embeddings.extend_from_slice(&e);
        for _ in variants {
            out.labels.push(images[i].label.clone());
            out.images.push(image);
        }
        out.paths.push(images[i].path.clone());
        out.ids.push(id);
    }
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
            let skipped: Vec<&Skipped> =
                embedded.skipped.iter().filter(|s| paths.contains(s.path.as_path())).collect();
            let mut msg = format!(
                "class {label:?} has no readable images: all {} were skipped",
                skipped.len()
            );
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
pub fn model_bytes_with(
    embedder: &Embedder,
    head: &RetrievalHead,
    augment: bool,
    tflite: &crate::tflite::TfliteOptions,
) -> Result<Vec<u8>> {
    match &embedder.model {
        EmbedderModel::Onnx { model, .. } => {
            model_bytes_for(model, &embedder.info, &embedder.preprocess, head, augment)
        }
        // A TFLite embedder gives a TFLite classifier: the same head, appended by the TFLite writer.
        EmbedderModel::Tflite { bytes, .. } => {
            let info = classifier_info(&embedder.info, &embedder.preprocess, head, augment);
            crate::tflite::classifier_bytes(bytes, head, &info, tflite)
                .context("cannot write the TFLite classifier")
        }
    }
}

/// What a model built from `head` on this embedder says about itself (the
/// `cbr` metadata of its ONNX or TFLite file).
pub fn classifier_info(
    embedder_info: &EmbedderInfo,
    preprocess: &Preprocess,
    head: &RetrievalHead,
    augment: bool,
) -> ClassifierInfo {
    ClassifierInfo {
        format: FORMAT_VERSION,
        cbr_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: head.labels.clone(),
        images_per_label: head.class_sizes(),
        embedder: embedder_info.clone(),
        preprocess: preprocess.clone(),
        aggregation: head.aggregation,
        power: head.power,
        center: head.center.is_some(),
        temperature: head.temperature,
        threshold: head.threshold,
        calibration: head.calibration.clone(),
        augment,
        head_options: Some(head.options.clone()),
        index: None,
    }
}

/// The ONNX model file for `head` on an ONNX embedder graph, without a loaded
/// embedder (edits that embed nothing need no runtime).
pub fn model_bytes_for(
    embedder: &onnx::ModelProto,
    embedder_info: &EmbedderInfo,
    preprocess: &Preprocess,
    head: &RetrievalHead,
    augment: bool,
) -> Result<Vec<u8>> {
    model_file_bytes(embedder, embedder_info, preprocess, head, augment, false)
}

/// [`model_bytes_for`]; with `sidecar`, the embedder-only model that goes
/// with a sidecar index of the head's rows ([`crate::sidecar`]).
pub fn model_file_bytes(
    embedder: &onnx::ModelProto,
    embedder_info: &EmbedderInfo,
    preprocess: &Preprocess,
    head: &RetrievalHead,
    augment: bool,
    sidecar: bool,
) -> Result<Vec<u8>> {
    let mut model = if sidecar {
        sidecar::embedding_model(embedder, &embedder_info.output, head.dim)?
    } else {
        head.append_to(embedder, &embedder_info.output)
            .context("cannot append the retrieval head")?
    };
    let mut info = classifier_info(embedder_info, preprocess, head, augment);
    info.index =
        sidecar.then(|| IndexInfo { rows: head.len(), dim: head.dim, mean: head.center.clone() });
    onnx::set_metadata(&mut model, METADATA_KEY, &info.to_json());
    model.producer_name = Some("cbr".into());
    model.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    model.doc_string = Some(format!(
        "Classification-by-retrieval model: {} classes from {} index rows, embedder {}, aggregation {}. Output `scores` [batch, classes]; labels in metadata key `{METADATA_KEY}`.",
        head.labels.len(),
        head.len(),
        embedder_info.name,
        head.aggregation
    ));
    Ok(onnx::encode(&model))
}

/// Refuses a one-class model without an explicit threshold: every image
/// would be that class.
pub fn check_class_count(classes: usize, label: &str, opts: &HeadOptions) -> Result<()> {
    if classes == 0 {
        bail!("no classes: a classifier needs at least one labelled image");
    }
    if classes == 1 && opts.threshold.is_none() {
        bail!(
            "only one class ({label:?}): every image would be that class with the top score. \
             A one-class model needs an explicit --threshold on the cosine similarity \
             (e.g. --threshold 0.5; check values with `cbr classify` on images that are and are not the class)"
        );
    }
    Ok(())
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
    /// Images whose embeddings came from the cache.
    pub cached: usize,
    pub seconds: f64,
}

/// Embeds `images`, computes the head and returns the model (and index).
pub fn build(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    opts: &BuildOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Built, BuildReport)> {
    check_class_count(
        crate::dataset::class_counts(images).len(),
        images.first().map_or("", |i| &i.label),
        &opts.head,
    )?;
    let embedded = embed_images(embedder, images, opts, &HashSet::new(), progress)?;
    check_classes(images, &embedded)?;
    build_from_embedded(embedder, embedded, opts)
}

/// Builds from embeddings made earlier by `cbr embed` (Parquet shards),
/// which must come from `embedder` with its preprocessing.
pub fn build_from_shards(
    embedder: &Embedder,
    shards: &[PathBuf],
    opts: &BuildOptions,
) -> Result<(Built, BuildReport)> {
    let start = Instant::now();
    let (info, preprocess, mut embedded) = crate::shard::read(shards)?;
    if info.sha256 != embedder.info.sha256
        || info.output != embedder.info.output
        || preprocess != embedder.preprocess
    {
        bail!(
            "the shards were embedded with {} ({}, output {}) and their own preprocessing; the build's embedder is {} ({}, output {}){}: \
             pass the same --embedder and preprocessing flags as to `cbr embed`",
            info.name,
            &info.sha256[..12],
            info.output,
            embedder.info.name,
            &embedder.info.sha256[..12],
            embedder.info.output,
            if preprocess != embedder.preprocess { " with different preprocessing" } else { "" }
        );
    }
    let mirrored = embedded.labels.len() == 2 * embedded.paths.len() && !embedded.paths.is_empty();
    if mirrored != opts.augment {
        bail!(
            "the shards {} mirror images; build {} --augment",
            if mirrored { "hold" } else { "do not hold" },
            if mirrored { "with" } else { "without" }
        );
    }
    let mut labels = embedded.labels.clone();
    labels.sort();
    labels.dedup();
    check_class_count(labels.len(), labels.first().map_or("", |l| l), &opts.head)?;
    embedded.seconds = start.elapsed().as_secs_f64();
    build_from_embedded(embedder, embedded, opts)
}

/// The model for already embedded images.
pub fn build_from_embedded(
    embedder: &Embedder,
    embedded: Embedded,
    opts: &BuildOptions,
) -> Result<(Built, BuildReport)> {
    let head = RetrievalHead::from_index(embedded.index(&opts.head)?, &opts.head)?;
    let index = match opts.index.resolve(&head, &opts.ivf)? {
        Some(params) => Some(sidecar::build_index(&head, &params)?),
        None => None,
    };
    let bytes = match (&embedder.model, index.is_some()) {
        (EmbedderModel::Onnx { model, .. }, true) => model_file_bytes(
            model,
            &embedder.info,
            &embedder.preprocess,
            &head,
            opts.augment,
            true,
        )?,
        (EmbedderModel::Tflite { .. }, true) => {
            bail!("a sidecar index (--index ivf) needs an ONNX embedder; this one is TFLite")
        }
        (_, false) => model_bytes_with(embedder, &head, opts.augment, &opts.tflite)?,
    };
    let report = BuildReport {
        classes: head.labels.len(),
        images: embedded.paths.len(),
        cached: embedded.cached,
        skipped: embedded.skipped,
        seconds: embedded.seconds,
        calibration: head.calibration.clone(),
        threshold: head.threshold,
    };
    Ok((Built { model: bytes, index }, report))
}
