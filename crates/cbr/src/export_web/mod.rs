//! A classifier's web site, static and self-contained (`cbr export-web`, and the server's
//! download of the same site): the page, the embedder's ONNX file and what it needs to be used
//! (`embedder.json`: its [`EmbedderInfo`] and [`Preprocess`]), cbr-core as WebAssembly
//! (`cbr_core.wasm` and its JavaScript API `cbr-core.mjs`), onnxruntime-web's WebAssembly
//! backend ([`ort_web`]), a web app manifest and a service worker (installable, works offline),
//! and, when exported from a model, that model (`model.onnx`, `model.json`). Nothing is fetched
//! from elsewhere at run time.
//!
//! The page builds a classifier on the device: the browser decodes, the core turns pixels into
//! the embedder's input (`pixels`), onnxruntime-web embeds, and the core computes the head and
//! writes the model file (`build`, `add`, `remove`), the same Rust code as `cbr build`.
//! `web/device/cbr-device.js` runs a model on an image as `cbr classify` does; the web app's
//! "run on this device" mode runs the same module.

pub mod ort_web;

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cache;
use crate::models::EmbedderChoice;
use cbr_core::format::{self, ModelFormat};
use cbr_core::meta::EmbedderInfo;
use cbr_core::preprocess::Preprocess;

/// The shared module: preprocessing, model run and answer, as `cbr classify`.
pub const DEVICE_JS: &str = include_str!("../../../../web/device/cbr-device.js");
/// cbr-core's JavaScript API (loads `cbr_core.wasm`).
pub const CORE_MJS: &str = include_str!("../../../../web/pkg/cbr-core.mjs");
const PAGE_HTML: &str = include_str!("../../../../web/device/index.html");
const PAGE_JS: &str = include_str!("../../../../web/device/page.js");
const PAGE_CSS: &str = include_str!("../../../../web/device/page.css");
const SERVICE_WORKER_JS: &str = include_str!("../../../../web/device/sw.js");
const ICON_SVG: &str = include_str!("../../../../web/device/icon.svg");

/// Where the runtime's files sit in the site (and in `cbr serve`'s URL space).
pub const ORT_DIR: &str = "ort";

/// The environment variable naming the WebAssembly core to ship (a `cbr_core.wasm` file).
pub const WASM_ENV: &str = "CBR_WASM";

/// Where `scripts/wasm.sh` writes the module in the source tree this binary was built from.
const WASM_IN_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/pkg/cbr_core.wasm");

/// The path of cbr-core compiled to WebAssembly: `$CBR_WASM`, else the source tree's
/// `web/pkg/cbr_core.wasm` (made by `scripts/wasm.sh`). It is a file rather than bytes compiled
/// into the binary because another toolchain builds it (see `scripts/wasm.sh`): a native build
/// must not need that toolchain, and only the commands that ship it look for it.
pub fn core_wasm_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(WASM_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "{WASM_ENV}={} is not a file (it names cbr_core.wasm, made by scripts/wasm.sh)",
                p.display()
            );
        }
        return Ok(p);
    }
    let p = PathBuf::from(WASM_IN_TREE);
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "cbr-core's WebAssembly module is not built: run scripts/wasm.sh in cbr's source tree \
         (it writes web/pkg/cbr_core.wasm), or set {WASM_ENV} to a cbr_core.wasm"
    )
}

/// The embedder a site embeds photos with: its ONNX file and what the page needs to use it.
pub struct SiteEmbedder {
    pub bytes: Vec<u8>,
    pub info: EmbedderInfo,
    pub preprocess: Preprocess,
}

impl SiteEmbedder {
    /// The embedder `choice` names (pulled if needed), its width measured by running it once.
    pub fn open(choice: &EmbedderChoice) -> Result<SiteEmbedder> {
        let e = crate::models::open_embedder(choice)?;
        let bytes = match &e.model {
            crate::embedder::EmbedderModel::Onnx { .. } => {
                let spec = if choice.embedder.is_empty() {
                    crate::models::DEFAULT_MODEL
                } else {
                    choice.embedder.as_str()
                };
                let path = match crate::models::resolve(spec)? {
                    crate::models::EmbedderSource::Known(m) => crate::models::pull(m.name)?,
                    crate::models::EmbedderSource::File(p) => p,
                };
                std::fs::read(&path)
                    .with_context(|| format!("cannot read embedder {}", path.display()))?
            }
            crate::embedder::EmbedderModel::Tflite { .. } => {
                bail!("the browser runs ONNX embedders (onnxruntime-web); choose an .onnx one")
            }
        };
        if cache::sha256_hex(&bytes) != e.info.sha256 {
            bail!("the embedder file changed while it was read; try again");
        }
        Ok(SiteEmbedder { bytes, info: e.info, preprocess: e.preprocess })
    }

    /// The embedder inside a model file cbr wrote (its graph, as `cbr add` embeds with).
    pub fn of_model(model: &[u8]) -> Result<SiteEmbedder> {
        let m = cbr_core::edit::EditableModel::from_bytes(model)?;
        let bytes = cbr_core::onnx::encode(&m.embedder);
        let mut info = m.info.embedder.clone();
        // The page checks the file it builds on against this digest, as `cbr build
        // --embeddings` does: it is the digest of the file the site carries.
        info.sha256 = cache::sha256_hex(&bytes);
        Ok(SiteEmbedder { bytes, info, preprocess: m.info.preprocess.clone() })
    }
}

/// One file of the site: its path relative to the site's root, and its contents.
pub struct SiteFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The files of the site: it starts from the model in `model_bytes` (an ONNX file written by
/// cbr) when given, else with no classes, and builds on the device with `embedder`. `title` is
/// the page's heading and the installed app's name. Fetches onnxruntime-web with npm once if it
/// is not cached; needs the WebAssembly core ([`core_wasm_path`]).
pub fn site_files(
    model_bytes: Option<&[u8]>,
    embedder: &SiteEmbedder,
    title: &str,
) -> Result<Vec<SiteFile>> {
    if ModelFormat::sniff(&embedder.bytes) != ModelFormat::Onnx
        || cbr_core::onnx::decode(&embedder.bytes).is_err()
    {
        bail!("the browser runs ONNX embedders (onnxruntime-web); this embedder is not ONNX");
    }
    let model = match model_bytes {
        Some(bytes) => Some((bytes, check_model(bytes)?)),
        None => None,
    };
    let wasm_path = core_wasm_path()?;
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let runtime = ort_web::ensure()?;
    let mut files = vec![
        text("index.html", &PAGE_HTML.replace("__TITLE__", &html_escape(title))),
        text("page.js", PAGE_JS),
        text("page.css", PAGE_CSS),
        text("cbr-device.js", DEVICE_JS),
        text("cbr-core.mjs", CORE_MJS),
        SiteFile { path: "cbr_core.wasm".into(), bytes: wasm },
        text("icon.svg", ICON_SVG),
        SiteFile { path: "embedder.onnx".into(), bytes: embedder.bytes.clone() },
        SiteFile {
            path: "embedder.json".into(),
            bytes: serde_json::to_vec_pretty(&serde_json::json!({
                "embedder": embedder.info, "preprocess": embedder.preprocess,
            }))?,
        },
        SiteFile { path: "manifest.json".into(), bytes: manifest(title)? },
    ];
    if let Some((bytes, info)) = model {
        files.push(SiteFile { path: "model.onnx".into(), bytes: bytes.to_vec() });
        files
            .push(SiteFile { path: "model.json".into(), bytes: serde_json::to_vec_pretty(&info)? });
    }
    for (name, path) in runtime {
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read onnxruntime-web's {}", path.display()))?;
        files.push(SiteFile { path: format!("{ORT_DIR}/{name}"), bytes });
    }
    // The service worker caches every file above, in a cache named after their contents.
    let mut paths: Vec<String> = vec!["./".into()];
    paths.extend(files.iter().map(|f| f.path.clone()));
    let mut digest = Vec::new();
    for f in &files {
        digest.extend_from_slice(f.path.as_bytes());
        digest.extend_from_slice(cache::sha256_hex(&f.bytes).as_bytes());
    }
    let name = format!("cbr-{}", &cache::sha256_hex(&digest)[..16]);
    let sw = SERVICE_WORKER_JS
        .replace("__CACHE__", &name)
        .replace("__FILES__", &serde_json::to_string(&paths)?);
    files.push(text("sw.js", &sw));
    Ok(files)
}

/// A model the browser can run and edit: ONNX, single file. Returns its metadata.
fn check_model(model_bytes: &[u8]) -> Result<cbr_core::meta::ClassifierInfo> {
    let file = format::read(model_bytes)?;
    if file.format != ModelFormat::Onnx {
        bail!(
            "the browser runs ONNX models (onnxruntime-web); this model is {}: build it with an \
             ONNX embedder",
            file.format.title()
        );
    }
    if file.info.index.is_some() {
        bail!(
            "this model keeps its index in a file beside it (a sidecar, for very large indexes); \
             the browser runs single-file models only"
        );
    }
    Ok(file.info)
}

fn text(path: &str, contents: &str) -> SiteFile {
    SiteFile { path: path.into(), bytes: contents.as_bytes().to_vec() }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The web app manifest: what makes the page installable.
fn manifest(title: &str) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(&serde_json::json!({
        "name": title,
        "short_name": title.chars().take(12).collect::<String>(),
        "start_url": "./index.html",
        "scope": "./",
        "display": "standalone",
        "background_color": "#f6f7f9",
        "theme_color": "#2f6fed",
        "icons": [{"src": "icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"}],
    }))?)
}

/// `cbr export-web [MODEL] -o DIR`: writes the site into `out`, starting from the model file
/// `model` (and its embedder) when given, else with no classes and the embedder `choice`
/// names. Atomic: the files go into a temporary folder beside `out`, renamed into place when
/// complete. An earlier export at `out` is replaced; any other non-empty folder is refused.
pub fn export_dir(model: Option<&Path>, choice: &EmbedderChoice, out: &Path) -> Result<()> {
    let files = match model {
        Some(model) => {
            let (bytes, _) = crate::classifier::read_model_file(model)?;
            let title =
                model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            SiteEmbedder::of_model(&bytes)
                .and_then(|e| site_files(Some(&bytes), &e, &title))
                .with_context(|| format!("model {}", crate::printable::path(model)))?
        }
        None => {
            let embedder = SiteEmbedder::open(choice)?;
            site_files(None, &embedder, "New classifier")?
        }
    };
    write_dir(&files, out)
}

/// Whether `dir` holds a site this module wrote (so replacing it loses nothing of the user's).
fn is_export(dir: &Path) -> bool {
    ["index.html", "sw.js", "cbr-device.js"].iter().all(|f| dir.join(f).is_file())
        && (dir.join("embedder.json").is_file() || dir.join("model.json").is_file())
}

/// The files and folders of the site's top level ([`site_files`]); under [`ORT_DIR`], the
/// runtime's files (their names change with its version).
const SITE_NAMES: &[&str] = &[
    "index.html",
    "page.js",
    "page.css",
    "cbr-device.js",
    "cbr-core.mjs",
    "cbr_core.wasm",
    "embedder.onnx",
    "embedder.json",
    "icon.svg",
    "model.onnx",
    "model.json",
    "manifest.json",
    "sw.js",
    ORT_DIR,
];

/// What in an earlier export `dir` this module did not write (a user's notes, a folder of
/// photos): replacing the export would delete them. Names, sorted, as the user would type them.
/// `site` names the files of the export about to be written: theirs are an export's too.
fn foreign_entries(dir: &Path, site: &[SiteFile]) -> Vec<String> {
    let ours = |name: &str| SITE_NAMES.contains(&name) || site.iter().any(|f| f.path == name);
    let mut foreign = Vec::new();
    let entries = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d).map(|r| r.flatten().collect()).unwrap_or_default()
    };
    for e in entries(dir) {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name == ORT_DIR && is_dir {
            for f in entries(&e.path()) {
                if !f.file_type().is_ok_and(|t| t.is_file()) {
                    foreign.push(format!("{ORT_DIR}/{}/", f.file_name().to_string_lossy()));
                }
            }
        } else if !ours(&name) || is_dir {
            foreign.push(if is_dir { format!("{name}/") } else { name });
        }
    }
    foreign.sort();
    foreign
}

fn write_dir(files: &[SiteFile], out: &Path) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create directory {}", parent.display()))?;
    if out.exists() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !is_export(out) {
            bail!(
                "{} exists and is not a page written by cbr export-web: refusing to replace it; \
                 choose another folder",
                out.display()
            );
        }
        let foreign = foreign_entries(out, files);
        if !empty && !foreign.is_empty() {
            let shown: Vec<String> = foreign
                .iter()
                .take(5)
                .map(|f| crate::printable::printable(f).into_owned())
                .collect();
            bail!(
                "{} holds files cbr export-web did not write ({}{}): replacing the export would \
                 delete them; move them elsewhere or choose another folder",
                out.display(),
                shown.join(", "),
                if foreign.len() > 5 {
                    format!(" and {} more", foreign.len() - 5)
                } else {
                    String::new()
                }
            );
        }
    }
    // The folders an export killed mid-write left (its temporary site, or the earlier export
    // moved aside) go first.
    cache::remove_stale_temp_files(parent);
    let prefix = format!("{}{}-", cache::TEMP_PREFIX, std::process::id());
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    for f in files {
        let path = tmp.path().join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        std::fs::write(&path, &f.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::File::open(&path).and_then(|f| f.sync_all()).ok();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A site is for serving: readable by the web server, not private like a temp folder.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set permissions of {}", tmp.path().display()))?;
    }
    // The old export moves aside first (a folder cannot be renamed over a non-empty one), then
    // the new one takes its name: readers see the old site or the new one, each complete.
    let old = if out.exists() {
        let aside = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
        let aside_path = aside.path().join("old");
        std::fs::rename(out, &aside_path)
            .with_context(|| format!("cannot move the earlier {} aside", out.display()))?;
        Some(aside)
    } else {
        None
    };
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, out)
        .with_context(|| format!("cannot move the new site into place at {}", out.display()))?;
    drop(old);
    Ok(())
}

/// The site as a zip archive (the server's download): the model is stored as is (its weights
/// barely compress), the rest deflated.
pub fn write_zip<W: Write + Seek>(files: &[SiteFile], root: &str, out: W) -> Result<W> {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;
    let mut zip = zip::ZipWriter::new(out);
    for f in files {
        let method = if f.path.ends_with(".onnx") {
            CompressionMethod::Stored
        } else {
            CompressionMethod::Deflated
        };
        // A fixed time: the same model gives the same archive.
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .last_modified_time(zip::DateTime::default())
            .large_file(f.bytes.len() >= u32::MAX as usize);
        zip.start_file(format!("{root}/{}", f.path), options)?;
        zip.write_all(&f.bytes)?;
    }
    Ok(zip.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Vec<SiteFile> {
        vec![text("index.html", "<p>new</p>"), text("ort/a.mjs", "export{}")]
    }

    #[test]
    fn a_site_is_written_whole_and_replaces_an_earlier_export_only() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("site");
        write_dir(&site(), &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("index.html")).unwrap(), "<p>new</p>");
        assert_eq!(std::fs::read_to_string(out.join("ort/a.mjs")).unwrap(), "export{}");
        // Not recognised as an export (no model): refused, left as it was.
        let err = write_dir(&site(), &out).unwrap_err();
        assert!(format!("{err:#}").contains("not a page written by cbr export-web"), "{err:#}");
        for f in ["embedder.json", "cbr-device.js", "sw.js"] {
            std::fs::write(out.join(f), "x").unwrap();
        }
        std::fs::write(out.join("ort/ort-old-version.wasm"), "from the old export").unwrap();
        write_dir(&site(), &out).unwrap();
        assert!(!out.join("ort/ort-old-version.wasm").exists(), "the old export's files are gone");
        assert!(out.join("index.html").is_file());
        // Nothing left beside it: no temporary or moved-aside folders.
        let names: Vec<_> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("site")]);
    }

    #[test]
    fn a_users_files_in_an_earlier_export_are_never_deleted() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("site");
        let full: Vec<SiteFile> = SITE_NAMES
            .iter()
            .filter(|n| **n != ORT_DIR)
            .map(|n| text(n, "x"))
            .chain([text("ort/ort-wasm.mjs", "export{}")])
            .collect();
        write_dir(&full, &out).unwrap();
        write_dir(&full, &out).unwrap(); // its own export is replaced
        std::fs::write(out.join("NOTES.txt"), "mine").unwrap();
        std::fs::create_dir(out.join("photos")).unwrap();
        std::fs::write(out.join("photos/a.jpg"), "mine too").unwrap();
        let err = format!("{:#}", write_dir(&full, &out).unwrap_err());
        assert!(err.contains("NOTES.txt, photos/") && err.contains("did not write"), "{err}");
        assert_eq!(std::fs::read_to_string(out.join("NOTES.txt")).unwrap(), "mine");
        assert_eq!(std::fs::read_to_string(out.join("photos/a.jpg")).unwrap(), "mine too");
        std::fs::remove_file(out.join("NOTES.txt")).unwrap();
        std::fs::remove_dir_all(out.join("photos")).unwrap();
        std::fs::create_dir(out.join("ort/sub")).unwrap();
        let err = format!("{:#}", write_dir(&full, &out).unwrap_err());
        assert!(err.contains("ort/sub/"), "{err}");
    }

    #[test]
    fn a_killed_exports_temporary_folder_is_removed_by_the_next_export() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let dead = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        let stale = d.path().join(format!("{}{dead}-abc", cache::TEMP_PREFIX));
        std::fs::create_dir_all(stale.join("old/ort")).unwrap();
        std::fs::write(stale.join("old/model.onnx"), vec![0u8; 1 << 16]).unwrap();
        write_dir(&site(), &d.path().join("site")).unwrap();
        assert!(!stale.exists(), "a killed export's temporary folder is still there");
    }

    #[test]
    fn the_zip_holds_every_file_under_the_root_and_is_deterministic() {
        let a = write_zip(&site(), "m", std::io::Cursor::new(Vec::new())).unwrap().into_inner();
        let b = write_zip(&site(), "m", std::io::Cursor::new(Vec::new())).unwrap().into_inner();
        assert_eq!(a, b);
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(a)).unwrap();
        let names: Vec<_> =
            (0..z.len()).map(|i| z.by_index(i).unwrap().name().to_string()).collect();
        assert_eq!(names, ["m/index.html", "m/ort/a.mjs"]);
    }

    #[test]
    fn a_non_onnx_or_garbage_model_is_refused_with_a_reason() {
        let embedder = SiteEmbedder {
            bytes: b"not a model".to_vec(),
            info: EmbedderInfo {
                name: "x".into(),
                sha256: String::new(),
                input: "i".into(),
                output: "o".into(),
                dim: 1,
            },
            preprocess: Preprocess::raw(224, 224, cbr_core::preprocess::Layout::Nchw),
        };
        let err = site_files(None, &embedder, "m").err().expect("garbage is refused");
        assert!(format!("{err:#}").contains("not ONNX"), "{err:#}");
    }
}
