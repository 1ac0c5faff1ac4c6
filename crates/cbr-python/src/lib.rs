//! `cbr._cbr`: the Python bindings, a thin layer over the same library functions the `cbr`
//! command calls (build, classify, edit, eval, embed shards). The public API, its argument
//! checks, numpy/PIL conversions and docstrings are in the Python package (python/cbr/); this
//! module takes plain values (paths, labels, bytes) and answers with the JSON the command line
//! prints, so the two cannot drift apart.
//!
//! Every call that reads images or runs a model releases the GIL (`Python::detach`); errors
//! become the exception classes of `cbr._errors`, chosen by [`cbr::error::kind_of`], with the
//! message the command line prints after "error: ".

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use cbr::build::{BuildOptions, BuildReport};
use cbr::classifier::{failure_json, prediction_json, Classifier};
use cbr::dataset::LabelledImage;
use cbr::decode::DecodeLimits;
use cbr::embedder::Embedder;
use cbr::error::{kind_of, ErrorKind};
use cbr::models::EmbedderChoice;
use cbr::pipeline::{EmbedOptions, Embedded};
use cbr_core::build::BuildRequest;
use cbr_core::head::{HeadOptions, ImageId};

/// A cbr error as the Python exception of its kind (`cbr._errors`), message as the CLI prints it.
fn to_py(e: anyhow::Error) -> PyErr {
    // An exception a progress callback raised ([`stoppable`]) is raised as it is.
    let e = match e.downcast::<PyErr>() {
        Ok(raised) => return raised,
        Err(e) => e,
    };
    let class = match kind_of(&e) {
        ErrorKind::BadInput => "BadInput",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::TooLarge => "TooLarge",
        ErrorKind::Unsupported => "Unsupported",
        ErrorKind::Internal => "Internal",
    };
    let message = format!("{e:#}");
    Python::attach(|py| {
        let class = py
            .import("cbr._errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(class) => PyErr::from_type(class, message),
            // Only if the package is broken: still raise, with the message.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

trait OrPy<T> {
    fn or_py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for Result<T> {
    fn or_py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A Python callable `progress(done, total)` as the library's progress callback. An exception
/// in it stops the work: it unwinds to [`stoppable`], which returns it as the work's error, so
/// the call raises it (and writes nothing).
fn progress_of(callback: &Option<Py<PyAny>>, total: usize) -> impl Fn(usize) + Sync + '_ {
    move |done| {
        if let Some(cb) = callback {
            if let Some(e) = Python::attach(|py| cb.call1(py, (done, total)).err()) {
                // `resume_unwind` runs no panic hook: nothing is printed.
                std::panic::resume_unwind(Box::new(CallbackRaised(e)));
            }
        }
    }
}

/// The unwind payload of a progress callback's exception ([`progress_of`]).
struct CallbackRaised(PyErr);

/// Runs `work`, whose progress callback comes from [`progress_of`]: an exception raised by the
/// callback ends the work where it was (the library's decoding threads stop with it) and is
/// returned as its error. Any other panic goes on unwinding.
fn stoppable<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<CallbackRaised>() {
            Ok(raised) => Err(anyhow::Error::new(raised.0)),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// A value of one of the option enums, by the name the command line and the JSON requests take
/// (their serde names, which are clap's).
fn choice<T: serde::de::DeserializeOwned>(value: &str, what: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|e| {
        let e = e.to_string();
        let expected = e.split_once(", expected ").map_or(e.as_str(), |(_, x)| x);
        cbr::error::Error::bad_input(format!("unknown {what} {value:?}: use {expected}")).into()
    })
}

/// The embedder and its preprocessing, as the command line's `--embedder`, `--embedding-output`,
/// `--input-size`, `--mean`, `--std`, `--bgr` and `--resize` give them (a dict from Python).
#[derive(FromPyObject)]
struct EmbedderArgs {
    #[pyo3(item)]
    embedder: String,
    #[pyo3(item)]
    embedding_output: Option<String>,
    #[pyo3(item)]
    input_size: Option<(u32, u32)>,
    #[pyo3(item)]
    mean: Option<[f32; 3]>,
    #[pyo3(item)]
    std: Option<[f32; 3]>,
    #[pyo3(item)]
    bgr: bool,
    #[pyo3(item)]
    resize: Option<String>,
    #[pyo3(item)]
    resample: Option<String>,
}

impl EmbedderArgs {
    fn choice(&self) -> Result<EmbedderChoice> {
        Ok(EmbedderChoice {
            embedder: self.embedder.clone(),
            output: self.embedding_output.clone(),
            input_size: self.input_size,
            mean: self.mean,
            std: self.std,
            bgr: self.bgr,
            tflite: false,
            resize: self.resize.as_deref().map(|r| choice(r, "resize mode")).transpose()?,
            resample: self.resample.as_deref().map(|r| choice(r, "resample filter")).transpose()?,
        })
    }
}

/// How images are read, as the command line's `--strict`, `--max-pixels`, `--no-cache`.
#[derive(FromPyObject)]
struct InputArgs {
    #[pyo3(item)]
    strict: bool,
    #[pyo3(item)]
    max_pixels: u64,
    #[pyo3(item)]
    cache: bool,
}

impl InputArgs {
    /// The options of `request` with these input choices.
    fn build_options(&self, request: &BuildRequest) -> BuildOptions {
        BuildOptions {
            strict: self.strict,
            limits: DecodeLimits { max_pixels: self.max_pixels, ..DecodeLimits::default() },
            cache: self.cache,
            ..BuildOptions::of_request(request)
        }
    }

    /// The options for embedding with `head` (an edit keeps its model's head).
    fn options_with_head(&self, head: HeadOptions, augment: bool) -> BuildOptions {
        BuildOptions { head, augment, ..self.build_options(&BuildRequest::default()) }
    }
}

/// The build request of a JSON object of `cbr build`'s options (Python's keyword arguments,
/// the same names as the command line's flags); what it leaves out takes the one default.
fn request_of(json: &str) -> Result<BuildRequest> {
    let value = serde_json::from_str(json)
        .map_err(|e| cbr::error::Error::bad_input(format!("build options: {e}")))?;
    BuildRequest::from_json(&value)
}

/// The default build request, as JSON (`cbr.BUILD_DEFAULTS`).
#[pyfunction]
fn build_defaults() -> String {
    serde_json::to_string(&BuildRequest::default()).expect("a request serializes")
}

/// Labelled images from a folder or CSV manifest (`source`), or from `(path, label)` pairs.
fn images_of(
    source: Option<PathBuf>,
    pairs: Option<Vec<(PathBuf, String)>>,
) -> Result<Vec<LabelledImage>> {
    match (source, pairs) {
        (Some(source), None) => cbr::dataset::from_path(&source),
        (None, Some(pairs)) => cbr::dataset::from_pairs(
            pairs.into_iter().map(|(path, label)| LabelledImage { label, path }).collect(),
        ),
        _ => Err(cbr::error::Error::bad_input(
            "give the images as a folder, a CSV manifest or (paths, labels)",
        )
        .into()),
    }
}

/// What a build did, as JSON for the Python package.
fn build_report_json(report: &BuildReport, index: Option<PathBuf>) -> String {
    let skipped: Vec<serde_json::Value> = report
        .skipped
        .iter()
        .map(|s| serde_json::json!({"path": s.path.to_string_lossy(), "reason": s.reason}))
        .collect();
    serde_json::json!({
        "classes": report.classes,
        "images": report.images,
        "cached": report.cached,
        "skipped": skipped,
        "seconds": report.seconds,
        "threshold": report.threshold,
        "calibration": report.calibration,
        "index": index.map(|p| p.to_string_lossy().into_owned()),
    })
    .to_string()
}

/// `cbr build`: from images (folder, manifest or pairs) or, with `shards`, from Parquet
/// embedding shards (`cbr build --embeddings`). Writes `output` and returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (output, source, pairs, shards, embedder, request, input, progress))]
#[allow(clippy::too_many_arguments)]
fn build(
    py: Python<'_>,
    output: PathBuf,
    source: Option<PathBuf>,
    pairs: Option<Vec<(PathBuf, String)>>,
    shards: Option<Vec<String>>,
    embedder: EmbedderArgs,
    request: &str,
    input: InputArgs,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let request = request_of(request)?;
        let format = cbr_core::format::ModelFormat::for_output(&output, request.format);
        request.check_format(format)?;
        let mut model = cbr::build::open_embedder_for(&embedder.choice()?, format)?;
        let opts = input.build_options(&request);
        let (built, report) = match shards {
            Some(patterns) => {
                let files = cbr::shard::expand(&patterns)?;
                cbr::build::build_from_shards(&model, &files, &opts)?
            }
            None => {
                let images = images_of(source, pairs)?;
                let progress = progress_of(&progress, images.len());
                stoppable(|| cbr::build::build(&mut model, &images, &opts, &progress))?
            }
        };
        built.write(&output)?;
        let index = built.index.as_ref().map(|_| cbr::sidecar::index_path(&output));
        Ok(build_report_json(&report, index))
    })
    .or_py()
}

/// `build_from_embeddings`: a model from embeddings the caller made (`n` rows of `dim` f32 in
/// `embeddings`, little-endian), which must come from `embedder` with its preprocessing, as
/// the model will run that embedder on the images it classifies.
#[pyfunction]
#[pyo3(signature = (output, embeddings, dim, labels, image_ids, embedder, request))]
#[allow(clippy::too_many_arguments)]
fn build_from_embeddings(
    py: Python<'_>,
    output: PathBuf,
    embeddings: &Bound<'_, PyBytes>,
    dim: usize,
    labels: Vec<String>,
    image_ids: Option<Vec<String>>,
    embedder: EmbedderArgs,
    request: &str,
) -> PyResult<String> {
    let values = f32s_of(embeddings.as_bytes());
    py.detach(|| -> Result<String> {
        let request = request_of(request)?;
        let format = cbr_core::format::ModelFormat::for_output(&output, request.format);
        request.check_format(format)?;
        let model = cbr::build::open_embedder_for(&embedder.choice()?, format)?;
        let bad = |m: String| -> anyhow::Error { cbr::error::Error::bad_input(m).into() };
        if dim != model.info.dim {
            return Err(bad(format!(
                "the embeddings are {dim}-d but the embedder {} gives {}-d embeddings: a model \
                 runs its embedder on the images it classifies, so the index must come from \
                 the same embedder",
                model.info.name, model.info.dim
            )));
        }
        let n = labels.len();
        if values.len() != n * dim {
            return Err(bad(format!("{} embeddings for {n} labels", values.len() / dim.max(1))));
        }
        let ids = match image_ids {
            Some(ids) if ids.len() != n => {
                return Err(bad(format!("{} image ids for {n} labels", ids.len())))
            }
            Some(ids) => ids
                .iter()
                .map(|s| ImageId::parse(s).map_err(|e| bad(format!("image_ids: {e:#}"))))
                .collect::<Result<Vec<_>>>()?,
            None => (0..n as u32).map(ImageId::from_index).collect(),
        };
        let mut sorted = labels.clone();
        sorted.sort();
        sorted.dedup();
        cbr::build::check_class_count(
            sorted.len(),
            sorted.first().map_or("", |l| l),
            &request.head_options(),
        )?;
        let embedded = Embedded {
            embeddings: values,
            dim,
            labels,
            images: (0..n as u32).collect(),
            paths: (0..n).map(|i| PathBuf::from(format!("embedding {i}"))).collect(),
            ids,
            ..Default::default()
        };
        let opts = BuildOptions::of_request(&request);
        let (built, report) = cbr::build::build_from_embedded(&model, embedded, &opts)?;
        built.write(&output)?;
        let index = built.index.as_ref().map(|_| cbr::sidecar::index_path(&output));
        Ok(build_report_json(&report, index))
    })
    .or_py()
}

/// Little-endian f32 values of `bytes` (a numpy float32 array's buffer).
fn f32s_of(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// `bytes` holding `values` as little-endian f32 (for `numpy.frombuffer`).
fn bytes_of<'py>(py: Python<'py>, values: &[f32]) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    PyBytes::new(py, &out)
}

/// In-memory images `(width, height, HWC RGB bytes)` as RGB images.
fn rgb_images(images: &[Bound<'_, PyAny>]) -> PyResult<Vec<cbr::pipeline::RgbImage>> {
    images
        .iter()
        .map(|item| {
            let (width, height, pixels): (u32, u32, Bound<'_, PyBytes>) = item.extract()?;
            cbr::pipeline::rgb_from_pixels(width, height, pixels.as_bytes().to_vec()).or_py()
        })
        .collect()
}

/// A model built by `cbr build`, loaded in ONNX Runtime or LiteRT.
#[pyclass(module = "cbr._cbr", name = "Classifier")]
struct PyClassifier {
    inner: Mutex<Classifier>,
    info: String,
    labels: Vec<String>,
}

impl PyClassifier {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Classifier) -> Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut classifier =
                self.inner.lock().map_err(|_| anyhow::anyhow!("an earlier call panicked"))?;
            f(&mut classifier)
        })
        .or_py()
    }
}

#[pymethods]
impl PyClassifier {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let classifier = py.detach(|| Classifier::open(&path)).or_py()?;
        let info = serde_json::to_string(&classifier.info).map_err(|e| to_py(e.into()))?;
        let labels = classifier.info.labels.clone();
        Ok(PyClassifier { inner: Mutex::new(classifier), info, labels })
    }

    /// What the model says about itself, as `cbr info --json` prints it.
    #[getter]
    fn info_json(&self) -> String {
        self.info.clone()
    }

    #[getter]
    fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    /// `cbr classify --json` on image files: one JSON object per image, in order (a prediction,
    /// or `{"path", "error"}` for an image that could not be read).
    #[pyo3(signature = (paths, top_k, threshold))]
    fn classify_paths(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        top_k: usize,
        threshold: Option<f32>,
    ) -> PyResult<Vec<String>> {
        self.with(py, |c| {
            let mut out = Vec::with_capacity(paths.len());
            c.classify_files(&paths, top_k, threshold, &DecodeLimits::default(), |i, r| {
                out.push(match r {
                    Ok(p) => prediction_json(Some(&paths[i]), &p).to_string(),
                    Err(e) => failure_json(&paths[i], &e.to_string()).to_string(),
                });
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// The same for images in memory: `(width, height, HWC RGB bytes)` each; `"path"` is null.
    #[pyo3(signature = (images, top_k, threshold))]
    fn classify_pixels(
        &self,
        py: Python<'_>,
        images: Vec<Bound<'_, PyAny>>,
        top_k: usize,
        threshold: Option<f32>,
    ) -> PyResult<Vec<String>> {
        let images = rgb_images(&images)?;
        self.with(py, |c| {
            Ok(c.classify_rgb(&images, top_k, threshold)?
                .iter()
                .map(|p| prediction_json(None, p).to_string())
                .collect())
        })
    }
}

/// An image embedder (a known model or an .onnx/.tflite file) with its preprocessing.
#[pyclass(module = "cbr._cbr", name = "Embedder")]
struct PyEmbedder {
    inner: Mutex<Embedder>,
    info: String,
    preprocess: String,
    dim: usize,
}

impl PyEmbedder {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Embedder) -> Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut embedder =
                self.inner.lock().map_err(|_| anyhow::anyhow!("an earlier call panicked"))?;
            f(&mut embedder)
        })
        .or_py()
    }
}

#[pymethods]
impl PyEmbedder {
    #[new]
    fn new(py: Python<'_>, args: EmbedderArgs) -> PyResult<Self> {
        let embedder = py
            .detach(|| -> Result<Embedder> { cbr::models::open_embedder(&args.choice()?) })
            .or_py()?;
        let info = serde_json::to_string(&embedder.info).map_err(|e| to_py(e.into()))?;
        let preprocess =
            serde_json::to_string(&embedder.preprocess).map_err(|e| to_py(e.into()))?;
        let dim = embedder.info.dim;
        Ok(PyEmbedder { inner: Mutex::new(embedder), info, preprocess, dim })
    }

    #[getter]
    fn info_json(&self) -> String {
        self.info.clone()
    }

    #[getter]
    fn preprocess_json(&self) -> String {
        self.preprocess.clone()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// Embeddings of image files, `len(paths) * dim` f32 as bytes.
    #[pyo3(signature = (paths, max_pixels, progress))]
    fn embed_paths<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        max_pixels: u64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limits = DecodeLimits { max_pixels, ..DecodeLimits::default() };
        let values = self.with(py, |e| {
            stoppable(|| {
                cbr::pipeline::embed_files(e, &paths, &limits, &progress_of(&progress, paths.len()))
            })
        })?;
        Ok(bytes_of(py, &values))
    }

    /// Embeddings of images in memory (`(width, height, HWC RGB bytes)` each).
    fn embed_pixels<'py>(
        &self,
        py: Python<'py>,
        images: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let images = rgb_images(&images)?;
        let values = self.with(py, |e| cbr::pipeline::embed_rgb(e, &images))?;
        Ok(bytes_of(py, &values))
    }
}

/// `cbr embed INPUT --shard I/N -o OUTPUT`: one Parquet embedding shard. Returns a report as JSON.
#[pyfunction]
#[pyo3(signature = (source, output, shard_index, shard_count, embedder, input, augment, progress))]
#[allow(clippy::too_many_arguments)]
fn embed_shard(
    py: Python<'_>,
    source: PathBuf,
    output: PathBuf,
    shard_index: usize,
    shard_count: usize,
    embedder: EmbedderArgs,
    input: InputArgs,
    augment: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let shard: cbr::shard::Shard = format!("{shard_index}/{shard_count}")
            .parse()
            .map_err(|e: anyhow::Error| cbr::error::Error::bad_input(format!("{e:#}")))?;
        let images = cbr::dataset::from_path(&source)?;
        let mut model = cbr::models::open_embedder(&embedder.choice()?)?;
        let opts = input.options_with_head(HeadOptions::default(), augment).embedding();
        let progress = progress_of(&progress, shard.of(&images).len());
        let embedded = stoppable(|| {
            cbr::shard::embed_to_file(&mut model, &images, shard, &opts, &output, &progress)
        })?;
        Ok(serde_json::json!({
            "output": output.to_string_lossy(),
            "shard": [shard.index, shard.count],
            "images": images.len(),
            "embedded": embedded.paths.len(),
            "cached": embedded.cached,
            "skipped": embedded.skipped.iter()
                .map(|s| serde_json::json!({"path": s.path.to_string_lossy(), "reason": s.reason}))
                .collect::<Vec<_>>(),
            "seconds": embedded.seconds,
        })
        .to_string())
    })
    .or_py()
}

/// What an edit did, as JSON.
fn edit_report_json(a: &cbr::edit::Added) -> String {
    let r = &a.report;
    serde_json::json!({
        "classes": r.classes,
        "rows": r.rows,
        "added": r.added,
        "cached": a.cached,
        "removed_rows": r.removed_rows,
        "skipped": a.skipped.iter()
            .map(|s| serde_json::json!({"path": s.path.to_string_lossy(), "reason": s.reason}))
            .collect::<Vec<_>>(),
    })
    .to_string()
}

/// `cbr add MODEL INPUT [-o OUTPUT]`.
#[pyfunction]
#[pyo3(signature = (model, output, source, pairs, input, augment, progress))]
#[allow(clippy::too_many_arguments)]
fn add(
    py: Python<'_>,
    model: PathBuf,
    output: Option<PathBuf>,
    source: Option<PathBuf>,
    pairs: Option<Vec<(PathBuf, String)>>,
    input: InputArgs,
    augment: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let images = images_of(source, pairs)?;
        let progress = progress_of(&progress, images.len());
        let report = stoppable(|| {
            cbr::edit::edit_file(&model, output.as_deref(), |m| {
                let opts = input.options_with_head(m.options.clone(), augment);
                cbr::edit::add(m, &images, &opts, &progress)
            })
        })?;
        Ok(edit_report_json(&report))
    })
    .or_py()
}

/// `cbr remove MODEL --label L... [-o OUTPUT]`.
#[pyfunction]
#[pyo3(signature = (model, labels, output))]
fn remove(
    py: Python<'_>,
    model: PathBuf,
    labels: Vec<String>,
    output: Option<PathBuf>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let report = cbr::edit::edit_file(&model, output.as_deref(), |m| {
            m.remove_labels(&labels).map(cbr::edit::Added::from)
        })?;
        Ok(edit_report_json(&report))
    })
    .or_py()
}

/// `cbr relabel MODEL FROM TO [-o OUTPUT]`.
#[pyfunction]
#[pyo3(signature = (model, from, to, output))]
fn relabel(
    py: Python<'_>,
    model: PathBuf,
    from: String,
    to: String,
    output: Option<PathBuf>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let report = cbr::edit::edit_file(&model, output.as_deref(), |m| {
            m.relabel(&from, &to).map(cbr::edit::Added::from)
        })?;
        Ok(edit_report_json(&report))
    })
    .or_py()
}

/// `cbr eval INPUT --shots K,... --json`: the same JSON document.
#[pyfunction]
#[pyo3(signature = (source, pairs, shots, seeds, embedder, augment, cache, progress))]
#[allow(clippy::too_many_arguments)]
fn evaluate(
    py: Python<'_>,
    source: Option<PathBuf>,
    pairs: Option<Vec<(PathBuf, String)>>,
    shots: Vec<usize>,
    seeds: usize,
    embedder: EmbedderArgs,
    augment: bool,
    cache: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    py.detach(|| -> Result<String> {
        let opts = cbr::eval::EvalOptions { shots, seeds, ..Default::default() };
        cbr::eval::check_options(&opts)
            .map_err(|e| cbr::error::Error::bad_input(format!("{e:#}")))?;
        let name = source.as_ref().map(|s| s.to_string_lossy().into_owned());
        let images = images_of(source, pairs)?;
        let mut model = cbr::models::open_embedder(&embedder.choice()?)?;
        // As `cbr eval`: the embedder's calibration prior applies at one image per class.
        let opts = cbr::eval::EvalOptions { embedder: model.info.name.clone(), ..opts };
        let embed_opts = EmbedOptions { augment, cache, ..Default::default() };
        let embedded = stoppable(|| {
            cbr::pipeline::embed_images(
                &mut model,
                &images,
                &embed_opts,
                &Default::default(),
                &progress_of(&progress, images.len()),
            )
        })?;
        let report = cbr::eval::run(
            name.as_deref().unwrap_or("(paths, labels)"),
            &model.info.name,
            &embedded,
            None,
            augment,
            &opts,
            &|_| {},
        )?;
        Ok(serde_json::to_string(&report)?)
    })
    .or_py()
}

/// The version of cbr these bindings were built from (the `cbr` command's too).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The embedders cbr knows by name (`cbr models list`).
#[pyfunction]
fn known_embedders() -> Vec<&'static str> {
    cbr::models::KNOWN_MODELS.iter().map(|m| m.name).collect()
}

#[pymodule]
fn _cbr(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // As the command line does first thing: keep ONNX Runtime's telemetry off.
    cbr::runtime::onnxruntime::disable_telemetry();
    m.add_class::<PyClassifier>()?;
    m.add_class::<PyEmbedder>()?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(build_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(build_from_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(embed_shard, m)?)?;
    m.add_function(wrap_pyfunction!(add, m)?)?;
    m.add_function(wrap_pyfunction!(remove, m)?)?;
    m.add_function(wrap_pyfunction!(relabel, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(known_embedders, m)?)?;
    Ok(())
}
