//! The retrieval head as ONNX operations appended to an embedder graph.
//!
//! The operation count is independent of the number of classes. `max` takes,
//! per class, the best-matching image: gather the similarities into a
//! `[B, classes, width]` block padded with repeats of a class's own images (a
//! repeat cannot change a maximum), then ReduceMax. When class sizes are very
//! uneven one wide block would waste memory, so big classes are split into
//! chunks first and the max is taken in a few levels; the number of levels
//! grows with log(largest class / mean class), never with the number of classes.

use anyhow::{anyhow, bail, Result};

use super::{
    ImageId, Index, IndexDtype, RetrievalHead, CLASS_SIMILARITIES, EMBEDDING, SCORES, SIMILARITIES,
};

/// Initializer names of the stored index (read back by [`read_index`]).
pub const INDEX_UNITS: &str = "cbr/index_embeddings";
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
        let opset = onnx::default_opset(embedder)
            .ok_or_else(|| anyhow!("the embedder imports no default-domain opset"))?;
        if opset < 11 {
            bail!("the embedder uses ONNX opset {opset}; cbr needs opset 11 or newer (re-export the model with a newer opset)");
        }
        let mut model = embedder.clone();
        let graph = model.graph.as_mut().ok_or_else(|| anyhow!("the embedder has no graph"))?;
        let batch_dim = expose_embedding(
            graph,
            embedding_output,
            &[SCORES, CLASS_SIMILARITIES, SIMILARITIES, EMBEDDING],
        )?;

        let n = self.len() as i64;
        let d = self.dim as i64;
        let classes = self.labels.len() as i64;
        let l2 = |graph: &mut GraphProto, name: &str, input: &str, output: &str| {
            graph.node.push(node(
                "LpNormalization",
                name,
                &[input],
                &[output],
                vec![attr_int("axis", -1), attr_int("p", 2)],
            ));
        };
        let mut raw = EMBEDDING.to_string();
        if let Some(p) = self.power {
            // sign(x) * |x|^p
            graph.node.push(node(
                "Abs",
                "cbr/power_abs",
                &[EMBEDDING],
                &["cbr/embedding_abs"],
                vec![],
            ));
            if p == 0.5 {
                graph.node.push(node(
                    "Sqrt",
                    "cbr/power",
                    &["cbr/embedding_abs"],
                    &["cbr/embedding_pow"],
                    vec![],
                ));
            } else {
                graph.initializer.push(tensor_f32("cbr/power_exponent", &[], &[p]));
                graph.node.push(node(
                    "Pow",
                    "cbr/power",
                    &["cbr/embedding_abs", "cbr/power_exponent"],
                    &["cbr/embedding_pow"],
                    vec![],
                ));
            }
            graph.node.push(node(
                "Sign",
                "cbr/power_sign",
                &[EMBEDDING],
                &["cbr/embedding_sign"],
                vec![],
            ));
            graph.node.push(node(
                "Mul",
                "cbr/power_signed",
                &["cbr/embedding_pow", "cbr/embedding_sign"],
                &["cbr/embedding_power"],
                vec![],
            ));
            raw = "cbr/embedding_power".to_string();
        }
        l2(graph, "cbr/l2_normalize", &raw, "cbr/embedding_l2");
        let mut query = "cbr/embedding_l2".to_string();
        if let Some(mean) = &self.center {
            graph.initializer.push(tensor_f32("cbr/index_mean", &[d], mean));
            graph.node.push(node(
                "Sub",
                "cbr/center",
                &[&query, "cbr/index_mean"],
                &["cbr/embedding_centered"],
                vec![],
            ));
            l2(graph, "cbr/l2_normalize_centered", "cbr/embedding_centered", "cbr/query");
            query = "cbr/query".to_string();
        }
        // The index is stored as its unit rows (what `cbr add` needs back), in
        // the chosen dtype; ONNX Runtime folds the widening Cast at load time.
        let units = match self.index.dtype {
            IndexDtype::F32 => {
                graph.initializer.push(tensor_f32(INDEX_UNITS, &[n, d], &self.index.units));
                INDEX_UNITS.to_string()
            }
            IndexDtype::F16 => {
                graph.initializer.push(onnx::tensor_f16_bits(
                    INDEX_UNITS,
                    &[n, d],
                    &self.index.f16_bits(),
                ));
                graph.node.push(node(
                    "Cast",
                    "cbr/index_f32",
                    &[INDEX_UNITS],
                    &["cbr/index_f32"],
                    vec![attr_int("to", DataType::Float as i64)],
                ));
                "cbr/index_f32".to_string()
            }
            IndexDtype::Int8 => {
                graph.initializer.push(onnx::tensor_i8(
                    INDEX_UNITS,
                    &[n, d],
                    &self.index.int8_values(),
                ));
                graph.initializer.push(tensor_f32(INDEX_SCALES, &[n, 1], &self.index.scales));
                graph.node.push(node(
                    "Cast",
                    "cbr/index_cast",
                    &[INDEX_UNITS],
                    &["cbr/index_cast"],
                    vec![attr_int("to", DataType::Float as i64)],
                ));
                graph.node.push(node(
                    "Mul",
                    "cbr/index_f32",
                    &["cbr/index_cast", INDEX_SCALES],
                    &["cbr/index_f32"],
                    vec![],
                ));
                "cbr/index_f32".to_string()
            }
        };
        if let Some(mean) = &self.center {
            // Row i is (u_i − m)·k_i, so q·row_i = (q·u_i − q·m)·k_i: the
            // stored units are used as they are, at the cost of two [B, N]
            // element-wise operations.
            graph.node.push(node(
                "Gemm",
                "cbr/unit_similarity",
                &[&query, &units],
                &["cbr/unit_similarity"],
                vec![attr_int("transB", 1)],
            ));
            graph.initializer.push(tensor_f32("cbr/index_mean_column", &[d, 1], mean));
            graph.node.push(node(
                "MatMul",
                "cbr/query_dot_mean",
                &[&query, "cbr/index_mean_column"],
                &["cbr/query_dot_mean"],
                vec![],
            ));
            graph.node.push(node(
                "Sub",
                "cbr/unit_similarity_centered",
                &["cbr/unit_similarity", "cbr/query_dot_mean"],
                &["cbr/unit_similarity_centered"],
                vec![],
            ));
            graph.initializer.push(tensor_f32(INDEX_INVERSE_NORMS, &[n], &self.inverse_norms));
            graph.node.push(node(
                "Mul",
                "cbr/similarity",
                &["cbr/unit_similarity_centered", INDEX_INVERSE_NORMS],
                &[SIMILARITIES],
                vec![],
            ));
        } else {
            graph.node.push(node(
                "Gemm",
                "cbr/similarity",
                &[&query, &units],
                &[SIMILARITIES],
                vec![attr_int("transB", 1)],
            ));
        }

        let class_max = if self.aggregation.uses_max() {
            let levels = plan_max(self.groups());
            let mut input = SIMILARITIES.to_string();
            for (i, level) in levels.iter().enumerate() {
                let output = format!("cbr/max{i}");
                emit_max_level(graph, level, &input, &output, i, opset);
                input = output;
            }
            Some(input)
        } else {
            None
        };
        let class_centroid = if self.aggregation.uses_centroid() {
            graph.initializer.push(tensor_f32(
                "cbr/class_centroids",
                &[classes, d],
                &self.centroids,
            ));
            graph.node.push(node(
                "Gemm",
                "cbr/centroid_similarity",
                &[&query, "cbr/class_centroids"],
                &["cbr/centroid"],
                vec![attr_int("transB", 1)],
            ));
            Some("cbr/centroid".to_string())
        } else {
            None
        };
        if let Some(disc) = &self.discriminant {
            graph.initializer.push(tensor_f32(
                "cbr/discriminant_weights",
                &[classes, d],
                &disc.weights,
            ));
            graph.initializer.push(tensor_f32("cbr/discriminant_bias", &[classes], &disc.bias));
            graph.node.push(node(
                "Gemm",
                "cbr/discriminant",
                &[&query, "cbr/discriminant_weights", "cbr/discriminant_bias"],
                &[CLASS_SIMILARITIES],
                vec![attr_int("transB", 1)],
            ));
        } else {
            match (class_max, class_centroid) {
                (Some(m), Some(c)) => {
                    graph.node.push(node(
                        "Add",
                        "cbr/blend_add",
                        &[&m, &c],
                        &["cbr/blend_sum"],
                        vec![],
                    ));
                    graph.initializer.push(tensor_f32("cbr/half", &[], &[0.5]));
                    graph.node.push(node(
                        "Mul",
                        "cbr/blend",
                        &["cbr/blend_sum", "cbr/half"],
                        &[CLASS_SIMILARITIES],
                        vec![],
                    ));
                }
                (Some(x), None) | (None, Some(x)) => graph.node.push(node(
                    "Identity",
                    "cbr/class_similarities",
                    &[&x],
                    &[CLASS_SIMILARITIES],
                    vec![],
                )),
                (None, None) => unreachable!("max, centroid and blend use max or centroid"),
            }
        }
        match self.temperature {
            Some(t) => {
                graph.initializer.push(tensor_f32("cbr/inverse_temperature", &[], &[1.0 / t]));
                graph.node.push(node(
                    "Mul",
                    "cbr/scale",
                    &[CLASS_SIMILARITIES, "cbr/inverse_temperature"],
                    &["cbr/logits"],
                    vec![],
                ));
                // Softmax over the class axis; [B, C] is 2-D, so axis 1 means the same in every opset.
                graph.node.push(node(
                    "Softmax",
                    "cbr/softmax",
                    &["cbr/logits"],
                    &[SCORES],
                    vec![attr_int("axis", 1)],
                ));
            }
            None => graph.node.push(node(
                "Identity",
                "cbr/scores",
                &[CLASS_SIMILARITIES],
                &[SCORES],
                vec![],
            )),
        }

        let ids: String = self.index.images.iter().map(|id| id.to_string()).collect();
        graph.output.clear();
        graph.output.push(value_info(
            SCORES,
            DataType::Float,
            &[batch_dim.clone(), Dim::Fixed(classes)],
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
        onnx::set_metadata(&mut model, INDEX_IMAGES_KEY, &ids);
        Ok(model)
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
    let units = find(INDEX_UNITS).ok_or_else(|| {
        anyhow!("the model has no stored index ({INDEX_UNITS}): it was not built by `cbr build`")
    })?;
    let (n, dim) = match units.dims[..] {
        [n, d] if n > 0 && d > 0 => (n as usize, d as usize),
        _ => bail!("{INDEX_UNITS} has shape {:?}, expected [rows, dim]", units.dims),
    };
    let mut values = onnx::tensor_values_as_f32(units)?;
    if values.len() != n * dim {
        bail!("{INDEX_UNITS} holds {} values, expected {n} x {dim}", values.len());
    }
    let dtype = match units.data_type.and_then(|d| DataType::try_from(d).ok()) {
        Some(DataType::Float16) => IndexDtype::F16,
        Some(DataType::Int8) => IndexDtype::Int8,
        _ => IndexDtype::F32,
    };
    let mut scales = Vec::new();
    if dtype == IndexDtype::Int8 {
        let s = find(INDEX_SCALES)
            .ok_or_else(|| anyhow!("an int8 index needs {INDEX_SCALES}, which the model lacks"))?;
        scales = onnx::tensor_f32_values(s)?;
        if scales.len() != n {
            bail!("{INDEX_SCALES} has {} values for {n} rows", scales.len());
        }
        // The same product the head made when it rounded the rows.
        for (r, &sc) in values.chunks_exact_mut(dim).zip(&scales) {
            for x in r.iter_mut() {
                *x *= sc;
            }
        }
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
    Ok(Index { dim, dtype, units: values, scales, labels: row_labels, images })
}

/// The embedder a cbr model was built on: the model without the head's
/// nodes, initializers and metadata, with the embedding as its output again.
/// Appending a head to it gives the same bytes as appending to the original.
pub fn embedder_of(model: &ModelProto, embedding_output: &str) -> Result<ModelProto> {
    let mut model = model.clone();
    model.metadata_props.retain(|e| {
        !matches!(e.key.as_deref(), Some(crate::meta::METADATA_KEY) | Some(INDEX_IMAGES_KEY))
    });
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

fn emit_max_level(
    graph: &mut GraphProto,
    level: &MaxLevel,
    input: &str,
    output: &str,
    i: usize,
    opset: i64,
) {
    let mut x = input.to_string();
    if let Some(index) = &level.index {
        let idx = format!("cbr/max{i}_index");
        graph.initializer.push(tensor_i64(&idx, &[index.len() as i64], index));
        let gathered = format!("cbr/max{i}_gathered");
        graph.node.push(node(
            "Gather",
            &format!("cbr/max{i}_gather"),
            &[&x, &idx],
            &[&gathered],
            vec![attr_int("axis", 1)],
        ));
        x = gathered;
    }
    let shape = format!("cbr/max{i}_shape");
    // 0 keeps the batch dimension as it is.
    graph.initializer.push(tensor_i64(&shape, &[3], &[0, level.groups as i64, level.width as i64]));
    let blocks = format!("cbr/max{i}_blocks");
    graph.node.push(node(
        "Reshape",
        &format!("cbr/max{i}_reshape"),
        &[&x, &shape],
        &[&blocks],
        vec![],
    ));
    if opset >= 18 {
        let axes = format!("cbr/max{i}_axes");
        graph.initializer.push(tensor_i64(&axes, &[1], &[2]));
        graph.node.push(node(
            "ReduceMax",
            &format!("cbr/max{i}_reduce"),
            &[&blocks, &axes],
            &[output],
            vec![attr_int("keepdims", 0)],
        ));
    } else {
        graph.node.push(node(
            "ReduceMax",
            &format!("cbr/max{i}_reduce"),
            &[&blocks],
            &[output],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)],
        ));
    }
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
