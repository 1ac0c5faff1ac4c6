//! ONNX Runtime: finding, installing and starting it, and its sessions
//! (opened from bytes or a file, run in batches).
//!
//! cbr does not link ONNX Runtime: it loads `libonnxruntime.so` at run time
//! (the `ort` crate's `load-dynamic`), so building cbr downloads nothing. The
//! library comes from the `onnxruntime` PyPI wheel, fetched with `pip download`
//! into cbr's cache by `cbr runtime install` (or implicitly by `cbr models pull`),
//! or from wherever `ORT_DYLIB_PATH` points.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::{builder::GraphOptimizationLevel, OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use cbr_core::preprocess::Preprocess;

use crate::cache::WheelLibrary;

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

/// Runs `n` preprocessed images (concatenated in `tensors`) through
/// `session` in runs of at most `max_batch`, and returns output `output` of
/// every image, concatenated. Shared by the embedder and the classifier.
pub fn run_batched(
    session: &mut Session,
    preprocess: &Preprocess,
    input: &str,
    output: &str,
    max_batch: usize,
    tensors: &[f32],
    n: usize,
) -> Result<Vec<f32>> {
    let per = preprocess.tensor_len();
    assert_eq!(tensors.len(), n * per, "run_batched: tensor buffer does not hold {n} images");
    // Only the wanted output: ONNX Runtime then skips the nodes no one needs
    // (e.g. the index similarities when only the embedding is asked for).
    let options = RunOptions::new()
        .map_err(|e| anyhow!("cannot create ONNX Runtime run options: {e}"))?
        .with_outputs(OutputSelector::no_default().with(output));
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let count = (n - start).min(max_batch.max(1));
        let chunk = &tensors[start * per..(start + count) * per];
        let tensor = TensorRef::from_array_view((preprocess.batch_shape(count), chunk))
            .map_err(|e| anyhow!("cannot make the input tensor: {e}"))?;
        let outputs = session
            .run_with_options(ort::inputs![input => tensor], &options)
            .map_err(|e| anyhow!("ONNX Runtime failed to run the model: {e}"))?;
        let value =
            outputs.get(output).ok_or_else(|| anyhow!("the model produced no output {output}"))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("output {output} is not a float tensor: {e}"))?;
        if shape.first().copied() != Some(count as i64) || data.len() % count != 0 {
            bail!("output {output} has shape {:?}, expected a batch of {count}", &shape[..]);
        }
        out.extend_from_slice(data);
        start += count;
    }
    Ok(out)
}

/// How an ONNX Runtime session keeps its working memory between runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMemory {
    /// ONNX Runtime's default: an arena that keeps the buffers of the largest batch run for the
    /// next run. Fastest when one model stays loaded (build, classify).
    #[default]
    Arena,
    /// No arena and no memory pattern: each run's buffers are freed when it ends, so an idle
    /// session holds little more than its weights. For a server that keeps many models loaded
    /// (`cbr serve`, whose memory bound counts what a loaded model keeps).
    Lean,
}

/// An ONNX Runtime session for a model given as bytes, with full graph optimisation.
pub fn session_from_bytes(bytes: &[u8], memory: SessionMemory) -> Result<Session> {
    session_builder(memory)?
        .commit_from_memory(bytes)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))
}

/// [`session_from_bytes`] for a model file that ONNX Runtime reads itself:
/// the file's bytes are never held beside ONNX Runtime's copy (a 1.3 GB
/// model peaks at about twice its size, not three times).
pub fn session_from_file(path: &Path, memory: SessionMemory) -> Result<Session> {
    session_builder(memory)?
        .commit_from_file(path)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the model {}: {e}", path.display()))
}

/// The session options every cbr session uses.
fn session_builder(memory: SessionMemory) -> Result<ort::session::builder::SessionBuilder> {
    let env = environment()?;
    let mut builder = Session::builder(env)
        .map_err(|e| anyhow!("cannot create an ONNX Runtime session: {e}"))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| anyhow!("cannot set the optimisation level: {e}"))?
        // Decoding runs on the same cores; spinning inference threads would
        // steal its time (measured 15-20% faster builds on a busy machine).
        .with_intra_op_spinning(false)
        .map_err(|e| anyhow!("cannot configure ONNX Runtime threads: {e}"))?;
    if memory == SessionMemory::Lean {
        let no_arena = ort::ep::CPU::default().with_arena_allocator(false).build();
        builder = builder
            .with_memory_pattern(false)
            .map_err(|e| anyhow!("cannot configure ONNX Runtime memory: {e}"))?
            .with_execution_providers([no_arena])
            .map_err(|e| anyhow!("cannot configure ONNX Runtime memory: {e}"))?;
    }
    Ok(builder)
}
