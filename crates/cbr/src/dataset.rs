//! Which images, with which labels: read a training set from a folder of class
//! sub-folders or from a CSV manifest, in a deterministic order.
//!
//! Only the file system layout is checked here. Whether a file really is an
//! image is decided later by decoding, so that non-images show up in the
//! user's skip summary instead of vanishing silently.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One training example: an image file and its class label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelledImage {
    // Field order matters: the derived `Ord` sorts by label, then path.
    pub label: String,
    pub path: PathBuf,
}

const LAYOUT_HINT: &str =
    "expected one sub-folder per class, e.g. photos/cat/1.jpg, photos/dog/2.jpg";

/// Hidden files and folders (`.DS_Store`, `.git`, `._x.jpg` from macOS, ...)
/// are never training data. `Thumbs.db` is the Windows equivalent.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.starts_with(b".")
        || name.eq_ignore_ascii_case("Thumbs.db")
        || name.eq_ignore_ascii_case("desktop.ini")
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`), for error messages: a path or
/// label from a user's folder must not forge a line or drive the terminal. (As
/// the printable module does; it depends on the pipeline, so it cannot be used here.)
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// Refuses a label no model can hold: one with a line break (`cbr_core::meta::is_line_break`),
/// which would split a TFLite model's `labelmap.txt` into more lines than scores.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.chars().any(cbr_core::meta::is_line_break) {
        return Err(format!(
            "the label {} holds a line break, which a label may not (a TFLite model's \
             labelmap.txt has one label per line)",
            shown(label)
        ));
    }
    Ok(())
}

/// Read `<root>/<label>/<files>`; files in nested folders of a label folder
/// belong to that label. Sorted by label, then path.
pub fn from_folder(root: &Path) -> Result<Vec<LabelledImage>> {
    let meta = fs::metadata(root).with_context(|| {
        format!("cannot open image folder {}: check the path ({LAYOUT_HINT})", root.display())
    })?;
    if !meta.is_dir() {
        bail!("{} is not a folder: {LAYOUT_HINT}", root.display());
    }
    let mut label_dirs = Vec::new();
    let mut stray_files = Vec::new();
    for entry in read_dir_sorted(root)? {
        let name = entry.file_name().unwrap_or_default().to_owned();
        if is_hidden(&name) {
            continue;
        }
        // `fs::metadata` follows symlinks, so a linked class folder works.
        if fs::metadata(&entry).map(|m| m.is_dir()).unwrap_or(false) {
            let Some(label) = name.to_str() else {
                bail!(
                    "class folder name {} is not valid UTF-8: rename the folder \
                     (its name is the label)",
                    entry.display()
                );
            };
            if let Err(problem) = check_label(label) {
                bail!(
                    "class folder {}: {problem}: rename the folder (its name is the label)",
                    shown(&entry.to_string_lossy())
                );
            }
            label_dirs.push((label.to_owned(), entry));
        } else {
            stray_files.push(entry);
        }
    }
    if !stray_files.is_empty() {
        let example = stray_files[0].file_name().unwrap_or_default().to_string_lossy().into_owned();
        bail!(
            "found {} file(s) directly in {} (e.g. {example}); images must be inside a \
             sub-folder named after their class, e.g. {}: move them into class folders",
            stray_files.len(),
            root.display(),
            root.join("<class>").join(&example).display()
        );
    }
    if label_dirs.is_empty() {
        bail!("no class folders in {}: {LAYOUT_HINT}", root.display());
    }
    let mut images = Vec::new();
    for (label, dir) in label_dirs {
        let mut files = Vec::new();
        let mut visited = HashSet::new();
        collect_files(&dir, &mut files, &mut visited)?;
        if files.is_empty() {
            bail!("class folder {} is empty: add images or remove the folder", dir.display());
        }
        images.extend(files.into_iter().map(|path| LabelledImage { label: label.clone(), path }));
    }
    images.sort();
    Ok(images)
}

/// Every image file under `root` (recursively, sub-folder names ignored),
/// sorted, each labelled `label`: images of no known class, as `cbr eval
/// --unknown` takes them.
pub fn unlabelled(root: &Path, label: &str) -> Result<Vec<LabelledImage>> {
    if !fs::metadata(root)
        .with_context(|| format!("cannot open image folder {}: check the path", root.display()))?
        .is_dir()
    {
        bail!("{} is not a folder of images", root.display());
    }
    let mut files = Vec::new();
    collect_files(root, &mut files, &mut HashSet::new())?;
    if files.is_empty() {
        bail!("no images in {}", root.display());
    }
    files.sort();
    Ok(files.into_iter().map(|path| LabelledImage { label: label.to_string(), path }).collect())
}

/// The entries of `dir` as paths, in name order.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = fs::read_dir(dir)
        .with_context(|| format!("cannot list folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("cannot list folder {}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

/// Every non-hidden file under `dir`, recursively. Symlinked folders are
/// followed once; `visited` stops symlink cycles from looping forever.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) -> Result<()> {
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    if !visited.insert(canonical) {
        return Ok(());
    }
    for path in read_dir_sorted(dir)? {
        if path.file_name().is_none_or(is_hidden) {
            continue;
        }
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => collect_files(&path, out, visited)?,
            // Regular files, and also broken links or unreadable entries: the
            // decoder will report those by name in the skip summary.
            _ => out.push(path),
        }
    }
    Ok(())
}

/// Read a CSV manifest with a header row naming (at least) the columns `path`
/// and `label`, in any order. Relative paths are relative to the manifest's
/// folder. Sorted by label then path; repeated (path, label) rows are merged.
/// The same path under two different labels is kept twice on purpose (an image
/// may legitimately be an example of both classes).
pub fn from_csv(manifest: &Path) -> Result<Vec<LabelledImage>> {
    let file = fs::File::open(manifest)
        .with_context(|| format!("cannot open manifest {}: check the path", manifest.display()))?;
    let base = match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers = reader
        .headers()
        .with_context(|| format!("cannot read the header row of {}", manifest.display()))?
        .clone();
    // Spreadsheet programs often prepend a byte-order mark to the first column.
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim().eq_ignore_ascii_case(name))
    };
    let (Some(path_col), Some(label_col)) = (column("path"), column("label")) else {
        bail!(
            "{}: the first line must be a header naming the columns `path` and `label` \
             (found: {})",
            manifest.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };

    const MAX_REPORTED: usize = 10;
    let mut problems = Vec::new();
    let mut images = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("cannot parse {}", manifest.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let path = record.get(path_col).unwrap_or("");
        let label = record.get(label_col).unwrap_or("");
        if record.iter().all(str::is_empty) {
            continue; // blank line
        }
        if path.is_empty() {
            problems.push(format!("line {line}: empty path"));
            continue;
        }
        if label.is_empty() {
            problems.push(format!("line {line}: empty label for {}", shown(path)));
            continue;
        }
        if let Err(problem) = check_label(label) {
            problems.push(format!("line {line}: {problem}"));
            continue;
        }
        let resolved = base.join(path);
        match fs::metadata(&resolved) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                problems.push(format!(
                    "line {line}: {} is not a file",
                    shown(&resolved.to_string_lossy())
                ));
                continue;
            }
            Err(_) => {
                problems.push(format!(
                    "line {line}: image {} not found",
                    shown(&resolved.to_string_lossy())
                ));
                continue;
            }
        }
        images.push(LabelledImage { label: label.to_owned(), path: resolved });
    }
    if !problems.is_empty() {
        let mut msg = format!(
            "{} problem(s) in manifest {} (paths are relative to the manifest's folder); \
             fix these lines:",
            problems.len(),
            manifest.display()
        );
        for p in problems.iter().take(MAX_REPORTED) {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        if problems.len() > MAX_REPORTED {
            msg.push_str(&format!("\n  ... and {} more", problems.len() - MAX_REPORTED));
        }
        bail!(msg);
    }
    if images.is_empty() {
        bail!("manifest {} lists no images: add rows of path,label", manifest.display());
    }
    images.sort();
    images.dedup();
    Ok(images)
}

/// Images given as a list (the Python package's `(paths, labels)`): checked as a manifest's rows
/// are (non-empty label, an existing file), then sorted and de-duplicated the same way, so the
/// list and a CSV manifest of the same rows build the same model.
pub fn from_pairs(pairs: Vec<LabelledImage>) -> Result<Vec<LabelledImage>> {
    let mut problems = Vec::new();
    for (i, img) in pairs.iter().enumerate() {
        let path = shown(&img.path.to_string_lossy());
        if img.label.is_empty() {
            problems.push(format!("item {i}: empty label for {path}"));
        } else if let Err(problem) = check_label(&img.label) {
            problems.push(format!("item {i}: {problem}"));
        } else if !fs::metadata(&img.path).is_ok_and(|m| m.is_file()) {
            problems.push(format!("item {i}: image {path} not found"));
        }
    }
    if !problems.is_empty() {
        let mut msg = format!("{} problem(s) in the image list:", problems.len());
        for p in problems.iter().take(10) {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        if problems.len() > 10 {
            msg.push_str(&format!("\n  ... and {} more", problems.len() - 10));
        }
        return Err(crate::error::Error::bad_input(msg).into());
    }
    if pairs.is_empty() {
        return Err(crate::error::Error::bad_input("the image list is empty").into());
    }
    let mut images = pairs;
    images.sort();
    images.dedup();
    Ok(images)
}

/// A folder of class folders, or a `.csv` manifest.
pub fn from_path(p: &Path) -> Result<Vec<LabelledImage>> {
    // A missing path is `NotFound` (the Python package raises cbr.NotFound, a FileNotFoundError).
    let meta = fs::metadata(p).map_err(|e| {
        crate::error::Error::from_io(
            e,
            format!("{} does not exist or cannot be read", shown(&p.to_string_lossy())),
        )
    })?;
    if meta.is_dir() {
        return from_folder(p);
    }
    let is_csv = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if meta.is_file() && is_csv {
        return from_csv(p);
    }
    bail!(
        "{}: expected a folder with one sub-folder per class (e.g. photos/cat/1.jpg) or a \
         .csv manifest with columns path,label",
        p.display()
    )
}

/// Number of images per label, sorted by label.
pub fn class_counts(images: &[LabelledImage]) -> Vec<(String, usize)> {
    let mut counts = BTreeMap::new();
    for img in images {
        *counts.entry(img.label.as_str()).or_insert(0usize) += 1;
    }
    counts.into_iter().map(|(l, n)| (l.to_owned(), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn folder_layout_sorted_recursive_hidden_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("dog/b.jpg"));
        touch(&root.join("dog/a.png"));
        touch(&root.join("cat/z.jpg"));
        touch(&root.join("cat/nested/deeper/y.jpg"));
        touch(&root.join("cat/.DS_Store"));
        touch(&root.join("cat/Thumbs.db"));
        touch(&root.join("cat/.hidden/w.jpg"));
        touch(&root.join(".git/config"));
        touch(&root.join("dog/notes.txt")); // kept: decoding reports it later
        let images = from_folder(root).unwrap();
        let got: Vec<(String, PathBuf)> = images
            .iter()
            .map(|i| (i.label.clone(), i.path.strip_prefix(root).unwrap().to_owned()))
            .collect();
        let want = [
            ("cat", "cat/nested/deeper/y.jpg"),
            ("cat", "cat/z.jpg"),
            ("dog", "dog/a.png"),
            ("dog", "dog/b.jpg"),
            ("dog", "dog/notes.txt"),
        ];
        let want: Vec<(String, PathBuf)> =
            want.iter().map(|(l, p)| (l.to_string(), PathBuf::from(p))).collect();
        assert_eq!(got, want);
        assert_eq!(class_counts(&images), vec![("cat".into(), 2), ("dog".into(), 3)]);
        assert_eq!(from_path(root).unwrap(), images);
    }

    #[test]
    fn pairs_are_checked_sorted_and_deduplicated_like_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
        touch(&a);
        touch(&b);
        let img =
            |label: &str, path: &Path| LabelledImage { label: label.into(), path: path.into() };
        let got = from_pairs(vec![img("dog", &b), img("cat", &a), img("dog", &b)]).unwrap();
        assert_eq!(got, vec![img("cat", &a), img("dog", &b)]);
        let csv = dir.path().join("m.csv");
        fs::write(&csv, format!("path,label\n{},dog\n{},cat\n", b.display(), a.display())).unwrap();
        assert_eq!(from_csv(&csv).unwrap(), got);

        let e = from_pairs(vec![img("", &a), img("cat", &dir.path().join("gone.jpg"))]);
        let e = e.unwrap_err();
        assert_eq!(crate::error::kind_of(&e), crate::error::ErrorKind::BadInput);
        let msg = format!("{e:#}");
        assert!(msg.contains("item 0: empty label") && msg.contains("item 1: image"), "{msg}");
        assert!(from_pairs(Vec::new()).is_err());
    }

    #[test]
    fn folder_errors_explain_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let msg = err_of(from_folder(&root.join("nope")));
        assert!(msg.contains("cannot open image folder") && msg.contains("nope"), "{msg}");

        let msg = err_of(from_folder(root));
        assert!(msg.contains("no class folders"), "{msg}");

        touch(&root.join("cat/1.jpg"));
        fs::create_dir_all(root.join("cola")).unwrap();
        let msg = err_of(from_folder(root));
        assert!(msg.contains("cola is empty: add images or remove the folder"), "{msg}");
        // A folder containing only hidden files counts as empty too.
        touch(&root.join("cola/.DS_Store"));
        assert!(err_of(from_folder(root)).contains("cola is empty"));
        touch(&root.join("cola/1.jpg"));
        assert_eq!(from_folder(root).unwrap().len(), 2);

        touch(&root.join("loose.jpg"));
        let msg = err_of(from_folder(root));
        assert!(msg.contains("directly in") && msg.contains("loose.jpg"), "{msg}");

        let msg = err_of(from_folder(&root.join("loose.jpg")));
        assert!(msg.contains("is not a folder"), "{msg}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_label_is_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        // Some file systems refuse non-UTF-8 names; nothing to test there.
        if fs::create_dir(&bad).is_err() {
            return;
        }
        touch(&bad.join("1.jpg"));
        assert!(err_of(from_folder(dir.path())).contains("not valid UTF-8"));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_cycle_does_not_loop() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("cat/1.jpg"));
        std::os::unix::fs::symlink(dir.path().join("cat"), dir.path().join("cat/loop")).unwrap();
        assert_eq!(from_folder(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn csv_manifest_resolves_sorts_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("imgs/a.jpg"));
        touch(&root.join("imgs/b.jpg"));
        let abs = root.join("abs.jpg");
        touch(&abs);
        let manifest = root.join("train.csv");
        fs::write(
            &manifest,
            format!(
                "\u{feff}id,label,path\n1,dog,imgs/b.jpg\n2, cat ,imgs/a.jpg\n\n\
                 3,dog,imgs/b.jpg\n4,cat,{}\n5,dog,imgs/a.jpg\n",
                abs.display()
            ),
        )
        .unwrap();
        let images = from_csv(&manifest).unwrap();
        let want = vec![
            LabelledImage { path: abs.clone(), label: "cat".into() },
            LabelledImage { path: root.join("imgs/a.jpg"), label: "cat".into() },
            LabelledImage { path: root.join("imgs/a.jpg"), label: "dog".into() },
            LabelledImage { path: root.join("imgs/b.jpg"), label: "dog".into() },
        ];
        assert_eq!(images, want);
        assert_eq!(from_path(&manifest).unwrap(), want);
        assert_eq!(class_counts(&images), vec![("cat".into(), 2), ("dog".into(), 2)]);
    }

    #[test]
    fn csv_errors_name_lines() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("a.jpg"));
        let manifest = root.join("m.csv");

        fs::write(&manifest, "file,class\na.jpg,cat\n").unwrap();
        let msg = err_of(from_csv(&manifest));
        assert!(msg.contains("`path` and `label`") && msg.contains("file, class"), "{msg}");

        fs::write(&manifest, "path,label\na.jpg,cat\n,dog\na.jpg,\nmissing.jpg,cat\n.,cat\n")
            .unwrap();
        let msg = err_of(from_csv(&manifest));
        assert!(msg.contains("4 problem(s)"), "{msg}");
        assert!(msg.contains("line 3: empty path"), "{msg}");
        assert!(msg.contains("line 4: empty label for a.jpg"), "{msg}");
        assert!(msg.contains("line 5: image") && msg.contains("missing.jpg not found"), "{msg}");
        assert!(msg.contains("line 6:") && msg.contains("is not a file"), "{msg}");

        fs::write(&manifest, "path,label\n").unwrap();
        assert!(err_of(from_csv(&manifest)).contains("lists no images"));
        assert!(err_of(from_csv(&root.join("none.csv"))).contains("cannot open manifest"));
    }

    #[test]
    fn from_path_rejects_other_things() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("list.txt");
        touch(&txt);
        assert!(err_of(from_path(&txt)).contains(".csv manifest"));
        assert!(err_of(from_path(&dir.path().join("gone"))).contains("does not exist"));
        let gone = from_path(&dir.path().join("gone")).unwrap_err();
        assert_eq!(crate::error::kind_of(&gone), crate::error::ErrorKind::NotFound);
    }

    #[test]
    fn labels_with_line_breaks_are_refused_and_paths_escaped() {
        // Issue 26: a line break in a label split TFLite's labelmap.txt; an escape in a path
        // reached the terminal.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("ok/a.jpg"));
        touch(&root.join("two\nlines/b.jpg"));
        let msg = err_of(from_folder(root));
        assert!(msg.contains("two\\nlines") && msg.contains("holds a line break"), "{msg}");
        assert!(!msg.contains('\n'), "{msg:?}");
        let manifest = root.join("m.csv");
        fs::write(&manifest, "path,label\nok/a.jpg,\"cr\rlabel\"\n\"x\u{1b}[31m.jpg\",ok\n")
            .unwrap();
        let msg = err_of(from_csv(&manifest));
        assert!(msg.contains("line 2: the label cr\\rlabel holds a line break"), "{msg}");
        assert!(msg.contains("x\\u{1b}[31m.jpg not found") && !msg.contains('\u{1b}'), "{msg}");
        let pairs = vec![LabelledImage { label: "a\u{2028}b".into(), path: root.join("ok/a.jpg") }];
        assert!(err_of(from_pairs(pairs)).contains("holds a line break"));
        // Other control characters are kept (and printed escaped).
        assert!(check_label("tab\there \u{1b}[31m").is_ok());
    }
}
