//! What a cbr model file records about itself ([`ClassifierInfo`] and its
//! parts), and the checks that make a tampered or damaged record a clear
//! error when the model is opened instead of a panic, an abort or a silently
//! wrong answer.
//!
//! Plain data: this module depends on nothing else in the crate but the
//! preprocessing recipe ([`crate::preprocess`], itself plain data), so every
//! other module (the head, the format readers and writers, the server) can
//! use it without a cycle.

use std::collections::HashSet;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::preprocess::{Layout, Preprocess};

/// The metadata key (ONNX `metadata_props`, TFLite metadata entry) holding
/// [`ClassifierInfo`] as JSON.
pub const METADATA_KEY: &str = "cbr";
/// Version of the metadata layout; bumped on incompatible changes.
/// 2: the index is stored as unit rows with image ids and the head options
/// (editable with `cbr add`/`remove`/`relabel`).
pub const FORMAT_VERSION: u32 = 2;

/// Largest input side (pixels) a model may declare: well above any image
/// embedder, far below what would make one input tensor a memory bomb.
pub const MAX_INPUT_SIDE: u32 = 8192;
/// Largest embedding length a model may declare.
pub const MAX_EMBEDDING_DIM: usize = 1 << 20;

/// What a cbr model says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassifierInfo {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// Version of cbr that wrote the file.
    pub cbr_version: String,
    /// Class names, in the order of the `scores` output.
    pub labels: Vec<String>,
    /// Index images per class, in class order.
    pub images_per_label: Vec<usize>,
    pub embedder: EmbedderInfo,
    pub preprocess: Preprocess,
    pub aggregation: Aggregation,
    /// The power transform exponent applied to embeddings first, if any.
    #[serde(default)]
    pub power: Option<f32>,
    /// Whether the index mean is subtracted before normalising (CL2N).
    #[serde(default)]
    pub center: bool,
    /// Softmax temperature of `scores`; absent when `scores` are raw similarities.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Below this top score, the answer is "unknown".
    #[serde(default)]
    pub threshold: Option<f32>,
    /// What leave-one-out on the index measured when calibrating.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Whether mirrored copies of the index images were added as extra rows.
    #[serde(default)]
    pub augment: bool,
    /// The options the head was built with (format 2 on), so an edit rebuilds it the same way.
    #[serde(default)]
    pub head_options: Option<HeadOptions>,
    /// When present, `scores` has one more entry than `labels`, last, named
    /// this: the probability that the image is of none of the classes. The
    /// answer is the best entry of `scores`, so "unknown" is simply its argmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_label: Option<String>,
    /// How the unknown entry is computed from the image's novelty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub novelty: Option<Novelty>,
    /// Present when the index rows are in a sidecar file (`crate::sidecar`)
    /// and the model's only output is `embedding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexInfo>,
}

/// What identifies an embedder; recorded in every model built with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmbedderInfo {
    /// A model-list name such as `efficientnet-lite0`, or the file name.
    pub name: String,
    /// SHA-256 of the embedder's model file (`.onnx` or `.tflite`).
    pub sha256: String,
    /// The image input's name.
    pub input: String,
    /// The embedding output's name.
    pub output: String,
    /// Length of the embedding vector.
    pub dim: usize,
}

/// What the model's metadata says about its sidecar index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexInfo {
    /// Index rows and their length, checked against the file.
    pub rows: usize,
    pub dim: usize,
    /// The index mean subtracted from queries (when the head centres).
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
}

/// The outcome of calibration, kept in the model's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Calibration {
    /// Fitted softmax temperature, if fitted.
    pub temperature: Option<f32>,
    /// Threshold on the top score below which the answer is "unknown".
    pub threshold: Option<f32>,
    /// The precision the threshold was chosen for.
    pub target_precision: Option<f32>,
    /// Leave-one-out queries used.
    pub samples: usize,
    /// Top-1 accuracy of the leave-one-out queries (none without queries).
    pub accuracy: Option<f32>,
    /// Expected calibration error of softmax(τ = 1) and of the fitted softmax.
    pub ece_unfitted: Option<f32>,
    pub ece: Option<f32>,
    /// Share of leave-one-out queries accepted (not unknown) at the threshold.
    pub coverage: f32,
}

/// The unknown entry of `scores`: with `s` the cosine of the query (after
/// the power transform and L2, not centred) to the nearest normalised class
/// mean, `p_known = sigmoid(scale · (s − offset))` and
/// `scores = [p_known · softmax(class similarities / τ) …, 1 − p_known]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Novelty {
    pub offset: f32,
    pub scale: f32,
    /// Where `offset` and `scale` come from: "leave-one-out" on the index,
    /// or the embedder's prior (one image per class: nothing to leave out).
    pub source: String,
    /// The share of known photos the offset was chosen to answer (not "unknown").
    pub known_target: f32,
    /// The share of leave-one-out queries answered at that offset (none from a prior).
    pub known_accepted: Option<f32>,
}

/// What calibration uses when the index cannot tell (every class has one
/// image, so leave-one-out has nothing to compare): values fitted once per
/// embedder on public data (`crate::models`, `bench/fit_priors.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prior {
    /// What the values were fitted on, or that they are the generic default.
    pub source: String,
    /// Softmax temperature for cosine class similarities (centroid, max,
    /// blend; a one-image discriminant is a cosine scaled by 1/(shrinkage·scale)).
    pub temperature: f32,
    /// Novelty offset and scale at one image per class.
    pub novelty_offset: f32,
    pub novelty_scale: f32,
}

impl Prior {
    /// For embedders no prior was fitted for: efficientnet-lite0's prior,
    /// rounded (the only one fitted so far; see `crate::models::PRIORS`). Its
    /// novelty offset assumes cosines like that embedder's: another embedder
    /// with one image per class may answer "unknown" more or less often.
    pub fn generic() -> Prior {
        Prior {
            source: "generic default (no prior fitted for this embedder)".into(),
            temperature: GENERIC_PRIOR.0,
            novelty_offset: GENERIC_PRIOR.1,
            novelty_scale: GENERIC_PRIOR.2,
        }
    }
}

/// (temperature, novelty offset, novelty scale) of [`Prior::generic`].
pub const GENERIC_PRIOR: (f32, f32, f32) = (0.067, 0.51, 45.0);

/// The share of known photos the unknown entry is tuned to answer by default.
pub const DEFAULT_KNOWN_TARGET: f32 = 0.95;

/// How instance similarities become one similarity per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// The best cosine similarity among the class's images (the original rule).
    Max,
    /// Cosine similarity to the class centroid (normalised mean of its images).
    Centroid,
    /// The average of `max` and `centroid`.
    Blend,
    /// A shrinkage linear discriminant computed in closed form from the index
    /// (`crate::head::discriminant`); the most accurate with several images per class.
    Discriminant,
}

impl Aggregation {
    pub const ALL: [Aggregation; 4] =
        [Aggregation::Max, Aggregation::Centroid, Aggregation::Blend, Aggregation::Discriminant];

    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Max => "max",
            Aggregation::Centroid => "centroid",
            Aggregation::Blend => "blend",
            Aggregation::Discriminant => "discriminant",
        }
    }

    /// Whether the rule takes the best row per class.
    pub fn uses_max(self) -> bool {
        matches!(self, Aggregation::Max | Aggregation::Blend)
    }

    /// Whether the rule matches class centroids.
    pub fn uses_centroid(self) -> bool {
        matches!(self, Aggregation::Centroid | Aggregation::Blend)
    }
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Aggregation {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Aggregation::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            anyhow::anyhow!("unknown aggregation {s:?}: use max, centroid, blend or discriminant")
        })
    }
}

/// How index rows are stored in the model file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum IndexDtype {
    /// 4 bytes per value: exact.
    #[default]
    F32,
    /// 2 bytes per value (IEEE half): relative error ≤ 2⁻¹¹.
    F16,
    /// 1 byte per value plus one f32 scale per row (symmetric, max |x| → 127).
    Int8,
}

impl IndexDtype {
    pub const ALL: [IndexDtype; 3] = [IndexDtype::F32, IndexDtype::F16, IndexDtype::Int8];

    pub fn name(self) -> &'static str {
        match self {
            IndexDtype::F32 => "f32",
            IndexDtype::F16 => "f16",
            IndexDtype::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for IndexDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for IndexDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        IndexDtype::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown index dtype {s:?}: use f32, f16 or int8"))
    }
}

/// The choices that shape a head (kept in the model, so an edited model is
/// rebuilt with the same choices).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeadOptions {
    pub aggregation: Aggregation,
    /// Power transform `sign(x)·|x|^p` of the raw embedding before anything
    /// else (1 = none); 0.5 evens out the skewed activations of ReLU networks.
    pub power: f32,
    /// Subtract the index mean before normalising (CL2N).
    pub center: bool,
    /// Fit a softmax temperature so `scores` are calibrated probabilities.
    pub calibrate: bool,
    /// Choose the unknown threshold for this leave-one-out precision.
    pub target_precision: Option<f32>,
    /// An explicit unknown threshold on the top score (overrides the target).
    pub threshold: Option<f32>,
    /// How the index rows are stored in the model.
    #[serde(default)]
    pub index_dtype: IndexDtype,
    /// Add an "unknown" entry to `scores` (needs `calibrate`), tuned so that
    /// this share of known photos is answered (by leave-one-out, or the prior).
    #[serde(default)]
    pub known_target: Option<f32>,
    /// The embedder's prior, used when leave-one-out is impossible.
    #[serde(default)]
    pub prior: Option<Prior>,
}

impl HeadOptions {
    /// The power transform's exponent, unless it is 1 (no transform).
    pub fn power_exponent(&self) -> Option<f32> {
        (self.power != 1.0).then_some(self.power)
    }
}

impl HeadOptions {
    /// Checks the options a build is asked for, before any work: the power is a finite number
    /// above 0, shares and precisions are 0..=1, the threshold and the prior finite. A model
    /// written with options outside these ranges could not be read back.
    pub fn validate(&self) -> Result<(), InvalidMetadata> {
        self.validate_fields("")
    }

    /// [`HeadOptions::validate`], naming fields with `prefix` (`head_options.` in metadata).
    fn validate_fields(&self, prefix: &str) -> Result<(), InvalidMetadata> {
        positive(&format!("{prefix}power"), self.power)?;
        if let Some(t) = self.known_target {
            unit_share(&format!("{prefix}known_target"), t)?;
        }
        if let Some(p) = &self.prior {
            positive(&format!("{prefix}prior.temperature"), p.temperature)?;
            finite(&format!("{prefix}prior.novelty_offset"), p.novelty_offset)?;
            positive(&format!("{prefix}prior.novelty_scale"), p.novelty_scale)?;
        }
        if let Some(t) = self.threshold {
            finite(&format!("{prefix}threshold"), t)?;
        }
        if let Some(p) = self.target_precision {
            unit_share(&format!("{prefix}target_precision"), p)?;
        }
        Ok(())
    }
}

impl Default for HeadOptions {
    /// The defaults chosen by measurement (see README, "Accuracy").
    fn default() -> Self {
        HeadOptions {
            aggregation: Aggregation::Discriminant,
            power: 0.5,
            center: true,
            calibrate: true,
            target_precision: None,
            threshold: None,
            index_dtype: IndexDtype::F32,
            known_target: Some(DEFAULT_KNOWN_TARGET),
            prior: Some(Prior::generic()),
        }
    }
}

impl HeadOptions {
    /// The original classification-by-retrieval: max cosine, raw scores.
    pub fn original() -> Self {
        HeadOptions {
            aggregation: Aggregation::Max,
            power: 1.0,
            center: false,
            calibrate: false,
            target_precision: None,
            threshold: None,
            index_dtype: IndexDtype::F32,
            known_target: None,
            prior: None,
        }
    }
}

/// A metadata field that does not hold what a cbr model needs: `field` is its
/// path in the JSON (`preprocess.width`, `labels[3]`), `problem` what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid cbr metadata: {field} {problem}")]
pub struct InvalidMetadata {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidMetadata {
    InvalidMetadata { field: field.into(), problem: problem.into() }
}

/// A tensor the model file declares: its name and shape (`None` for a
/// dimension the file leaves open).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub shape: Vec<Option<i64>>,
}

/// What a model file's graph declares, as far as the metadata must agree
/// with it: filled in by each format's reader (`crate::format`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphSignature {
    /// The graph's inputs (initializers excluded).
    pub inputs: Vec<TensorDecl>,
    /// The graph's outputs.
    pub outputs: Vec<TensorDecl>,
    /// Every tensor name the graph produces or holds (node outputs, inputs).
    pub tensors: HashSet<String>,
}

impl GraphSignature {
    fn output(&self, name: &str) -> Option<&TensorDecl> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// Whether `c` ends a line for some reader of a line-based file (TFLite's `labelmap.txt` in
/// MediaPipe, Python's `str.splitlines`): LF, CR, VT, FF, the file/group/record separators, NEL
/// and the Unicode line and paragraph separators. No label may hold one. (Other control
/// characters are kept, and escaped wherever cbr prints a label.)
pub fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

fn finite(field: &str, v: f32) -> Result<(), InvalidMetadata> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(field, format!("is {v}; must be a finite number")))
    }
}

fn positive(field: &str, v: f32) -> Result<(), InvalidMetadata> {
    finite(field, v)?;
    if v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("is {v}; must be above 0")))
    }
}

fn unit_share(field: &str, v: f32) -> Result<(), InvalidMetadata> {
    finite(field, v)?;
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(field, format!("is {v}; must be 0..=1")))
    }
}

impl ClassifierInfo {
    /// Length of the `scores` output: one per class, plus the unknown entry if any.
    pub fn score_count(&self) -> usize {
        self.labels.len() + self.unknown_label.is_some() as usize
    }

    /// The name of `scores` entry `i` (a class, or the unknown label last).
    pub fn score_label(&self, i: usize) -> &str {
        match self.labels.get(i) {
            Some(l) => l,
            None => self.unknown_label.as_deref().unwrap_or(""),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata serialises")
    }

    /// Parses and validates ([`ClassifierInfo::validate`]) the metadata JSON.
    pub fn from_json(s: &str) -> Result<Self> {
        let info: ClassifierInfo = serde_json::from_str(s)
            .map_err(|e| anyhow::anyhow!("the cbr metadata is not valid: {e}"))?;
        if info.format > FORMAT_VERSION {
            anyhow::bail!(
                "the cbr metadata is format {}, from a newer cbr (this one reads up to \
                 {FORMAT_VERSION}): upgrade cbr",
                info.format
            );
        }
        info.validate()?;
        Ok(info)
    }

    /// Checks every field on its own and the fields against each other:
    /// ranges (sizes > 0 and bounded, std ≠ 0, finite numbers, temperature >
    /// 0), one size per label, unique non-empty labels, consistent dimensions.
    pub fn validate(&self) -> Result<(), InvalidMetadata> {
        if self.format == 0 {
            return Err(invalid("format", "is 0; cbr models start at format 1"));
        }
        if self.labels.is_empty() {
            return Err(invalid("labels", "is empty; a classifier has at least one class"));
        }
        let mut seen = HashSet::new();
        for (i, l) in self.labels.iter().enumerate() {
            if l.trim().is_empty() {
                return Err(invalid(format!("labels[{i}]"), "is empty"));
            }
            if l.chars().any(is_line_break) {
                // It would split TFLite's labelmap.txt into more lines than scores.
                return Err(invalid(
                    format!("labels[{i}]"),
                    format!("is {l:?}, which holds a line break"),
                ));
            }
            if !seen.insert(l.as_str()) {
                return Err(invalid(format!("labels[{i}]"), format!("repeats the label {l:?}")));
            }
        }
        if self.images_per_label.len() != self.labels.len() {
            return Err(invalid(
                "images_per_label",
                format!(
                    "has {} entries for {} labels; must have one per label",
                    self.images_per_label.len(),
                    self.labels.len()
                ),
            ));
        }
        if let Some(i) = self.images_per_label.iter().position(|&n| n == 0) {
            return Err(invalid(format!("images_per_label[{i}]"), "is 0; every class has images"));
        }
        let e = &self.embedder;
        for (field, v) in [("embedder.input", &e.input), ("embedder.output", &e.output)] {
            if v.is_empty() {
                return Err(invalid(field, "is empty; must name a tensor of the model"));
            }
        }
        if e.dim == 0 || e.dim > MAX_EMBEDDING_DIM {
            return Err(invalid(
                "embedder.dim",
                format!("is {}; must be 1..={MAX_EMBEDDING_DIM}", e.dim),
            ));
        }
        let p = &self.preprocess;
        for (field, v) in [("preprocess.width", p.width), ("preprocess.height", p.height)] {
            if v == 0 || v > MAX_INPUT_SIDE {
                return Err(invalid(field, format!("is {v}; must be 1..={MAX_INPUT_SIDE}")));
            }
        }
        for c in 0..3 {
            finite(&format!("preprocess.mean[{c}]"), p.mean[c])?;
            let field = format!("preprocess.std[{c}]");
            finite(&field, p.std[c])?;
            if p.std[c] == 0.0 {
                return Err(invalid(field, "is 0; pixels are divided by it"));
            }
        }
        if let Some(v) = self.power {
            positive("power", v)?;
        }
        if let Some(t) = self.temperature {
            positive("temperature", t)?;
        }
        if let Some(t) = self.threshold {
            finite("threshold", t)?;
        }
        if let Some(c) = &self.calibration {
            for (field, v) in [
                ("calibration.temperature", c.temperature),
                ("calibration.threshold", c.threshold),
                ("calibration.target_precision", c.target_precision),
                ("calibration.accuracy", c.accuracy),
                ("calibration.ece_unfitted", c.ece_unfitted),
                ("calibration.ece", c.ece),
                ("calibration.coverage", Some(c.coverage)),
            ] {
                if let Some(v) = v {
                    finite(field, v)?;
                }
            }
        }
        if let Some(u) = &self.unknown_label {
            if u.trim().is_empty() {
                return Err(invalid("unknown_label", "is empty"));
            }
            if self.labels.contains(u) {
                return Err(invalid("unknown_label", format!("is {u:?}, which is also a class")));
            }
            if self.novelty.is_none() {
                return Err(invalid(
                    "novelty",
                    "is missing; a model with an unknown_label has one",
                ));
            }
        }
        if let Some(n) = &self.novelty {
            finite("novelty.offset", n.offset)?;
            positive("novelty.scale", n.scale)?;
            unit_share("novelty.known_target", n.known_target)?;
            if let Some(a) = n.known_accepted {
                unit_share("novelty.known_accepted", a)?;
            }
        }
        if let Some(o) = &self.head_options {
            o.validate_fields("head_options.")?;
            if o.aggregation != self.aggregation {
                return Err(invalid(
                    "head_options.aggregation",
                    format!("is {} but aggregation is {}", o.aggregation, self.aggregation),
                ));
            }
        }
        if let Some(ix) = &self.index {
            if ix.rows == 0 {
                return Err(invalid("index.rows", "is 0; an index has rows"));
            }
            if ix.dim != e.dim {
                return Err(invalid(
                    "index.dim",
                    format!("is {} but embedder.dim is {}", ix.dim, e.dim),
                ));
            }
            if let Some(m) = &ix.mean {
                if m.len() != ix.dim {
                    return Err(invalid(
                        "index.mean",
                        format!("has {} values; must have index.dim = {}", m.len(), ix.dim),
                    ));
                }
                if let Some(i) = m.iter().position(|v| !v.is_finite()) {
                    finite(&format!("index.mean[{i}]"), m[i])?;
                }
            }
        }
        Ok(())
    }

    /// Checks the metadata against the graph it describes: the image input
    /// and the embedding tensor exist under the recorded names, the input's
    /// fixed sizes are the preprocessing's, and the output has one value per
    /// label (`scores`) or per embedding dimension (`embedding`, sidecar models).
    pub fn validate_against(&self, graph: &GraphSignature) -> Result<(), InvalidMetadata> {
        let input =
            graph.inputs.iter().find(|i| i.name == self.embedder.input).ok_or_else(|| {
                let names: Vec<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
                invalid(
                    "embedder.input",
                    format!(
                        "is {:?}, which is not an input of the model (its inputs: {})",
                        self.embedder.input,
                        names.join(", ")
                    ),
                )
            })?;
        let p = &self.preprocess;
        if input.shape.len() == 4 {
            let (h, w, c) = match p.layout {
                Layout::Nchw => (input.shape[2], input.shape[3], input.shape[1]),
                Layout::Nhwc => (input.shape[1], input.shape[2], input.shape[3]),
            };
            for (field, declared, want) in
                [("preprocess.height", h, p.height as i64), ("preprocess.width", w, p.width as i64)]
            {
                if let Some(d) = declared.filter(|&d| d > 0 && d != want) {
                    return Err(invalid(
                        field,
                        format!("is {want} but the model's input {:?} takes {d}", input.name),
                    ));
                }
            }
            if let Some(c) = c.filter(|&c| c > 0 && c != 3) {
                return Err(invalid(
                    "preprocess.layout",
                    format!(
                        "is {:?} but the model's input {:?} has {c} channels there",
                        p.layout, input.name
                    ),
                ));
            }
        }
        if !graph.tensors.contains(&self.embedder.output) {
            return Err(invalid(
                "embedder.output",
                format!("is {:?}, which is not a tensor of the model", self.embedder.output),
            ));
        }
        let (output, want, what) = match &self.index {
            None if self.unknown_label.is_some() => (
                "scores",
                self.score_count(),
                format!("{} labels and an unknown entry", self.labels.len()),
            ),
            None => ("scores", self.score_count(), format!("{} labels", self.labels.len())),
            Some(ix) => ("embedding", ix.dim, format!("{} index.dim", ix.dim)),
        };
        let decl = graph.output(output).ok_or_else(|| {
            invalid(
                if self.index.is_some() { "index" } else { "labels" },
                format!("describe a model with an output {output:?}, which this file lacks"),
            )
        })?;
        if let Some(&Some(n)) = decl.shape.last() {
            if n > 0 && n as usize != want {
                return Err(invalid(
                    if self.index.is_some() { "index.dim" } else { "labels" },
                    format!("has {what} but the model's output {output:?} has {n} values"),
                ));
            }
        }
        Ok(())
    }
}
