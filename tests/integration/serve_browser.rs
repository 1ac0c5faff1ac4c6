//! The web app in a real browser: headless Chromium (Debian's `chromium`)
//! driven through WebDriver (`chromedriver` from `chromium-driver`), against
//! the real `cbr serve`. Creates a model with two classes of real photos (Fashion-MNIST JPEGs)
//! through the page's file inputs, builds it, classifies a held-out photo and
//! checks the label shown on the page. Screenshots: serve_browser.png (desktop)
//! and serve_browser_phone.png (phone-sized window) in the cargo target folder
//! (`target/release/` by default).
//!
//! Never skipped: without Chromium the test fails and says how to install it.

use crate::common;
use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const INSTALL: &str = "install them with: apt-get install -y chromium chromium-driver";

fn find_program(names: &[&str]) -> PathBuf {
    for n in names {
        for dir in std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/bin", "/usr/lib/chromium"])
        {
            let p = Path::new(dir).join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found: the browser test needs Chromium and its WebDriver; {INSTALL}",
        names.join(" / ")
    );
}

/// A headless Chromium session through chromedriver (also used by `export_web`).
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = request(self.addr, "DELETE", &format!("/session/{}", self.session), None, &[]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    pub fn start(profile: &Path) -> Driver {
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let chromedriver = find_program(&["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", chromedriver.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(addr).is_ok()
                && get(addr, "/status").json()["value"]["ready"] == true
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1100,1400",
                         // A synthetic webcam, allowed without asking (the live modes).
                         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let r = post_json(addr, "/session", &caps);
        let v = r.json();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("chromedriver could not start Chromium ({}): {v}", chromium.display())
            })
            .to_string();
        let mut child = child;
        let _ = &mut child;
        Driver { child, addr, session }
    }

    pub fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let r = if method == "GET" {
            get(self.addr, &url)
        } else {
            request(self.addr, method, &url, Some("application/json"), body.to_string().as_bytes())
        };
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("find {css}: {v}")).to_string()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    pub fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": []}))
    }

    /// Runs `script` as an async function body (it may `await`) and returns what it returns.
    pub fn js_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; \
             (async () => {{ {script} }})().then(done, (e) => done({{error: String(e && e.stack || e)}}));"
        );
        self.cmd("POST", "/execute/async", json!({"script": wrapped, "args": []}))
    }

    /// Waits until `script` returns a truthy value; returns it.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            if start.elapsed() > timeout {
                // The web app's message and build state, or the exported page's status.
                let msg = self.js("const q = (s) => document.querySelector(s); return [q('#message')?.textContent, q('#build-status')?.textContent, q('#build-status')?.dataset.state, q('#build')?.disabled, q('#status')?.textContent, q('#result')?.textContent]");
                self.screenshot(&screenshot_dir().join("serve_browser_failure.png"));
                panic!("timed out waiting for {what}; page message, build status, state, build disabled: {msg}");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", json!({}));
        std::fs::write(path, base64_decode(b64.as_str().unwrap())).unwrap();
        println!("screenshot: {}", path.display());
    }
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

/// The cargo target folder of this build (`target/release/` by default, or
/// under `$CARGO_TARGET_DIR`): the test binary sits in its `deps/`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary sits in <target>/<profile>/deps")
        .to_path_buf()
}

#[test]
fn web_app_builds_and_classifies_in_chromium() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("models"), &[]);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.goto(&server.url("/"));

    driver.type_into("#new-model", "birds");
    driver.click("#create-model");
    driver.wait_for(
        "the model workspace",
        "return !document.querySelector('#workspace').hidden",
        Duration::from_secs(20),
    );

    // Measured with 5 per class: 12 of the first 8 + 8 held-out photos right.
    let photos = crate::fixtures::fashion_mnist_jpeg();
    let classes = [("coat", "coat"), ("dress", "dress")];
    let mut held = Vec::new();
    let mut right = Vec::new();
    for (label, folder) in classes {
        driver.type_into("#new-class", label);
        driver.click("#add-class");
        let card = format!(".class-card[data-label='{label}']");
        driver.wait_for(
            "the new class",
            &format!("return !!document.querySelector(\"{card}\")"),
            Duration::from_secs(20),
        );
        let (train, rest) = class_images(&photos.join(folder), 5);
        let paths: Vec<String> = train
            .iter()
            .map(|p| p.canonicalize().unwrap().to_string_lossy().into_owned())
            .collect();
        // WebDriver file upload: the paths, one per line, typed into the class's file input.
        driver.type_into(&format!("{card} input.file-input"), &paths.join("\n"));
        driver.wait_for(
            "5 uploaded images",
            &format!("const c = document.querySelector(\"{card}\"); return c && c.querySelectorAll('.thumb img').length === 5 && c.querySelector('.count').textContent"),
            Duration::from_secs(60),
        );
        held.push((label, rest));
    }

    driver.click("#build");
    driver.wait_for(
        "the build",
        "const s = document.querySelector('#build-status'); return s.dataset.state === 'built' || s.dataset.state === 'failed'",
        Duration::from_secs(120),
    );
    let status = driver.js("return document.querySelector('#build-status').textContent");
    assert!(status.as_str().unwrap().starts_with("Built: 2 classes from 10 images"), "{status}");
    assert_eq!(driver.js("return document.querySelector('#download').hidden"), false);

    for (label, rest) in &held {
        // A held-out photo the model gets right through the API (a 5-shot
        // model is not perfect): the page must show the same answer.
        let img = rest
            .iter()
            .take(8)
            .find(|p| {
                let r = post_files(
                    server.addr,
                    "/api/models/birds/classify",
                    &read_files(&[p.to_path_buf()]),
                );
                r.json()["label"] == *label
            })
            .unwrap_or_else(|| panic!("the model gets none of 8 held-out {label} photos right"))
            .canonicalize()
            .unwrap();
        driver.js("document.querySelector('#result-label').textContent = ''");
        driver.type_into("#try-file", &img.to_string_lossy());
        let shown = driver.wait_for(
            "a classification",
            "return document.querySelector('#result-label').textContent",
            Duration::from_secs(60),
        );
        assert_eq!(shown, *label, "the page shows {shown} for a held-out {label}");
        let bars = driver.js("return document.querySelectorAll('#bars .bar').length");
        assert_eq!(bars, 2, "one bar per class (top 3 of 2 classes)");
        right.push((label, img));
    }

    // Run on this device: the model downloaded once, the same photos classified in the page
    // (onnxruntime-web from the server's /ort/), the same answers.
    common::run_ok(&["runtime", "install", "--web"]);
    // A device that cannot (here: the model download fails) falls back to the server, says why,
    // and still answers.
    driver.js(
        "window.realFetch = window.fetch; window.fetch = (u, o) => String(u).endsWith('/model.onnx') \
           ? Promise.reject(new Error('no network for the model')) : window.realFetch(u, o)",
    );
    driver.click("#on-device");
    // Ticking the box re-classifies the last photo: that attempt fails over to the server first.
    let status = driver.wait_for(
        "the page saying it fell back to the server",
        "const t = document.querySelector('#device-status').textContent; \
         return t.startsWith('not on this device') && t",
        Duration::from_secs(60),
    );
    assert!(
        status.as_str().unwrap().starts_with("not on this device (no network for the model)"),
        "the page did not say why it fell back to the server: {status}"
    );
    assert_eq!(driver.js("return document.querySelector('#on-device').checked"), false);
    // Then a new photo is answered by the server, rightly. (The wait is for the right label: the
    // re-classification above may still be landing; a wrong answer times out here.)
    let (label, img) = &right[0];
    driver.js("document.querySelector('#result-label').textContent = ''");
    driver.type_into("#try-file", &img.to_string_lossy());
    driver.wait_for(
        &format!("the server's answer {label} after the device failed"),
        &format!("return document.querySelector('#result-label').textContent === '{label}'"),
        Duration::from_secs(60),
    );
    driver.js("window.fetch = window.realFetch");
    driver.click("#on-device");
    for (label, img) in &right {
        driver.js("document.querySelector('#result-label').textContent = ''");
        driver.type_into("#try-file", &img.to_string_lossy());
        let shown = driver.wait_for(
            "a classification on the device",
            "return document.querySelector('#result-label').textContent",
            Duration::from_secs(60),
        );
        let status = driver.js("return document.querySelector('#device-status').textContent");
        assert!(
            status.as_str().unwrap().starts_with("on this device ("),
            "the page did not classify on the device: {status}"
        );
        assert_eq!(shown, **label, "on the device, the page shows {shown} for a held-out {label}");
    }
    // The live webcam (Chromium's synthetic camera) on the device, with frames per second.
    driver.click("#try-webcam");
    let fps = driver.wait_for(
        "frames per second on the device",
        "const t = document.querySelector('#fps').textContent; return t.endsWith('fps') && t",
        Duration::from_secs(30),
    );
    println!("live webcam on the device: {fps}");
    driver.click("#try-webcam");
    // The export as a download: a zip of the site cbr export-web writes.
    let r = get(server.addr, "/api/models/birds/export-web.zip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(r.body.clone())).unwrap();
    for f in ["index.html", "model.onnx", "model.json", "sw.js", "ort/ort-wasm-simd-threaded.wasm"]
    {
        assert!(zip.by_name(&format!("birds-web/{f}")).is_ok(), "the zip has no birds-web/{f}");
    }
    // The download link serves the model.
    let href = driver.js("return document.querySelector('#download').getAttribute('href')");
    let r = get(server.addr, href.as_str().unwrap());
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 1_000_000);

    let out = screenshot_dir();
    driver.screenshot(&out.join("serve_browser.png"));
    // Phone-sized: nothing may overflow the viewport horizontally.
    driver.cmd("POST", "/window/rect", json!({"width": 390, "height": 844}));
    std::thread::sleep(Duration::from_millis(300));
    let overflow = driver
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than a phone screen by {overflow} px"
    );
    driver.screenshot(&out.join("serve_browser_phone.png"));
}
