//! Embedding shards: the embeddings of one slice of a dataset as a Parquet
//! file, so embedding can run as a job array on many machines (`cbr embed
//! --shard i/n`) and one build merges the parts (`cbr build --embeddings`).
//!
//! One row per image: `path`, `label`, `image_id` (content hash, 32 hex
//! digits), `embedding` (list of float) and, for mirror augmentation,
//! `mirror_embedding`. The key-value metadata records the embedder and the
//! preprocessing (`cbr.embedder`, `cbr.preprocess`), so a merge can refuse
//! parts made with another model. Any Parquet reader (pyarrow, Spark,
//! DuckDB) can read the files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use parquet::basic::Compression;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::dataset::LabelledImage;
use crate::embedder::EmbedderInfo;
use crate::pipeline::Embedded;
use cbr_core::head::{ImageId, Index, IndexDtype};
use cbr_core::preprocess::Preprocess;

const EMBEDDER_KEY: &str = "cbr.embedder";
const PREPROCESS_KEY: &str = "cbr.preprocess";
const SHARD_KEY: &str = "cbr.shard";
/// Images per Parquet row group: bounds the memory of readers and writers.
const ROW_GROUP: usize = 4096;

/// Which slice of a dataset: part `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || anyhow!("bad shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// This shard's images: a contiguous slice of the (sorted) image list,
    /// so every image lands in exactly one shard.
    pub fn of<'a>(&self, images: &'a [LabelledImage]) -> &'a [LabelledImage] {
        let n = images.len();
        &images[self.index * n / self.count..(self.index + 1) * n / self.count]
    }
}

/// Writes `embedded` (made by `embedder` with `preprocess`) as a Parquet shard, atomically.
pub fn write(
    path: &Path,
    embedded: &Embedded,
    embedder: &EmbedderInfo,
    preprocess: &Preprocess,
    shard: Shard,
) -> Result<()> {
    let rows_per_image =
        if embedded.paths.is_empty() { 1 } else { embedded.labels.len() / embedded.paths.len() };
    let mirrored = rows_per_image == 2;
    let list = |name: &str| {
        format!(
            "required group {name} (LIST) {{ repeated group list {{ required float element; }} }}"
        )
    };
    let schema = format!(
        "message cbr_embeddings {{ required binary path (STRING); \
         required binary label (STRING); required binary image_id (STRING); {} {} }}",
        list("embedding"),
        if mirrored { list("mirror_embedding") } else { String::new() }
    );
    let schema = Arc::new(parse_message_type(&schema).expect("the shard schema parses"));
    let metadata = vec![
        KeyValue::new(EMBEDDER_KEY.to_string(), serde_json::to_string(embedder)?),
        KeyValue::new(PREPROCESS_KEY.to_string(), serde_json::to_string(preprocess)?),
        KeyValue::new(SHARD_KEY.to_string(), format!("{}/{}", shard.index, shard.count)),
    ];
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(metadata))
            .set_created_by(format!("cbr {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, schema, props)?;
    let dim = embedded.dim;
    for start in (0..embedded.paths.len()).step_by(ROW_GROUP) {
        let images = start..(start + ROW_GROUP).min(embedded.paths.len());
        let mut group = writer.next_row_group()?;
        let strings: [Vec<ByteArray>; 3] = [
            images
                .clone()
                .map(|i| ByteArray::from(embedded.paths[i].to_string_lossy().as_bytes().to_vec()))
                .collect(),
            images
                .clone()
                .map(|i| ByteArray::from(embedded.labels[i * rows_per_image].as_str()))
                .collect(),
            images.clone().map(|i| ByteArray::from(embedded.ids[i].to_string().as_str())).collect(),
        ];
        for column in strings {
            let mut c =
                group.next_column()?.ok_or_else(|| anyhow!("shard schema: missing column"))?;
            c.typed::<ByteArrayType>().write_batch(&column, None, None)?;
            c.close()?;
        }
        // A list of exactly `dim` floats per image: repetition level 0 starts a row.
        let def = vec![1i16; images.len() * dim];
        let rep: Vec<i16> =
            (0..images.len() * dim).map(|k| if k % dim == 0 { 0 } else { 1 }).collect();
        for variant in 0..rows_per_image {
            let mut values = Vec::with_capacity(images.len() * dim);
            for i in images.clone() {
                let row = i * rows_per_image + variant;
                values.extend_from_slice(&embedded.embeddings[row * dim..(row + 1) * dim]);
            }
            let mut c =
                group.next_column()?.ok_or_else(|| anyhow!("shard schema: missing column"))?;
            c.typed::<FloatType>().write_batch(&values, Some(&def), Some(&rep))?;
            c.close()?;
        }
        group.close()?;
    }
    writer.close()?;
    crate::cache::write_atomic(path, &bytes)
}

/// `cbr embed --shard`: embeds this shard's part of `images` (the whole sorted image list,
/// [`Shard::of`]) with `embedder` and writes it to `output` ([`write`]). Returns what was
/// embedded (and skipped). `progress` gets the number of the part's images done.
pub fn embed_to_file(
    embedder: &mut crate::embedder::Embedder,
    images: &[LabelledImage],
    shard: Shard,
    opts: &crate::pipeline::EmbedOptions,
    output: &Path,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Embedded> {
    let part = shard.of(images);
    let embedded =
        crate::pipeline::embed_images(embedder, part, opts, &Default::default(), progress)?;
    write(output, &embedded, &embedder.info, &embedder.preprocess, shard)?;
    Ok(embedded)
}

/// The shards named by `patterns`: files, folders (every `.parquet` in
/// them) or file names with `*` wildcards, sorted and de-duplicated.
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() || name.contains('*') {
            let (dir, pattern) = if path.is_dir() {
                (path, "*.parquet".to_string())
            } else {
                (
                    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")),
                    name,
                )
            };
            let before = files.len();
            for e in
                std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let e = e?;
                if wildcard_match(&pattern, &e.file_name().to_string_lossy()) {
                    files.push(e.path());
                }
            }
            if files.len() == before {
                bail!("no embedding shards match {p}");
            }
        } else {
            files.push(path.to_path_buf());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Reads and merges shards. All must come from the same embedder and
/// preprocessing. An image whose (label, content) was already read is
/// skipped, as `cbr build` skips duplicates.
pub fn read(paths: &[PathBuf]) -> Result<(EmbedderInfo, Preprocess, Embedded)> {
    let mut embeddings = Vec::new();
    let (info, preprocess, mut out) = read_each(paths, |e, _, _| {
        embeddings.extend_from_slice(e);
        Ok(())
    })?;
    out.embeddings = embeddings;
    Ok((info, preprocess, out))
}

/// [`read`] for a build: each row goes straight into an index of `dtype`
/// rows (after the power transform), so the raw f32 embeddings are never all
/// in memory (5 GB at a million rows; an int8 index of them is 1.3 GB). The
/// returned [`Embedded`] has everything but the embeddings.
pub fn read_index(
    paths: &[PathBuf],
    power: Option<f32>,
    dtype: IndexDtype,
) -> Result<(EmbedderInfo, Preprocess, Embedded, Index)> {
    let mut index: Option<Index> = None;
    let (info, preprocess, out) = read_each(paths, |e, label, id| {
        let index = index.get_or_insert_with(|| Index::empty(e.len(), dtype));
        index.push_embeddings(e, std::slice::from_ref(label), &[id], power)
    })?;
    let index = index.unwrap_or_else(|| Index::empty(info.dim, dtype));
    Ok((info, preprocess, out, index))
}

/// Reads shards as [`read`] does, handing each kept row's embedding (with its
/// label and image id) to `row` instead of keeping it.
fn read_each(
    paths: &[PathBuf],
    mut row: impl FnMut(&[f32], &String, ImageId) -> Result<()>,
) -> Result<(EmbedderInfo, Preprocess, Embedded)> {
    let mut out = Embedded::default();
    let mut source: Option<(EmbedderInfo, Preprocess, PathBuf)> = None;
    let mut rows_per_image = 0;
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let what = || format!("embedding shard {}", path.display());
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", what()))?;
        let reader = SerializedFileReader::new(file)
            .with_context(|| format!("{} is not a Parquet file", path.display()))?;
        let kv =
            reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        let get = |k: &str| {
            kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone()).ok_or_else(|| {
                anyhow!("{} has no {k} metadata: it was not written by `cbr embed`", what())
            })
        };
        let info: EmbedderInfo = serde_json::from_str(&get(EMBEDDER_KEY)?).with_context(what)?;
        let preprocess: Preprocess =
            serde_json::from_str(&get(PREPROCESS_KEY)?).with_context(what)?;
        match &source {
            None => source = Some((info.clone(), preprocess.clone(), path.clone())),
            Some((i, p, first)) if *i != info || *p != preprocess => {
                bail!(
                    "{} was embedded with {} ({}), but {} with {} ({}): all shards must use the \
                     same embedder and preprocessing",
                    path.display(),
                    info.name,
                    &info.sha256[..12],
                    first.display(),
                    i.name,
                    &i.sha256[..12]
                )
            }
            _ => {}
        }
        let dim = info.dim;
        out.dim = dim;
        let columns = reader.metadata().file_metadata().schema_descr().num_columns();
        let variants = columns - 3;
        if !(1..=2).contains(&variants) || (rows_per_image != 0 && rows_per_image != variants) {
            bail!(
                "{} has {columns} columns; expected path, label, image_id, embedding and \
                 (for all shards or none) mirror_embedding",
                what()
            );
        }
        rows_per_image = variants;
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g)?;
            let n = group.metadata().num_rows() as usize;
            let mut strings: Vec<Vec<String>> = Vec::new();
            for c in 0..3 {
                let ColumnReader::ByteArrayColumnReader(mut r) = group.get_column_reader(c)? else {
                    bail!("{}: column {c} is not a string column", what());
                };
                let mut values = Vec::with_capacity(n);
                let (records, _, _) = r.read_records(n, None, None, &mut values)?;
                if records != n {
                    bail!("{}: column {c} has {records} rows, expected {n}", what());
                }
                strings.push(
                    values.iter().map(|v| String::from_utf8_lossy(v.data()).into_owned()).collect(),
                );
            }
            let mut embeddings = Vec::new();
            for c in 3..3 + variants {
                let ColumnReader::FloatColumnReader(mut r) = group.get_column_reader(c)? else {
                    bail!("{}: column {c} is not a float list", what());
                };
                let (mut values, mut def, mut rep) =
                    (Vec::with_capacity(n * dim), Vec::new(), Vec::new());
                let (records, count, _) =
                    r.read_records(n, Some(&mut def), Some(&mut rep), &mut values)?;
                if records != n || count != n * dim || values.len() != n * dim {
                    bail!(
                        "{}: embeddings are not {n} lists of {dim} floats \
                         (the shard's embedder says {dim}-d)",
                        what()
                    );
                }
                embeddings.push(values);
            }
            for i in 0..n {
                let id = ImageId::parse(&strings[2][i]).with_context(what)?;
                let label = strings[1][i].clone();
                if !seen.insert((label.clone(), id)) {
                    out.skipped.push(crate::pipeline::Skipped {
                        path: PathBuf::from(&strings[0][i]),
                        reason: format!("same content as an image already read (class {label:?})"),
                        duplicate_of: None,
                    });
                    continue;
                }
                let image = out.paths.len() as u32;
                for e in &embeddings {
                    row(&e[i * dim..(i + 1) * dim], &label, id)?;
                    out.labels.push(label.clone());
                    out.images.push(image);
                }
                out.paths.push(PathBuf::from(&strings[0][i]));
                out.ids.push(id);
            }
        }
    }
    let (info, preprocess, _) = source.ok_or_else(|| anyhow!("no embedding shards given"))?;
    Ok((info, preprocess, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_images() {
        let images: Vec<LabelledImage> = (0..10)
            .map(|i| LabelledImage { label: "a".into(), path: PathBuf::from(format!("{i}.jpg")) })
            .collect();
        let mut all = Vec::new();
        for i in 0..3 {
            all.extend(format!("{i}/3").parse::<Shard>().unwrap().of(&images).iter().cloned());
        }
        assert_eq!(all, images);
        assert!(
            "3/3".parse::<Shard>().is_err()
                && "1".parse::<Shard>().is_err()
                && "0/0".parse::<Shard>().is_err()
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("part-*.parquet", "part-0.parquet"));
        assert!(wildcard_match("*", "x"));
        assert!(!wildcard_match("part-*.parquet", "part-0.csv"));
        assert!(wildcard_match("a*b*c", "a1b2c"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 5;
        let embedded = Embedded {
            embeddings: (0..4 * dim).map(|v| v as f32 * 0.5).collect(),
            dim,
            labels: vec!["a".into(), "a".into(), "b".into(), "b".into()],
            images: vec![0, 0, 1, 1],
            paths: vec![PathBuf::from("x/1.jpg"), PathBuf::from("y/2.jpg")],
            ids: vec![ImageId::from_index(7), ImageId::from_index(3)],
            ..Default::default()
        };
        let info = EmbedderInfo {
            name: "e".into(),
            sha256: "0".repeat(64),
            input: "in".into(),
            output: "out".into(),
            dim,
        };
        let preprocess = Preprocess::raw(2, 2, cbr_core::preprocess::Layout::Nchw);
        let path = dir.path().join("p.parquet");
        write(&path, &embedded, &info, &preprocess, Shard { index: 0, count: 1 }).unwrap();
        let (i, p, back) = read(std::slice::from_ref(&path)).unwrap();
        assert_eq!((i, p), (info.clone(), preprocess.clone()));
        assert_eq!(
            (back.embeddings, back.labels, back.images, back.paths, back.ids),
            (embedded.embeddings, embedded.labels, embedded.images, embedded.paths, embedded.ids)
        );
        // Damaged files are refused with their name.
        std::fs::write(&path, b"PAR1 not really").unwrap();
        let err = format!("{:#}", read(std::slice::from_ref(&path)).unwrap_err());
        assert!(err.contains("p.parquet"), "{err}");
    }
}
