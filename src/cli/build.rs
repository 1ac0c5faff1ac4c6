//! `cbr build`: labelled images (or embedding shards) → a classifier file, with a summary.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::build::{self, BuildReport};
use cbr_core::build::BuildRequest;
use cbr_core::format::ModelFormat;

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
    #[command(flatten)]
    request: BuildRequest,
    #[command(flatten)]
    embedder: EmbedderArgs,
    #[command(flatten)]
    input_args: InputArgs,
}

pub fn run(a: BuildArgs) -> Result<()> {
    // Before any work (no embedder loaded, no image read): options no model can hold.
    a.request.validate()?;
    let format = ModelFormat::for_output(&a.output, a.request.format);
    a.request.check_format(format)?;
    let mut embedder = build::open_embedder_for(&a.embedder.choice()?, format)?;
    let opts = a.input_args.build_options(&a.request);
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
        (Some(t), Some(p)) if a.request.threshold.is_none() => eprintln!(
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
