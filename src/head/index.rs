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
        f.write_str(&crate::cache::hex(&self.0))
    }
}

pub use crate::meta::IndexDtype;

/// Index rows with their labels and source images, in any order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    pub dim: usize,
    pub dtype: IndexDtype,
    /// `labels.len()` rows of `dim`: power-transformed, L2-normalised
    /// embeddings, rounded to `dtype` (these exact values are what is stored).
    pub units: Vec<f32>,
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
        if dim == 0 || embeddings.len() != labels.len() * dim || images.len() != labels.len() {
            bail!(
                "{} embedding values do not make {} rows of {dim}",
                embeddings.len(),
                labels.len()
            );
        }
        let mut index = Index {
            dim,
            dtype,
            units: Vec::with_capacity(embeddings.len()),
            scales: Vec::new(),
            labels: labels.to_vec(),
            images: images.to_vec(),
        };
        for e in embeddings.chunks_exact(dim) {
            let mut u = e.to_vec();
            if let Some(p) = power {
                power_transform(&mut u, p);
            }
            l2_normalize(&mut u);
            if let Some(s) = round_to(dtype, &mut u) {
                index.scales.push(s);
            }
            index.units.extend_from_slice(&u);
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.units[i * self.dim..(i + 1) * self.dim]
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
                out.units.extend_from_slice(self.row(i));
                if !self.scales.is_empty() {
                    out.scales.push(self.scales[i]);
                }
                out.labels.push(self.labels[i].clone());
                out.images.push(self.images[i]);
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
            out.units.extend_from_slice(self.row(i));
            if !self.scales.is_empty() {
                out.scales.push(self.scales[i]);
            }
            out.labels.push(self.labels[i].clone());
            out.images.push(self.images[i]);
        }
        out
    }

    /// The stored form of the int8 rows (`round(unit / scale)`); exact, since
    /// the units were made as `q · scale`.
    pub fn int8_values(&self) -> Vec<i8> {
        assert_eq!(self.dtype, IndexDtype::Int8);
        self.units
            .chunks_exact(self.dim)
            .zip(&self.scales)
            .flat_map(|(r, &s)| {
                r.iter().map(move |&x| if s > 0.0 { (x / s).round() as i8 } else { 0 })
            })
            .collect()
    }

    /// The stored form of f16 rows (exact: the units are f16 values).
    pub fn f16_bits(&self) -> Vec<u16> {
        self.units.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()
    }
}

/// Rounds a unit row to what `dtype` stores, in place; returns the int8 scale.
fn round_to(dtype: IndexDtype, u: &mut [f32]) -> Option<f32> {
    match dtype {
        IndexDtype::F32 => None,
        IndexDtype::F16 => {
            for x in u.iter_mut() {
                *x = half::f16::from_f32(*x).to_f32();
            }
            None
        }
        IndexDtype::Int8 => {
            let max = u.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = max / 127.0;
            for x in u.iter_mut() {
                *x = if scale > 0.0 {
                    (*x / scale).round().clamp(-127.0, 127.0) * scale
                } else {
                    0.0
                };
            }
            Some(scale)
        }
    }
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
                .units
                .iter()
                .zip(&exact.units)
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
                    assert_eq!(back, index.units);
                }
                IndexDtype::Int8 => {
                    assert!(err > 0.0 && err < 0.01, "{err}");
                    let q = index.int8_values();
                    let back: Vec<f32> = q
                        .chunks_exact(16)
                        .zip(&index.scales)
                        .flat_map(|(r, &s)| r.iter().map(move |&v| v as f32 * s))
                        .collect();
                    assert_eq!(back, index.units);
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
