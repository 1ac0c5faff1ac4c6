//! How the commands show progress and results on a terminal: the progress bar, skipped images,
//! one line per classified image (text or JSON).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Result;

use cbr::classifier::Prediction;
use cbr::dataset::LabelledImage;
use cbr::embedder::Embedder;
use cbr::pipeline::{EmbedOptions, Embedded, Skipped};
use cbr::printable::printable;

/// [`cbr::pipeline::embed_images`] (nothing known in advance) with a progress bar on stderr.
pub fn embed_with_progress(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    opts: &EmbedOptions,
    quiet: bool,
) -> Result<Embedded> {
    let bar = progress_bar(images.len(), quiet);
    let progress = |done: usize| bar.set_position(done as u64);
    let embedded =
        cbr::pipeline::embed_images(embedder, images, opts, &Default::default(), &progress)?;
    bar.finish_and_clear();
    Ok(embedded)
}

/// A progress bar over `total` images on stderr; hidden when quiet or stderr is not a terminal.
pub fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
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

/// One stderr line per image that was skipped, with its reason, escaped
/// ([`cbr::printable`]); with `quiet`, one line with their count.
pub fn print_skipped(skipped: &[Skipped], quiet: bool) {
    for line in cbr::printable::skip_report(skipped, quiet) {
        eprintln!("{line}");
    }
}

/// One line for a classified image: `path: label (score), ...` or a JSON object.
pub fn print_prediction(
    out: &mut impl Write,
    path: &Path,
    p: &Prediction,
    json: bool,
) -> Result<()> {
    if json {
        writeln!(out, "{}", cbr::classifier::prediction_json(Some(path), p))?;
        return Ok(());
    }
    let best: Vec<String> =
        p.top.iter().map(|t| format!("{} ({:.3})", printable(&t.label), t.score)).collect();
    let path = cbr::printable::path(path);
    match &p.label {
        Some(_) => writeln!(out, "{path}: {}", best.join(", "))?,
        None => match p.unknown_score {
            Some(u) => writeln!(out, "{path}: unknown ({u:.3}; best: {})", best.join(", "))?,
            None => writeln!(out, "{path}: unknown (best: {})", best.join(", "))?,
        },
    }
    Ok(())
}

/// An image that could not be classified: a JSON line on stdout, or a line on stderr.
pub fn print_failure(out: &mut impl Write, path: &Path, reason: &str, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", cbr::classifier::failure_json(path, reason))?;
    } else {
        eprintln!("{}: {}", cbr::printable::path(path), printable(reason));
    }
    Ok(())
}
