//! `cbr check` on synthetic embeddings with planted problems: each must be found, and the
//! clean images must not be flagged.

use std::path::PathBuf;

use super::*;
use crate::pipeline::Skipped;
use crate::search::synthetic::Clusters;

const DIM: usize = 64;

/// Six clusters of 20 images (class = cluster) plus planted problems:
/// image 0 labelled as the next class (a mislabel), a near-copy of image 1 in its class,
/// an exact copy (same bytes) of image 2 in another class, a random vector in class c3
/// (an outlier), a class of two images, and an exact duplicate the pipeline skipped.
fn planted() -> Embedded {
    let g = Clusters { dim: DIM, clusters: 6, spread: 1.0, seed: 11 };
    let (rows, clusters) = g.sample(120, 0);
    let mut e = Embedded { dim: DIM, ..Default::default() };
    let add = |e: &mut Embedded, row: &[f32], label: String, id: ImageId| {
        let k = e.paths.len();
        e.embeddings.extend_from_slice(row);
        e.labels.push(label);
        e.images.push(k as u32);
        e.paths.push(PathBuf::from(format!("data/img{k}.jpg")));
        e.ids.push(id);
    };
    for (i, r) in rows.chunks_exact(DIM).enumerate() {
        let c = if i == 0 { (clusters[0] + 1) % 6 } else { clusters[i] };
        add(&mut e, r, format!("c{c}"), ImageId::from_index(i as u32));
    }
    let row = |i: usize| rows[i * DIM..(i + 1) * DIM].to_vec();
    // 120: a near-copy of image 1 (a re-encoded photo).
    let mut near = row(1);
    for (k, x) in near.iter_mut().enumerate() {
        *x += 0.01 * ((k as f32 * 1.7).sin());
    }
    add(&mut e, &near, format!("c{}", clusters[1]), ImageId::from_index(1000));
    // 121: the same file as image 2, in another class.
    let other = format!("c{}", (clusters[2] + 3) % 6);
    add(&mut e, &row(2), other, ImageId::from_index(2));
    // 122: a random direction in class c3.
    let (noise, _) = Clusters { dim: DIM, clusters: 1, spread: 0.0, seed: 99 }.sample(1, 0);
    add(&mut e, &noise, "c3".into(), ImageId::from_index(2000));
    // 123, 124: a class of two images.
    add(&mut e, &row(5), "tiny".into(), ImageId::from_index(3000));
    add(&mut e, &row(6), "tiny".into(), ImageId::from_index(3001));
    e.skipped.push(Skipped {
        path: "data/copy-of-7.jpg".into(),
        reason: "same content".into(),
        duplicate_of: Some(e.paths[7].clone()),
    });
    e.skipped.push(Skipped {
        path: "data/broken.jpg".into(),
        reason: "not an image".into(),
        duplicate_of: None,
    });
    e
}

fn report() -> CheckReport {
    check(&planted(), "data", "synthetic", &CheckOptions::default()).unwrap()
}

#[test]
fn finds_the_planted_mislabel_with_its_true_class() {
    let r = report();
    let e = planted();
    let m = r.mislabelled.iter().find(|m| m.path == "data/img0.jpg").expect("image 0 flagged");
    let g = Clusters { dim: DIM, clusters: 6, spread: 1.0, seed: 11 };
    assert_eq!(m.suggested, format!("c{}", g.cluster_of(0)));
    assert!(m.p_suggested > 0.5 && m.p_label <= 0.25 / r.classes as f32, "{m:?}");
    // No clean image of a well-separated class is accused: only planted ones (and the
    // originals of the copies in "tiny" and in another class).
    let planted = [0, 2, 5, 6, 121, 123, 124].map(|i| format!("data/img{i}.jpg"));
    for m in &r.mislabelled {
        assert!(planted.contains(&m.path), "{m:?}");
    }
    let loo = r.leave_one_out.as_ref().unwrap();
    assert_eq!(loo.images, e.paths.len());
    assert!(loo.accuracy > 0.9 && loo.temperature > 0.0, "{loo:?}");
}

#[test]
fn finds_duplicates_within_and_across_classes_and_skipped_copies() {
    let r = report();
    let across = &r.duplicates[0];
    assert!(across.across_classes && across.exact, "label conflicts come first: {across:?}");
    assert_eq!((across.a.as_str(), across.b.as_str()), ("data/img2.jpg", "data/img121.jpg"));
    let near = r
        .duplicates
        .iter()
        .find(|d| d.a == "data/img1.jpg" && d.b == "data/img120.jpg")
        .expect("the near-copy");
    assert!(!near.exact && !near.across_classes && near.cosine > 0.99, "{near:?}");
    let skipped = r.duplicates.iter().find(|d| d.b == "data/copy-of-7.jpg").expect("skipped");
    assert!(skipped.exact && skipped.a == "data/img7.jpg" && skipped.label_a == skipped.label_b);
    // Planted pairs only: cluster members have cosine ≈ 0.5; the "tiny" class copies images 5
    // and 6 (two more cross-class pairs).
    assert_eq!(r.duplicates.len(), 5, "{:#?}", r.duplicates);
    assert_eq!(r.skipped.len(), 1, "unreadable images only");
}

#[test]
fn finds_the_outlier_and_classes_needing_images() {
    let r = report();
    let o = r.outliers.first().expect("an outlier");
    assert_eq!(o.path, "data/img122.jpg");
    assert!(o.z < -r.thresholds.outlier_z && o.class_similarity < o.class_median, "{o:?}");
    assert!(r.outliers.len() <= 3, "{:#?}", r.outliers);
    let tiny = &r.classes_health[0];
    assert_eq!(tiny.label, "tiny");
    assert!(tiny.needs_more && tiny.reasons[0].contains("only 2 images"), "{tiny:?}");
    assert_eq!(r.classes_health.len(), 7);
}

#[test]
fn confusable_pairs_name_the_classes_that_exchange_images() {
    let r = report();
    // "tiny" holds copies of c-class images: it and their classes are the most confused.
    let p = &r.confusable_pairs[0];
    assert!(p.a == "tiny" || p.b == "tiny", "{:#?}", r.confusable_pairs);
    assert!(p.confusion > 0.1, "{p:?}");
}

#[test]
fn one_image_per_class_still_reports_duplicates() {
    let mut e = planted();
    let keep: Vec<usize> = (0..e.paths.len()).filter(|&i| [3, 4, 121, 2].contains(&i)).collect();
    let mut small = Embedded { dim: DIM, skipped: e.skipped.clone(), ..Default::default() };
    for (k, &i) in keep.iter().enumerate() {
        small.embeddings.extend_from_slice(&e.embeddings[i * DIM..(i + 1) * DIM]);
        small.labels.push(format!("class{k}"));
        small.images.push(k as u32);
        small.paths.push(e.paths[i].clone());
        small.ids.push(e.ids[i]);
    }
    e = small;
    let r = check(&e, "data", "synthetic", &CheckOptions::default()).unwrap();
    assert!(r.leave_one_out.is_none() && r.mislabelled.is_empty());
    assert!(r.duplicates.iter().any(|d| d.across_classes && d.exact));
}
