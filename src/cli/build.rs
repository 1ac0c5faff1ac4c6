//! `cbr build`: labelled images (or embedding shards) → a classifier file, with a summary.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::build::{self, BuildReport};
use cbr::format::ModelFormat;
use cbr::head::{Aggregation, IndexDtype};
use cbr::meta::HeadFlags;
use cbr::search::IvfParams;
use cbr::sidecar::IndexChoice;
use cbr::tflite::{About, TfliteBlock, TfliteOptions};

use super::output::{print_skipped, progress_bar};
use super::{EmbedderArgs, InputArgs};

#[derive(Args)]
pub struct BuildArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    #[arg(required_unless_present = "embeddings", conflicts_with = "embeddings")]
    input: Option<PathBuf>,
    /// Build from embeddings made by `cbr embed` instead of images: Parquet files, folders or
    /// patterns like 'parts/*.parquet'.
    #[arg(long, num_args = 1.., value_name = "PARQUET")]
    embeddings: Vec<String>,
    /// Where to write the model (.onnx or .tflite); missing folders are created.
    #[arg(short, long)]
    output: PathBuf,
    /// The model file format; default: from the output's extension (.tflite, else onnx).
    /// A TFLite classifier needs a .tflite embedder, or a known model (its TFLite twin is used).
    #[arg(long, value_enum)]
    format: Option<ModelFormat>,
    /// TFLite only: the retrieval block's arithmetic. int8 (as the original CBR does for quantized
    /// embedders) stores the index in 4x less space; scores move by ~1e-2.
    #[arg(long, value_enum, default_value_t = TfliteBlock::Float)]
    tflite_block: TfliteBlock,
    /// TFLite Model Metadata: the model's name.
    #[arg(long, value_name = "TEXT")]
    name: Option<String>,
    /// TFLite Model Metadata: a description (default: what was built from what).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// TFLite Model Metadata: the author.
    #[arg(long, value_name = "TEXT")]
    author: Option<String>,
    /// TFLite Model Metadata: the model's version.
    #[arg(long, value_name = "TEXT")]
    model_version: Option<String>,
    /// TFLite Model Metadata: the licence.
    #[arg(long, value_name = "TEXT")]
    license: Option<String>,
    #[command(flatten)]
    embedder: EmbedderArgs,
    /// How the index becomes class scores: discriminant (a shrinkage linear
    /// discriminant computed from the index; the most accurate), centroid,
    /// max (the original rule: best-matching image) or blend (max + centroid).
    #[arg(long, value_enum, default_value_t = Aggregation::Discriminant)]
    aggregate: Aggregation,
    /// Power transform sign(x)|x|^P of the embedding before normalising (1 = none).
    #[arg(long, default_value_t = 0.5, value_name = "P")]
    power: f32,
    /// Subtract the index mean from embeddings before normalising (CL2N).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    center: bool,
    /// Fit a softmax temperature on the index (leave-one-out) so scores are calibrated
    /// probabilities.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    calibrate: bool,
    /// Also index a mirror image of every image (helps with few images per class; 2x embedding
    /// time).
    #[arg(long)]
    augment: bool,
    /// The model's "unknown" entry (the last of `scores`: the probability that an image is of
    /// none of the classes, from its similarity to the class means) is tuned so that this share of
    /// photos of the known classes is answered (leave-one-out on the index; with one image per
    /// class, the embedder's prior).
    #[arg(long, default_value_t = cbr::meta::DEFAULT_KNOWN_TARGET, value_name = "SHARE")]
    known_target: f32,
    /// No "unknown" entry in `scores` (one score per class, as before).
    #[arg(long, conflicts_with = "known_target")]
    no_unknown: bool,
    /// Also answer "unknown" when the best class's score is below a threshold chosen by
    /// leave-one-out for this precision.
    #[arg(long, value_name = "P")]
    target_precision: Option<f32>,
    /// Also answer "unknown" when the best class's score is below T (overrides
    /// --target-precision; required for a one-class model).
    #[arg(long, value_name = "T")]
    threshold: Option<f32>,
    /// Where the index rows go: in the model file (single), in an approximate
    /// search index beside it (ivf: NAME.ivf next to NAME.onnx; max rule only;
    /// for millions of images), or auto (ivf when the rows would not fit in
    /// an ONNX file and the rule is max).
    #[arg(long, value_enum, default_value_t = IndexChoice::Auto)]
    index: IndexChoice,
    /// Index cells scanned per query with --index ivf (0 = default: cells/16, at least 16).
    #[arg(long, default_value_t = 0, value_name = "N")]
    ivf_nprobe: usize,
    /// The original classification-by-retrieval: --aggregate max --power 1 --center false
    /// --calibrate false, no threshold.
    #[arg(
        long,
        conflicts_with_all = ["aggregate", "power", "center", "calibrate", "target_precision", "known_target"]
    )]
    original: bool,
    /// How index rows are stored in the model: f32 (exact), f16 (half the
    /// size) or int8 (a quarter; one scale per row).
    #[arg(long, value_enum, default_value_t = IndexDtype::F32, value_name = "f32|f16|int8")]
    index_dtype: IndexDtype,
    #[command(flatten)]
    input_args: InputArgs,
}

pub fn run(a: BuildArgs) -> Result<()> {
    let format = ModelFormat::for_output(&a.output, a.format);
    let tflite = TfliteOptions {
        block: a.tflite_block,
        about: About {
            name: a.name.clone(),
            description: a.description.clone(),
            author: a.author.clone(),
            version: a.model_version.clone(),
            license: a.license.clone(),
        },
    };
    build::check_format_options(format, &tflite)?;
    let head = HeadFlags {
        aggregation: a.aggregate,
        power: a.power,
        center: a.center,
        calibrate: a.calibrate,
        known_target: (!a.no_unknown).then_some(a.known_target),
        target_precision: a.target_precision,
        threshold: a.threshold,
        index_dtype: a.index_dtype,
        original: a.original,
    }
    .options();
    let opts = build::BuildOptions {
        index: a.index,
        ivf: IvfParams { nprobe: a.ivf_nprobe, ..IvfParams::default() },
        tflite,
        ..a.input_args.build_options(head, a.augment)
    };
    // Before any work: no embedder is loaded, no image read, for options no model can hold.
    opts.validate()?;
    let mut embedder = build::open_embedder_for(&a.embedder.choice()?, format)?;
    let (built, report) = match &a.input {
        Some(input) => {
            let images = cbr::dataset::from_path(input)?;
            let bar = progress_bar(images.len(), a.input_args.quiet);
            let progress = |done: usize| bar.set_position(done as u64);
            let built = build::build(&mut embedder, &images, &opts, &progress)?;
            bar.finish_and_clear();
            built
        }
        None => {
            let shards = cbr::shard::expand(&a.embeddings)?;
            build::build_from_shards(&embedder, &shards, &opts)?
        }
    };
    built.write(&a.output)?;
    if a.input_args.quiet {
        print_skipped(&report.skipped, true);
    } else {
        if built.index.is_some() {
            let index = cbr::sidecar::index_path(&a.output);
            eprintln!("index rows in {} (approximate search, max rule)", index.display());
        }
        print_summary(&a, &report, &embedder.info.name);
    }
    Ok(())
}

/// What the build did: skipped images, calibration, threshold, and one closing line.
fn print_summary(a: &BuildArgs, report: &BuildReport, embedder: &str) {
    print_skipped(&report.skipped, false);
    let skipped = if report.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped", report.skipped.len())
    };
    if let Some(c) = &report.calibration {
        if let (Some(acc), Some(t), Some(e0), Some(e1)) =
            (c.accuracy, c.temperature, c.ece_unfitted, c.ece)
        {
            eprintln!(
                "calibrated on the index (leave-one-out, {} images): accuracy {:.1}%, \
                 temperature {t:.4}, expected calibration error {e0:.3} -> {e1:.3}",
                c.samples,
                100.0 * acc
            );
        }
    }
    if let Some(c) = report.calibration.as_ref().filter(|c| c.samples == 0) {
        if let Some(t) = c.temperature {
            eprintln!(
                "one image per class: nothing to leave out, so the temperature ({t:.4}) comes \
                 from the embedder's prior"
            );
        }
    }
    if let Some(n) = &report.novelty {
        match n.known_accepted {
            Some(acc) => eprintln!(
                "unknown entry: answers {:.0}% of leave-one-out photos (target {:.0}%; novelty \
                 offset {:.3}, scale {:.1})",
                100.0 * acc,
                100.0 * n.known_target,
                n.offset,
                n.scale
            ),
            None => eprintln!(
                "unknown entry: novelty offset {:.3}, scale {:.1} from the {}",
                n.offset, n.scale, n.source
            ),
        }
    }
    match (report.threshold, report.calibration.as_ref().and_then(|c| c.target_precision)) {
        (Some(t), Some(p)) if a.threshold.is_none() => eprintln!(
            "unknown threshold {t:.3} (for {:.0}% precision; accepts {:.0}% of leave-one-out \
             queries); override with classify --threshold",
            100.0 * p,
            100.0 * report.calibration.as_ref().map(|c| c.coverage).unwrap_or(1.0)
        ),
        (Some(t), _) => eprintln!("unknown threshold {t:.3}"),
        _ => {}
    }
    let source = match &a.input {
        Some(_) => {
            // Skipped files never reached the embedder.
            let embedded = report.images - report.cached;
            let cached = if report.cached > 0 {
                format!(" ({} from the embedding cache)", report.cached)
            } else {
                String::new()
            };
            format!(
                "embedded {embedded} in {:.1} s ({:.1} images/s){cached}",
                report.seconds,
                embedded as f64 / report.seconds.max(1e-9)
            )
        }
        None => format!("read from embedding shards in {:.1} s", report.seconds),
    };
    eprintln!(
        "wrote {}: {} classes, {} images{skipped}; {source} with {embedder}",
        a.output.display(),
        report.classes,
        report.images,
    );
}
