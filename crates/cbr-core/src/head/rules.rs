//! The aggregation rules as plans: one function per rule builds its part of
//! a head's [`HeadPlan`] (how the query becomes one similarity per class);
//! [`plan`] adds what every head shares (the query transform, the
//! similarities output and the softmax).

use super::discriminant::Discriminant;
use super::plan::{plan_max, HeadPlan, Op, ValueId};
use super::{Aggregation, RetrievalHead};

/// Name of the [`Op::Linear`] step holding the class centroids.
pub const CENTROIDS: &str = "class_centroids";

/// The plan of `head`: what its model file and [`RetrievalHead::scores`] compute.
pub fn plan(head: &RetrievalHead) -> HeadPlan<'_> {
    let mut p = HeadPlan::new(head.dim, head.labels.len());
    let query = p.push_query(head.power, head.center.as_deref());
    // Every model exposes the similarity to each index row.
    let similarities =
        p.push(Op::Similarity { index: &head.index, centring: head.centring() }, &[query]);
    p.similarities = Some(similarities);
    let class = match head.aggregation {
        Aggregation::Max => max(head, &mut p, similarities),
        Aggregation::Centroid => centroid(head, &mut p, query),
        Aggregation::Blend => {
            let m = max(head, &mut p, similarities);
            let c = centroid(head, &mut p, query);
            p.push(Op::Average, &[m, c])
        }
        Aggregation::Discriminant => {
            let d = head.discriminant.as_ref().expect("discriminant heads have one");
            discriminant(d, &mut p, query)
        }
    };
    p.class_similarities = class;
    p.scores = match head.temperature {
        Some(t) => p.push(Op::Softmax { temperature: t }, &[class]),
        None => class,
    };
    if let (Some(n), Some(_)) = (&head.novelty, head.temperature) {
        // "Is this one of my classes?" apart from "which one?": the unit
        // query's cosine to the nearest class mean, uncentred (centring
        // removes the direction every in-domain image shares, which is what
        // tells a photo of something else apart).
        let probabilities = p.scores;
        let means = p.push(
            Op::Linear { name: CLASS_MEANS, weights: &head.class_means, bias: None },
            &[p.unit_query],
        );
        let all: Vec<u32> = (0..head.labels.len() as u32).collect();
        let nearest = p.push(Op::ClassMax { levels: plan_max(vec![all]) }, &[means]);
        p.novelty = Some(nearest);
        let known = p.push(Op::Sigmoid { scale: n.scale, offset: n.offset }, &[nearest]);
        p.scores = p.push(Op::AppendUnknown, &[probabilities, known]);
    }
    p
}

/// Name of the [`Op::Linear`] step holding the normalised uncentred class means.
pub const CLASS_MEANS: &str = "class_means";

/// `max`: a class's best-matching index row.
fn max<'a>(head: &RetrievalHead, p: &mut HeadPlan<'a>, similarities: ValueId) -> ValueId {
    p.push(Op::ClassMax { levels: plan_max(head.groups()) }, &[similarities])
}

/// `centroid`: cosine to the normalised mean of the class's rows.
fn centroid<'a>(head: &'a RetrievalHead, p: &mut HeadPlan<'a>, query: ValueId) -> ValueId {
    p.push(Op::Linear { name: CENTROIDS, weights: &head.centroids, bias: None }, &[query])
}

/// `discriminant`: the linear discriminant's weights and bias.
fn discriminant<'a>(d: &'a Discriminant, p: &mut HeadPlan<'a>, query: ValueId) -> ValueId {
    p.push(Op::Linear { name: DISCRIMINANT, weights: &d.weights, bias: Some(&d.bias) }, &[query])
}

/// Name of the [`Op::Linear`] step holding the discriminant.
pub const DISCRIMINANT: &str = "discriminant";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadOptions;

    fn kinds(p: &HeadPlan) -> Vec<&'static str> {
        p.steps
            .iter()
            .map(|s| match s.op {
                Op::Embedding => "embedding",
                Op::Supplied { .. } => "supplied",
                Op::Power { .. } => "power",
                Op::L2Normalize => "l2",
                Op::Subtract { .. } => "subtract",
                Op::Similarity { .. } => "similarity",
                Op::ClassMax { .. } => "class-max",
                Op::Linear { .. } => "linear",
                Op::Average => "average",
                Op::Softmax { .. } => "softmax",
                Op::Sigmoid { .. } => "sigmoid",
                Op::AppendUnknown => "append-unknown",
            })
            .collect()
    }

    #[test]
    fn each_rule_builds_its_own_steps_after_the_shared_query_transform() {
        let emb: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let labels: Vec<String> = (0..6).map(|i| format!("c{}", i % 2)).collect();
        let query = ["embedding", "power", "l2", "subtract", "l2", "similarity"];
        for (aggregation, rule) in [
            (Aggregation::Max, &["class-max"][..]),
            (Aggregation::Centroid, &["linear"][..]),
            (Aggregation::Blend, &["class-max", "linear", "average"][..]),
            (Aggregation::Discriminant, &["linear"][..]),
        ] {
            let opts = HeadOptions { aggregation, known_target: None, ..HeadOptions::default() };
            let head = RetrievalHead::new(&emb, 4, &labels, &opts).unwrap();
            let p = plan(&head);
            let want: Vec<&str> = query.iter().chain(rule).copied().chain(["softmax"]).collect();
            assert_eq!(kinds(&p), want, "{aggregation}");
            assert_eq!(p.query, 4);
            assert_eq!(p.similarities, Some(5));
            assert_eq!(p.scores, p.steps.len() - 1);
            assert_eq!(p.class_similarities, p.steps.len() - 2);
            assert_eq!(p.steps[p.scores].len, 2);
            // Only max and blend need the similarity to every index row.
            let live = p.live(&[p.scores]);
            assert_eq!(live[5], matches!(aggregation, Aggregation::Max | Aggregation::Blend));
        }
        let head = RetrievalHead::new(&emb, 4, &labels, &HeadOptions::original()).unwrap();
        assert_eq!(kinds(&plan(&head)), ["embedding", "l2", "similarity", "class-max"]);
    }

    #[test]
    fn the_unknown_entry_follows_the_softmax_and_reads_the_uncentred_query() {
        let emb: Vec<f32> = (0..48).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0 + 0.1).collect();
        let labels: Vec<String> = (0..12).map(|i| format!("c{}", i % 3)).collect();
        let head = RetrievalHead::new(&emb, 4, &labels, &HeadOptions::default()).unwrap();
        let n = head.novelty.as_ref().expect("the default head has an unknown entry");
        assert_eq!(n.source, "leave-one-out");
        let p = plan(&head);
        let k = kinds(&p);
        assert_eq!(
            &k[k.len() - 5..],
            ["softmax", "linear", "class-max", "sigmoid", "append-unknown"]
        );
        // The class means are matched by the query before centring (after the first L2).
        assert_eq!(p.unit_query, 2);
        let means = p.linear(CLASS_MEANS).unwrap();
        assert_eq!(p.steps[means].inputs, vec![p.unit_query]);
        assert_eq!(p.novelty, Some(means + 1));
        assert_eq!(p.steps[p.scores].len, 4);
        // Scores: probabilities summing to 1, the unknown entry last.
        for q in emb.chunks_exact(4).chain([&[9.0, -3.0, 0.5, 0.0][..]]) {
            let s = head.scores(q);
            assert_eq!(s.len(), 4);
            assert!(s.iter().all(|&v| (0.0..=1.0).contains(&v)), "{s:?}");
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{s:?}");
        }
        // Without calibration there is no probability to split: no unknown entry.
        let opts = HeadOptions { calibrate: false, ..HeadOptions::default() };
        let head = RetrievalHead::new(&emb, 4, &labels, &opts).unwrap();
        assert!(head.novelty.is_none() && plan(&head).novelty.is_none());
    }
}
