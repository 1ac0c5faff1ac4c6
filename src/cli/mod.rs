//! The commands of the `cbr` binary, one module each: arguments → library call → output.
//! Argument groups several commands share (the embedder, how images are read) live here.

pub mod build;
pub mod check;
pub mod classify;
pub mod edit;
pub mod embed;
pub mod eval;
pub mod export_web;
pub mod info;
pub mod models;
pub mod output;
pub mod runtime;
pub mod serve;

use anyhow::{bail, Context, Result};
use clap::Args;

use cbr::build::BuildOptions;
use cbr::decode::DecodeLimits;
use cbr::models::EmbedderChoice;
use cbr_core::build::BuildRequest;
use cbr_core::head::HeadOptions;
use cbr_core::preprocess::{Resample, ResizeMode};

/// Which embedder, and how images are prepared for it (build, embed, eval).
#[derive(Args)]
pub struct EmbedderArgs {
    /// Embedder: a name from `cbr models list`, or the path of an .onnx or .tflite image embedder.
    #[arg(long, default_value = cbr::models::DEFAULT_MODEL)]
    embedder: String,
    /// Name of the embedder output to use (default: the first output).
    #[arg(long = "embedding-output", value_name = "NAME")]
    embedding_output: Option<String>,
    /// Input size, WIDTHxHEIGHT or N (default: from the model).
    #[arg(long, value_name = "WxH")]
    input_size: Option<String>,
    /// Per-channel mean subtracted from 0..255 pixel values: one value or three (R,G,B)
    /// (default for uint8/int8 .tflite inputs: the raw pixels, from the input's quantization).
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    mean: Option<Vec<f32>>,
    /// Per-channel divisor applied after the mean: one value or three (R,G,B).
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    std: Option<Vec<f32>>,
    /// Feed channels in BGR order instead of RGB.
    #[arg(long)]
    bgr: bool,
    /// How images are brought to the input size.
    #[arg(long, value_enum)]
    resize: Option<ResizeMode>,
    /// The resize filter: antialiased (PIL's bilinear), or mediapipe (what MediaPipe's
    /// ImageClassifier does, so a model answers there as here). Default: mediapipe for TFLite
    /// classifiers, antialiased otherwise.
    #[arg(long, value_enum)]
    resample: Option<Resample>,
}

impl EmbedderArgs {
    /// The embedder choice the flags describe.
    pub fn choice(&self) -> Result<EmbedderChoice> {
        Ok(EmbedderChoice {
            embedder: self.embedder.clone(),
            output: self.embedding_output.clone(),
            input_size: self.input_size.as_deref().map(parse_size).transpose()?,
            mean: self.mean.as_deref().map(|m| three(m, "mean")).transpose()?,
            std: self.std.as_deref().map(|s| three(s, "std")).transpose()?,
            bgr: self.bgr,
            tflite: false,
            resize: self.resize,
            resample: self.resample,
        })
    }
}

/// How images are read and embedded (build, embed and add).
#[derive(Args)]
pub struct InputArgs {
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Refuse images with more pixels than this (protects memory).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// Neither use nor fill the embedding cache (in cbr's cache directory, keyed by image
    /// content and embedder).
    #[arg(long)]
    no_cache: bool,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
}

impl InputArgs {
    /// The options of `request` with these input flags.
    pub fn build_options(&self, request: &BuildRequest) -> BuildOptions {
        BuildOptions {
            strict: self.strict,
            limits: DecodeLimits { max_pixels: self.max_pixels, ..DecodeLimits::default() },
            cache: !self.no_cache,
            ..BuildOptions::of_request(request)
        }
    }

    /// The options for embedding with `head` (an edit keeps its model's head; embed and
    /// check need only the head's power and dtype).
    pub fn options_with_head(&self, head: HeadOptions, augment: bool) -> BuildOptions {
        BuildOptions { head, augment, ..self.build_options(&BuildRequest::default()) }
    }
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .with_context(|| format!("bad --input-size {s:?}: expected WIDTHxHEIGHT or N"))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

fn three(v: &[f32], flag: &str) -> Result<[f32; 3]> {
    match v {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("--{flag} takes one value or three (R,G,B)"),
    }
}
