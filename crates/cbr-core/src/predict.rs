//! A model's scores into an answer: the best classes, and the label or
//! "unknown" (the model's unknown entry, or a top-score threshold). The same
//! rule for `cbr classify`, the server, Python and the browser.

use serde::{Deserialize, Serialize};

use crate::meta::ClassifierInfo;

/// One class and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// The answer for one image: the best classes, and the label, or `None` for
/// "unknown": when the model's unknown entry is its best score, or the best
/// class scores below the unknown threshold (the model's or the caller's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The accepted label, or `None` for "unknown".
    pub label: Option<String>,
    /// The best `k` classes, best first (classes only, not the unknown entry).
    pub top: Vec<Scored>,
    /// The model's probability that the image is of none of its classes
    /// (its unknown entry; none for models without one).
    pub unknown_score: Option<f32>,
}

/// The answer of the model `info` for one row of its `scores`, as `cbr
/// classify` gives it: the model's own decision (its unknown entry, then its
/// threshold), or, when the caller gives a `threshold`, "unknown" exactly when
/// the best class scores below it.
pub fn answer(
    info: &ClassifierInfo,
    scores: &[f32],
    k: usize,
    threshold: Option<f32>,
) -> Prediction {
    let (labels, classes) = (&info.labels, info.labels.len());
    match threshold {
        Some(t) => predict_row(labels, scores, classes, k, Some(t), false),
        None => predict_row(labels, scores, classes, k, info.threshold, true),
    }
}

/// The answer for one row of `scores` whose first `classes` entries are the
/// classes (any entry after them is the unknown entry): the best class,
/// unless the best class scores below `threshold` or, with
/// `use_unknown_entry`, the unknown entry scores higher (the model's own
/// decision; a caller's threshold replaces it, `--threshold 0` answers every image).
pub fn predict_row(
    labels: &[String],
    scores: &[f32],
    classes: usize,
    k: usize,
    threshold: Option<f32>,
    use_unknown_entry: bool,
) -> Prediction {
    let (known, unknown) = scores.split_at(classes.min(scores.len()));
    let unknown_score = unknown.first().copied();
    let top = top_k(labels, known, k.max(1));
    let label = match (top.first(), threshold, unknown_score.filter(|_| use_unknown_entry)) {
        (Some(best), _, Some(u)) if u > best.score => None,
        (Some(best), Some(t), _) if best.score < t => None,
        (Some(best), _, _) => Some(best.label.clone()),
        (None, _, _) => None,
    };
    Prediction { label, top: top.into_iter().take(k).collect(), unknown_score }
}

/// The `k` best of `scores`, best first; ties keep class order. Classes
/// scored −inf (not retrieved from a sidecar index) are left out.
pub fn top_k(labels: &[String], scores: &[f32], k: usize) -> Vec<Scored> {
    let mut order: Vec<usize> =
        (0..scores.len()).filter(|&i| scores[i] > f32::NEG_INFINITY).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Scored { label: labels[i].clone(), score: scores[i] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_class() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = top_k(&labels, &[0.5, 0.9, 0.5], 3);
        let names: Vec<_> = t.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        assert_eq!(top_k(&labels, &[0.1, 0.2, 0.3], 1)[0].label, "c");
    }

    #[test]
    fn the_unknown_entry_wins_when_it_is_the_best_score() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let p = predict_row(&labels, &[0.3, 0.2, 0.5], 2, 2, None, true);
        assert_eq!((p.label, p.unknown_score, p.top.len()), (None, Some(0.5), 2));
        let p = predict_row(&labels, &[0.6, 0.1, 0.3], 2, 1, None, true);
        assert_eq!(p.label.as_deref(), Some("a"));
        // The model's threshold on the best class applies on top of it.
        assert_eq!(predict_row(&labels, &[0.6, 0.1, 0.3], 2, 1, Some(0.7), true).label, None);
        // A caller's threshold replaces the model's decision.
        let p = predict_row(&labels, &[0.3, 0.2, 0.5], 2, 1, Some(0.0), false);
        assert_eq!((p.label.as_deref(), p.unknown_score), (Some("a"), Some(0.5)));
        // Without an unknown entry, only the threshold can say unknown.
        let p = predict_row(&labels, &[0.6, 0.4], 2, 1, None, true);
        assert_eq!(p.label.as_deref(), Some("a"));
    }
}
