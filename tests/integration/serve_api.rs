//! `cbr serve` end to end: the real binary on loopback, real photos (Fashion-MNIST JPEGs),
//! every endpoint, the error contract, persistence across restarts and a kill
//! during a build, and the OpenAPI document against the router.

use crate::common;
use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Classes of `fixtures::fashion_mnist_jpeg()`, in sorted order; measured with 5
/// per class: leave-one-out accuracy 86.7%, 9/9 of the held-out images below right.
const CLASSES: &[&str] = &["coat", "dress", "sneaker"];

fn class_dir(c: &str) -> PathBuf {
    crate::fixtures::fashion_mnist_jpeg().join(c)
}

/// Creates `model` and uploads the first `n` images of each class; returns the held-out images per class.
fn populate(
    addr: std::net::SocketAddr,
    model: &str,
    classes: &[&str],
    n: usize,
) -> Vec<(String, Vec<PathBuf>)> {
    let r = post_json(addr, "/api/models", &json!({ "name": model }));
    assert_eq!(r.status, 201, "{}", r.text());
    let mut held = Vec::new();
    for c in classes {
        let (train, rest) = class_images(&class_dir(c), n);
        let r = post_files(
            addr,
            &format!("/api/models/{}/labels/{}/images", enc(model), enc(c)),
            &read_files(&train),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["count"], n);
        held.push((c.to_string(), rest));
    }
    held
}

fn build_ok(addr: std::net::SocketAddr, model: &str) -> Value {
    let r = request(addr, "POST", &format!("/api/models/{}/build", enc(model)), None, &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let b = wait_build(addr, model, Duration::from_secs(600));
    assert_eq!(b["state"], "done", "{b}");
    b
}

fn classify_file(addr: std::net::SocketAddr, model: &str, path: &Path) -> Resp {
    post_files(
        addr,
        &format!("/api/models/{}/classify?k=3", enc(model)),
        &read_files(&[path.to_path_buf()]),
    )
}

#[test]
fn api_build_classify_download_and_edit() {
    common::setup_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("models"), &[]);
    let a = server.addr;

    let health = get(a, "/api/health");
    assert_eq!(health.status, 200);
    assert!(health.json()["ok"].as_bool().unwrap());

    let held = populate(a, "birds", CLASSES, 5);
    let m = get(a, "/api/models/birds").json();
    assert_eq!(m["images"], 15, "{m}");
    let labels: Vec<&str> =
        m["labels"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(labels, CLASSES);
    assert_eq!(m["stale"], true);
    let list = get(a, "/api/models").json();
    assert_eq!(list["models"][0]["name"], "birds");

    // Unbuilt: classify, info and download say so.
    let r = classify_file(a, "birds", &held[0].1[0]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (409, Some("not_built")),
        "{}",
        r.text()
    );

    let b = build_ok(a, "birds");
    assert_eq!(b["built"]["classes"], 3);
    assert_eq!(b["built"]["images"], 15);
    assert_eq!(b["done"], 15);
    assert_eq!(get(a, "/api/models/birds").json()["stale"], false);

    // Held-out images: multipart and raw bodies, top-k with scores.
    let mut right = 0;
    let mut total = 0;
    for (class, rest) in &held {
        for img in rest.iter().take(3) {
            let r = classify_file(a, "birds", img);
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            assert_eq!(v["top"].as_array().unwrap().len(), 3, "{v}");
            assert!(
                v["top"][0]["score"].as_f64().unwrap() >= v["top"][1]["score"].as_f64().unwrap()
            );
            if v["label"] == class.as_str() {
                right += 1;
            }
            assert_eq!(v["unknown"], v["label"].is_null());
            total += 1;
        }
    }
    println!("held-out accuracy through the API: {right}/{total}");
    assert!(right * 10 >= total * 7, "only {right}/{total} held-out images classified right");
    let raw = std::fs::read(&held[1].1[0]).unwrap();
    let r = request(a, "POST", "/api/models/birds/classify?k=1", Some("image/jpeg"), &raw);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["top"].as_array().unwrap().len(), 1);
    let api_top = r.json()["top"][0]["label"].as_str().unwrap().to_string();

    // The downloaded model is the CLI's model: loads in the library, and `cbr classify` agrees with the API.
    let r = get(a, "/api/models/birds/model.onnx");
    assert_eq!(r.status, 200);
    assert!(r.header("content-disposition").unwrap().contains("birds.onnx"));
    let onnx = tmp.path().join("birds.onnx");
    std::fs::write(&onnx, &r.body).unwrap();
    let c = cbr::classifier::Classifier::open(&onnx).unwrap();
    assert_eq!(c.info.labels, CLASSES);
    let out = common::run_ok(&[
        "classify",
        onnx.to_str().unwrap(),
        held[1].1[0].to_str().unwrap(),
        "--json",
        "-k",
        "1",
    ]);
    let cli: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(cli["top"][0]["label"].as_str().unwrap(), api_top);

    let info = get(a, "/api/models/birds/info");
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["labels"], json!(CLASSES));
    assert_eq!(info.json()["images_per_label"], json!([5, 5, 5]));
    let r = get(a, "/api/models/birds/model.tflite");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("no_tflite")));

    // Thumbnails, then removing an image and a label.
    let m = get(a, "/api/models/birds").json();
    let id = m["labels"][0]["images"][0].as_str().unwrap().to_string();
    let img = get(a, &format!("/api/models/birds/labels/{}/images/{id}", enc(CLASSES[0])));
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type"), Some("image/jpeg"));
    // Content-addressed: the same bytes uploaded again are the same image.
    let again = post_files(
        a,
        &format!("/api/models/birds/labels/{}/images", enc(CLASSES[0])),
        &[("x.jpg".into(), img.body.clone())],
    );
    assert_eq!(again.json()["added"][0], id.as_str());
    assert_eq!(get(a, "/api/models/birds").json()["images"], 15);
    let r = delete(a, &format!("/api/models/birds/labels/{}/images/{id}", enc(CLASSES[0])));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = delete(a, &format!("/api/models/birds/labels/{}", enc(CLASSES[2])));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = get(a, "/api/models/birds").json();
    assert_eq!(m["images"], 9, "{m}");
    assert_eq!(m["labels"].as_array().unwrap().len(), 2);
    assert_eq!(m["stale"], true);
    // Empty label, then rebuild with two classes.
    let r = post_json(a, "/api/models/birds/labels", &json!({"name": "chat noir é"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(a, "POST", "/api/models/birds/build", None, &[]);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("empty_label")));
    assert_eq!(delete(a, &format!("/api/models/birds/labels/{}", enc("chat noir é"))).status, 200);
    // Build options are `cbr build`'s, as JSON (the one BuildRequest); a wrong one is a 400
    // naming it, before any work.
    let bad = post_json(a, "/api/models/birds/build", &json!({"aggregate": "mean"}));
    assert_eq!((bad.status, code(&bad)), (400, "bad_build_options".to_string()), "{}", bad.text());
    assert!(bad.text().contains("build option aggregate"), "{}", bad.text());
    let tflite = post_json(a, "/api/models/birds/build", &json!({"tflite_block": "int8"}));
    assert_eq!(tflite.status, 400, "{}", tflite.text());
    let r =
        post_json(a, "/api/models/birds/build", &json!({"aggregate": "max", "no_unknown": true}));
    assert_eq!(r.status, 202, "{}", r.text());
    let b = wait_build(a, "birds", Duration::from_secs(600));
    assert_eq!(b["state"], "done", "{b}");
    let info = get(a, "/api/models/birds/info").json();
    assert_eq!(
        (info["aggregation"].as_str(), &info["unknown_label"]),
        (Some("max"), &Value::Null),
        "{info}"
    );
    // No body: the defaults.
    let b = build_ok(a, "birds");
    assert_eq!(b["built"]["classes"], 2);
    let info = get(a, "/api/models/birds/info").json();
    assert_eq!(info["labels"], json!(CLASSES[..2]));
    assert_eq!(info["aggregation"], "discriminant");
    // The new version is served (the cached session was replaced).
    let r = classify_file(a, "birds", &held[2].1[0]);
    let v = r.json();
    let top: Vec<&str> =
        v["top"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert!(!top.contains(&CLASSES[2]), "{top:?}");

    // Files on disk: content-addressed names only.
    for l in std::fs::read_dir(tmp.path().join("models/birds/images")).unwrap() {
        for f in std::fs::read_dir(l.unwrap().path()).unwrap() {
            let n = f.unwrap().file_name().to_string_lossy().into_owned();
            assert!(n.len() == 20 && n.ends_with(".jpg"), "{n}");
        }
    }
    assert_eq!(delete(a, "/api/models/birds").status, 200);
    assert_eq!(get(a, "/api/models/birds").status, 404);
}

fn code(r: &Resp) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {}", r.text()))
        .to_string()
}

#[test]
fn api_errors_are_json_with_the_right_status() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("models"),
        &["--max-upload", "300000", "--max-pixels", "20000", "--timeout", "2"],
    );
    let a = server.addr;
    // A real JPEG photograph above the pixel limit: scikit-image's rocket (427x640, 112 kB).
    let rocket = crate::fixtures::photos().into_iter().find(|p| p.ends_with("rocket.jpg"));
    let jpeg = std::fs::read(rocket.expect("rocket.jpg among the fixture photos")).unwrap();

    // Unknown model / route.
    for (m, p) in [
        ("GET", "/api/models/nope"),
        ("POST", "/api/models/nope/classify"),
        ("GET", "/api/models/nope/model.onnx"),
        ("POST", "/api/models/nope/build"),
    ] {
        let r = request(a, m, p, None, &[]);
        assert_eq!((r.status, code(&r)), (404, "unknown_model".into()), "{m} {p}");
    }
    let r = get(a, "/api/nothing-here");
    assert_eq!((r.status, code(&r)), (404, "no_route".into()));

    // Names: traversal and bad characters are 400, never files outside the models dir.
    for bad in ["../x", "a/b", ".hidden", "", "a\\b", "x".repeat(65).as_str()] {
        let r = post_json(a, "/api/models", &json!({ "name": bad }));
        assert_eq!((r.status, code(&r)), (400, "invalid_name".into()), "{bad:?}");
    }
    assert_eq!(post_json(a, "/api/models", &json!({"name": "m"})).status, 201);
    let r = post_json(a, "/api/models", &json!({"name": "m"}));
    assert_eq!((r.status, code(&r)), (409, "model_exists".into()));
    let r = request(a, "POST", "/api/models", Some("application/json"), b"{not json");
    assert_eq!((r.status, code(&r)), (400, "bad_json".into()));
    for bad in ["..", "%2E%2E", "..%2Fx", "%2E%2E%2Fx", ".x", "a%5Cb", "a%00b", "a%2Fb"] {
        let r = post_files(
            a,
            &format!("/api/models/m/labels/{bad}/images"),
            &[("a.jpg".into(), jpeg.clone())],
        );
        assert_eq!(r.status, 400, "label {bad}: {}", r.text());
        let r = get(a, &format!("/api/models/%2E%2E%2F{bad}"));
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.text());
    }
    let r = get(a, "/api/models/%2E%2E%2Fm");
    assert_eq!((r.status, code(&r)), (400, "invalid_name".into()));
    let r = get(a, "/api/models/m/labels/x/images/..%2F..%2Fstate.json");
    assert_eq!((r.status, code(&r)), (400, "invalid_name".into()));
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("models/x").exists());

    // Unsupported format: 415, for uploads and for classify.
    let text = b"hello, I am not an image\n".to_vec();
    let r = post_files(a, "/api/models/m/labels/cat/images", &[("a.txt".into(), text.clone())]);
    assert_eq!((r.status, code(&r)), (415, "unsupported_image".into()), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("a.txt"));
    // All or nothing: a good image with a bad one stores neither.
    let mut small = Vec::new();
    image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut small), image::ImageFormat::Png)
        .unwrap();
    let r = post_files(
        a,
        "/api/models/m/labels/cat/images",
        &[("ok.png".into(), small.clone()), ("a.txt".into(), text.clone())],
    );
    assert_eq!(r.status, 415);
    assert_eq!(get(a, "/api/models/m").json()["images"], 0);
    let r = post_files(a, "/api/models/m/labels/cat/images", &[("ok.png".into(), small.clone())]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.json()["added"][0].as_str().unwrap().ends_with(".png"));
    assert_eq!(delete(a, "/api/models/m/labels/cat").status, 200);
    let r = request(a, "POST", "/api/models/m/classify", Some("text/plain"), &text);
    assert_eq!((r.status, code(&r)), (415, "unsupported_image".into()));
    // Damaged image: 400.
    let r = post_files(
        a,
        "/api/models/m/labels/cat/images",
        &[("cut.jpg".into(), jpeg[..jpeg.len() / 2].to_vec())],
    );
    assert_eq!((r.status, code(&r)), (400, "corrupt_image".into()), "{}", r.text());
    // Too many pixels (limit 20 000; the rocket has 273 280): 413.
    let r = post_files(a, "/api/models/m/labels/cat/images", &[("big.jpg".into(), jpeg.clone())]);
    assert_eq!((r.status, code(&r)), (413, "too_many_pixels".into()), "{}", r.text());
    // Upload above --max-upload: 413 (from Content-Length, and also for a streamed body).
    let big = vec![0u8; 400_000];
    let r = post_files(a, "/api/models/m/labels/cat/images", &[("big.jpg".into(), big.clone())]);
    assert_eq!((r.status, code(&r)), (413, "upload_too_large".into()));
    let r = request(a, "POST", "/api/models/m/classify", Some("image/jpeg"), &big);
    assert_eq!((r.status, code(&r)), (413, "upload_too_large".into()));
    // Not built yet: 409.
    let r = request(a, "POST", "/api/models/m/classify", Some("image/jpeg"), &jpeg);
    assert!(r.status == 409 || r.status == 413, "{}", r.text());
    let r = get(a, "/api/models/m/info");
    assert_eq!((r.status, code(&r)), (409, "not_built".into()));
    let r = request(a, "POST", "/api/models/m/build", None, &[]);
    assert_eq!((r.status, code(&r)), (400, "no_images".into()));

    // Timeout: a body that never arrives is cut off after --timeout with 503 + Retry-After.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let start = std::time::Instant::now();
        s.write_all(b"POST /api/models/m/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
        assert!(text.contains("\"timeout\""), "{text}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    drop(server);

    // Queue bound: with no classify slots every classify is refused at once with 503 + Retry-After.
    let server = Server::start(&tmp.path().join("models"), &["--max-queue", "0"]);
    let r = request(server.addr, "POST", "/api/models/m/classify", Some("image/jpeg"), &jpeg);
    assert_eq!((r.status, code(&r)), (503, "busy".into()), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[test]
fn api_models_survive_restart_and_a_kill_during_build() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    // An empty embedding cache: the build must really take time to be killed part-way.
    let cache = common::private_cache(tmp.path());
    let env = [("CBR_CACHE_DIR", cache.as_path())];
    let server = Server::start_env(&dir, &[], &env);
    let a = server.addr;
    let held = populate(a, "keep", &CLASSES[..2], 4);
    build_ok(a, "keep");
    let query = held[1].1[0].clone();
    let before = classify_file(a, "keep", &query).json();
    let model_file = dir.join("keep/model.onnx");
    let bytes_before = std::fs::read(&model_file).unwrap();

    // Many more images, acknowledged, then a build killed part-way.
    for c in &CLASSES[..2] {
        let (_, rest) = class_images(&class_dir(c), 4);
        for chunk in rest.chunks(20) {
            let r = post_files(
                a,
                &format!("/api/models/keep/labels/{}/images", enc(c)),
                &read_files(chunk),
            );
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }
    let images = get(a, "/api/models/keep").json()["images"].as_u64().unwrap();
    assert!(images > 100, "{images}");
    let r = request(a, "POST", "/api/models/keep/build", None, &[]);
    assert_eq!(r.status, 202);
    // A second build of the same model while one runs: 409.
    let r2 = request(a, "POST", "/api/models/keep/build", None, &[]);
    assert_eq!(r2.status, 409, "{}", r2.text());
    let start = std::time::Instant::now();
    loop {
        let b = get(a, "/api/models/keep/build").json();
        if b["state"] == "running" && b["done"].as_u64().unwrap() > 0 {
            assert!(
                b["done"].as_u64().unwrap() < images,
                "the build finished before the kill: {b}"
            );
            break;
        }
        assert!(b["state"] != "done", "the build finished before the kill: {b}");
        assert!(start.elapsed() < Duration::from_secs(300), "{b}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    assert_eq!(std::fs::read(&model_file).unwrap(), bytes_before, "the kill changed model.onnx");

    let server = Server::start_env(&dir, &[], &env);
    let a = server.addr;
    let list = get(a, "/api/models").json();
    assert_eq!(list["models"][0]["name"], "keep");
    assert_eq!(
        list["models"][0]["images"].as_u64().unwrap(),
        images,
        "uploads acknowledged before the kill were lost"
    );
    let m = get(a, "/api/models/keep").json();
    assert_eq!(m["build"]["state"], "idle");
    assert_eq!(m["built"]["images"], 8, "{m}");
    assert_eq!(m["stale"], true);
    let after = classify_file(a, "keep", &query).json();
    assert_eq!(after["top"], before["top"], "the previous model answers as before");
    // And the interrupted build can simply be run again.
    let b = build_ok(a, "keep");
    assert_eq!(b["built"]["images"].as_u64().unwrap(), images);
}

/// A server whose embedder is a `.tflite` builds TFLite classifiers, keeps
/// them as what they are, and serves their info and their bytes as
/// `model.tflite` (issue 11: it used to write TFLite bytes to model.onnx,
/// answer info with a 500 and model.tflite with a 404).
#[test]
fn tflite_embedder_models_are_stored_and_served_as_tflite() {
    common::setup_runtime();
    let tmp = tempfile::tempdir().unwrap();
    // The default embedder's TFLite twin (written by cbr from the same weights).
    let server = Server::start(&tmp.path().join("models"), &["--format", "tflite"]);
    let a = server.addr;
    let held = populate(a, "lite", &CLASSES[..2], 3);
    build_ok(a, "lite");
    assert!(tmp.path().join("models/lite/model.tflite").is_file());
    assert!(!tmp.path().join("models/lite/model.onnx").exists());

    let info = get(a, "/api/models/lite/info");
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["labels"], json!(&CLASSES[..2]));
    assert_eq!(info.json()["images_per_label"], json!([3, 3]));

    let r = get(a, "/api/models/lite/model.tflite");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&r.body[4..8], b"TFL3", "model.tflite is not a TFLite file");
    assert!(r.header("content-disposition").unwrap().contains("lite.tflite"));
    let file = tmp.path().join("lite.tflite");
    std::fs::write(&file, &r.body).unwrap();
    let c = cbr::classifier::Classifier::open(&file).unwrap();
    assert_eq!(c.format, cbr_core::format::ModelFormat::Tflite);
    assert_eq!(c.info.labels, &CLASSES[..2]);

    let r = get(a, "/api/models/lite/model.onnx");
    assert_eq!((r.status, code(&r)), (404, "no_onnx".to_string()), "{}", r.text());
    let r = classify_file(a, "lite", &held[0].1[0]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["top"].as_array().unwrap().len(), 2);
}

#[test]
fn openapi_documents_exactly_the_routes_served() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("models"), &[]);
    let a = server.addr;
    let doc = get(a, "/openapi.json").json();
    assert_eq!(doc["openapi"], "3.0.3");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object().unwrap().keys().map(move |m| (m.to_ascii_uppercase(), p.clone()))
        })
        .collect();
    let table: BTreeSet<(String, String)> =
        cbr_cli::serve::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(documented, table, "the OpenAPI document and the route table differ");

    // Every documented operation is routed (answers something other than the
    // fallback or 405), and every $ref resolves.
    assert_eq!(post_json(a, "/api/models", &json!({"name": "probe"})).status, 201);
    for (method, path) in &documented {
        let concrete = path
            .replace("{model}", "probe")
            .replace("{label}", "x")
            .replace("{image}", "0123456789abcdef.jpg");
        let r = request(a, method, &concrete, None, &[]);
        assert_ne!(r.status, 405, "{method} {path} is documented but not routed");
        if r.status == 404 {
            assert_ne!(code(&r), "no_route", "{method} {path} is documented but not routed");
        }
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        let statuses: Vec<u16> =
            op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
        assert!(statuses.contains(&r.status), "{method} {concrete} answered {} which its OpenAPI entry does not list ({statuses:?}): {}", r.status, r.text());
    }
    // Undocumented methods and paths are not served.
    let r = request(a, "PUT", "/api/models", None, &[]);
    assert!(r.status == 405 || r.status == 404, "{}", r.status);
    assert_eq!(code(&get(a, "/api/secret")), "no_route");
    let text = doc.to_string();
    for (i, _) in text.match_indices("\"#/components/schemas/") {
        let name: String = text[i + 22..].chars().take_while(|c| *c != '"').collect();
        assert!(doc["components"]["schemas"].get(&name).is_some(), "dangling $ref {name}");
    }
    // The web app is served and needs nothing from elsewhere.
    let page = get(a, "/").text();
    assert!(page.contains("/app.js") && page.contains("/app.css"));
    for asset in ["/", "/app.js", "/app.css"] {
        let body = get(a, asset).text();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset} refers to another server"
        );
    }
}

/// Issue 12, items 2, 8 and 9: Host and Origin checks, JSON for the
/// framework's own errors (405, bad query), labels limited in bytes.
#[test]
fn api_refuses_foreign_hosts_and_origins_and_answers_json_everywhere() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("models"), &["--allow-host", "cbr.test"]);
    let a = server.addr;
    let port = a.port().to_string();

    // DNS rebinding: a name the page controls is refused, whatever the request.
    for (m, p) in [("GET", "/api/models"), ("POST", "/api/models"), ("GET", "/")] {
        let r = request_with(a, m, p, &[("Host", &format!("evil.example:{port}"))], b"");
        assert_eq!((r.status, code(&r)), (403, "host_not_allowed".into()), "{m} {p}");
    }
    for host in [format!("localhost:{port}"), format!("cbr.test:{port}"), a.to_string()] {
        let r = request_with(a, "GET", "/api/models", &[("Host", &host)], b"");
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
    }

    // Cross-site writes are refused; the server's own origin and plain clients pass.
    let body = serde_json::to_vec(&json!({"name": "m"})).unwrap();
    let json_ct = ("Content-Type", "application/json");
    for origin in ["http://evil.example", "null", &format!("http://127.0.0.1:{}", a.port() + 1)] {
        let r = request_with(a, "POST", "/api/models", &[json_ct, ("Origin", origin)], &body);
        assert_eq!((r.status, code(&r)), (403, "origin_not_allowed".into()), "Origin {origin}");
    }
    let r =
        request_with(a, "POST", "/api/models", &[json_ct, ("Sec-Fetch-Site", "cross-site")], &body);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(get(a, "/api/models").json()["models"], json!([]), "nothing was created");
    let own = format!("http://{a}");
    let r = request_with(a, "POST", "/api/models", &[json_ct, ("Origin", &own)], &body);
    assert_eq!(r.status, 201, "{}", r.text());
    // Reads from any origin get no CORS permission to read the answer.
    let r = request_with(a, "GET", "/api/models", &[("Origin", "http://evil.example")], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none(), "{:?}", r.headers);

    // 405 and query-string errors are JSON too.
    let r = request(a, "DELETE", "/api/health", None, &[]);
    assert_eq!((r.status, code(&r)), (405, "method_not_allowed".into()), "{}", r.text());
    let r = request(a, "POST", "/api/models/m/classify?k=many", Some("image/jpeg"), b"x");
    assert_eq!((r.status, code(&r)), (400, "bad_query".into()), "{}", r.text());

    // A label of 64 four-byte characters is 256 bytes: 400, not a file-system error.
    let long = "\u{1d11e}".repeat(64);
    let r = post_json(a, "/api/models/m/labels", &json!({ "name": long }));
    assert_eq!((r.status, code(&r)), (400, "invalid_name".into()), "{}", r.text());
    let (imgs, _) = class_images(&class_dir(CLASSES[0]), 1);
    let r =
        post_files(a, &format!("/api/models/m/labels/{}/images", enc(&long)), &read_files(&imgs));
    assert_eq!((r.status, code(&r)), (400, "invalid_name".into()), "{}", r.text());
    let ok = "\u{1d11e}".repeat(63);
    let r = post_json(a, "/api/models/m/labels", &json!({ "name": ok }));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Issue 12, item 2: a token, given or random (required beyond loopback),
/// accepted as a Bearer header or as the cookie set by `/?token=`.
#[test]
fn api_token_is_required_when_set_or_listening_beyond_loopback() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("models"), &["--token", "s3cret"]);
    let a = server.addr;
    for p in ["/api/models", "/", "/api/health"] {
        let r = get(a, p);
        assert_eq!((r.status, code(&r)), (401, "unauthorized".into()), "{p}");
    }
    let r = request_with(a, "GET", "/api/models", &[("Authorization", "Bearer s3cre")], b"");
    assert_eq!(r.status, 401);
    let r = request_with(a, "GET", "/api/models", &[("Authorization", "Bearer s3cret")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(a, "/?token=s3cret");
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").expect("opening /?token= sets a cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let r = request_with(a, "GET", "/api/models", &[("Cookie", pair)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(server);

    // Beyond loopback without --token: a random token, printed at start.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cbr"))
        .args(["serve", "--addr", "0.0.0.0:0", "--models"])
        .arg(tmp.path().join("models2"))
        .env_remove("CBR_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let out =
        std::io::BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let port: u16 = out.rsplit(':').next().unwrap().trim().parse().unwrap();
    let mut err_lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let token = loop {
        let l = err_lines.next().expect("cbr serve printed no token").unwrap();
        if let Some((_, t)) = l.split_once("?token=") {
            break t.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in err_lines {});
    assert_eq!(token.len(), 64, "{token}");
    let b: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(get(b, "/api/models").status, 401);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        request_with(b, "GET", "/api/models", &[("Authorization", &bearer)], b"").status,
        200
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 12, items 3, 4 and 6: stalled uploads hold no inference slot, loaded
/// models are bounded (LRU), and a model deleted during an upload stays deleted.
#[test]
fn api_stalled_uploads_lru_and_delete_during_upload() {
    common::setup_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("models"),
        &["--max-queue", "2", "--read-timeout", "2", "--max-loaded", "1"],
    );
    let a = server.addr;
    let held = populate(a, "one", &CLASSES[..2], 2);
    populate(a, "two", &CLASSES[..2], 2);
    build_ok(a, "one");
    build_ok(a, "two");
    let query = &held[0].1[0];

    // As many stalled classify uploads as there are slots.
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            let mut s = send_head(
                a,
                "POST",
                "/api/models/one/classify",
                &[("Content-Type", "image/jpeg")],
                100_000,
            );
            use std::io::Write;
            s.write_all(&[0xff, 0xd8]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let r = classify_file(a, "one", query);
    assert_eq!(r.status, 200, "stalled uploads starve classification: {}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // They end with 408 after --read-timeout.
    for mut s in stalled {
        let r = read_response(&mut s, "POST", "classify (stalled)");
        assert_eq!((r.status, code(&r)), (408, "read_timeout".into()), "{}", r.text());
    }

    // --max-loaded 1: classifying with the other model unloads the first.
    assert_eq!(classify_file(a, "two", query).status, 200);
    let h = get(a, "/api/health").json();
    assert_eq!(h["loaded_models"], 1, "{h}");
    assert!(h["loaded_bytes"].as_u64().unwrap() > 1_000_000, "{h}");
    assert_eq!(classify_file(a, "one", query).status, 200, "an unloaded model loads again");
    assert_eq!(get(a, "/api/health").json()["loaded_models"], 1);

    // A model deleted while an upload is on its way stays deleted.
    let (ct, body) = multipart(&read_files(std::slice::from_ref(query)));
    let mut s = send_head(
        a,
        "POST",
        "/api/models/two/labels/late/images",
        &[("Content-Type", &ct)],
        body.len(),
    );
    use std::io::Write;
    s.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(delete(a, "/api/models/two").status, 200);
    s.write_all(&body[body.len() / 2..]).unwrap();
    let r = read_response(&mut s, "POST", "upload after delete");
    assert_eq!((r.status, code(&r)), (404, "unknown_model".into()), "{}", r.text());
    assert_eq!(get(a, "/api/models/two").status, 404);
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["one"], "the deleted model left files behind");
}
