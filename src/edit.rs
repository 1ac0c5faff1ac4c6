//! Editing a built model in place: add images, remove classes, rename
//! classes. The model carries its index rows, their labels and image ids and
//! the head options ([`crate::head::index`]), so only new images are
//! embedded, no side files are needed, and the result is the model a fresh
//! `cbr build` over the same images would write, byte for byte.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};

use crate::build::{check_class_count, BuildOptions};
use crate::dataset::LabelledImage;
use crate::embedder::Embedder;
use crate::error::Error;
use crate::format::{self, EmbedderGraph, ModelFormat, WriteOptions};
use crate::head::{graph, HeadOptions, ImageId, Index, RetrievalHead};
use crate::meta::ClassifierInfo;
use crate::onnx::{self, ModelProto};
use crate::pipeline::{check_classes, embed_images, Skipped};

/// A model opened for editing.
pub struct EditableModel {
    pub info: ClassifierInfo,
    pub options: HeadOptions,
    pub index: Index,
    /// The embedder graph under the head.
    pub embedder: ModelProto,
}

/// What an edit did.
#[derive(Clone, Debug, Default)]
pub struct EditReport {
    pub classes: usize,
    pub rows: usize,
    /// Images embedded (add only) and taken from the embedding cache.
    pub added: usize,
    pub cached: usize,
    pub removed_rows: usize,
    pub skipped: Vec<Skipped>,
}

impl EditableModel {
    /// Opens the model file at `path` (errors name the file).
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read model {}", crate::printable::path(path)))?;
        Self::from_bytes(&bytes).with_context(|| format!("model {}", crate::printable::path(path)))
    }

    /// Writes the model file for the current index to `path`, atomically.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        crate::cache::write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a model written by `cbr build` (format 2 or newer).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if ModelFormat::sniff(bytes) == ModelFormat::Tflite {
            return Err(Error::unsupported("this is a TFLite classifier, which does not keep what an edit needs: edit the ONNX model built from the same images and embedder, then rebuild the .tflite").into());
        }
        let info = format::read(bytes)?.info;
        let model = onnx::decode(bytes).context("not a valid ONNX model")?;
        if info.index.is_some() {
            return Err(Error::unsupported("this model keeps its index rows in a sidecar file (cbr build --index ivf), which edits do not support yet: rebuild it with `cbr build`").into());
        }
        let options = info.head_options.clone().ok_or_else(|| {
            Error::unsupported(format!("the model was built by cbr {} (format {}), which did not store what an edit needs: rebuild it with `cbr build`", info.cbr_version, info.format))
        })?;
        let index = graph::read_index(&model, &info.labels, &info.images_per_label)?;
        let embedder = graph::embedder_of(&model, &info.embedder.output)?;
        Ok(EditableModel { info, options, index, embedder })
    }

    /// The model file for the current index.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let head = RetrievalHead::from_index(self.index.clone(), &self.options)?;
        format::write_classifier(
            EmbedderGraph::Onnx(&self.embedder),
            &self.info.embedder,
            &self.info.preprocess,
            head,
            &WriteOptions { augment: self.info.augment, ..WriteOptions::default() },
        )
    }

    /// Classes in the index, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut l = self.index.labels.clone();
        l.sort();
        l.dedup();
        l
    }

    fn check(&self) -> Result<()> {
        let labels = self.labels();
        check_class_count(labels.len(), labels.first().map_or("", |l| l), &self.options)
    }

    fn report(&self) -> EditReport {
        EditReport { classes: self.labels().len(), rows: self.index.len(), ..Default::default() }
    }

    /// Embeds `images` with the model's own embedder (and the embedding
    /// cache, unless `opts.cache` is off) and adds them. Images already in
    /// the model under the same label are skipped.
    pub fn add(
        &mut self,
        images: &[LabelledImage],
        opts: &BuildOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<EditReport> {
        if opts.augment != self.info.augment {
            return Err(Error::bad_input(format!(
                "the model was built {} mirror augmentation; add images the same way",
                if self.info.augment { "with" } else { "without" }
            ))
            .into());
        }
        let mut embedder = Embedder::from_bytes(
            &onnx::encode(&self.embedder),
            &self.info.embedder.name,
            Some(&self.info.embedder.output),
            self.info.preprocess.clone(),
        )
        .context("cannot load the model's embedder")?;
        if embedder.info.dim != self.index.dim {
            bail!(
                "the model's embedder gives {}-d embeddings but its index rows are {}-d",
                embedder.info.dim,
                self.index.dim
            );
        }
        if embedder.info.dim != self.info.embedder.dim {
            return Err(Error::bad_input(format!(
                "invalid cbr metadata: embedder.dim is {} but the model's embedder gives {}-d \
                 embeddings; the file is damaged or was edited: rebuild it with `cbr build`",
                self.info.embedder.dim, embedder.info.dim
            ))
            .into());
        }
        // Keep the identity of the original embedder: the cache is keyed by it.
        embedder.info = self.info.embedder.clone();
        let known: HashSet<(String, ImageId)> =
            self.index.labels.iter().cloned().zip(self.index.images.iter().copied()).collect();
        let embedded = embed_images(&mut embedder, images, &opts.embedding(), &known, progress)?;
        let new_labels: Vec<LabelledImage> =
            images.iter().filter(|i| !self.index.labels.contains(&i.label)).cloned().collect();
        if !new_labels.is_empty() {
            check_classes(&new_labels, &embedded)?; // each new class got a readable image
        }
        self.index.extend(&embedded.index(&self.options)?)?;
        self.check()?;
        Ok(EditReport {
            added: embedded.paths.len(),
            cached: embedded.cached,
            skipped: embedded.skipped,
            ..self.report()
        })
    }

    /// Removes every image of the given classes.
    pub fn remove_labels(&mut self, labels: &[String]) -> Result<EditReport> {
        let present = self.labels();
        for l in labels {
            if !present.contains(l) {
                return Err(Error::not_found(format!(
                    "the model has no class {l:?} (it has: {})",
                    quoted(&present)
                ))
                .into());
            }
        }
        let before = self.index.len();
        self.index.retain(|label, _| !labels.iter().any(|l| l == label));
        if self.index.is_empty() {
            return Err(Error::conflict(format!(
                "removing {} would leave no classes",
                labels.join(", ")
            ))
            .into());
        }
        self.check()?;
        Ok(EditReport { removed_rows: before - self.index.len(), ..self.report() })
    }

    /// Renames class `from` to `to`; if `to` exists, the classes merge (an
    /// image in both is kept once), as if the folders had been merged.
    pub fn relabel(&mut self, from: &str, to: &str) -> Result<EditReport> {
        let present = self.labels();
        if !present.iter().any(|l| l == from) {
            return Err(Error::not_found(format!(
                "the model has no class {from:?} (it has: {})",
                quoted(&present)
            ))
            .into());
        }
        if to.is_empty() {
            return Err(Error::bad_input("the new class name is empty").into());
        }
        crate::dataset::check_label(to).map_err(Error::bad_input)?;
        let before = self.index.len();
        for l in self.index.labels.iter_mut().filter(|l| *l == from) {
            *l = to.to_string();
        }
        // An image now in `to` twice keeps its first rows (one per variant).
        let per_image = if self.info.augment { 2 } else { 1 };
        let mut seen: std::collections::HashMap<(String, ImageId), usize> = Default::default();
        self.index = self.index.sorted();
        self.index.retain(|label, id| {
            let n = seen.entry((label.to_string(), *id)).or_insert(0);
            *n += 1;
            *n <= per_image
        });
        self.check()?;
        Ok(EditReport { removed_rows: before - self.index.len(), ..self.report() })
    }
}

/// Labels for an error message, each as a Rust string literal: a label holding a control
/// character (from a model written before labels were checked) cannot drive the terminal.
fn quoted(labels: &[String]) -> String {
    labels.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>().join(", ")
}

/// Edits the model file `model` with `edit` and writes the result atomically
/// to `output` (default: in place), holding the written file's lock
/// ([`crate::lock::ModelLock`]) from the read to the rename: concurrent edits
/// of one file run one after the other and each starts from the previous
/// one's result. Only the written file is locked (reads see a whole file
/// either way, as files are replaced by rename), so `A -o B` and `B -o A`
/// cannot deadlock.
pub fn edit_file(
    model: &std::path::Path,
    output: Option<&std::path::Path>,
    edit: impl FnOnce(&mut EditableModel) -> Result<EditReport>,
) -> Result<EditReport> {
    let out = output.unwrap_or(model);
    if let Some(dir) = output.and_then(|o| o.parent()).filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let _lock = crate::lock::ModelLock::acquire(out)?;
    let mut m = EditableModel::open(model)?;
    let report = edit(&mut m)?;
    m.write(out)?;
    Ok(report)
}
