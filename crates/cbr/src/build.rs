//! Building a classifier: embed the labelled images ([`crate::pipeline`]),
//! compute the retrieval head, and produce the model file's bytes
//! ([`cbr_core::format::write_classifier`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::dataset::LabelledImage;
use crate::decode::DecodeLimits;
use crate::embedder::Embedder;
use crate::models::EmbedderChoice;
use crate::pipeline::{check_classes, embed_images, EmbedOptions, Embedded, Skipped};
use crate::search::{IvfIndex, IvfParams};
use crate::sidecar;
use cbr_core::build::{BuildRequest, IndexChoice};
use cbr_core::format::{self, ModelFormat, RowsIn, WriteOptions};
use cbr_core::head::{HeadOptions, Index, RetrievalHead};

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
    pub tflite: cbr_core::tflite::TfliteOptions,
    /// Index rows in the model, or in a sidecar approximate index.
    pub index: IndexChoice,
    /// The sidecar index's parameters, when there is one.
    pub ivf: IvfParams,
}

impl BuildOptions {
    /// Refuses options no readable model can hold (a NaN or infinite power, a share or
    /// precision outside 0..=1, a NaN threshold), before any work is done: `BadInput`, named
    /// as the command line's flag.
    pub fn validate(&self) -> Result<()> {
        cbr_core::build::validate_head_options(&self.head)
    }

    /// The options of `request`, with the defaults for reading images.
    pub fn of_request(request: &BuildRequest) -> BuildOptions {
        BuildOptions {
            head: request.head_options(),
            augment: request.augment,
            tflite: request.tflite_options(),
            index: request.index,
            ivf: IvfParams { nprobe: request.ivf_nprobe, ..IvfParams::default() },
            ..BuildOptions::default()
        }
    }

    /// The part of the options that decoding and embedding use.
    pub fn embedding(&self) -> EmbedOptions {
        EmbedOptions {
            augment: self.augment,
            strict: self.strict,
            limits: self.limits.clone(),
            cache: self.cache,
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            head: HeadOptions::default(),
            augment: false,
            strict: false,
            limits: DecodeLimits::default(),
            cache: true,
            tflite: cbr_core::tflite::TfliteOptions::default(),
            index: IndexChoice::Auto,
            ivf: IvfParams::default(),
        }
    }
}

/// Opens the embedder for a classifier in `format`: a classifier is written in its embedder's
/// format, so a known model is opened as its TFLite twin for TFLite, and an embedder file in the
/// other format is refused.
pub fn open_embedder_for(choice: &EmbedderChoice, format: ModelFormat) -> Result<Embedder> {
    let choice = EmbedderChoice { tflite: format == ModelFormat::Tflite, ..choice.clone() };
    let embedder = crate::models::open_embedder(&choice)?;
    format.check_embedder(embedder.model.format(), &embedder.info.name)?;
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

/// The complete model file for `head` on top of `embedder` (see
/// [`format::write_classifier`]), with default TFLite choices. It writes a
/// copy of the head; a build that cares about memory gives its head away to
/// `write_classifier` instead.
pub fn model_bytes(embedder: &Embedder, head: &RetrievalHead, augment: bool) -> Result<Vec<u8>> {
    format::write_classifier(
        embedder.model.graph(),
        &embedder.info,
        &embedder.preprocess,
        head.clone(),
        &WriteOptions { augment, ..WriteOptions::default() },
    )
}

pub use cbr_core::build::check_class_count;

/// What a build did.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub classes: usize,
    /// Images used (rows may be more, with augmentation).
    pub images: usize,
    pub calibration: Option<cbr_core::head::calibrate::Calibration>,
    /// The model's unknown entry, if it has one.
    pub novelty: Option<cbr_core::meta::Novelty>,
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
    opts.validate()?;
    check_class_count(
        crate::dataset::class_counts(images).len(),
        images.first().map_or("", |i| &i.label),
        &opts.head,
    )?;
    let embedded = embed_images(embedder, images, &opts.embedding(), &HashSet::new(), progress)?;
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
    opts.validate()?;
    let start = Instant::now();
    let head_opts = crate::models::head_options_for(&opts.head, &embedder.info.name);
    let (info, preprocess, mut embedded, index) =
        crate::shard::read_index(shards, head_opts.power_exponent(), head_opts.index_dtype)?;
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
    build_from_index(embedder, index, embedded, opts)
}

/// The model for already embedded images.
pub fn build_from_embedded(
    embedder: &Embedder,
    embedded: Embedded,
    opts: &BuildOptions,
) -> Result<(Built, BuildReport)> {
    opts.validate()?;
    let head_opts = crate::models::head_options_for(&opts.head, &embedder.info.name);
    let index = embedded.index(&head_opts)?;
    build_from_index(embedder, index, embedded, opts)
}

/// The model for index rows already made (from `embedded`'s images, whose
/// raw embeddings are not needed any more: they are let go before the head
/// and the model file are made).
fn build_from_index(
    embedder: &Embedder,
    index: Index,
    embedded: Embedded,
    opts: &BuildOptions,
) -> Result<(Built, BuildReport)> {
    let head_opts = crate::models::head_options_for(&opts.head, &embedder.info.name);
    let Embedded { paths, cached, skipped, seconds, .. } = embedded;
    let head = RetrievalHead::from_index(index, &head_opts)?;
    let index = match sidecar::resolve(opts.index, &head, &opts.ivf)? {
        Some(params) => Some(sidecar::build_index(&head, &params)?),
        None => None,
    };
    let report = BuildReport {
        classes: head.labels.len(),
        images: paths.len(),
        cached,
        skipped,
        seconds,
        calibration: head.calibration.clone(),
        threshold: head.threshold,
        novelty: head.novelty.clone(),
    };
    let bytes = format::write_classifier(
        embedder.model.graph(),
        &embedder.info,
        &embedder.preprocess,
        head,
        &WriteOptions {
            augment: opts.augment,
            rows: if index.is_some() { RowsIn::Sidecar } else { RowsIn::Model },
            tflite: opts.tflite.clone(),
        },
    )?;
    Ok((Built { model: bytes, index }, report))
}
