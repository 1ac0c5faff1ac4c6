//! A model as a self-contained static web site that classifies on the device (`cbr export-web`,
//! and the server's download of the same site): the page, the model, its metadata as JSON,
//! onnxruntime-web's WebAssembly backend ([`ort_web`]), a web app manifest and a service worker
//! (installable, works offline). Nothing is fetched from elsewhere at run time.
//!
//! The page runs `web/device/cbr-device.js`, the one JavaScript port of what `cbr classify`
//! does to an image (preprocessing from the model's metadata, cbr's exact resize, the unknown
//! rule); the web app's "run on this device" mode runs the same module.

pub mod ort_web;

use std::io::{Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cache;
use cbr_core::format::{self, ModelFormat};

/// The shared module: preprocessing, model run and answer, as `cbr classify`.
pub const DEVICE_JS: &str = include_str!("../../../../web/device/cbr-device.js");
const PAGE_HTML: &str = include_str!("../../../../web/device/index.html");
const PAGE_JS: &str = include_str!("../../../../web/device/page.js");
const PAGE_CSS: &str = include_str!("../../../../web/device/page.css");
const SERVICE_WORKER_JS: &str = include_str!("../../../../web/device/sw.js");
const ICON_SVG: &str = include_str!("../../../../web/device/icon.svg");

/// Where the runtime's files sit in the site (and in `cbr serve`'s URL space).
pub const ORT_DIR: &str = "ort";

/// One file of the site: its path relative to the site's root, and its contents.
pub struct SiteFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The files of the site for the model in `model_bytes` (an ONNX file written by cbr), titled
/// `title` (the page's heading and the installed app's name). Fetches onnxruntime-web with npm
/// once if it is not cached.
pub fn site_files(model_bytes: &[u8], title: &str) -> Result<Vec<SiteFile>> {
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
    let runtime = ort_web::ensure()?;
    let mut files = vec![
        text("index.html", &PAGE_HTML.replace("__TITLE__", &html_escape(title))),
        text("page.js", PAGE_JS),
        text("page.css", PAGE_CSS),
        text("cbr-device.js", DEVICE_JS),
        text("icon.svg", ICON_SVG),
        SiteFile { path: "model.onnx".into(), bytes: model_bytes.to_vec() },
        SiteFile { path: "model.json".into(), bytes: serde_json::to_vec_pretty(&file.info)? },
        SiteFile { path: "manifest.json".into(), bytes: manifest(title)? },
    ];
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

/// `cbr export-web MODEL -o DIR`: writes the site for the model file `model` into `out`,
/// atomically: the files go into a temporary folder beside `out`, renamed into place when
/// complete. An earlier export at `out` is replaced; any other non-empty folder is refused.
pub fn export_dir(model: &Path, out: &Path) -> Result<()> {
    let (bytes, _) = crate::classifier::read_model_file(model)?;
    let title = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let files = site_files(&bytes, &title)
        .with_context(|| format!("model {}", crate::printable::path(model)))?;
    write_dir(&files, out)
}

/// Whether `dir` holds a site this module wrote (so replacing it loses nothing of the user's).
fn is_export(dir: &Path) -> bool {
    ["index.html", "model.json", "model.onnx", "sw.js"].iter().all(|f| dir.join(f).is_file())
}

/// The files and folders of the site's top level ([`site_files`]); under [`ORT_DIR`], the
/// runtime's files (their names change with its version).
const SITE_NAMES: &[&str] = &[
    "index.html",
    "page.js",
    "page.css",
    "cbr-device.js",
    "icon.svg",
    "model.onnx",
    "model.json",
    "manifest.json",
    "sw.js",
    ORT_DIR,
];

/// What in an earlier export `dir` this module did not write (a user's notes, a folder of
/// photos): replacing the export would delete them. Names, sorted, as the user would type them.
fn foreign_entries(dir: &Path) -> Vec<String> {
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
        } else if !SITE_NAMES.contains(&name.as_str()) || is_dir {
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
        let foreign = foreign_entries(out);
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
        for f in ["model.json", "model.onnx", "sw.js"] {
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
        let err = site_files(b"not a model", "m").err().expect("garbage is refused");
        assert!(!format!("{err:#}").is_empty());
    }
}
