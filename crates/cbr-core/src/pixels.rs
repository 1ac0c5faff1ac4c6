//! The one pixel path: decoded RGB pixels into the embedder's input tensor
//! (resize as the model's [`Preprocess`] says, then normalise), the same code
//! on a machine and in a browser (which decodes, then hands RGBA here).
//!
//! - [`Resample::Antialiased`]: fast_image_resize's bilinear convolution,
//!   which matches Pillow's `Image.resize(size, Image.BILINEAR)`;
//! - [`Resample::Mediapipe`]: MediaPipe's own sampling, bit for bit, for
//!   TFLite classifiers that MediaPipe runs.

use std::cell::RefCell;

use fast_image_resize as fr;
use image::RgbImage;

use crate::preprocess::{ChannelOrder, Layout, Preprocess, Resample, ResizeMode};

/// Per-thread scratch state for the hot path: the resizer keeps its internal
/// convolution buffers between calls, and the resized RGB image is reused.
struct Scratch {
    resizer: fr::Resizer,
    resized: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> =
        RefCell::new(Scratch { resizer: fr::Resizer::new(), resized: Vec::new() });
}

/// Resize `img` as `p` says and write exactly `p.tensor_len()` normalised
/// floats into `out`, in `p.layout` and `p.channel_order`.
///
/// Resizing uses a bilinear convolution (the same algorithm as PIL's
/// `Image.resize(size, Image.BILINEAR)`, which our Python reference uses).
///
/// # Panics
/// If `out.len() != p.tensor_len()` or `p` has a zero width or height: these
/// are programming errors, not properties of the user's images.
pub fn to_tensor(img: &RgbImage, p: &Preprocess, out: &mut [f32]) {
    assert_eq!(out.len(), p.tensor_len(), "to_tensor: output slice has the wrong length");
    assert!(p.width > 0 && p.height > 0, "to_tensor: preprocess size must be non-zero");
    let (sw, sh) = img.dimensions();
    let identity = sw == p.width && sh == p.height;
    if identity {
        // Stretch and CenterCrop both leave a same-sized image untouched.
        write_normalised(img.as_raw(), p, out);
        return;
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let Scratch { resizer, resized } = &mut *scratch;
        resized.resize(p.tensor_len(), 0);
        if p.resample == Resample::Mediapipe {
            sample_bilinear_like_opencv(img, source_box(sw, sh, p), (p.width, p.height), resized);
            write_normalised(resized, p, out);
            return;
        }
        let src = fr::images::ImageRef::new(sw, sh, img.as_raw(), fr::PixelType::U8x3)
            .expect("an RgbImage buffer always holds width*height*3 bytes");
        let mut dst =
            fr::images::Image::from_slice_u8(p.width, p.height, resized, fr::PixelType::U8x3)
                .expect("scratch buffer was sized to width*height*3 bytes");
        let options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        let options = match p.resize {
            ResizeMode::Stretch => options,
            // Crops the source to the destination's aspect ratio around the
            // centre (fractional crop box, so no half-pixel shift), which is
            // the same as "shorter side fits, then centre-crop".
            ResizeMode::CenterCrop => options.fit_into_destination(Some((0.5, 0.5))),
        };
        resizer
            .resize(&src, &mut dst, &options)
            .expect("resizing between two non-empty U8x3 images cannot fail");
        write_normalised(resized, p, out);
    });
}

/// The part of a `w` x `h` image that `p` maps onto its input: all of it for
/// [`ResizeMode::Stretch`], the centred box of the input's aspect ratio for
/// [`ResizeMode::CenterCrop`]. As `(left, top, width, height)` in pixels.
fn source_box(w: u32, h: u32, p: &Preprocess) -> (f64, f64, f64, f64) {
    let (w, h) = (f64::from(w), f64::from(h));
    match p.resize {
        ResizeMode::Stretch => (0.0, 0.0, w, h),
        ResizeMode::CenterCrop => {
            let aspect = f64::from(p.width) / f64::from(p.height);
            if w / h > aspect {
                let bw = h * aspect;
                ((w - bw) / 2.0, 0.0, bw, h)
            } else {
                let bh = w / aspect;
                (0.0, (h - bh) / 2.0, w, bh)
            }
        }
    }
}

/// [`Resample::Mediapipe`]: MediaPipe's CPU ImageToTensor maps the box's corners
/// onto the output's (`getPerspectiveTransform` + `warpPerspective` with
/// `INTER_LINEAR` and a replicated border), so output pixel `x` samples the
/// source at `left + x · width / out_width` (corners aligned, not centres) with
/// no antialiasing. OpenCV rounds each position to 1/32 pixel and weighs the
/// four neighbours in fixed point, `(Σ w·p + 2^14) >> 15` with `w` in units of
/// 2^-15; the weights here are those divided by 32, so the result is the same
/// integer.
fn sample_bilinear_like_opencv(
    img: &RgbImage,
    (left, top, bw, bh): (f64, f64, f64, f64),
    (ow, oh): (u32, u32),
    out: &mut [u8],
) {
    const FRACTION: f64 = 32.0; // OpenCV's INTER_TAB_SIZE
    let (sw, sh) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    // Integer and 1/32 fractional source position of each output column / row; OpenCV
    // rounds half to even (`cvRound`).
    let positions = |n: u32, start: f64, span: f64| -> Vec<(i64, i64)> {
        let step = span / f64::from(n);
        (0..n)
            .map(|i| {
                let fixed = ((start + f64::from(i) * step) * FRACTION).round_ties_even() as i64;
                (fixed >> 5, fixed & 31)
            })
            .collect()
    };
    let xs = positions(ow, left, bw);
    let ys = positions(oh, top, bh);
    let clamp_x = |x: i64| x.clamp(0, sw - 1) as usize;
    let clamp_y = |y: i64| y.clamp(0, sh - 1) as usize;
    let row_len = sw as usize * 3;
    for (oy, &(iy, fy)) in ys.iter().enumerate() {
        let (r0, r1) = (clamp_y(iy) * row_len, clamp_y(iy + 1) * row_len);
        for (ox, &(ix, fx)) in xs.iter().enumerate() {
            let (c0, c1) = (clamp_x(ix) * 3, clamp_x(ix + 1) * 3);
            let w = [(32 - fy) * (32 - fx), (32 - fy) * fx, fy * (32 - fx), fy * fx];
            let o = (oy * ow as usize + ox) * 3;
            for c in 0..3 {
                let v = w[0] * i64::from(src[r0 + c0 + c])
                    + w[1] * i64::from(src[r0 + c1 + c])
                    + w[2] * i64::from(src[r1 + c0 + c])
                    + w[3] * i64::from(src[r1 + c1 + c]);
                out[o + c] = ((v + 512) >> 10).clamp(0, 255) as u8;
            }
        }
    }
}

/// `out = (pixel - mean[c]) / std[c]`, through a 256-entry table per channel so
/// the result is bit-identical to that formula and costs one load per value.
fn write_normalised(rgb: &[u8], p: &Preprocess, out: &mut [f32]) {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, x) in table.iter_mut().enumerate() {
            *x = (v as f32 - p.mean[c]) / p.std[c];
        }
    }
    // Output channel k takes source channel src[k]; mean/std are indexed by the
    // output channel, i.e. they are given in the model's channel order.
    let src = match p.channel_order {
        ChannelOrder::Rgb => [0usize, 1, 2],
        ChannelOrder::Bgr => [2usize, 1, 0],
    };
    let n = p.width as usize * p.height as usize;
    debug_assert_eq!(rgb.len(), 3 * n);
    match p.layout {
        Layout::Nhwc => {
            for (px, o) in rgb.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                o[0] = lut[0][px[src[0]] as usize];
                o[1] = lut[1][px[src[1]] as usize];
                o[2] = lut[2][px[src[2]] as usize];
            }
        }
        Layout::Nchw => {
            let (o0, rest) = out.split_at_mut(n);
            let (o1, o2) = rest.split_at_mut(n);
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                o0[i] = lut[0][px[src[0]] as usize];
                o1[i] = lut[1][px[src[1]] as usize];
                o2[i] = lut[2][px[src[2]] as usize];
            }
        }
    }
}

/// Mirrors an input tensor left to right in place (for index augmentation).
pub fn flip_horizontal(t: &mut [f32], p: &Preprocess) {
    let (w, h) = (p.width as usize, p.height as usize);
    match p.layout {
        Layout::Nchw => {
            for row in t.chunks_exact_mut(w) {
                row.reverse();
            }
        }
        Layout::Nhwc => {
            for row in t.chunks_exact_mut(w * 3) {
                for x in 0..w / 2 {
                    for c in 0..3 {
                        row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                    }
                }
            }
        }
    }
    debug_assert_eq!(t.len(), 3 * w * h);
}

/// The input tensors of images already decoded (the Python package's arrays and PIL images),
/// concatenated, preprocessed exactly as a decoded file is.
pub fn tensors_of_rgb(images: &[RgbImage], p: &Preprocess) -> Vec<f32> {
    let per = p.tensor_len();
    let mut out = vec![0f32; per * images.len()];
    for (img, t) in images.iter().zip(out.chunks_exact_mut(per)) {
        to_tensor(img, p, t);
    }
    out
}

/// The RGB image of RGBA pixels (a canvas's `ImageData`): alpha dropped, as
/// the decoder drops it. `None` when `rgba` is not `width * height * 4` bytes.
pub fn rgb_of_rgba(rgba: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let n = (width as usize).checked_mul(height as usize)?;
    if rgba.len() != n.checked_mul(4)? {
        return None;
    }
    let rgb = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage::from_raw(width, height, rgb)
}
