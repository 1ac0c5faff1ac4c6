//! Running `.tflite` models in LiteRT (Google's TFLite runtime), so that
//! embeddings and scores are computed by the same kernels a phone runs.
//!
//! cbr does not link LiteRT: it loads `libLiteRt.so` at run time with
//! `libloading`, like ONNX Runtime (see [`crate::runtime`]). The library comes
//! from the `ai-edge-litert` PyPI wheel, fetched with `pip download` into cbr's
//! cache by `cbr runtime install`, or from wherever `LITERT_LIB_PATH` points.
//!
//! The wheel's library exports only the LiteRT C API (`LiteRtCreateModelFromBuffer`,
//! `LiteRtCreateCompiledModel`, tensor buffers, ...), not the classic
//! `TfLiteInterpreter*` C API, so that is what [`ffi`] declares: only the
//! functions cbr calls, with the signatures of LiteRT 2.3.0 (where model
//! creation takes the environment as its first argument). This module wraps
//! them in a safe [`Model`]; [`install`] finds or installs the library.

mod ffi;
mod install;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

use ffi::{
    check, Any, Api, EnvOption, Handle, QuantizationPerTensor, RankedTensorType, ANY_TYPE_INT,
    ELEMENT_FLOAT32, ELEMENT_INT8, ELEMENT_UINT8, ENV_OPTION_AUTO_REGISTER_ACCELERATORS,
    ENV_OPTION_MIN_LOGGER_SEVERITY, HOST_ALIGNMENT, HW_ACCELERATOR_CPU, LOG_SEVERITY_ERROR,
    QUANTIZATION_PER_TENSOR, STATUS_OK,
};
pub use install::{ensure, install, library_path, LIBRARY_ENV, LITERT_VERSION};

/// The loaded library and its process-wide environment.
struct Runtime {
    api: Api,
    environment: Handle,
}

// SAFETY: the environment is created once and only read afterwards; LiteRT's
// environment is shared by all compiled models.
unsafe impl Send for Runtime {}
// SAFETY: as for Send: after `start`, nothing mutates the runtime; the function pointers
// and the environment handle are only read.
unsafe impl Sync for Runtime {}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The process-wide LiteRT runtime, loading the library on first use.
fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn start() -> Result<Runtime> {
    let path = library_path()?;
    let api = Api::load(&path)?;
    let options = [
        EnvOption {
            tag: ENV_OPTION_AUTO_REGISTER_ACCELERATORS,
            value: Any { kind: ANY_TYPE_INT, value: HW_ACCELERATOR_CPU as i64 },
        },
        EnvOption {
            tag: ENV_OPTION_MIN_LOGGER_SEVERITY,
            value: Any { kind: ANY_TYPE_INT, value: LOG_SEVERITY_ERROR },
        },
    ];
    let mut environment: Handle = std::ptr::null_mut();
    // SAFETY: `options` holds `options.len()` valid options; `environment` is a valid out-pointer.
    let status = unsafe {
        (api.LiteRtCreateEnvironment)(options.len() as c_int, options.as_ptr(), &mut environment)
    };
    check(status, "create the LiteRT environment")
        .with_context(|| format!("LiteRT from {}", path.display()))?;
    Ok(Runtime { api, environment })
}

/// Loads LiteRT now (for `cbr runtime`), returning the library path.
pub fn load() -> Result<PathBuf> {
    runtime()?;
    library_path()
}

/// Element types cbr can feed and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementType {
    F32,
    U8,
    I8,
}

impl ElementType {
    fn from_c(code: c_int) -> Option<Self> {
        match code {
            ELEMENT_FLOAT32 => Some(ElementType::F32),
            ELEMENT_UINT8 => Some(ElementType::U8),
            ELEMENT_INT8 => Some(ElementType::I8),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::U8 | ElementType::I8 => 1,
        }
    }
}

/// Quantization parameters: `real = (q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantization {
    pub scale: f32,
    pub zero_point: i64,
}

/// An input or output of a model, as the model declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub element: ElementType,
    pub shape: Vec<i64>,
    /// Per-tensor quantization of a uint8/int8 tensor.
    pub quantization: Option<Quantization>,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().map(|&d| d.max(1) as usize).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Host memory aligned as LiteRT requires, zero-initialised.
struct AlignedBytes {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBytes {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), HOST_ALIGNMENT).expect("valid layout")
    }

    fn zeroed(len: usize) -> Self {
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(Self::layout(len));
        }
        AlignedBytes { ptr, len }
    }

    fn copy_of(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_mut().copy_from_slice(bytes);
        b
    }

    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with the same layout.
        unsafe { std::alloc::dealloc(self.ptr, Self::layout(self.len)) }
    }
}

/// One input or output: its description, host memory and LiteRT buffer handle.
struct Port {
    info: TensorInfo,
    memory: AlignedBytes,
    buffer: Handle,
}

/// A `.tflite` model compiled for LiteRT's CPU (XNNPACK) backend, with its
/// input and output buffers allocated once and reused by every run.
pub struct Model {
    runtime: &'static Runtime,
    /// The flatbuffer; LiteRT reads it in place, so it lives as long as the model.
    _bytes: AlignedBytes,
    model: Handle,
    compiled: Handle,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
}

// SAFETY: a Model is used by one thread at a time (`run` takes `&mut self`);
// its handles are not shared with anything else.
unsafe impl Send for Model {}

impl Model {
    /// Opens a `.tflite` file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        // Quoted and escaped (`Debug`): a control character in the path cannot reach the
        // terminal. (Not `crate::printable`, which depends on the pipeline, which runs models.)
        Self::from_bytes(&bytes).with_context(|| format!("model {path:?}"))
    }

    /// Loads and compiles a model from the bytes of a `.tflite` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if !is_tflite(bytes) {
            bail!("not a TFLite model (no \"TFL3\" file identifier)");
        }
        let runtime = runtime()?;
        let api = &runtime.api;
        let bytes = AlignedBytes::copy_of(bytes);
        let mut model: Handle = std::ptr::null_mut();
        // SAFETY: `bytes` outlives the model (both owned by the returned Model, which destroys
        // the model handle before its fields drop); `model` is a valid out-pointer.
        let status = unsafe {
            (api.LiteRtCreateModelFromBuffer)(
                runtime.environment,
                bytes.ptr as *const c_void,
                bytes.len,
                &mut model,
            )
        };
        check(status, "read the model")?;
        let mut this = Model {
            runtime,
            _bytes: bytes,
            model,
            compiled: std::ptr::null_mut(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        this.compile()?;
        Ok(this)
    }

    fn compile(&mut self) -> Result<()> {
        let api = &self.runtime.api;
        let mut signatures = 0usize;
        // SAFETY: valid model handle and out-pointers throughout.
        unsafe {
            check(
                (api.LiteRtGetNumModelSignatures)(self.model, &mut signatures),
                "count the signatures",
            )?;
            if signatures == 0 {
                bail!("the model has no signature");
            }
            let mut signature: Handle = std::ptr::null_mut();
            check(
                (api.LiteRtGetModelSignature)(self.model, 0, &mut signature),
                "read the signature",
            )?;
            let (mut n_in, mut n_out) = (0usize, 0usize);
            check((api.LiteRtGetNumSignatureInputs)(signature, &mut n_in), "count the inputs")?;
            check((api.LiteRtGetNumSignatureOutputs)(signature, &mut n_out), "count the outputs")?;

            let mut options: Handle = std::ptr::null_mut();
            check((api.LiteRtCreateOptions)(&mut options), "create compilation options")?;
            let set = check(
                (api.LiteRtSetOptionsHardwareAccelerators)(options, HW_ACCELERATOR_CPU),
                "select the CPU",
            );
            let (environment, model, out) =
                (self.runtime.environment, self.model, &mut self.compiled);
            let compiled = set.and_then(|_| {
                // Compiling prints "INFO: Created TensorFlow Lite XNNPACK
                // delegate for CPU." every time; LiteRT has no API to silence it.
                crate::quiet_stderr::without_info_lines(|| {
                    check(
                        (api.LiteRtCreateCompiledModel)(environment, model, options, out),
                        "compile the model",
                    )
                })
            });
            (api.LiteRtDestroyOptions)(options);
            compiled?;

            for i in 0..n_in {
                let mut tensor: Handle = std::ptr::null_mut();
                check(
                    (api.LiteRtGetSignatureInputTensorByIndex)(signature, i, &mut tensor),
                    "read an input",
                )?;
                let port = self.port(tensor).with_context(|| format!("input {i}"))?;
                self.inputs.push(port);
            }
            for i in 0..n_out {
                let mut tensor: Handle = std::ptr::null_mut();
                check(
                    (api.LiteRtGetSignatureOutputTensorByIndex)(signature, i, &mut tensor),
                    "read an output",
                )?;
                let port = self.port(tensor).with_context(|| format!("output {i}"))?;
                self.outputs.push(port);
            }
        }
        Ok(())
    }

    /// Describes `tensor` and gives it a host buffer.
    ///
    /// # Safety
    /// `tensor` must be a tensor handle of this model's signature (alive as long as the model).
    unsafe fn port(&self, tensor: Handle) -> Result<Port> {
        let api = &self.runtime.api;
        let mut name_ptr: *const c_char = std::ptr::null();
        check((api.LiteRtGetTensorName)(tensor, &mut name_ptr), "read a tensor name")?;
        let name = if name_ptr.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name_ptr).to_string_lossy().into_owned()
        };
        let mut ty: RankedTensorType = std::mem::zeroed();
        check(
            (api.LiteRtGetRankedTensorType)(tensor, &mut ty),
            "read the tensor type (is its rank dynamic?)",
        )
        .with_context(|| format!("tensor {name:?}"))?;
        let element = ElementType::from_c(ty.element_type).ok_or_else(|| {
            anyhow!(
                "tensor {name:?} has element type {} (cbr handles float32, uint8 and int8)",
                ty.element_type
            )
        })?;
        let rank = (ty.rank_and_flags & 0x7f) as usize;
        let shape: Vec<i64> = ty.dimensions[..rank.min(8)].iter().map(|&d| d as i64).collect();
        if shape.iter().any(|&d| d < 0) {
            bail!(
                "tensor {name:?} has a dynamic shape {shape:?}; cbr runs fixed-shape TFLite models"
            );
        }
        let mut q_type: c_int = 0;
        check(
            (api.LiteRtGetQuantizationTypeId)(tensor, &mut q_type),
            "read the quantization type",
        )?;
        let quantization = if element != ElementType::F32 {
            if q_type != QUANTIZATION_PER_TENSOR {
                bail!(
                    "tensor {name:?} is {element:?} without per-tensor quantization; \
                     cbr cannot interpret its values"
                );
            }
            let mut q = QuantizationPerTensor::default();
            check((api.LiteRtGetPerTensorQuantization)(tensor, &mut q), "read the quantization")?;
            if !(q.scale > 0.0 && q.scale.is_finite()) {
                bail!("tensor {name:?} has quantization scale {}", q.scale);
            }
            Some(Quantization { scale: q.scale, zero_point: q.zero_point })
        } else {
            None
        };
        let info = TensorInfo { name, element, shape, quantization };
        let mut memory = AlignedBytes::zeroed(info.len() * element.size());
        let mut buffer: Handle = std::ptr::null_mut();
        check(
            (api.LiteRtCreateTensorBufferFromHostMemory)(
                &ty,
                memory.as_mut().as_mut_ptr() as *mut c_void,
                memory.len,
                std::ptr::null(),
                &mut buffer,
            ),
            "create a tensor buffer",
        )
        .with_context(|| format!("tensor {:?}", info.name))?;
        Ok(Port { info, memory, buffer })
    }

    pub fn inputs(&self) -> Vec<&TensorInfo> {
        self.inputs.iter().map(|p| &p.info).collect()
    }

    pub fn outputs(&self) -> Vec<&TensorInfo> {
        self.outputs.iter().map(|p| &p.info).collect()
    }

    /// The index of the output named `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|p| p.info.name == name)
    }

    /// The metadata buffer stored under `key` in the model (e.g. `TFLITE_METADATA`).
    pub fn metadata(&self, key: &str) -> Option<Vec<u8>> {
        let key = CString::new(key).ok()?;
        let mut ptr: *const c_void = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: valid model, key and out-pointers; the buffer is copied before return.
        let status = unsafe {
            (self.runtime.api.LiteRtGetModelMetadata)(self.model, key.as_ptr(), &mut ptr, &mut len)
        };
        if status != STATUS_OK || ptr.is_null() {
            return None;
        }
        // SAFETY: LiteRT returned OK with `len` bytes at `ptr`, owned by the model, which is
        // alive for this call; they are copied out before returning.
        Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }.to_vec())
    }

    /// Runs the model on one input (the model's only input): `input` holds
    /// real values, quantized here if the input is uint8/int8. Returns output
    /// `output` as real values (dequantized if quantized).
    pub fn run(&mut self, input: &[f32], output: usize) -> Result<Vec<f32>> {
        if self.inputs.len() != 1 {
            bail!(
                "the model has {} inputs; cbr feeds models with one image input",
                self.inputs.len()
            );
        }
        if output >= self.outputs.len() {
            bail!("the model has {} outputs, no output {output}", self.outputs.len());
        }
        let port = &mut self.inputs[0];
        if input.len() != port.info.len() {
            bail!(
                "input {:?} takes {} values ({:?}), got {}",
                port.info.name,
                port.info.len(),
                port.info.shape,
                input.len()
            );
        }
        write_values(&port.info, port.memory.as_mut(), input);
        let mut ins: Vec<Handle> = self.inputs.iter().map(|p| p.buffer).collect();
        let mut outs: Vec<Handle> = self.outputs.iter().map(|p| p.buffer).collect();
        // SAFETY: the buffers were created for this model's signature 0, in order, over host
        // memory the ports own; `ins` and `outs` hold `len()` handles each.
        let status = unsafe {
            (self.runtime.api.LiteRtRunCompiledModel)(
                self.compiled,
                0,
                ins.len(),
                ins.as_mut_ptr(),
                outs.len(),
                outs.as_mut_ptr(),
            )
        };
        check(status, "run the model")?;
        let port = &self.outputs[output];
        Ok(read_values(&port.info, port.memory.as_ref()))
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let api = &self.runtime.api;
        // SAFETY: each handle was created by LiteRT for this model and is destroyed once.
        unsafe {
            for p in self.inputs.iter().chain(&self.outputs) {
                (api.LiteRtDestroyTensorBuffer)(p.buffer);
            }
            if !self.compiled.is_null() {
                (api.LiteRtDestroyCompiledModel)(self.compiled);
            }
            (api.LiteRtDestroyModel)(self.model);
        }
    }
}

/// Whether `bytes` look like a TFLite flatbuffer (file identifier `TFL3`).
pub fn is_tflite(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[4..8] == b"TFL3"
}

/// Stores real `values` into a tensor's memory, quantizing for uint8/int8:
/// `q = clamp(round(v / scale) + zero_point)`.
fn write_values(info: &TensorInfo, memory: &mut [u8], values: &[f32]) {
    match (info.element, info.quantization) {
        (ElementType::F32, _) => {
            for (dst, v) in memory.chunks_exact_mut(4).zip(values) {
                dst.copy_from_slice(&v.to_ne_bytes());
            }
        }
        (ElementType::U8, Some(q)) => {
            for (dst, &v) in memory.iter_mut().zip(values) {
                *dst = quantize(v, q).clamp(0, 255) as u8;
            }
        }
        (ElementType::I8, Some(q)) => {
            for (dst, &v) in memory.iter_mut().zip(values) {
                *dst = quantize(v, q).clamp(-128, 127) as i8 as u8;
            }
        }
        _ => unreachable!("quantized tensors always have quantization parameters"),
    }
}

fn quantize(v: f32, q: Quantization) -> i64 {
    (v / q.scale).round() as i64 + q.zero_point
}

/// Reads a tensor's memory as real values, dequantizing uint8/int8.
fn read_values(info: &TensorInfo, memory: &[u8]) -> Vec<f32> {
    match (info.element, info.quantization) {
        (ElementType::F32, _) => {
            memory.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        (ElementType::U8, Some(q)) => {
            memory.iter().map(|&b| ((b as i64 - q.zero_point) as f32) * q.scale).collect()
        }
        (ElementType::I8, Some(q)) => {
            memory.iter().map(|&b| ((b as i8 as i64 - q.zero_point) as f32) * q.scale).collect()
        }
        _ => unreachable!("quantized tensors always have quantization parameters"),
    }
}

/// Runs `n` preprocessed images through a fixed-batch TFLite model, `batch`
/// images per run (the last run padded with blank images), and returns
/// output `output` of every image, concatenated. Shared by the embedder and
/// the classifier.
pub fn run_tflite(
    model: &mut Model,
    output: usize,
    per: usize,
    batch: usize,
    tensors: &[f32],
    n: usize,
) -> Result<Vec<f32>> {
    assert_eq!(tensors.len(), n * per, "run_tflite: tensor buffer does not hold {n} images");
    let mut out = Vec::new();
    let mut padded = Vec::new();
    for start in (0..n).step_by(batch) {
        let count = (n - start).min(batch);
        let chunk = &tensors[start * per..(start + count) * per];
        let input = if count == batch {
            chunk
        } else {
            padded.clear();
            padded.extend_from_slice(chunk);
            padded.resize(batch * per, 0.0);
            &padded[..]
        };
        let values = model.run(input, output)?;
        if values.len() % batch != 0 {
            bail!(
                "the model's output has {} values, not a multiple of its batch {batch}",
                values.len()
            );
        }
        out.extend_from_slice(&values[..values.len() / batch * count]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(element: ElementType, q: Option<(f32, i64)>) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            element,
            shape: vec![1, 4],
            quantization: q.map(|(scale, zero_point)| Quantization { scale, zero_point }),
        }
    }

    #[test]
    fn uint8_round_trip_is_exact_on_the_grid_and_clamps() {
        let t = info(ElementType::U8, Some((1.0 / 127.0, 128)));
        let mut mem = vec![0u8; 4];
        // Pixels 0, 128, 255 normalised as (p - 128) / 127 come back as the same bytes.
        write_values(&t, &mut mem, &[-128.0 / 127.0, 0.0, 127.0 / 127.0, 5.0]);
        assert_eq!(mem, vec![0, 128, 255, 255]);
        let back = read_values(&t, &mem);
        assert!((back[0] + 128.0 / 127.0).abs() < 1e-6 && back[1] == 0.0);
    }

    #[test]
    fn int8_uses_the_signed_range() {
        let t = info(ElementType::I8, Some((0.5, -3)));
        let mut mem = vec![0u8; 4];
        write_values(&t, &mut mem, &[0.0, 1.0, -100.0, 100.0]);
        assert_eq!(mem.iter().map(|&b| b as i8).collect::<Vec<_>>(), vec![-3, -1, -128, 127]);
        assert_eq!(read_values(&t, &mem)[..2], [0.0, 1.0]);
    }

    #[test]
    fn recognises_tflite_files_by_identifier() {
        assert!(is_tflite(b"\x1c\0\0\0TFL3rest"));
        assert!(!is_tflite(b"\x08\x07\x12\x04onnx"));
    }
}
