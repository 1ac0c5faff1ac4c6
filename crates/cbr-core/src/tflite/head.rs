//! The TFLite lowering of a [`HeadPlan`]: the retrieval head as TFLite
//! operators appended to an embedder's subgraph. It computes the plan's
//! `scores` (the one output of a TFLite classifier), step for step as the
//! ONNX lowering and the Rust interpreter do, so the numbers agree.
//!
//! ```text
//! embedding ─ [DEQUANTIZE] ─ [RESHAPE to [B, D]] ─ [ABS, SQRT|POW, SIGN, MUL] ─ L2_NORMALIZATION
//!   ─ [SUB mean, L2_NORMALIZATION] ─ similarity layer(s) ─ aggregation ─ [SOFTMAX β = 1/τ] ─▶ scores [B, C]
//! ```
//!
//! A similarity layer ([`Op::Similarity`], [`Op::Linear`]) is a
//! FULLY_CONNECTED. A TFLite classifier keeps no editable index, so a
//! centring head matches the centred rows directly (one layer, and int8
//! quantizes them better than the raw units). With [`TfliteBlock::Int8`]
//! each layer runs in int8 as the original CBR does: QUANTIZE the normalised
//! query (scale 1/128) → int8 FULLY_CONNECTED → DEQUANTIZE.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{bail, Result};

use super::edit::ModelEditor;
use super::schema::model::{
    BuiltinOperator as Op_, BuiltinOptionsT as Opt, ConcatenationOptionsT, GatherOptionsT,
    QuantizationParametersT, ReducerOptionsT, ReshapeOptionsT, SoftmaxOptionsT, TensorType,
};
use crate::head::plan::{Centring, HeadPlan, Op, Step};
use crate::head::rules::CLASS_MEANS;
use crate::head::{Index, IndexDtype, MaxLevel, RetrievalHead, SCORES};

/// How the similarity layers of the head are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TfliteBlock {
    /// float32 weights and arithmetic: the same scores as cbr's ONNX head.
    #[default]
    Float,
    /// int8 weights (4x smaller) and int8 FULLY_CONNECTED, as the original CBR
    /// emits for quantized embedders; scores are within a few 1e-2 of float.
    Int8,
}

impl std::str::FromStr for TfliteBlock {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float" => Ok(TfliteBlock::Float),
            "int8" => Ok(TfliteBlock::Int8),
            _ => bail!("unknown TFLite block {s:?}: use float or int8"),
        }
    }
}

/// The query's int8 quantization: a unit vector's entries lie in [-1, 1].
pub const QUERY_SCALE: f32 = 1.0 / 128.0;

/// Appends `head` after tensor `embedding` of subgraph 0; returns the index of `scores`.
pub fn append(
    ed: &mut ModelEditor,
    embedding: i32,
    head: &RetrievalHead,
    block: TfliteBlock,
) -> Result<i32> {
    lower(ed, embedding, &head.plan(), block)
}

/// Appends the steps of `plan` that its `scores` need after tensor
/// `embedding` of subgraph 0; returns the index of the `scores` tensor.
pub fn lower(
    ed: &mut ModelEditor,
    embedding: i32,
    plan: &HeadPlan,
    block: TfliteBlock,
) -> Result<i32> {
    if plan.scores == plan.embedding {
        bail!("the plan's scores are its input: there is no head to append");
    }
    let (x, b) = float_embedding(ed, embedding, plan.dim)?;
    let mut l = Lowering {
        plan,
        block,
        b,
        d: plan.dim as i32,
        // The index rows as the query meets them: int8 layers size their output
        // range on them (they are what queries look like).
        sample_queries: plan.steps.iter().find_map(|s| match &s.op {
            Op::Similarity { index, centring } => Some(similarity_rows(index, centring)),
            _ => None,
        }),
        tensors: vec![-1i32; plan.steps.len()],
        quantized: vec![None; plan.steps.len()],
        used: HashMap::new(),
    };
    l.tensors[plan.embedding] = x;
    let live = plan.live(&[plan.scores]);
    for (i, step) in plan.steps.iter().enumerate() {
        if i == plan.embedding || !live[i] {
            continue;
        }
        let base = l.base_name(i, &step.op)?;
        let name = if i == plan.scores { SCORES.to_string() } else { base.clone() };
        l.tensors[i] = l.step(ed, step, &base, &name)?;
    }
    Ok(l.tensors[plan.scores])
}

/// The embedder's output as a float `[B, dim]` tensor (dequantized and
/// flattened when it is not one), and the batch dimension of the head's
/// tensors (-1, resizable, when the embedder's is or is 1).
fn float_embedding(ed: &mut ModelEditor, embedding: i32, dim: usize) -> Result<(i32, i32)> {
    let emb = ed.tensors()[embedding as usize].clone();
    let shape = emb.shape.clone().unwrap_or_default();
    if shape.is_empty() {
        bail!("the embedding output has no shape");
    }
    let batch = shape[0];
    let values: i64 = shape[1..].iter().map(|&d| d as i64).product();
    if values != dim as i64 {
        bail!("the embedder's output {:?} has shape {shape:?}: {values} values per image, but the index embeddings have {dim}", emb.name.unwrap_or_default());
    }
    // The batch is resizable when the embedder's is, or when it is 1 (as in most TFLite files).
    let b = if batch == 1 || emb.shape_signature.as_ref().is_some_and(|s| s.first() == Some(&-1)) {
        -1
    } else {
        batch
    };
    let mut x = embedding;
    match emb.type_ {
        TensorType::FLOAT32 => {}
        TensorType::UINT8 | TensorType::INT8 => {
            let y = ed.activation("cbr/embedding_dequantized", TensorType::FLOAT32, &shape, None);
            // DEQUANTIZE v1 takes uint8, v2 int8.
            let version = if emb.type_ == TensorType::INT8 { 2 } else { 1 };
            ed.op(Op_::DEQUANTIZE, version, &[x], &[y], Opt::NONE);
            x = y;
        }
        t => bail!("the embedding output is {t:?}; cbr reads float32, uint8 or int8 embeddings"),
    }
    if shape.len() != 2 {
        let new_shape = [b, dim as i32];
        let s = ed.const_i32("cbr/embedding_shape", &[2], &new_shape);
        let y = ed.activation("cbr/embedding", TensorType::FLOAT32, &new_shape, None);
        let options = build!(ReshapeOptionsT { new_shape: Some(new_shape.to_vec()) });
        ed.op(Op_::RESHAPE, 1, &[x, s], &[y], Opt::ReshapeOptions(Box::new(options)));
        x = y;
    }
    Ok((x, b))
}

/// The state of one lowering: the tensor of each step done so far, the
/// quantized copies of layer inputs (made once each), the names used.
struct Lowering<'p, 'a> {
    plan: &'p HeadPlan<'a>,
    block: TfliteBlock,
    /// The batch dimension (-1: resizable) and the embedding length.
    b: i32,
    d: i32,
    sample_queries: Option<Cow<'p, [f32]>>,
    tensors: Vec<i32>,
    quantized: Vec<Option<i32>>,
    used: HashMap<String, usize>,
}

impl Lowering<'_, '_> {
    /// The tensor name of step `i`: its kind's, `_2`, `_3`, … for a second and third of a kind.
    fn base_name(&mut self, i: usize, op: &Op) -> Result<String> {
        let base = match op {
            Op::Embedding | Op::Supplied { .. } => {
                bail!("step {i} ({op:?}) has no TFLite form: the plan must compute it")
            }
            _ if i == self.plan.query => "cbr/query".to_string(),
            _ if Some(i) == self.plan.novelty => "cbr/nearest_class_mean".to_string(),
            Op::Power { .. } => "cbr/embedding_power".to_string(),
            Op::L2Normalize => "cbr/embedding_l2".to_string(),
            Op::Subtract { .. } => "cbr/embedding_centered".to_string(),
            Op::Similarity { .. } => "cbr/similarities".to_string(),
            Op::ClassMax { .. } => "cbr/max".to_string(),
            Op::Linear { name, .. } => format!("cbr/{name}"),
            Op::Average => "cbr/average".to_string(),
            Op::Softmax { .. } => "cbr/softmax".to_string(),
            Op::Sigmoid { .. } => "cbr/known".to_string(),
            Op::AppendUnknown => "cbr/with_unknown".to_string(),
        };
        let n = self.used.entry(base.clone()).or_insert(0);
        *n += 1;
        Ok(if *n == 1 { base } else { format!("{base}_{n}") })
    }

    /// The operators of one step, named `name` (its helpers `base_…`); returns its output tensor.
    fn step(&mut self, ed: &mut ModelEditor, step: &Step, base: &str, name: &str) -> Result<i32> {
        let shape = [self.b, step.len as i32];
        let x = self.tensors[step.inputs[0]];
        let float = |ed: &mut ModelEditor, name: &str| {
            ed.activation(name, TensorType::FLOAT32, &shape, None)
        };
        Ok(match &step.op {
            Op::Embedding | Op::Supplied { .. } => unreachable!("refused by base_name"),
            Op::Power { exponent } => {
                // sign(x) * |x|^p, as in the ONNX head.
                let abs = float(ed, &format!("{base}_abs"));
                ed.op(Op_::ABS, 1, &[x], &[abs], Opt::NONE);
                let pow = float(ed, &format!("{base}_pow"));
                if *exponent == 0.5 {
                    ed.op(Op_::SQRT, 1, &[abs], &[pow], Opt::NONE);
                } else {
                    let e = ed.const_f32(&format!("{base}_exponent"), &[], &[*exponent]);
                    ed.op(Op_::POW, 1, &[abs, e], &[pow], Opt::NONE);
                }
                let sign = float(ed, &format!("{base}_sign"));
                ed.op(Op_::SIGN, 1, &[x], &[sign], Opt::NONE);
                let y = float(ed, name);
                ed.op(Op_::MUL, 1, &[pow, sign], &[y], Opt::MulOptions(Box::default()));
                y
            }
            Op::L2Normalize => {
                let y = float(ed, name);
                ed.op(Op_::L2_NORMALIZATION, 1, &[x], &[y], Opt::L2NormOptions(Box::default()));
                y
            }
            Op::Subtract { vector } => {
                let m = ed.const_f32(&format!("{base}_mean"), &[vector.len() as i32], vector);
                let y = float(ed, name);
                ed.op(Op_::SUB, 1, &[x, m], &[y], Opt::SubOptions(Box::default()));
                y
            }
            Op::Similarity { .. } | Op::Linear { .. } => self.matmul(ed, step, name, shape)?,
            Op::ClassMax { levels } => {
                let mut input = x;
                for (l, level) in levels.iter().enumerate() {
                    let prefix = format!("{base}{l}");
                    let out = if l + 1 == levels.len() { name.to_string() } else { prefix.clone() };
                    input = max_level(ed, level, input, &prefix, &out, self.b);
                }
                input
            }
            Op::Average => {
                let sum = float(ed, &format!("{base}_sum"));
                let inputs = [self.tensors[step.inputs[0]], self.tensors[step.inputs[1]]];
                ed.op(Op_::ADD, 1, &inputs, &[sum], Opt::AddOptions(Box::default()));
                let half = ed.const_f32(&format!("{base}_half"), &[], &[0.5]);
                let y = float(ed, name);
                ed.op(Op_::MUL, 1, &[sum, half], &[y], Opt::MulOptions(Box::default()));
                y
            }
            Op::Softmax { temperature } => {
                let y = float(ed, name);
                // softmax(x / τ) = softmax with β = 1/τ.
                let options = build!(SoftmaxOptionsT { beta: 1.0 / temperature });
                ed.op(Op_::SOFTMAX, 1, &[x], &[y], Opt::SoftmaxOptions(Box::new(options)));
                y
            }
            Op::Sigmoid { scale, offset } => {
                let b = ed.const_f32(&format!("{base}_offset"), &[], &[*offset]);
                let shifted = float(ed, &format!("{base}_shifted"));
                ed.op(Op_::SUB, 1, &[x, b], &[shifted], Opt::SubOptions(Box::default()));
                let a = ed.const_f32(&format!("{base}_scale"), &[], &[*scale]);
                let logit = float(ed, &format!("{base}_logit"));
                ed.op(Op_::MUL, 1, &[shifted, a], &[logit], Opt::MulOptions(Box::default()));
                let y = float(ed, name);
                ed.op(Op_::LOGISTIC, 1, &[logit], &[y], Opt::NONE);
                y
            }
            Op::AppendUnknown => {
                let p = self.tensors[step.inputs[1]];
                append_unknown(ed, x, p, step.len as i32 - 1, self.b, base, name)
            }
        })
    }

    /// A similarity or linear layer, float or int8 as the block says (the
    /// novelty layer stays float: it is small, one row per class, and its
    /// cosines decide "unknown" near a threshold).
    fn matmul(
        &mut self,
        ed: &mut ModelEditor,
        step: &Step,
        name: &str,
        shape: [i32; 2],
    ) -> Result<i32> {
        let x = self.tensors[step.inputs[0]];
        let (weights, bias) = match &step.op {
            Op::Similarity { index, centring } => (similarity_rows(index, centring), None),
            Op::Linear { weights, bias, .. } => (Cow::Borrowed(*weights), *bias),
            _ => unreachable!("called for similarity and linear steps"),
        };
        let block = match &step.op {
            Op::Linear { name: CLASS_MEANS, .. } => TfliteBlock::Float,
            _ => self.block,
        };
        let d = self.d;
        if block == TfliteBlock::Float {
            return Ok(similarity_float(ed, name, x, &weights, bias, shape, d));
        }
        let input = step.inputs[0];
        let q = match self.quantized[input] {
            Some(q) => q,
            None => {
                let input_name = ed.tensors()[x as usize].name.clone().unwrap_or_default();
                let q = ed.activation(
                    &format!("{input_name}_int8"),
                    TensorType::INT8,
                    &[self.b, d],
                    Some(per_tensor(QUERY_SCALE, 0)),
                );
                // QUANTIZE v2 produces int8.
                ed.op(Op_::QUANTIZE, 2, &[x], &[q], Opt::NONE);
                self.quantized[input] = Some(q);
                q
            }
        };
        let rows = self.sample_queries.as_deref().unwrap_or(&weights);
        Ok(similarity_int8(ed, name, q, rows, &weights, bias, shape, d))
    }
}

/// `[p · x, 1 − p]`: the class entries `x` `[B, classes]` times `p` `[B, 1]`
/// (broadcast over the classes), then the unknown entry.
fn append_unknown(
    ed: &mut ModelEditor,
    x: i32,
    p: i32,
    classes: i32,
    b: i32,
    base: &str,
    name: &str,
) -> i32 {
    let known = ed.activation(&format!("{base}_known"), TensorType::FLOAT32, &[b, classes], None);
    ed.op(Op_::MUL, 1, &[x, p], &[known], Opt::MulOptions(Box::default()));
    let one = ed.const_f32(&format!("{base}_one"), &[], &[1.0]);
    let unknown = ed.activation(&format!("{base}_unknown"), TensorType::FLOAT32, &[b, 1], None);
    ed.op(Op_::SUB, 1, &[one, p], &[unknown], Opt::SubOptions(Box::default()));
    let y = ed.activation(name, TensorType::FLOAT32, &[b, classes + 1], None);
    let options = build!(ConcatenationOptionsT { axis: 1 });
    ed.op(
        Op_::CONCATENATION,
        1,
        &[known, unknown],
        &[y],
        Opt::ConcatenationOptions(Box::new(options)),
    );
    y
}

/// The rows a similarity layer matches: a TFLite file keeps no editable
/// index, so a centring head's layer holds the centred rows themselves
/// (an int8 index's rows widened to f32: a TFLite layer is float or int8 as
/// `--tflite-block` says, whatever the index dtype).
fn similarity_rows<'a>(index: &'a Index, centring: &Option<Centring<'a>>) -> Cow<'a, [f32]> {
    match centring {
        Some(c) if index.dtype != IndexDtype::Int8 => Cow::Borrowed(c.rows),
        Some(c) => Cow::Owned(c.centred_rows(index)),
        None => index.units(),
    }
}

pub(crate) fn per_tensor(scale: f32, zero_point: i64) -> QuantizationParametersT {
    build!(QuantizationParametersT { scale: Some(vec![scale]), zero_point: Some(vec![zero_point]) })
}

fn fc_options() -> Opt {
    Opt::FullyConnectedOptions(Box::default())
}

/// `query · weightsᵀ (+ bias)` in float32.
fn similarity_float(
    ed: &mut ModelEditor,
    name: &str,
    query: i32,
    weights: &[f32],
    bias: Option<&[f32]>,
    out: [i32; 2],
    d: i32,
) -> i32 {
    let w = ed.const_f32(&format!("{name}_weights"), &[out[1], d], weights);
    let bias = bias.map_or(-1, |bv| ed.const_f32(&format!("{name}_bias"), &[out[1]], bv));
    let y = ed.activation(name, TensorType::FLOAT32, &out, None);
    ed.op(Op_::FULLY_CONNECTED, 1, &[query, w, bias], &[y], fc_options());
    y
}

/// int8 weights quantized symmetrically per output row (per-channel): each
/// row keeps its own full 8-bit range, where one scale for the whole matrix
/// would let the row with the largest entry coarsen every other row.
/// Returns (int8 values, scale per row).
pub fn quantize_rows(weights: &[f32], d: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(weights.len() / d);
    for r in weights.chunks_exact(d) {
        let m = r.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(r.iter().map(|x| (x / s).round().clamp(-127.0, 127.0) as i8));
    }
    (q, scales)
}

/// The int8 output range of a similarity layer: what it gives for (up to 512
/// of) the index rows themselves, widened by 10% of the span on each side and
/// always containing 0 (TFLite needs a representable zero point). Queries
/// beyond it saturate, which only flattens classes far from the best.
pub fn output_range(rows: &[f32], weights: &[f32], bias: Option<&[f32]>, d: usize) -> (f32, f32) {
    let n = rows.len() / d;
    let step = n.div_ceil(512).max(1);
    let (mut lo, mut hi) = (0f32, 0f32);
    for r in rows.chunks_exact(d).step_by(step) {
        for (k, w) in weights.chunks_exact(d).enumerate() {
            let v = crate::kernels::dot(r, w) + bias.map_or(0.0, |b| b[k]);
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let margin = 0.1 * (hi - lo).max(1e-6);
    (lo - margin, hi + margin)
}

/// The same layer as [`similarity_float`] in int8: QUANTIZE was applied to
/// the query already; int8 FULLY_CONNECTED with per-row weight scales, int32
/// bias at scale `QUERY_SCALE * weight scale`, int8 output over
/// [`output_range`], then DEQUANTIZE to float for the aggregation.
#[allow(clippy::too_many_arguments)]
fn similarity_int8(
    ed: &mut ModelEditor,
    name: &str,
    query_q: i32,
    rows: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    out: [i32; 2],
    d: i32,
) -> i32 {
    let du = d as usize;
    let (wq, scales) = quantize_rows(weights, du);
    let zeros = vec![0i64; scales.len()];
    let wquant = build!(QuantizationParametersT {
        scale: Some(scales.clone()),
        zero_point: Some(zeros.clone()),
        quantized_dimension: 0
    });
    let w = ed.constant(
        &format!("{name}_weights_int8"),
        TensorType::INT8,
        &[out[1], d],
        wq.iter().map(|&v| v as u8).collect(),
        Some(wquant),
    );
    let bias_t = bias.map_or(-1, |bv| {
        let q: Vec<i32> =
            bv.iter().zip(&scales).map(|(v, s)| (v / (QUERY_SCALE * s)).round() as i32).collect();
        let bscales: Vec<f32> = scales.iter().map(|s| QUERY_SCALE * s).collect();
        let bquant = build!(QuantizationParametersT {
            scale: Some(bscales),
            zero_point: Some(zeros.clone()),
            quantized_dimension: 0
        });
        ed.constant(
            &format!("{name}_bias_int32"),
            TensorType::INT32,
            &[out[1]],
            q.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Some(bquant),
        )
    });
    let (lo, hi) = output_range(rows, weights, bias, du);
    let scale = (hi - lo) / 255.0;
    let zero = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i64;
    let yq = ed.activation(
        &format!("{name}_int8"),
        TensorType::INT8,
        &out,
        Some(per_tensor(scale, zero)),
    );
    // FULLY_CONNECTED v4 is int8; per-channel weights are accepted by the same kernel in current runtimes.
    ed.op(Op_::FULLY_CONNECTED, 4, &[query_q, w, bias_t], &[yq], fc_options());
    let y = ed.activation(name, TensorType::FLOAT32, &out, None);
    ed.op(Op_::DEQUANTIZE, 2, &[yq], &[y], Opt::NONE);
    y
}

/// One level of the max aggregation: GATHER (unless the level is a plain
/// reshape) → RESHAPE to [B, groups, width] → REDUCE_MAX over the last axis
/// into tensor `output`; other tensors are named from `prefix`.
fn max_level(
    ed: &mut ModelEditor,
    level: &MaxLevel,
    input: i32,
    prefix: &str,
    output: &str,
    b: i32,
) -> i32 {
    let mut x = input;
    let (g, w) = (level.groups as i32, level.width as i32);
    if let Some(index) = &level.index {
        let idx: Vec<i32> = index.iter().map(|&v| v as i32).collect();
        let it = ed.const_i32(&format!("{prefix}_index"), &[idx.len() as i32], &idx);
        let y =
            ed.activation(&format!("{prefix}_gathered"), TensorType::FLOAT32, &[b, g * w], None);
        ed.op(
            Op_::GATHER,
            1,
            &[x, it],
            &[y],
            Opt::GatherOptions(Box::new(build!(GatherOptionsT { axis: 1, batch_dims: 0 }))),
        );
        x = y;
    }
    let shape = [b, g, w];
    let s = ed.const_i32(&format!("{prefix}_shape"), &[3], &shape);
    let blocks = ed.activation(&format!("{prefix}_blocks"), TensorType::FLOAT32, &shape, None);
    ed.op(
        Op_::RESHAPE,
        1,
        &[x, s],
        &[blocks],
        Opt::ReshapeOptions(Box::new(build!(ReshapeOptionsT { new_shape: Some(shape.to_vec()) }))),
    );
    let axes = ed.const_i32(&format!("{prefix}_axes"), &[1], &[2]);
    let y = ed.activation(output, TensorType::FLOAT32, &[b, g], None);
    ed.op(
        Op_::REDUCE_MAX,
        1,
        &[blocks, axes],
        &[y],
        Opt::ReducerOptions(Box::new(build!(ReducerOptionsT { keep_dims: false }))),
    );
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rows_uses_each_rows_full_range() {
        // (Values exactly half-way between two steps are avoided: f32 rounding decides them.)
        let w = [0.5, -0.25, 0.0, 0.005, 0.02, -0.015];
        let (q, s) = quantize_rows(&w, 3);
        assert_eq!(&q[..3], &[127, -64, 0]);
        assert_eq!(&q[3..], &[32, 127, -95]);
        assert!((s[0] - 0.5 / 127.0).abs() < 1e-9 && (s[1] - 0.02 / 127.0).abs() < 1e-9);
    }

    #[test]
    fn output_range_covers_index_similarities_and_zero() {
        let rows = [1.0, 0.0, 0.6, 0.8];
        let (lo, hi) = output_range(&rows, &rows, None, 2);
        assert!(lo < 0.0 && hi > 1.0 && hi < 1.2, "{lo} {hi}");
    }
}
