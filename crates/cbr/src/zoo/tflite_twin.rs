//! Writes the TFLite twin of a zoo embedder: the same network and weights as
//! the ONNX graph [`super::efficientnet::embedder_onnx`] builds (BatchNorm
//! already folded), in TFLite's NHWC form, so `cbr build --format tflite` works
//! with the default embedder on a fresh machine.
//!
//! Only the operations the zoo graphs use are translated: `Conv` (plain or
//! depthwise, TensorFlow SAME padding) optionally followed by `Clip(0, 6)`
//! (fused as RELU6), `Add`, and `GlobalAveragePool` + `Flatten` (MEAN over H
//! and W). Anything else is an error naming the node. Batch size 1.
//!
//! Given the [`Ranges`] of a quantized embedder ([`super::quantize`]), the
//! twin is fully quantized, as the original classification-by-retrieval's
//! models were: a float input QUANTIZEd to int8, int8 convolutions (weights
//! int8 per channel, biases int32) and adds, then DEQUANTIZE before the
//! float MEAN, so the embedding (and the head after it) is float. The scales
//! are the ONNX QDQ graph's own: the two formats compute the same network.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::quantize::{self, Affine, Ranges};
use cbr_core::onnx::{self, ModelProto, NodeProto, TensorProto};
use cbr_core::tflite::schema::flatbuffers::FlatBufferBuilder;
use cbr_core::tflite::schema::model as tfl;

/// Converts a zoo ONNX embedder with input `[batch, 3, S, S]` to a
/// `.tflite` file with input `input` `[1, S, S, 3]` and output named like the
/// ONNX output, `[1, channels]`; int8 inside when `ranges` are given.
/// Deterministic: same graph and ranges, same bytes.
pub fn embedder_tflite(model: &ModelProto, ranges: Option<&Ranges>) -> Result<Vec<u8>> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let inits: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    ensure!(graph.input.len() == 1 && graph.output.len() == 1, "expected one input and one output");
    let input = graph.input[0].name().to_string();
    let output = graph.output[0].name().to_string();
    let (_, dims) = onnx::tensor_type(&graph.input[0])
        .ok_or_else(|| anyhow!("input {input} is not a tensor"))?;
    let (size, channels) = match dims[..] {
        [_, Some(c), Some(h), Some(w)] if h == w => (h as usize, c as usize),
        _ => bail!("input {input} has shape {dims:?}, expected [batch, C, S, S]"),
    };

    let mut w = Writer::default();
    let in_shape = [1, size, size, channels];
    let x = w.tensor(&input, &in_shape, None);
    // The int8 quantization of an ONNX value, for a fully quantized twin.
    let affine = |name: &str| -> Result<Option<Affine>> {
        match ranges {
            None => Ok(None),
            Some(r) => r
                .affine(name)
                .map(Some)
                .ok_or_else(|| anyhow!("the ranges have no entry for {name}")),
        }
    };
    let first = match affine(&input)? {
        Some(a) => {
            let q = w.activation(&format!("{input}.q"), &in_shape, Some(a));
            w.op(tfl::BuiltinOperator::QUANTIZE, vec![x], q, tfl::BuiltinOptionsT::NONE);
            q
        }
        None => x,
    };
    // ONNX value name -> (TFLite tensor, NHWC shape).
    let mut values: HashMap<String, (i32, [usize; 4])> =
        HashMap::from([(input.clone(), (first, in_shape))]);
    let uses = use_counts(&graph.node);
    let value = |values: &HashMap<String, (i32, [usize; 4])>,
                 name: &str,
                 node: &NodeProto|
     -> Result<(i32, [usize; 4])> {
        values
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("node {}: input {name} is not computed before it", node.name()))
    };

    let nodes = &graph.node;
    let mut i = 0;
    while i < nodes.len() {
        let n = &nodes[i];
        let ctx = || format!("node {} ({})", n.name(), n.op_type());
        match n.op_type() {
            "Conv" => {
                let (x, shape) = value(&values, &n.input[0], n)?;
                // A Clip(0, 6) right after, on this conv's only use, fuses as RELU6.
                let relu6 = nodes.get(i + 1).filter(|c| {
                    c.op_type() == "Clip"
                        && c.input.first() == n.output.first()
                        && uses.get(n.output[0].as_str()) == Some(&1)
                });
                if let Some(c) = relu6 {
                    check_relu6(c, &inits).with_context(ctx)?;
                }
                let out_name = relu6.map_or(&n.output[0], |c| &c.output[0]).clone();
                let quant = match (affine(&n.input[0])?, affine(&out_name)?) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => None,
                };
                let (t, out_shape) = w
                    .conv(n, x, shape, &inits, &out_name, relu6.is_some(), quant)
                    .with_context(ctx)?;
                values.insert(out_name, (t, out_shape));
                i += if relu6.is_some() { 2 } else { 1 };
                continue;
            }
            "Add" => {
                let (a, sa) = value(&values, &n.input[0], n)?;
                let (b, sb) = value(&values, &n.input[1], n)?;
                ensure!(sa == sb, "{}: adds shapes {sa:?} and {sb:?}", ctx());
                let out = w.activation(&n.output[0], &sa, affine(&n.output[0])?);
                w.op(
                    tfl::BuiltinOperator::ADD,
                    vec![a, b],
                    out,
                    tfl::BuiltinOptionsT::AddOptions(Box::default()),
                );
                values.insert(n.output[0].clone(), (out, sa));
            }
            "GlobalAveragePool" => {
                let flatten = nodes
                    .get(i + 1)
                    .filter(|f| f.op_type() == "Flatten" && f.input.first() == n.output.first());
                let f = flatten.ok_or_else(|| {
                    anyhow!("{}: only GlobalAveragePool followed by Flatten is supported", ctx())
                })?;
                let (mut x, s) = value(&values, &n.input[0], n)?;
                if ranges.is_some() {
                    // The embedding is float: dequantize, then average.
                    let f = w.tensor(&format!("{}.dq", n.input[0]), &s, None);
                    w.op(tfl::BuiltinOperator::DEQUANTIZE, vec![x], f, tfl::BuiltinOptionsT::NONE);
                    x = f;
                }
                let axes = w.constant_i32(&format!("{}.axes", n.name()), &[2], &[1, 2]);
                let out = w.tensor(&f.output[0], &[1, s[3]], None);
                let mut keep = Box::<tfl::ReducerOptionsT>::default();
                keep.keep_dims = false;
                w.op(
                    tfl::BuiltinOperator::MEAN,
                    vec![x, axes],
                    out,
                    tfl::BuiltinOptionsT::ReducerOptions(keep),
                );
                values.insert(f.output[0].clone(), (out, [1, 1, 1, s[3]]));
                i += 2;
                continue;
            }
            other => bail!(
                "node {} is {other}, which the TFLite twin writer does not translate",
                n.name()
            ),
        }
        i += 1;
    }
    let (out, _) = *values
        .get(&output)
        .ok_or_else(|| anyhow!("the graph never computes its output {output}"))?;
    let kind = if ranges.is_some() { "int8 " } else { "" };
    Ok(w.finish(
        x,
        out,
        &format!(
            "{} ({kind}TFLite twin written by cbr {})",
            graph.name(),
            env!("CARGO_PKG_VERSION")
        ),
    ))
}

fn use_counts(nodes: &[NodeProto]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for n in nodes {
        for i in &n.input {
            *m.entry(i.as_str()).or_insert(0) += 1;
        }
    }
    m
}

fn check_relu6(clip: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Result<()> {
    let bound = |k: usize| -> Result<f32> {
        let name = clip.input.get(k).ok_or_else(|| anyhow!("Clip without bound {k}"))?;
        let t = inits
            .get(name.as_str())
            .ok_or_else(|| anyhow!("Clip bound {name} is not a constant"))?;
        let v = onnx::tensor_f32_values(t)?;
        v.first().copied().ok_or_else(|| anyhow!("Clip bound {name} is empty"))
    };
    let (lo, hi) = (bound(1)?, bound(2)?);
    ensure!(lo == 0.0 && hi == 6.0, "Clip({lo}, {hi}) is not ReLU6");
    Ok(())
}

fn attr_ints(n: &NodeProto, name: &str) -> Vec<i64> {
    n.attribute.iter().find(|a| a.name() == name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    n.attribute.iter().find(|a| a.name() == name).and_then(|a| a.i).unwrap_or(default)
}

/// Tensors, buffers and operators in creation order.
#[derive(Default)]
struct Writer {
    tensors: Vec<tfl::TensorT>,
    /// Buffer 0 is the empty buffer every TFLite file starts with.
    buffers: Vec<tfl::BufferT>,
    codes: Vec<tfl::BuiltinOperator>,
    operators: Vec<tfl::OperatorT>,
    /// Whether any tensor is int8 (the operator versions depend on it).
    int8: bool,
}

impl Writer {
    /// A tensor; `data` (little-endian bytes) makes it a constant.
    fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Option<(tfl::TensorType, Vec<u8>)>,
    ) -> i32 {
        if self.buffers.is_empty() {
            self.buffers.push(tfl::BufferT::default());
        }
        let (type_, buffer) = match data {
            Some((ty, bytes)) => {
                let mut b = tfl::BufferT::default();
                b.data = Some(bytes);
                self.buffers.push(b);
                (ty, self.buffers.len() as u32 - 1)
            }
            None => (tfl::TensorType::FLOAT32, 0),
        };
        // The generated types are non-exhaustive: fill a default.
        let mut t = tfl::TensorT::default();
        t.shape = Some(shape.iter().map(|&d| d as i32).collect());
        t.type_ = type_;
        t.buffer = buffer;
        t.name = Some(name.to_string());
        self.tensors.push(t);
        self.tensors.len() as i32 - 1
    }

    /// An activation tensor: float, or int8 with `q`'s scale (TFLite's int8
    /// zero point is the uint8 one minus 128: the same real values).
    fn activation(&mut self, name: &str, shape: &[usize], q: Option<Affine>) -> i32 {
        let t = self.tensor(name, shape, None);
        if let Some(a) = q {
            self.quantize(t, vec![a.scale], vec![a.zero_point as i64 - 128], 0);
            self.tensors[t as usize].type_ = tfl::TensorType::INT8;
            self.int8 = true;
        }
        t
    }

    fn quantize(&mut self, t: i32, scale: Vec<f32>, zero_point: Vec<i64>, dim: i32) {
        let mut q = tfl::QuantizationParametersT::default();
        q.scale = Some(scale);
        q.zero_point = Some(zero_point);
        q.quantized_dimension = dim;
        self.tensors[t as usize].quantization = Some(Box::new(q));
    }

    fn constant_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> i32 {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, shape, Some((tfl::TensorType::FLOAT32, bytes)))
    }

    fn constant_i32(&mut self, name: &str, shape: &[usize], values: &[i32]) -> i32 {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, shape, Some((tfl::TensorType::INT32, bytes)))
    }

    fn op(
        &mut self,
        code: tfl::BuiltinOperator,
        inputs: Vec<i32>,
        output: i32,
        options: tfl::BuiltinOptionsT,
    ) {
        let index = match self.codes.iter().position(|&c| c == code) {
            Some(i) => i,
            None => {
                self.codes.push(code);
                self.codes.len() - 1
            }
        };
        let mut op = tfl::OperatorT::default();
        op.opcode_index = index as u32;
        op.inputs = Some(inputs);
        op.outputs = Some(vec![output]);
        op.builtin_options = options;
        self.operators.push(op);
    }

    /// An ONNX Conv (group 1 or depthwise) as CONV_2D / DEPTHWISE_CONV_2D; int8 with `quant`
    /// (the input's and the output's quantization).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        n: &NodeProto,
        x: i32,
        shape: [usize; 4],
        inits: &HashMap<&str, &TensorProto>,
        out_name: &str,
        relu6: bool,
        quant: Option<(Affine, Affine)>,
    ) -> Result<(i32, [usize; 4])> {
        let get = |k: usize| -> Result<(&TensorProto, Vec<f32>)> {
            let name = n.input.get(k).ok_or_else(|| anyhow!("missing input {k}"))?;
            let t = inits.get(name.as_str()).ok_or_else(|| anyhow!("{name} is not a constant"))?;
            Ok((t, onnx::tensor_f32_values(t)?))
        };
        let (wt, wv) = get(1)?;
        let (_, bias) = get(2)?;
        let d: Vec<usize> = wt.dims.iter().map(|&v| v as usize).collect();
        ensure!(d.len() == 4 && d[2] == d[3], "weight shape {d:?} is not [out, in, k, k]");
        let (out_c, in_per_group, k) = (d[0], d[1], d[2]);
        let group = attr_int(n, "group", 1) as usize;
        let strides = attr_ints(n, "strides");
        let stride = *strides.first().unwrap_or(&1) as usize;
        ensure!(strides.iter().all(|&s| s as usize == stride), "unequal strides {strides:?}");
        ensure!(
            attr_ints(n, "dilations").iter().all(|&v| v == 1),
            "dilated convolutions are not supported"
        );
        let [_, h, wd, c] = shape;
        ensure!(h == wd, "non-square input {shape:?}");
        // Only TensorFlow SAME padding (extra pixel at the end) maps to TFLite.
        let out_size = h.div_ceil(stride);
        let total = ((out_size - 1) * stride + k).saturating_sub(h) as i64;
        let same = [total / 2, total / 2, total - total / 2, total - total / 2];
        let pads = attr_ints(n, "pads");
        ensure!(
            pads.is_empty() && total == 0 || pads[..] == same,
            "pads {pads:?} are not TensorFlow SAME padding {same:?}"
        );
        let act = if relu6 {
            tfl::ActivationFunctionType::RELU6
        } else {
            tfl::ActivationFunctionType::NONE
        };
        let out_shape = [1, out_size, out_size, out_c];
        let name = n.name();
        let (code, filter, options) = if group == 1 {
            ensure!(
                in_per_group == c,
                "weight expects {in_per_group} input channels, the input has {c}"
            );
            // ONNX [out, in, kh, kw] -> TFLite OHWI [out, kh, kw, in].
            let mut f = vec![0f32; wv.len()];
            for o in 0..out_c {
                for i in 0..c {
                    for y in 0..k {
                        for x in 0..k {
                            f[((o * k + y) * k + x) * c + i] = wv[((o * c + i) * k + y) * k + x];
                        }
                    }
                }
            }
            let t =
                self.filter(&format!("{name}.filter"), &[out_c, k, k, c], &f, &wv, out_c, 0, quant);
            let mut o = tfl::Conv2DOptionsT::default();
            o.padding = tfl::Padding::SAME;
            o.stride_w = stride as i32;
            o.stride_h = stride as i32;
            o.fused_activation_function = act;
            o.dilation_w_factor = 1;
            o.dilation_h_factor = 1;
            (tfl::BuiltinOperator::CONV_2D, t, tfl::BuiltinOptionsT::Conv2DOptions(Box::new(o)))
        } else {
            ensure!(
                group == c && out_c == c && in_per_group == 1,
                "grouped conv (group {group}) that is not depthwise"
            );
            // ONNX [C, 1, kh, kw] -> TFLite [1, kh, kw, C].
            let mut f = vec![0f32; wv.len()];
            for o in 0..c {
                for y in 0..k {
                    for x in 0..k {
                        f[(y * k + x) * c + o] = wv[(o * k + y) * k + x];
                    }
                }
            }
            let t = self.filter(&format!("{name}.filter"), &[1, k, k, c], &f, &wv, c, 3, quant);
            let mut o = tfl::DepthwiseConv2DOptionsT::default();
            o.padding = tfl::Padding::SAME;
            o.stride_w = stride as i32;
            o.stride_h = stride as i32;
            o.depth_multiplier = 1;
            o.fused_activation_function = act;
            o.dilation_w_factor = 1;
            o.dilation_h_factor = 1;
            (
                tfl::BuiltinOperator::DEPTHWISE_CONV_2D,
                t,
                tfl::BuiltinOptionsT::DepthwiseConv2DOptions(Box::new(o)),
            )
        };
        let b = match quant {
            None => self.constant_f32(&format!("{name}.bias"), &[out_c], &bias),
            Some((x_q, _)) => {
                let (q, scales) =
                    quantize::quantize_bias(&bias, x_q.scale, &quantize::weight_scales(&wv, out_c));
                let b = self.constant_i32(&format!("{name}.bias"), &[out_c], &q);
                self.quantize(b, scales, vec![0; out_c], 0);
                b
            }
        };
        let out = self.activation(out_name, &out_shape, quant.map(|q| q.1));
        self.op(code, vec![x, filter, b], out, options);
        Ok((out, out_shape))
    }

    /// A convolution filter `f` (already in TFLite's layout) of the ONNX weight `onnx_w`: float, or
    /// int8 with the ONNX QDQ graph's per-channel scales (computed on the ONNX layout, whose
    /// first dimension is the output channel), channel dimension `dim` of the TFLite layout.
    #[allow(clippy::too_many_arguments)]
    fn filter(
        &mut self,
        name: &str,
        shape: &[usize],
        f: &[f32],
        onnx_w: &[f32],
        channels: usize,
        dim: i32,
        quant: Option<(Affine, Affine)>,
    ) -> i32 {
        if quant.is_none() {
            return self.constant_f32(name, shape, f);
        }
        let scales = quantize::weight_scales(onnx_w, channels);
        // Channel of each element of `f`: first dimension (OHWI) or last (1HWC).
        let per = f.len() / channels;
        let q: Vec<u8> = f
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = if dim == 0 { i / per } else { i % channels };
                (v / scales[ch]).round().clamp(-127.0, 127.0) as i8 as u8
            })
            .collect();
        let t = self.tensor(name, shape, Some((tfl::TensorType::INT8, q)));
        self.quantize(t, scales, vec![0; channels], dim);
        t
    }

    fn finish(self, input: i32, output: i32, description: &str) -> Vec<u8> {
        let codes =
            self.codes
                .iter()
                .map(|&c| {
                    let mut code = tfl::OperatorCodeT::default();
                    code.deprecated_builtin_code = c.0.min(127) as i8;
                    // The versions that introduced int8 (per-channel) kernels, for a fully quantized
                    // twin; 1 (float) otherwise. Runtimes refuse a version they lack.
                    code.version = if self.int8 {
                        match c {
                            tfl::BuiltinOperator::CONV_2D
                            | tfl::BuiltinOperator::DEPTHWISE_CONV_2D => 3,
                            tfl::BuiltinOperator::ADD
                            | tfl::BuiltinOperator::QUANTIZE
                            | tfl::BuiltinOperator::DEQUANTIZE => 2,
                            _ => 1,
                        }
                    } else {
                        1
                    };
                    code.builtin_code = c;
                    code
                })
                .collect();
        let mut subgraph = tfl::SubGraphT::default();
        subgraph.tensors = Some(self.tensors);
        subgraph.inputs = Some(vec![input]);
        subgraph.outputs = Some(vec![output]);
        subgraph.operators = Some(self.operators);
        subgraph.name = Some("main".into());
        let mut model = tfl::ModelT::default();
        model.version = 3;
        model.operator_codes = Some(codes);
        model.subgraphs = Some(vec![subgraph]);
        model.description = Some(description.to_string());
        model.buffers = Some(self.buffers);
        let mut fbb = FlatBufferBuilder::new();
        let root = model.pack(&mut fbb);
        tfl::finish_model_buffer(&mut fbb, root);
        fbb.finished_data().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbr_core::onnx::{
        attr_int, attr_ints, node, tensor_f32, value_info, DataType, Dim, GraphProto,
    };

    /// input [b, 2, 4, 4] -> Conv 3x3/2 (3 out) -> Clip(0, 6) -> GlobalAveragePool -> Flatten.
    fn graph(pads: &[i64], extra: Option<NodeProto>) -> ModelProto {
        let w: Vec<f32> = (0..3 * 2 * 3 * 3).map(|v| v as f32).collect();
        let mut nodes = vec![
            node(
                "Conv",
                "c",
                &["x", "w", "b"],
                &["c"],
                vec![attr_int("group", 1), attr_ints("pads", pads), attr_ints("strides", &[2, 2])],
            ),
            node("Clip", "r", &["c", "lo", "hi"], &["r"], vec![]),
            node("GlobalAveragePool", "p", &["r"], &["p"], vec![]),
            node("Flatten", "e", &["p"], &["e"], vec![attr_int("axis", 1)]),
        ];
        nodes.extend(extra);
        let graph = GraphProto {
            name: Some("t".into()),
            node: nodes,
            initializer: vec![
                tensor_f32("w", &[3, 2, 3, 3], &w),
                tensor_f32("b", &[3], &[0.5, 1.0, 1.5]),
                tensor_f32("lo", &[], &[0.0]),
                tensor_f32("hi", &[], &[6.0]),
            ],
            input: vec![value_info(
                "x",
                DataType::Float,
                &[Dim::Symbolic("b".into()), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
            )],
            output: vec![value_info(
                "e",
                DataType::Float,
                &[Dim::Symbolic("b".into()), Dim::Fixed(3)],
            )],
            ..Default::default()
        };
        ModelProto { graph: Some(graph), ..Default::default() }
    }

    #[test]
    fn writes_nhwc_conv_with_fused_relu6_and_mean() {
        let bytes = embedder_tflite(&graph(&[0, 0, 1, 1], None), None).unwrap();
        assert_eq!(
            bytes,
            embedder_tflite(&graph(&[0, 0, 1, 1], None), None).unwrap(),
            "deterministic"
        );
        let model = tfl::root_as_model(&bytes).unwrap();
        let sub = model.subgraphs().unwrap().get(0);
        let tensors = sub.tensors().unwrap();
        let ops = sub.operators().unwrap();
        assert_eq!(ops.len(), 2);
        let conv = ops.get(0);
        let opts = conv.builtin_options_as_conv_2_doptions().unwrap();
        assert_eq!(
            (opts.stride_h(), opts.padding(), opts.fused_activation_function()),
            (2, tfl::Padding::SAME, tfl::ActivationFunctionType::RELU6)
        );
        let filter = tensors.get(conv.inputs().unwrap().get(1) as usize);
        assert_eq!(filter.shape().unwrap().iter().collect::<Vec<_>>(), [3, 3, 3, 2]);
        let data = model.buffers().unwrap().get(filter.buffer() as usize).data().unwrap();
        let f: Vec<f32> = data
            .bytes()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // OHWI[o=1, y=2, x=0, i=1] = OIHW[o=1, i=1, y=2, x=0] = ((1*2+1)*3+2)*3 = 33.
        assert_eq!(f[((3 + 2) * 3) * 2 + 1], 33.0);
        let input = tensors.get(sub.inputs().unwrap().get(0) as usize);
        assert_eq!(input.shape().unwrap().iter().collect::<Vec<_>>(), [1, 4, 4, 2]);
        let output = tensors.get(sub.outputs().unwrap().get(0) as usize);
        assert_eq!(
            (output.name(), output.shape().unwrap().iter().collect::<Vec<_>>()),
            (Some("e"), vec![1, 3])
        );
    }

    #[test]
    fn writes_a_fully_quantized_twin_with_the_qdq_scales() {
        let ranges = Ranges(
            [("x".to_string(), (-1.0, 1.0)), ("r".to_string(), (0.0, 6.0))].into_iter().collect(),
        );
        let bytes = embedder_tflite(&graph(&[0, 0, 1, 1], None), Some(&ranges)).unwrap();
        let model = tfl::root_as_model(&bytes).unwrap();
        let codes: Vec<_> = model
            .operator_codes()
            .unwrap()
            .iter()
            .map(|c| (c.builtin_code(), c.version()))
            .collect();
        let sub = model.subgraphs().unwrap().get(0);
        let (tensors, ops) = (sub.tensors().unwrap(), sub.operators().unwrap());
        let op_codes: Vec<_> = ops.iter().map(|o| codes[o.opcode_index() as usize]).collect();
        assert_eq!(
            op_codes,
            [
                (tfl::BuiltinOperator::QUANTIZE, 2),
                (tfl::BuiltinOperator::CONV_2D, 3),
                (tfl::BuiltinOperator::DEQUANTIZE, 2),
                (tfl::BuiltinOperator::MEAN, 1)
            ]
        );
        let conv = ops.get(1);
        let t = |k: usize| tensors.get(conv.inputs().unwrap().get(k) as usize);
        let (x, filter, bias) = (t(0), t(1), t(2));
        assert_eq!(
            (x.type_(), filter.type_(), bias.type_()),
            (tfl::TensorType::INT8, tfl::TensorType::INT8, tfl::TensorType::INT32)
        );
        let xq = x.quantization().unwrap();
        let x_affine = quantize::affine(-1.0, 1.0);
        assert_eq!(xq.scale().unwrap().get(0), x_affine.scale);
        assert_eq!(xq.zero_point().unwrap().get(0), x_affine.zero_point as i64 - 128);
        // Per output channel: max |w| / 127 of the ONNX weight rows (values 0..53).
        let fq = filter.quantization().unwrap();
        let scales: Vec<f32> = fq.scale().unwrap().iter().collect();
        assert_eq!(scales, [17.0 / 127.0, 35.0 / 127.0, 53.0 / 127.0]);
        assert_eq!(fq.quantized_dimension(), 0);
        let bq: Vec<f32> = bias.quantization().unwrap().scale().unwrap().iter().collect();
        assert_eq!(bq[2], x_affine.scale * scales[2]);
        let out = tensors.get(conv.outputs().unwrap().get(0) as usize);
        assert_eq!((out.name(), out.type_()), (Some("r"), tfl::TensorType::INT8));
        let output = tensors.get(sub.outputs().unwrap().get(0) as usize);
        assert_eq!(output.type_(), tfl::TensorType::FLOAT32, "the embedding stays float");
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        let err = embedder_tflite(&graph(&[1, 1, 1, 1], None), None).unwrap_err();
        assert!(format!("{err:#}").contains("not TensorFlow SAME padding"), "{err:#}");
        let err = embedder_tflite(
            &graph(&[0, 0, 1, 1], Some(node("Sigmoid", "s", &["e"], &["s"], vec![]))),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("node s is Sigmoid"), "{err}");
    }
}
