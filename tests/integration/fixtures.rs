//! The default tier's real data: images from package registries that
//! `scripts/setup.sh` converts into `$CBR_FIXTURES` (default `<repo>/.fixtures`)
//! with `scripts/fixtures.py`. Nothing here skips: missing fixtures are a test
//! failure that names the set-up step providing them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixture folder, checked to be complete (`scripts/fixtures.py` writes `VERSION` last).
pub fn root() -> PathBuf {
    let dir = std::env::var_os("CBR_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".fixtures"));
    assert!(
        dir.join("VERSION").is_file(),
        "the test fixtures are missing from {}: run scripts/setup.sh (its step `test fixtures` \
         writes them with scripts/fixtures.py from Debian's dataset-fashion-mnist and \
         scikit-image's sample photos), or set CBR_FIXTURES to where they are",
        dir.display()
    );
    dir
}

fn sub(name: &str) -> PathBuf {
    let d = root().join(name);
    assert!(d.is_dir(), "{} is missing: run scripts/setup.sh again", d.display());
    d
}

/// Fashion-MNIST (Debian `dataset-fashion-mnist`): `<label>/<n>.png`, 10 classes of
/// 50 real 28x28 grey photos of clothing. The set for accuracy thresholds.
pub fn fashion_mnist() -> PathBuf {
    sub("fashion-mnist")
}

/// The same Fashion-MNIST photos as JPEG files, 10 classes of 60: for the server
/// tests, which upload JPEGs and need a set as hard as real use (on `scenes` a
/// 5-shot model's leave-one-out accuracy is 100% and every threshold is 1.0).
pub fn fashion_mnist_jpeg() -> PathBuf {
    sub("fashion-mnist-jpeg")
}

/// 8 classes x 60 colour JPEGs, `<label>/<nn>.jpg`: crops (random position and
/// scale, 160-320 px) of scikit-image's colour photographs; the class is the photograph.
pub fn scenes() -> PathBuf {
    sub("scenes")
}

/// scikit-image's colour sample photographs as shipped (PNG and JPEG, 300-800 px), sorted.
pub fn photos() -> Vec<PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(sub("photos")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// One photograph (chelsea) in every format cbr reads (`formats/<file>`), with
/// Pillow's decoding of each as an 8-bit RGB PNG (`formats/reference/<file>.png`).
pub fn formats() -> PathBuf {
    sub("formats")
}
