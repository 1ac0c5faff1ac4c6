//! Edits on a model's bytes: add index rows, remove classes, rename classes.
//! The model carries its index rows, their labels and image ids and the head
//! options ([`crate::head::index`]), so an edit needs no side file and writes
//! the model a fresh build over the same images would write, byte for byte.
//! Embedding new images is the caller's (`cbr::edit` on a machine, the
//! browser's onnxruntime-web on a device): they arrive here as an [`Index`].

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};

use crate::build::check_class_count;
use crate::error::Error;
use crate::format::{self, EmbedderGraph, ModelFormat, WriteOptions};
use crate::head::{graph, HeadOptions, ImageId, Index, RetrievalHead};
use crate::meta::ClassifierInfo;
use crate::onnx::{self, ModelProto};

/// A model opened for editing.
pub struct EditableModel {
    pub info: ClassifierInfo,
    pub options: HeadOptions,
    pub index: Index,
    /// The embedder graph under the head.
    pub embedder: ModelProto,
}

/// What an edit did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EditReport {
    pub classes: usize,
    pub rows: usize,
    /// Images added (rows may be more, with augmentation).
    pub added: usize,
    pub removed_rows: usize,
}

impl EditableModel {
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

    /// Refuses an index with no class, or one class without a threshold.
    pub fn check(&self) -> Result<()> {
        let labels = self.labels();
        check_class_count(labels.len(), labels.first().map_or("", |l| l), &self.options)
    }

    /// The report of an edit that changed nothing yet.
    pub fn report(&self) -> EditReport {
        EditReport { classes: self.labels().len(), rows: self.index.len(), ..Default::default() }
    }

    /// Adds index rows made from new images (the model's own embedder, its
    /// head options: [`Index::from_embeddings`] or the pipeline's
    /// `Embedded::index`). Rows of an image the model has under the same
    /// label already are skipped, as `cbr add` skips such images.
    pub fn add_rows(&mut self, rows: &Index) -> Result<EditReport> {
        if rows.dim != self.index.dim {
            return Err(Error::bad_input(format!(
                "the new rows are {}-d but the model's index rows are {}-d",
                rows.dim, self.index.dim
            ))
            .into());
        }
        let known: HashSet<(&str, ImageId)> = self
            .index
            .labels
            .iter()
            .map(String::as_str)
            .zip(self.index.images.iter().copied())
            .collect();
        let mut new = rows.clone();
        new.retain(|label, id| !known.contains(&(label, *id)));
        let images: HashSet<(&str, ImageId)> =
            new.labels.iter().map(String::as_str).zip(new.images.iter().copied()).collect();
        let added = images.len();
        self.index.extend(&new)?;
        self.check()?;
        Ok(EditReport { added, ..self.report() })
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
        if to.chars().any(crate::meta::is_line_break) {
            return Err(Error::bad_input(format!(
                "the label {to:?} holds a line break, which a label may not (a TFLite model's \
                 labelmap.txt has one label per line)"
            ))
            .into());
        }
        let before = self.index.len();
        for l in self.index.labels.iter_mut().filter(|l| *l == from) {
            *l = to.to_string();
        }
        // An image now in `to` twice keeps its first rows (one per variant).
        let per_image = if self.info.augment { 2 } else { 1 };
        let mut seen: HashMap<(String, ImageId), usize> = Default::default();
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
