//! The JSON bodies of the HTTP API as Rust types: the handlers return them and
//! `/openapi.json` describes them (their schemas are derived from these types
//! with `utoipa`), so the document cannot drift from what the server sends.

use serde::Serialize;
use utoipa::ToSchema;

pub use super::store::{BuiltState, LabelImages};
use cbr::classifier::Scored;

/// `GET /api/health`: liveness and the server's limits.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    pub ok: bool,
    pub version: String,
    /// Largest request body in bytes.
    pub max_upload: usize,
    /// Largest image in pixels.
    pub max_pixels: u64,
    /// Classify requests in flight at once.
    pub max_queue: usize,
    pub timeout_secs: f64,
    /// Models loaded for classification now.
    pub loaded_models: usize,
    /// Their measured memory.
    pub loaded_bytes: u64,
    pub max_loaded: usize,
    pub max_loaded_bytes: u64,
}

/// One label (class) of a model and its image ids (left out in lists).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Label {
    pub name: String,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
}

impl Label {
    pub fn of(l: LabelImages, with_images: bool) -> Label {
        Label { name: l.name, count: l.count, images: with_images.then_some(l.images) }
    }
}

/// Where a build is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    Idle,
    Queued,
    Running,
    Done,
    Failed,
}

impl BuildState {
    /// Whether a build is waiting or running.
    pub fn active(self) -> bool {
        matches!(self, BuildState::Queued | BuildState::Running)
    }
}

/// A build's progress.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BuildStatus {
    pub state: BuildState,
    /// Images embedded so far, of `total`.
    pub done: usize,
    pub total: usize,
    /// Why the build failed.
    pub error: Option<String>,
    /// The last successful build.
    pub built: Option<BuiltState>,
}

/// A model: its labels and images, and its build.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Model {
    pub name: String,
    pub labels: Vec<Label>,
    /// Images over all labels.
    pub images: usize,
    pub built: Option<BuiltState>,
    /// Size of the built model file.
    pub model_bytes: Option<u64>,
    /// Images changed since the last build.
    pub stale: bool,
    pub build: BuildStatus,
}

/// `GET /api/models`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<Model>,
}

/// What a delete removed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// The images an upload stored.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Added {
    /// The ids of the stored images, in upload order.
    pub added: Vec<String>,
    pub count: usize,
}

/// The answer for one image.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Classification {
    /// The answer, or null for unknown.
    pub label: Option<String>,
    pub unknown: bool,
    /// The best classes, best first.
    pub top: Vec<Scored>,
    /// The model's probability that the image is of none of its classes
    /// (its "unknown" entry; null for models without one).
    pub unknown_score: Option<f32>,
    /// The unknown threshold that applied.
    pub threshold: Option<f32>,
    /// Server time for decode + inference.
    pub ms: f64,
}

/// Every error: a stable code and a message for people.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Error {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. unknown_model, unsupported_image,
    /// upload_too_large, too_many_pixels, invalid_name, busy, timeout.
    pub code: String,
    pub message: String,
}

/// The schemas of every body above (and of what they contain), by name.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    Health,
    Label,
    BuildState,
    BuildStatus,
    BuiltState,
    Model,
    ModelList,
    Deleted,
    Added,
    Classification,
    Scored,
    Error,
    ErrorDetail,
    cbr_core::meta::ClassifierInfo,
    cbr_core::meta::EmbedderInfo,
    cbr_core::meta::IndexInfo,
    cbr_core::meta::Calibration,
    cbr_core::meta::Aggregation,
    cbr_core::meta::IndexDtype,
    cbr_core::meta::HeadOptions,
    cbr_core::preprocess::Preprocess,
    cbr_core::preprocess::Layout,
    cbr_core::preprocess::ChannelOrder,
    cbr_core::preprocess::ResizeMode,
    cbr_core::build::BuildRequest,
    cbr_core::build::IndexChoice,
    cbr_core::format::ModelFormat,
    cbr_core::tflite::TfliteBlock,
)))]
struct Schemas;

/// The components/schemas object of the OpenAPI 3.0 document. utoipa writes
/// OpenAPI 3.1 schemas; the document is 3.0 (what most client generators
/// read), so "may be null" is rewritten in 3.0's words ([`to_openapi_30`]).
pub fn schemas() -> serde_json::Value {
    use utoipa::OpenApi;
    let components = Schemas::openapi().components.expect("schemas are listed");
    let mut v = serde_json::to_value(components.schemas).expect("schemas serialise");
    to_openapi_30(&mut v);
    v
}

/// Rewrites OpenAPI 3.1 nullability into 3.0's: `type: [T, "null"]` becomes
/// `type: T, nullable: true`; `oneOf: [{type: null}, S]` becomes
/// `allOf: [S], nullable: true` (3.0 ignores siblings of a `$ref`).
pub fn to_openapi_30(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get("type") {
                let rest: Vec<Value> =
                    types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
                if rest.len() == 1 && rest.len() < types.len() {
                    m.insert("type".into(), rest[0].clone());
                    m.insert("nullable".into(), Value::Bool(true));
                }
            }
            if let Some(Value::Array(any)) = m.get("oneOf") {
                let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
                let rest: Vec<Value> = any.iter().filter(|s| !is_null(s)).cloned().collect();
                if rest.len() == 1 && rest.len() < any.len() {
                    m.remove("oneOf");
                    m.insert("allOf".into(), Value::Array(rest));
                    m.insert("nullable".into(), Value::Bool(true));
                }
            }
            for x in m.values_mut() {
                to_openapi_30(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_openapi_30),
        _ => {}
    }
}
