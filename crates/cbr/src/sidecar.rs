//! Models too big for one ONNX file: the embedder alone in `NAME.onnx` and
//! the index rows in an approximate search index beside it (`NAME.ivf`).
//!
//! An ONNX file is a protobuf message, limited to 2 GB, and an f32 index of
//! a million 1280-d embeddings is 5 GB; exhaustive matching at that size also
//! costs more than the embedder. So above [`AUTO_ROWS_BYTES`] of index rows
//! (or with `--index ivf`) the model keeps only the embedder (output
//! `embedding`), and classifying applies the head's query transform (power,
//! L2, centring), retrieves the best [`DEPTH`] rows from the [`IvfIndex`],
//! and takes the max rule over them: a class's score is its best retrieved
//! row, classes with no retrieved row score −inf (probability 0).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::search::{IvfIndex, IvfParams};
use cbr_core::build::IndexChoice;
use cbr_core::head::interpret::Evaluation;
use cbr_core::head::plan::{HeadPlan, Op};
use cbr_core::head::{Aggregation, IndexDtype, RetrievalHead, EMBEDDING};

/// Index rows retrieved per query before aggregating per class.
pub const DEPTH: usize = 100;

/// `auto` switches to a sidecar index when the f32 index rows would take
/// more than this in the model's index dtype (the ONNX file's protobuf limit
/// is 2 GB, and the embedder and the rest of the head need room too).
pub const AUTO_ROWS_BYTES: usize = 1536 << 20;

pub use cbr_core::meta::IndexInfo;

/// The index to build for `head` under `choice`, if any, with `params` when it is one.
pub fn resolve(
    choice: IndexChoice,
    head: &RetrievalHead,
    params: &IvfParams,
) -> Result<Option<IvfParams>> {
    match choice {
            IndexChoice::Single => Ok(None),
            IndexChoice::Ivf if head.aggregation == Aggregation::Max => Ok(Some(params.clone())),
            IndexChoice::Ivf => bail!("an approximate index (--index ivf) serves the max rule only: add --aggregate max (this head uses {})", head.aggregation),
            IndexChoice::Auto if head.len() * head.dim * value_bytes(head.options.index_dtype) > AUTO_ROWS_BYTES && head.aggregation == Aggregation::Max => {
                Ok(Some(params.clone()))
            }
            IndexChoice::Auto => Ok(None),
        }
}

/// Bytes per index value in the ONNX file.
fn value_bytes(dtype: IndexDtype) -> usize {
    match dtype {
        IndexDtype::F32 => 4,
        IndexDtype::F16 => 2,
        IndexDtype::Int8 => 1,
    }
}

/// The sidecar file of the model at `model`: same name, extension `.ivf`
/// (so the model file names no other file and can be renamed with it).
pub fn index_path(model: &Path) -> PathBuf {
    model.with_extension("ivf")
}

/// Builds the approximate index over the head's rows (row ids are head rows;
/// each carries its class).
pub fn build_index(head: &RetrievalHead, params: &IvfParams) -> Result<IvfIndex> {
    IvfIndex::build(&head.rows(), head.dim, &head.row_class, params)
}

/// A loaded sidecar index and what classifying with it needs.
pub struct Sidecar {
    pub index: IvfIndex,
    pub info: IndexInfo,
    power: Option<f32>,
    classes: usize,
    temperature: Option<f32>,
    /// Cells scanned per query.
    pub nprobe: usize,
}

impl Sidecar {
    /// Opens the index named by `info` beside the model file `model`.
    pub fn open(
        model: &Path,
        info: &IndexInfo,
        power: Option<f32>,
        classes: usize,
        temperature: Option<f32>,
    ) -> Result<Self> {
        let path = index_path(model);
        if !path.is_file() {
            bail!(
                "model {} keeps its index in {}, which is missing (copy or rename the two files together)",
                model.display(),
                path.display()
            );
        }
        let index = IvfIndex::load(&path)?;
        if index.len() != info.rows || index.dim() != info.dim {
            bail!(
                "index {} has {} rows of {}, but model {} was built with {} rows of {}: they do not belong together",
                path.display(),
                index.len(),
                index.dim(),
                model.display(),
                info.rows,
                info.dim
            );
        }
        if let Some(c) =
            (0..index.len() as u32).map(|i| index.class_of(i)).find(|&c| c as usize >= classes)
        {
            bail!(
                "index {} names class {c}, but model {} has {classes} classes",
                path.display(),
                model.display()
            );
        }
        let nprobe = index.nprobe;
        Ok(Sidecar { index, info: info.clone(), power, classes, temperature, nprobe })
    }

    /// The head of a sidecar model: the query transform, then class
    /// similarities supplied by the search (the max over the retrieved rows
    /// of each class), then the softmax.
    fn plan(&self) -> HeadPlan<'_> {
        let mut p = HeadPlan::new(self.info.dim, self.classes);
        p.push_query(self.power, self.info.mean.as_deref());
        let retrieved = p.push(Op::Supplied { len: self.classes }, &[]);
        p.class_similarities = retrieved;
        p.scores = match self.temperature {
            Some(t) => p.push(Op::Softmax { temperature: t }, &[retrieved]),
            None => retrieved,
        };
        p
    }

    /// Class scores for raw embeddings (`n` x dim), as the single-file model's
    /// `scores` output with the max rule would give them for the classes
    /// among the best [`DEPTH`] rows.
    pub fn scores(&self, embeddings: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let dim = self.info.dim;
        if embeddings.len() != n * dim {
            bail!("{EMBEDDING} has {} values, expected {n} x {dim}", embeddings.len());
        }
        let plan = self.plan();
        let queries: Vec<f32> = embeddings
            .chunks_exact(dim)
            .flat_map(|e| Evaluation::new(&plan, e).value(plan.query).to_vec())
            .collect();
        let hits = self.index.search_batch(&queries, DEPTH, self.nprobe);
        Ok(hits
            .into_iter()
            .map(|hits| {
                let mut s = vec![f32::NEG_INFINITY; self.classes];
                for h in hits {
                    let c = self.index.class_of(h.row) as usize;
                    s[c] = s[c].max(h.score);
                }
                let mut e = Evaluation::empty(&plan);
                e.set(plan.class_similarities, s);
                e.value(plan.scores).to_vec()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbr_core::head::HeadOptions;

    #[test]
    fn auto_keeps_small_heads_in_the_model_and_ivf_needs_max() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let max = RetrievalHead::new(&[1.0, 0.0, 0.0, 1.0], 2, &labels, &HeadOptions::original())
            .unwrap();
        let params = IvfParams { nprobe: 7, ..IvfParams::default() };
        assert_eq!(resolve(IndexChoice::Auto, &max, &params).unwrap(), None);
        assert_eq!(resolve(IndexChoice::Single, &max, &params).unwrap(), None);
        assert_eq!(resolve(IndexChoice::Ivf, &max, &params).unwrap(), Some(params.clone()));
        let opts = HeadOptions { aggregation: Aggregation::Centroid, ..HeadOptions::original() };
        let centroid = RetrievalHead::new(&[1.0, 0.0, 0.0, 1.0], 2, &labels, &opts).unwrap();
        let e = resolve(IndexChoice::Ivf, &centroid, &params).unwrap_err().to_string();
        assert!(e.contains("--aggregate max"), "{e}");
        assert_eq!(index_path(Path::new("/m/shop.onnx")), Path::new("/m/shop.ivf"));
    }
}
