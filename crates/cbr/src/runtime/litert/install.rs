//! Where LiteRT's library comes from: `LITERT_LIB_PATH`, or the `ai-edge-litert` wheel's
//! `libLiteRt.so` kept in cbr's cache by `cbr runtime install` (SHA-256 checked).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cache::WheelLibrary;

/// The `ai-edge-litert` release cbr is built and tested against.
pub const LITERT_VERSION: &str = "2.3.0";
const LIBRARY_FILE: &str = "libLiteRt.so";
const WHEEL_MEMBER: &str = "ai_edge_litert/libLiteRt.so";
/// SHA-256 of `libLiteRt.so` in the x86-64 Linux wheel of [`LITERT_VERSION`]
/// (the same for every CPython tag): a different file stops the install.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const LIBRARY_SHA256: Option<&str> =
    Some("eec47eb35e2924b3166015887e652a58edc9af823ae38e02bf83bef2548300bb");
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
const LIBRARY_SHA256: Option<&str> = None;

/// Environment variable naming a `libLiteRt.so` to use instead of the cached one.
pub const LIBRARY_ENV: &str = "LITERT_LIB_PATH";

/// The `ai-edge-litert` wheel's library, kept in `<cache>/litert/<version>/`.
fn library() -> WheelLibrary {
    WheelLibrary {
        title: format!("LiteRT {LITERT_VERSION} (the TFLite runtime)"),
        pip_spec: format!("ai-edge-litert=={LITERT_VERSION}"),
        wheel_prefix: "ai_edge_litert-",
        member: WHEEL_MEMBER.to_string(),
        cached: Path::new("litert").join(LITERT_VERSION).join(LIBRARY_FILE),
        env: LIBRARY_ENV,
        env_wants: format!("the libLiteRt.so of ai-edge-litert {LITERT_VERSION}"),
        sha256: LIBRARY_SHA256,
    }
}

/// The library cbr will load: `LITERT_LIB_PATH` if set, else the cached copy.
pub fn library_path() -> Result<PathBuf> {
    library().path()
}

/// Downloads the `ai-edge-litert` wheel with pip and caches its `libLiteRt.so`.
/// Returns the library path. Does nothing if it is already cached.
pub fn install() -> Result<PathBuf> {
    library().install()
}

/// Installs LiteRT into the cache unless it is there or `LITERT_LIB_PATH` is set.
pub fn ensure() -> Result<()> {
    library().ensure()
}
