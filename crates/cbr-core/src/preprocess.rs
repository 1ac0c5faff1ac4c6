//! How an image becomes an embedder's input tensor: size, resize mode, layout,
//! channel order and normalisation. Stored in every model's metadata so that
//! `classify` (and any other client) prepares images exactly as `build` did.

use serde::{Deserialize, Serialize};

/// Memory layout of the image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[batch, channels, height, width]`
    Nchw,
    /// `[batch, height, width, channels]`
    Nhwc,
}

/// Order of the colour channels in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// How the decoded image is brought to the input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Resize the whole image to exactly width x height (aspect ratio not kept),
    /// as the TFLite Task Library and MediaPipe do.
    Stretch,
    /// Resize so the shorter side fits, then cut the centre (aspect ratio kept).
    CenterCrop,
}

/// The filter that brings the decoded image to the input size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Resample {
    /// Antialiased bilinear: a triangle filter as wide as the scale factor, so every source
    /// pixel counts (PIL's `Image.resize(size, Image.BILINEAR)`). Large JPEGs may be decoded
    /// at reduced scale first ([`crate::decode::decode_rgb_for`]).
    #[default]
    Antialiased,
    /// What MediaPipe's ImageClassifier feeds a TFLite model on the CPU, bit for bit: bilinear
    /// *sampling* of the full-size image (no antialiasing) at `x · width / input_width`, in
    /// OpenCV's fixed point (`warpPerspective`, `INTER_LINEAR`, replicated border). A model
    /// built with it answers in MediaPipe as `cbr classify` does.
    Mediapipe,
}

impl Resample {
    pub fn is_antialiased(&self) -> bool {
        *self == Resample::Antialiased
    }
}

/// The complete preprocessing recipe. Pixel values are 0..=255 before
/// normalisation: `input = (pixel - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizeMode,
    /// Absent from models written before it existed, which all used [`Resample::Antialiased`];
    /// left out when it is that, so those models' metadata (and embedding-cache keys) stay the same.
    #[serde(default, skip_serializing_if = "Resample::is_antialiased")]
    pub resample: Resample,
}

impl Preprocess {
    /// Raw RGB pixel values (0..=255, no normalisation) stretched to `width` x `height`: what
    /// uint8 embedders (and the tiny embedders of tests) take.
    pub fn raw(width: u32, height: u32, layout: Layout) -> Self {
        Preprocess {
            width,
            height,
            layout,
            channel_order: ChannelOrder::Rgb,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: ResizeMode::Stretch,
            resample: Resample::Antialiased,
        }
    }

    /// Number of f32 values in one image's input tensor.
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The input tensor shape for a batch of `n` images.
    pub fn batch_shape(&self, n: usize) -> Vec<i64> {
        let (h, w) = (self.height as i64, self.width as i64);
        match self.layout {
            Layout::Nchw => vec![n as i64, 3, h, w],
            Layout::Nhwc => vec![n as i64, h, w, 3],
        }
    }
}
