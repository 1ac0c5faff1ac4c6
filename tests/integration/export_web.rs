//! `cbr export-web` in a real browser: the exported site, served by a tiny static server on
//! loopback (as any static host would), opened in headless Chromium through chromedriver. The
//! page's answers are compared with `cbr classify --json` on scikit-image's photographs with
//! the default embedder; the page must make no request outside its own origin; with the server
//! stopped, the service worker must still serve the page and classify. Screenshot:
//! export_web_phone.png (phone-sized window) in the cargo target folder.

use crate::common;
use crate::fixtures;
use crate::serve_browser::{screenshot_dir, Driver};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// A static file server for one folder: GET only, `Connection: close`, optional cross-origin
/// isolation headers (COOP/COEP, which let the page use threads). Stops when dropped.
pub struct StaticServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

fn serve_one(mut s: TcpStream, root: &Path, isolated: bool) {
    let mut line = String::new();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let file = root.join(path);
    let (status, body, ctype) = match std::fs::read(&file) {
        Ok(b) if !path.contains("..") => ("200 OK", b, content_type(&file)),
        _ => ("404 Not Found", b"not found".to_vec(), "text/plain"),
    };
    let isolation = if isolated {
        "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{isolation}\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body));
}

impl StaticServer {
    pub fn start(root: &Path, isolated: bool) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (root, flag) = (root.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = s {
                    let root = root.clone();
                    std::thread::spawn(move || serve_one(s, &root, isolated));
                }
            }
        });
        StaticServer { addr, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then ends and closes the listening socket.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A model on the default embedder from 5 photos of each of the 8 scenes classes (`extra`: more
/// `cbr build` flags), exported into `<dir>/<name>-site` with the photographs beside the page.
pub fn exported_site(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    common::setup();
    let split = dir.join("split");
    if !split.exists() {
        common::split_folder(&fixtures::scenes(), 5, &split);
    }
    let model = dir.join(format!("{name}.onnx"));
    let mut args =
        vec!["build", split.join("index").to_str().unwrap(), "-o", model.to_str().unwrap()]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    common::run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let site = dir.join(format!("{name}-site"));
    common::run_ok(&["export-web", model.to_str().unwrap(), "-o", site.to_str().unwrap()]);
    // The photos are served beside the page (same origin), as a user's would be.
    std::fs::create_dir(site.join("photos")).unwrap();
    for p in fixtures::photos() {
        std::fs::copy(&p, site.join("photos").join(p.file_name().unwrap())).unwrap();
    }
    (model, site)
}

/// Classifies every photograph in the page open in `driver` and checks each answer against
/// `cbr classify`'s.
fn check_photos_in_page(driver: &Driver, cli: &[(String, Value)], k: usize) {
    let answers = driver.js_async(&format!(
        "const out = {{}}; for (const n of {names}) {{ \
           const blob = await (await fetch('photos/' + n)).blob(); \
           out[n] = await window.cbrPage.classifier.classifyBlob(blob, {k}); }} return out;",
        names = json!(cli.iter().map(|(n, _)| n).collect::<Vec<_>>()),
    ));
    assert!(answers.get("error").is_none(), "classifying in the page failed: {answers}");
    let photos = fixtures::photos();
    let photo_dir = photos[0].parent().unwrap();
    for (name, c) in cli {
        // The browser decodes with libjpeg-turbo, as cbr does: the same pixels, PNG or JPEG, so only
        // the runtimes' arithmetic differs. Except for a JPEG large enough that cbr decodes it at
        // reduced scale in the DCT domain, which a page cannot do: measured up to 2.2e-3 (retina.jpg).
        let (w, h) = image::image_dimensions(photo_dir.join(name)).unwrap();
        let reduced = cbr::decode::jpeg_scale_for((w, h), (224, 224)) > 1;
        let tolerance = if name.ends_with(".jpg") && reduced { 1e-2 } else { 1e-3 };
        let worst = assert_same_answer(name, &answers[name], c, tolerance);
        println!("{name}: label {} | max |page - cli| {worst:.2e}", c["label"]);
    }
}

/// `cbr classify --json -k K` for `photos`, by file name.
pub fn cli_answers(model: &Path, photos: &[PathBuf], k: usize) -> Vec<(String, Value)> {
    let mut args = vec![
        "classify".to_string(),
        "--json".into(),
        "-k".into(),
        k.to_string(),
        model.to_string_lossy().into_owned(),
    ];
    args.extend(photos.iter().map(|p| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::run_ok(&args)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = Path::new(v["path"].as_str().unwrap()).file_name().unwrap();
            (name.to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// The page's answer and the CLI's agree: same label (or both unknown), same best class, and
/// every class's score within `tolerance`. Returns the largest score difference.
fn assert_same_answer(name: &str, page: &Value, cli: &Value, tolerance: f64) -> f64 {
    assert_eq!(page["label"], cli["label"], "{name}: page {page} vs cbr classify {cli}");
    assert_eq!(page["unknown"], cli["unknown"], "{name}: page {page} vs cbr classify {cli}");
    let (pt, ct) = (page["top"].as_array().unwrap(), cli["top"].as_array().unwrap());
    assert_eq!(pt.len(), ct.len(), "{name}: top lengths differ: {page} vs {cli}");
    assert_eq!(pt[0]["label"], ct[0]["label"], "{name}: best class differs: {page} vs {cli}");
    let mut worst = 0f64;
    for p in pt {
        let c = ct.iter().find(|c| c["label"] == p["label"]).unwrap_or_else(|| {
            panic!(
                "{name}: class {} in the page's top but not the CLI's: {page} vs {cli}",
                p["label"]
            )
        });
        let d = (p["score"].as_f64().unwrap() - c["score"].as_f64().unwrap()).abs();
        worst = worst.max(d);
    }
    assert!(
        worst <= tolerance,
        "{name}: scores differ by {worst:.2e} (allowed {tolerance:.0e}): page {page} vs cbr classify {cli}"
    );
    worst
}

const RESULT: &str = "return document.querySelector('#result').textContent";

#[test]
fn exported_page_answers_as_cbr_classify_offline_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, site) = exported_site(tmp.path(), "scenes", &[]);
    for f in ["index.html", "model.onnx", "model.json", "manifest.json", "sw.js", "cbr-device.js"] {
        assert!(site.join(f).is_file(), "the export has no {f}");
    }
    // `cbr runtime path` names the folder the runtime files were copied from.
    let paths = common::run_ok(&["runtime", "path"]);
    let web = paths.lines().last().unwrap_or_default();
    assert!(
        Path::new(web).join("ort-wasm-simd-threaded.wasm").is_file(),
        "`cbr runtime path` does not end with onnxruntime-web's folder:\n{paths}"
    );
    let photos = fixtures::photos();
    let k = 8;
    let cli = cli_answers(&model, &photos, k);
    assert_eq!(cli.len(), photos.len());

    let server = StaticServer::start(&site, false);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    let origin = format!("http://{}", server.addr);

    // The contract: index.html?image=URL writes the answer into #result.
    driver.goto(&server.url("index.html?image=photos/chelsea.png"));
    let text = driver.wait_for("the answer for ?image=", RESULT, Duration::from_secs(60));
    let page: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(
        page.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["label", "top", "unknown"],
        "{page}"
    );
    let chelsea = &cli.iter().find(|(n, _)| n == "chelsea.png").unwrap().1;
    let mut cli3 = chelsea.clone();
    cli3["top"] = json!(chelsea["top"].as_array().unwrap()[..3]);
    assert_same_answer("chelsea.png (?image=)", &page, &cli3, 1e-3);

    // Every photograph through the page's classifier (the same code path as ?image=).
    check_photos_in_page(&driver, &cli, k);

    // The camera (Chromium's synthetic one), classified on the device with frames per second.
    driver.js("document.querySelector('#label').textContent = ''");
    driver.click("#camera");
    let fps = driver.wait_for(
        "frames per second from the camera",
        "const t = document.querySelector('#fps').textContent; return t.endsWith('fps') && t",
        Duration::from_secs(30),
    );
    let shown = driver.js("return document.querySelector('#label').textContent");
    assert!(!shown.as_str().unwrap_or_default().is_empty(), "no answer shown for camera frames");
    driver.click("#camera");
    println!("camera in the exported page: {fps}, showing {shown}");

    // Nothing outside the page's origin: every resource it loaded came from the server.
    let loaded = driver.js(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])",
    );
    let loaded = loaded.as_array().unwrap();
    assert!(loaded.len() >= 6, "too few resources recorded: {loaded:?}");
    for url in loaded {
        assert!(url.as_str().unwrap().starts_with(&origin), "a request outside {origin}: {url}");
    }

    // Phone-sized: nothing overflows horizontally; the screenshot is for the README.
    driver.cmd("POST", "/window/rect", json!({"width": 390, "height": 844}));
    driver.goto(&server.url("index.html?image=photos/coffee.png"));
    driver.wait_for("the answer on a phone-sized window", RESULT, Duration::from_secs(60));
    let overflow = driver
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than a phone by {overflow} px");
    driver.screenshot(&screenshot_dir().join("export_web_phone.png"));

    // Offline: once the service worker has the site, the page loads and classifies with the
    // server gone.
    driver.wait_for(
        "the service worker",
        "return navigator.serviceWorker.controller !== null",
        Duration::from_secs(30),
    );
    let served = server.url("index.html");
    drop(server);
    assert!(TcpStream::connect(served.trim_start_matches("http://").split('/').next().unwrap())
        .is_err());
    driver.goto(&served);
    driver.wait_for(
        "the page, offline",
        "return document.body.dataset.state === 'ready' || document.body.dataset.state === 'failed'",
        Duration::from_secs(60),
    );
    let state = driver
        .js("return [document.body.dataset.state, document.querySelector('#status').textContent]");
    assert_eq!(state[0], "ready", "offline, the page did not load its model: {state}");
    let rocket = photos.iter().find(|p| p.ends_with("rocket.jpg")).unwrap();
    driver.type_into("#file", &rocket.canonicalize().unwrap().to_string_lossy());
    let text = driver.wait_for("the answer offline", RESULT, Duration::from_secs(60));
    let page: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    let c = &cli.iter().find(|(n, _)| n == "rocket.jpg").unwrap().1;
    let mut c3 = c.clone();
    c3["top"] = json!(c["top"].as_array().unwrap()[..3]);
    assert_same_answer("rocket.jpg (offline)", &page, &c3, 1.5e-2);
    println!("offline: {state}");
}

#[test]
fn exported_page_resamples_like_mediapipe_when_the_model_says_so() {
    // A model built with MediaPipe's resize (corner-aligned bilinear sampling in OpenCV's fixed
    // point): the page must port that one too.
    let tmp = tempfile::tempdir().unwrap();
    let (model, site) = exported_site(tmp.path(), "mediapipe", &["--resample", "mediapipe"]);
    let info: Value =
        serde_json::from_slice(&std::fs::read(site.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["preprocess"]["resample"], "mediapipe", "{}", info["preprocess"]);
    let k = 8;
    let cli = cli_answers(&model, &fixtures::photos(), k);
    let server = StaticServer::start(&site, false);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.goto(&server.url("index.html"));
    driver.wait_for(
        "the page",
        "return document.body.dataset.state === 'ready' || document.body.dataset.state === 'failed'",
        Duration::from_secs(60),
    );
    check_photos_in_page(&driver, &cli, k);
}
