//! `cbr serve`: an HTTP API and a web app to build classifiers and try them,
//! over the same library functions as the command line ([`cbr::build::build`],
//! [`cbr::classifier::Classifier::predict`], [`cbr::decode`]).
//!
//! - Routes come from one table ([`routes::ROUTES`]) that also generates
//!   `/openapi.json`.
//! - Models live in a directory ([`store`]); every acknowledged write is on
//!   disk (atomic writes), so a restart loses nothing.
//! - Builds run on a blocking thread with one shared embedder; progress is
//!   polled with `GET /api/models/{model}/build`.
//! - Classification: one ONNX Runtime session per model version, owned by a
//!   worker thread that batches whatever requests are waiting; a bounded number
//!   of classify requests in flight (503 + Retry-After beyond it); a timeout
//!   on every request (503 + Retry-After).
//! - Errors are JSON (`{"error": {"code", "message"}}`) with meaningful statuses
//!   ([`json_errors`] rewrites the framework's own, [`conn`] hyper's answers to requests it
//!   cannot parse).
//! - Connections ([`conn`]): a request's headers must arrive within `read_timeout` of the
//!   connection's opening (or its previous answer), or it is closed.
//! - Who may call: [`guard`] (Host, Origin, token). Loaded models are kept in
//!   an LRU bounded by count and memory ([`lru`]).

pub mod api;
pub mod conn;
pub mod error;
pub mod guard;
pub mod json_errors;
pub mod lru;
pub mod routes;
pub mod store;
pub mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{oneshot, Semaphore};

use cbr::build::{self, BuildOptions};
use cbr::classifier::{Classifier, Prediction};
use cbr::decode::{self, DecodeLimits};
use cbr::embedder::Embedder;
use cbr::models::{self, EmbedderChoice};
use cbr::runtime::onnxruntime::SessionMemory;
use cbr_core::build::BuildRequest;
use cbr_core::format::ModelFormat;
use cbr_core::preprocess::Preprocess;

use api::{Added, BuildState, BuildStatus, Classification, Deleted, Health, Label, ModelList};
use error::{ApiError, ApiResult};
pub use routes::{openapi, ROUTES};
use store::{check_image_id, check_label, check_model_name, BuiltState, Store};

/// Server settings (the `cbr serve` flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub models_dir: PathBuf,
    /// Largest request body in bytes (uploads): 413 above it.
    pub max_upload: usize,
    /// Largest image in pixels: 413 above it.
    pub max_pixels: u64,
    /// Classify requests in flight (decoding, waiting or running): 503 beyond it.
    pub max_queue: usize,
    /// Longest time a request may take: 503 after it.
    pub timeout: Duration,
    /// The embedder used for builds.
    pub embedder: EmbedderChoice,
    /// Longest time to receive a classify request's body: 408 after it. The
    /// body is read before an inference slot is taken, so slow or stalled
    /// clients never hold one. Also the longest a connection may take to send
    /// a request's headers ([`conn`]): closed after it.
    pub read_timeout: Duration,
    /// Models kept loaded at most (least recently used unloaded first).
    pub max_loaded: usize,
    /// Memory the loaded models may take, in bytes (as measured when each loads).
    pub max_loaded_bytes: u64,
    /// Host names accepted besides IP literals and localhost (`*`: any).
    pub allow_hosts: Vec<String>,
    /// Origins allowed to send state-changing requests besides the server's own.
    pub allow_origins: Vec<String>,
    /// The access token. None: `CBR_TOKEN` from the environment, else a random
    /// one when listening beyond loopback, else no token.
    pub token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            models_dir: PathBuf::from("cbr-models"),
            max_upload: 32 << 20,
            max_pixels: 50_000_000,
            max_queue: 64,
            timeout: Duration::from_secs(30),
            embedder: EmbedderChoice::default(),
            read_timeout: Duration::from_secs(10),
            max_loaded: 8,
            max_loaded_bytes: 2 << 30,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            token: None,
        }
    }
}

/// Progress of one build.
struct Job {
    state: Mutex<(BuildState, Option<String>)>,
    done: AtomicUsize,
    total: usize,
}

/// One classify request handed to a model's worker thread.
struct ClassifyJob {
    tensor: Vec<f32>,
    k: usize,
    threshold: Option<f32>,
    reply: oneshot::Sender<Result<Prediction, String>>,
}

/// A loaded model: its preprocessing and the queue of its worker thread,
/// which owns the ONNX Runtime session.
struct Loaded {
    version: (SystemTime, u64),
    preprocess: Preprocess,
    /// The model's own unknown threshold.
    threshold: Option<f32>,
    tx: crossbeam_channel::Sender<ClassifyJob>,
}

pub struct App {
    cfg: Config,
    store: Store,
    limits: DecodeLimits,
    embedder: Arc<Mutex<Option<Embedder>>>,
    builds: Mutex<HashMap<String, Arc<Job>>>,
    loaded: Mutex<lru::Lru<Arc<Loaded>>>,
    /// Serializes loading models into ONNX Runtime.
    loading: tokio::sync::Mutex<()>,
    /// Held while a classifier runs: runs of different models take turns, so
    /// only one run's working memory is in use at a time (see lru.rs). One
    /// run already keeps every core busy.
    running: Arc<Mutex<()>>,
    classify_slots: Arc<Semaphore>,
    access: Arc<guard::Access>,
}

type AppState = Arc<App>;

impl App {
    /// The server's state for `cfg`, over the opened models directory.
    fn new(cfg: Config, store: Store, access: Arc<guard::Access>) -> App {
        App {
            limits: DecodeLimits {
                max_pixels: cfg.max_pixels,
                max_file_bytes: cfg.max_upload as u64,
            },
            classify_slots: Arc::new(Semaphore::new(cfg.max_queue)),
            store,
            embedder: Arc::new(Mutex::new(None)),
            builds: Mutex::new(HashMap::new()),
            loaded: Mutex::new(lru::Lru::new(cfg.max_loaded, cfg.max_loaded_bytes)),
            running: Arc::new(Mutex::new(())),
            loading: tokio::sync::Mutex::new(()),
            access,
            cfg,
        }
    }
}

/// Runs the server until Ctrl-C or SIGTERM. Prints
/// `cbr serve: listening on http://ADDR` on stdout once it accepts connections.
pub fn run(cfg: Config) -> Result<()> {
    cbr::runtime::onnxruntime::ensure()?;
    let store = Store::open(&cfg.models_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("cannot listen on {}", cfg.addr))?;
        let addr = listener.local_addr()?;
        let token = match cfg.token.clone().or_else(|| std::env::var("CBR_TOKEN").ok()) {
            Some(t) if t.is_empty() => anyhow::bail!("the access token is empty"),
            Some(t) => Some(t),
            None if !addr.ip().is_loopback() => Some(guard::random_token()?),
            None => None,
        };
        let access = Arc::new(guard::Access {
            allow_hosts: cfg.allow_hosts.iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect(),
            allow_origins: cfg.allow_origins.clone(),
            token,
            port: addr.port(),
        });
        let app = Arc::new(App::new(cfg, store, access));
        // Load the embedder in the background so the first build starts sooner.
        {
            let (slot, choice) = (app.embedder.clone(), app.cfg.embedder.clone());
            tokio::task::spawn_blocking(move || {
                let mut e = slot.lock().unwrap();
                if e.is_none() {
                    match models::open_embedder(&choice) {
                        Ok(m) => *e = Some(m),
                        Err(err) => eprintln!("cbr serve: cannot load the embedder yet: {err:#}"),
                    }
                }
            });
        }
        if let Some(t) = &app.access.token {
            // Jupyter-style: opening this URL once stores the token in a cookie.
            let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
            eprintln!("cbr serve: access token required; open http://{host}:{}/?token={t}", addr.port());
        }
        if !addr.ip().is_loopback() {
            eprintln!("cbr serve: listening on {addr}, reachable from other machines: only with the token, over plain HTTP (put a TLS reverse proxy in front)");
        }
        eprintln!("cbr serve: models in {}", app.store.root.display());
        {
            use std::io::Write;
            let mut out = std::io::stdout();
            writeln!(out, "cbr serve: listening on http://{addr}")?;
            out.flush()?;
        }
        let header_timeout = app.cfg.read_timeout;
        conn::serve(listener, router(app), header_timeout, shutdown()).await.context("server error")?;
        Ok(())
    });
    // A build still running is abandoned: model.onnx is only ever replaced
    // atomically, so the previous model stays intact.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The router for [`ROUTES`], with limits and the JSON fallback.
pub fn router(app: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for route in ROUTES {
        r = r.route(route.path, handler_for(route.id, route.method));
    }
    let max = app.cfg.max_upload;
    r.fallback(no_route)
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn_with_state(app.clone(), limits))
        .layer(middleware::from_fn_with_state(app.access.clone(), guard::check))
        .layer(middleware::from_fn(json_errors::rewrite))
        .layer(middleware::from_fn(cross_origin_isolated))
        .with_state(app)
}

/// Marks every response cross-origin isolated (COOP same-origin, COEP require-corp): the web
/// app loads nothing from elsewhere, and isolation lets onnxruntime-web use threads in the
/// "run on this device" mode.
async fn cross_origin_isolated(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-embedder-policy", HeaderValue::from_static("require-corp"));
    // No other site may frame the app (clickjacking its buttons: delete, build).
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    r
}

fn handler_for(id: &str, method: &str) -> MethodRouter<AppState> {
    let f = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        m => panic!("route table: unsupported method {m}"),
    };
    match id {
        "webApp" => on(f, web::index),
        "webAppScript" => on(f, web::script),
        "webAppStyle" => on(f, web::style),
        "deviceScript" => on(f, web::device_script),
        "coreScript" => on(f, web::core_script),
        "devicePage" => on(f, device_page),
        "deviceFile" => on(f, device_file),
        "deviceOrtWeb" => on(f, ort_web_file),
        "coreWasm" => on(f, core_wasm),
        "ortWeb" => on(f, ort_web_file),
        "exportWeb" => on(f, export_web),
        "openapi" => on(f, openapi_json),
        "health" => on(f, health),
        "listModels" => on(f, list_models),
        "createModel" => on(f, create_model),
        "getModel" => on(f, get_model),
        "deleteModel" => on(f, delete_model),
        "addLabel" => on(f, add_label),
        "deleteLabel" => on(f, delete_label),
        "addImages" => on(f, add_images),
        "getImage" => on(f, get_image),
        "deleteImage" => on(f, delete_image),
        "startBuild" => on(f, start_build),
        "getBuild" => on(f, get_build),
        "classify" => on(f, classify),
        "modelInfo" => on(f, model_info),
        "downloadOnnx" => on(f, download_onnx),
        "downloadTflite" => on(f, download_tflite),
        other => panic!("route table: no handler for {other}"),
    }
}

/// Refuses oversized bodies from their Content-Length up front, and bounds
/// every request's time.
async fn limits(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = len {
        if len > app.cfg.max_upload as u64 {
            return ApiError::too_large(format!(
                "request body is {len} bytes, above the limit of {} bytes",
                app.cfg.max_upload
            ))
            .into_response();
        }
    }
    match tokio::time::timeout(app.cfg.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::busy(
            "timeout",
            format!("the request took longer than {:?}; try again", app.cfg.timeout),
            1,
        )
        .into_response(),
    }
}

async fn no_route() -> ApiError {
    ApiError::not_found("no_route", "no such endpoint: see /openapi.json")
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

async fn health(State(app): State<AppState>) -> Json<Health> {
    let loaded = app.loaded.lock().unwrap();
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_upload: app.cfg.max_upload,
        max_pixels: app.cfg.max_pixels,
        max_queue: app.cfg.max_queue,
        timeout_secs: app.cfg.timeout.as_secs_f64(),
        loaded_models: loaded.len(),
        loaded_bytes: loaded.bytes(),
        max_loaded: app.cfg.max_loaded,
        max_loaded_bytes: app.cfg.max_loaded_bytes,
    })
}

// ---- names and lookups ----

fn model_name(name: &str) -> ApiResult<()> {
    check_model_name(name).map_err(|m| ApiError::bad_request("invalid_name", m))
}

fn label_name(label: &str) -> ApiResult<()> {
    check_label(label).map_err(|m| ApiError::bad_request("invalid_name", m))
}

/// Checks the name and that the model exists.
fn existing(app: &App, name: &str) -> ApiResult<()> {
    model_name(name)?;
    if !app.store.exists(name) {
        return Err(ApiError::not_found("unknown_model", format!("no model named {name:?}")));
    }
    Ok(())
}

/// Runs `f` on the blocking pool holding the model's lock (the one `cbr add`
/// and builds take), once the model is known to still exist: a model deleted
/// meanwhile stays deleted (404), and model writes never interleave.
async fn with_model<T: Send + 'static>(
    app: &AppState,
    name: &str,
    f: impl FnOnce(&Store) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let (app, name) = (app.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let _lock = app.store.lock(&name)?.ok_or_else(|| {
            ApiError::not_found("unknown_model", format!("no model named {name:?}"))
        })?;
        f(&app.store)
    })
    .await
    .map_err(ApiError::internal)?
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

fn name_body(body: Result<Json<NameBody>, JsonRejection>) -> ApiResult<String> {
    match body {
        Ok(Json(b)) => Ok(b.name),
        Err(e) => Err(ApiError::bad_request(
            "bad_json",
            format!("expected a JSON object {{\"name\": ...}}: {}", e.body_text()),
        )),
    }
}

fn job_status(app: &App, name: &str) -> BuildStatus {
    let built = app.store.built_state(name).filter(|_| app.store.model_path(name).is_file());
    match app.builds.lock().unwrap().get(name) {
        Some(j) => {
            let (state, error) = j.state.lock().unwrap().clone();
            BuildStatus {
                state,
                done: j.done.load(Ordering::Relaxed),
                total: j.total,
                error,
                built,
            }
        }
        None => BuildStatus { state: BuildState::Idle, done: 0, total: 0, error: None, built },
    }
}

fn model_json(app: &App, name: &str, with_images: bool) -> ApiResult<api::Model> {
    let labels = app.store.labels(name)?;
    let images: usize = labels.iter().map(|l| l.count).sum();
    let build = job_status(app, name);
    let stale = match &build.built {
        Some(b) => b.fingerprint != Store::fingerprint(&labels),
        None => true,
    };
    let model_bytes = std::fs::metadata(app.store.model_path(name)).ok().map(|m| m.len());
    Ok(api::Model {
        name: name.to_string(),
        labels: labels.into_iter().map(|l| Label::of(l, with_images)).collect(),
        images,
        built: build.built.clone(),
        model_bytes,
        stale,
        build,
    })
}

// ---- models ----

async fn list_models(State(app): State<AppState>) -> ApiResult<Json<ModelList>> {
    let mut models = Vec::new();
    for name in app.store.list()? {
        models.push(model_json(&app, &name, false)?);
    }
    Ok(Json(ModelList { models }))
}

async fn create_model(
    State(app): State<AppState>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<api::Model>)> {
    let name = name_body(body)?;
    model_name(&name)?;
    if !app.store.create(&name)? {
        return Err(ApiError::conflict(
            "model_exists",
            format!("a model named {name:?} already exists"),
        ));
    }
    Ok((StatusCode::CREATED, Json(model_json(&app, &name, true)?)))
}

async fn get_model(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<api::Model>> {
    existing(&app, &name)?;
    Ok(Json(model_json(&app, &name, true)?))
}

fn building(app: &App, name: &str) -> bool {
    app.builds
        .lock()
        .unwrap()
        .get(name)
        .map(|j| j.state.lock().unwrap().0.active())
        .unwrap_or(false)
}

async fn delete_model(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    existing(&app, &name)?;
    if building(&app, &name) {
        return Err(ApiError::conflict(
            "build_running",
            format!("model {name:?} is being built; delete it when the build ends"),
        ));
    }
    let n = name.clone();
    with_model(&app, &name, move |store| Ok(store.delete(&n)?)).await?;
    app.loaded.lock().unwrap().remove(&name);
    app.builds.lock().unwrap().remove(&name);
    Ok(Json(Deleted { deleted: name }))
}

// ---- labels and images ----

async fn add_label(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Label>)> {
    existing(&app, &name)?;
    let label = name_body(body)?;
    label_name(&label)?;
    let (n, l) = (name.clone(), label.clone());
    if !with_model(&app, &name, move |store| Ok(store.add_label(&n, &l)?)).await? {
        return Err(ApiError::conflict(
            "label_exists",
            format!("model {name:?} already has a label {label:?}"),
        ));
    }
    Ok((StatusCode::CREATED, Json(Label { name: label, count: 0, images: Some(Vec::new()) })))
}

async fn delete_label(
    State(app): State<AppState>,
    Path((name, label)): Path<(String, String)>,
) -> ApiResult<Json<Deleted>> {
    existing(&app, &name)?;
    label_name(&label)?;
    let (n, l) = (name.clone(), label.clone());
    if !with_model(&app, &name, move |store| Ok(store.delete_label(&n, &l)?)).await? {
        return Err(ApiError::not_found(
            "unknown_label",
            format!("model {name:?} has no label {label:?}"),
        ));
    }
    Ok(Json(Deleted { deleted: label }))
}

/// Checks that `bytes` decode as an image within the limits; returns the extension to store it under.
fn check_image(bytes: &[u8], what: &str, limits: &DecodeLimits) -> ApiResult<&'static str> {
    decode::decode_rgb(bytes, limits).map_err(|e| ApiError::from_decode(what, &e))?;
    store::image_ext(bytes).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            format!("{what}: unsupported image format"),
        )
    })
}

async fn add_images(
    State(app): State<AppState>,
    Path((name, label)): Path<(String, String)>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Added>)> {
    existing(&app, &name)?;
    label_name(&label)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "bad_multipart",
            format!("expected multipart/form-data with `file` parts: {}", e.body_text()),
        )
    })?;
    let mut files = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(ApiError::from_multipart)? {
        let what = field.file_name().or(field.name()).unwrap_or("upload").to_string();
        let bytes = field.bytes().await.map_err(ApiError::from_multipart)?;
        files.push((what, bytes));
    }
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "no_files",
            "the upload has no files: send multipart `file` parts",
        ));
    }
    // All or nothing: check every file before storing any.
    let limits = app.limits.clone();
    let (files, exts) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let exts = files
            .iter()
            .map(|(what, b)| check_image(b, what, &limits))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok((files, exts))
    })
    .await
    .map_err(ApiError::internal)??;
    let n = name.clone();
    let added = with_model(&app, &name, move |store| {
        store.add_label(&n, &label)?;
        let mut ids = Vec::new();
        for ((_, b), ext) in files.iter().zip(exts) {
            ids.push(store.add_image(&n, &label, b, ext)?);
        }
        Ok(ids)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(Added { count: added.len(), added })))
}

fn image_lookup(app: &App, name: &str, label: &str, id: &str) -> ApiResult<PathBuf> {
    existing(app, name)?;
    label_name(label)?;
    check_image_id(id).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    let p = app.store.image_path(name, label, id);
    if !p.is_file() {
        return Err(ApiError::not_found(
            "unknown_image",
            format!("model {name:?} has no image {id} under {label:?}"),
        ));
    }
    Ok(p)
}

async fn get_image(
    State(app): State<AppState>,
    Path((name, label, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let p = image_lookup(&app, &name, &label, &id)?;
    let bytes = read_file(&p).await?;
    Ok((
        [
            (header::CONTENT_TYPE, store::content_type(&id)),
            (header::CACHE_CONTROL, "max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

async fn delete_image(
    State(app): State<AppState>,
    Path((name, label, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Deleted>> {
    let p = image_lookup(&app, &name, &label, &id)?;
    with_model(&app, &name, move |_| Ok(std::fs::remove_file(p)?)).await?;
    Ok(Json(Deleted { deleted: id }))
}

// ---- build ----

async fn start_build(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<BuildStatus>)> {
    existing(&app, &name)?;
    let request = build_request(&body)?;
    let labels = app.store.labels(&name)?;
    if labels.is_empty() {
        return Err(ApiError::bad_request("no_images", "add labelled images before building"));
    }
    if let Some(empty) = labels.iter().find(|l| l.count == 0) {
        return Err(ApiError::bad_request(
            "empty_label",
            format!("label {:?} has no images: add some or remove the label", empty.name),
        ));
    }
    let images = app.store.labelled_images(&name)?;
    let fingerprint = Store::fingerprint(&labels);
    let job = {
        let mut builds = app.builds.lock().unwrap();
        if let Some(j) = builds.get(&name) {
            if j.state.lock().unwrap().0.active() {
                return Err(ApiError::conflict(
                    "build_running",
                    format!("model {name:?} is already being built"),
                ));
            }
        }
        let j = Arc::new(Job {
            state: Mutex::new((BuildState::Queued, None)),
            done: AtomicUsize::new(0),
            total: images.len(),
        });
        builds.insert(name.clone(), j.clone());
        j
    };
    let app2 = app.clone();
    let (name2, job2) = (name.clone(), job.clone());
    tokio::task::spawn_blocking(move || {
        let result = run_build(&app2, &name2, &images, &request, &job2, fingerprint);
        let mut s = job2.state.lock().unwrap();
        *s = match result {
            Ok(()) => (BuildState::Done, None),
            Err(e) => (BuildState::Failed, Some(format!("{e:#}"))),
        };
    });
    Ok((StatusCode::ACCEPTED, Json(job_status(&app, &name))))
}

/// The build options of a build request's body: none (the defaults), or a JSON object of
/// `cbr build`'s options (the one `BuildRequest`). The server keeps one ONNX file per model, so
/// options for other files (TFLite, a sidecar index) are refused.
fn build_request(body: &[u8]) -> ApiResult<BuildRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BuildRequest::default());
    }
    let bad = |e: String| ApiError::bad_request("bad_build_options", e);
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("build options: {e}")))?;
    let request = BuildRequest::from_json(&json).map_err(|e| bad(format!("{e:#}")))?;
    request.check_format(cbr_core::format::ModelFormat::Onnx).map_err(|e| bad(format!("{e:#}")))?;
    if request.format.is_some_and(|f| f != cbr_core::format::ModelFormat::Onnx)
        || request.index == cbr_core::build::IndexChoice::Ivf
    {
        return Err(bad("the server keeps one ONNX file per model: format and index \"ivf\" are for `cbr build`".into()));
    }
    Ok(request)
}

/// The build itself: the library's [`build::build`], then an atomic install.
fn run_build(
    app: &App,
    name: &str,
    images: &[cbr::dataset::LabelledImage],
    request: &BuildRequest,
    job: &Job,
    fingerprint: String,
) -> Result<()> {
    let mut slot = app.embedder.lock().unwrap_or_else(|p| p.into_inner());
    *job.state.lock().unwrap() = (BuildState::Running, None);
    if slot.is_none() {
        *slot = Some(models::open_embedder(&app.cfg.embedder)?);
    }
    let embedder = slot.as_mut().expect("loaded above");
    let opts = BuildOptions { limits: app.limits.clone(), ..BuildOptions::of_request(request) };
    let (built, report) =
        build::build(embedder, images, &opts, &|done| job.done.store(done, Ordering::Relaxed))?;
    let root = app.store.images_dir(name);
    let state = BuiltState {
        built_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        classes: report.classes,
        images: report.images,
        seconds: report.seconds,
        skipped: report
            .skipped
            .iter()
            .map(|s| {
                format!("{}: {}", s.path.strip_prefix(&root).unwrap_or(&s.path).display(), s.reason)
            })
            .collect(),
        fingerprint,
    };
    let _lock = app
        .store
        .lock(name)?
        .with_context(|| format!("model {name:?} was deleted during the build"))?;
    app.store.install_model(name, &built, &state)?;
    Ok(())
}

async fn get_build(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<BuildStatus>> {
    existing(&app, &name)?;
    Ok(Json(job_status(&app, &name)))
}

// ---- classify ----

fn model_version(app: &App, name: &str) -> ApiResult<(SystemTime, u64)> {
    let m = std::fs::metadata(app.store.model_path(name)).map_err(|_| {
        ApiError::conflict(
            "not_built",
            format!("model {name:?} has not been built yet: POST /api/models/{name}/build"),
        )
    })?;
    Ok((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// The loaded model for `name`, loading it (again) when model.onnx changed.
async fn loaded(app: &AppState, name: &str) -> ApiResult<Arc<Loaded>> {
    let version = model_version(app, name)?;
    if let Some(l) = app.loaded.lock().unwrap().get(name) {
        if l.version == version {
            return Ok(l);
        }
    }
    let _guard = app.loading.lock().await;
    if let Some(l) = app.loaded.lock().unwrap().get(name) {
        if l.version == version {
            return Ok(l);
        }
    }
    let path = app.store.model_path(name);
    // The cost of a model for the LRU (see lru.rs), measured across loading
    // and a warm-up run of the largest batch the worker sends: what it keeps
    // (at least the file's size) and the peak of that run above it. Lean
    // sessions free each run's buffers when it ends (an arena would keep the
    // largest batch's, ~100 MB per model). Loads are serialised and runs take
    // turns (`App::running`), so the measurement mostly sees this model alone.
    let running = app.running.clone();
    let (classifier, cost) =
        tokio::task::spawn_blocking(move || -> Result<(Classifier, lru::Cost)> {
            let before = lru::resident_bytes();
            let mut c = Classifier::open_with(&path, SessionMemory::Lean)?;
            let n = c.max_batch.max(1);
            let zeros = vec![0f32; n * c.info.preprocess.tensor_len()];
            let peak = {
                let _turn = running.lock().unwrap_or_else(|p| p.into_inner());
                lru::reset_peak_resident();
                c.predict(&zeros, n, 1, None)?;
                lru::peak_resident_bytes()
            };
            // The run's freed buffers stay in the C heap until trimmed; they
            // are not this model's to keep.
            drop(zeros);
            lru::release_free_memory();
            let after = lru::resident_bytes();
            let kept = after.saturating_sub(before).max(version.1);
            Ok((c, lru::Cost { kept, working: peak.saturating_sub(after) }))
        })
        .await
        .map_err(ApiError::internal)??;
    let preprocess = classifier.info.preprocess.clone();
    let threshold = classifier.threshold();
    let (tx, rx) = crossbeam_channel::bounded::<ClassifyJob>(app.cfg.max_queue.max(1));
    std::thread::Builder::new().name(format!("cbr-classify-{name}")).spawn({
        let running = app.running.clone();
        move || classify_worker(classifier, rx, &running)
    })?;
    let l = Arc::new(Loaded { version, preprocess, threshold, tx });
    // Unloaded models end when their last request is answered (their worker
    // stops once every sender is gone).
    let unloaded = app.loaded.lock().unwrap().insert(name, l.clone(), cost);
    if !unloaded.is_empty() {
        eprintln!(
            "cbr serve: unloaded {} (least recently used) to stay within --max-loaded {} / --max-loaded-mb {}",
            unloaded.join(", "),
            app.cfg.max_loaded,
            app.cfg.max_loaded_bytes >> 20
        );
    }
    Ok(l)
}

/// How long a model's queue stays empty before its worker returns freed
/// memory to the system.
const IDLE_BEFORE_TRIM: std::time::Duration = std::time::Duration::from_millis(250);

/// Owns one session; runs whatever requests are waiting as one batch (grouped
/// by k and threshold), through the library's [`Classifier::predict`]. Ends
/// when the model is unloaded (all senders dropped).
fn classify_worker(
    mut classifier: Classifier,
    rx: crossbeam_channel::Receiver<ClassifyJob>,
    running: &Mutex<()>,
) {
    let max = classifier.max_batch.max(1);
    loop {
        // A lean session frees each batch's buffers, but the C heap keeps them
        // for reuse: after a busy spell (a batch of 16 takes ~100 MB), hand
        // them back once the queue has been idle for a moment, so that the
        // memory bound sees what loaded models keep, not their last peak.
        let first = match rx.recv_timeout(IDLE_BEFORE_TRIM) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                lru::release_free_memory();
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        while !jobs.is_empty() {
            let (k, t) = (jobs[0].k, jobs[0].threshold.map(f32::to_bits));
            let (group, rest): (Vec<_>, Vec<_>) =
                jobs.into_iter().partition(|j| j.k == k && j.threshold.map(f32::to_bits) == t);
            jobs = rest;
            let mut batch = Vec::with_capacity(group.len() * group[0].tensor.len());
            for j in &group {
                batch.extend_from_slice(&j.tensor);
            }
            let result = {
                let _turn = running.lock().unwrap_or_else(|p| p.into_inner());
                classifier.predict(&batch, group.len(), k, group[0].threshold)
            };
            match result {
                Ok(preds) => {
                    for (j, p) in group.into_iter().zip(preds) {
                        let _ = j.reply.send(Ok(p));
                    }
                }
                Err(e) => {
                    for j in group {
                        let _ = j.reply.send(Err(format!("{e:#}")));
                    }
                }
            }
        }
    }
    drop(classifier);
    lru::release_free_memory();
}

#[derive(Deserialize)]
struct ClassifyQuery {
    k: Option<usize>,
    threshold: Option<f32>,
}

/// The uploaded image: the first file part of a multipart body, or the raw body.
async fn image_body(app: &AppState, req: Request) -> ApiResult<axum::body::Bytes> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
        .unwrap_or(false);
    if is_multipart {
        let mut m = Multipart::from_request(req, app).await.map_err(|e| {
            ApiError::bad_request(
                "bad_multipart",
                format!("cannot read the multipart upload: {}", e.body_text()),
            )
        })?;
        while let Some(field) = m.next_field().await.map_err(ApiError::from_multipart)? {
            if field.file_name().is_some() || matches!(field.name(), Some("file") | Some("image")) {
                return field.bytes().await.map_err(ApiError::from_multipart);
            }
        }
        Err(ApiError::bad_request("no_files", "the upload has no file part"))
    } else {
        axum::body::to_bytes(req.into_body(), app.cfg.max_upload).await.map_err(|e| {
            if error::is_length_limit(&e) {
                ApiError::too_large(format!(
                    "request body above the limit of {} bytes",
                    app.cfg.max_upload
                ))
            } else {
                // A malformed chunked body (a bad chunk-size line), or the client went away.
                ApiError::bad_request("bad_body", format!("cannot read the request body: {e}"))
            }
        })
    }
}

async fn classify(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ClassifyQuery>,
    req: Request,
) -> ApiResult<Json<Classification>> {
    let start = Instant::now();
    existing(&app, &name)?;
    let k = q.k.unwrap_or(3).clamp(1, 100);
    // The whole body first, bounded in size and time: a slow or stalled
    // client must never hold an inference slot.
    let bytes = tokio::time::timeout(app.cfg.read_timeout, image_body(&app, req)).await.map_err(
        |_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "read_timeout",
                format!("the request body did not arrive within {:?}", app.cfg.read_timeout),
            )
        },
    )??;
    let _permit = app.classify_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::busy(
            "busy",
            format!(
                "{} classify requests are already in flight; try again shortly",
                app.cfg.max_queue
            ),
            1,
        )
    })?;
    // Refuse what is plainly not an image before looking at the model.
    if bytes.is_empty() {
        return Err(ApiError::from_decode("image", &decode::DecodeError::Empty));
    }
    if store::image_ext(&bytes).is_none() {
        return Err(ApiError::from_decode("image", &decode::DecodeError::UnknownFormat));
    }
    let model = loaded(&app, &name).await?;
    let (preprocess, limits) = (model.preprocess.clone(), app.limits.clone());
    let tensor = tokio::task::spawn_blocking(move || -> ApiResult<Vec<f32>> {
        decode::bytes_to_tensor(&bytes, &preprocess, &limits)
            .map_err(|e| ApiError::from_decode("image", &e))
    })
    .await
    .map_err(ApiError::internal)??;
    let (reply, answer) = oneshot::channel();
    model
        .tx
        .try_send(ClassifyJob { tensor, k, threshold: q.threshold, reply })
        .map_err(|_| ApiError::busy("busy", "the model's queue is full; try again shortly", 1))?;
    let p = answer
        .await
        .map_err(|_| ApiError::internal("the model worker stopped"))?
        .map_err(ApiError::internal)?;
    Ok(Json(Classification {
        unknown: p.label.is_none(),
        label: p.label,
        top: p.top,
        unknown_score: p.unknown_score,
        threshold: q.threshold.or(model.threshold),
        ms: start.elapsed().as_secs_f64() * 1e3,
    }))
}

/// Reads a file on the blocking pool.
async fn read_file(path: impl Into<PathBuf>) -> std::io::Result<Vec<u8>> {
    let path = path.into();
    tokio::task::spawn_blocking(move || std::fs::read(path)).await.map_err(std::io::Error::other)?
}

// ---- built model ----

async fn built_bytes(app: &App, name: &str) -> ApiResult<Vec<u8>> {
    existing(app, name)?;
    model_version(app, name)?;
    Ok(read_file(app.store.model_path(name)).await?)
}

async fn model_info(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<cbr_core::meta::ClassifierInfo>> {
    let bytes = built_bytes(&app, &name).await?;
    let info = tokio::task::spawn_blocking(move || -> Result<cbr_core::meta::ClassifierInfo> {
        Ok(cbr_core::format::read(&bytes)?.info)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(info))
}

/// The built model as a download, if it is in the `want`ed format.
async fn download(app: &App, name: &str, want: ModelFormat) -> ApiResult<Response> {
    let bytes = built_bytes(app, name).await?;
    let format = ModelFormat::sniff(&bytes);
    if format != want {
        let code = match want {
            ModelFormat::Onnx => "no_onnx",
            ModelFormat::Tflite => "no_tflite",
        };
        return Err(ApiError::not_found(
            code,
            format!(
                "model {name:?} is built as {} (the server's embedder is in that format): GET {}",
                format.title(),
                format.stored_name()
            ),
        ));
    }
    let mut r = ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response();
    let file_name = format.download_name(name);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn download_onnx(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    download(&app, &name, ModelFormat::Onnx).await
}

async fn download_tflite(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    download(&app, &name, ModelFormat::Tflite).await
}

/// The build-on-this-device site for the server's embedder, made on first use and kept.
async fn device_site(app: &AppState) -> ApiResult<Arc<Vec<cbr::export_web::SiteFile>>> {
    static SITE: std::sync::Mutex<Option<Arc<Vec<cbr::export_web::SiteFile>>>> =
        std::sync::Mutex::new(None);
    if let Some(site) = SITE.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Ok(site);
    }
    // The server does not fetch onnxruntime-web itself: it is installed, or the answer says how.
    cbr::export_web::ort_web::files()
        .map_err(|e| ApiError::not_found("no_ort_web", format!("{e:#}")))?;
    let choice = app.cfg.embedder.clone();
    let files = tokio::task::spawn_blocking(move || -> Result<Vec<cbr::export_web::SiteFile>> {
        let embedder = cbr::export_web::SiteEmbedder::open(&choice)?;
        cbr::export_web::site_files(None, &embedder, "Build on this device")
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::not_found("no_device_site", format!("{e:#}")))?;
    let site = Arc::new(files);
    *SITE.lock().unwrap_or_else(|p| p.into_inner()) = Some(site.clone());
    Ok(site)
}

async fn device_page(State(app): State<AppState>) -> ApiResult<Response> {
    device_file(State(app), Path("index.html".to_string())).await
}

/// One file of the build-on-this-device site.
async fn device_file(State(app): State<AppState>, Path(file): Path<String>) -> ApiResult<Response> {
    let site = device_site(&app).await?;
    let f = site
        .iter()
        .find(|f| f.path == file)
        .ok_or_else(|| ApiError::not_found("no_file", format!("no file {file:?} in the site")))?;
    let ctype = match file.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")], f.bytes.clone())
        .into_response())
}

/// cbr-core as WebAssembly, for the web app's on-device mode ([`cbr::export_web::core_wasm_path`]).
async fn core_wasm() -> ApiResult<Response> {
    let path = cbr::export_web::core_wasm_path()
        .map_err(|e| ApiError::not_found("no_core_wasm", format!("{e:#}")))?;
    let bytes = read_file(path).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm"), (header::CACHE_CONTROL, "no-cache")], bytes)
        .into_response())
}

/// onnxruntime-web's files, from cbr's cache, for the web app's on-device mode.
async fn ort_web_file(Path(file): Path<String>) -> ApiResult<Response> {
    use cbr::export_web::ort_web;
    if !ort_web::is_file_name(&file) {
        return Err(ApiError::not_found("no_file", format!("no onnxruntime-web file {file:?}")));
    }
    let files =
        ort_web::files().map_err(|e| ApiError::not_found("no_ort_web", format!("{e:#}")))?;
    let path = files.into_iter().find(|(n, _)| *n == file).map(|(_, p)| p).expect("a kept file");
    let bytes = read_file(path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, ort_web::content_type(&file)),
            // The files of a pinned release never change.
            (header::CACHE_CONTROL, "public, max-age=604800, immutable"),
        ],
        bytes,
    )
        .into_response())
}

/// The built model as the site `cbr export-web` writes, zipped (`<model>-web.zip`, one folder).
async fn export_web(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let bytes = built_bytes(&app, &name).await?;
    // The server does not fetch onnxruntime-web itself: it is installed, or the answer says how.
    cbr::export_web::ort_web::files()
        .map_err(|e| ApiError::not_found("no_ort_web", format!("{e:#}")))?;
    let title = name.clone();
    let zip = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let embedder = cbr::export_web::SiteEmbedder::of_model(&bytes)?;
        let files = cbr::export_web::site_files(Some(&bytes), &embedder, &title)?;
        let root = format!("{title}-web");
        Ok(cbr::export_web::write_zip(&files, &root, std::io::Cursor::new(Vec::new()))?
            .into_inner())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request("no_export", format!("{e:#}")))?;
    let mut r = ([(header::CONTENT_TYPE, "application/zip")], zip).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}-web.zip\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
