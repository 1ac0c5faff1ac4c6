//! Building a classifier: [`BuildRequest`], the one description of a build
//! that every front end fills (the command line's flags, the server's JSON,
//! Python's keyword arguments, JavaScript's object) with one set of defaults;
//! the checks every build makes; and the head with the embedder's calibration
//! prior. Writing the file is [`crate::format::write_classifier`].

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::format::ModelFormat;
use crate::head::{Aggregation, HeadOptions, Index, IndexDtype, RetrievalHead};
use crate::meta::DEFAULT_KNOWN_TARGET;
use crate::tflite::{About, TfliteBlock, TfliteOptions};

/// What to build, beyond the images and the embedder: the rule and its
/// options, the index, and the file. Every field has a default
/// ([`BuildRequest::default`], the one set of defaults), so a request names
/// only what it changes: `{"aggregate": "max"}` in JSON, `aggregate="max"`
/// in Python, `--aggregate max` on the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildRequest {
    /// How the index becomes class scores: discriminant (a shrinkage linear
    /// discriminant computed from the index; the most accurate), centroid,
    /// max (the original rule: best-matching image) or blend (max + centroid).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = defaults().aggregate))]
    pub aggregate: Aggregation,
    /// Power transform sign(x)|x|^P of the embedding before normalising (1 = none).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().power, value_name = "P"))]
    pub power: f32,
    /// Subtract the index mean from embeddings before normalising (CL2N).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().center, action = clap::ArgAction::Set, value_name = "true|false"))]
    pub center: bool,
    /// Fit a softmax temperature on the index (leave-one-out) so scores are calibrated
    /// probabilities.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().calibrate, action = clap::ArgAction::Set, value_name = "true|false"))]
    pub calibrate: bool,
    /// Also index a mirror image of every image (helps with few images per class; 2x embedding
    /// time).
    #[cfg_attr(feature = "clap", arg(long))]
    pub augment: bool,
    /// The model's "unknown" entry (the last of `scores`: the probability that an image is of
    /// none of the classes, from its similarity to the class means) is tuned so that this share of
    /// photos of the known classes is answered (leave-one-out on the index; with one image per
    /// class, the embedder's prior).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().known_target, value_name = "SHARE"))]
    pub known_target: f32,
    /// No "unknown" entry in `scores` (one score per class, as before).
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "known_target"))]
    pub no_unknown: bool,
    /// Also answer "unknown" when the best class's score is below a threshold chosen by
    /// leave-one-out for this precision.
    #[cfg_attr(feature = "clap", arg(long, value_name = "P"))]
    pub target_precision: Option<f32>,
    /// Also answer "unknown" when the best class's score is below T (overrides
    /// --target-precision; required for a one-class model).
    #[cfg_attr(feature = "clap", arg(long, value_name = "T"))]
    pub threshold: Option<f32>,
    /// The original classification-by-retrieval: --aggregate max --power 1 --center false
    /// --calibrate false, no threshold.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with_all = ["aggregate", "power", "center", "calibrate", "target_precision", "known_target"]))]
    pub original: bool,
    /// How index rows are stored in the model: f32 (exact), f16 (half the
    /// size) or int8 (a quarter; one scale per row).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = defaults().index_dtype, value_name = "f32|f16|int8"))]
    pub index_dtype: IndexDtype,
    /// Where the index rows go: in the model file (single), in an approximate
    /// search index beside it (ivf: NAME.ivf next to NAME.onnx; max rule only;
    /// for millions of images), or auto (ivf when the rows would not fit in
    /// an ONNX file and the rule is max).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = defaults().index))]
    pub index: IndexChoice,
    /// Index cells scanned per query with --index ivf (0 = default: cells/16, at least 16).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults().ivf_nprobe, value_name = "N"))]
    pub ivf_nprobe: usize,
    /// The model file format; default: from the output's extension (.tflite, else onnx).
    /// A TFLite classifier needs a .tflite embedder, or a known model (its TFLite twin is used).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub format: Option<ModelFormat>,
    /// TFLite only: the retrieval block's arithmetic. int8 (as the original CBR does for quantized
    /// embedders) stores the index in 4x less space; scores move by ~1e-2.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = defaults().tflite_block))]
    pub tflite_block: TfliteBlock,
    /// TFLite Model Metadata: the model's name.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub name: Option<String>,
    /// TFLite Model Metadata: a description (default: what was built from what).
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub description: Option<String>,
    /// TFLite Model Metadata: the author.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub author: Option<String>,
    /// TFLite Model Metadata: the model's version.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub model_version: Option<String>,
    /// TFLite Model Metadata: the licence.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub license: Option<String>,
}

/// The defaults, chosen by measurement (README, "Accuracy").
#[cfg(feature = "clap")]
fn defaults() -> BuildRequest {
    BuildRequest::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_only_what_it_changes_and_errors_name_the_option() {
        let r =
            BuildRequest::from_json(&serde_json::json!({"aggregate": "max", "power": 1})).unwrap();
        assert_eq!(
            r,
            BuildRequest { aggregate: Aggregation::Max, power: 1.0, ..Default::default() }
        );
        assert_eq!(
            BuildRequest::from_json(&serde_json::json!({})).unwrap(),
            BuildRequest::default()
        );
        let e = BuildRequest::from_json(&serde_json::json!({"aggregate": "mean"})).unwrap_err();
        assert!(e.to_string().starts_with("build option aggregate: unknown variant `mean`"), "{e}");
        let e = BuildRequest::from_json(&serde_json::json!({"agregate": "max"})).unwrap_err();
        assert!(e.to_string().contains("unknown field `agregate`"), "{e}");
        // The defaults are the head's.
        assert_eq!(BuildRequest::default().head_options(), HeadOptions::default());
        let original = BuildRequest { original: true, ..Default::default() }.head_options();
        assert_eq!(original, HeadOptions::original());
    }
}

impl Default for BuildRequest {
    fn default() -> Self {
        let head = HeadOptions::default();
        BuildRequest {
            aggregate: head.aggregation,
            power: head.power,
            center: head.center,
            calibrate: head.calibrate,
            augment: false,
            known_target: DEFAULT_KNOWN_TARGET,
            no_unknown: false,
            target_precision: None,
            threshold: None,
            original: false,
            index_dtype: head.index_dtype,
            index: IndexChoice::Auto,
            ivf_nprobe: 0,
            format: None,
            tflite_block: TfliteBlock::Float,
            name: None,
            description: None,
            author: None,
            model_version: None,
            license: None,
        }
    }
}

impl BuildRequest {
    /// The request of a JSON object of options (the server's body, Python's keyword
    /// arguments, JavaScript's object): what it leaves out takes the default; an unknown
    /// name or a wrong value is an error naming the option.
    pub fn from_json(json: &serde_json::Value) -> Result<BuildRequest> {
        let bad = |m: String| -> anyhow::Error { Error::bad_input(m).into() };
        let options = json
            .as_object()
            .ok_or_else(|| bad(format!("build options must be an object, not {json}")))?;
        // One option at a time, so that an error names the option it is about.
        for (name, value) in options {
            let one = serde_json::json!({ name: value });
            serde_json::from_value::<BuildRequest>(one).map_err(|e| {
                let e = e.to_string();
                let e = e.split(" at line ").next().unwrap_or(&e);
                bad(format!("build option {name}: {e}"))
            })?;
        }
        let request: BuildRequest =
            serde_json::from_value(json.clone()).map_err(|e| bad(format!("build options: {e}")))?;
        request.validate()?;
        Ok(request)
    }

    /// Refuses a request no readable model can hold ([`validate_head_options`]), before any
    /// work: every front end's request passes here ([`BuildRequest::from_json`] calls it).
    pub fn validate(&self) -> Result<()> {
        validate_head_options(&self.head_options())
    }

    /// The head the request asks for (`original` keeps only `threshold` and `index_dtype`;
    /// the unknown entry is a probability, so it needs `calibrate`).
    pub fn head_options(&self) -> HeadOptions {
        if self.original {
            return HeadOptions {
                threshold: self.threshold,
                index_dtype: self.index_dtype,
                ..HeadOptions::original()
            };
        }
        HeadOptions {
            aggregation: self.aggregate,
            power: self.power,
            center: self.center,
            calibrate: self.calibrate,
            target_precision: self.target_precision,
            threshold: self.threshold,
            index_dtype: self.index_dtype,
            known_target: (!self.no_unknown && self.calibrate).then_some(self.known_target),
            ..HeadOptions::default()
        }
    }

    /// The TFLite file's choices (block arithmetic, Model Metadata).
    pub fn tflite_options(&self) -> TfliteOptions {
        TfliteOptions {
            block: self.tflite_block,
            about: About {
                name: self.name.clone(),
                description: self.description.clone(),
                author: self.author.clone(),
                version: self.model_version.clone(),
                license: self.license.clone(),
            },
        }
    }

    /// Refuses TFLite-only choices (block arithmetic, Model Metadata) for another format.
    pub fn check_format(&self, format: ModelFormat) -> Result<()> {
        if format != ModelFormat::Tflite && self.tflite_options() != TfliteOptions::default() {
            return Err(Error::bad_input(
                "--tflite-block, --name, --description, --author, --model-version and --license \
                 apply to TFLite output: use -o NAME.tflite or --format tflite",
            )
            .into());
        }
        Ok(())
    }
}

/// Refuses head options no readable model can hold (a NaN, infinite or zero power, a share or
/// precision outside 0..=1, a NaN threshold), before any work is done: `BadInput`, named as the
/// command line's flag (`--power`), which is also the JSON and Python name with `_`.
pub fn validate_head_options(head: &HeadOptions) -> Result<()> {
    head.validate().map_err(|e| {
        let flag = e.field.replace(['_', '.'], "-");
        Error::bad_input(format!("invalid build option --{flag}: it {}", e.problem)).into()
    })
}

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
