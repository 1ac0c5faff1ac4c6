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
    let preprocess = classifier.info.preprocess.clone();
    let limits = DecodeLimits::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    // Decoding runs one chunk ahead of scoring, as in `build`.
    cbr::pipeline::decode_ahead(&a.images, &preprocess, &limits, |range, decoded| {
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
            print_prediction(&mut out, path, &p, a.json)?;
        }
        Ok(())
    })?;
    if failures > 0 {
        bail!("{failures} of {} images could not be classified", a.images.len());
    }
    Ok(())
}
