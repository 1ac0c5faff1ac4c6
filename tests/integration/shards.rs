//! Distributed embedding: `cbr embed --shard i/n` parts merged by
//! `cbr build --embeddings` give the same model, byte for byte, as one
//! `cbr build` over the images; and a Parquet reader cbr did not write
//! (pyarrow) reads the parts.

use crate::common;

use crate::fixtures;
use common::{run, run_ok, setup};

#[test]
fn shards_merge_into_the_same_model_as_a_direct_build() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    // 4 classes x 10 colour photos, as a CSV manifest.
    let root = fixtures::scenes();
    let mut classes: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut csv = String::from("path,label\n");
    for c in classes.iter().take(4) {
        let mut files: Vec<_> = std::fs::read_dir(c).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(10) {
            csv.push_str(&format!(
                "{},{}\n",
                f.display(),
                c.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let manifest = dir.path().join("images.csv");
    std::fs::write(&manifest, csv).unwrap();
    let (m, parts) = (manifest.to_str().unwrap(), dir.path().join("parts"));

    for i in 0..3 {
        let part = parts.join(format!("part-{i}.parquet"));
        run_ok(&[
            "embed",
            m,
            "--shard",
            &format!("{i}/3"),
            "-o",
            part.to_str().unwrap(),
            "--no-cache",
            "-q",
        ]);
    }
    let merged = dir.path().join("merged.onnx");
    let direct = dir.path().join("direct.onnx");
    let pattern = format!("{}/part-*.parquet", parts.display());
    run_ok(&["build", "--embeddings", &pattern, "-o", merged.to_str().unwrap(), "-q"]);
    run_ok(&["build", m, "-o", direct.to_str().unwrap(), "--no-cache", "-q"]);
    assert!(
        std::fs::read(&merged).unwrap() == std::fs::read(&direct).unwrap(),
        "the merged shards give another model than the direct build"
    );

    // pyarrow reads the parts.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/read_shard.py");
    let mut py = common::python();
    py.arg(script);
    for i in 0..3 {
        py.arg(parts.join(format!("part-{i}.parquet")));
    }
    let out = py.output().expect("cannot run python3");
    assert!(
        out.status.success(),
        "pyarrow could not read the shards (scripts/setup.sh installs pyarrow):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["rows"], 40, "{found}");
    assert_eq!(found["dims"], serde_json::json!([1280]), "{found}");
    assert_eq!(found["unique_ids"], 40, "{found}");
    assert_eq!(found["labels"].as_array().unwrap().len(), 4, "{found}");
    assert_eq!(found["embedders"], serde_json::json!(["efficientnet-lite0"]), "{found}");

    // Shards from another embedder setting are refused, naming the problem.
    let out = run(&[
        "build",
        "--embeddings",
        &pattern,
        "-o",
        merged.to_str().unwrap(),
        "--mean",
        "0",
        "--std",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("same --embedder and preprocessing"), "{err}");
}
