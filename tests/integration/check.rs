//! `cbr check` end to end: the real binary and default embedder on real photos
//! (`fixtures::scenes`) with planted problems: a mislabelled photo, an exact copy within a
//! class, the same photo in two classes and an unreadable file. All must be reported, with
//! exit code 0, in JSON, text and the HTML report.

use std::fs;

use serde_json::Value;

use crate::cli::{copy_classes, s};
use crate::common::{run_ok, setup};
use crate::fixtures;

#[test]
fn check_reports_planted_problems_in_json_text_and_html() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let classes = copy_classes(&fixtures::scenes(), &data, 4, 12);
    let files = |c: usize| {
        let mut v: Vec<_> =
            fs::read_dir(data.join(&classes[c])).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    // A photo of class 0 filed under class 1.
    fs::rename(&files(0)[0], data.join(&classes[1]).join("planted.jpg")).unwrap();
    // The same file twice in class 2, and a photo of class 3 also in class 0.
    fs::copy(&files(2)[0], data.join(&classes[2]).join("copy.jpg")).unwrap();
    fs::copy(&files(3)[1], data.join(&classes[0]).join("conflict.jpg")).unwrap();
    fs::write(data.join(&classes[1]).join("broken.jpg"), b"not an image").unwrap();
    let report = tmp.path().join("check.html");

    let out = run_ok(&["check", "--json", "-q", "--report", s(&report), s(&data)]);
    let r: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(r["schema"], "cbr-check/1");
    assert_eq!(r["classes"], 4);
    let list = |k: &str| r[k].as_array().unwrap().clone();
    let ends = |v: &Value, name: &str| v.as_str().unwrap().ends_with(name);
    let m = list("mislabelled");
    let planted = m.iter().find(|m| ends(&m["path"], "planted.jpg")).unwrap_or_else(|| {
        panic!("the planted photo is not flagged: {}", serde_json::to_string_pretty(&r).unwrap())
    });
    assert_eq!(planted["label"], classes[1].as_str());
    assert_eq!(planted["suggested"], classes[0].as_str());
    let dups = list("duplicates");
    assert!(
        dups.iter().any(|d| ends(&d["b"], "copy.jpg") && d["exact"] == true),
        "the exact copy within class 2: {dups:#?}"
    );
    let conflict = dups
        .iter()
        .find(|d| ends(&d["a"], "conflict.jpg") || ends(&d["b"], "conflict.jpg"))
        .expect("the photo in two classes");
    assert_eq!(conflict["across_classes"], true);
    assert_eq!(conflict["exact"], true);
    assert_eq!(dups[0]["across_classes"], true, "label conflicts come first");
    let skipped = list("skipped");
    assert!(skipped.len() == 1 && ends(&skipped[0]["path"], "broken.jpg"), "{skipped:?}");
    assert!(r["leave_one_out"]["accuracy"].as_f64().unwrap() > 0.8);
    assert_eq!(list("classes_health").len(), 4);

    let html = fs::read_to_string(&report).unwrap();
    assert!(html.contains("data:image/jpeg;base64,") && html.contains("planted.jpg"));
    assert!(!html.contains("http://") && !html.contains("https://"), "self-contained");

    let text = run_ok(&["check", s(&data)]);
    assert!(text.contains("look at first:"), "{text}");
    assert!(text.contains("planted.jpg") && text.contains("broken.jpg"), "{text}");
}
