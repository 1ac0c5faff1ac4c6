//! JPEG pixels from libjpeg-turbo (MozJPEG's build of it, compiled in by the `mozjpeg` crate).
//!
//! libjpeg-turbo is the decoder of PIL, Chromium, OpenCV and MediaPipe, so a photo gives the
//! same RGB bytes here as in the Python reference, the browser page of `cbr export-web` and a
//! MediaPipe client: the scores a user measures with `cbr eval` are the ones they ship. It is also
//! the fastest decoder we can get (SIMD when `nasm` was present at build time), and it decodes at
//! 1/2, 1/4 or 1/8 scale in the DCT domain, which is what makes 12-megapixel phone photos cheap.
//!
//! The caller has already checked the header (format, pixel limit) and that the file is complete;
//! anything this decoder cannot do (CMYK/YCCK, a fatal libjpeg error) returns `None` and the caller
//! falls back to `image`'s decoder, which gives the user the real error if there is one.

use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress};

/// `bytes` decoded to 8-bit RGB at 1/`k` scale (`k` in 1, 2, 4, 8; the output is
/// `ceil(width / k)` x `ceil(height / k)`), without EXIF orientation; `None` when libjpeg cannot.
pub fn decode_rgb(bytes: &[u8], k: u32) -> Option<RgbImage> {
    assert!(matches!(k, 1 | 2 | 4 | 8), "jpeg::decode_rgb: scale 1/{k} is not a DCT scale");
    // libjpeg reports a fatal error by unwinding out of its callback (`mozjpeg`'s error manager
    // resumes a panic payload without calling the panic hook, so nothing is printed); warnings
    // about damaged data are silenced, since `check_jpeg_complete` already refuses cut-off files.
    std::panic::catch_unwind(|| decode_or_fail(bytes, k)).ok().flatten()
}

fn decode_or_fail(bytes: &[u8], k: u32) -> Option<RgbImage> {
    let mut d = Decompress::new_mem(bytes).ok()?;
    // Grey is replicated to RGB by libjpeg, as PIL's convert("RGB") does; CMYK and YCCK are left
    // to `image`, which inverts Adobe's CMYK the way PIL does.
    if !matches!(
        d.color_space(),
        ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB
    ) {
        return None;
    }
    d.scale((8 / k) as u8);
    let mut started = d.rgb().ok()?;
    let (width, height) =
        (u32::try_from(started.width()).ok()?, u32::try_from(started.height()).ok()?);
    let pixels = started.read_scanlines::<u8>().ok()?;
    started.finish().ok()?;
    RgbImage::from_raw(width, height, pixels)
}
