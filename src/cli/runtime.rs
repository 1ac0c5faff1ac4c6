//! `cbr runtime install|path`: ONNX Runtime and LiteRT, the libraries cbr loads at run time, and
//! onnxruntime-web, the files `cbr export-web` puts beside a model.

use anyhow::Result;
use clap::Subcommand;

use cbr::export_web::ort_web;
use cbr::runtime::{litert, onnxruntime as runtime};

#[derive(Subcommand)]
pub enum RuntimeCommand {
    /// Fetch ONNX Runtime and LiteRT (the TFLite runtime) from PyPI (pip download) into cbr's
    /// cache.
    Install {
        /// Also fetch onnxruntime-web (for `cbr export-web` and the web app's on-device mode)
        /// from npm (npm pack).
        #[arg(long)]
        web: bool,
    },
    /// Print the paths of the ONNX Runtime and LiteRT libraries cbr would load, and the folder
    /// of onnxruntime-web's files.
    Path,
}

/// Installs (or locates) both runtimes: ONNX Runtime first, then LiteRT.
pub fn run(command: RuntimeCommand) -> Result<()> {
    let install = matches!(command, RuntimeCommand::Install { .. });
    let ort = if install { runtime::install()? } else { runtime::library_path()? };
    println!("{}", ort.display());
    match if install { litert::install() } else { litert::library_path() } {
        Ok(p) => println!("{}", p.display()),
        // Only .tflite models need LiteRT: say so, without failing.
        Err(e) if !install => eprintln!("{e:#}"),
        Err(e) => return Err(e),
    }
    match command {
        RuntimeCommand::Install { web: true } => println!("{}", ort_web::install()?.display()),
        RuntimeCommand::Install { web: false } => {}
        // Only `cbr export-web` needs it: say where it is, or how to get it, without failing.
        RuntimeCommand::Path => match ort_web::files() {
            Ok(_) => println!("{}", ort_web::cached_dir()?.display()),
            Err(e) => eprintln!("{e:#}"),
        },
    }
    Ok(())
}
