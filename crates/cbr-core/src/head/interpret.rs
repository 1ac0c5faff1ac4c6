//! The one Rust interpreter of a [`HeadPlan`]: what `RetrievalHead::scores`,
//! evaluation, calibration (leave-one-out) and sidecar models compute, and
//! what the ONNX and TFLite lowerings are tested against.
//!
//! It evaluates one query at a time and only the steps the asked value
//! needs. A caller may set a value instead of computing it (leave-one-out
//! sets the query and its corrected class scores; a sidecar model sets the
//! class similarities its search found) and may leave index rows out of the
//! similarities (leave-one-out's exclusions).

use super::plan::{Centring, HeadPlan, Op, ValueId};
use super::{l2_normalize, power_transform, softmax, Index, IndexDtype};
use crate::kernels::{dot, dot_i8};

/// The values of one query's evaluation, computed on demand.
pub struct Evaluation<'p, 'a> {
    plan: &'p HeadPlan<'a>,
    values: Vec<Option<Vec<f32>>>,
    /// Index rows whose similarity is `-inf` (they match nothing).
    excluded_rows: &'p [usize],
}

impl<'p, 'a> Evaluation<'p, 'a> {
    /// An evaluation of `plan` for the raw embedding `embedding`.
    pub fn new(plan: &'p HeadPlan<'a>, embedding: &[f32]) -> Self {
        let mut e = Self::empty(plan);
        e.set(plan.embedding, embedding.to_vec());
        e
    }

    /// An evaluation with no value set yet: set the values to start from.
    pub fn empty(plan: &'p HeadPlan<'a>) -> Self {
        Evaluation { plan, values: vec![None; plan.steps.len()], excluded_rows: &[] }
    }

    /// Leaves index rows `rows` out of every similarity (as if absent from the index).
    pub fn excluding_rows(mut self, rows: &'p [usize]) -> Self {
        self.excluded_rows = rows;
        self
    }

    /// Sets value `v` instead of computing it.
    pub fn set(&mut self, v: ValueId, value: Vec<f32>) {
        debug_assert_eq!(value.len(), self.plan.steps[v].len, "value {v} has the wrong length");
        self.values[v] = Some(value);
    }

    /// Value `v`, computing it and what it needs (once).
    pub fn value(&mut self, v: ValueId) -> &[f32] {
        // Which steps are needed: walk back from `v`, stopping at known values.
        let mut needed = vec![false; v + 1];
        needed[v] = true;
        for i in (0..=v).rev() {
            if needed[i] && self.values[i].is_none() {
                for &j in &self.plan.steps[i].inputs {
                    needed[j] = true;
                }
            }
        }
        for (i, needed) in needed.into_iter().enumerate() {
            if needed && self.values[i].is_none() {
                let x = self.compute(i);
                self.values[i] = Some(x);
            }
        }
        self.values[v].as_deref().expect("computed above")
    }

    fn input(&self, step: ValueId, k: usize) -> &[f32] {
        let v = self.plan.steps[step].inputs[k];
        self.values[v].as_deref().expect("inputs are computed first")
    }

    fn compute(&self, i: ValueId) -> Vec<f32> {
        let dim = self.plan.dim;
        match &self.plan.steps[i].op {
            Op::Embedding | Op::Supplied { .. } => {
                panic!("value {i} ({:?}) is an input: set it first", self.plan.steps[i].op)
            }
            Op::Power { exponent } => {
                let mut x = self.input(i, 0).to_vec();
                power_transform(&mut x, *exponent);
                x
            }
            Op::L2Normalize => {
                let mut x = self.input(i, 0).to_vec();
                l2_normalize(&mut x);
                x
            }
            Op::Subtract { vector } => {
                self.input(i, 0).iter().zip(vector.iter()).map(|(x, m)| x - m).collect()
            }
            Op::Similarity { index, centring } => {
                let q = self.input(i, 0);
                let mut s = if index.dtype == IndexDtype::Int8 {
                    similarities_int8(index, centring.as_ref(), q)
                } else {
                    // The centred rows, computed once, rather than (q·u − q·m)·k:
                    // the same up to the last bits, and one dot product per row.
                    let units;
                    let rows = match centring {
                        Some(c) => c.rows,
                        None => {
                            units = index.units();
                            &units[..]
                        }
                    };
                    rows.chunks_exact(dim).map(|r| dot(r, q)).collect()
                };
                for &r in self.excluded_rows {
                    s[r] = f32::NEG_INFINITY;
                }
                s
            }
            Op::ClassMax { levels } => {
                let mut x = self.input(i, 0).to_vec();
                for l in levels {
                    let pick = |k: usize| match &l.index {
                        Some(ix) => x[ix[k] as usize],
                        None => x[k],
                    };
                    x = (0..l.groups)
                        .map(|g| {
                            (g * l.width..(g + 1) * l.width)
                                .map(pick)
                                .fold(f32::NEG_INFINITY, f32::max)
                        })
                        .collect();
                }
                x
            }
            Op::Linear { weights, bias, .. } => {
                let q = self.input(i, 0);
                match bias {
                    Some(b) => {
                        weights.chunks_exact(dim).zip(*b).map(|(w, b)| dot(w, q) + b).collect()
                    }
                    None => weights.chunks_exact(dim).map(|w| dot(w, q)).collect(),
                }
            }
            Op::Average => {
                self.input(i, 0).iter().zip(self.input(i, 1)).map(|(a, b)| 0.5 * (a + b)).collect()
            }
            Op::Softmax { temperature } => softmax(self.input(i, 0), *temperature),
            Op::Sigmoid { scale, offset } => {
                self.input(i, 0).iter().map(|&x| sigmoid(scale * (x - offset))).collect()
            }
            Op::AppendUnknown => {
                let known = self.input(i, 1)[0];
                let mut x: Vec<f32> = self.input(i, 0).iter().map(|p| p * known).collect();
                x.push(1.0 - known);
                x
            }
        }
    }
}

/// The query as an int8 similarity reads it: symmetric int8 with one scale,
/// `max |q| / 127` (at least the smallest normal f32, so a zero query stays
/// zero), values `q / scale` rounded half to even, as ONNX `Round` does.
/// Returns the values and the scale.
pub fn quantize_query(q: &[f32]) -> (Vec<i8>, f32) {
    let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = (max / 127.0).max(f32::MIN_POSITIVE);
    let values =
        q.iter().map(|&x| (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8).collect();
    (values, scale)
}

/// [`Op::Similarity`] over an int8 index: the quantized query's exact
/// integer products with the stored rows, times both scales; a centring head
/// then subtracts the query's product with the mean and rescales,
/// `(q·uᵢ − q·m)·kᵢ`, as the ONNX lowering does.
fn similarities_int8(index: &Index, centring: Option<&Centring>, q: &[f32]) -> Vec<f32> {
    let (values, scale) = quantize_query(q);
    let query_dot_mean = centring.map(|c| dot(q, c.mean));
    (0..index.len())
        .map(|r| {
            let s = dot_i8(index.int8_row(r), &values) as f32 * scale * index.scales[r];
            match (centring, query_dot_mean) {
                (Some(c), Some(qm)) => (s - qm) * c.inverse_norms[r],
                _ => s,
            }
        })
        .collect()
}

/// `1 / (1 + e^−x)`, without overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

/// Value `output` of `plan` for the raw embedding `embedding`.
pub fn evaluate(plan: &HeadPlan, embedding: &[f32], output: ValueId) -> Vec<f32> {
    Evaluation::new(plan, embedding).value(output).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{HeadOptions, IndexDtype, RetrievalHead};

    #[test]
    fn excluded_rows_match_nothing_and_set_values_are_not_recomputed() {
        // Class a: (1,0); class b: (0,1) and (0.6,0.8).
        let labels: Vec<String> = ["a", "b", "b"].iter().map(|s| s.to_string()).collect();
        let head = RetrievalHead::new(
            &[1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
            2,
            &labels,
            &HeadOptions::original(),
        )
        .unwrap();
        let plan = head.plan();
        assert_eq!(evaluate(&plan, &[0.0, 2.0], plan.scores), vec![0.0, 1.0]);
        // Without b's (0,1) row, b's best is (0.6,0.8); without a's only row, a is -inf.
        let excluded = [0, 1];
        let mut e = Evaluation::new(&plan, &[0.0, 2.0]).excluding_rows(&excluded);
        let s = e.value(plan.scores);
        assert!(s[0] == f32::NEG_INFINITY && (s[1] - 0.8).abs() < 1e-6, "{s:?}");
        // A set query is used as it is (not normalised again).
        let mut e = Evaluation::empty(&plan);
        e.set(plan.query, vec![0.0, 2.0]);
        assert_eq!(e.value(plan.class_similarities), &[0.0, 2.0]);
    }

    #[test]
    fn the_query_is_quantized_symmetrically_with_ties_to_even() {
        let (v, s) = quantize_query(&[1.0, -0.25, 0.0, 2.5 / 127.0]);
        assert_eq!(s, 1.0 / 127.0);
        // -0.25·127 = -31.75 → -32; 2.5 → 2 (half to even, as ONNX Round).
        assert_eq!(v, vec![127, -32, 0, 2]);
        let (v, s) = quantize_query(&[0.0; 3]);
        assert_eq!((v, s), (vec![0; 3], f32::MIN_POSITIVE));
    }

    #[test]
    fn int8_similarities_are_exact_integer_products_near_the_float_ones() {
        let dim = 64;
        let rows: Vec<f32> =
            (0..40 * dim).map(|i| ((i * 7919 % 1013) as f32 / 506.0) - 1.0).collect();
        let labels: Vec<String> = (0..40).map(|i| format!("c{}", i % 4)).collect();
        let query: Vec<f32> = (0..dim).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        for center in [false, true] {
            let opts = |index_dtype| HeadOptions { index_dtype, center, ..HeadOptions::original() };
            let int8 = RetrievalHead::new(&rows, dim, &labels, &opts(IndexDtype::Int8)).unwrap();
            let f32s = RetrievalHead::new(&rows, dim, &labels, &opts(IndexDtype::F32)).unwrap();
            let got = int8.similarities(&query);
            let q = int8.project(&query);
            let (qv, qs) = quantize_query(&q);
            let qm = int8.center.as_ref().map(|m| dot(&q, m));
            for (r, &g) in got.iter().enumerate() {
                let products =
                    dot_i8(int8.index.int8_row(r), &qv) as f32 * qs * int8.index.scales[r];
                let want = match qm {
                    Some(qm) => (products - qm) * int8.inverse_norms[r],
                    None => products,
                };
                assert_eq!(g, want, "row {r}, center {center}");
            }
            // Both roundings together move a cosine by well under 1% of its range.
            let float = f32s.similarities(&query);
            let worst = got.iter().zip(&float).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 0.01, "center {center}: int8 differs from f32 by {worst}");
        }
    }
}
