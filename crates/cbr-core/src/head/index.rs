//! The index as a model stores it: one row per index image (two with mirror
//! augmentation), each the image's embedding after the power transform and L2
//! normalisation ("unit" rows), with its label and the identity of its source
//! image (a content hash).
//!
//! Everything else in a head (centring, class centroids, the discriminant,
//! calibration) is computed from these rows, so a model that carries them can
//! be edited (`cbr add`, `remove`, `relabel`) without re-embedding and gives
//! the same bytes as a fresh build. Rows may be stored compactly
//! ([`IndexDtype`]); the head then computes from the stored (rounded) values,
//! so a fresh build and an edit see exactly the same numbers.

use std::borrow::Cow;
use std::fmt;

use anyhow::{bail, Result};

use super::{l2_normalize, power_transform};

/// The identity of an index image: the first 128 bits of the SHA-256 of its
/// file's bytes. Rows of one class are ordered by it, so the order images were
/// listed in does not change the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId(pub [u8; 16]);

impl ImageId {
    /// The identity of an image file with these bytes.
    pub fn of_bytes(bytes: &[u8]) -> ImageId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        ImageId(id)
    }

    /// A stand-in identity for row `i` when there are no files (tests, eval):
    /// big-endian, so ids sort in row order.
    pub fn from_index(i: u32) -> ImageId {
        let mut id = [0u8; 16];
        id[12..].copy_from_slice(&i.to_be_bytes());
        ImageId(id)
    }

    pub fn parse(hex: &str) -> Result<ImageId> {
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{hex:?} is not an image id (32 hex digits)");
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        Ok(ImageId(id))
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::digest::hex(&self.0))
    }
}

pub use crate::meta::IndexDtype;

/// Index rows with their labels and source images, in any order.
///
/// Rows are kept in their stored form: f32 and f16 rows as f32 values (f16
/// ones rounded to f16), int8 rows as the int8 values and one scale per row
/// (a unit value is `value · scale`). A million int8 rows of 1280 take 1.3 GB
/// here, not the 5 GB their f32 values would.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    pub dim: usize,
    pub dtype: IndexDtype,
    /// f32 and f16 rows: `len()` rows of `dim` power-transformed,
    /// L2-normalised embeddings, rounded to `dtype`. Empty for int8.
    units: Vec<f32>,
    /// int8 rows: the stored values, row-major. Empty otherwise.
    int8: Vec<i8>,
    /// For [`IndexDtype::Int8`], each row's scale (`stored = round(unit / scale)`); else empty.
    pub scales: Vec<f32>,
    pub labels: Vec<String>,
    pub images: Vec<ImageId>,
}

impl Index {
    /// Rows from raw embeddings (`labels.len()` x `dim`).
    pub fn from_embeddings(
        embeddings: &[f32],
        dim: usize,
        labels: &[String],
        images: &[ImageId],
        power: Option<f32>,
        dtype: IndexDtype,
    ) -> Result<Index> {
        let mut index = Index::empty(dim, dtype);
        index.reserve(labels.len());
        index.push_embeddings(embeddings, labels, images, power)?;
        Ok(index)
    }

    /// An index with no rows yet (add them with [`Index::push_embeddings`]).
    pub fn empty(dim: usize, dtype: IndexDtype) -> Index {
        Index { dim, dtype, ..Default::default() }
    }

    /// Makes room for `rows` more rows, so that an index built in pieces
    /// (a million rows read a shard at a time) never holds two copies.
    pub fn reserve(&mut self, rows: usize) {
        match self.dtype {
            IndexDtype::Int8 => {
                self.int8.reserve_exact(rows * self.dim);
                self.scales.reserve_exact(rows);
            }
            _ => self.units.reserve_exact(rows * self.dim),
        }
        self.labels.reserve_exact(rows);
        self.images.reserve_exact(rows);
    }

    /// Appends rows made from raw embeddings (`labels.len()` x `dim`): the
    /// power transform, L2 normalisation, then rounding to the dtype.
    pub fn push_embeddings(
        &mut self,
        embeddings: &[f32],
        labels: &[String],
        images: &[ImageId],
        power: Option<f32>,
    ) -> Result<()> {
        let dim = self.dim;
        if dim == 0 || embeddings.len() != labels.len() * dim || images.len() != labels.len() {
            bail!(
                "{} embedding values do not make {} rows of {dim}",
                embeddings.len(),
                labels.len()
            );
        }
        let mut u = vec![0f32; dim];
        for e in embeddings.chunks_exact(dim) {
            u.copy_from_slice(e);
            if let Some(p) = power {
                power_transform(&mut u, p);
            }
            l2_normalize(&mut u);
            match self.dtype {
                IndexDtype::F32 => self.units.extend_from_slice(&u),
                IndexDtype::F16 => {
                    self.units.extend(u.iter().map(|&x| half::f16::from_f32(x).to_f32()))
                }
                IndexDtype::Int8 => {
                    let scale = quantize_row(&u, &mut self.int8);
                    self.scales.push(scale);
                }
            }
        }
        self.labels.extend_from_slice(labels);
        self.images.extend_from_slice(images);
        Ok(())
    }

    /// Rows as stored: f32 or f16 values (as f32), `labels.len()` x `dim`.
    pub fn from_units(
        dim: usize,
        dtype: IndexDtype,
        units: Vec<f32>,
        labels: Vec<String>,
        images: Vec<ImageId>,
    ) -> Result<Index> {
        if dtype == IndexDtype::Int8 {
            bail!("int8 rows are stored as int8 values and scales (Index::from_int8)");
        }
        let index = Index { dim, dtype, units, labels, images, ..Default::default() };
        index.check_shape(index.units.len())?;
        Ok(index)
    }

    /// int8 rows as stored: `labels.len()` x `dim` values and a scale per row.
    pub fn from_int8(
        dim: usize,
        values: Vec<i8>,
        scales: Vec<f32>,
        labels: Vec<String>,
        images: Vec<ImageId>,
    ) -> Result<Index> {
        let index = Index {
            dim,
            dtype: IndexDtype::Int8,
            int8: values,
            scales,
            labels,
            images,
            ..Default::default()
        };
        index.check_shape(index.int8.len())?;
        if index.scales.len() != index.len() {
            bail!("{} int8 row scales for {} rows", index.scales.len(), index.len());
        }
        Ok(index)
    }

    fn check_shape(&self, values: usize) -> Result<()> {
        if self.dim == 0 || values != self.len() * self.dim || self.images.len() != self.len() {
            bail!("{values} index values do not make {} rows of {}", self.len(), self.dim);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Unit row `i` as f32 (int8 rows widened: `value · scale`, the same
    /// product the model computes).
    pub fn row(&self, i: usize) -> Cow<'_, [f32]> {
        let span = i * self.dim..(i + 1) * self.dim;
        match self.dtype {
            IndexDtype::Int8 => {
                let s = self.scales[i];
                Cow::Owned(self.int8[span].iter().map(|&v| v as f32 * s).collect())
            }
            _ => Cow::Borrowed(&self.units[span]),
        }
    }

    /// All unit rows as f32 (`len()` x `dim`); int8 rows are widened into a copy.
    pub fn units(&self) -> Cow<'_, [f32]> {
        match self.dtype {
            IndexDtype::Int8 => {
                Cow::Owned((0..self.len()).flat_map(|i| self.row(i).into_owned()).collect())
            }
            _ => Cow::Borrowed(&self.units),
        }
    }

    /// The stored int8 values, row-major (`round(unit / scale)`); empty unless int8.
    pub fn int8_values(&self) -> &[i8] {
        &self.int8
    }

    /// Row `i`'s stored int8 values.
    pub fn int8_row(&self, i: usize) -> &[i8] {
        &self.int8[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends row `i` of `other` (same dim and dtype).
    fn push_row(&mut self, other: &Index, i: usize) {
        let span = i * other.dim..(i + 1) * other.dim;
        match self.dtype {
            IndexDtype::Int8 => {
                self.int8.extend_from_slice(&other.int8[span]);
                self.scales.push(other.scales[i]);
            }
            _ => self.units.extend_from_slice(&other.units[span]),
        }
        self.labels.push(other.labels[i].clone());
        self.images.push(other.images[i]);
    }

    /// Appends the rows of `other` (same dim and dtype).
    pub fn extend(&mut self, other: &Index) -> Result<()> {
        if other.dim != self.dim || other.dtype != self.dtype {
            bail!(
                "cannot merge indexes: {}-d {} rows into {}-d {} rows",
                other.dim,
                other.dtype,
                self.dim,
                self.dtype
            );
        }
        self.units.extend_from_slice(&other.units);
        self.int8.extend_from_slice(&other.int8);
        self.scales.extend_from_slice(&other.scales);
        self.labels.extend_from_slice(&other.labels);
        self.images.extend_from_slice(&other.images);
        Ok(())
    }

    /// Keeps the rows for which `keep(label, image)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &ImageId) -> bool) {
        let mut out = Index { dim: self.dim, dtype: self.dtype, ..Default::default() };
        for i in 0..self.len() {
            if keep(&self.labels[i], &self.images[i]) {
                out.push_row(self, i);
            }
        }
        *self = out;
    }

    /// Whether the rows are in canonical order already (see [`Index::sorted`]).
    pub fn is_sorted(&self) -> bool {
        (1..self.len()).all(|i| {
            (&self.labels[i - 1], &self.images[i - 1]) <= (&self.labels[i], &self.images[i])
        })
    }

    /// The rows in canonical order: by label, then image id, then (for rows
    /// of one image, e.g. a photo and its mirror image) their current order.
    pub fn sorted(&self) -> Index {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| {
            self.labels[a].cmp(&self.labels[b]).then(self.images[a].cmp(&self.images[b]))
        }); // stable
        let mut out = Index { dim: self.dim, dtype: self.dtype, ..Default::default() };
        for i in order {
            out.push_row(self, i);
        }
        out
    }

    /// The stored form of f16 rows (exact: the units are f16 values).
    pub fn f16_bits(&self) -> Vec<u16> {
        self.units.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()
    }
}

/// Quantizes a unit row symmetrically to int8 (scale `max |x| / 127`),
/// appending the values to `out`; returns the scale.
fn quantize_row(u: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = u.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = max / 127.0;
    out.extend(u.iter().map(|&x| {
        if scale > 0.0 {
            (x / scale).round().clamp(-127.0, 127.0) as i8
        } else {
            0
        }
    }));
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_round_trip_and_sort_by_index() {
        let id = ImageId::of_bytes(b"a photo");
        assert_eq!(ImageId::parse(&id.to_string()).unwrap(), id);
        assert!(ImageId::from_index(2) < ImageId::from_index(10));
        assert!(ImageId::parse("xyz").is_err());
    }

    #[test]
    fn stored_rows_are_exact_in_their_dtype() {
        let e: Vec<f32> = (0..64).map(|i| ((i * 37 % 17) as f32 - 8.0) / 3.0).collect();
        let labels = vec!["a".to_string(); 4];
        let ids: Vec<ImageId> = (0..4).map(ImageId::from_index).collect();
        for dtype in IndexDtype::ALL {
            let index = Index::from_embeddings(&e, 16, &labels, &ids, Some(0.5), dtype).unwrap();
            let exact =
                Index::from_embeddings(&e, 16, &labels, &ids, Some(0.5), IndexDtype::F32).unwrap();
            let err = index
                .units()
                .iter()
                .zip(exact.units().iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            match dtype {
                IndexDtype::F32 => assert_eq!(err, 0.0),
                IndexDtype::F16 => {
                    assert!(err > 0.0 && err < 1e-3, "{err}");
                    let back: Vec<f32> = index
                        .f16_bits()
                        .iter()
                        .map(|&b| half::f16::from_bits(b).to_f32())
                        .collect();
                    assert_eq!(back, &index.units()[..]);
                }
                IndexDtype::Int8 => {
                    assert!(err > 0.0 && err < 0.01, "{err}");
                    let q = index.int8_values();
                    let back: Vec<f32> = q
                        .chunks_exact(16)
                        .zip(&index.scales)
                        .flat_map(|(r, &s)| r.iter().map(move |&v| v as f32 * s))
                        .collect();
                    assert_eq!(back, &index.units()[..]);
                    assert!(q.iter().any(|&v| v.abs() == 127));
                }
            }
        }
    }

    #[test]
    fn canonical_order_ignores_input_order() {
        let labels: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let ids = [ImageId::from_index(9), ImageId::from_index(5), ImageId::from_index(1)];
        let e = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let one =
            Index::from_embeddings(&e, 2, &labels, &ids, None, IndexDtype::F32).unwrap().sorted();
        let rev_e = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let rev_labels: Vec<String> = labels.iter().rev().cloned().collect();
        let rev_ids: Vec<ImageId> = ids.iter().rev().copied().collect();
        let two = Index::from_embeddings(&rev_e, 2, &rev_labels, &rev_ids, None, IndexDtype::F32)
            .unwrap()
            .sorted();
        assert_eq!(one, two);
        assert_eq!(one.labels, vec!["a", "b", "b"]);
        assert_eq!(one.images[1], ImageId::from_index(1));
    }
}
