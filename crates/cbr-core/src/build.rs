//! Building a classifier from index rows: the checks every front end makes,
//! and the head with the embedder's calibration prior. Writing the file is
//! [`crate::format::write_classifier`].

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::head::{HeadOptions, Index, RetrievalHead};

/// Refuses a one-class model without an explicit threshold: every image
/// would be that class.
pub fn check_class_count(classes: usize, label: &str, opts: &HeadOptions) -> Result<()> {
    if classes == 0 {
        return Err(
            Error::bad_input("no classes: a classifier needs at least one labelled image").into()
        );
    }
    if classes == 1 && opts.threshold.is_none() {
        return Err(Error::bad_input(format!(
            "only one class ({label:?}): every image would be that class with the top score. \
             A one-class model needs an explicit --threshold on the cosine similarity \
             (e.g. --threshold 0.5; check values with `cbr classify` on images that are and are not the class)"
        ))
        .into());
    }
    Ok(())
}

/// The head for `index` on the embedder called `embedder` (its prior: see
/// [`crate::priors::head_options_for`]).
pub fn head_from_index(index: Index, opts: &HeadOptions, embedder: &str) -> Result<RetrievalHead> {
    RetrievalHead::from_index(index, &crate::priors::head_options_for(opts, embedder))
}

/// Where the index rows go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum IndexChoice {
    /// In the ONNX file (exact search), unless that cannot hold them and the
    /// aggregation is `max`: then as `ivf`.
    #[default]
    Auto,
    /// Always in the ONNX file.
    Single,
    /// In an approximate index file beside the model (max rule only).
    Ivf,
}
