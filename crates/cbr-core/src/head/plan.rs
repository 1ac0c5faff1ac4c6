//! The retrieval head as plain data: an ordered list of steps with their
//! weights, the one description every back end reads.
//!
//! ```text
//! embedding ─ Power ─ L2 ─ [Subtract mean ─ L2] ─ query ─┬─ Similarity(index rows) ─ similarities ─ ClassMax ─┐
//!                                                        ├─ Linear(centroids | discriminant) ────────────────┴─ [Average]
//!                                                        └──────────────────────────────────────▶ class_similarities ─ [Softmax] ─┐
//!   unit query (after L2) ─ Linear(class means) ─ ClassMax(one group) ─ Sigmoid ─▶ p_known ──────── [AppendUnknown] ─▶ scores
//! ```
//!
//! With an unknown entry, `scores` are `[p_known · probabilities …, 1 − p_known]`.
//!
//! Each step reads earlier steps' values (by [`ValueId`], its position in
//! [`HeadPlan::steps`]) and makes one value, `[batch, len]`. The plan is built
//! by the rules ([`crate::head::rules`]: one function per aggregation rule)
//! and read by one interpreter ([`crate::head::interpret`], for scoring,
//! evaluation, calibration and sidecar models) and one lowering per file
//! format ([`crate::head::graph`] to ONNX nodes, `crate::tflite::head` to
//! TFLite operators).
//!
//! A new aggregation rule is its own code plus the function that builds its
//! plan from these steps; the interpreter and the lowerings change only when
//! it needs a step that does not exist yet.
//!
//! The weights are borrowed from the head they describe (a plan over a
//! million-row index must not copy it).

use super::index::Index;

/// A value of the plan: the index of the step that makes it.
pub type ValueId = usize;

/// One operation of the head.
#[derive(Clone, Debug, PartialEq)]
pub enum Op<'a> {
    /// The raw embedding `[B, D]` from the embedder: the plan's input.
    Embedding,
    /// A value supplied by the caller instead of computed (a sidecar model's
    /// class similarities come from an approximate search, not from a step).
    Supplied { len: usize },
    /// `sign(x)·|x|^p`.
    Power { exponent: f32 },
    /// `x / |x|` along the last axis (a zero vector stays zero).
    L2Normalize,
    /// `x − vector` (centring on the index mean).
    Subtract { vector: &'a [f32] },
    /// Cosine similarity of the query to every index row: `[B, D] → [B, N]`.
    ///
    /// Over an int8 index the product is integer, as int8 kernels compute it:
    /// the query is quantized too (symmetric, one scale per query, see
    /// [`crate::head::interpret::quantize_query`]), each row's sum of int8
    /// products is exact, and `similarity = sum · query scale · row scale`.
    /// So the rows stay int8 in every runtime (a million rows load as 1.3 GB,
    /// not 5), at about 1% of a cosine's resolution.
    Similarity { index: &'a Index, centring: Option<Centring<'a>> },
    /// The max over each class's entries, as a few gather + reduce levels
    /// (see [`plan_max`]): `[B, N] → [B, C]`.
    ClassMax { levels: Vec<MaxLevel> },
    /// `x · weightsᵀ (+ bias)`: `[B, D] → [B, rows of weights]`.
    Linear { name: &'static str, weights: &'a [f32], bias: Option<&'a [f32]> },
    /// `(a + b) / 2` of its two inputs.
    Average,
    /// `softmax(x / temperature)` along the last axis; `-inf` entries get 0.
    Softmax { temperature: f32 },
    /// `1 / (1 + exp(−scale · (x − offset)))`, element-wise.
    Sigmoid { scale: f32, offset: f32 },
    /// `[p · x …, 1 − p]` of its inputs `x` `[B, C]` and `p` `[B, 1]`: class
    /// probabilities given "known", and the unknown entry last.
    AppendUnknown,
}

/// What [`Op::Similarity`] computes when the head centres: the rows it
/// matches are `rᵢ = (uᵢ − m)·kᵢ` (the stored unit `uᵢ`, the index mean `m`,
/// `kᵢ = 1 / |uᵢ − m|`). Both forms are carried: `rows` (computed once) and
/// `mean` + `inverse_norms`, for back ends that must keep the stored units
/// as they are and compute `q·rᵢ = (q·uᵢ − q·m)·kᵢ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Centring<'a> {
    pub mean: &'a [f32],
    pub inverse_norms: &'a [f32],
    /// Empty over an int8 index, which every back end matches in the
    /// `(q·uᵢ − q·m)·kᵢ` form (see [`Centring::centred_rows`]).
    pub rows: &'a [f32],
}

impl Centring<'_> {
    /// The centred rows `(uᵢ − m)·kᵢ` of `index`, computed.
    pub fn centred_rows(&self, index: &Index) -> Vec<f32> {
        let mut out = Vec::with_capacity(index.len() * index.dim);
        for (i, &k) in self.inverse_norms.iter().enumerate() {
            out.extend(index.row(i).iter().zip(self.mean).map(|(u, m)| (u - m) * k));
        }
        out
    }
}

/// One step: an operation on earlier values.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<'a> {
    pub op: Op<'a>,
    pub inputs: Vec<ValueId>,
    /// Length of the value per batch item.
    pub len: usize,
}

/// The head of one classifier, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadPlan<'a> {
    /// Embedding length.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// The steps, each after the values it reads.
    pub steps: Vec<Step<'a>>,
    /// The values the model exposes. `embedding` is the input.
    pub embedding: ValueId,
    /// The query as the similarity layers see it (after power, L2 and centring).
    pub query: ValueId,
    /// The query after power and L2, before centring (what novelty is measured on).
    pub unit_query: ValueId,
    /// Similarity to every index row (`None` when the plan has no index rows).
    pub similarities: Option<ValueId>,
    pub class_similarities: ValueId,
    /// The cosine of the unit query to the nearest class mean, when `scores`
    /// has an unknown entry (see [`Op::AppendUnknown`]).
    pub novelty: Option<ValueId>,
    pub scores: ValueId,
}

impl<'a> HeadPlan<'a> {
    /// A plan whose only value is the raw embedding; steps are added with [`HeadPlan::push`].
    pub fn new(dim: usize, classes: usize) -> Self {
        HeadPlan {
            dim,
            classes,
            steps: vec![Step { op: Op::Embedding, inputs: Vec::new(), len: dim }],
            embedding: 0,
            query: 0,
            unit_query: 0,
            similarities: None,
            class_similarities: 0,
            novelty: None,
            scores: 0,
        }
    }

    /// Appends a step; returns its value.
    pub fn push(&mut self, op: Op<'a>, inputs: &[ValueId]) -> ValueId {
        let len = match &op {
            Op::Embedding => self.dim,
            Op::Supplied { len } => *len,
            Op::Power { .. } | Op::L2Normalize | Op::Subtract { .. } | Op::Average => {
                self.steps[inputs[0]].len
            }
            Op::Softmax { .. } | Op::Sigmoid { .. } => self.steps[inputs[0]].len,
            Op::AppendUnknown => self.steps[inputs[0]].len + 1,
            Op::Similarity { index, .. } => index.len(),
            Op::ClassMax { levels } => levels.last().map_or(0, |l| l.groups),
            Op::Linear { weights, .. } => weights.len() / self.dim,
        };
        debug_assert!(inputs.iter().all(|&i| i < self.steps.len()), "a step reads a later value");
        self.steps.push(Step { op, inputs: inputs.to_vec(), len });
        self.steps.len() - 1
    }

    /// The query transform every head starts with: power (unless 1), L2, and
    /// with `center` minus the index mean and L2 again. Sets `unit_query`
    /// (after the first L2) and returns and sets `query`.
    pub fn push_query(&mut self, power: Option<f32>, center: Option<&'a [f32]>) -> ValueId {
        let mut x = self.embedding;
        if let Some(p) = power {
            x = self.push(Op::Power { exponent: p }, &[x]);
        }
        x = self.push(Op::L2Normalize, &[x]);
        self.unit_query = x;
        if let Some(mean) = center {
            x = self.push(Op::Subtract { vector: mean }, &[x]);
            x = self.push(Op::L2Normalize, &[x]);
        }
        self.query = x;
        x
    }

    /// The value made by the [`Op::Linear`] step called `name`, if any.
    pub fn linear(&self, name: &str) -> Option<ValueId> {
        self.steps.iter().position(|s| matches!(s.op, Op::Linear { name: n, .. } if n == name))
    }

    /// Which values are needed to compute `outputs` (by value id).
    pub fn live(&self, outputs: &[ValueId]) -> Vec<bool> {
        let mut live = vec![false; self.steps.len()];
        for &o in outputs {
            live[o] = true;
        }
        for i in (0..self.steps.len()).rev() {
            if live[i] {
                for &j in &self.steps[i].inputs {
                    live[j] = true;
                }
            }
        }
        live
    }
}

/// One level of a max aggregation: `groups` outputs, each the max over
/// `width` inputs picked by `index` (row-major `[groups, width]`), or a plain
/// reshape when `index` is `None` (inputs already laid out in order).
#[derive(Clone, Debug, PartialEq)]
pub struct MaxLevel {
    pub groups: usize,
    pub width: usize,
    pub index: Option<Vec<i64>>,
}

/// Plans a max over groups of inputs (each group non-empty) as a few padded
/// gather + reduce levels, each at most about twice the number of inputs.
///
/// The operation count is then independent of the number of groups: gather
/// the inputs into a `[B, groups, width]` block padded with repeats of a
/// group's own members (a repeat cannot change a maximum), then reduce. When
/// group sizes are very uneven one wide block would waste memory, so big
/// groups are split into chunks first and the max is taken in a few levels;
/// the number of levels grows with log(largest group / mean group), never
/// with the number of groups.
pub fn plan_max(mut groups: Vec<Vec<u32>>) -> Vec<MaxLevel> {
    let inputs: usize = groups.iter().map(|g| g.len()).sum();
    let budget = 2 * inputs;
    let mut levels = Vec::new();
    loop {
        let total: usize = groups.iter().map(|g| g.len()).sum();
        let widest = groups.iter().map(|g| g.len()).max().unwrap_or(1);
        if widest <= 2 || widest * groups.len() <= budget {
            levels.push(padded_level(&groups, widest, total));
            return levels;
        }
        // Split groups into chunks of the widest size that keeps this level
        // within budget; the next level takes the max over each group's chunks.
        let padded = |w: usize| groups.iter().map(|g| g.len().div_ceil(w) * w).sum::<usize>();
        let mut width = 2;
        let mut w = widest;
        while w > 2 {
            if padded(w) <= budget {
                width = w;
                break;
            }
            w = w * 4 / 5;
        }
        let mut chunks = Vec::new();
        let mut next = Vec::with_capacity(groups.len());
        for g in &groups {
            let mut ids = Vec::new();
            for c in g.chunks(width) {
                ids.push(chunks.len() as u32);
                chunks.push(c.to_vec());
            }
            next.push(ids);
        }
        levels.push(padded_level(&chunks, width, total));
        groups = next;
    }
}

fn padded_level(groups: &[Vec<u32>], width: usize, total: usize) -> MaxLevel {
    let mut index = Vec::with_capacity(groups.len() * width);
    for g in groups {
        for k in 0..width {
            // Pad with the group's own first member: a repeat cannot change a max.
            index.push(*g.get(k).unwrap_or(&g[0]) as i64);
        }
    }
    let identity = index.len() == total && index.iter().enumerate().all(|(i, &v)| i as i64 == v);
    MaxLevel { groups: groups.len(), width, index: if identity { None } else { Some(index) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_levels(levels: &[MaxLevel], input: &[f32]) -> Vec<f32> {
        let mut x = input.to_vec();
        for l in levels {
            let picked: Vec<f32> = match &l.index {
                Some(ix) => ix.iter().map(|&i| x[i as usize]).collect(),
                None => x.clone(),
            };
            assert_eq!(picked.len(), l.groups * l.width);
            x = picked
                .chunks(l.width)
                .map(|c| c.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
                .collect();
        }
        x
    }

    #[test]
    fn plan_max_equal_groups_is_a_plain_reshape() {
        let groups: Vec<Vec<u32>> = (0..4).map(|c| (c * 3..c * 3 + 3).collect()).collect();
        let levels = plan_max(groups);
        assert_eq!(levels, vec![MaxLevel { groups: 4, width: 3, index: None }]);
    }

    #[test]
    fn plan_max_skewed_groups_matches_direct_max_with_bounded_padding() {
        // One class of 1000 images among 200 classes of 2: a single padded
        // level would be 201 x 1000; the plan must stay small and exact.
        let mut groups = vec![(0..1000).collect::<Vec<u32>>()];
        let mut next = 1000;
        for _ in 0..200 {
            groups.push(vec![next, next + 1]);
            next += 2;
        }
        let input: Vec<f32> = (0..next).map(|i| ((i * 7919) % 1013) as f32).collect();
        let levels = plan_max(groups.clone());
        assert!(levels.len() >= 2 && levels.len() <= 4, "{} levels", levels.len());
        for l in &levels {
            assert!(
                l.groups * l.width <= 2 * next as usize,
                "level too big: {} x {}",
                l.groups,
                l.width
            );
        }
        let expect: Vec<f32> = groups
            .iter()
            .map(|g| g.iter().map(|&i| input[i as usize]).fold(f32::NEG_INFINITY, f32::max))
            .collect();
        assert_eq!(eval_levels(&levels, &input), expect);
    }
}
