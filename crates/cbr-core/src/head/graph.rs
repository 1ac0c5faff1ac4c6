//! The ONNX lowering of a [`HeadPlan`]: the retrieval head as ONNX operations
//! appended to an embedder graph (and read back: the stored index, the
//! embedder under a head).
//!
//! The stored index is the unit rows themselves (what `cbr add` reads back),
//! in the chosen dtype; a centring head computes `q·rᵢ = (q·uᵢ − q·m)·kᵢ` from
//! them rather than storing the centred rows a second time.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};

use super::plan::{HeadPlan, MaxLevel, Op};
use super::{
    rules, ImageId, Index, IndexDtype, RetrievalHead, CLASS_SIMILARITIES, EMBEDDING, SCORES,
    SIMILARITIES,
};

/// Initializer names of the stored index (read back by [`read_index`]).
pub const INDEX_UNITS: &str = "cbr/index_embeddings";
/// An int8 index's rows, stored transposed (`[dim, rows]`).
pub const INDEX_UNITS_BY_DIM: &str = "cbr/index_embeddings_by_dim";
pub const INDEX_SCALES: &str = "cbr/index_scales";
pub const INDEX_INVERSE_NORMS: &str = "cbr/index_inverse_norms";
use crate::onnx::{
    self, attr_int, attr_ints, node, tensor_f32, tensor_i64, value_info, DataType, Dim, GraphProto,
    ModelProto,
};

impl RetrievalHead {
    /// Appends the head to an embedder graph whose embedding output is
    /// `embedding_output`. Every node, initializer, attribute and opset import
    /// of the embedder is kept; the graph outputs become `scores`,
    /// `class_similarities`, `similarities` and `embedding`.
    pub fn append_to(&self, embedder: &ModelProto, embedding_output: &str) -> Result<ModelProto> {
        let mut model = lower(&rules::plan(self), embedder, embedding_output)?;
        let ids: String = self.index.images.iter().map(|id| id.to_string()).collect();
        onnx::set_metadata(&mut model, INDEX_IMAGES_KEY, &ids);
        Ok(model)
    }
}

/// Appends `plan` to an embedder graph whose embedding output is
/// `embedding_output`, as ONNX nodes; the outputs are the plan's `scores`,
/// `class_similarities`, `similarities` and `embedding`. Every node and
/// initializer added is named `cbr/…` (so [`embedder_of`] can take them off).
pub fn lower(plan: &HeadPlan, embedder: &ModelProto, embedding_output: &str) -> Result<ModelProto> {
    let opset = onnx::default_opset(embedder)
        .ok_or_else(|| anyhow!("the embedder imports no default-domain opset"))?;
    if opset < 11 {
        bail!("the embedder uses ONNX opset {opset}; cbr needs opset 11 or newer (re-export the model with a newer opset)");
    }
    let similarities = plan
        .similarities
        .ok_or_else(|| anyhow!("an ONNX head needs index rows to match (this plan has none)"))?;
    let mut model = embedder.clone();
    let graph = model.graph.as_mut().ok_or_else(|| anyhow!("the embedder has no graph"))?;
    let batch_dim = expose_embedding(
        graph,
        embedding_output,
        &[SCORES, CLASS_SIMILARITIES, SIMILARITIES, EMBEDDING],
    )?;
    // Each exposed value is named after its output; a value exposed twice
    // (scores without a softmax are the class similarities) gets an Identity.
    let exposed = [
        (SIMILARITIES, similarities),
        (CLASS_SIMILARITIES, plan.class_similarities),
        (SCORES, plan.scores),
    ];
    let mut low = Lowering { graph, opset, dim: plan.dim as i64, used: HashMap::new() };
    let mut names: Vec<String> = vec![String::new(); plan.steps.len()];
    names[plan.embedding] = EMBEDDING.to_string();
    for (i, step) in plan.steps.iter().enumerate() {
        if i == plan.embedding {
            continue;
        }
        let base = match &step.op {
            Op::Embedding | Op::Supplied { .. } => {
                bail!("step {i} ({:?}) has no ONNX form: the plan must compute it", step.op)
            }
            _ if i == plan.query => "cbr/query".to_string(),
            _ if Some(i) == plan.novelty => "cbr/nearest_class_mean".to_string(),
            Op::Power { .. } => "cbr/power".to_string(),
            Op::L2Normalize => "cbr/l2_normalize".to_string(),
            Op::Subtract { .. } => "cbr/centered".to_string(),
            Op::Similarity { .. } => "cbr/similarity".to_string(),
            Op::ClassMax { .. } => "cbr/max".to_string(),
            Op::Linear { name, .. } => format!("cbr/{name}"),
            Op::Average => "cbr/average".to_string(),
            Op::Softmax { .. } => "cbr/softmax".to_string(),
            Op::Sigmoid { .. } => "cbr/known".to_string(),
            Op::AppendUnknown => "cbr/with_unknown".to_string(),
        };
        let base = low.fresh(&base);
        let out =
            exposed.iter().find(|(_, v)| *v == i).map_or(base.clone(), |(n, _)| n.to_string());
        let inputs: Vec<&str> = step.inputs.iter().map(|&j| names[j].as_str()).collect();
        low.emit(&step.op, &inputs, &base, &out)?;
        names[i] = out;
    }
    for (name, v) in exposed {
        if names[v] != name {
            let node_name = format!("cbr/{name}");
            low.graph.node.push(node("Identity", &node_name, &[&names[v]], &[name], vec![]));
        }
    }
    let (n, d, classes, scores) = (
        plan.steps[similarities].len as i64,
        plan.dim as i64,
        plan.classes as i64,
        plan.steps[plan.scores].len as i64,
    );
    let graph = low.graph;
    graph.output.clear();
    graph.output.push(value_info(
        SCORES,
        DataType::Float,
        &[batch_dim.clone(), Dim::Fixed(scores)],
    ));
    graph.output.push(value_info(
        CLASS_SIMILARITIES,
        DataType::Float,
        &[batch_dim.clone(), Dim::Fixed(classes)],
    ));
    graph.output.push(value_info(
        SIMILARITIES,
        DataType::Float,
        &[batch_dim.clone(), Dim::Fixed(n)],
    ));
    graph.output.push(value_info(EMBEDDING, DataType::Float, &[batch_dim, Dim::Fixed(d)]));
    Ok(model)
}

/// The state of one ONNX lowering: the graph being extended and the names used.
struct Lowering<'g> {
    graph: &'g mut GraphProto,
    opset: i64,
    dim: i64,
    used: HashMap<String, usize>,
}

impl Lowering<'_> {
    /// `base`, or `base_2`, `base_3`, … when a step of the same kind came first.
    fn fresh(&mut self, base: &str) -> String {
        let n = self.used.entry(base.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        }
    }

    fn constant(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        self.graph.initializer.push(tensor_f32(name, dims, values));
        name.to_string()
    }

    fn op(&mut self, op: &str, name: &str, inputs: &[&str], output: &str) {
        self.graph.node.push(node(op, name, inputs, &[output], vec![]));
    }

    /// Emits `op` reading `inputs` and writing tensor `out`; every other
    /// node and initializer is named from `base` (a fresh `cbr/…` name).
    fn emit(&mut self, op: &Op, inputs: &[&str], base: &str, out: &str) -> Result<()> {
        let x = inputs.first().copied().unwrap_or_default();
        match op {
            Op::Embedding | Op::Supplied { .. } => unreachable!("rejected by `lower`"),
            Op::Power { exponent } => {
                // sign(x) * |x|^p
                let (abs, pow, sign) =
                    (format!("{base}_abs"), format!("{base}_pow"), format!("{base}_sign"));
                self.op("Abs", &abs, &[x], &abs);
                if *exponent == 0.5 {
                    self.op("Sqrt", &pow, &[&abs], &pow);
                } else {
                    let e = self.constant(&format!("{base}_exponent"), &[], &[*exponent]);
                    self.op("Pow", &pow, &[&abs, &e], &pow);
                }
                self.op("Sign", &sign, &[x], &sign);
                self.op("Mul", base, &[&pow, &sign], out);
            }
            Op::L2Normalize => self.graph.node.push(node(
                "LpNormalization",
                base,
                &[x],
                &[out],
                vec![attr_int("axis", -1), attr_int("p", 2)],
            )),
            Op::Subtract { vector } => {
                let m = self.constant(&format!("{base}_mean"), &[vector.len() as i64], vector);
                self.op("Sub", base, &[x, &m], out);
            }
            Op::Similarity { index, centring } => {
                // q·uᵢ for every stored row: into `out` directly unless centring follows.
                let products = match centring {
                    Some(_) => format!("{base}_units"),
                    None => out.to_string(),
                };
                let node_name = if centring.is_some() { products.as_str() } else { base };
                if index.dtype == IndexDtype::Int8 {
                    self.int8_products(index, x, base, node_name, &products);
                } else {
                    let units = self.index_units(index);
                    self.graph.node.push(node(
                        "Gemm",
                        node_name,
                        &[x, &units],
                        &[&products],
                        vec![attr_int("transB", 1)],
                    ));
                }
                if let Some(c) = centring {
                    // Row i is (u_i − m)·k_i, so q·row_i = (q·u_i − q·m)·k_i: the
                    // stored units are used as they are, at the cost of two
                    // [B, N] element-wise operations.
                    let (qm, centred) =
                        (format!("{base}_query_dot_mean"), format!("{base}_centered"));
                    let column = format!("{base}_mean_column");
                    self.constant(&column, &[c.mean.len() as i64, 1], c.mean);
                    self.op("MatMul", &qm, &[x, &column], &qm);
                    self.op("Sub", &centred, &[&products, &qm], &centred);
                    let k = self.constant(
                        INDEX_INVERSE_NORMS,
                        &[c.inverse_norms.len() as i64],
                        c.inverse_norms,
                    );
                    self.op("Mul", base, &[&centred, &k], out);
                }
            }
            Op::ClassMax { levels } => {
                let mut input = x.to_string();
                for (i, level) in levels.iter().enumerate() {
                    let output =
                        if i + 1 == levels.len() { out.to_string() } else { format!("{base}{i}") };
                    emit_max_level(
                        self.graph,
                        level,
                        &input,
                        &output,
                        &format!("{base}{i}"),
                        self.opset,
                    );
                    input = output;
                }
            }
            Op::Linear { weights, bias, .. } => {
                let d = self.dim;
                let rows = weights.len() as i64 / d;
                let w = self.constant(&format!("{base}_weights"), &[rows, d], weights);
                let mut ins = vec![x, w.as_str()];
                let b;
                if let Some(bias) = bias {
                    b = self.constant(&format!("{base}_bias"), &[rows], bias);
                    ins.push(&b);
                }
                self.graph.node.push(node("Gemm", base, &ins, &[out], vec![attr_int("transB", 1)]));
            }
            Op::Average => {
                let (sum, half) = (format!("{base}_sum"), format!("{base}_half"));
                self.op("Add", &sum, inputs, &sum);
                self.constant(&half, &[], &[0.5]);
                self.op("Mul", base, &[&sum, &half], out);
            }
            Op::Softmax { temperature } => {
                let (t, logits) = (format!("{base}_inverse_temperature"), format!("{base}_logits"));
                self.constant(&t, &[], &[1.0 / temperature]);
                self.op("Mul", &logits, &[x, &t], &logits);
                // Over the class axis; [B, C] is 2-D, so axis 1 means the same in every opset.
                self.graph.node.push(node(
                    "Softmax",
                    base,
                    &[&logits],
                    &[out],
                    vec![attr_int("axis", 1)],
                ));
            }
            Op::Sigmoid { scale, offset } => {
                let (b, a) = (format!("{base}_offset"), format!("{base}_scale"));
                let (shifted, scaled) = (format!("{base}_shifted"), format!("{base}_logit"));
                self.constant(&b, &[], &[*offset]);
                self.constant(&a, &[], &[*scale]);
                self.op("Sub", &shifted, &[x, &b], &shifted);
                self.op("Mul", &scaled, &[&shifted, &a], &scaled);
                self.op("Sigmoid", base, &[&scaled], out);
            }
            Op::AppendUnknown => {
                // [p · x, 1 − p]: x [B, C] times p [B, 1] broadcasts over the classes.
                let (known, unknown, one) =
                    (format!("{base}_known"), format!("{base}_unknown"), format!("{base}_one"));
                self.op("Mul", &known, &[x, inputs[1]], &known);
                self.constant(&one, &[], &[1.0]);
                self.op("Sub", &unknown, &[&one, inputs[1]], &unknown);
                self.graph.node.push(node(
                    "Concat",
                    base,
                    &[&known, &unknown],
                    &[out],
                    vec![attr_int("axis", 1)],
                ));
            }
        }
        Ok(())
    }

    /// The stored index (its unit rows in their dtype) and the float tensor
    /// the similarity reads; ONNX Runtime folds the widening at load time.
    fn index_units(&mut self, index: &Index) -> String {
        let (n, d) = (index.len() as i64, index.dim as i64);
        match index.dtype {
            IndexDtype::F32 => self.constant(INDEX_UNITS, &[n, d], &index.units()),
            IndexDtype::F16 => {
                self.graph.initializer.push(onnx::tensor_f16_bits(
                    INDEX_UNITS,
                    &[n, d],
                    &index.f16_bits(),
                ));
                self.graph.node.push(node(
                    "Cast",
                    "cbr/index_f32",
                    &[INDEX_UNITS],
                    &["cbr/index_f32"],
                    vec![attr_int("to", DataType::Float as i64)],
                ));
                "cbr/index_f32".to_string()
            }
            IndexDtype::Int8 => unreachable!("int8 rows are matched by `int8_products`"),
        }
    }

    /// `q·uᵢ` over an int8 index as [`Op::Similarity`] defines it, into
    /// `out`: the query quantized to int8 (one scale per query, stored as
    /// uint8 + 128 so ONNX Runtime takes its fast uint8 × int8 kernel),
    /// `MatMulInteger` with the rows, then both scales (the last node is
    /// `node_name`). The rows are stored transposed (`[dim, rows]`, the
    /// layout `MatMulInteger` reads), so no runtime widens or copies them at load.
    fn int8_products(&mut self, index: &Index, x: &str, base: &str, node_name: &str, out: &str) {
        let (n, d) = (index.len(), index.dim);
        let mut by_dim = vec![0u8; n * d];
        for (r, row) in index.int8_values().chunks_exact(d).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                by_dim[k * n + r] = v as u8;
            }
        }
        // Built as bytes in place: a million rows are 1.3 GB, not to be copied again.
        let rows =
            onnx::tensor_raw(INDEX_UNITS_BY_DIM, &[d as i64, n as i64], DataType::Int8, 1, by_dim);
        self.graph.initializer.push(rows);
        self.constant(INDEX_SCALES, &[n as i64], &index.scales);
        let q = |s: &str| format!("{base}_query_{s}");
        self.op("Abs", &q("abs"), &[x], &q("abs"));
        emit_reduce_max(self.graph, &q("max"), &q("abs"), &q("max"), 1, true, self.opset);
        self.constant(&q("levels"), &[], &[127.0]);
        self.op("Div", &q("max_step"), &[&q("max"), &q("levels")], &q("max_step"));
        self.constant(&q("smallest_step"), &[], &[f32::MIN_POSITIVE]);
        self.op("Max", &q("scale"), &[&q("max_step"), &q("smallest_step")], &q("scale"));
        self.op("Div", &q("steps"), &[x, &q("scale")], &q("steps"));
        self.op("Round", &q("int8"), &[&q("steps")], &q("int8"));
        self.constant(&q("offset"), &[], &[128.0]);
        self.op("Add", &q("shifted"), &[&q("int8"), &q("offset")], &q("shifted"));
        self.graph.node.push(node(
            "Cast",
            &q("uint8"),
            &[&q("shifted")],
            &[&q("uint8")],
            vec![attr_int("to", DataType::Uint8 as i64)],
        ));
        self.graph.initializer.push(onnx::tensor_u8(&q("zero_point"), &[], &[128]));
        let (sums, sums_f32, scaled) =
            (format!("{base}_sums"), format!("{base}_sums_f32"), format!("{base}_query_scaled"));
        self.graph.node.push(node(
            "MatMulInteger",
            &sums,
            &[&q("uint8"), INDEX_UNITS_BY_DIM, &q("zero_point")],
            &[&sums],
            vec![],
        ));
        self.graph.node.push(node(
            "Cast",
            &sums_f32,
            &[&sums],
            &[&sums_f32],
            vec![attr_int("to", DataType::Float as i64)],
        ));
        self.op("Mul", &scaled, &[&sums_f32, &q("scale")], &scaled);
        self.op("Mul", node_name, &[&scaled, INDEX_SCALES], out);
    }
}

/// Makes the embedder output `embedding_output` available as a `[B, D]`
/// tensor named `embedding` (flattening `[B, D, 1, 1]`-style outputs) and
/// returns its batch dimension. The embedder must not already produce any of
/// the `reserved` names (other than its own output being called `embedding`).
pub fn expose_embedding(
    graph: &mut GraphProto,
    embedding_output: &str,
    reserved: &[&str],
) -> Result<Dim> {
    let out = graph
        .output
        .iter()
        .find(|o| o.name.as_deref() == Some(embedding_output))
        .cloned()
        .ok_or_else(|| anyhow!("the embedder has no output {embedding_output}"))?;
    let (_, out_dims) = onnx::tensor_type(&out)
        .ok_or_else(|| anyhow!("output {embedding_output} is not a tensor"))?;
    let batch_dim = match out_dims.first() {
        Some(Some(n)) => Dim::Fixed(*n),
        _ => Dim::Symbolic("batch".into()),
    };
    for &name in reserved {
        let produced = graph.node.iter().any(|n| n.output.iter().any(|o| o == name));
        if produced && !(name == EMBEDDING && embedding_output == EMBEDDING) {
            bail!("the embedder already has a tensor named {name:?}; cbr needs that name for its own output");
        }
    }
    // Flatten [B, D, 1, 1]-style outputs to [B, D].
    let flat = if out_dims.len() == 2 {
        embedding_output.to_string()
    } else {
        graph.node.push(node(
            "Flatten",
            "cbr/flatten",
            &[embedding_output],
            &["cbr/embedding_flat"],
            vec![attr_int("axis", 1)],
        ));
        "cbr/embedding_flat".to_string()
    };
    if flat != EMBEDDING {
        graph.node.push(node("Identity", "cbr/embedding", &[&flat], &[EMBEDDING], vec![]));
    }
    Ok(batch_dim)
}

/// Metadata key holding the source image id of every index row (32 hex
/// digits per row, concatenated, in row order).
pub const INDEX_IMAGES_KEY: &str = "cbr.index_images";

/// Reads the stored index back from a cbr model: unit rows (exactly as
/// stored), per-row labels (from `labels` and `rows_per_label`, the model's
/// metadata) and image ids.
pub fn read_index(
    model: &ModelProto,
    labels: &[String],
    rows_per_label: &[usize],
) -> Result<Index> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let find = |name: &str| graph.initializer.iter().find(|t| t.name.as_deref() == Some(name));
    // int8 rows are stored transposed ([dim, rows]); f32 and f16 rows, and
    // the int8 rows of files from before the int8 query, as [rows, dim].
    let (units, by_dim) = match (find(INDEX_UNITS), find(INDEX_UNITS_BY_DIM)) {
        (Some(t), _) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => {
            bail!("the model has no stored index ({INDEX_UNITS}): it was not built by `cbr build`")
        }
    };
    let (n, dim) = match (&units.dims[..], by_dim) {
        (&[n, d], false) | (&[d, n], true) if n > 0 && d > 0 => (n as usize, d as usize),
        _ => bail!("the stored index has shape {:?}, expected [rows, dim]", units.dims),
    };
    let dtype = match units.data_type.and_then(|d| DataType::try_from(d).ok()) {
        Some(DataType::Float16) => IndexDtype::F16,
        Some(DataType::Int8) => IndexDtype::Int8,
        _ if by_dim => bail!("{INDEX_UNITS_BY_DIM} must hold int8 values"),
        _ => IndexDtype::F32,
    };
    let stored = |values: usize| -> Result<()> {
        if values != n * dim {
            bail!("the stored index holds {values} values, expected {n} x {dim}");
        }
        Ok(())
    };
    let mut int8 = Vec::new();
    let mut values = Vec::new();
    let mut scales = Vec::new();
    if dtype == IndexDtype::Int8 {
        let raw =
            units.raw_data.as_deref().ok_or_else(|| anyhow!("the int8 index has no raw data"))?;
        stored(raw.len())?;
        int8 = if by_dim {
            let mut rows = vec![0i8; n * dim];
            for (k, column) in raw.chunks_exact(n).enumerate() {
                for (r, &v) in column.iter().enumerate() {
                    rows[r * dim + k] = v as i8;
                }
            }
            rows
        } else {
            raw.iter().map(|&v| v as i8).collect()
        };
        let s = find(INDEX_SCALES)
            .ok_or_else(|| anyhow!("an int8 index needs {INDEX_SCALES}, which the model lacks"))?;
        scales = onnx::tensor_f32_values(s)?;
        if scales.len() != n {
            bail!("{INDEX_SCALES} has {} values for {n} rows", scales.len());
        }
    } else {
        values = onnx::tensor_values_as_f32(units)?;
        stored(values.len())?;
    }
    if labels.len() != rows_per_label.len() || rows_per_label.iter().sum::<usize>() != n {
        bail!(
            "the metadata counts {} index rows in {} classes but the model stores {n}",
            rows_per_label.iter().sum::<usize>(),
            labels.len()
        );
    }
    let row_labels: Vec<String> = labels
        .iter()
        .zip(rows_per_label)
        .flat_map(|(l, &k)| std::iter::repeat_n(l.clone(), k))
        .collect();
    let ids = onnx::metadata(model, INDEX_IMAGES_KEY).ok_or_else(|| anyhow!("the model has no image ids ({INDEX_IMAGES_KEY}): it was built by an older cbr; rebuild it to edit it"))?;
    if ids.len() != 32 * n {
        bail!("{INDEX_IMAGES_KEY} has {} characters, expected 32 for each of {n} rows", ids.len());
    }
    let images =
        (0..n).map(|i| ImageId::parse(&ids[32 * i..32 * (i + 1)])).collect::<Result<Vec<_>>>()?;
    if dtype == IndexDtype::Int8 {
        Index::from_int8(dim, int8, scales, row_labels, images)
    } else {
        Index::from_units(dim, dtype, values, row_labels, images)
    }
}

/// The embedder a cbr model was built on: the model without the head's
/// nodes, initializers and metadata, with the embedding as its output again.
/// Appending a head to it gives the same bytes as appending to the original.
pub fn embedder_of(model: &ModelProto, embedding_output: &str) -> Result<ModelProto> {
    let mut model = model.clone();
    // What `cbr build` adds: the classifier's metadata (key `cbr`) and `cbr.*` keys.
    model
        .metadata_props
        .retain(|e| !e.key.as_deref().is_some_and(|k| k == "cbr" || k.starts_with("cbr.")));
    let graph = model.graph.as_mut().ok_or_else(|| anyhow!("the model has no graph"))?;
    let ours = |name: &Option<String>| name.as_deref().is_some_and(|n| n.starts_with("cbr/"));
    let flattened = graph.node.iter().any(|n| n.name.as_deref() == Some("cbr/flatten"));
    graph.node.retain(|n| !ours(&n.name));
    graph.initializer.retain(|t| !ours(&t.name));
    let embedding = graph
        .output
        .iter()
        .find(|o| o.name.as_deref() == Some(EMBEDDING))
        .ok_or_else(|| anyhow!("the model has no {EMBEDDING} output"))?;
    let (_, dims) = onnx::tensor_type(embedding)
        .ok_or_else(|| anyhow!("output {EMBEDDING} is not a tensor"))?;
    let (batch, dim) = match dims[..] {
        [b, Some(d)] => (b.map_or(Dim::Symbolic("batch".into()), Dim::Fixed), d),
        _ => bail!("output {EMBEDDING} has shape {dims:?}, expected [batch, dim]"),
    };
    // `append_to` reads only the rank and the batch size of this output.
    let shape = if flattened {
        vec![batch, Dim::Fixed(dim), Dim::Fixed(1), Dim::Fixed(1)]
    } else {
        vec![batch, Dim::Fixed(dim)]
    };
    graph.output = vec![value_info(embedding_output, DataType::Float, &shape)];
    Ok(model)
}

/// One level of a max aggregation as Gather (unless the level is a plain
/// reshape), Reshape to `[B, groups, width]` and ReduceMax over the last axis.
fn emit_max_level(
    graph: &mut GraphProto,
    level: &MaxLevel,
    input: &str,
    output: &str,
    prefix: &str,
    opset: i64,
) {
    let mut x = input.to_string();
    if let Some(index) = &level.index {
        let idx = format!("{prefix}_index");
        graph.initializer.push(tensor_i64(&idx, &[index.len() as i64], index));
        let gathered = format!("{prefix}_gathered");
        graph.node.push(node(
            "Gather",
            &format!("{prefix}_gather"),
            &[&x, &idx],
            &[&gathered],
            vec![attr_int("axis", 1)],
        ));
        x = gathered;
    }
    let shape = format!("{prefix}_shape");
    // 0 keeps the batch dimension as it is.
    graph.initializer.push(tensor_i64(&shape, &[3], &[0, level.groups as i64, level.width as i64]));
    let blocks = format!("{prefix}_blocks");
    graph.node.push(node(
        "Reshape",
        &format!("{prefix}_reshape"),
        &[&x, &shape],
        &[&blocks],
        vec![],
    ));
    emit_reduce_max(graph, prefix, &blocks, output, 2, false, opset);
}

/// `ReduceMax` of `input` over `axis` into `output`, as the opset spells it
/// (axes an input from opset 18, an attribute before); named `{prefix}_reduce`.
fn emit_reduce_max(
    graph: &mut GraphProto,
    prefix: &str,
    input: &str,
    output: &str,
    axis: i64,
    keepdims: bool,
    opset: i64,
) {
    let keepdims = attr_int("keepdims", keepdims as i64);
    if opset >= 18 {
        let axes = format!("{prefix}_axes");
        graph.initializer.push(tensor_i64(&axes, &[1], &[axis]));
        graph.node.push(node(
            "ReduceMax",
            &format!("{prefix}_reduce"),
            &[input, &axes],
            &[output],
            vec![keepdims],
        ));
    } else {
        graph.node.push(node(
            "ReduceMax",
            &format!("{prefix}_reduce"),
            &[input],
            &[output],
            vec![attr_ints("axes", &[axis]), keepdims],
        ));
    }
}
