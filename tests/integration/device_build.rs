//! Building on the device: `cbr export-web -o DIR` without a model writes a site that starts
//! with no classes; in headless Chromium, `index.html?build=MANIFEST` builds a classifier from
//! Fashion-MNIST photos in the page (the browser decodes, cbr-core in WebAssembly makes the
//! pixels and writes the model, onnxruntime-web embeds). Its answers on held-out photos are
//! compared with `cbr build MANIFEST` + `cbr classify`; the page's model file, taken out of the
//! page, is run by `cbr classify`; a reload keeps the model; every request is same-origin.
//! Needs Chromium (see `serve_browser`) and the WebAssembly core (`scripts/wasm.sh`).

use crate::common;
use crate::export_web::{cli_answers, StaticServer};
use crate::fixtures;
use crate::serve_browser::{base64_decode, screenshot_dir, Driver};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

const RESULT: &str = "return document.querySelector('#result').textContent";

/// The site for building on the device, written by `cbr export-web -o DIR` (no model).
fn device_site(dir: &Path) -> PathBuf {
    common::setup();
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/pkg/cbr_core.wasm");
    assert!(
        wasm.is_file() || std::env::var_os("CBR_WASM").is_some(),
        "{} is missing: run scripts/wasm.sh (or scripts/setup.sh --tests)",
        wasm.display()
    );
    let site = dir.join("site");
    common::run_ok(&["export-web", "-o", site.to_str().unwrap()]);
    site
}

/// Copies `per_class` photos of each Fashion-MNIST class, after skipping `skip`, into
/// `<site>/photos/<class>/`; writes `<site>/photos/<name>` (path,label relative to it) and
/// returns the copies.
fn photos_with_manifest(site: &Path, skip: usize, per_class: usize, name: &str) -> Vec<PathBuf> {
    let root = fixtures::fashion_mnist();
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    assert_eq!(classes.len(), 10, "Fashion-MNIST has 10 classes: {}", root.display());
    let mut csv = String::from("path,label\n");
    let mut out = Vec::new();
    for c in &classes {
        let label = c.file_name().unwrap().to_string_lossy().into_owned();
        let dest = site.join("photos").join(&label);
        std::fs::create_dir_all(&dest).unwrap();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(c).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().skip(skip).take(per_class) {
            let to = dest.join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            csv.push_str(&format!(
                "{label}/{},{label}\n",
                f.file_name().unwrap().to_string_lossy()
            ));
            out.push(to);
        }
    }
    std::fs::write(site.join("photos").join(name), csv).unwrap();
    out
}

fn relative(site: &Path, p: &Path) -> String {
    p.strip_prefix(site).unwrap().to_string_lossy().into_owned()
}

/// The page's answers (`cbrPage.classifier.classifyBlob`, k = 3) for `photos` in the site.
fn page_answers(driver: &Driver, site: &Path, photos: &[PathBuf]) -> Vec<Value> {
    let urls: Vec<String> = photos.iter().map(|p| relative(site, p)).collect();
    let v = driver.js_async(&format!(
        "const out = []; for (const u of {urls}) {{ \
           const blob = await (await fetch(u)).blob(); \
           out.push(await window.cbrPage.classifier.classifyBlob(blob, 3)); }} return out;",
        urls = json!(urls),
    ));
    assert!(v.get("error").is_none(), "classifying in the page failed: {v}");
    v.as_array().unwrap().clone()
}

/// The model file the page keeps, taken out through WebDriver in base64 pieces.
fn page_model(driver: &Driver) -> Vec<u8> {
    let len = driver.js("return window.cbrPage.model().length").as_u64().unwrap() as usize;
    let mut bytes = Vec::with_capacity(len);
    let piece = 4 << 20;
    for offset in (0..len).step_by(piece) {
        let b64 = driver.js(&format!("return window.cbrPage.modelBase64({offset}, {piece})"));
        bytes.extend(base64_decode(b64.as_str().unwrap()));
    }
    assert_eq!(bytes.len(), len);
    bytes
}

#[test]
fn the_page_builds_a_classifier_as_cbr_build_does_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let site = device_site(tmp.path());
    for f in
        ["index.html", "embedder.onnx", "embedder.json", "cbr_core.wasm", "cbr-core.mjs", "sw.js"]
    {
        assert!(site.join(f).is_file(), "the export has no {f}");
    }
    assert!(!site.join("model.onnx").exists(), "a site without a model ships none");
    let described: Value =
        serde_json::from_slice(&std::fs::read(site.join("embedder.json")).unwrap()).unwrap();
    assert_eq!(described["embedder"]["name"], "efficientnet-lite0", "{described}");
    assert!(described["embedder"]["dim"].as_u64().unwrap() > 0, "{described}");
    // The service worker lists every file of the site (offline).
    let sw = std::fs::read_to_string(site.join("sw.js")).unwrap();
    for f in
        ["embedder.onnx", "embedder.json", "cbr_core.wasm", "cbr-core.mjs", "ort/ort.wasm.min.mjs"]
    {
        assert!(sw.contains(&format!("\"{f}\"")), "sw.js does not cache {f}");
    }

    let train = photos_with_manifest(&site, 0, 5, "train.csv");
    let held_out = photos_with_manifest(&site, 5, 4, "held-out.csv");
    assert_eq!((train.len(), held_out.len()), (50, 40));
    let cli_model = tmp.path().join("cli.onnx");
    let manifest = site.join("photos/train.csv");
    common::run_ok(&["build", manifest.to_str().unwrap(), "-o", cli_model.to_str().unwrap(), "-q"]);
    let cli = cli_answers(&cli_model, &held_out, 3);

    let server = StaticServer::start(&site, false);
    let origin = format!("http://{}", server.addr);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.goto(&server.url("index.html"));
    driver.wait_for(
        "the empty page",
        "return document.body.dataset.state",
        Duration::from_secs(60),
    );
    let state = driver.js("return [document.body.dataset.state, document.querySelector('#status').textContent, window.cbrPage?.classifier]");
    assert_eq!(state[0], "ready", "{state}");
    assert!(state[2].is_null(), "a site without a model starts with no classifier: {state}");

    driver.goto(&server.url("index.html?build=photos/train.csv"));
    let text = driver.wait_for("the build from the manifest", RESULT, Duration::from_secs(240));
    let built: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert!(built.get("error").is_none(), "the page's build failed: {built}");
    assert_eq!(
        (built["classes"].as_u64(), built["images"].as_u64()),
        (Some(10), Some(50)),
        "{built}"
    );
    println!(
        "in the page: 50 photos, build {:.0} ms (embed {:.0} ms, head fit + write {:.0} ms), {} thread(s)",
        built["build_ms"].as_f64().unwrap(),
        built["embed_ms"].as_f64().unwrap(),
        built["head_ms"].as_f64().unwrap(),
        driver.js("return window.cbrPage.threads"),
    );

    // The page's answers against cbr build + cbr classify on the 40 held-out photos.
    let page = page_answers(&driver, &site, &held_out);
    let mut same = 0;
    for ((name, c), p) in cli.iter().zip(&page) {
        if p["label"] == c["label"] && p["unknown"] == c["unknown"] {
            same += 1;
        } else {
            println!("{name}: page {p} vs cbr {c}");
        }
    }
    println!("page vs cbr build + cbr classify: {same}/40 the same");
    assert!(same >= 39, "only {same}/40 held-out photos answered as cbr build + cbr classify");

    // The page's own model file, run by cbr classify, answers as the page.
    let bytes = page_model(&driver);
    assert_eq!(cbr::cache::sha256_hex(&bytes), built["sha256"].as_str().unwrap());
    let page_file = tmp.path().join("page.onnx");
    std::fs::write(&page_file, &bytes).unwrap();
    let info: Value =
        serde_json::from_str(&common::run_ok(&["info", "--json", page_file.to_str().unwrap()]))
            .unwrap();
    assert_eq!(info["labels"].as_array().map(Vec::len), Some(10), "{info}");
    println!("the page's model: {} bytes", bytes.len());
    let run = cli_answers(&page_file, &held_out, 3);
    for ((name, c), p) in run.iter().zip(&page) {
        assert_eq!(
            (&p["label"], &p["unknown"]),
            (&c["label"], &c["unknown"]),
            "{name}: page {p} vs cbr classify of the page's model {c}"
        );
        let d =
            (p["top"][0]["score"].as_f64().unwrap() - c["top"][0]["score"].as_f64().unwrap()).abs();
        assert!(d < 1e-3, "{name}: the page's score and cbr classify's differ by {d}: {p} vs {c}");
    }

    // Reload: the kept model answers (?image=), as it did before the reload.
    let (first, answer) = (relative(&site, &held_out[0]), &page[0]);
    driver.goto(&server.url(&format!("index.html?image={first}")));
    let text = driver.wait_for("the answer after a reload", RESULT, Duration::from_secs(60));
    let after: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(
        (&after["label"], &after["unknown"], &after["top"]),
        (&answer["label"], &answer["unknown"], &answer["top"]),
        "after a reload"
    );

    // Adding a class edits the kept file: the result is the file a build of all classes writes
    // from the same embeddings (the page's own, kept in IndexedDB: none is embedded again).
    let urls: Vec<String> = train.iter().map(|p| relative(&site, p)).collect();
    let labels: Vec<String> = train
        .iter()
        .map(|p| p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let v = driver.js_async(&format!(
        "const b = window.cbrPage, core = b.core, e = b.embedder, urls = {urls}, labels = {labels}; \
         const ids = [], rows = []; let fresh = 0; \
         for (const u of urls) {{ const r = await b.embedPhoto(await (await fetch(u)).blob()); \
           ids.push(r.id); rows.push(r.embedding); if (!r.cached) fresh++; }} \
         const pick = (keep) => {{ const i = labels.map((l, i) => keep(l) ? i : -1).filter((i) => i >= 0); \
           const emb = new Float32Array(i.length * e.info.dim); i.forEach((r, k) => emb.set(rows[r], k * e.info.dim)); \
           return {{ labels: i.map((r) => labels[r]), imageIds: i.map((r) => ids[r]), embeddings: emb }}; }}; \
         const last = labels[labels.length - 1]; \
         const build = (rows) => core.build({{ embedder: e.bytes, embedderInfo: e.info, preprocess: e.preprocess, ...rows }}).model; \
         const nine = build(pick((l) => l !== last)); \
         const added = core.add(nine, pick((l) => l === last)).model; \
         const all = build(pick(() => true)); \
         const hex = async (m) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', m)), (x) => x.toString(16).padStart(2, '0')).join(''); \
         return {{ fresh, added: await hex(added), all: await hex(all), kept: await hex(b.model()) }};",
        urls = json!(urls),
        labels = json!(labels),
    ));
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(v["fresh"], 0, "photos embedded again: {v}");
    assert_eq!(v["added"], v["all"], "adding a class wrote other bytes than building all: {v}");
    assert_eq!(v["all"], built["sha256"], "the kept model is the build of all classes: {v}");

    // Nothing outside the page's origin.
    let loaded = driver.js(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])",
    );
    let loaded = loaded.as_array().unwrap();
    assert!(loaded.len() >= 6, "too few resources recorded: {loaded:?}");
    for url in loaded {
        assert!(url.as_str().unwrap().starts_with(&origin), "a request outside {origin}: {url}");
    }
    // Offline: with the server gone, the page loads from its service worker and the kept
    // model answers a photo from the file input as before.
    driver.wait_for(
        "the service worker",
        "return navigator.serviceWorker.controller !== null",
        Duration::from_secs(30),
    );
    let served = server.url("index.html");
    drop(server);
    driver.goto(&served);
    driver.wait_for(
        "the page, offline",
        "return document.body.dataset.state",
        Duration::from_secs(60),
    );
    let state = driver
        .js("return [document.body.dataset.state, document.querySelector('#status').textContent]");
    assert_eq!(state[0], "ready", "offline, the page did not load: {state}");
    driver.type_into("#file", held_out[1].to_str().unwrap());
    let text = driver.wait_for("the answer offline", RESULT, Duration::from_secs(60));
    let offline: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(
        (&offline["label"], &offline["unknown"], &offline["top"]),
        (&page[1]["label"], &page[1]["unknown"], &page[1]["top"]),
        "offline"
    );
    println!("offline: {state}");
}

/// The number of `selector` elements in the page.
fn count(driver: &Driver, selector: &str) -> u64 {
    driver
        .js(&format!("return document.querySelectorAll({}).length", json!(selector)))
        .as_u64()
        .unwrap()
}

fn status_text(driver: &Driver) -> String {
    driver.js("return document.querySelector('#status').textContent").as_str().unwrap().to_string()
}

#[test]
fn the_page_flow_new_classes_camera_build_try_delete_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let site = device_site(tmp.path());
    let photos = photos_with_manifest(&site, 0, 4, "all.csv");
    let of = |class: &str| -> Vec<String> {
        photos
            .iter()
            .filter(|p| p.parent().unwrap().ends_with(class))
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    let broken = tmp.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8 not really a JPEG").unwrap();
    let server = StaticServer::start(&site, false);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.cmd("POST", "/window/rect", json!({"width": 390, "height": 844}));
    driver.goto(&server.url("index.html"));
    driver.wait_for("the page", "return document.body.dataset.state", Duration::from_secs(60));
    assert!(status_text(&driver).starts_with("No classes yet"), "{}", status_text(&driver));

    // Two classes from the file input (several photos at once; one of them not an image).
    driver.type_into("#class-name", "sneakers");
    let mut files = of("sneaker")[..3].to_vec();
    files.push(broken.to_string_lossy().into_owned());
    driver.type_into("#class-photos", &files.join("\n"));
    driver.js("document.querySelector('#class-name').value = ''");
    driver.type_into("#class-name", "bags");
    driver.type_into("#class-photos", &of("bag")[..3].join("\n"));
    assert_eq!(count(&driver, ".thumb"), 7, "a thumbnail per photo");
    // Remove a photo: its thumbnail's button.
    driver.click("li[data-pending='bags'] .thumb button");
    assert_eq!(count(&driver, ".thumb"), 6);

    // A class from the live camera (Chromium's synthetic one): the first tap starts it, and a
    // class with no photo yet cannot be built.
    driver.js("document.querySelector('#class-name').value = ''");
    driver.type_into("#class-name", "camera");
    driver.click("#class-frame");
    driver.wait_for(
        "the camera",
        "return document.querySelector('#class-video').videoWidth > 0",
        Duration::from_secs(30),
    );
    driver.click("#build");
    driver.wait_for(
        "the empty class refused",
        "return document.querySelector('#status').classList.contains('error')",
        Duration::from_secs(10),
    );
    assert!(status_text(&driver).contains("\"camera\" has no photos"), "{}", status_text(&driver));
    driver.click("#class-frame");
    driver.click("#class-frame");
    driver.wait_for(
        "two camera frames",
        "return document.querySelectorAll(\"li[data-pending='camera'] .thumb\").length === 2",
        Duration::from_secs(10),
    );

    // Build: a progress bar and counts, the broken photo named and skipped.
    driver.click("#build");
    let built = driver.wait_for(
        "the build",
        "const t = document.querySelector('#build-status').textContent; return t.includes('built in') && t",
        Duration::from_secs(120),
    );
    println!("built: {built}");
    assert!(built.as_str().unwrap().starts_with("3 classes, 7 photos"), "{built}");
    let errors = driver.js("return document.querySelector('#errors').textContent");
    assert!(errors.as_str().unwrap().contains("broken.jpg skipped"), "{errors}");
    assert_eq!(count(&driver, ".thumb"), 0, "the new classes are built");
    let labels = driver.js("return document.querySelector('#classes').textContent");
    assert_eq!(labels, "bags, camera, sneakers");
    let download =
        driver.js("const a = document.querySelector('#download'); return !a.hidden && a.href");
    assert!(download.as_str().unwrap_or_default().starts_with("blob:"), "{download}");

    // Try: a photo picked from the library answers.
    driver.type_into("#file", &of("sneaker")[3]);
    let text = driver.wait_for("the answer", RESULT, Duration::from_secs(60));
    let answer: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(answer["top"].as_array().map(Vec::len), Some(3), "{answer}");
    println!("a held-out sneaker: {answer}");

    // Add a class to the built model (core.add), then delete one (core.remove).
    driver.js("document.querySelector('#class-name').value = ''");
    driver.type_into("#class-name", "boots");
    driver.type_into("#class-photos", &of("ankle-boot")[..2].join("\n"));
    driver.click("#build");
    driver.wait_for(
        "the added class",
        "return document.querySelector('#classes').textContent === 'bags, boots, camera, sneakers'",
        Duration::from_secs(120),
    );
    driver.click("#class-list li:nth-child(3) button:nth-of-type(2)");
    driver.wait_for(
        "the deleted class",
        "return document.querySelector('#classes').textContent === 'bags, boots, sneakers'",
        Duration::from_secs(30),
    );
    let overflow = driver
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than a phone by {overflow} px");
    driver.js("window.scrollTo(0, 0)");
    driver.screenshot(&screenshot_dir().join("device_flow_phone.png"));

    // A 12-megapixel photo (4000 x 3000 JPEG): answered, the tab not frozen.
    let big = tmp.path().join("big.jpg");
    let chelsea = fixtures::photos().into_iter().find(|p| p.ends_with("chelsea.png")).unwrap();
    image::open(&chelsea)
        .unwrap()
        .resize_exact(4000, 3000, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(&big)
        .unwrap();
    driver.js("document.querySelector('#result').textContent = ''");
    let t = std::time::Instant::now();
    driver.type_into("#file", big.to_str().unwrap());
    let text = driver.wait_for("the 12-megapixel answer", RESULT, Duration::from_secs(60));
    println!("12-megapixel photo answered in {:.1} s: {text}", t.elapsed().as_secs_f64());
    assert!(!text.as_str().unwrap().contains("error"), "{text}");

    // Storage refused (IndexedDB writes fail, as when the quota is full): said so, and the
    // previous model kept.
    driver.js("IDBObjectStore.prototype.put = function () { \
           throw new DOMException('the quota is exceeded', 'QuotaExceededError'); }");
    driver.js("document.querySelector('#class-name').value = ''");
    driver.type_into("#class-name", "coats");
    driver.type_into("#class-photos", &of("coat")[..2].join("\n"));
    driver.click("#build");
    driver.wait_for(
        "storage refused",
        "return document.querySelector('#status').classList.contains('error')",
        Duration::from_secs(60),
    );
    let said = status_text(&driver);
    assert!(said.contains("storage refused") && said.contains("previous model is kept"), "{said}");
    let labels = driver.js("return document.querySelector('#classes').textContent");
    assert_eq!(labels, "bags, boots, sneakers", "the previous model is kept");
}

/// Figures for the README (printed): photos embedded per second in the page with 1 and 2
/// threads, the head's fit + write for 10 x 5 and 100 x 5 photos in WebAssembly, the sizes of
/// the module and the site, and `cbr build` on the same photos.
#[test]
fn device_build_figures_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let site = device_site(tmp.path());
    let train = photos_with_manifest(&site, 0, 5, "train.csv");
    let size = |p: &Path| -> u64 { walk(p).iter().map(|f| f.metadata().unwrap().len()).sum() };
    fn walk(p: &Path) -> Vec<PathBuf> {
        if p.is_file() {
            return vec![p.to_path_buf()];
        }
        std::fs::read_dir(p).unwrap().flat_map(|e| walk(&e.unwrap().path())).collect()
    }
    let site_bytes = size(&site) - size(&site.join("photos"));
    let wasm = std::fs::metadata(site.join("cbr_core.wasm")).unwrap().len();
    println!(
        "site: {:.1} MB (cbr_core.wasm {:.2} MB, embedder.onnx {:.1} MB, ort/ {:.1} MB)",
        site_bytes as f64 / 1e6,
        wasm as f64 / 1e6,
        std::fs::metadata(site.join("embedder.onnx")).unwrap().len() as f64 / 1e6,
        size(&site.join("ort")) as f64 / 1e6
    );

    let server = StaticServer::start(&site, false);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.goto(&server.url("index.html"));
    driver.wait_for(
        "the service worker",
        "return navigator.serviceWorker.controller !== null || (location.reload(), false)",
        Duration::from_secs(60),
    );
    for threads in [1, 2] {
        driver.js_async("await new Promise((r) => { const q = indexedDB.deleteDatabase('cbr-device'); q.onsuccess = q.onerror = q.onblocked = r; }); return 1");
        driver.goto(&server.url(&format!("index.html?threads={threads}&build=photos/train.csv")));
        let text = driver.wait_for("the build", RESULT, Duration::from_secs(240));
        let r: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(r["embedded"], 50, "every photo embedded (none from storage): {r}");
        let used = driver.js("return window.cbrPage.threads");
        assert_eq!(used, threads, "the page ran with {used} threads, not {threads}");
        println!(
            "page, {threads} thread(s): 50 photos embedded in {:.0} ms ({:.1} photos/s); head fit + write (10 x 5) {:.0} ms; build {:.0} ms",
            r["embed_ms"].as_f64().unwrap(),
            50.0 / (r["embed_ms"].as_f64().unwrap() / 1e3),
            r["head_ms"].as_f64().unwrap(),
            r["build_ms"].as_f64().unwrap(),
        );
    }
    // 100 classes x 5 photos: the head on made-up embeddings (the head's cost depends on the
    // rows, not on where they came from).
    let ms = driver.js_async(
        "const e = window.cbrPage.embedder, dim = e.info.dim, n = 500; \
         const emb = new Float32Array(n * dim); let s = 7; \
         for (let i = 0; i < emb.length; i++) { s = (s * 1103515245 + 12345) % 2147483648; emb[i] = s / 2147483648; } \
         const labels = [], ids = []; \
         for (let i = 0; i < n; i++) { labels.push('c' + String(Math.floor(i / 5)).padStart(3, '0')); ids.push(i.toString(16).padStart(32, '0')); } \
         const t0 = performance.now(); \
         const { model } = window.cbrPage.core.build({ embedder: e.bytes, embedderInfo: e.info, preprocess: e.preprocess, labels, imageIds: ids, embeddings: emb }); \
         return [performance.now() - t0, model.length];",
    );
    assert!(ms.get("error").is_none(), "{ms}");
    println!("page: head fit + write (100 x 5) {:.0} ms, {} bytes", ms[0].as_f64().unwrap(), ms[1]);

    // cbr build on the same photos, natively (no embedding cache), and its head alone.
    let manifest = site.join("photos/train.csv");
    let t = std::time::Instant::now();
    common::run_ok(&[
        "build",
        manifest.to_str().unwrap(),
        "--no-cache",
        "-q",
        "-o",
        tmp.path().join("cli.onnx").to_str().unwrap(),
    ]);
    let full = t.elapsed();
    let shard = tmp.path().join("train.parquet");
    common::run_ok(&["embed", manifest.to_str().unwrap(), "-q", "-o", shard.to_str().unwrap()]);
    let t = std::time::Instant::now();
    common::run_ok(&[
        "build",
        "--embeddings",
        shard.to_str().unwrap(),
        "-q",
        "-o",
        tmp.path().join("emb.onnx").to_str().unwrap(),
    ]);
    let head = t.elapsed();
    println!(
        "cbr build (native): 10 x 5 photos {:.0} ms end to end (process start, embedder load, decode, embed, head, write); cbr build --embeddings {:.0} ms",
        full.as_secs_f64() * 1e3,
        head.as_secs_f64() * 1e3
    );
    assert_eq!(train.len(), 50);
}

/// `cbr serve`'s web app offers "build on this device": the same site, served at /device/, builds
/// from a manifest there.
#[test]
fn the_web_app_offers_build_on_this_device_in_chromium() {
    common::setup();
    let tmp = tempfile::tempdir().unwrap();
    let server = crate::support::Server::start(&tmp.path().join("models"), &[]);
    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.goto(&server.url("/"));
    driver.wait_for(
        "the link",
        "return document.querySelector('#build-on-device')?.href",
        Duration::from_secs(20),
    );
    driver.click("#build-on-device");
    driver.wait_for(
        "the device page",
        "return document.body.dataset.state",
        Duration::from_secs(60),
    );
    let state = driver.js("return [location.pathname, document.body.dataset.state, document.querySelector('#status').textContent]");
    assert_eq!((&state[0], &state[1]), (&json!("/device/"), &json!("ready")), "{state}");
    // Two classes built in the page from photos picked in the file input.
    let root = fixtures::fashion_mnist();
    for class in ["bag", "sneaker"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(root.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        driver.js("document.querySelector('#class-name').value = ''");
        driver.type_into("#class-name", class);
        let paths: Vec<String> =
            files[..3].iter().map(|p| p.to_string_lossy().into_owned()).collect();
        driver.type_into("#class-photos", &paths.join("\n"));
    }
    driver.click("#build");
    let built = driver.wait_for(
        "the build",
        "const t = document.querySelector('#build-status').textContent; return t.includes('built in') && t",
        Duration::from_secs(120),
    );
    assert!(built.as_str().unwrap().starts_with("2 classes, 6 photos"), "{built}");
}
