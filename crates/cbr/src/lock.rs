//! Per-model advisory locks: one writer at a time edits a model file, so no
//! acknowledged edit is lost to a concurrent one.
//!
//! The lock is taken on a small lock file beside the model (`.<file>.lock`),
//! not on the model itself: models are replaced by rename, so a lock on the
//! model's inode would not be seen by the next writer. Lock files are left in
//! place; deleting one while another process waits on it would split the lock.
//! The OS releases the lock when the holder exits, even on kill -9.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An exclusive lock on one model path, released on drop.
#[derive(Debug)]
pub struct ModelLock {
    _file: File,
    path: PathBuf,
}

/// The lock file for `model`: `.<file name>.lock` in the same folder.
pub fn lock_path(model: &Path) -> PathBuf {
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    model.with_file_name(format!(".{name}.lock"))
}

impl ModelLock {
    /// Waits for the exclusive lock on `model`. The folder must exist (a
    /// missing folder is an error, never created here: a deleted model must
    /// stay deleted).
    pub fn acquire(model: &Path) -> Result<ModelLock> {
        let path = lock_path(model);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(ModelLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn second_holder_waits_for_the_first() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.onnx");
        assert_eq!(lock_path(&m), d.path().join(".m.onnx.lock"));
        let first = ModelLock::acquire(&m).unwrap();
        let got = Arc::new(AtomicBool::new(false));
        let t = {
            let (m, got) = (m.clone(), got.clone());
            std::thread::spawn(move || {
                let _l = ModelLock::acquire(&m).unwrap();
                got.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!got.load(Ordering::SeqCst), "the second lock was granted while the first is held");
        drop(first);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }

    #[test]
    fn missing_folder_is_an_error_not_created() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("gone").join("model.onnx");
        assert!(ModelLock::acquire(&m).is_err());
        assert!(!d.path().join("gone").exists());
    }
}
