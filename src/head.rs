//! The retrieval head: the layers appended to an embedder that turn it into a
//! classifier, computed (not trained) from the embeddings of the index images.
//!
//! ```text
//! embedder output ─ Flatten? ─┬─────────────────────────────────────────────▶ embedding [B, D]
//!                             └ LpNormalization ─ Gemm(W rows = index images) ─▶ similarities [B, N]
//!                                                   └ aggregation ────────────▶ scores [B, C]
//! ```
//!
//! Rows of `W` are the L2-normalised embeddings of the index images, sorted by
//! class, so `similarities` are cosine similarities to every index image. The
//! `max` aggregation takes, per class, the best-matching image (as the original
//! classification-by-retrieval does) with a fixed number of operations: gather
//! the similarities into a `[B, classes, width]` block padded with repeats of a
//! class's own images (a repeat cannot change a maximum), then ReduceMax. When
//! class sizes are very uneven, one wide block would waste memory, so big
//! classes are split into chunks first and the max is taken in a few levels;
//! the number of levels grows with log(largest class / mean class), never with
//! the number of classes.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::onnx::{self, attr_int, attr_ints, node, tensor_f32, tensor_i64, value_info, DataType, Dim, ModelProto};

/// How instance similarities become one score per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// The best cosine similarity among the class's images (the original rule).
    Max,
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Aggregation::Max => "max",
        })
    }
}

/// Names of the graph outputs of every cbr model.
pub const SCORES: &str = "scores";
pub const SIMILARITIES: &str = "similarities";
pub const EMBEDDING: &str = "embedding";

/// The computed retrieval layers: index rows, their classes, the class names.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalHead {
    /// Class names in class order (sorted).
    pub labels: Vec<String>,
    /// Embedding length.
    pub dim: usize,
    /// `rows.len() / dim` L2-normalised index embeddings, sorted by class
    /// (stable within a class).
    pub rows: Vec<f32>,
    /// The class of each row, non-decreasing.
    pub row_class: Vec<u32>,
    pub aggregation: Aggregation,
}

/// L2-normalises `v` in place. A zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

impl RetrievalHead {
    /// Builds the head from raw index embeddings (`labels.len()` rows of `dim`)
    /// and the label of each row. Classes are the sorted distinct labels.
    pub fn new(embeddings: &[f32], dim: usize, labels: &[String], aggregation: Aggregation) -> Result<Self> {
        if dim == 0 || embeddings.len() != labels.len() * dim {
            bail!("{} embedding values do not make {} rows of {dim}", embeddings.len(), labels.len());
        }
        if labels.is_empty() {
            bail!("no index images: a classifier needs at least one image per class");
        }
        let mut classes: Vec<String> = labels.to_vec();
        classes.sort();
        classes.dedup();
        let class_of = |l: &String| classes.binary_search(l).expect("label is in the class list") as u32;
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| class_of(&labels[i])); // stable: keeps input order within a class
        let mut rows = Vec::with_capacity(embeddings.len());
        let mut row_class = Vec::with_capacity(labels.len());
        for i in order {
            let start = rows.len();
            rows.extend_from_slice(&embeddings[i * dim..(i + 1) * dim]);
            l2_normalize(&mut rows[start..]);
            row_class.push(class_of(&labels[i]));
        }
        Ok(RetrievalHead { labels: classes, dim, rows, row_class, aggregation })
    }

    /// Number of index images.
    pub fn len(&self) -> usize {
        self.row_class.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_class.is_empty()
    }

    /// Number of index images per class, in class order.
    pub fn class_sizes(&self) -> Vec<usize> {
        let mut n = vec![0; self.labels.len()];
        for &c in &self.row_class {
            n[c as usize] += 1;
        }
        n
    }

    /// Row indices of each class, in class order.
    fn groups(&self) -> Vec<Vec<u32>> {
        let mut g = vec![Vec::new(); self.labels.len()];
        for (i, &c) in self.row_class.iter().enumerate() {
            g[c as usize].push(i as u32);
        }
        g
    }

    /// Cosine similarity of a (raw) query embedding to every index row.
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        let mut q = query.to_vec();
        l2_normalize(&mut q);
        self.rows.chunks_exact(self.dim).map(|r| r.iter().zip(&q).map(|(a, b)| a * b).sum()).collect()
    }

    /// Class scores for a raw query embedding, computed directly in Rust.
    /// The exported graph computes the same thing; tests hold the two together.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        let sims = self.similarities(query);
        match self.aggregation {
            Aggregation::Max => {
                let mut s = vec![f32::NEG_INFINITY; self.labels.len()];
                for (v, &c) in sims.iter().zip(&self.row_class) {
                    s[c as usize] = s[c as usize].max(*v);
                }
                s
            }
        }
    }

    /// Appends the head to an embedder graph whose embedding output is
    /// `embedding_output`. Every node, initializer, attribute and opset import
    /// of the embedder is kept; the graph outputs become `scores`,
    /// `similarities` and `embedding`.
    pub fn append_to(&self, embedder: &ModelProto, embedding_output: &str) -> Result<ModelProto> {
        let opset = onnx::default_opset(embedder).ok_or_else(|| anyhow!("the embedder imports no default-domain opset"))?;
        if opset < 11 {
            bail!("the embedder uses ONNX opset {opset}; cbr needs opset 11 or newer (re-export the model with a newer opset)");
        }
        let mut model = embedder.clone();
        let graph = model.graph.as_mut().ok_or_else(|| anyhow!("the embedder has no graph"))?;
        let out = graph
            .output
            .iter()
            .find(|o| o.name.as_deref() == Some(embedding_output))
            .cloned()
            .ok_or_else(|| anyhow!("the embedder has no output {embedding_output}"))?;
        let (_, out_dims) = onnx::tensor_type(&out).ok_or_else(|| anyhow!("output {embedding_output} is not a tensor"))?;
        let batch_dim = match out_dims.first() {
            Some(Some(n)) => Dim::Fixed(*n),
            _ => Dim::Symbolic("batch".into()),
        };
        for name in [SCORES, SIMILARITIES, EMBEDDING] {
            let produced = graph.node.iter().any(|n| n.output.iter().any(|o| o == name));
            if produced && !(name == EMBEDDING && embedding_output == EMBEDDING) {
                bail!("the embedder already has a tensor named {name:?}; cbr needs that name for its own output");
            }
        }

        // Flatten [B, D, 1, 1]-style outputs to [B, D].
        let flat = if out_dims.len() == 2 {
            embedding_output.to_string()
        } else {
            graph.node.push(node("Flatten", "cbr/flatten", &[embedding_output], &["cbr/embedding_flat"], vec![attr_int("axis", 1)]));
            "cbr/embedding_flat".to_string()
        };
        if flat != EMBEDDING {
            graph.node.push(node("Identity", "cbr/embedding", &[&flat], &[EMBEDDING], vec![]));
        }

        let n = self.len() as i64;
        let d = self.dim as i64;
        graph.node.push(node("LpNormalization", "cbr/l2_normalize", &[EMBEDDING], &["cbr/embedding_l2"], vec![attr_int("axis", -1), attr_int("p", 2)]));
        graph.initializer.push(tensor_f32("cbr/index_embeddings", &[n, d], &self.rows));
        graph.node.push(node("Gemm", "cbr/similarity", &["cbr/embedding_l2", "cbr/index_embeddings"], &[SIMILARITIES], vec![attr_int("transB", 1)]));

        match self.aggregation {
            Aggregation::Max => {
                let levels = plan_max(self.groups());
                let mut input = SIMILARITIES.to_string();
                for (i, level) in levels.iter().enumerate() {
                    let last = i + 1 == levels.len();
                    let output = if last { SCORES.to_string() } else { format!("cbr/max{i}") };
                    emit_max_level(graph, level, &input, &output, i, opset);
                    input = output;
                }
            }
        }

        graph.output.clear();
        let classes = self.labels.len() as i64;
        graph.output.push(value_info(SCORES, DataType::Float, &[batch_dim.clone(), Dim::Fixed(classes)]));
        graph.output.push(value_info(SIMILARITIES, DataType::Float, &[batch_dim.clone(), Dim::Fixed(n)]));
        graph.output.push(value_info(EMBEDDING, DataType::Float, &[batch_dim, Dim::Fixed(d)]));
        Ok(model)
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

fn emit_max_level(graph: &mut onnx::GraphProto, level: &MaxLevel, input: &str, output: &str, i: usize, opset: i64) {
    let mut x = input.to_string();
    if let Some(index) = &level.index {
        let idx = format!("cbr/max{i}_index");
        graph.initializer.push(tensor_i64(&idx, &[index.len() as i64], index));
        let gathered = format!("cbr/max{i}_gathered");
        graph.node.push(node("Gather", &format!("cbr/max{i}_gather"), &[&x, &idx], &[&gathered], vec![attr_int("axis", 1)]));
        x = gathered;
    }
    let shape = format!("cbr/max{i}_shape");
    // 0 keeps the batch dimension as it is.
    graph.initializer.push(tensor_i64(&shape, &[3], &[0, level.groups as i64, level.width as i64]));
    let blocks = format!("cbr/max{i}_blocks");
    graph.node.push(node("Reshape", &format!("cbr/max{i}_reshape"), &[&x, &shape], &[&blocks], vec![]));
    if opset >= 18 {
        let axes = format!("cbr/max{i}_axes");
        graph.initializer.push(tensor_i64(&axes, &[1], &[2]));
        graph.node.push(node("ReduceMax", &format!("cbr/max{i}_reduce"), &[&blocks, &axes], &[output], vec![attr_int("keepdims", 0)]));
    } else {
        graph.node.push(node("ReduceMax", &format!("cbr/max{i}_reduce"), &[&blocks], &[output], vec![attr_ints("axes", &[2]), attr_int("keepdims", 0)]));
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
            x = picked.chunks(l.width).map(|c| c.iter().cloned().fold(f32::NEG_INFINITY, f32::max)).collect();
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
            assert!(l.groups * l.width <= 2 * next as usize, "level too big: {} x {}", l.groups, l.width);
        }
        let expect: Vec<f32> = groups.iter().map(|g| g.iter().map(|&i| input[i as usize]).fold(f32::NEG_INFINITY, f32::max)).collect();
        assert_eq!(eval_levels(&levels, &input), expect);
    }

    #[test]
    fn head_sorts_rows_by_class_and_normalises() {
        let labels: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let emb = [3.0, 4.0, 1.0, 0.0, 0.0, 2.0];
        let h = RetrievalHead::new(&emb, 2, &labels, Aggregation::Max).unwrap();
        assert_eq!(h.labels, vec!["a", "b"]);
        assert_eq!(h.row_class, vec![0, 1, 1]);
        assert_eq!(h.rows, vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0]);
        assert_eq!(h.class_sizes(), vec![1, 2]);
        // Query along y: class a's only image is orthogonal, class b has (0,1).
        let s = h.scores(&[0.0, 5.0]);
        assert_eq!(s, vec![0.0, 1.0]);
    }

    #[test]
    fn head_rejects_mismatched_input() {
        let labels = vec!["a".to_string()];
        assert!(RetrievalHead::new(&[1.0, 2.0, 3.0], 2, &labels, Aggregation::Max).is_err());
        assert!(RetrievalHead::new(&[], 2, &[], Aggregation::Max).is_err());
    }
}
