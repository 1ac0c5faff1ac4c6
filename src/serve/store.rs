//! The models directory: one folder per model, holding the labelled images
//! (content-addressed file names, never a name the user sent), the built
//! `model.onnx` (or `model.tflite`) and a small `state.json` about the last build.
//!
//! ```text
//! <dir>/<model>/images/<label>/<sha256 prefix>.<ext>
//! <dir>/<model>/model.onnx      written with cache::write_atomic (model.tflite for TFLite)
//! <dir>/<model>/state.json      written with cache::write_atomic after model.onnx
//! ```
//!
//! Every name that reaches the file system goes through [`check_model_name`],
//! [`check_label`] or [`check_image_id`] first: no path traversal.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cbr::cache;
use cbr::dataset::LabelledImage;
use cbr_core::format::ModelFormat;

/// Longest model name or label, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest label in UTF-8 bytes: a label is a folder name, and file systems
/// allow 255 bytes (64 four-byte characters would be 256).
pub const MAX_LABEL_BYTES: usize = 255;

/// A model name: 1-64 ASCII letters, digits, space, `-`, `_`, `.`; not starting
/// with `.` or space and not ending with space.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let ok_chars =
        name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("model name must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if !ok_chars {
        return Err(format!(
            "model name {name:?} may only hold letters, digits, space, '-', '_' and '.'"
        ));
    }
    if name.starts_with('.') || name.starts_with(' ') || name.ends_with(' ') || name.contains("..")
    {
        return Err(format!("model name {name:?} may not start with '.' or a space, end with a space, or contain '..'"));
    }
    Ok(())
}

/// A label: 1-64 characters and at most 255 bytes in UTF-8, any letters
/// (unicode) and printable symbols except `/`, `\`; no control characters or
/// NUL; not starting with `.` (hidden folders are never classes), not
/// containing `..`, no surrounding spaces.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.chars().count() > MAX_NAME_CHARS {
        return Err(format!("label must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "label is {} bytes in UTF-8, above the limit of {MAX_LABEL_BYTES} (it names a folder)",
            label.len()
        ));
    }
    if label.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(format!("label {label:?} may not contain '/', '\\' or control characters"));
    }
    if label.starts_with('.') || label.contains("..") || label.trim() != label {
        return Err(format!(
            "label {label:?} may not start with '.', contain '..', or start or end with a space"
        ));
    }
    Ok(())
}

/// Extensions we store images under, from the detected format (never from the
/// uploaded file name).
pub const IMAGE_EXTS: &[&str] = &["jpg", "png", "gif", "bmp", "webp", "tif", "pnm"];

/// An image id: 16 lowercase hex digits, `.`, and one of [`IMAGE_EXTS`].
pub fn check_image_id(id: &str) -> Result<(), String> {
    let bad = || format!("{id:?} is not an image id (16 hex digits and an image extension)");
    let (hex, ext) = id.split_once('.').ok_or_else(bad)?;
    if hex.len() != 16
        || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        || !IMAGE_EXTS.contains(&ext)
    {
        return Err(bad());
    }
    Ok(())
}

/// The file extension for image bytes, from their content.
pub fn image_ext(bytes: &[u8]) -> Option<&'static str> {
    use image::ImageFormat as F;
    Some(match image::guess_format(bytes).ok()? {
        F::Jpeg => "jpg",
        F::Png => "png",
        F::Gif => "gif",
        F::Bmp => "bmp",
        F::WebP => "webp",
        F::Tiff => "tif",
        F::Pnm => "pnm",
        _ => return None,
    })
}

pub fn content_type(id: &str) -> &'static str {
    match id.rsplit('.').next().unwrap_or("") {
        "jpg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "tif" => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// What the last successful build recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BuiltState {
    /// Seconds since the Unix epoch when model.onnx was written.
    pub built_at: u64,
    pub classes: usize,
    pub images: usize,
    /// Embedding time.
    pub seconds: f64,
    /// Images that could not be used, `label/id: reason`.
    pub skipped: Vec<String>,
    /// [`Store::fingerprint`] of the images the model was built from.
    pub fingerprint: String,
}

/// One label and its image ids.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelImages {
    pub name: String,
    pub count: usize,
    pub images: Vec<String>,
}

/// The models directory.
#[derive(Clone, Debug)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create the models directory {}", root.display()))?;
        remove_stale_deletions(root);
        Ok(Store { root: root.to_path_buf() })
    }

    /// The model's lock ([`cbr::lock::ModelLock`] on model.onnx, the same
    /// one `cbr add` takes), or None when the model does not exist (any more).
    pub fn lock(&self, name: &str) -> Result<Option<cbr::lock::ModelLock>> {
        if !self.exists(name) {
            return Ok(None);
        }
        let lock = match cbr::lock::ModelLock::acquire(&self.model_path(name)) {
            Ok(l) => l,
            // Deleted between the check and the lock.
            Err(_) if !self.exists(name) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Deleted while we waited: the lock file moved away with the folder.
        Ok(self.exists(name).then_some(lock))
    }

    /// Callers must have checked `name` with [`check_model_name`].
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn images_dir(&self, name: &str) -> PathBuf {
        self.model_dir(name).join("images")
    }

    /// The built model file, in whichever format it was built (a server
    /// with a `.tflite` embedder builds TFLite models); `model.onnx` when none is.
    pub fn model_path(&self, name: &str) -> PathBuf {
        ModelFormat::ALL
            .into_iter()
            .map(|f| self.model_path_for(name, f))
            .find(|p| p.is_file())
            .unwrap_or_else(|| self.model_path_for(name, ModelFormat::Onnx))
    }

    /// Where a model built in `format` is kept.
    pub fn model_path_for(&self, name: &str, format: ModelFormat) -> PathBuf {
        self.model_dir(name).join(format.stored_name())
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.model_dir(name).join("state.json")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.images_dir(name).is_dir()
    }

    /// Model names, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.root)
            .with_context(|| format!("cannot read {}", cbr::printable::path(&self.root)))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if check_model_name(&name).is_ok() && e.path().join("images").is_dir() {
                v.push(name);
            }
        }
        v.sort();
        Ok(v)
    }

    /// Creates a model; false if it already exists.
    pub fn create(&self, name: &str) -> Result<bool> {
        if self.exists(name) {
            return Ok(false);
        }
        std::fs::create_dir_all(self.images_dir(name))
            .with_context(|| format!("cannot create model {name}"))?;
        Ok(true)
    }

    /// Deletes a model; callers hold its [`Store::lock`].
    pub fn delete(&self, name: &str) -> Result<()> {
        // Move aside first so a half-deleted model is never listed.
        let gone = self.root.join(format!("{DELETED_PREFIX}{name}-{}", std::process::id()));
        std::fs::rename(self.model_dir(name), &gone)?;
        std::fs::remove_dir_all(&gone)?;
        Ok(())
    }

    /// Labels with their images, sorted by label then id.
    pub fn labels(&self, name: &str) -> Result<Vec<LabelImages>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.images_dir(name))? {
            let e = e?;
            let label = e.file_name().to_string_lossy().into_owned();
            if check_label(&label).is_err() || !e.file_type()?.is_dir() {
                continue;
            }
            let mut images = Vec::new();
            for f in std::fs::read_dir(e.path())? {
                let id = f?.file_name().to_string_lossy().into_owned();
                if check_image_id(&id).is_ok() {
                    images.push(id);
                }
            }
            images.sort();
            out.push(LabelImages { name: label, count: images.len(), images });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn label_dir(&self, name: &str, label: &str) -> PathBuf {
        self.images_dir(name).join(label)
    }

    /// Creates a label folder; false if it exists. Never creates the model's
    /// own folders: a model deleted meanwhile is an error, not recreated.
    pub fn add_label(&self, name: &str, label: &str) -> Result<bool> {
        let d = self.label_dir(name, label);
        match std::fs::create_dir(&d) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("cannot create label {label:?} of model {name:?}"))
            }
        }
    }

    pub fn delete_label(&self, name: &str, label: &str) -> Result<bool> {
        let d = self.label_dir(name, label);
        if !d.is_dir() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&d)?;
        Ok(true)
    }

    /// Stores one image (already checked to decode) and returns its id.
    pub fn add_image(&self, name: &str, label: &str, bytes: &[u8], ext: &str) -> Result<String> {
        let hex = cache::sha256_hex(bytes);
        let id = format!("{}.{ext}", &hex[..16]);
        let dir = self.label_dir(name, label);
        if !dir.is_dir() {
            anyhow::bail!("model {name:?} has no label {label:?} (deleted meanwhile?)");
        }
        let path = dir.join(&id);
        if !path.exists() {
            cache::write_atomic(&path, bytes)?;
        }
        Ok(id)
    }

    pub fn image_path(&self, name: &str, label: &str, id: &str) -> PathBuf {
        self.label_dir(name, label).join(id)
    }

    /// Every image of the model, as the library's build input.
    pub fn labelled_images(&self, name: &str) -> Result<Vec<LabelledImage>> {
        let mut v = Vec::new();
        for l in self.labels(name)? {
            for id in &l.images {
                v.push(LabelledImage {
                    label: l.name.clone(),
                    path: self.image_path(name, &l.name, id),
                });
            }
        }
        Ok(v)
    }

    /// A digest of which images are in which label: changes when any is added or removed.
    pub fn fingerprint(labels: &[LabelImages]) -> String {
        let mut h = Sha256::new();
        for l in labels {
            for id in &l.images {
                h.update(l.name.as_bytes());
                h.update([0]);
                h.update(id.as_bytes());
                h.update([0]);
            }
        }
        cache::hex(&h.finalize()[..8])
    }

    pub fn built_state(&self, name: &str) -> Option<BuiltState> {
        let s = std::fs::read(self.state_path(name)).ok()?;
        serde_json::from_slice(&s).ok()
    }

    /// Installs a newly built model: the model file (named for its format)
    /// first, then state.json, each atomically; a model of the other format
    /// from an earlier build is removed, so one model file is current.
    pub fn install_model(
        &self,
        name: &str,
        built: &cbr::build::Built,
        state: &BuiltState,
    ) -> Result<()> {
        let format = ModelFormat::sniff(&built.model);
        built.write(&self.model_path_for(name, format))?;
        for other in ModelFormat::ALL.into_iter().filter(|&f| f != format) {
            let _ = std::fs::remove_file(self.model_path_for(name, other));
        }
        cache::write_atomic(&self.state_path(name), &serde_json::to_vec_pretty(state)?)?;
        Ok(())
    }
}

/// Folders of deleted models are renamed `.deleted-<name>-<pid>` before
/// being removed.
const DELETED_PREFIX: &str = ".deleted-";

/// Removes what deletions of a process killed midway left behind.
fn remove_stale_deletions(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(DELETED_PREFIX)
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|p| !cache::process_alive(p)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["birds", "my model 2", "a.b", "A-b_c"] {
            assert!(check_model_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", ".x", "../x", "a/b", "a\\b", " a", "a ", "a..b", "é", "a\0b", &"x".repeat(65)]
        {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
        for ok in
            ["cat", "Black footed Albatross", "001.Black_footed", "chat noir é", "猫", "a(b)+c"]
        {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a\0b",
            "a\nb",
            " x",
            &"x".repeat(65),
            // 64 characters but 256 bytes: too long for a folder name.
            &"\u{1d11e}".repeat(64),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_label(&"\u{1d11e}".repeat(63)).is_ok());
        assert!(check_image_id("0123456789abcdef.jpg").is_ok());
        for bad in
            ["0123456789abcdef.exe", "../0123456789abcdef.jpg", "0123456789ABCDEF.jpg", "0123.jpg"]
        {
            assert!(check_image_id(bad).is_err(), "{bad}");
        }
    }
}
