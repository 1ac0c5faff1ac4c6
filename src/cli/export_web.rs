//! `cbr export-web`: a model as a static web site that classifies on the device.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ExportWebArgs {
    /// A model built by `cbr build` (ONNX, single file).
    model: PathBuf,
    /// The folder to write the site into (replaced if it holds an earlier export and nothing
    /// else; missing folders are created).
    #[arg(short, long)]
    out: PathBuf,
}

pub fn run(a: ExportWebArgs) -> Result<()> {
    cbr::export_web::export_dir(&a.model, &a.out)?;
    println!("{}", a.out.display());
    eprintln!(
        "serve the folder with any static web server and open index.html (add ?image=URL to \
         classify an image on load); the page works offline once opened"
    );
    Ok(())
}
