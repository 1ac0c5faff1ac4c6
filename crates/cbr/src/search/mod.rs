//! cbr's own retrieval search over L2-normalised f32 rows: exact top-k by
//! inner product ([`FlatIndex`]) and an approximate inverted-file index for
//! millions of rows ([`IvfIndex`], saved next to a model as a sidecar file).

pub mod flat;
pub mod ivf;
pub mod synthetic;

pub use flat::FlatIndex;
pub use ivf::{IvfIndex, IvfParams};

/// One retrieved row and its inner product with the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub row: u32,
    pub score: f32,
}

impl Hit {
    /// The result order: higher score first, then lower row (so results do
    /// not depend on how the work was split between threads).
    fn better_than(&self, other: &Hit) -> bool {
        match self.score.total_cmp(&other.score) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.row < other.row,
        }
    }
}

/// The best `k` hits seen so far, kept sorted best first (k is small, so a
/// sorted array beats a heap: most candidates fail the first comparison).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    hits: Vec<Hit>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK { k, hits: Vec::with_capacity(k + 1) }
    }

    /// The score a candidate must beat to enter (−inf until full).
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.hits.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.hits.last().map_or(f32::NEG_INFINITY, |h| h.score)
        }
    }

    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.k == 0 || hit.score < self.floor() || hit.score.is_nan() {
            return;
        }
        if self.hits.len() == self.k && !hit.better_than(self.hits.last().expect("full")) {
            return;
        }
        let at = self.hits.partition_point(|h| h.better_than(&hit));
        self.hits.insert(at, hit);
        self.hits.truncate(self.k);
    }

    /// Adds every score of `scores`, row ids starting at `first_row`.
    #[inline]
    pub fn push_scores(&mut self, scores: &[f32], first_row: u32) {
        let mut floor = self.floor();
        for (i, &s) in scores.iter().enumerate() {
            if s >= floor {
                self.push(Hit { row: first_row + i as u32, score: s });
                floor = self.floor();
            }
        }
    }

    pub fn merge(&mut self, other: TopK) {
        for h in other.hits {
            self.push(h);
        }
    }

    pub fn into_hits(self) -> Vec<Hit> {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_with_row_order_on_ties() {
        let mut t = TopK::new(3);
        t.push_scores(&[0.1, 0.5, 0.5, 0.9, -1.0, 0.5], 10);
        let rows: Vec<u32> = t.clone().into_hits().iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![13, 11, 12]);
        let mut u = TopK::new(3);
        u.push(Hit { row: 1, score: 0.5 });
        u.merge(t);
        let rows: Vec<u32> = u.into_hits().iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![13, 1, 11]);
        let mut z = TopK::new(0);
        z.push(Hit { row: 0, score: 1.0 });
        assert!(z.into_hits().is_empty());
    }
}
