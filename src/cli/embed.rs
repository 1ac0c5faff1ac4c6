//! `cbr embed`: one shard of labelled images → a Parquet file of embeddings.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cbr::shard::Shard;
use cbr_core::head::HeadOptions;

use super::output::{print_skipped, progress_bar};
use super::{EmbedderArgs, InputArgs};

#[derive(Args)]
pub struct EmbedArgs {
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

pub fn run(a: EmbedArgs) -> Result<()> {
    let images = cbr::dataset::from_path(&a.input)?;
    let mut embedder = cbr::models::open_embedder(&a.embedder.choice()?)?;
    let opts = a.input_args.options_with_head(HeadOptions::default(), a.augment);
    let bar = progress_bar(a.shard.of(&images).len(), a.input_args.quiet);
    let progress = |done: usize| bar.set_position(done as u64);
    let embedded = cbr::shard::embed_to_file(
        &mut embedder,
        &images,
        a.shard,
        &opts.embedding(),
        &a.output,
        &progress,
    )?;
    bar.finish_and_clear();
    print_skipped(&embedded.skipped, a.input_args.quiet);
    if !a.input_args.quiet {
        let embedded_now = embedded.paths.len() - embedded.cached;
        let rate = if embedded_now > 0 {
            let ms = 1000.0 * embedded.seconds / embedded_now as f64;
            format!(", {ms:.1} ms per embedded image")
        } else {
            String::new()
        };
        eprintln!(
            "wrote {}: shard {}/{} of {} images: {} embedded ({} from the embedding cache), \
             {} skipped; {:.1} s{rate}",
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
