//! onnxruntime-web, the ONNX Runtime build that runs in a browser: fetched from npm with the
//! ordinary client (`npm pack onnxruntime-web@<pinned>`), checked against the tarball's pinned
//! SHA-256, and only the files of the WebAssembly CPU backend kept in cbr's cache, as the
//! native runtimes are taken from PyPI wheels ([`crate::cache::WheelLibrary`]). Building cbr
//! needs no npm; exporting a web page needs the cached files (or npm once to fetch them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache;

/// The onnxruntime-web release the exported pages are tested with.
pub const ORT_WEB_VERSION: &str = "1.30.0";
/// SHA-256 of `npm pack onnxruntime-web@1.30.0`'s tarball (onnxruntime-web-1.30.0.tgz).
const TARBALL_SHA256: &str = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71";

/// The files of the WebAssembly CPU backend (SIMD, with threads where the page is
/// cross-origin isolated): the ES module API, the Emscripten loader and the WebAssembly
/// binary (14 MB of the tarball's 33 MB; WebGPU, WebGL and JSPI builds are left out).
pub const FILES: &[&str] =
    &["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];

/// Where the files are kept: `<cache>/onnxruntime-web/<version>/`.
pub fn cached_dir() -> Result<PathBuf> {
    Ok(cache::dir()?.join("onnxruntime-web").join(ORT_WEB_VERSION))
}

/// The cached files (name, path), or an error saying how to install them.
pub fn files() -> Result<Vec<(&'static str, PathBuf)>> {
    let dir = cached_dir()?;
    let found: Vec<_> = FILES.iter().map(|f| (*f, dir.join(f))).collect();
    if found.iter().all(|(_, p)| p.is_file()) {
        return Ok(found);
    }
    bail!(
        "onnxruntime-web {ORT_WEB_VERSION} (the browser's ONNX Runtime) is not installed.\n\
         Install it with:   cbr runtime install --web\n\
         (this runs `npm pack onnxruntime-web@{ORT_WEB_VERSION}` (npm: Debian package npm) and \
         keeps {} in {})",
        FILES.join(", "),
        dir.display()
    )
}

/// Fetches the tarball with npm and keeps [`FILES`] in the cache (each written atomically).
/// Does nothing when they are already there. Returns the cache folder.
pub fn install() -> Result<PathBuf> {
    let dir = cached_dir()?;
    if files().is_ok() {
        return Ok(dir);
    }
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let spec = format!("onnxruntime-web@{ORT_WEB_VERSION}");
    eprintln!("fetching {spec} from npm with npm pack ...");
    let out = Command::new("npm")
        .args(["pack", "--silent", &spec, "--pack-destination"])
        .arg(tmp.path())
        .output()
        .context(
            "cannot run `npm`: cbr fetches onnxruntime-web (for cbr export-web) with npm pack; \
             install npm (Debian: apt-get install npm)",
        )?;
    if !out.status.success() {
        bail!(
            "`npm pack {spec}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tarball = tmp.path().join(format!("onnxruntime-web-{ORT_WEB_VERSION}.tgz"));
    let bytes = std::fs::read(&tarball)
        .with_context(|| format!("npm pack wrote no {}", tarball.display()))?;
    let got = cache::sha256_hex(&bytes);
    if got != TARBALL_SHA256 {
        bail!(
            "{} has SHA-256 {got}, expected {TARBALL_SHA256}: not the file cbr was tested with; \
             refusing to use it",
            tarball.display()
        );
    }
    let members = tgz_members(&bytes, |name| {
        name.strip_prefix("package/dist/").filter(|f| FILES.contains(f)).is_some()
    })
    .with_context(|| format!("reading {}", tarball.display()))?;
    for f in FILES {
        let data = members
            .iter()
            .find(|(n, _)| n.strip_prefix("package/dist/") == Some(f))
            .map(|(_, d)| d)
            .with_context(|| format!("{} has no package/dist/{f}", tarball.display()))?;
        cache::write_atomic(&dir.join(f), data)?;
    }
    Ok(dir)
}

/// Installs onnxruntime-web unless it is cached; returns the files.
pub fn ensure() -> Result<Vec<(&'static str, PathBuf)>> {
    if let Ok(f) = files() {
        return Ok(f);
    }
    install()?;
    files()
}

/// The members of a gzipped tar archive (ustar, as npm writes it) whose names `want`
/// accepts, as (name, bytes). Directory, link and extended-header entries are skipped.
fn tgz_members(tgz: &[u8], want: impl Fn(&str) -> bool) -> Result<Vec<(String, Vec<u8>)>> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(tgz).read_to_end(&mut tar).context("not a gzip file")?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break; // the end-of-archive blocks
        }
        let field = |range: std::ops::Range<usize>| {
            let f = &header[range];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size_text = field(124..136);
        let size = u64::from_str_radix(size_text.trim(), 8)
            .with_context(|| format!("bad tar entry size {size_text:?} at byte {at}"))?
            as usize;
        let (prefix, name) = (field(345..500), field(0..100));
        let name = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let data_start = at + 512;
        let data_end = data_start + size;
        if data_end > tar.len() {
            bail!("tar entry {name} ends past the end of the archive");
        }
        // Type '0' or NUL: a regular file.
        if matches!(header[156], b'0' | 0) && want(&name) {
            out.push((name, tar[data_start..data_end].to_vec()));
        }
        at = data_start + size.div_ceil(512) * 512;
    }
    Ok(out)
}

/// Whether `name` is one of the kept files (a request for anything else is refused).
pub fn is_file_name(name: &str) -> bool {
    FILES.contains(&name)
}

/// The content type of a kept file.
pub fn content_type(name: &str) -> &'static str {
    match Path::new(name).extension().and_then(|e| e.to_str()) {
        Some("wasm") => "application/wasm",
        _ => "text/javascript; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A ustar archive of (name, bytes), gzipped: what npm pack writes.
    fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, data) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = b'0';
            h[257..262].copy_from_slice(b"ustar");
            tar.extend_from_slice(&h);
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn tar_members_are_read_by_name_across_block_boundaries() {
        let big = vec![7u8; 1300];
        let archive = tgz(&[
            ("package/package.json", b"{}"),
            ("package/dist/ort.wasm.min.mjs", b"export{}"),
            ("package/dist/ort-wasm-simd-threaded.wasm", &big),
        ]);
        let got = tgz_members(&archive, |n| n.starts_with("package/dist/")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("package/dist/ort.wasm.min.mjs".to_string(), b"export{}".to_vec()));
        assert_eq!(got[1].1, big);
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let archive = tgz(&[("package/dist/x", &[1u8; 2000])]);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&archive[..]).read_to_end(&mut tar).unwrap();
        tar.truncate(1024);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let err = tgz_members(&gz.finish().unwrap(), |_| true).unwrap_err();
        assert!(format!("{err:#}").contains("ends past the end"), "{err:#}");
    }
}
