//! The `cbr` command line: parse the arguments, run one command, report an error.
//!
//! Each command lives in its own module under `src/cli/` and turns its arguments into one
//! library call and its output.

// Every `unsafe` says why it is sound (checked by clippy in CI).
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Classification-by-retrieval: build an image classifier from a few labelled
/// pictures per class, with no training, as one ONNX model file.
#[derive(Parser)]
#[command(name = "cbr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a classifier from labelled images: a folder <root>/<label>/<images> or a CSV
    /// manifest (path,label).
    Build(cli::build::BuildArgs),
    /// Embed (a shard of) labelled images into a Parquet file, for `cbr build --embeddings`
    /// (distributed embedding).
    Embed(cli::embed::EmbedArgs),
    /// Classify images with a model built by `cbr build`.
    Classify(cli::classify::ClassifyArgs),
    /// Add images (new or existing labels) to a model; only the new images are embedded.
    Add(cli::edit::AddArgs),
    /// Remove classes from a model.
    Remove(cli::edit::RemoveArgs),
    /// Rename a class of a model (or merge it into another).
    Relabel(cli::edit::RelabelArgs),
    /// Write a model as a self-contained static web site that classifies on the device
    /// (onnxruntime-web; installable, works offline).
    ExportWeb(cli::export_web::ExportWebArgs),
    /// Show what a model contains: labels, images per label, embedder, preprocessing.
    Info(cli::info::InfoArgs),
    /// List or fetch the embedders cbr knows by name.
    #[command(subcommand)]
    Models(cli::models::ModelsCommand),
    /// Install or locate ONNX Runtime and LiteRT, which cbr loads at run time.
    #[command(subcommand)]
    Runtime(cli::runtime::RuntimeCommand),
    /// Serve the HTTP API and the web app to build and try classifiers (see /openapi.json).
    Serve(cli::serve::ServeArgs),
    /// Check a labelled image set before shipping a model: likely mislabelled images,
    /// duplicates, outliers, confusable classes, classes that need more images.
    Check(cli::check::CheckArgs),
    /// Measure accuracy on a labelled image set: K images per class as the index, the rest as
    /// queries, over random splits.
    Eval(cli::eval::EvalArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns `cbr info m.onnx | head` into a panic;
    // the default action ends the process quietly, as other tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Still one thread: setting the environment is safe here.
    cbr::runtime::onnxruntime::disable_telemetry();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line: "error: model m.onnx: cannot ...".
            // Control characters from file names or model files are escaped (line by line: a
            // message may list problems on lines of their own), so none drives the terminal.
            let message = format!("{e:#}");
            let lines: Vec<_> = message.split('\n').map(cbr::printable::printable).collect();
            eprintln!("error: {}", lines.join("\n"));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Build(a) => cli::build::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Classify(a) => cli::classify::run(a),
        Command::Add(a) => cli::edit::add(a),
        Command::Remove(a) => cli::edit::remove(a),
        Command::Relabel(a) => cli::edit::relabel(a),
        Command::ExportWeb(a) => cli::export_web::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Models(c) => cli::models::run(c),
        Command::Runtime(c) => cli::runtime::run(c),
        Command::Serve(a) => cli::serve::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Check(a) => cli::check::run(a),
    }
}
