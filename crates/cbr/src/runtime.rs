//! The runtimes: finding, installing and starting ONNX Runtime, and
//! [`Runner`], a classifier loaded into ONNX Runtime or LiteRT.
//!
//! cbr does not link ONNX Runtime: it loads `libonnxruntime.so` at run time
//! (the `ort` crate's `load-dynamic`), so building cbr downloads nothing. The
//! library comes from the `onnxruntime` PyPI wheel, fetched with `pip download`
//! into cbr's cache by `cbr runtime install` (or implicitly by `cbr models pull`),
//! or from wherever `ORT_DYLIB_PATH` points.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

use cbr_core::format::{ModelFile, ModelFormat};
use cbr_core::head::SCORES;
use cbr_core::meta::ClassifierInfo;

use crate::cache::WheelLibrary;
use crate::embedder::SessionMemory;

/// The ONNX Runtime release cbr is built and tested against (C API 31).
pub const ORT_VERSION: &str = "1.32.0";
const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.32.0";

/// The `onnxruntime` wheel's library, kept in `<cache>/onnxruntime/<version>/`.
fn library() -> WheelLibrary {
    WheelLibrary {
        title: format!("ONNX Runtime {ORT_VERSION}"),
        pip_spec: format!("onnxruntime=={ORT_VERSION}"),
        wheel_prefix: "onnxruntime-",
        member: format!("onnxruntime/capi/{ORT_LIBRARY_FILE}"),
        cached: Path::new("onnxruntime").join(ORT_VERSION).join(ORT_LIBRARY_FILE),
        env: "ORT_DYLIB_PATH",
        env_wants: format!("an existing libonnxruntime.so of version {ORT_VERSION}"),
        sha256: None,
    }
}

/// The library cbr will load: `ORT_DYLIB_PATH` if set, else the cached copy.
pub fn library_path() -> Result<PathBuf> {
    library().path()
}

/// Downloads the `onnxruntime` wheel with pip and caches its shared library.
/// Returns the library path. Does nothing if it is already cached.
pub fn install() -> Result<PathBuf> {
    library().install()
}

/// Installs ONNX Runtime into the cache unless it is there or `ORT_DYLIB_PATH` is set.
pub fn ensure() -> Result<()> {
    library().ensure()
}

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = library_path().map_err(|e| format!("{e:#}"))?;
            load(&path).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Keeps ONNX Runtime from writing outside cbr's cache: the PyPI builds start
/// Microsoft's telemetry when the environment is created, which writes a
/// device id and an event queue to `$XDG_CACHE_HOME/Microsoft/DeveloperTools`
/// (`~/.cache/...`) and tries to upload events. `ORT_DISABLE_TELEMETRY=1`,
/// set before the library loads, stops it (disabling it through the API
/// comes too late, after the environment exists). A value the user set is
/// kept. `main` calls this first, while the process has one thread.
pub fn disable_telemetry() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
}

fn load(path: &Path) -> Result<ort::environment::Environment> {
    // For library users that did not call it at start (no-op when set).
    disable_telemetry();
    let builder = ort::init_from(path)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
    builder
        .with_name("cbr")
        .build()
        .with_context(|| format!("cannot start ONNX Runtime from {}", path.display()))
}

/// A classifier loaded into its runtime: ONNX Runtime for `.onnx`, LiteRT for `.tflite`.
pub enum Runner {
    Onnx(ort::session::Session),
    Tflite {
        model: crate::litert::Model,
        /// Index of the `scores` output.
        scores: usize,
    },
}

impl Runner {
    /// Loads the model file `bytes`, already [`read`] as `file`. `memory` applies to ONNX
    /// Runtime (LiteRT's buffers are sized once, at load).
    pub fn open(file: &ModelFile, bytes: &[u8], memory: SessionMemory) -> Result<Runner> {
        match file.format {
            ModelFormat::Onnx => {
                Ok(Runner::Onnx(crate::embedder::session_from_bytes(bytes, memory)?))
            }
            ModelFormat::Tflite => open_tflite(bytes),
        }
    }

    /// The largest batch one run may take: the input's fixed batch, else 16
    /// (ONNX) or 1 (TFLite runs one image per invocation).
    pub fn max_batch(&self, file: &ModelFile) -> usize {
        match self {
            Runner::Onnx(_) => file.fixed_batch().unwrap_or(16),
            Runner::Tflite { .. } => file.fixed_batch().unwrap_or(1).max(1),
        }
    }

    /// Runs `n` preprocessed images and returns the flat values of `output`
    /// (`scores`, or `embedding` for sidecar models).
    pub fn run(
        &mut self,
        info: &ClassifierInfo,
        output: &str,
        max_batch: usize,
        tensors: &[f32],
        n: usize,
    ) -> Result<Vec<f32>> {
        match self {
            Runner::Onnx(session) => crate::embedder::run_batched(
                session,
                &info.preprocess,
                &info.embedder.input,
                output,
                max_batch,
                tensors,
                n,
            ),
            Runner::Tflite { model, scores } => {
                if output != SCORES {
                    return Err(anyhow!("a TFLite classifier has only the {} output", SCORES));
                }
                crate::embedder::run_tflite(
                    model,
                    *scores,
                    info.preprocess.tensor_len(),
                    max_batch,
                    tensors,
                    n,
                )
            }
        }
    }
}

/// Loads a TFLite classifier into LiteRT.
fn open_tflite(bytes: &[u8]) -> Result<Runner> {
    crate::litert::ensure()?;
    let model = crate::litert::Model::from_bytes(bytes)?;
    let scores = model
        .output_index(SCORES)
        .ok_or_else(|| anyhow!("the TFLite model has no output named {SCORES:?}"))?;
    let inputs = model.inputs().len();
    if inputs != 1 {
        return Err(crate::error::Error::bad_input(format!(
            "the TFLite model has {inputs} inputs; a cbr classifier has one"
        ))
        .into());
    }
    Ok(Runner::Tflite { model, scores })
}
