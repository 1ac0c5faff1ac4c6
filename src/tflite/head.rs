//! The retrieval head as TFLite operators appended to an embedder's subgraph:
//! the same computation as the ONNX head (`crate::head::graph`) and
//! [`RetrievalHead::scores`], op for op, so the numbers agree.
//!
//! ```text
//! embedding ─ [DEQUANTIZE] ─ [RESHAPE to [B, D]] ─ [ABS, SQRT|POW, SIGN, MUL] ─ L2_NORMALIZATION
//!   ─ [SUB mean, L2_NORMALIZATION] ─ similarity layer(s) ─ aggregation ─ [SOFTMAX β = 1/τ] ─▶ scores [B, C]
//! ```
//!
//! A similarity layer is a FULLY_CONNECTED against the index rows (max,
//! blend), the class centroids (centroid, blend) or the discriminant (weights
//! and bias). With [`TfliteBlock::Int8`] each one runs in int8 as the original
//! CBR does: QUANTIZE the normalised query (scale 1/128) → int8
//! FULLY_CONNECTED → DEQUANTIZE.

use anyhow::{bail, Result};

use super::edit::ModelEditor;
use super::schema::model::{
    AddOptionsT, BuiltinOperator as Op, BuiltinOptionsT as Opt, FullyConnectedOptionsT,
    GatherOptionsT, L2NormOptionsT, MulOptionsT, QuantizationParametersT, ReducerOptionsT,
    ReshapeOptionsT, SoftmaxOptionsT, SubOptionsT, TensorType,
};
use crate::head::{plan_max, Aggregation, MaxLevel, RetrievalHead, SCORES};

/// How the similarity layers of the head are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
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
    let emb = ed.tensors()[embedding as usize].clone();
    let shape = emb.shape.clone().unwrap_or_default();
    if shape.is_empty() {
        bail!("the embedding output has no shape");
    }
    let batch = shape[0];
    let dim: i64 = shape[1..].iter().map(|&d| d as i64).product();
    if dim != head.dim as i64 {
        bail!("the embedder's output {:?} has shape {shape:?}: {dim} values per image, but the index embeddings have {}", emb.name.unwrap_or_default(), head.dim);
    }
    let d = head.dim as i32;
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
            ed.op(
                Op::DEQUANTIZE,
                if emb.type_ == TensorType::INT8 { 2 } else { 1 },
                &[x],
                &[y],
                Opt::NONE,
            );
            x = y;
        }
        t => bail!("the embedding output is {t:?}; cbr reads float32, uint8 or int8 embeddings"),
    }
    if shape.len() != 2 {
        let new_shape = [b, d];
        let s = ed.const_i32("cbr/embedding_shape", &[2], &new_shape);
        let y = ed.activation("cbr/embedding", TensorType::FLOAT32, &new_shape, None);
        ed.op(
            Op::RESHAPE,
            1,
            &[x, s],
            &[y],
            Opt::ReshapeOptions(Box::new(build!(ReshapeOptionsT {
                new_shape: Some(new_shape.to_vec())
            }))),
        );
        x = y;
    }
    let row = [b, d];
    let float = |ed: &mut ModelEditor, name: &str, shape: &[i32]| {
        ed.activation(name, TensorType::FLOAT32, shape, None)
    };
    if let Some(p) = head.power {
        // sign(x) * |x|^p, as in the ONNX head.
        let abs = float(ed, "cbr/embedding_abs", &row);
        ed.op(Op::ABS, 1, &[x], &[abs], Opt::NONE);
        let pow = float(ed, "cbr/embedding_pow", &row);
        if p == 0.5 {
            ed.op(Op::SQRT, 1, &[abs], &[pow], Opt::NONE);
        } else {
            let e = ed.const_f32("cbr/power_exponent", &[], &[p]);
            ed.op(Op::POW, 1, &[abs, e], &[pow], Opt::NONE);
        }
        let sign = float(ed, "cbr/embedding_sign", &row);
        ed.op(Op::SIGN, 1, &[x], &[sign], Opt::NONE);
        let y = float(ed, "cbr/embedding_power", &row);
        ed.op(Op::MUL, 1, &[pow, sign], &[y], Opt::MulOptions(Box::default()));
        x = y;
    }
    let l2 = |ed: &mut ModelEditor, x: i32, name: &str| {
        let y = ed.activation(name, TensorType::FLOAT32, &row, None);
        ed.op(
            Op::L2_NORMALIZATION,
            1,
            &[x],
            &[y],
            Opt::L2NormOptions(Box::<L2NormOptionsT>::default()),
        );
        y
    };
    let mut query = l2(ed, x, "cbr/embedding_l2");
    if let Some(mean) = &head.center {
        let m = ed.const_f32("cbr/index_mean", &[d], mean);
        let c = float(ed, "cbr/embedding_centered", &row);
        ed.op(Op::SUB, 1, &[query, m], &[c], Opt::SubOptions(Box::<SubOptionsT>::default()));
        query = l2(ed, c, "cbr/query");
    }
    let query_q = match block {
        TfliteBlock::Float => None,
        TfliteBlock::Int8 => {
            let q = ed.activation(
                "cbr/query_int8",
                TensorType::INT8,
                &row,
                Some(per_tensor(QUERY_SCALE, 0)),
            );
            // QUANTIZE v2 produces int8.
            ed.op(Op::QUANTIZE, 2, &[query], &[q], Opt::NONE);
            Some(q)
        }
    };
    let classes = head.labels.len() as i32;
    let n = head.len() as i32;
    let layer = |ed: &mut ModelEditor,
                 name: &str,
                 weights: &[f32],
                 bias: Option<&[f32]>,
                 outputs: i32| match query_q {
        None => similarity_float(ed, name, query, weights, bias, [b, outputs], d),
        Some(q) => similarity_int8(ed, name, q, head.rows(), weights, bias, [b, outputs], d),
    };

    let class_max = if matches!(head.aggregation, Aggregation::Max | Aggregation::Blend) {
        let sims = layer(ed, "cbr/similarities", head.rows(), None, n);
        let mut input = sims;
        for (i, level) in plan_max(head.groups()).iter().enumerate() {
            input = max_level(ed, level, input, i, b);
        }
        Some(input)
    } else {
        None
    };
    let class_centroid = if matches!(head.aggregation, Aggregation::Centroid | Aggregation::Blend) {
        Some(layer(ed, "cbr/centroid", &head.centroids, None, classes))
    } else {
        None
    };
    let class_sims = if let Some(disc) = &head.discriminant {
        layer(ed, "cbr/class_similarities", &disc.weights, Some(&disc.bias), classes)
    } else {
        match (class_max, class_centroid) {
            (Some(m), Some(c)) => {
                let sum = float(ed, "cbr/blend_sum", &[b, classes]);
                ed.op(Op::ADD, 1, &[m, c], &[sum], Opt::AddOptions(Box::<AddOptionsT>::default()));
                let half = ed.const_f32("cbr/half", &[], &[0.5]);
                let y = float(ed, "cbr/class_similarities", &[b, classes]);
                ed.op(
                    Op::MUL,
                    1,
                    &[sum, half],
                    &[y],
                    Opt::MulOptions(Box::<MulOptionsT>::default()),
                );
                y
            }
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => unreachable!("max, centroid and blend use max or centroid"),
        }
    };
    let scores = match head.temperature {
        Some(t) => {
            let y = float(ed, SCORES, &[b, classes]);
            // softmax(x / τ) = softmax with β = 1/τ.
            ed.op(
                Op::SOFTMAX,
                1,
                &[class_sims],
                &[y],
                Opt::SoftmaxOptions(Box::new(build!(SoftmaxOptionsT { beta: 1.0 / t }))),
            );
            y
        }
        None => {
            rename(ed, class_sims, SCORES);
            class_sims
        }
    };
    Ok(scores)
}

fn rename(ed: &mut ModelEditor, tensor: i32, name: &str) {
    ed.model.subgraphs.as_mut().unwrap()[0].tensors.as_mut().unwrap()[tensor as usize].name =
        Some(name.to_string());
}

pub(crate) fn per_tensor(scale: f32, zero_point: i64) -> QuantizationParametersT {
    build!(QuantizationParametersT { scale: Some(vec![scale]), zero_point: Some(vec![zero_point]) })
}

fn fc_options() -> Opt {
    Opt::FullyConnectedOptions(Box::<FullyConnectedOptionsT>::default())
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
    ed.op(Op::FULLY_CONNECTED, 1, &[query, w, bias], &[y], fc_options());
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
            let v = crate::head::dot(r, w) + bias.map_or(0.0, |b| b[k]);
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
    ed.op(Op::FULLY_CONNECTED, 4, &[query_q, w, bias_t], &[yq], fc_options());
    let y = ed.activation(name, TensorType::FLOAT32, &out, None);
    ed.op(Op::DEQUANTIZE, 2, &[yq], &[y], Opt::NONE);
    y
}

/// One level of the max aggregation: GATHER (unless the level is a plain
/// reshape) → RESHAPE to [B, groups, width] → REDUCE_MAX over the last axis.
fn max_level(ed: &mut ModelEditor, level: &MaxLevel, input: i32, i: usize, b: i32) -> i32 {
    let mut x = input;
    let (g, w) = (level.groups as i32, level.width as i32);
    if let Some(index) = &level.index {
        let idx: Vec<i32> = index.iter().map(|&v| v as i32).collect();
        let it = ed.const_i32(&format!("cbr/max{i}_index"), &[idx.len() as i32], &idx);
        let y =
            ed.activation(&format!("cbr/max{i}_gathered"), TensorType::FLOAT32, &[b, g * w], None);
        ed.op(
            Op::GATHER,
            1,
            &[x, it],
            &[y],
            Opt::GatherOptions(Box::new(build!(GatherOptionsT { axis: 1, batch_dims: 0 }))),
        );
        x = y;
    }
    let shape = [b, g, w];
    let s = ed.const_i32(&format!("cbr/max{i}_shape"), &[3], &shape);
    let blocks = ed.activation(&format!("cbr/max{i}_blocks"), TensorType::FLOAT32, &shape, None);
    ed.op(
        Op::RESHAPE,
        1,
        &[x, s],
        &[blocks],
        Opt::ReshapeOptions(Box::new(build!(ReshapeOptionsT { new_shape: Some(shape.to_vec()) }))),
    );
    let axes = ed.const_i32(&format!("cbr/max{i}_axes"), &[1], &[2]);
    let y = ed.activation(&format!("cbr/max{i}"), TensorType::FLOAT32, &[b, g], None);
    ed.op(
        Op::REDUCE_MAX,
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
