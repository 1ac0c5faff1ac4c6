//! `cbr check`: a labelled image folder → a data-quality report (text, JSON or HTML), from the
//! leave-one-out of the model `cbr build` would build from it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::check::{self, CheckOptions, Thresholds};
use cbr_core::head::{Aggregation, HeadOptions};

use super::output::embed_with_progress;
use super::{EmbedderArgs, InputArgs};

#[derive(Args)]
pub struct CheckArgs {
    /// A folder with one sub-folder of images per label, or a CSV file with columns path,label.
    input: PathBuf,
    /// Print one JSON document (schema "cbr-check/1") instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with thumbnails here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Lines per kind of problem in the text report.
    #[arg(long, default_value_t = 10, value_name = "N")]
    limit: usize,
    /// Likely mislabelled: another class is best and the label's leave-one-out probability is
    /// at most this fraction of chance (1 / classes).
    #[arg(long, default_value_t = Thresholds::default().mislabel_fraction, value_name = "F")]
    mislabel_fraction: f32,
    /// Near-duplicates: cosine of the normalised embeddings at least this.
    #[arg(long, default_value_t = Thresholds::default().duplicate_cosine, value_name = "C")]
    duplicate_cosine: f32,
    /// Outliers: cosine to their class mean at least Z robust deviations below the class median.
    #[arg(long, default_value_t = Thresholds::default().outlier_z, value_name = "Z")]
    outlier_z: f32,
    /// Classes with fewer images need more.
    #[arg(long, default_value_t = Thresholds::default().min_images, value_name = "N")]
    min_images: usize,
    /// The rule whose leave-one-out is used, as `cbr build --aggregate`.
    #[arg(long, value_enum, default_value_t = Aggregation::Discriminant)]
    aggregate: Aggregation,
    #[command(flatten)]
    embedder: EmbedderArgs,
    #[command(flatten)]
    input_args: InputArgs,
}

pub fn run(a: CheckArgs) -> Result<()> {
    let images = cbr::dataset::from_path(&a.input)?;
    let mut embedder = cbr::models::open_embedder(&a.embedder.choice()?)?;
    let head = cbr::models::head_options_for(
        &HeadOptions { aggregation: a.aggregate, ..HeadOptions::default() },
        &embedder.info.name,
    );
    let embed_opts = a.input_args.options_with_head(head.clone(), false).embedding();
    let embedded = embed_with_progress(&mut embedder, &images, &embed_opts, a.input_args.quiet)?;
    // Skipped images (unreadable ones, exact duplicates) are part of the report, not stderr.
    let opts = CheckOptions {
        head,
        thresholds: Thresholds {
            mislabel_fraction: a.mislabel_fraction,
            duplicate_cosine: a.duplicate_cosine,
            outlier_z: a.outlier_z,
            min_images: a.min_images,
            ..Thresholds::default()
        },
    };
    let report = check::check(&embedded, &a.input.to_string_lossy(), &embedder.info.name, &opts)?;
    if let Some(path) = &a.report {
        cbr::cache::write_atomic(path, check::report::html(&report).as_bytes())?;
    }
    if a.json {
        println!("{}", check::report::json(&report));
    } else {
        print!("{}", check::report::text(&report, a.limit));
        if let Some(path) = &a.report {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
