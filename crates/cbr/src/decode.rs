//! One image file to one embedder input tensor: decode (format from content,
//! EXIF orientation applied, everything to 8-bit RGB), refuse hostile or broken
//! files with a reason a user can act on, then resize and normalise as the
//! model's [`Preprocess`] recipe says (cbr-core's [`cbr_core::pixels`], the
//! one pixel path, which a browser uses too).
//!
//! Colour conversion follows PIL's `Image.convert("RGB")`, which our Python
//! reference uses: grey is replicated to three channels, alpha is *dropped*
//! (not composited on any background), 16-bit samples are scaled to 8 bits and
//! CMYK JPEGs are converted to RGB. JPEGs are decoded by libjpeg-turbo, PIL's own
//! decoder ([`jpeg`]), so the pixels are PIL's byte for byte.

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use cbr_core::pixels::to_tensor;
use cbr_core::preprocess::{Preprocess, Resample};

mod jpeg;

/// Upper bounds that protect the process from hostile or absurd inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `width * height`, checked from the header before any
    /// pixel buffer exists.
    pub max_pixels: u64,
    /// Largest accepted file size in bytes, checked before the file is read.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 100 megapixels is beyond any camera photo we expect, while keeping the
        // worst case (16-bit RGBA decode buffer, 800 MB) survivable per worker.
        DecodeLimits { max_pixels: 100_000_000, max_file_bytes: 256 * 1024 * 1024 }
    }
}

/// Why an image could not be used. `Display` is written to follow a path:
/// `photos/cat/x.jpg: truncated or corrupt JPEG data (...)`.
#[derive(Debug)]
pub enum DecodeError {
    /// The file has zero bytes.
    Empty,
    /// The file could not be read at all.
    Io(std::io::Error),
    /// The content is not any image format we recognise.
    UnknownFormat,
    /// A recognised format, or a feature of one, that we cannot decode.
    Unsupported { format: String, detail: String },
    /// The data is damaged: truncated download, bit rot, wrong content.
    Corrupt { format: String, detail: String },
    /// The header declares more pixels than [`DecodeLimits::max_pixels`].
    TooManyPixels { width: u32, height: u32, max_pixels: u64 },
    /// The file is larger than [`DecodeLimits::max_file_bytes`].
    FileTooLarge { bytes: u64, max_bytes: u64 },
}

impl DecodeError {
    /// A short, stable category name, for grouping skipped files in a summary.
    pub fn category(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty file",
            DecodeError::Io(_) => "unreadable",
            DecodeError::UnknownFormat => "not an image",
            DecodeError::Unsupported { .. } => "unsupported format",
            DecodeError::Corrupt { .. } => "corrupt",
            DecodeError::TooManyPixels { .. } => "too many pixels",
            DecodeError::FileTooLarge { .. } => "file too large",
        }
    }
}

const SUPPORTED: &str = "JPEG, PNG, GIF, BMP, WebP, TIFF, PNM";

fn megapixels(pixels: u64) -> f64 {
    pixels as f64 / 1e6
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty file (0 bytes)"),
            DecodeError::Io(e) => write!(f, "cannot read file: {e}"),
            DecodeError::UnknownFormat => {
                write!(f, "not a recognised image (supported formats: {SUPPORTED})")
            }
            DecodeError::Unsupported { format, detail } => {
                write!(f, "unsupported {format} image ({detail}); convert it to JPEG or PNG")
            }
            DecodeError::Corrupt { format, detail } => {
                write!(f, "truncated or corrupt {format} data ({detail})")
            }
            DecodeError::TooManyPixels { width, height, max_pixels } => write!(
                f,
                "image is {width}x{height} pixels ({:.1} megapixels), above the limit of {} \
                 pixels ({:.1} megapixels); downscale it",
                megapixels(*width as u64 * *height as u64),
                max_pixels,
                megapixels(*max_pixels)
            ),
            DecodeError::FileTooLarge { bytes, max_bytes } => write!(
                f,
                "file is {:.1} MiB, above the limit of {:.1} MiB",
                *bytes as f64 / (1024.0 * 1024.0),
                *max_bytes as f64 / (1024.0 * 1024.0)
            ),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Bmp => "BMP".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Tiff => "TIFF".into(),
        ImageFormat::Pnm => "PNM".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// Turn the `image` crate's error into ours, naming the format.
fn map_image_error(e: ImageError, format: ImageFormat) -> DecodeError {
    let name = format_name(format);
    match e {
        ImageError::Decoding(d) => corrupt(name, d.to_string()),
        // An I/O error while reading from an in-memory cursor can only mean the
        // data ended early.
        ImageError::IoError(io) => corrupt(name, io.to_string()),
        ImageError::Unsupported(u) => {
            DecodeError::Unsupported { format: name, detail: u.to_string() }
        }
        ImageError::Limits(l) => match l.kind() {
            // The decoder wanted more memory than allowed, which in practice means
            // a header with absurd dimensions or a bomb-like file.
            LimitErrorKind::InsufficientMemory | LimitErrorKind::DimensionError => {
                corrupt(name, format!("needs too much memory to decode: {l}"))
            }
            _ => DecodeError::Unsupported { format: name, detail: l.to_string() },
        },
        ImageError::Parameter(p) => corrupt(name, p.to_string()),
        ImageError::Encoding(e) => corrupt(name, e.to_string()),
    }
}

fn corrupt(format: String, detail: String) -> DecodeError {
    DecodeError::Corrupt { format, detail }
}

/// The JPEG decoder underneath `image` is lenient: a file cut off mid-scan
/// decodes "successfully" with the missing part filled in grey. PIL refuses such
/// files ("image file is truncated"), and a half-grey photo would pollute the
/// index, so we require an end-of-image marker after the last start-of-scan.
/// Inside entropy-coded data every 0xFF byte is followed by 0x00 or a restart
/// marker, so `FF D9` after the last `FF DA` can only be the real end marker
/// (and trailing garbage after it, common from some cameras, is accepted).
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let complete = match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        // No scan at all: let the decoder produce its own error.
        None => true,
    };
    if complete {
        Ok(())
    } else {
        Err(corrupt(
            "JPEG".into(),
            format!("file ends after {} bytes without an end-of-image marker", bytes.len()),
        ))
    }
}

/// Memory budget handed to the decoders themselves, as a second line of
/// defence behind our own pixel-count check (some formats allocate per frame or
/// per strip before we get to see the whole picture).
fn image_limits(limits: &DecodeLimits) -> image::Limits {
    let mut l = image::Limits::default();
    // Enough for a max_pixels image at 16-bit RGBA, plus slack for decoder state.
    let budget = limits.max_pixels.saturating_mul(8).saturating_add(64 << 20);
    l.max_alloc = Some(budget.max(512 << 20));
    l
}

/// Checks what can be checked without decoding pixels: size, format,
/// JPEG completeness, and the header's dimensions against `limits`. An image
/// that fails here fails [`decode_rgb`] with the same error.
pub fn check_header(bytes: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    let bytes = without_compressed_png_metadata(bytes);
    open_checked(&bytes, limits).map(|_| ())
}

/// PNG chunks cbr never uses whose data is zlib-compressed: a colour profile (`iCCP`) and
/// compressed text (`zTXt`, `iTXt`). The `png` crate inflates them in full while reading the
/// header, under no limit but the whole decode budget: a 1 MB file whose profile inflates to
/// 1 GB cost ~0.9 GB before any check (issue 26). Pillow refuses such files; cbr drops them,
/// as it would ignore them anyway (pixels are not colour-managed, as PIL's `convert("RGB")`).
const PNG_SKIPPED_CHUNKS: [&[u8; 4]; 3] = [b"iCCP", b"zTXt", b"iTXt"];

/// `bytes` without [`PNG_SKIPPED_CHUNKS`] when it is a PNG holding any (borrowed otherwise).
/// A damaged chunk list is left as it is, for the decoder to report.
pub fn without_compressed_png_metadata(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return Cow::Borrowed(bytes);
    }
    // (start, end) of every chunk, and whether it is skipped.
    let mut chunks = Vec::new();
    let mut at = SIGNATURE.len();
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 12).checked_add(len).filter(|&e| e <= bytes.len()) else { break };
        let kind = &bytes[at + 4..at + 8];
        chunks.push((at, end, PNG_SKIPPED_CHUNKS.iter().any(|k| kind == &k[..])));
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    if !chunks.iter().any(|c| c.2) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(SIGNATURE);
    for &(start, end, skipped) in &chunks {
        if !skipped {
            out.extend_from_slice(&bytes[start..end]);
        }
    }
    // Whatever follows the last whole chunk (a truncated one, trailing data) stays.
    let rest = chunks.last().map_or(SIGNATURE.len(), |c| c.1);
    out.extend_from_slice(&bytes[rest..]);
    Cow::Owned(out)
}

/// The decoder for `bytes`, its header read and checked against `limits`.
fn open_checked<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(impl ImageDecoder + 'a, ImageFormat), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            bytes: bytes.len() as u64,
            max_bytes: limits.max_file_bytes,
        });
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(DecodeError::Io)?;
    let format = reader.format().ok_or(DecodeError::UnknownFormat)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    reader.limits(image_limits(limits));
    // Building the decoder reads only the header, so the size check below runs
    // before any pixel buffer is allocated.
    let decoder = reader.into_decoder().map_err(|e| map_image_error(e, format))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(corrupt(format_name(format), format!("header says {width}x{height} pixels")));
    }
    if width as u64 * height as u64 > limits.max_pixels {
        return Err(DecodeError::TooManyPixels { width, height, max_pixels: limits.max_pixels });
    }
    Ok((decoder, format))
}

/// Decode an image held in memory to 8-bit RGB, with EXIF orientation applied.
/// The format is recognised from the content, never from a file name.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    let bytes = without_compressed_png_metadata(bytes);
    let (decoder, format) = open_checked(&bytes, limits)?;
    decode_opened(&bytes, decoder, format, 1)
}

/// Decodes the pixels of an opened image, with EXIF orientation applied: a JPEG by
/// libjpeg-turbo at 1/`k` scale ([`jpeg`]), anything else, or a JPEG libjpeg cannot decode (CMYK),
/// by `image` in full.
fn decode_opened(
    bytes: &[u8],
    mut decoder: impl ImageDecoder,
    format: ImageFormat,
    k: u32,
) -> Result<RgbImage, DecodeError> {
    // A damaged EXIF block should not cost us an otherwise good photo.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = match (format == ImageFormat::Jpeg).then(|| jpeg::decode_rgb(bytes, k)).flatten()
    {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format))?,
    };
    img.apply_orientation(orientation);
    // `into_rgb8` is a no-op move for RGB8 and otherwise converts like PIL's
    // convert("RGB"): alpha dropped, grey replicated, 16-bit scaled down.
    Ok(img.into_rgb8())
}

/// Photos at least this many times larger than the embedder's input, in both
/// dimensions, are decoded at reduced scale (see [`decode_rgb_for`]).
const REDUCED_DECODE_MARGIN: u32 = 2;

/// Part of the embedding cache's key: changes whenever the pixels this module
/// hands the embedder for a given file change.
pub const PIXELS_VERSION: &str = "libjpeg-turbo-1";

/// [`decode_rgb`] for an embedder input of `target` (width, height): a JPEG at
/// least twice as large as the target in both dimensions is decoded at 1/2,
/// 1/4 or 1/8 scale in the DCT domain (the largest reduction that keeps it at
/// least twice the target, as PIL's `draft()` does), so a 12-megapixel phone photo
/// costs a fraction of a full decode. The bilinear resize that follows sees at least
/// twice its output size, so its low-pass filter still decides the result.
pub fn decode_rgb_for(
    bytes: &[u8],
    limits: &DecodeLimits,
    target: (u32, u32),
) -> Result<RgbImage, DecodeError> {
    let stripped = without_compressed_png_metadata(bytes);
    let bytes = &*stripped;
    let (mut decoder, format) = open_checked(bytes, limits)?;
    if format != ImageFormat::Jpeg {
        return decode_opened(bytes, decoder, format, 1);
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (w, h) = decoder.dimensions();
    // The target in the file's own (unrotated) orientation.
    let (tw, th) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (target.1, target.0),
        _ => target,
    };
    decode_opened(bytes, decoder, format, jpeg_scale_for((w, h), (tw, th)))
}

/// The DCT scale 1/k (k = 1, 2, 4 or 8) at which [`decode_rgb_for`] decodes a JPEG of `size` for
/// an input of `target`, both in the file's own orientation: the largest reduction that keeps the
/// picture at least twice the target in both dimensions.
pub fn jpeg_scale_for(size: (u32, u32), target: (u32, u32)) -> u32 {
    let m = REDUCED_DECODE_MARGIN;
    [8u32, 4, 2]
        .into_iter()
        .find(|k| size.0 / k >= m * target.0 && size.1 / k >= m * target.1)
        .unwrap_or(1)
}

/// Read and decode an image file; see [`decode_rgb`].
pub fn load_rgb(path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    let bytes = read_limited(path.as_ref(), limits)?;
    decode_rgb(&bytes, limits)
}

/// Read a whole file, refusing it from its size before reading.
pub fn read_limited(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    // Opening a FIFO for reading blocks until a writer appears (forever, for `mkfifo x.jpg` in
    // a class folder): open without blocking, then refuse anything but a regular file.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut open, libc::O_NONBLOCK);
    let file = open.open(path).map_err(DecodeError::Io)?;
    let meta = file.metadata().map_err(DecodeError::Io)?;
    if !meta.is_file() {
        return Err(DecodeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a folder, FIFO, socket or device)",
        )));
    }
    let len = meta.len();
    if len > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge { bytes: len, max_bytes: limits.max_file_bytes });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows while we read it.
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(DecodeError::Io)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            bytes: bytes.len() as u64,
            max_bytes: limits.max_file_bytes,
        });
    }
    Ok(bytes)
}

/// Load, decode and preprocess one image file into a fresh tensor.
pub fn load_tensor(
    path: impl AsRef<Path>,
    p: &Preprocess,
    limits: &DecodeLimits,
) -> Result<Vec<f32>, DecodeError> {
    bytes_to_tensor(&read_limited(path.as_ref(), limits)?, p, limits)
}

/// Decode and preprocess one image held in memory into a fresh tensor (the
/// decode reduced for `p`'s size, see [`decode_rgb_for`]).
pub fn bytes_to_tensor(
    bytes: &[u8],
    p: &Preprocess,
    limits: &DecodeLimits,
) -> Result<Vec<f32>, DecodeError> {
    // MediaPipe samples the full-size image, so its resample needs the full decode.
    let img = match p.resample {
        Resample::Antialiased => decode_rgb_for(bytes, limits, (p.width, p.height))?,
        Resample::Mediapipe => decode_rgb(bytes, limits)?,
    };
    let mut out = vec![0f32; p.tensor_len()];
    to_tensor(&img, p, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbr_core::preprocess::{ChannelOrder, Layout, ResizeMode};
    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Rgb, Rgba, RgbaImage};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).expect("test encode");
        buf.into_inner()
    }

    fn decode(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
        decode_rgb(bytes, &DecodeLimits::default())
    }

    fn close(a: Rgb<u8>, b: [u8; 3], tol: i32) -> bool {
        a.0.iter().zip(b).all(|(&x, y)| (x as i32 - y as i32).abs() <= tol)
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(name)
    }

    /// An image whose every pixel differs, so format round trips are meaningful.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 11) as u8, (x * 3 + y * 5) as u8]))
    }

    #[test]
    fn lossless_formats_round_trip_exactly() {
        let img = DynamicImage::ImageRgb8(pattern(13, 9));
        for format in [
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::Pnm,
            ImageFormat::WebP,
        ] {
            let bytes = encode(&img, format);
            let got = decode(&bytes).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(&got, img.as_rgb8().unwrap(), "{format:?}");
        }
    }

    #[test]
    fn gif_first_frame_decodes() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 6, Rgb([200, 30, 90])));
        let got = decode(&encode(&img, ImageFormat::Gif)).unwrap();
        assert_eq!(got.dimensions(), (8, 6));
        assert!(close(*got.get_pixel(3, 3), [200, 30, 90], 8), "{:?}", got.get_pixel(3, 3));
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        // Fully transparent pixels keep their colour, as PIL's convert("RGB") does.
        let img = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 0]));
        let got = decode(&encode(&DynamicImage::ImageRgba8(img), ImageFormat::Png)).unwrap();
        assert_eq!(*got.get_pixel(1, 1), Rgb([10, 20, 30]));
        let ga = GrayAlphaImage::from_pixel(4, 4, image::LumaA([99, 0]));
        let got = decode(&encode(&DynamicImage::ImageLumaA8(ga), ImageFormat::Png)).unwrap();
        assert_eq!(*got.get_pixel(2, 2), Rgb([99, 99, 99]));
    }

    #[test]
    fn grey_and_16_bit_become_8_bit_rgb() {
        let g = GrayImage::from_pixel(3, 3, image::Luma([77]));
        let got = decode(&encode(&DynamicImage::ImageLuma8(g), ImageFormat::Png)).unwrap();
        assert_eq!(*got.get_pixel(0, 0), Rgb([77, 77, 77]));
        let img16: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(3, 3, Rgb([65535, 0, 32896]));
        let got = decode(&encode(&DynamicImage::ImageRgb16(img16), ImageFormat::Png)).unwrap();
        assert_eq!(*got.get_pixel(1, 1), Rgb([255, 0, 128]));
    }

    #[test]
    fn format_comes_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("really_a_png.jpg");
        std::fs::write(&path, encode(&DynamicImage::ImageRgb8(pattern(5, 5)), ImageFormat::Png))
            .unwrap();
        assert_eq!(load_rgb(&path, &DecodeLimits::default()).unwrap(), pattern(5, 5));
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let bytes = encode(&DynamicImage::ImageRgb8(pattern(64, 64)), ImageFormat::Jpeg);
        assert!(decode(&bytes).is_ok());
        let err = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().starts_with("truncated or corrupt JPEG data ("), "{err}");
    }

    #[test]
    fn damaged_jpeg_data_neither_panics_nor_prints() {
        // Garbage in the scan (libjpeg: warnings, silenced) and in the Huffman table (libjpeg: a
        // fatal error, unwound out of libjpeg and caught): each decodes or is refused, no panic.
        let bytes = encode(&DynamicImage::ImageRgb8(pattern(64, 64)), ImageFormat::Jpeg);
        let sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        let dht = bytes.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        for at in [sos + 20, sos + 40, dht + 6, dht + 10] {
            let mut damaged = bytes.clone();
            for b in &mut damaged[at..at + 8] {
                *b = 0x5A;
            }
            match decode(&damaged) {
                Ok(img) => assert_eq!(img.dimensions(), (64, 64)),
                Err(e) => assert!(matches!(e, DecodeError::Corrupt { .. }), "{at}: {e:?}"),
            }
            // The reduced (DCT-scaled) decode takes the same path.
            let _ = decode_rgb_for(&damaged, &DecodeLimits::default(), (8, 8));
        }
        // libjpeg's own fatal error comes back as `None`, for the caller to fall back on.
        assert!(jpeg::decode_rgb(&bytes[..sos], 1).is_none());
    }

    /// A PNG with a chunk of `kind` holding `data`.
    fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        chunk.extend_from_slice(&crc.finalize().to_be_bytes());
        // After the 8-byte signature and the 25-byte IHDR chunk.
        [&png[..33], &chunk[..], &png[33..]].concat()
    }

    #[test]
    fn a_png_colour_profile_bomb_is_skipped_not_inflated() {
        // Issue 26: a 1 MB PNG whose iCCP profile inflates to 1 GiB took ~0.9 GB, then failed.
        use std::io::Write;
        let plain = encode(&DynamicImage::ImageRgb8(pattern(64, 64)), ImageFormat::Png);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            z.write_all(&zeros).unwrap();
        }
        let mut iccp = b"bomb\0\0".to_vec();
        iccp.extend_from_slice(&z.finish().unwrap());
        let bomb = with_chunk(&plain, b"iCCP", &iccp);
        assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
        let text = with_chunk(&bomb, b"zTXt", b"k\0\0x\x9c\x03\0\0\0\0\x01");
        for png in [&bomb, &text] {
            assert_eq!(&*without_compressed_png_metadata(png), &plain[..]);
            assert_eq!(decode(png).unwrap(), pattern(64, 64));
            check_header(png, &DecodeLimits::default()).unwrap();
            assert_eq!(
                decode_rgb_for(png, &DecodeLimits::default(), (8, 8)).unwrap(),
                pattern(64, 64)
            );
        }
        // Other files pass as they are.
        assert!(matches!(without_compressed_png_metadata(&plain), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(
            without_compressed_png_metadata(b"GIF89a"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn truncated_png_is_refused() {
        let bytes = encode(&DynamicImage::ImageRgb8(pattern(64, 64)), ImageFormat::Png);
        let err = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    #[cfg(unix)]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p.jpg");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(load_rgb(&fifo, &DecodeLimits::default()).map(|_| ()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("reading a FIFO hung");
        let err = got.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn empty_and_non_image_files() {
        assert!(matches!(decode(b""), Err(DecodeError::Empty)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.jpg");
        std::fs::write(&path, "this is a text file, not a photo\n").unwrap();
        let err = load_rgb(&path, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat), "{err:?}");
        assert!(err.to_string().contains("not a recognised image"), "{err}");
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(load_rgb(&empty, &DecodeLimits::default()), Err(DecodeError::Empty)));
        let err = load_rgb(dir.path().join("missing.png"), &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Io(_)) && err.to_string().starts_with("cannot read file")
        );
    }

    #[test]
    fn file_size_limit() {
        let bytes = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Bmp);
        let limits = DecodeLimits { max_file_bytes: 100, ..DecodeLimits::default() };
        assert!(matches!(decode_rgb(&bytes, &limits), Err(DecodeError::FileTooLarge { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bmp");
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load_rgb(&path, &limits), Err(DecodeError::FileTooLarge { .. })));
    }

    /// A 24-bit BMP header claiming 30000x30000 pixels and no pixel data.
    fn huge_bmp_header() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"BM");
        b.extend_from_slice(&(54u32 + 30000 * 30000 * 3).to_le_bytes()); // file size
        b.extend_from_slice(&0u32.to_le_bytes()); // reserved
        b.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
        b.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER size
        b.extend_from_slice(&30000i32.to_le_bytes());
        b.extend_from_slice(&30000i32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // planes
        b.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
        b.extend_from_slice(&[0u8; 24]); // compression, sizes, resolution, palette
        b
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }

    /// A well-formed PNG claiming 30000x30000 RGB whose image data is a tiny
    /// zlib stream (a decompression-bomb shape): only the header may be read.
    fn huge_png_header() -> Vec<u8> {
        let mut b = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
        png_chunk(&mut b, b"IHDR", &ihdr);
        // zlib header, one empty final stored block, Adler-32 of nothing.
        png_chunk(&mut b, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0, 0, 0, 1]);
        png_chunk(&mut b, b"IEND", &[]);
        b
    }

    /// A real JPEG whose frame header (SOF0) is patched to claim 30000x30000.
    fn huge_jpeg_header() -> Vec<u8> {
        let mut b = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Jpeg);
        let sof = b.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
        b[sof + 5..sof + 7].copy_from_slice(&30000u16.to_be_bytes());
        b[sof + 7..sof + 9].copy_from_slice(&30000u16.to_be_bytes());
        b
    }

    /// A real GIF whose logical screen and first frame claim 30000x30000.
    fn huge_gif_header() -> Vec<u8> {
        let mut b = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Gif);
        b[6..8].copy_from_slice(&30000u16.to_le_bytes());
        b[8..10].copy_from_slice(&30000u16.to_le_bytes());
        b
    }

    #[test]
    fn huge_dimensions_refused_from_header() {
        let cases = [
            ("bmp", huge_bmp_header()),
            ("png", huge_png_header()),
            ("jpeg", huge_jpeg_header()),
            ("gif", huge_gif_header()),
        ];
        for (name, bytes) in cases {
            let start = std::time::Instant::now();
            let err = decode(&bytes).unwrap_err();
            match err {
                DecodeError::TooManyPixels { width: 30000, height: 30000, .. } => {}
                ref other => panic!("{name}: expected TooManyPixels, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains("30000x30000") && msg.contains("900.0 megapixels"), "{msg}");
            // Allocating 2.7 GB and failing would take far longer than this.
            assert!(start.elapsed().as_millis() < 1000, "{name} took {:?}", start.elapsed());
        }
    }

    #[test]
    fn large_jpegs_decode_reduced_and_close_to_the_full_decode() {
        // 2000x1000 smooth gradient: at least twice a 224x224 target at 1/2
        // scale only (1/4 would be 500x250).
        let img = RgbImage::from_fn(2000, 1000, |x, y| {
            Rgb([(x / 8) as u8, (y / 4) as u8, ((x + y) / 12) as u8])
        });
        let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let limits = DecodeLimits::default();
        let reduced = decode_rgb_for(&bytes, &limits, (224, 224)).unwrap();
        assert_eq!(reduced.dimensions(), (1000, 500));
        // Small targets reduce further; a target as large as the photo not at all.
        assert_eq!(decode_rgb_for(&bytes, &limits, (32, 32)).unwrap().dimensions(), (250, 125));
        assert_eq!(
            decode_rgb_for(&bytes, &limits, (1000, 600)).unwrap().dimensions(),
            (2000, 1000)
        );
        // The embedder's input is within a grey level or two of the full decode's.
        let p = Preprocess::raw(224, 224, Layout::Nhwc);
        let (mut full, mut fast) = (vec![0f32; p.tensor_len()], vec![0f32; p.tensor_len()]);
        to_tensor(&decode_rgb(&bytes, &limits).unwrap(), &p, &mut full);
        to_tensor(&reduced, &p, &mut fast);
        let worst = full.iter().zip(&fast).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst <= 3.0, "reduced decode differs by {worst} grey levels");
        // The pixel limit still applies before anything is decoded.
        let tight = DecodeLimits { max_pixels: 1_000_000, ..limits };
        assert!(matches!(
            decode_rgb_for(&bytes, &tight, (224, 224)),
            Err(DecodeError::TooManyPixels { .. })
        ));
    }

    #[test]
    fn reduced_decode_applies_exif_orientation() {
        // Stored 32x16 with Orientation=6 (see below): for a 2x4 target the
        // stored image is reduced 1/4 to 8x4, then shown as 4x8, red on top.
        let bytes = std::fs::read(fixture("exif_orientation6.jpg")).unwrap();
        let img = decode_rgb_for(&bytes, &DecodeLimits::default(), (2, 4)).unwrap();
        assert_eq!(img.dimensions(), (4, 8));
        assert!(close(*img.get_pixel(2, 1), [255, 0, 0], 40), "{:?}", img.get_pixel(2, 1));
        assert!(close(*img.get_pixel(2, 6), [0, 0, 255], 40), "{:?}", img.get_pixel(2, 6));
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Stored as 32x16, left half red, right half blue, Orientation=6
        // (rotate 90 degrees clockwise to display): shown as 16x32, red on top.
        let img = load_rgb(fixture("exif_orientation6.jpg"), &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (16, 32));
        assert!(close(*img.get_pixel(8, 4), [255, 0, 0], 12), "{:?}", img.get_pixel(8, 4));
        assert!(close(*img.get_pixel(8, 27), [0, 0, 255], 12), "{:?}", img.get_pixel(8, 27));
    }

    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        // Saved by PIL as CMYK (0, 255, 255, 0), i.e. red.
        let img = load_rgb(fixture("cmyk_red.jpg"), &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        assert!(close(*img.get_pixel(8, 8), [255, 0, 0], 20), "{:?}", img.get_pixel(8, 8));
    }

    fn recipe(
        w: u32,
        h: u32,
        layout: Layout,
        order: ChannelOrder,
        resize: ResizeMode,
    ) -> Preprocess {
        Preprocess {
            width: w,
            height: h,
            layout,
            channel_order: order,
            mean: [10.0, 20.0, 30.0],
            std: [2.0, 4.0, 5.0],
            resize,
            resample: Resample::Antialiased,
        }
    }

    #[test]
    fn tensor_layout_order_and_normalisation_exact() {
        // 2x1 image: pixel A = (12, 28, 40), pixel B = (110, 120, 130).
        let img = RgbImage::from_raw(2, 1, vec![12, 28, 40, 110, 120, 130]).unwrap();
        let norm = |v: f32, c: usize| (v - [10.0, 20.0, 30.0][c]) / [2.0f32, 4.0, 5.0][c];
        let mut out = vec![0f32; 6];

        to_tensor(
            &img,
            &recipe(2, 1, Layout::Nchw, ChannelOrder::Rgb, ResizeMode::Stretch),
            &mut out,
        );
        let want =
            [norm(12., 0), norm(110., 0), norm(28., 1), norm(120., 1), norm(40., 2), norm(130., 2)];
        assert_eq!(out, want);
        assert_eq!(out[0], 1.0);

        to_tensor(
            &img,
            &recipe(2, 1, Layout::Nhwc, ChannelOrder::Rgb, ResizeMode::CenterCrop),
            &mut out,
        );
        let want =
            [norm(12., 0), norm(28., 1), norm(40., 2), norm(110., 0), norm(120., 1), norm(130., 2)];
        assert_eq!(out, want);

        // BGR: output channel 0 is blue, normalised with mean[0]/std[0].
        to_tensor(
            &img,
            &recipe(2, 1, Layout::Nchw, ChannelOrder::Bgr, ResizeMode::Stretch),
            &mut out,
        );
        let want =
            [norm(40., 0), norm(130., 0), norm(28., 1), norm(120., 1), norm(12., 2), norm(110., 2)];
        assert_eq!(out, want);

        to_tensor(
            &img,
            &recipe(2, 1, Layout::Nhwc, ChannelOrder::Bgr, ResizeMode::Stretch),
            &mut out,
        );
        let want =
            [norm(40., 0), norm(28., 1), norm(12., 2), norm(130., 0), norm(120., 1), norm(110., 2)];
        assert_eq!(out, want);
    }

    #[test]
    fn stretch_and_center_crop_differ_as_expected() {
        // 300x100: red | green | blue thirds. A centre crop to a square keeps only
        // the green middle; a stretch keeps all three.
        let img = RgbImage::from_fn(300, 100, |x, _| match x / 100 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let p = Preprocess {
            mean: [0.0; 3],
            std: [1.0; 3],
            ..recipe(12, 12, Layout::Nhwc, ChannelOrder::Rgb, ResizeMode::CenterCrop)
        };
        let mut out = vec![0f32; p.tensor_len()];
        to_tensor(&img, &p, &mut out);
        // The filter reaches a little beyond the crop box (as PIL's resize with
        // a box does), so only the edge columns see a trace of red or blue.
        for (i, px) in out.chunks_exact(3).enumerate() {
            let x = i % 12;
            if (2..10).contains(&x) {
                assert_eq!(px, [0.0, 255.0, 0.0], "x={x}");
            } else {
                assert!(px[1] > 200.0, "x={x}: {px:?}");
            }
        }
        let p = Preprocess { resize: ResizeMode::Stretch, ..p };
        to_tensor(&img, &p, &mut out);
        let at = |x: usize, y: usize| &out[(y * 12 + x) * 3..(y * 12 + x) * 3 + 3];
        assert_eq!(at(0, 5), [255.0, 0.0, 0.0]);
        assert_eq!(at(6, 5), [0.0, 255.0, 0.0]);
        assert_eq!(at(11, 5), [0.0, 0.0, 255.0]);
    }

    /// A grey row through the MediaPipe resample: `(out, in)` pixel values.
    fn mediapipe_row(pixels: &[u8], out_width: u32) -> Vec<f32> {
        let img = RgbImage::from_fn(pixels.len() as u32, 1, |x, _| {
            let v = pixels[x as usize];
            Rgb([v, v, v])
        });
        let p = Preprocess {
            resample: Resample::Mediapipe,
            ..Preprocess::raw(out_width, 1, Layout::Nhwc)
        };
        let mut out = vec![0f32; p.tensor_len()];
        to_tensor(&img, &p, &mut out);
        out.chunks_exact(3).map(|c| c[0]).collect()
    }

    #[test]
    fn mediapipe_resample_samples_corner_aligned_in_opencv_fixed_point() {
        // Output x samples the source at x·4/3 rounded to 1/32: 0, 1 + 11/32, 2 + 21/32, so
        // (21·100 + 11·200) / 32 = 134.375 and (11·200 + 21·40) / 32 = 95, rounded to nearest.
        assert_eq!(mediapipe_row(&[0, 100, 200, 40], 3), [0.0, 134.0, 95.0]);
        // Halving takes every other pixel (no antialiasing: 100 and 40 are not seen).
        assert_eq!(mediapipe_row(&[0, 100, 200, 40], 2), [0.0, 200.0]);
        // Upscaling: positions 0, 0.5, 1, 1.5; past the last pixel the border is replicated.
        assert_eq!(mediapipe_row(&[10, 250], 4), [10.0, 130.0, 250.0, 250.0]);
    }

    #[test]
    fn mediapipe_resample_decodes_large_jpegs_in_full_and_is_recorded_only_when_chosen() {
        let img = RgbImage::from_fn(2000, 1000, |x, y| {
            Rgb([(x / 8) as u8, (y / 4) as u8, ((x + y) / 12) as u8])
        });
        let bytes = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let limits = DecodeLimits::default();
        let p =
            Preprocess { resample: Resample::Mediapipe, ..Preprocess::raw(224, 224, Layout::Nchw) };
        let mut full = vec![0f32; p.tensor_len()];
        to_tensor(&decode_rgb(&bytes, &limits).unwrap(), &p, &mut full);
        assert_eq!(bytes_to_tensor(&bytes, &p, &limits).unwrap(), full);

        // Antialiased (the default) is left out of the JSON, so the metadata and embedding-cache
        // keys of models from before the field existed do not change; absent reads as it.
        let json = serde_json::to_string(&Preprocess::raw(2, 2, Layout::Nchw)).unwrap();
        assert!(!json.contains("resample"), "{json}");
        let back: Preprocess = serde_json::from_str(&json).unwrap();
        assert_eq!(back.resample, Resample::Antialiased);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""resample":"mediapipe""#), "{json}");
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), p);
    }

    #[test]
    fn resize_keeps_flat_colour_and_reuses_scratch() {
        let p = recipe(7, 5, Layout::Nchw, ChannelOrder::Rgb, ResizeMode::Stretch);
        let mut out = vec![0f32; p.tensor_len()];
        // Different source sizes through the same thread-local scratch.
        for (w, h) in [(50, 40), (3, 2), (640, 480)] {
            let img = RgbImage::from_pixel(w, h, Rgb([12, 24, 35]));
            to_tensor(&img, &p, &mut out);
            assert!(out[..35].iter().all(|&v| v == 1.0), "{w}x{h}");
            assert!(out[35..70].iter().all(|&v| v == 1.0), "{w}x{h}");
            assert!(out[70..].iter().all(|&v| v == 1.0), "{w}x{h}");
        }
    }

    #[test]
    fn load_tensor_end_to_end() {
        let p = recipe(4, 4, Layout::Nchw, ChannelOrder::Rgb, ResizeMode::CenterCrop);
        let t = load_tensor(fixture("cmyk_red.jpg"), &p, &DecodeLimits::default()).unwrap();
        assert_eq!(t.len(), p.tensor_len());
        let err = load_tensor(fixture("no_such_file.jpg"), &p, &DecodeLimits::default());
        assert!(matches!(err, Err(DecodeError::Io(_))));
    }
}
