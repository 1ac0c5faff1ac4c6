//! Labelled images to embeddings, shared by build, add, classify, eval, embed
//! (shards) and the server: read and identify each file, take what the
//! embedding cache has, decode the rest in parallel one chunk ahead of the
//! embedder, embed, and keep new embeddings in the cache.
//!
//! One unreadable image never loses the work done on the others: it is
//! reported, skipped and counted (unless `strict`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;

use crate::dataset::LabelledImage;
use crate::decode::{self, DecodeLimits};
use crate::embedder::Embedder;
use crate::embedding_cache::{EmbeddingCache, Variant};
use crate::error::Error;
use cbr_core::head::{HeadOptions, ImageId, Index};

/// Decoded 8-bit RGB pixels (the `image` crate's), as images in memory are given.
pub use image::RgbImage;

/// How images are read and embedded.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Also embed a mirror image of every image, as an extra row.
    pub augment: bool,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    pub limits: DecodeLimits,
    /// Reuse and keep embeddings in cbr's [`EmbeddingCache`].
    pub cache: bool,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { augment: false, strict: false, limits: DecodeLimits::default(), cache: true }
    }
}

/// An image that could not be used, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
    /// For an exact duplicate (same bytes, same class): the file kept in its place.
    pub duplicate_of: Option<PathBuf>,
}

/// The embeddings of the images that could be read.
#[derive(Clone, Debug, Default)]
pub struct Embedded {
    /// `labels.len()` rows of `dim` raw embedding values.
    pub embeddings: Vec<f32>,
    pub dim: usize,
    pub labels: Vec<String>,
    /// The source image of each row (an index into `paths`).
    pub images: Vec<u32>,
    pub paths: Vec<PathBuf>,
    /// The content id of each image in `paths`.
    pub ids: Vec<ImageId>,
    pub skipped: Vec<Skipped>,
    /// Images whose embeddings came from the cache.
    pub cached: usize,
    /// Wall time of decoding + embedding.
    pub seconds: f64,
}

impl Embedded {
    /// The index rows of these embeddings, as `opts` store them.
    pub fn index(&self, opts: &HeadOptions) -> Result<Index> {
        let ids: Vec<ImageId> = self.images.iter().map(|&i| self.ids[i as usize]).collect();
        let power = opts.power_exponent();
        Index::from_embeddings(
            &self.embeddings,
            self.dim,
            &self.labels,
            &ids,
            power,
            opts.index_dtype,
        )
    }
}

/// How many images are decoded together before being handed to the embedder.
/// Big enough to keep both cores busy decoding, small enough to bound memory.
pub const DECODE_CHUNK: usize = 32;

/// Decodes `paths` chunk by chunk on the rayon pool, one chunk ahead of
/// `consume`, which gets each chunk's index range and per-image results. This
/// overlaps decoding with whatever `consume` does (inference). An error from
/// `consume` stops decoding.
pub fn decode_ahead<P: AsRef<std::path::Path> + Sync>(
    paths: &[P],
    preprocess: &cbr_core::preprocess::Preprocess,
    limits: &DecodeLimits,
    mut consume: impl FnMut(
        std::ops::Range<usize>,
        Vec<Result<Vec<f32>, decode::DecodeError>>,
    ) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Result<Vec<f32>, decode::DecodeError>>>(1);
    std::thread::scope(|s| -> Result<()> {
        // `move`: the sender must drop when decoding ends, or the loop below never does.
        s.spawn(move || {
            for chunk in paths.chunks(DECODE_CHUNK) {
                let decoded: Vec<_> =
                    chunk.par_iter().map(|p| decode::load_tensor(p, preprocess, limits)).collect();
                if tx.send(decoded).is_err() {
                    return; // the consumer stopped (an error): stop decoding too
                }
            }
        });
        let mut start = 0;
        for decoded in rx.iter() {
            let end = start + decoded.len();
            let result = consume(start..end, decoded);
            if result.is_err() {
                drop(rx); // unblocks and stops the decoder
                return result;
            }
            start = end;
        }
        Ok(())
    })
}

/// Embeds `images`, decoding one chunk ahead of the embedder. `progress` is
/// called with the number of images done so far. With `augment`, each image
/// also gives a row for its mirror image.
///
/// Every file is hashed first: an image whose content already appeared in
/// the same class is skipped as a duplicate, and with `opts.cache` images
/// embedded before (by this embedder) come from the [`EmbeddingCache`]; new
/// embeddings are added to it chunk by chunk, so a killed build loses at most
/// one chunk of work.
///
/// Images whose (label, content) is in `known` (already in a model being
/// extended) are skipped too.
pub fn embed_images(
    embedder: &mut Embedder,
    images: &[LabelledImage],
    opts: &EmbedOptions,
    known: &HashSet<(String, ImageId)>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Embedded> {
    let start = Instant::now();
    let preprocess = embedder.preprocess.clone();
    let dim = embedder.info.dim;
    let variants: &[Variant] =
        if opts.augment { &[Variant::Original, Variant::Mirrored] } else { &[Variant::Original] };
    let mut out = Embedded { dim, ..Default::default() };

    // 1. Identify every image by its content, and check what can be checked
    // without decoding, so an image from the cache passes the same checks.
    let ids: Vec<Result<ImageId, decode::DecodeError>> = images
        .par_iter()
        .map(|img| {
            let bytes = decode::read_limited(&img.path, &opts.limits)?;
            decode::check_header(&bytes, &opts.limits)?;
            Ok(ImageId::of_bytes(&bytes))
        })
        .collect();
    let mut first_seen: std::collections::HashMap<(&str, ImageId), &std::path::Path> =
        Default::default();
    // Images to use, in input order, with their embeddings once known.
    let mut kept: Vec<(usize, ImageId, Option<Vec<f32>>)> = Vec::new();
    for (i, (img, id)) in images.iter().zip(ids).enumerate() {
        match id {
            Err(e) if opts.strict => {
                return Err(Error::bad_input(format!(
                    "{}: {e} (--strict stops at the first unreadable image)",
                    img.path.display()
                ))
                .into())
            }
            Err(e) => out.skipped.push(Skipped {
                path: img.path.clone(),
                reason: e.to_string(),
                duplicate_of: None,
            }),
            Ok(id) if known.contains(&(img.label.clone(), id)) => out.skipped.push(Skipped {
                path: img.path.clone(),
                reason: format!("already in the model (class {:?})", img.label),
                duplicate_of: None,
            }),
            Ok(id) => match first_seen.entry((img.label.as_str(), id)) {
                std::collections::hash_map::Entry::Occupied(e) => out.skipped.push(Skipped {
                    path: img.path.clone(),
                    reason: format!(
                        "same content as {} (class {:?})",
                        e.get().display(),
                        img.label
                    ),
                    duplicate_of: Some(e.get().to_path_buf()),
                }),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(&img.path);
                    kept.push((i, id, None));
                }
            },
        }
    }

    // 2. Take what the cache has.
    let mut cache = if opts.cache {
        Some(EmbeddingCache::for_embedder(&embedder.info, &preprocess)?)
    } else {
        None
    };
    if let Some(cache) = &cache {
        for (_, id, found) in kept.iter_mut() {
            let parts: Option<Vec<Vec<f32>>> = variants.iter().map(|&v| cache.get(id, v)).collect();
            *found = parts.map(|p| p.concat());
        }
    }
    out.cached = kept.iter().filter(|k| k.2.is_some()).count();
    let done_before = images.len() - kept.len() + out.cached;
    progress(done_before);

    // 3. Decode and embed the rest, a chunk at a time.
    let todo: Vec<usize> = (0..kept.len()).filter(|&k| kept[k].2.is_none()).collect();
    let paths: Vec<&std::path::Path> =
        todo.iter().map(|&k| images[kept[k].0].path.as_path()).collect();
    let per = preprocess.tensor_len();
    let mut batch = Vec::with_capacity(DECODE_CHUNK * per * variants.len());
    let mut failed = vec![false; kept.len()];
    decode_ahead(&paths, &preprocess, &opts.limits, |range, decoded| {
        batch.clear();
        let mut ok = Vec::with_capacity(range.len());
        for (&k, result) in todo[range.clone()].iter().zip(decoded) {
            let img = &images[kept[k].0];
            match result {
                Ok(mut t) => {
                    batch.extend_from_slice(&t);
                    if opts.augment {
                        cbr_core::pixels::flip_horizontal(&mut t, &preprocess);
                        batch.extend_from_slice(&t);
                    }
                    ok.push(k);
                }
                Err(e) if opts.strict => {
                    return Err(Error::bad_input(format!(
                        "{}: {e} (--strict stops at the first unreadable image)",
                        img.path.display()
                    ))
                    .into())
                }
                Err(e) => {
                    out.skipped.push(Skipped {
                        path: img.path.clone(),
                        reason: e.to_string(),
                        duplicate_of: None,
                    });
                    failed[k] = true;
                }
            }
        }
        if !ok.is_empty() {
            let e = embedder.embed(&batch, ok.len() * variants.len())?;
            let per_image = dim * variants.len();
            if let Some(cache) = cache.as_mut() {
                let mut entries: Vec<(ImageId, Variant, &[f32])> =
                    Vec::with_capacity(ok.len() * variants.len());
                for (j, &k) in ok.iter().enumerate() {
                    for (v, &variant) in variants.iter().enumerate() {
                        let at = j * per_image + v * dim;
                        entries.push((kept[k].1, variant, &e[at..at + dim]));
                    }
                }
                // A cache that cannot be written only costs speed.
                if let Err(err) = cache.put(&entries) {
                    eprintln!("warning: {err:#}; continuing without the embedding cache");
                }
            }
            for (j, &k) in ok.iter().enumerate() {
                kept[k].2 = Some(e[j * per_image..(j + 1) * per_image].to_vec());
            }
        }
        progress(done_before + range.end);
        Ok(())
    })?;

    // 4. Rows in input order.
    for (k, (i, id, found)) in kept.into_iter().enumerate() {
        if failed[k] {
            continue;
        }
        let e = found.expect("every kept image was embedded or failed");
        let image = out.paths.len() as u32;
        out.embeddings.extend_from_slice(&e);
        for _ in variants {
            out.labels.push(images[i].label.clone());
            out.images.push(image);
        }
        out.paths.push(images[i].path.clone());
        out.ids.push(id);
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// The embeddings (`paths.len()` rows of `embedder.info.dim`) of image files, in order, decoding
/// one chunk ahead of the embedder; the first unreadable file stops it with an error naming it.
/// No labels, no de-duplication, no cache: the embedder as a function (the Python package's
/// `Embedder.embed`). `progress` gets the number of images done.
pub fn embed_files<P: AsRef<std::path::Path> + Sync>(
    embedder: &mut Embedder,
    paths: &[P],
    limits: &DecodeLimits,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<f32>> {
    let preprocess = embedder.preprocess.clone();
    let mut out = Vec::with_capacity(paths.len() * embedder.info.dim);
    let mut batch = Vec::new();
    decode_ahead(paths, &preprocess, limits, |range, decoded| {
        batch.clear();
        for (path, d) in paths[range.clone()].iter().zip(decoded) {
            let t = d.map_err(|e| {
                let err: anyhow::Error = e.into();
                err.context(format!("{}", path.as_ref().display()))
            })?;
            batch.extend_from_slice(&t);
        }
        out.extend(embedder.embed(&batch, range.len())?);
        progress(range.end);
        Ok(())
    })?;
    Ok(out)
}

/// The embeddings of images already in memory, preprocessed exactly as decoded files are.
pub fn embed_rgb(embedder: &mut Embedder, images: &[RgbImage]) -> Result<Vec<f32>> {
    let preprocess = embedder.preprocess.clone();
    let mut out = Vec::with_capacity(images.len() * embedder.info.dim);
    for chunk in images.chunks(DECODE_CHUNK) {
        out.extend(
            embedder.embed(&cbr_core::pixels::tensors_of_rgb(chunk, &preprocess), chunk.len())?,
        );
    }
    Ok(out)
}

/// An RGB image from `width * height * 3` bytes in row order (HWC, as a numpy array holds it);
/// refused when the sizes do not match.
pub fn rgb_from_pixels(width: u32, height: u32, pixels: Vec<u8>) -> Result<RgbImage> {
    let len = pixels.len();
    if width == 0 || height == 0 {
        return Err(
            Error::bad_input(format!("an image of {width}x{height} pixels is empty")).into()
        );
    }
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
        Error::bad_input(format!(
            "{len} bytes are not a {width}x{height} RGB image ({} bytes)",
            width as u64 * height as u64 * 3
        ))
        .into()
    })
}

/// Checks that every class that had images still has at least one usable one.
pub fn check_classes(images: &[LabelledImage], embedded: &Embedded) -> Result<()> {
    let mut wanted: Vec<&str> = images.iter().map(|i| i.label.as_str()).collect();
    wanted.sort();
    wanted.dedup();
    for label in wanted {
        if !embedded.labels.iter().any(|l| l == label) {
            // The caller prints the skip list only after a successful build,
            // so say here why this class's images were skipped.
            let paths: HashSet<&std::path::Path> =
                images.iter().filter(|i| i.label == label).map(|i| i.path.as_path()).collect();
            let skipped: Vec<&Skipped> =
                embedded.skipped.iter().filter(|s| paths.contains(s.path.as_path())).collect();
            let mut msg = format!(
                "class {label:?} has no readable images: all {} were skipped",
                skipped.len()
            );
            for s in skipped.iter().take(3) {
                msg.push_str(&format!("\n  {}: {}", s.path.display(), s.reason));
            }
            if skipped.len() > 3 {
                msg.push_str(&format!("\n  ... and {} more", skipped.len() - 3));
            }
            return Err(Error::bad_input(msg).into());
        }
    }
    if embedded.labels.is_empty() {
        return Err(Error::bad_input("no readable images").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_must_fill_the_image() {
        let img = rgb_from_pixels(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(img.get_pixel(1, 0).0, [4, 5, 6]);
        for (w, h, n) in [(2, 2, 6), (0, 1, 0)] {
            let e = rgb_from_pixels(w, h, vec![0; n]).unwrap_err();
            assert_eq!(crate::error::kind_of(&e), crate::error::ErrorKind::BadInput, "{e:#}");
        }
    }
}
