//! `cbr serve`: the HTTP API and web app, configured from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use cbr::models::{EmbedderChoice, DEFAULT_MODEL};
use cbr_cli::serve::Config;

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
    /// Classifier format for builds with a known embedder: `tflite` uses its TFLite twin (run
    /// in LiteRT). A file given as --embedder decides by itself.
    #[arg(long, value_enum)]
    format: Option<cbr_core::format::ModelFormat>,
    /// Longest time to receive a classify request's image, in seconds: 408 after it. Also how long
    /// a connection may take to send a request's headers (from its opening or its previous
    /// answer): it is closed after it.
    #[arg(long, default_value_t = 10.0)]
    read_timeout: f64,
    /// Models kept loaded for classification at most; the least recently used is unloaded first.
    #[arg(long, default_value_t = Config::default().max_loaded)]
    max_loaded: usize,
    /// Memory the loaded models may take, in MB: what each keeps plus the largest one's run
    /// (each measured when it loads; runs of different models take turns).
    #[arg(long, default_value_t = Config::default().max_loaded_bytes >> 20)]
    max_loaded_mb: u64,
    /// Accept requests for this host name too (besides IP addresses and localhost, which
    /// cannot be DNS-rebound); repeat for several; `*` accepts any (behind a proxy that
    /// checks Host).
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
    /// Let pages from this origin (e.g. https://app.example) send state-changing requests.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Require this access token (default: $CBR_TOKEN; a random one, printed at start, when
    /// --addr is not loopback).
    #[arg(long)]
    token: Option<String>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    cbr_cli::serve::run(Config {
        addr: a.addr,
        models_dir: a.models,
        max_upload: a.max_upload,
        max_pixels: a.max_pixels,
        max_queue: a.max_queue,
        timeout: Duration::from_secs_f64(a.timeout.max(0.001)),
        embedder: EmbedderChoice {
            embedder: a.embedder,
            tflite: a.format == Some(cbr_core::format::ModelFormat::Tflite),
            ..EmbedderChoice::default()
        },
        read_timeout: Duration::from_secs_f64(a.read_timeout.max(0.001)),
        max_loaded: a.max_loaded,
        max_loaded_bytes: a.max_loaded_mb << 20,
        allow_hosts: a.allow_host,
        allow_origins: a.allow_origin,
        token: a.token,
    })
}
