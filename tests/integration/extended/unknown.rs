//! The model's own "unknown" answer on CUB birds (10 classes known) against
//! far out-of-set photos: Tiny ImageNet's non-bird classes (issue 15's "done
//! means" targets, measured by `cbr eval --unknown`).

use std::path::Path;

use serde_json::Value;

use crate::common::{dataset, run_ok};

/// Tiny ImageNet's bird classes (goose, black stork, king penguin, albatross):
/// birds are not "far" from CUB, so they are left out of the unknown set.
const BIRDS: [&str; 4] = ["n01855672", "n02002724", "n02056570", "n02058221"];

/// The first `n` non-bird classes of Tiny ImageNet as a folder of links.
fn non_birds(n: usize, out: &Path) {
    let tin = dataset("tiny_imagenet_val");
    let mut classes: Vec<_> = std::fs::read_dir(&tin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !BIRDS.iter().any(|b| p.ends_with(b)))
        .collect();
    classes.sort();
    std::fs::create_dir_all(out).unwrap();
    for c in classes.into_iter().take(n) {
        std::os::unix::fs::symlink(&c, out.join(c.file_name().unwrap())).unwrap();
    }
}

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn the_models_unknown_answer_meets_the_issue_15_targets_on_cub_vs_tiny_imagenet() {
    let tmp = tempfile::tempdir().unwrap();
    let unknown = tmp.path().join("unknown");
    non_birds(60, &unknown); // 3,000 photos
    let cub = dataset("cub200_010");
    let out = run_ok(&[
        "eval",
        cub.to_str().unwrap(),
        "--shots",
        "1,5",
        "--seeds",
        "5",
        "--unknown",
        unknown.to_str().unwrap(),
        "--json",
        "--quiet",
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    // (K, far unknown rejected ≥, known answered ≥), and top-1 among all
    // known photos within 8 points of the top-1 with no unknown answer.
    for (shots, rejected, answered) in [(1, 0.90, 0.80), (5, 0.95, 0.85)] {
        let s = r["results"].as_array().unwrap().iter().find(|s| s["shots"] == shots).unwrap();
        let f = &s["far_unknown"];
        let mean = |k: &str| f[k]["mean"].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
        println!("K={shots}: {f}");
        assert_eq!(f["images"], 3000);
        assert!(mean("auroc") >= 0.99, "K={shots}: AUROC {}", mean("auroc"));
        assert!(mean("unknown_rejected") >= rejected, "K={shots}: {}", mean("unknown_rejected"));
        assert!(mean("known_accepted") >= answered, "K={shots}: {}", mean("known_accepted"));
        let drop = mean("top1_no_threshold") - mean("known_right_and_accepted");
        assert!(drop <= 0.08, "K={shots}: top-1 falls by {drop:.3} with the unknown answer");
    }
}
