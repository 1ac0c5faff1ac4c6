//! `cbr export-web`: a static web site that builds a classifier on the device and classifies
//! there, starting with no classes or from a model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::EmbedderArgs;

#[derive(Args)]
pub struct ExportWebArgs {
    /// A model built by `cbr build` (ONNX, single file) to start from; without it the site starts
    /// with no classes.
    model: Option<PathBuf>,
    /// The folder to write the site into (replaced if it holds an earlier export and nothing
    /// else; missing folders are created).
    #[arg(short, long)]
    out: PathBuf,
    /// The embedder the page embeds photos with (without MODEL; a model brings its own).
    #[command(flatten)]
    embedder: EmbedderArgs,
}

pub fn run(a: ExportWebArgs) -> Result<()> {
    cbr::export_web::export_dir(a.model.as_deref(), &a.embedder.choice()?, &a.out)?;
    println!("{}", a.out.display());
    eprintln!(
        "serve the folder with any static web server and open index.html: add classes from \
         photos and build on the device (?build=MANIFEST builds from a CSV of path,label), \
         ?image=URL classifies an image on load; the page works offline once opened"
    );
    Ok(())
}
