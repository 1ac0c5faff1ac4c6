//! `cbr serve`: the HTTP API and web app, configured from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use cbr::models::{EmbedderChoice, DEFAULT_MODEL};
use cbr::serve::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where models (their images and built files) are kept.
    #[arg(long, default_value = "cbr-models")]
    models: PathBuf,
    /// Largest request body (upload) in bytes: 413 above it.
    #[arg(long, default_value_t = Config::default().max_upload)]
    max_upload: usize,
    /// Largest image in pixels: 413 above it.
    #[arg(long, default_value_t = Config::default().max_pixels)]
    max_pixels: u64,
    /// Classify requests in flight at once: 503 with Retry-After beyond it.
    #[arg(long, default_value_t = Config::default().max_queue)]
    max_queue: usize,
    /// Longest time a request may take, in seconds: 503 after it.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Embedder for builds: a name from `cbr models list`, or an .onnx or .tflite file
    /// (a .tflite embedder gives TFLite classifiers).
    #[arg(long, default_value = DEFAULT_MODEL)]
    embedder: String,
}

pub fn run(a: ServeArgs) -> Result<()> {
    cbr::serve::run(Config {
        addr: a.addr,
        models_dir: a.models,
        max_upload: a.max_upload,
        max_pixels: a.max_pixels,
        max_queue: a.max_queue,
        timeout: Duration::from_secs_f64(a.timeout.max(0.001)),
        embedder: EmbedderChoice { embedder: a.embedder, ..EmbedderChoice::default() },
    })
}
