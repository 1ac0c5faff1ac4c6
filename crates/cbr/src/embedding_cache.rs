//! Embeddings kept on disk between runs, keyed by image content and
//! embedder, so a rebuild over a folder where 10 of 10,000 images changed
//! embeds only those 10.
//!
//! One append-only file per embedder (its hash, output and preprocessing),
//! holding records `magic | image id | variant | dim | values | crc32`. A
//! record is used only when its checksum holds, both when the file is scanned
//! and when the record is read, so a torn write from a killed process or a
//! corrupted byte costs a re-embedding, never a wrong model. Appends take an
//! exclusive lock on the file, so concurrent builds do not interleave records.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::embedder::EmbedderInfo;
use cbr_core::head::ImageId;
use cbr_core::preprocess::Preprocess;

const MAGIC: &[u8; 4] = b"CBE1";
/// Bytes of a record before its values: magic, id, variant, 3 reserved, dim.
const HEADER: usize = 4 + 16 + 1 + 3 + 4;

/// Which rendering of an image an embedding is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Variant {
    Original = 0,
    /// The mirror image (`--augment`).
    Mirrored = 1,
}

/// An open embedding cache for one embedder.
pub struct EmbeddingCache {
    path: PathBuf,
    dim: usize,
    /// Where each record starts, for records whose checksum held when scanned.
    records: HashMap<(ImageId, u8), u64>,
    /// Bytes of the file known to hold whole, valid records.
    valid_len: u64,
    file: Option<File>,
}

/// The cache file name for an embedder: anything that changes its output
/// (weights, chosen output, preprocessing, how files become pixels) changes the name.
pub fn key(info: &EmbedderInfo, preprocess: &Preprocess) -> String {
    let id = format!(
        "{}|{}|{}|{}|{}",
        info.sha256,
        info.output,
        info.dim,
        serde_json::to_string(preprocess).expect("preprocess serialises"),
        crate::decode::PIXELS_VERSION
    );
    crate::cache::sha256_hex(id.as_bytes())[..32].to_string()
}

impl EmbeddingCache {
    /// The cache for `info` under cbr's cache directory.
    pub fn for_embedder(info: &EmbedderInfo, preprocess: &Preprocess) -> Result<Self> {
        let dir = crate::cache::dir()?.join("embeddings");
        Self::open(&dir.join(format!("{}.bin", key(info, preprocess))), info.dim)
    }

    /// Opens (or starts) a cache file of `dim`-long embeddings. Unreadable
    /// or damaged content is skipped, not an error: the cache is only a
    /// shortcut.
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        let mut cache = EmbeddingCache {
            path: path.to_path_buf(),
            dim,
            records: HashMap::new(),
            valid_len: 0,
            file: None,
        };
        if let Ok(f) = File::open(path) {
            cache.scan(&f, 0)?;
            cache.file = Some(f);
        }
        Ok(cache)
    }

    fn record_len(&self) -> u64 {
        (HEADER + 4 * self.dim + 4) as u64
    }

    /// Indexes the valid records from `from` on; stops at the first bad one.
    fn scan(&mut self, f: &File, from: u64) -> Result<()> {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(from))?;
        let mut buf = vec![0u8; self.record_len() as usize];
        let mut at = from;
        loop {
            if reader.read_exact(&mut buf).is_err() {
                break; // end of file, or a torn last record
            }
            match self.parse(&buf) {
                Some((id, variant)) => {
                    self.records.insert((id, variant), at);
                    at += self.record_len();
                }
                None => break,
            }
        }
        self.valid_len = at;
        Ok(())
    }

    /// The id and variant of a record, if it is whole and its checksum holds.
    fn parse(&self, rec: &[u8]) -> Option<(ImageId, u8)> {
        let body = rec.len() - 4;
        let dim = u32::from_le_bytes(rec[24..28].try_into().ok()?) as usize;
        if &rec[..4] != MAGIC
            || dim != self.dim
            || crc32fast::hash(&rec[..body]).to_le_bytes() != rec[body..]
        {
            return None;
        }
        Some((ImageId(rec[4..20].try_into().ok()?), rec[20]))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The cached embedding of an image, if there is a sound one.
    pub fn get(&self, id: &ImageId, variant: Variant) -> Option<Vec<f32>> {
        let at = *self.records.get(&(*id, variant as u8))?;
        let mut rec = vec![0u8; self.record_len() as usize];
        self.file.as_ref()?.read_exact_at(&mut rec, at).ok()?;
        if self.parse(&rec)? != (*id, variant as u8) {
            return None; // changed on disk since it was scanned
        }
        Some(
            rec[HEADER..HEADER + 4 * self.dim]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// Appends embeddings (`dim` values each) to the cache file.
    pub fn put(&mut self, entries: &[(ImageId, Variant, &[f32])]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the embedding cache {}", dir.display()))?;
        }
        let mut f =
            OpenOptions::new().read(true).append(true).create(true).open(&self.path).with_context(
                || format!("cannot open the embedding cache {}", self.path.display()),
            )?;
        f.lock()
            .with_context(|| format!("cannot lock the embedding cache {}", self.path.display()))?;
        // Under the lock: take in what others appended, and cut off a torn
        // tail (a killed writer) so new records stay reachable.
        self.scan(&f, self.valid_len)?;
        if f.metadata()?.len() > self.valid_len {
            f.set_len(self.valid_len)?;
        }
        let mut buf = Vec::with_capacity(entries.len() * self.record_len() as usize);
        let mut offsets = Vec::with_capacity(entries.len());
        for (id, variant, values) in entries {
            assert_eq!(values.len(), self.dim, "embedding cache: wrong embedding length");
            offsets.push(((*id, *variant as u8), self.valid_len + buf.len() as u64));
            let start = buf.len();
            buf.extend_from_slice(MAGIC);
            buf.extend_from_slice(&id.0);
            buf.extend_from_slice(&[*variant as u8, 0, 0, 0]);
            buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
            for v in *values {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            let crc = crc32fast::hash(&buf[start..]);
            buf.extend_from_slice(&crc.to_le_bytes());
        }
        f.write_all(&buf)
            .with_context(|| format!("cannot write the embedding cache {}", self.path.display()))?;
        self.valid_len += buf.len() as u64;
        self.records.extend(offsets);
        f.unlock()?;
        self.file = Some(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(seed: u32, dim: usize) -> Vec<f32> {
        (0..dim).map(|i| (seed * 31 + i as u32) as f32 * 0.25).collect()
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let mut c = EmbeddingCache::open(&path, 8).unwrap();
        assert!(c.is_empty());
        let (a, b) = (ImageId::from_index(1), ImageId::from_index(2));
        c.put(&[(a, Variant::Original, &emb(1, 8)), (a, Variant::Mirrored, &emb(2, 8))]).unwrap();
        c.put(&[(b, Variant::Original, &emb(3, 8))]).unwrap();
        assert_eq!(c.get(&a, Variant::Mirrored), Some(emb(2, 8)));
        let c = EmbeddingCache::open(&path, 8).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&b, Variant::Original), Some(emb(3, 8)));
        assert_eq!(c.get(&b, Variant::Mirrored), None);
        // Another embedding length (another embedder) finds nothing usable.
        assert!(EmbeddingCache::open(&path, 4).unwrap().is_empty());
    }

    #[test]
    fn torn_and_corrupted_records_are_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let mut c = EmbeddingCache::open(&path, 8).unwrap();
        let ids: Vec<ImageId> = (0..4).map(ImageId::from_index).collect();
        let values: Vec<Vec<f32>> = (0..4).map(|i| emb(i, 8)).collect();
        let entries: Vec<(ImageId, Variant, &[f32])> =
            ids.iter().zip(&values).map(|(id, v)| (*id, Variant::Original, v.as_slice())).collect();
        c.put(&entries).unwrap();
        let rec = c.record_len() as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[rec + HEADER + 3] ^= 0x40; // a flipped bit in record 1's values
        bytes.truncate(3 * rec + 10); // record 3 torn, as by a killed process
        std::fs::write(&path, &bytes).unwrap();

        let mut c = EmbeddingCache::open(&path, 8).unwrap();
        assert_eq!(c.get(&ids[0], Variant::Original), Some(values[0].clone()));
        assert_eq!(c.get(&ids[1], Variant::Original), None, "a corrupted record must not be used");
        assert_eq!(c.get(&ids[3], Variant::Original), None, "a torn record must not be used");
        // New records after the damage stay readable, now and after reopening.
        c.put(&[(ids[3], Variant::Original, &values[3])]).unwrap();
        assert_eq!(c.get(&ids[3], Variant::Original), Some(values[3].clone()));
        let c = EmbeddingCache::open(&path, 8).unwrap();
        assert_eq!(c.get(&ids[3], Variant::Original), Some(values[3].clone()));
        assert_eq!(c.get(&ids[1], Variant::Original), None);
    }
}
