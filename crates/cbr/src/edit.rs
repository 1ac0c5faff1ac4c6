//! Editing a model file in place: add images, remove classes, rename
//! classes. The edits on the model's bytes are cbr-core's
//! ([`cbr_core::edit`]); this module reads and writes the file under its lock
//! and embeds only the new images (with the embedding cache).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::build::BuildOptions;
use crate::dataset::LabelledImage;
use crate::embedder::Embedder;
use crate::error::Error;
use crate::pipeline::{check_classes, embed_images, Skipped};
use cbr_core::head::ImageId;
use cbr_core::onnx;

pub use cbr_core::edit::{EditReport, EditableModel};

/// Opens the model file at `path` for editing (errors name the file).
pub fn open(path: &Path) -> Result<EditableModel> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::from_io(e, format!("cannot read model {}", crate::printable::path(path)))
    })?;
    EditableModel::from_bytes(&bytes)
        .with_context(|| format!("model {}", crate::printable::path(path)))
}

/// Writes the model file for the current index to `path`, atomically.
pub fn write(model: &EditableModel, path: &Path) -> Result<()> {
    crate::cache::write_atomic(path, &model.to_bytes()?)
}

/// What adding images did: the edit, the images whose embeddings came from
/// the cache, and the images skipped (unreadable).
#[derive(Clone, Debug, Default)]
pub struct Added {
    pub report: EditReport,
    pub cached: usize,
    pub skipped: Vec<Skipped>,
}

impl From<EditReport> for Added {
    /// An edit that embedded nothing (remove, relabel).
    fn from(report: EditReport) -> Added {
        Added { report, ..Added::default() }
    }
}

/// Embeds `images` with the model's own embedder (and the embedding
/// cache, unless `opts.cache` is off) and adds them. Images already in
/// the model under the same label are skipped.
pub fn add(
    model: &mut EditableModel,
    images: &[LabelledImage],
    opts: &BuildOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Added> {
    if opts.augment != model.info.augment {
        return Err(Error::bad_input(format!(
            "the model was built {} mirror augmentation; add images the same way",
            if model.info.augment { "with" } else { "without" }
        ))
        .into());
    }
    let mut embedder = Embedder::from_bytes(
        &onnx::encode(&model.embedder),
        &model.info.embedder.name,
        Some(&model.info.embedder.output),
        model.info.preprocess.clone(),
    )
    .context("cannot load the model's embedder")?;
    if embedder.info.dim != model.index.dim {
        bail!(
            "the model's embedder gives {}-d embeddings but its index rows are {}-d",
            embedder.info.dim,
            model.index.dim
        );
    }
    if embedder.info.dim != model.info.embedder.dim {
        return Err(Error::bad_input(format!(
            "invalid cbr metadata: embedder.dim is {} but the model's embedder gives {}-d \
             embeddings; the file is damaged or was edited: rebuild it with `cbr build`",
            model.info.embedder.dim, embedder.info.dim
        ))
        .into());
    }
    // Keep the identity of the original embedder: the cache is keyed by it.
    embedder.info = model.info.embedder.clone();
    let known: HashSet<(String, ImageId)> =
        model.index.labels.iter().cloned().zip(model.index.images.iter().copied()).collect();
    let embedded = embed_images(&mut embedder, images, &opts.embedding(), &known, progress)?;
    let new_labels: Vec<LabelledImage> =
        images.iter().filter(|i| !model.index.labels.contains(&i.label)).cloned().collect();
    if !new_labels.is_empty() {
        check_classes(&new_labels, &embedded)?; // each new class got a readable image
    }
    let report = model.add_rows(&embedded.index(&model.options)?)?;
    Ok(Added { report, cached: embedded.cached, skipped: embedded.skipped })
}

/// Edits the model file `model` with `edit` and writes the result atomically
/// to `output` (default: in place), holding the written file's lock
/// ([`crate::lock::ModelLock`]) from the read to the rename: concurrent edits
/// of one file run one after the other and each starts from the previous
/// one's result. Only the written file is locked (reads see a whole file
/// either way, as files are replaced by rename), so `A -o B` and `B -o A`
/// cannot deadlock.
pub fn edit_file<R>(
    model: &Path,
    output: Option<&Path>,
    edit: impl FnOnce(&mut EditableModel) -> Result<R>,
) -> Result<R> {
    let out = output.unwrap_or(model);
    if let Some(dir) = output.and_then(|o| o.parent()).filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let _lock = crate::lock::ModelLock::acquire(out)?;
    let mut m = open(model)?;
    let report = edit(&mut m)?;
    write(&m, out)?;
    Ok(report)
}
