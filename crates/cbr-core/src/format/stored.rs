//! The head's stored tensors of an ONNX classifier (`cbr/…` initializers), checked by the one
//! reader before any command uses the file: the index rows have the shape the metadata gives
//! (rows per label, `embedder.dim`), every stored value is a number, the int8 rows' scales are
//! finite and above 0. A file that fails is refused with `invalid stored tensor …`, so `add`,
//! `remove`, `classify`, `info` and `export-web` never run on (or write) a damaged head.
//!
//! The values are read in place from the file's bytes by walking the protobuf wire format: no
//! copy of the weights is made (prost would copy every `raw_data` it decodes).

use anyhow::{bail, Result};

use crate::head::graph::{INDEX_INVERSE_NORMS, INDEX_SCALES, INDEX_UNITS, INDEX_UNITS_BY_DIM};
use crate::meta::ClassifierInfo;
use crate::onnx::DataType;

/// One `cbr/…` initializer: its shape, type and where its values sit in the file.
#[derive(Debug, Default)]
pub(super) struct StoredTensor<'a> {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub raw: Option<&'a [u8]>,
    /// `float_data`: packed runs of little-endian f32 (or single values).
    pub floats: Vec<&'a [u8]>,
    /// `int32_data` (float16 values may sit there, one per element): packed varint runs.
    pub int32s: Vec<&'a [u8]>,
}

/// A varint at `*at`, moving past it.
fn varint(b: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*at) else { bail!("truncated protobuf data") };
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("malformed protobuf varint")
}

/// The fields of one message: (field number, wire type, payload). A varint field's payload is
/// empty and its value in the `u64`.
fn fields(b: &[u8]) -> impl Iterator<Item = Result<(u64, u8, &[u8], u64)>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= b.len() {
            return None;
        }
        let field = (|| {
            let key = varint(b, &mut at)?;
            let (number, wire) = (key >> 3, (key & 7) as u8);
            let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
                let end = at.checked_add(n).filter(|&e| e <= b.len());
                let Some(end) = end else { bail!("truncated protobuf data") };
                let s = &b[*at..end];
                *at = end;
                Ok(s)
            };
            match wire {
                0 => Ok((number, wire, &b[0..0], varint(b, &mut at)?)),
                1 => Ok((number, wire, take(&mut at, 8)?, 0)),
                2 => {
                    let n = usize::try_from(varint(b, &mut at)?)?;
                    Ok((number, wire, take(&mut at, n)?, 0))
                }
                5 => Ok((number, wire, take(&mut at, 4)?, 0)),
                w => bail!("unsupported protobuf wire type {w}"),
            }
        })();
        if field.is_err() {
            at = b.len();
        }
        Some(field)
    })
}

/// Every initializer of the model's graph whose name starts with `cbr/` (the head's weights).
pub(super) fn head_tensors(model: &[u8]) -> Result<Vec<StoredTensor<'_>>> {
    let mut out = Vec::new();
    for f in fields(model) {
        let (number, wire, graph, _) = f?;
        if number != 7 || wire != 2 {
            continue;
        }
        for g in fields(graph) {
            let (number, wire, tensor, _) = g?;
            if number != 5 || wire != 2 {
                continue;
            }
            let mut t = StoredTensor::default();
            for x in fields(tensor) {
                match x? {
                    (1, 0, _, v) => t.dims.push(v as i64),
                    (1, 2, packed, _) => {
                        let mut at = 0;
                        while at < packed.len() {
                            t.dims.push(varint(packed, &mut at)? as i64);
                        }
                    }
                    (2, 0, _, v) => t.data_type = v as i32,
                    (4, 2 | 5, values, _) => t.floats.push(values),
                    (5, 2, values, _) => t.int32s.push(values),
                    (8, 2, name, _) => t.name = String::from_utf8_lossy(name).into_owned(),
                    (9, 2, raw, _) => t.raw = Some(raw),
                    _ => {}
                }
            }
            if t.name.starts_with("cbr/") {
                out.push(t);
            }
        }
    }
    Ok(out)
}

impl StoredTensor<'_> {
    /// The tensor's values as f32 (float and float16 tensors; `None` for other types), passed
    /// one by one to `each` until it returns an error.
    fn for_each_value(&self, mut each: impl FnMut(usize, f32) -> Result<()>) -> Result<bool> {
        let float = DataType::Float as i32;
        let half = DataType::Float16 as i32;
        if self.data_type == float {
            let runs: Vec<&[u8]> = match self.raw {
                Some(r) => vec![r],
                None => self.floats.clone(),
            };
            let mut i = 0;
            for run in runs {
                for c in run.chunks_exact(4) {
                    each(i, f32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
                    i += 1;
                }
            }
            Ok(true)
        } else if self.data_type == half {
            if let Some(r) = self.raw {
                for (i, c) in r.chunks_exact(2).enumerate() {
                    each(i, half::f16::from_le_bytes([c[0], c[1]]).to_f32())?;
                }
            } else {
                let mut i = 0;
                for run in &self.int32s {
                    let mut at = 0;
                    while at < run.len() {
                        let v = varint(run, &mut at)?;
                        each(i, half::f16::from_bits(v as u16).to_f32())?;
                        i += 1;
                    }
                }
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Checks the head's stored tensors against `info` (see the module comment).
pub(super) fn check(tensors: &[StoredTensor<'_>], info: &ClassifierInfo) -> Result<()> {
    let rows: usize = info.images_per_label.iter().sum();
    let dim = info.embedder.dim;
    for t in tensors {
        let name = t.name.as_str();
        let want: Option<Vec<i64>> = match name {
            INDEX_UNITS => Some(vec![rows as i64, dim as i64]),
            INDEX_UNITS_BY_DIM => Some(vec![dim as i64, rows as i64]),
            INDEX_SCALES | INDEX_INVERSE_NORMS => Some(vec![rows as i64]),
            _ => None,
        };
        if let Some(want) = want.filter(|_| info.index.is_none()) {
            if t.dims != want {
                bail!(
                    "invalid cbr metadata: images_per_label and embedder.dim describe {rows} \
                     index rows of {dim} values, but the stored tensor {name} has shape {:?}; \
                     the file is damaged or was edited: rebuild it with `cbr build`",
                    t.dims
                );
            }
        }
        let index_values = matches!(name, INDEX_UNITS | INDEX_SCALES | INDEX_INVERSE_NORMS);
        t.for_each_value(|i, v| {
            if v.is_nan() || (index_values && !v.is_finite()) {
                bail!(
                    "invalid stored tensor {name}: value {i} is {v}, not a finite number; the \
                     file is damaged or was edited: rebuild it with `cbr build`"
                );
            }
            if name == INDEX_SCALES && v <= 0.0 {
                bail!(
                    "invalid stored tensor {name}: scale {i} is {v}; int8 row scales are above \
                     0; the file is damaged or was edited: rebuild it with `cbr build`"
                );
            }
            Ok(())
        })?;
    }
    Ok(())
}
