//! `cbr eval` end to end on a real image set (Fashion-MNIST; CUB in the
//! extended tier) with the default embedder.

use crate::common;

use std::path::Path;

use crate::fixtures;
use common::{run, run_ok, setup};

/// Attribute values that load something (`src=`, `href=`, CSS `url(`).
fn references(html: &str) -> Vec<String> {
    let mut v = Vec::new();
    for key in ["src=\"", "href=\"", "src='", "href='", "url("] {
        let mut rest = html;
        while let Some(i) = rest.find(key) {
            rest = &rest[i + key.len()..];
            v.push(rest.chars().take(40).collect());
        }
    }
    v
}

#[test]
fn eval_json_report_and_dump_on_fashion_mnist() {
    // 10 classes x 50 images; `original` (max) top-1 measured 0.699 over these 2 seeds.
    eval_json_report_and_dump(&fixtures::fashion_mnist(), 500, (0.62, 0.78), "0.699 over 2 seeds");
}

/// `cbr eval --shots 5 --seeds 2` on a 10-class set of `images` images: the JSON
/// report, the HTML report and the dump; `original` (max) top-1 within `original`.
pub fn eval_json_report_and_dump(
    data: &Path,
    expected_rows: usize,
    original_range: (f64, f64),
    reference: &str,
) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let dump = dir.path().join("dump");
    let out = run_ok(&[
        "eval",
        data.to_str().unwrap(),
        "--shots",
        "5",
        "--seeds",
        "2",
        "--json",
        "--quiet",
        "--report",
        html.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(j["classes"], 10);
    assert_eq!(j["seeds"], 2);
    let r = &j["results"][0];
    assert_eq!(r["shots"], 5);
    assert_eq!(r["index_images"], 50);
    let configs = r["configs"].as_array().unwrap();
    let names: Vec<&str> = configs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for a in cbr_core::head::Aggregation::ALL {
        assert!(names.contains(&a.name()), "{} missing from {names:?}", a.name());
    }
    assert!(names.contains(&"original"), "{names:?}");
    assert_eq!(configs.iter().filter(|c| c["default"] == true).count(), 1);
    for c in configs {
        let t1 = c["top1"]["mean"].as_f64().unwrap();
        let t5 = c["top5"]["mean"].as_f64().unwrap();
        assert!(t1 > 0.3 && t1 <= t5 && t5 <= 1.0, "{c}");
        assert_eq!(c["top1"]["values"].as_array().unwrap().len(), 2);
        assert!(c["top1"]["ci95"].is_number());
    }
    let original = configs.iter().find(|c| c["name"] == "original").unwrap();
    let t1 = original["top1"]["mean"].as_f64().unwrap();
    println!("eval on {}: original (max) top-1 {t1:.3}", data.display());
    assert!(
        (original_range.0..=original_range.1).contains(&t1),
        "original (max) top-1 {t1}: reference {reference}"
    );

    let d = &r["detail"];
    let confusion = d["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 =
        confusion.iter().flat_map(|row| row.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 2 * r["query_images"].as_u64().unwrap(), "every query of both seeds once");
    let per_class = d["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    assert!(per_class.iter().all(|c| c["recall"].is_number() && c["label"].is_string()));
    let cal = &d["calibration"];
    assert!(cal["ece_unfitted"]["mean"].is_number());
    assert_eq!(cal["reliability"].as_array().unwrap().len(), 10);
    let os = &d["open_set"];
    assert_eq!(os["unknown_classes"], 2);
    let auroc = os["auroc"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auroc));
    for k in ["known_accepted", "unknown_rejected"] {
        let v = os[k]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    assert!(!d["confused_pairs"].as_array().unwrap().is_empty());

    // The HTML report: self-contained.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg"), "no SVG chart");
    assert!(page.contains("data:image/jpeg;base64,"), "no inline thumbnails");
    for r in references(&page) {
        assert!(r.starts_with("data:"), "external reference in the report: {r}");
    }
    assert!(!page.contains("<script"), "no scripts expected");

    // The dump: every image, 1280-d or whatever the embedder gives, consistent files.
    let labels = std::fs::read_to_string(dump.join("labels.txt")).unwrap();
    let images = std::fs::read_to_string(dump.join("images.txt")).unwrap();
    let rows = labels.lines().count();
    assert_eq!(rows, images.lines().count());
    assert_eq!(rows, expected_rows);
    let bytes = std::fs::metadata(dump.join("embeddings.f32")).unwrap().len() as usize;
    assert!(bytes > 0 && bytes.is_multiple_of(4 * rows));
}

#[test]
fn eval_prints_tables_and_refuses_bad_options() {
    setup();
    let data = fixtures::fashion_mnist();
    let out =
        run_ok(&["eval", data.to_str().unwrap(), "--shots", "1,3", "--seeds", "1", "--quiet"]);
    assert!(out.contains("1 shot per class"), "{out}");
    assert!(out.contains("3 shots per class"), "{out}");
    assert!(out.contains("original") && out.contains("(default)"), "{out}");
    assert!(out.contains("worst classes by recall"), "{out}");
    assert!(out.contains("open set"), "{out}");

    let bad = run(&["eval", data.to_str().unwrap(), "--shots", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--shots"));
    let bad = run(&["eval", data.to_str().unwrap(), "--shots", "5", "--seeds", "0"]);
    assert!(!bad.status.success());
}

/// `--unknown DIR`: scikit-image's photographs against a Fashion-MNIST
/// classifier. The model's own unknown answer must say "unknown" for nearly
/// all of them and still answer the photos of clothing; text, JSON and HTML
/// all carry the figures.
#[test]
fn eval_unknown_scores_images_of_no_known_class() {
    setup();
    let data = fixtures::fashion_mnist();
    let photos = fixtures::photos();
    let unknown = photos[0].parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("r.html");
    let args = |json: bool| {
        let mut a = vec![
            "eval",
            data.to_str().unwrap(),
            "--shots",
            "1,5",
            "--seeds",
            "2",
            "--unknown",
            unknown.to_str().unwrap(),
            "--quiet",
        ];
        if json {
            a.push("--json");
        } else {
            a.extend(["--report", html.to_str().unwrap()]);
        }
        a
    };
    let out = run_ok(&args(true));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for s in r["results"].as_array().unwrap() {
        let f = &s["far_unknown"];
        let mean = |k: &str| f[k]["mean"].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
        println!("K={}: {f}", s["shots"]);
        assert_eq!(f["images"].as_u64(), Some(photos.len() as u64));
        assert!(mean("auroc") >= 0.95, "AUROC {f}");
        assert!(mean("unknown_rejected") >= 0.85, "photographs answered unknown: {f}");
        assert!(mean("known_accepted") >= 0.8, "photos of clothing answered: {f}");
        assert!(mean("known_right_and_accepted") <= mean("top1_no_threshold"), "{f}");
        assert!((0.0..=1.0).contains(&mean("fpr_at_95_tpr")), "{f}");
    }
    let text = run_ok(&args(false));
    assert!(text.contains(&format!("images of no known class ({} images", photos.len())), "{text}");
    assert!(text.contains("unknown images answered \"unknown\""), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Images of no known class"), "the HTML report has the section");
}
