//! `cbr eval`: accuracy of a labelled image set over random index/query splits, as tables, JSON
//! or an HTML report.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::eval;
use cbr::pipeline::EmbedOptions;

use super::output::{embed_with_progress, print_skipped};
use super::EmbedderArgs;

#[derive(Args)]
pub struct EvalArgs {
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
    /// Also score images of no known class (a folder, searched recursively): how often they are
    /// answered "unknown", AUROC and FPR at 95% TPR, against the known photos.
    #[arg(long, value_name = "DIR")]
    unknown: Option<PathBuf>,
    /// Print one JSON document with everything instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the embeddings (embeddings.f32, labels.txt, images.txt, paths.txt) here, for
    /// bench/logreg_reference.py.
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

pub fn run(a: EvalArgs) -> Result<()> {
    let mut opts = eval::EvalOptions { shots: a.shots, seeds: a.seeds, ..Default::default() };
    eval::check_options(&opts)?;
    let images = cbr::dataset::from_path(&a.input)?;
    let unknown_images =
        a.unknown.as_deref().map(|d| cbr::dataset::unlabelled(d, "unknown")).transpose()?;
    let mut embedder = cbr::models::open_embedder(&a.embedder.choice()?)?;
    opts.embedder = embedder.info.name.clone();
    let embed_opts = EmbedOptions { augment: a.augment, cache: !a.no_cache, ..Default::default() };
    let embedded = embed_with_progress(&mut embedder, &images, &embed_opts, a.quiet)?;
    print_skipped(&embedded.skipped, a.quiet);
    let unknown_embedded = match &unknown_images {
        Some(images) => {
            // The photos only: queries are never mirrored.
            let opts = EmbedOptions { augment: false, ..embed_opts.clone() };
            let e = embed_with_progress(&mut embedder, images, &opts, a.quiet)?;
            print_skipped(&e.skipped, a.quiet);
            Some(e)
        }
        None => None,
    };
    if let Some(dir) = &a.dump {
        eval::dump(&embedded, dir)?;
    }
    let source = a.input.to_string_lossy();
    let announce = |k: usize| {
        if !a.quiet {
            eprintln!("evaluating {k} shots per class ...");
        }
    };
    let report = eval::run(
        &source,
        &embedder.info.name,
        &embedded,
        unknown_embedded.as_ref(),
        a.augment,
        &opts,
        &announce,
    )?;
    if let Some(path) = &a.report {
        cbr::cache::write_atomic(path, eval::report::html(&report).as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", eval::report::text(&report));
    }
    Ok(())
}
