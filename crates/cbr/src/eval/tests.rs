use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn top_k_accuracy_counts_the_true_class_among_the_best() {
    let scores = vec![vec![0.9, 0.5, 0.1], vec![0.2, 0.3, 0.8], vec![0.4, 0.4, 0.1]];
    // Query 0: truth 0 rank 0. Query 1: truth 0 rank 2.
    // Query 2: truth 1 tied with 0 -> rank 1 (first max wins).
    let truths = [0, 0, 1];
    assert!(close(top_k_accuracy(&scores, &truths, 1), 1.0 / 3.0));
    assert!(close(top_k_accuracy(&scores, &truths, 2), 2.0 / 3.0));
    assert!(close(top_k_accuracy(&scores, &truths, 3), 1.0));
    assert_eq!(rank_of(&[0.4, 0.4, 0.1], 0), 0);
    assert_eq!(argmax(&[0.4, 0.4, 0.1]), 0);
}

#[test]
fn confidence_interval_uses_t_critical_values() {
    let s = Stat::of(&[0.6, 0.7, 0.8]);
    assert!(close(s.mean, 0.7));
    // sd = 0.1, n = 3, t(2) = 4.303 -> 4.303 * 0.1 / sqrt(3).
    assert!((s.ci95.unwrap() - 4.303 * 0.1 / 3f64.sqrt()).abs() < 1e-9, "{s:?}");
    assert_eq!(Stat::of(&[0.5]).ci95, None);
    assert!(close(Stat::of(&[0.5, f64::NAN, 0.7]).mean, 0.6));
    assert!(close(t_critical_95(1), 12.706) && close(t_critical_95(30), 2.042));
    assert!(
        (t_critical_95(60) - 2.000).abs() < 0.002 && (t_critical_95(1000) - 1.962).abs() < 0.002
    );
    // Identical values: no spread.
    assert_eq!(Stat::of(&[0.5, 0.5]).ci95, Some(0.0));
}

#[test]
fn auroc_counts_ties_as_half() {
    assert_eq!(auroc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
    assert_eq!(auroc(&[0.1], &[0.9]), Some(0.0));
    assert_eq!(auroc(&[0.5], &[0.5]), Some(0.5));
    // Pairs: (0.9 vs 0.5) 1, (0.9 vs 0.3) 1, (0.5 vs 0.5) 0.5, (0.5 vs 0.3) 1 -> 3.5 / 4.
    assert_eq!(auroc(&[0.9, 0.5], &[0.5, 0.3]), Some(0.875));
    assert_eq!(auroc(&[], &[0.5]), None);
}

#[test]
fn per_class_precision_recall_and_confusion() {
    let truths = [0, 0, 0, 1, 1, 2];
    let pred = [0, 0, 1, 1, 0, 1];
    let m = confusion_matrix(&truths, &pred, 3);
    assert_eq!(m, vec![vec![2, 1, 0], vec![1, 1, 0], vec![0, 1, 0]]);
    let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let pc = per_class_metrics(&m, &labels);
    assert_eq!(pc[0].precision, Some(2.0 / 3.0));
    assert_eq!(pc[0].recall, Some(2.0 / 3.0));
    assert_eq!(pc[1].precision, Some(1.0 / 3.0));
    assert_eq!(pc[1].recall, Some(0.5));
    assert_eq!(pc[2].precision, None, "never predicted");
    assert_eq!(pc[2].recall, Some(0.0));
    assert_eq!((pc[2].support, pc[1].predicted), (1, 3));
}

#[test]
fn reliability_bins_average_confidence_and_accuracy() {
    let conf = [0.05, 0.15, 0.12, 0.95, 1.0];
    let ok = [false, true, false, true, true];
    let b = reliability_bins(&conf, &ok, 10);
    assert_eq!(b.len(), 10);
    assert_eq!(b[0].count, 1);
    assert_eq!(b[1].count, 2);
    assert!((b[1].confidence.unwrap() - 0.135).abs() < 1e-6);
    assert_eq!(b[1].accuracy, Some(0.5));
    assert_eq!(b[5].count, 0);
    assert_eq!(b[5].accuracy, None);
    assert_eq!(b[9].count, 2, "1.0 falls in the last bin");
    assert!(close(b[9].lo, 0.9) && close(b[9].hi, 1.0));
}

#[test]
fn splits_are_deterministic_and_take_k_per_class() {
    // Class 0: 10 images, class 1: 3 images, class 2: 1 image.
    let classes = vec![(0..10).collect::<Vec<usize>>(), vec![10, 11, 12], vec![13]];
    let a = split(&classes, 5, 7);
    assert_eq!(a, split(&classes, 5, 7), "same seed, same split");
    assert_ne!(a, split(&classes, 5, 8), "another seed, another split");
    let count = |v: &[usize], c: &[usize]| v.iter().filter(|i| c.contains(i)).count();
    assert_eq!(count(&a.index, &classes[0]), 5);
    assert_eq!(count(&a.queries, &classes[0]), 5);
    assert_eq!(count(&a.index, &classes[1]), 2, "not more than K: all but one");
    assert_eq!(count(&a.index, &classes[2]), 1);
    let mut all: Vec<usize> = a.index.iter().chain(&a.queries).copied().collect();
    all.sort();
    assert_eq!(all, (0..14).collect::<Vec<_>>(), "a partition");
    // Smaller K is a subset of larger K for the same seed.
    let b = split(&classes, 2, 7);
    assert!(b.index.iter().all(|i| a.index.contains(i)));
    // Every class gets exactly K when it has more than K, over many seeds.
    for seed in 0..50 {
        let s = split(&classes, 3, seed);
        assert_eq!(count(&s.index, &classes[0]), 3);
    }
}

#[test]
fn unknown_classes_are_a_fifth_and_leave_two_known() {
    let u = unknown_classes(10, 0.2, 3);
    assert_eq!(u.len(), 2);
    assert_eq!(u, unknown_classes(10, 0.2, 3));
    assert!(u.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(unknown_classes(3, 0.2, 0).len(), 1);
    assert!(unknown_classes(2, 0.2, 0).is_empty());
}

#[test]
fn shuffle_is_a_permutation_and_roughly_uniform() {
    let mut hits = [0usize; 4];
    for seed in 0..4000 {
        let mut v = [0, 1, 2, 3];
        SplitMix64::stream(seed, 1).shuffle(&mut v);
        let mut s = v;
        s.sort();
        assert_eq!(s, [0, 1, 2, 3]);
        hits[v[0]] += 1;
    }
    assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
}

/// Two well-separated classes in 3-d plus a third; every configuration and
/// the detailed report run end to end on synthetic embeddings.
#[test]
fn evaluate_runs_every_configuration_on_synthetic_data() {
    let mut rng = SplitMix64::new(1);
    let centres = [[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let (mut e, mut labels, mut images) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60u32 {
        let c = (i % 3) as usize;
        for x in centres[c] {
            e.push(x + 0.3 * ((rng.next_u64() % 1000) as f32 / 1000.0 - 0.5));
        }
        labels.push(["a", "b", "c"][c].to_string());
        images.push(i);
    }
    let ds = Dataset::from_rows(e, 3, &labels, &images, Vec::new()).unwrap();
    assert_eq!(ds.class_images().iter().map(|v| v.len()).collect::<Vec<_>>(), vec![20, 20, 20]);
    let opts = EvalOptions { shots: vec![1, 5], seeds: 3, ..Default::default() };
    let r = evaluate(&ds, &opts, None, &|_| {}).unwrap();
    assert_eq!(r.len(), 2);
    for s in &r {
        // Every rule, original, and the compact dtypes.
        assert_eq!(s.configs.len(), configs("").len());
        assert_eq!(s.index_images, 3 * s.shots);
        for c in &s.configs {
            assert!(c.top1.mean > 0.9, "{} {}: {:?}", s.shots, c.name, c.top1);
            assert_eq!(c.top5.mean, 1.0);
        }
        let d = s.detail.as_ref().unwrap();
        let total: u64 = d.confusion.iter().flatten().sum();
        assert_eq!(total as usize, 3 * s.query_images);
        let os = d.open_set.as_ref().unwrap();
        assert_eq!(os.unknown_classes, 1);
        assert!(os.auroc.mean > 0.5, "{os:?}");
    }
    let d5 = r[1].detail.as_ref().unwrap();
    assert!(d5.calibration.temperature.mean.is_finite());
    assert_eq!(d5.calibration.reliability_of, "fitted");
    assert_eq!(
        d5.calibration.reliability.iter().map(|b| b.count).sum::<u64>() as usize,
        3 * r[1].query_images
    );
}

#[test]
fn base64_matches_the_standard() {
    use super::report::base64;
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
}

#[test]
fn heatmap_keeps_the_most_confused_classes() {
    let mut m = vec![vec![0u64; 5]; 5];
    m[1][3] = 5;
    m[4][0] = 2;
    m[2][2] = 100;
    assert_eq!(super::report::heatmap_classes(&m, 3), vec![0, 1, 3]);
    assert_eq!(super::report::heatmap_classes(&m, 10), vec![0, 1, 2, 3, 4]);
}
