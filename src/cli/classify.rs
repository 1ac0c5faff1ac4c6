//! `cbr classify`: images → one line per image with the best classes (text or JSON).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use cbr::classifier::Classifier;
use cbr::decode::DecodeLimits;

use super::output::{print_failure, print_prediction};

#[derive(Args)]
pub struct ClassifyArgs {
    /// A model built by `cbr build`.
    model: PathBuf,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(short = 'k', long, default_value_t = 3)]
    top_k: usize,
    /// One JSON object per image per line: {"path": ..., "label": ... or null, "top": [{"label":
    /// ..., "score": ...}]}.
    #[arg(long)]
    json: bool,
    /// Answer "unknown" exactly when the best class's score is below this, instead of the model's
    /// own decision (its unknown entry, and its threshold if it has one); 0 answers every image.
    #[arg(long, value_name = "T")]
    threshold: Option<f32>,
}

pub fn run(a: ClassifyArgs) -> Result<()> {
    let mut classifier = Classifier::open(&a.model)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    classifier.classify_files(
        &a.images,
        a.top_k,
        a.threshold,
        &DecodeLimits::default(),
        |i, result| match result {
            Ok(p) => print_prediction(&mut out, &a.images[i], &p, a.json),
            Err(e) => {
                failures += 1;
                print_failure(&mut out, &a.images[i], &e.to_string(), a.json)
            }
        },
    )?;
    if failures > 0 {
        bail!("{failures} of {} images could not be classified", a.images.len());
    }
    Ok(())
}
