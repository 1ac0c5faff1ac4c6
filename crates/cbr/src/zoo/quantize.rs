//! Post-training int8 quantization of a zoo embedder, in Rust: calibrate the
//! activation ranges on real photos ([`calibrate`]), then rewrite the float
//! ONNX graph in QDQ form ([`quantize_onnx`]), which ONNX Runtime runs with its
//! int8 kernels (`QLinearConv`, `QLinearAdd`). The TFLite twin quantizes with
//! the same [`Ranges`] and the same weight scales ([`weight_scales`]), so both
//! formats compute the same int8 network.
//!
//! The scheme is the one int8 runtimes are built for: activations uint8 (int8
//! in TFLite, the same real values) with a scale and zero point per tensor,
//! weights int8 symmetric per output channel, biases int32 at the scale of
//! input × weight. Ranges are percentiles, not min/max: a min/max range is set
//! by a handful of outlier activations and spends the 256 levels on them (a
//! min/max prototype lost 3.3 points of top-1 on CUB). EfficientNet-Lite's
//! ReLU6 caps most tensors at [0, 6]; the input range is exact (the pixels
//! themselves); the pooled embedding stays float.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{anyhow, ensure, Context, Result};
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use crate::runtime::onnxruntime::{session_from_bytes, SessionMemory};
use cbr_core::onnx::{self, node, tensor_f32, DataType, ModelProto, NodeProto, TensorProto};
use cbr_core::preprocess::Preprocess;

/// The share of an activation's values left outside its range, half on each
/// side (onnxruntime's percentile calibrator's default, 99.99%).
pub const OUTSIDE_RANGE: f64 = 1e-4;

/// Metadata key of the quantized ONNX embedder holding its [`Ranges`] as JSON,
/// so the TFLite twin can be written from the float graph with the same ranges.
pub const RANGES_KEY: &str = "cbr.quantization.ranges";

/// The real-valued range `[min, max]` of every quantized activation, by tensor
/// name in the float graph. Each range contains 0.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ranges(pub BTreeMap<String, (f32, f32)>);

/// An activation's uint8 quantization: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: u8,
}

impl Ranges {
    /// The uint8 quantization of `name`, or `None` if it stays float.
    pub fn affine(&self, name: &str) -> Option<Affine> {
        self.0.get(name).map(|&(lo, hi)| affine(lo, hi))
    }
}

/// uint8 scale and zero point covering `[lo, hi]` (widened to contain 0).
pub fn affine(lo: f32, hi: f32) -> Affine {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let mut scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    // Keep the top level within `hi` (a rounding up by one ulp would make
    // ONNX Runtime keep a ReLU6 it could otherwise drop).
    while hi > 0.0 && (255.0 - zero_point as f32) * scale > hi {
        scale = f32::from_bits(scale.to_bits() - 1);
    }
    Affine { scale, zero_point }
}

/// Which activations are quantized: the graph input, and the output of every
/// `Conv` (after its ReLU6 when it has one), `Clip` and `Add`. The pooling and
/// the embedding stay float. `Some(cap)` is a ReLU6 output's upper bound.
fn quantized_activations(graph: &onnx::GraphProto) -> Vec<(String, Option<f32>)> {
    let consumers = consumers(&graph.node);
    let mut out = vec![(graph.input[0].name().to_string(), None)];
    for n in &graph.node {
        let o = n.output[0].as_str();
        match n.op_type() {
            // A Conv whose only use is a Clip is quantized after the Clip.
            "Conv" if !matches!(consumers.get(o).map(Vec::as_slice), Some([c]) if c.op_type() == "Clip") => {
                out.push((o.to_string(), None))
            }
            "Clip" => out.push((o.to_string(), Some(6.0))),
            "Add" => out.push((o.to_string(), None)),
            _ => {}
        }
    }
    out
}

fn consumers(nodes: &[NodeProto]) -> HashMap<&str, Vec<&NodeProto>> {
    let mut m: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in nodes {
        for i in &n.input {
            m.entry(i.as_str()).or_default().push(n);
        }
    }
    m
}

/// The `k` largest (or, with `-x`, smallest) values seen so far.
#[derive(Default)]
struct Tail {
    k: usize,
    kept: Vec<f32>,
}

impl Tail {
    fn add(&mut self, values: impl Iterator<Item = f32>) {
        self.kept.extend(values);
        if self.kept.len() > 4 * self.k + 4096 {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        if self.kept.len() > self.k {
            let k = self.k;
            self.kept.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            self.kept.truncate(k);
        }
    }

    /// The k-th largest value.
    fn value(mut self) -> f32 {
        self.shrink();
        self.kept.iter().copied().fold(f32::INFINITY, f32::min)
    }
}

/// Rounds `x` away from zero to 8 significant bits, so that the last-bit
/// differences of float kernels on different CPUs rarely change a range, and
/// the quantized model's bytes stay the same from machine to machine.
fn round_out(x: f32) -> f32 {
    const MASK: u32 = (1 << 16) - 1;
    let bits = x.abs().to_bits();
    let up = if bits & MASK == 0 { bits } else { (bits | MASK) + 1 };
    f32::from_bits(up).copysign(x)
}

/// Runs the float `model` on `n` calibration images (`tensors`, prepared
/// with `p`) and returns the range of every quantized activation: the values
/// that leave [`OUTSIDE_RANGE`] of the activation outside, ReLU6 outputs
/// capped at 6, the input's range from the preprocessing (exact).
pub fn calibrate(model: &ModelProto, p: &Preprocess, tensors: &[f32], n: usize) -> Result<Ranges> {
    ensure!(n > 0, "no calibration images");
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let wanted = quantized_activations(graph);
    // Every quantized activation becomes a graph output (type only: ONNX
    // Runtime infers the shapes).
    let mut probe = model.clone();
    let g = probe.graph.as_mut().expect("checked above");
    for (name, _) in &wanted[1..] {
        let mut vi = onnx::value_info(name, DataType::Float, &[]);
        if let Some(onnx::proto::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
        g.output.push(vi);
    }
    let mut session = session_from_bytes(&onnx::encode(&probe), SessionMemory::Arena)?;
    let input = wanted[0].0.clone();
    let per = p.tensor_len();
    ensure!(tensors.len() == n * per, "calibration tensors do not hold {n} images");

    let mut tails: Vec<(Tail, Tail)> = (1..wanted.len()).map(|_| Default::default()).collect();
    const BATCH: usize = 8;
    for start in (0..n).step_by(BATCH) {
        let count = BATCH.min(n - start);
        let outputs = run_all(
            &mut session,
            &input,
            p,
            &tensors[start * per..(start + count) * per],
            count,
            &wanted[1..],
        )?;
        for ((hi, lo), values) in tails.iter_mut().zip(outputs) {
            if hi.k == 0 {
                // Values per image times images, times the share cut per side.
                let total = values.len() / count * n;
                let k = ((total as f64 * OUTSIDE_RANGE / 2.0) as usize).max(1);
                (hi.k, lo.k) = (k, k);
            }
            hi.add(values.iter().copied());
            lo.add(values.iter().map(|v| -v));
        }
    }

    let mut ranges = BTreeMap::new();
    let lo_in = (0.0 - p.mean.iter().copied().fold(f32::MIN, f32::max))
        / p.std.iter().copied().fold(f32::MAX, f32::min);
    let hi_in = (255.0 - p.mean.iter().copied().fold(f32::MAX, f32::min))
        / p.std.iter().copied().fold(f32::MAX, f32::min);
    ranges.insert(input, (lo_in, hi_in));
    for ((name, cap), (hi, lo)) in wanted[1..].iter().zip(tails) {
        let (mut lo, mut hi) = (round_out((-lo.value()).min(0.0)), round_out(hi.value().max(0.0)));
        if let Some(cap) = cap {
            // The ReLU6 itself: [0, at most 6], so the runtime can drop the Clip.
            (lo, hi) = (0.0, hi.min(*cap));
        }
        ranges.insert(name.clone(), (lo, hi));
    }
    Ok(Ranges(ranges))
}

/// One run returning every output in `names`, as flat f32 values.
fn run_all(
    session: &mut Session,
    input: &str,
    p: &Preprocess,
    chunk: &[f32],
    count: usize,
    names: &[(String, Option<f32>)],
) -> Result<Vec<Vec<f32>>> {
    let tensor = TensorRef::from_array_view((p.batch_shape(count), chunk))
        .map_err(|e| anyhow!("cannot make the input tensor: {e}"))?;
    let options =
        RunOptions::new().map_err(|e| anyhow!("cannot create ONNX Runtime run options: {e}"))?;
    let outputs = session
        .run_with_options(ort::inputs![input => tensor], &options)
        .map_err(|e| anyhow!("ONNX Runtime failed to run the calibration model: {e}"))?;
    names
        .iter()
        .map(|(name, _)| {
            let v = outputs.get(name).ok_or_else(|| anyhow!("no output {name}"))?;
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| anyhow!("output {name} is not a float tensor: {e}"))?;
            Ok(data.to_vec())
        })
        .collect()
}

/// Per-output-channel symmetric int8 scales of a weight whose first dimension
/// is the output channel: `max |w| / 127` (1 for an all-zero channel).
pub fn weight_scales(w: &[f32], channels: usize) -> Vec<f32> {
    let per = w.len() / channels;
    w.chunks_exact(per)
        .map(|c| {
            let m = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            if m > 0.0 {
                m / 127.0
            } else {
                1.0
            }
        })
        .collect()
}

/// `w` quantized with [`weight_scales`]: `round(w / scale)` in [-127, 127].
pub fn quantize_weights(w: &[f32], scales: &[f32]) -> Vec<i8> {
    let per = w.len() / scales.len();
    w.iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[i / per]).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// A bias quantized to int32 at scale `input_scale * weight_scale[c]`.
pub fn quantize_bias(b: &[f32], input_scale: f32, w_scales: &[f32]) -> (Vec<i32>, Vec<f32>) {
    let scales: Vec<f32> = w_scales.iter().map(|s| input_scale * s).collect();
    let q = b
        .iter()
        .zip(&scales)
        .map(|(&v, &s)| {
            (v as f64 / s as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    (q, scales)
}

/// The float zoo `model` rewritten in QDQ form with `ranges`: every quantized
/// activation `x` is followed by `QuantizeLinear -> DequantizeLinear`, its
/// readers read the dequantized value, and every `Conv`'s weight and bias are
/// stored as int8 / int32 behind a per-channel `DequantizeLinear`. ONNX
/// Runtime fuses each `DQ -> Conv -> (Clip) -> Q` into one `QLinearConv`.
/// Deterministic: same model and ranges, same bytes.
pub fn quantize_onnx(model: &ModelProto, ranges: &Ranges) -> Result<ModelProto> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let inits: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let input = graph.input[0].name().to_string();
    let mut nodes = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();

    let qdq = |name: &str, nodes: &mut Vec<NodeProto>, initializers: &mut Vec<TensorProto>| {
        let a = ranges.affine(name).expect("only quantized tensors");
        let (s, z) = (format!("{name}.scale"), format!("{name}.zero_point"));
        initializers.push(tensor_f32(&s, &[], &[a.scale]));
        initializers.push(onnx::tensor_u8(&z, &[], &[a.zero_point]));
        let q = format!("{name}.q");
        let dq = format!("{name}.dq");
        nodes.push(node("QuantizeLinear", &q, &[name, &s, &z], &[&q], vec![]));
        nodes.push(node("DequantizeLinear", &dq, &[&q, &s, &z], &[&dq], vec![]));
    };
    ensure!(ranges.0.contains_key(&input), "the ranges have no entry for the input {input}");
    qdq(&input, &mut nodes, &mut initializers);

    for n in &graph.node {
        let mut n = n.clone();
        let ctx = format!("node {} ({})", n.name(), n.op_type());
        if n.op_type() == "Conv" {
            ensure!(n.input.len() == 3, "{ctx}: expected a weight and a bias");
            let x_scale = ranges
                .affine(&n.input[0])
                .with_context(|| format!("{ctx}: its input {} has no range", n.input[0]))?
                .scale;
            let (w_name, b_name) = (n.input[1].clone(), n.input[2].clone());
            let w_t = inits.get(w_name.as_str()).with_context(|| format!("{ctx}: no weight"))?;
            let b_t = inits.get(b_name.as_str()).with_context(|| format!("{ctx}: no bias"))?;
            let w = onnx::tensor_f32_values(w_t)?;
            let b = onnx::tensor_f32_values(b_t)?;
            let out_ch = w_t.dims[0] as usize;
            ensure!(b.len() == out_ch, "{ctx}: bias length {} != {out_ch} channels", b.len());
            let scales = weight_scales(&w, out_ch);
            let wq = quantize_weights(&w, &scales);
            let (bq, b_scales) = quantize_bias(&b, x_scale, &scales);
            let c = out_ch as i64;
            let (wq_n, ws_n, wz_n) =
                (format!("{w_name}.q"), format!("{w_name}.scale"), format!("{w_name}.zero_point"));
            initializers.push(onnx::tensor_i8(&wq_n, &w_t.dims, &wq));
            initializers.push(tensor_f32(&ws_n, &[c], &scales));
            initializers.push(onnx::tensor_i8(&wz_n, &[c], &vec![0; out_ch]));
            let (bq_n, bs_n, bz_n) =
                (format!("{b_name}.q"), format!("{b_name}.scale"), format!("{b_name}.zero_point"));
            initializers.push(onnx::tensor_i32(&bq_n, &[c], &bq));
            initializers.push(tensor_f32(&bs_n, &[c], &b_scales));
            initializers.push(onnx::tensor_i32(&bz_n, &[c], &vec![0; out_ch]));
            let axis = vec![onnx::attr_int("axis", 0)];
            nodes.push(node(
                "DequantizeLinear",
                &w_name,
                &[&wq_n, &ws_n, &wz_n],
                &[&w_name],
                axis.clone(),
            ));
            nodes.push(node("DequantizeLinear", &b_name, &[&bq_n, &bs_n, &bz_n], &[&b_name], axis));
        }
        // Readers of a quantized activation read its dequantized value (weights, biases and
        // the ReLU6 bounds are not activations, so they keep their names).
        for i in n.input.iter_mut() {
            if ranges.0.contains_key(i.as_str()) {
                *i = format!("{i}.dq");
            }
        }
        let out = n.output[0].clone();
        nodes.push(n);
        if ranges.0.contains_key(&out) {
            qdq(&out, &mut nodes, &mut initializers);
        }
    }
    // The float initializers the new graph still reads (the ReLU6 bounds), first.
    let read: HashSet<&str> =
        nodes.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    // (A weight's name now belongs to its DequantizeLinear's output, not to the float tensor.)
    let produced: HashSet<&str> =
        nodes.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let mut kept: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| read.contains(t.name()) && !produced.contains(t.name()))
        .cloned()
        .collect();
    kept.extend(initializers);

    let mut q = model.clone();
    let g = q.graph.as_mut().expect("checked above");
    g.node = nodes;
    g.initializer = kept;
    g.name = Some(format!("{}_int8", graph.name()));
    onnx::set_metadata(&mut q, RANGES_KEY, &serde_json::to_string(ranges)?);
    Ok(q)
}

/// The [`Ranges`] a quantized ONNX embedder was made with (its metadata).
pub fn ranges_of(model: &ModelProto) -> Result<Ranges> {
    let json = onnx::metadata(model, RANGES_KEY)
        .ok_or_else(|| anyhow!("the model records no quantization ranges ({RANGES_KEY})"))?;
    serde_json::from_str(json).context("the model's quantization ranges are not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_covers_zero_and_the_pixels_exactly() {
        // EfficientNet-Lite's input (p - 127) / 128: q is the pixel itself.
        let a = affine(-127.0 / 128.0, 1.0);
        assert_eq!(a, Affine { scale: 1.0 / 128.0, zero_point: 127 });
        let relu6 = affine(0.0, 6.0);
        assert_eq!(relu6.zero_point, 0);
        assert!(relu6.scale * 255.0 <= 6.0);
        assert_eq!(affine(0.5, 2.0).zero_point, 0);
        assert_eq!(affine(-2.0, -0.5).zero_point, 255);
    }

    #[test]
    fn tail_keeps_the_kth_largest() {
        let mut t = Tail { k: 3, kept: vec![] };
        t.add((0..10_000).map(|i| i as f32));
        t.add([20_000.0, -1.0].into_iter());
        assert_eq!(t.value(), 9998.0);
    }

    #[test]
    fn weights_round_per_channel() {
        let w = [0.5, -1.0, 0.25, 2.0, 0.0, 0.0];
        let s = weight_scales(&w, 3);
        assert_eq!(s, [1.0 / 127.0, 2.0 / 127.0, 1.0]);
        assert_eq!(quantize_weights(&w, &s), [64, -127, 16, 127, 0, 0]);
        let (q, bs) = quantize_bias(&[1.0, -1.0, 0.0], 0.5, &s);
        assert_eq!(q, [254, -127, 0]);
        assert_eq!(bs[2], 0.5);
    }

    #[test]
    fn rewrites_a_float_graph_in_qdq_form() {
        use cbr_core::onnx::{attr_int, value_info, Dim, GraphProto};
        // x -> Conv -> Clip(0, 6) -> Add(x) -> GlobalAveragePool -> Flatten.
        let w: Vec<f32> = (0..4).map(|v| v as f32 - 1.5).collect();
        let graph = GraphProto {
            name: Some("t".into()),
            node: vec![
                node("Conv", "c", &["x", "w", "b"], &["c"], vec![attr_int("group", 1)]),
                node("Clip", "r", &["c", "lo", "hi"], &["r"], vec![]),
                node("Add", "a", &["r", "x"], &["a"], vec![]),
                node("GlobalAveragePool", "p", &["a"], &["p"], vec![]),
                node("Flatten", "e", &["p"], &["e"], vec![attr_int("axis", 1)]),
            ],
            initializer: vec![
                tensor_f32("w", &[2, 2, 1, 1], &w),
                tensor_f32("b", &[2], &[0.5, -0.5]),
                tensor_f32("lo", &[], &[0.0]),
                tensor_f32("hi", &[], &[6.0]),
            ],
            input: vec![value_info("x", DataType::Float, &[Dim::Fixed(1), Dim::Fixed(2)])],
            output: vec![value_info("e", DataType::Float, &[Dim::Fixed(1), Dim::Fixed(2)])],
            ..Default::default()
        };
        let model = ModelProto { graph: Some(graph), ..Default::default() };
        let g = model.graph.as_ref().unwrap();
        let wanted = quantized_activations(g);
        assert_eq!(
            wanted,
            [("x".into(), None), ("r".into(), Some(6.0)), ("a".into(), None)],
            "the Conv feeding a ReLU6 is quantized after it; the pooling stays float"
        );
        let ranges = Ranges(
            [("x", (-1.0, 1.0)), ("r", (0.0, 6.0)), ("a", (-1.0, 7.0))]
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect(),
        );
        let q = quantize_onnx(&model, &ranges).unwrap();
        assert_eq!(q, quantize_onnx(&model, &ranges).unwrap(), "deterministic");
        assert_eq!(ranges_of(&q).unwrap(), ranges);
        let qg = q.graph.as_ref().unwrap();
        let find = |name: &str| qg.node.iter().find(|n| n.name() == name).unwrap();
        assert_eq!(find("c").input, ["x.dq", "w", "b"]);
        assert_eq!(find("w").op_type(), "DequantizeLinear");
        assert_eq!(find("a").input, ["r.dq", "x.dq"]);
        assert_eq!(find("p").input, ["a.dq"]);
        let init = |name: &str| qg.initializer.iter().find(|t| t.name() == name).unwrap();
        assert_eq!(init("w.q").data_type, Some(DataType::Int8 as i32));
        assert_eq!(init("b.q").data_type, Some(DataType::Int32 as i32));
        assert!(qg.initializer.iter().all(|t| t.name() != "w"), "no float copy of the weights");
        assert_eq!(init("lo").data_type, Some(DataType::Float as i32));
    }

    #[test]
    fn round_out_is_coarse_and_outward() {
        assert_eq!(round_out(6.0), 6.0);
        assert!(round_out(1.0001) > 1.0001 && round_out(1.0001) < 1.01);
        assert!(round_out(-1.0001) < -1.0001);
        assert_eq!(round_out(1.0001), round_out(1.0002));
    }
}
