//! The one route table: the router is built from it (see `handler_for` in
//! `mod.rs`) and `/openapi.json` is generated from it and from the response
//! types ([`super::api`]), so neither the paths nor the bodies can drift.

use serde_json::{json, Map, Value};

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqBody {
    None,
    /// A JSON object with a `name` string.
    Name,
    /// multipart/form-data with one or more `file` parts (image files).
    Images,
    /// One image: multipart/form-data with a file part, or the raw image bytes as the body.
    Image,
    /// An optional JSON object of build options (`BuildRequest`: `cbr build`'s names and defaults).
    BuildOptions,
}

/// What a successful response carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resp {
    /// application/json with a schema from `components/schemas`.
    Json(&'static str),
    Html,
    Js,
    Css,
    Onnx,
    Tflite,
    Image,
    /// A zip archive.
    Zip,
    /// An onnxruntime-web file: JavaScript or WebAssembly.
    OrtWeb,
    /// A WebAssembly module.
    Wasm,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub body: ReqBody,
    /// The success status and what it returns.
    pub ok: (u16, Resp),
    /// Error statuses this route can answer with (all JSON `Error`).
    pub errors: &'static [u16],
    /// Query parameters: (name, type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
}

const E_MODEL: &[u16] = &[400, 404, 503];

pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/", id: "webApp", summary: "The web app (HTML page)", tag: "web", body: ReqBody::None, ok: (200, Resp::Html), errors: &[], query: &[] },
    Route { method: "GET", path: "/app.js", id: "webAppScript", summary: "The web app's script", tag: "web", body: ReqBody::None, ok: (200, Resp::Js), errors: &[], query: &[] },
    Route { method: "GET", path: "/app.css", id: "webAppStyle", summary: "The web app's style sheet", tag: "web", body: ReqBody::None, ok: (200, Resp::Css), errors: &[], query: &[] },
    Route { method: "GET", path: "/cbr-device.js", id: "deviceScript", summary: "The on-device classifier module (preprocessing, model run and answer as `cbr classify`), shared with `cbr export-web`'s page", tag: "web", body: ReqBody::None, ok: (200, Resp::Js), errors: &[], query: &[] },
    Route { method: "GET", path: "/cbr-core.mjs", id: "coreScript", summary: "cbr-core's JavaScript API (web/pkg/cbr-core.mjs), used by the on-device module", tag: "web", body: ReqBody::None, ok: (200, Resp::Js), errors: &[], query: &[] },
    Route { method: "GET", path: "/cbr_core.wasm", id: "coreWasm", summary: "cbr-core as WebAssembly (pixel path, answer, build and edits on the device); 404 when the server was not given one (scripts/wasm.sh, CBR_WASM)", tag: "web", body: ReqBody::None, ok: (200, Resp::Wasm), errors: &[404], query: &[] },
    Route { method: "GET", path: "/device/", id: "devicePage", summary: "Build on this device: the page `cbr export-web -o DIR` writes (no classes yet, the server's embedder), which builds a classifier in the browser", tag: "web", body: ReqBody::None, ok: (200, Resp::Html), errors: &[404, 503], query: &[] },
    Route { method: "GET", path: "/device/{file}", id: "deviceFile", summary: "A file of the build-on-this-device site (as `cbr export-web -o DIR` writes it)", tag: "web", body: ReqBody::None, ok: (200, Resp::OrtWeb), errors: &[404, 503], query: &[] },
    Route { method: "GET", path: "/device/ort/{file}", id: "deviceOrtWeb", summary: "onnxruntime-web's files for the build-on-this-device site", tag: "web", body: ReqBody::None, ok: (200, Resp::OrtWeb), errors: &[404, 503], query: &[] },
    Route { method: "GET", path: "/ort/{file}", id: "ortWeb", summary: "onnxruntime-web's WebAssembly backend, from cbr's cache (`cbr runtime install --web`): ort.wasm.min.mjs, ort-wasm-simd-threaded.mjs, ort-wasm-simd-threaded.wasm", tag: "web", body: ReqBody::None, ok: (200, Resp::OrtWeb), errors: &[404, 503], query: &[] },
    Route { method: "GET", path: "/openapi.json", id: "openapi", summary: "This document", tag: "meta", body: ReqBody::None, ok: (200, Resp::Json("OpenApi")), errors: &[], query: &[] },
    Route { method: "GET", path: "/api/health", id: "health", summary: "Liveness and limits", tag: "meta", body: ReqBody::None, ok: (200, Resp::Json("Health")), errors: &[], query: &[] },
    Route { method: "GET", path: "/api/models", id: "listModels", summary: "List the models", tag: "models", body: ReqBody::None, ok: (200, Resp::Json("ModelList")), errors: &[503], query: &[] },
    Route { method: "POST", path: "/api/models", id: "createModel", summary: "Create an empty model", tag: "models", body: ReqBody::Name, ok: (201, Resp::Json("Model")), errors: &[400, 409, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}", id: "getModel", summary: "A model: labels, image ids, build state", tag: "models", body: ReqBody::None, ok: (200, Resp::Json("Model")), errors: E_MODEL, query: &[] },
    Route { method: "DELETE", path: "/api/models/{model}", id: "deleteModel", summary: "Delete a model, its images and its built file", tag: "models", body: ReqBody::None, ok: (200, Resp::Json("Deleted")), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "POST", path: "/api/models/{model}/labels", id: "addLabel", summary: "Add a label (class) with no images yet", tag: "images", body: ReqBody::Name, ok: (201, Resp::Json("Label")), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "DELETE", path: "/api/models/{model}/labels/{label}", id: "deleteLabel", summary: "Remove a label and all its images", tag: "images", body: ReqBody::None, ok: (200, Resp::Json("Deleted")), errors: E_MODEL, query: &[] },
    Route { method: "POST", path: "/api/models/{model}/labels/{label}/images", id: "addImages", summary: "Upload labelled images (multipart, `file` parts); creates the label if needed. All or nothing: one unreadable file rejects the request.", tag: "images", body: ReqBody::Images, ok: (201, Resp::Json("Added")), errors: &[400, 404, 413, 415, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}/labels/{label}/images/{image}", id: "getImage", summary: "One stored image", tag: "images", body: ReqBody::None, ok: (200, Resp::Image), errors: E_MODEL, query: &[] },
    Route { method: "DELETE", path: "/api/models/{model}/labels/{label}/images/{image}", id: "deleteImage", summary: "Remove one image", tag: "images", body: ReqBody::None, ok: (200, Resp::Json("Deleted")), errors: E_MODEL, query: &[] },
    Route { method: "POST", path: "/api/models/{model}/build", id: "startBuild", summary: "Start building model.onnx from the model's images (runs in the background; poll getBuild); an optional JSON body names build options as `cbr build` does (e.g. {\"aggregate\": \"max\"})", tag: "build", body: ReqBody::BuildOptions, ok: (202, Resp::Json("BuildStatus")), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}/build", id: "getBuild", summary: "Build progress: state, done/total images", tag: "build", body: ReqBody::None, ok: (200, Resp::Json("BuildStatus")), errors: E_MODEL, query: &[] },
    Route { method: "POST", path: "/api/models/{model}/classify", id: "classify", summary: "Classify one image: top-k labels with scores, and the label or unknown", tag: "classify", body: ReqBody::Image, ok: (200, Resp::Json("Classification")), errors: &[400, 404, 408, 409, 413, 415, 503], query: &[
        ("k", "integer", "How many classes to return (default 3, at most 100)"),
        ("threshold", "number", "Answer unknown (label null) exactly when the best class's score is below this, instead of the model's own decision (its unknown entry, and its threshold if any)"),
    ] },
    Route { method: "GET", path: "/api/models/{model}/info", id: "modelInfo", summary: "The built model's metadata (as `cbr info --json`)", tag: "models", body: ReqBody::None, ok: (200, Resp::Json("ClassifierInfo")), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}/model.onnx", id: "downloadOnnx", summary: "Download the built ONNX model", tag: "models", body: ReqBody::None, ok: (200, Resp::Onnx), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}/export-web.zip", id: "exportWeb", summary: "The built model as a self-contained static web site that classifies on the device (as `cbr export-web`), zipped", tag: "models", body: ReqBody::None, ok: (200, Resp::Zip), errors: &[400, 404, 409, 503], query: &[] },
    Route { method: "GET", path: "/api/models/{model}/model.tflite", id: "downloadTflite", summary: "Download the TFLite model where one was built (cbr builds ONNX only today: 404 otherwise)", tag: "models", body: ReqBody::None, ok: (200, Resp::Tflite), errors: E_MODEL, query: &[] },
];

/// The path parameters of `path`, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad request: invalid name, JSON or multipart body, or a damaged image",
        404 => "Unknown model, label or image (or no route)",
        409 => "Conflict: already exists, a build is running, or the model is not built yet",
        401 => "Missing or wrong access token (servers started with --token, or beyond loopback)",
        403 => "Host or Origin not allowed (DNS rebinding and cross-site protection)",
        405 => "Method not allowed on this path",
        408 => "The request body did not arrive in time (--read-timeout)",
        413 => "Upload too large (bytes) or image with too many pixels",
        415 => "Not an image in a supported format (JPEG, PNG, GIF, BMP, WebP, TIFF, PNM)",
        503 => "Busy (queue full) or the request timed out; see Retry-After",
        _ => "",
    }
}

/// The schemas: generated from the types the handlers return ([`super::api`]),
/// plus this document itself (free-form).
fn schemas() -> Value {
    let mut s = super::api::schemas();
    s["OpenApi"] = json!({"type": "object", "description": "this OpenAPI 3.0 document"});
    s
}

/// The OpenAPI 3.0 document for [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|(n, t, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": t}})));
        let mut responses = Map::new();
        let ok_content = match r.ok.1 {
            Resp::Json(s) => {
                json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}})
            }
            Resp::Html => json!({"text/html": {}}),
            Resp::Js => json!({"text/javascript": {}}),
            Resp::Css => json!({"text/css": {}}),
            Resp::Onnx => {
                json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
            }
            Resp::Tflite => {
                json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
            }
            Resp::Image => json!({"image/*": {"schema": {"type": "string", "format": "binary"}}}),
            Resp::Zip => {
                json!({"application/zip": {"schema": {"type": "string", "format": "binary"}}})
            }
            Resp::OrtWeb => json!({"text/javascript": {}, "application/wasm": {}}),
            Resp::Wasm => json!({"application/wasm": {}}),
        };
        responses.insert(
            r.ok.0.to_string(),
            json!({"description": status_text(r.ok.0), "content": ok_content}),
        );
        // Every route: the access guard's answers (see guard.rs).
        for e in r.errors.iter().chain(&[401, 403]) {
            let mut resp = json!({"description": status_text(*e), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            if *e == 503 {
                resp["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}});
            }
            responses.insert(e.to_string(), resp);
        }
        let mut op = json!({"operationId": r.id, "summary": r.summary, "tags": [r.tag], "parameters": params, "responses": responses});
        let file = json!({"type": "string", "format": "binary"});
        match r.body {
            ReqBody::None => {}
            ReqBody::Name => {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}})
            }
            ReqBody::Images => {
                op["requestBody"] = json!({"required": true, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "array", "items": file}}}}}})
            }
            ReqBody::Image => {
                op["requestBody"] = json!({"required": true, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": file}}},
                    "image/*": {"schema": file}}})
            }
            ReqBody::BuildOptions => {
                op["requestBody"] = json!({"required": false, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/BuildRequest"}}}})
            }
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "cbr serve", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Build image classifiers from labelled images with no training (classification by retrieval), and classify with them. Every error is JSON: {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}
