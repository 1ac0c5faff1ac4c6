//! `cbr add`, `cbr remove` and `cbr relabel` on real images give the same
//! model file, byte for byte, as a fresh `cbr build` over the same images;
//! and the embedding cache never changes a model, even after a killed build
//! or a damaged cache file.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures;
use common::{cbr, private_cache, run_ok, setup};

/// A CSV manifest of `(path, label)` rows.
fn manifest(dir: &Path, name: &str, rows: &[(PathBuf, String)]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("path,label\n");
    for (p, l) in rows {
        text.push_str(&format!("{},{l}\n", p.display()));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The first `per_class` images of the first `classes` classes of the colour photo set.
fn scene_rows(classes: usize, per_class: usize) -> Vec<(PathBuf, String)> {
    let root = fixtures::scenes();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut rows = Vec::new();
    for d in dirs.into_iter().take(classes) {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let label = d.file_name().unwrap().to_string_lossy().into_owned();
        rows.extend(files.into_iter().take(per_class).map(|f| (f, label.clone())));
    }
    rows
}

fn build(csv: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["build", csv.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    run_ok(&args);
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} ({} bytes) and {} ({} bytes) differ",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

#[test]
fn add_equals_a_fresh_build() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let all = scene_rows(4, 6);
    // The model starts with 3 classes of 4 images; the addition brings 2 more
    // images to each of them and a whole new class.
    let (first, rest): (Vec<_>, Vec<_>) =
        all.iter().cloned().enumerate().partition(|(i, (_, l))| *l != all[18].1 && i % 6 < 4);
    let first: Vec<_> = first.into_iter().map(|x| x.1).collect();
    let rest: Vec<_> = rest.into_iter().map(|x| x.1).collect();
    for extra in [&[][..], &["--index-dtype", "int8"][..], &["--original", "--augment"][..]] {
        let fresh = dir.path().join("fresh.onnx");
        let edited = dir.path().join("edited.onnx");
        build(&manifest(dir.path(), "all.csv", &all), &fresh, &[extra, &["--no-cache"]].concat());
        build(&manifest(dir.path(), "first.csv", &first), &edited, extra);
        let rest_csv = manifest(dir.path(), "rest.csv", &rest);
        let mut add = vec!["add", edited.to_str().unwrap(), rest_csv.to_str().unwrap()];
        if extra.contains(&"--augment") {
            add.push("--augment");
        }
        run_ok(&add);
        same_file(&fresh, &edited);

        // Adding the same images again changes nothing.
        let out = cbr().args(&add).output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already in the model"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        same_file(&fresh, &edited);
    }
}

#[test]
fn remove_and_relabel_equal_fresh_builds() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let all = scene_rows(4, 5);
    let model = dir.path().join("m.onnx");
    build(&manifest(dir.path(), "all.csv", &all), &model, &[]);
    let labels: Vec<String> = {
        let mut l: Vec<String> = all.iter().map(|r| r.1.clone()).collect();
        l.dedup();
        l
    };

    // remove
    let removed = dir.path().join("removed.onnx");
    run_ok(&[
        "remove",
        model.to_str().unwrap(),
        "--label",
        &labels[1],
        "-o",
        removed.to_str().unwrap(),
    ]);
    let without: Vec<_> = all.iter().filter(|r| r.1 != labels[1]).cloned().collect();
    let fresh = dir.path().join("fresh.onnx");
    build(&manifest(dir.path(), "without.csv", &without), &fresh, &[]);
    same_file(&fresh, &removed);

    // relabel to a new name
    let renamed = dir.path().join("renamed.onnx");
    run_ok(&[
        "relabel",
        model.to_str().unwrap(),
        &labels[0],
        "albatross",
        "-o",
        renamed.to_str().unwrap(),
    ]);
    let rows: Vec<_> = all
        .iter()
        .map(|(p, l)| {
            (p.clone(), if *l == labels[0] { "albatross".to_string() } else { l.clone() })
        })
        .collect();
    build(&manifest(dir.path(), "renamed.csv", &rows), &fresh, &[]);
    same_file(&fresh, &renamed);

    // relabel into an existing class: the two merge
    let merged = dir.path().join("merged.onnx");
    run_ok(&[
        "relabel",
        model.to_str().unwrap(),
        &labels[2],
        &labels[3],
        "-o",
        merged.to_str().unwrap(),
    ]);
    let rows: Vec<_> = all
        .iter()
        .map(|(p, l)| (p.clone(), if *l == labels[2] { labels[3].clone() } else { l.clone() }))
        .collect();
    build(&manifest(dir.path(), "merged.csv", &rows), &fresh, &[]);
    same_file(&fresh, &merged);

    // in place, and errors that name the problem
    run_ok(&["remove", model.to_str().unwrap(), "--label", &labels[1]]);
    same_file(&removed, &model);
    let out = cbr()
        .args(["remove", model.to_str().unwrap(), "--label", "no-such-bird"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no class \"no-such-bird\"") && err.contains(&labels[0]), "{err}");
    same_file(&removed, &model);
}

fn cbr_in(cache: &Path) -> Command {
    let mut c = cbr();
    c.env("CBR_CACHE_DIR", cache);
    c
}

fn stderr_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn cache_embeds_only_changed_images_and_survives_damage() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let cache = private_cache(dir.path());
    // A folder copy we can change.
    let mut rows = Vec::new();
    for (i, (p, l)) in scene_rows(3, 8).into_iter().enumerate() {
        let copy = dir.path().join("photos").join(&l).join(format!("{i:02}.jpg"));
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&p, &copy).unwrap();
        rows.push((copy, l));
    }
    let photos = dir.path().join("photos");
    let model = dir.path().join("m.onnx");
    let reference = dir.path().join("reference.onnx");
    let build_args = |out: &Path| {
        vec![
            "build".to_string(),
            photos.display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ]
    };

    let err = stderr_ok(cbr_in(&cache).args(build_args(&model)));
    assert!(!err.contains("embedding cache"), "a cold cache serves nothing: {err}");
    // Two images change content: only they are embedded again.
    let other = scene_rows(4, 2);
    std::fs::copy(&other[6].0, &rows[0].0).unwrap();
    std::fs::copy(&other[7].0, &rows[9].0).unwrap();
    let err = stderr_ok(cbr_in(&cache).args(build_args(&model)));
    assert!(err.contains("(22 from the embedding cache)"), "{err}");
    stderr_ok(cbr_in(&cache).args(build_args(&reference)).arg("--no-cache"));
    same_file(&reference, &model);

    // Damage the cache: a flipped byte and a torn tail. The model stays right.
    let file = std::fs::read_dir(cache.join("embeddings")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let record = bytes.len() / 26; // 24 records, then 2 re-embedded
    bytes[record * 5 + 100] ^= 0x10; // record 5: images 1-4 stay cached (image 0 has changed)
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&file, &bytes).unwrap();
    let err = stderr_ok(cbr_in(&cache).args(build_args(&model)));
    assert!(
        err.contains("(4 from the embedding cache)"),
        "records from a damaged one on are not trusted: {err}"
    );
    same_file(&reference, &model);
    let err = stderr_ok(cbr_in(&cache).args(build_args(&model)));
    assert!(err.contains("(24 from the embedding cache)"), "the cache was repaired: {err}");
    same_file(&reference, &model);
}

#[test]
fn killed_build_leaves_no_model_and_its_work_is_reused() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let cache = private_cache(dir.path());
    let photos = fixtures::scenes();
    let model = dir.path().join("m.onnx");
    let mut child = cbr_in(&cache)
        .args(["build", photos.to_str().unwrap(), "-o", model.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some embeddings are in the cache, then kill -9.
    let file = cache.join("embeddings");
    let started = std::time::Instant::now();
    loop {
        let size = std::fs::read_dir(&file)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.metadata().unwrap().len())
            .unwrap_or(0);
        if size > 0 {
            break;
        }
        assert!(started.elapsed().as_secs() < 120, "no embeddings reached the cache in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!model.exists(), "a killed build must not leave a model file");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let err = stderr_ok(cbr_in(&cache).args([
        "build",
        photos.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]));
    assert!(
        err.contains("from the embedding cache"),
        "the killed build's embeddings are reused: {err}"
    );
    let reference = dir.path().join("reference.onnx");
    stderr_ok(cbr_in(&cache).args([
        "build",
        photos.to_str().unwrap(),
        "-o",
        reference.to_str().unwrap(),
        "--no-cache",
    ]));
    same_file(&reference, &model);
}

/// The class names of a model, from `cbr info --json`.
fn labels_of(model: &Path) -> Vec<String> {
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", model.to_str().unwrap(), "--json"])).unwrap();
    info["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

/// Issue 12, item 1: two `cbr add` on one model at once both land (the
/// second waits for the first's lock and starts from its result).
#[test]
fn concurrent_adds_on_one_model_both_land() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let rows = scene_rows(4, 3);
    let base = manifest(dir.path(), "base.csv", &rows[..6]);
    let add_a = manifest(dir.path(), "a.csv", &rows[6..9]);
    let add_b = manifest(dir.path(), "b.csv", &rows[9..12]);
    let model = dir.path().join("m.onnx");
    build(&base, &model, &["--no-cache"]);
    for round in 0..2 {
        let spawn = |csv: &Path| {
            cbr()
                .args(["add", model.to_str().unwrap(), csv.to_str().unwrap(), "-q", "--no-cache"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(&add_a), spawn(&add_b));
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let labels = labels_of(&model);
        assert_eq!(labels.len(), 4, "round {round}: an acknowledged add was lost: {labels:?}");
    }
    // The result is the model a fresh build over all the images gives.
    let all = manifest(dir.path(), "all.csv", &rows);
    let fresh = dir.path().join("fresh.onnx");
    build(&all, &fresh, &["--no-cache"]);
    same_file(&model, &fresh);
}

/// Issue 12, item 7: a write killed between creating its temporary file and
/// the rename leaves `.cbr-tmp-*`; the next write in that folder removes it.
#[test]
fn a_killed_writes_temporary_file_is_removed_by_the_next_write() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let rows = scene_rows(2, 2);
    let model = dir.path().join("m.onnx");
    build(&manifest(dir.path(), "m.csv", &rows), &model, &["--no-cache"]);
    let temps = || common::temp_files(dir.path());
    assert!(temps().is_empty());
    // strace kills the process at its rename, as a crash or kill -9 would.
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "inject=rename,renameat,renameat2:signal=KILL"])
        .arg(env!("CARGO_BIN_EXE_cbr"))
        .args(["relabel", model.to_str().unwrap(), &rows[0].1, "renamed", "-o"])
        .arg(dir.path().join("out.onnx"))
        .output()
        .expect("this test needs strace (apt-get install strace)");
    assert!(!out.status.success(), "the write was not interrupted");
    assert_eq!(temps().len(), 1, "the killed write should have left its temporary file");
    run_ok(&["relabel", model.to_str().unwrap(), &rows[0].1, "renamed"]);
    assert!(temps().is_empty(), "left behind: {:?}", temps());
    let other = rows.iter().map(|r| r.1.clone()).find(|l| *l != rows[0].1).unwrap();
    let mut want = vec![other, "renamed".to_string()];
    want.sort();
    assert_eq!(labels_of(&model), want);
}
