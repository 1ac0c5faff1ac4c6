//! cbr's decoder on one real photograph (scikit-image's `chelsea`) in every
//! format it reads, against Pillow's decoding of the same files
//! (`fixtures::formats`): lossless formats must give exactly Pillow's pixels,
//! lossy ones the same picture within a few grey levels (decoders may differ
//! in IDCT rounding and chroma upsampling).

use std::path::Path;

use cbr::decode::{decode_rgb_for, load_rgb, DecodeLimits};

use crate::fixtures;

/// (width, height, RGB bytes) as cbr decodes `path`.
fn rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = load_rgb(path, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("cbr cannot decode {}: {e}", path.display()));
    (img.width(), img.height(), img.into_raw())
}

#[test]
fn every_format_decodes_like_pillow() {
    let dir = fixtures::formats();
    // (file, largest allowed |cbr - Pillow| per channel, largest allowed mean |difference|)
    let cases: &[(&str, u8, f64)] = &[
        ("chelsea.png", 0, 0.0),
        ("chelsea.bmp", 0, 0.0),
        ("chelsea.tiff", 0, 0.0),
        ("chelsea.gif", 0, 0.0),
        ("chelsea_lossless.webp", 0, 0.0),
        ("chelsea_grey.png", 0, 0.0),
        ("chelsea_16bit.png", 0, 0.0),
        ("chelsea_rgba.png", 0, 0.0),
        // JPEGs are decoded by libjpeg-turbo, Pillow's own decoder: exactly Pillow's pixels,
        // baseline, progressive, 4:4:4 and grey alike. CMYK JPEGs go through image's decoder:
        // measured max 1, mean 0.006. Lossy WebP: 0, 0.
        ("chelsea.jpg", 0, 0.0),
        ("chelsea_progressive.jpg", 0, 0.0),
        ("chelsea_444.jpg", 0, 0.0),
        ("chelsea_grey.jpg", 0, 0.0),
        ("chelsea_cmyk.jpg", 4, 0.05),
        ("chelsea.webp", 2, 0.05),
    ];
    let (w0, h0, original) = rgb(&dir.join("chelsea.png"));
    assert_eq!((w0, h0), (451, 300), "chelsea is 451x300");
    for &(file, max_allowed, mean_allowed) in cases {
        let path = dir.join(file);
        let (w, h, ours) = rgb(&path);
        let (pw, ph, pillow) = rgb(&dir.join("reference").join(format!("{file}.png")));
        assert_eq!((w, h), (pw, ph), "{file}: size differs from Pillow's");
        assert_eq!((w, h), (w0, h0), "{file}: size differs from the photograph's");
        let diffs: Vec<u8> = ours.iter().zip(&pillow).map(|(a, b)| a.abs_diff(*b)).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        // And the picture is the photograph, not a blank or shifted image.
        let vs_original =
            ours.iter().zip(&original).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
                / ours.len() as f64;
        println!("{file}: max |cbr - Pillow| {max}, mean {mean:.3}; mean |cbr - original| {vs_original:.2}");
        assert!(
            max <= max_allowed && mean <= mean_allowed,
            "{file}: cbr's pixels differ from Pillow's by up to {max} (mean {mean:.3}); allowed {max_allowed} (mean {mean_allowed})"
        );
        assert!(
            vs_original < 40.0,
            "{file}: does not look like the photograph (mean |diff| {vs_original:.1})"
        );
    }
}

#[test]
fn large_jpeg_decodes_at_reduced_scale_exactly_as_pillow_draft() {
    // For a 56x37 input, 451x300 is at least twice the input at 1/4 scale (113x75), not at 1/8:
    // cbr decodes it at 1/4 in the DCT domain, as Pillow's draft() does.
    let dir = fixtures::formats();
    let bytes = std::fs::read(dir.join("chelsea.jpg")).unwrap();
    let ours = decode_rgb_for(&bytes, &DecodeLimits::default(), (56, 37)).unwrap();
    let (w, h, pillow) = rgb(&dir.join("reference").join("chelsea.jpg.quarter.png"));
    assert_eq!(ours.dimensions(), (w, h), "reduced decode size differs from Pillow's draft()");
    assert_eq!((w, h), (113, 75));
    let max = ours.as_raw().iter().zip(&pillow).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert_eq!(max, 0, "reduced decode differs from Pillow's draft() by up to {max}");
}

#[test]
fn every_sample_photograph_decodes() {
    let photos = fixtures::photos();
    assert!(
        photos.len() >= 9,
        "expected scikit-image's 9 colour photographs, found {}",
        photos.len()
    );
    for p in &photos {
        let (w, h, px) = rgb(p);
        assert!(w >= 256 && h >= 256, "{}: {w}x{h}", p.display());
        // Colour photographs: the channels differ somewhere.
        assert!(
            px.chunks_exact(3).any(|c| c[0] != c[1] || c[1] != c[2]),
            "{} decoded as grey",
            p.display()
        );
    }
}
