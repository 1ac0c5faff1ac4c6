//! The LiteRT C API as cbr uses it (`litert/c/*.h` of LiteRT 2.3.0): constants, `#[repr(C)]`
//! types, and the functions resolved from the loaded `libLiteRt.so`. Nothing here is safe to call
//! on its own; [`super`] wraps it.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;

use anyhow::{anyhow, Result};

use super::LITERT_VERSION;

pub(super) type Handle = *mut c_void;
pub(super) type Status = c_int;

pub(super) const STATUS_OK: Status = 0;
pub(super) const HW_ACCELERATOR_CPU: c_int = 1;
pub(super) const ANY_TYPE_INT: c_int = 2;
/// `kLiteRtEnvOptionTagAutoRegisterAccelerators`: only the CPU, so LiteRT does
/// not go looking for GPU and NPU libraries (and log each miss).
pub(super) const ENV_OPTION_AUTO_REGISTER_ACCELERATORS: c_int = 24;
/// `kLiteRtEnvOptionTagMinLoggerSeverity`, set to `kLiteRtLogSeverityError`.
pub(super) const ENV_OPTION_MIN_LOGGER_SEVERITY: c_int = 25;
pub(super) const LOG_SEVERITY_ERROR: i64 = 3;

pub(super) const ELEMENT_FLOAT32: c_int = 1;
pub(super) const ELEMENT_UINT8: c_int = 3;
pub(super) const ELEMENT_INT8: c_int = 9;
pub(super) const QUANTIZATION_PER_TENSOR: c_int = 1;
/// LiteRT requires host buffers aligned to `LITERT_HOST_MEMORY_BUFFER_ALIGNMENT`.
pub(super) const HOST_ALIGNMENT: usize = 64;

/// `LiteRtRankedTensorType` (72 bytes): element type, then `LiteRtLayout`
/// (`rank:7, has_strides:1` bit fields in one 32-bit word, 8 dims, 8 strides).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct RankedTensorType {
    pub(super) element_type: c_int,
    pub(super) rank_and_flags: u32,
    pub(super) dimensions: [i32; 8],
    pub(super) strides: [u32; 8],
}

/// `LiteRtQuantizationPerTensor`.
#[repr(C)]
#[derive(Default)]
pub(super) struct QuantizationPerTensor {
    pub(super) scale: f32,
    pub(super) zero_point: i64,
}

/// `LiteRtAny` holding an integer.
#[repr(C)]
pub(super) struct Any {
    pub(super) kind: c_int,
    pub(super) value: i64,
}

/// `LiteRtEnvOption` (24 bytes).
#[repr(C)]
pub(super) struct EnvOption {
    pub(super) tag: c_int,
    pub(super) value: Any,
}

const _: () = assert!(std::mem::size_of::<RankedTensorType>() == 72);
const _: () = assert!(std::mem::size_of::<QuantizationPerTensor>() == 16);
const _: () = assert!(std::mem::size_of::<EnvOption>() == 24);

macro_rules! c_api {
    ($($name:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The LiteRT functions cbr calls, resolved from the loaded library.
        #[allow(non_snake_case)]
        pub(super) struct Api {
            $(pub(super) $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
            _library: libloading::Library,
        }

        impl Api {
            pub(super) fn load(path: &Path) -> Result<Api> {
                // SAFETY: loading a shared library runs its initialisers; this is
                // the LiteRT library the user or `cbr runtime install` chose.
                let library = unsafe { libloading::Library::new(path) }
                    .map_err(|e| anyhow!("cannot load LiteRT from {}: {e}", path.display()))?;
                Ok(Api {
                    // SAFETY: each symbol gets the signature the LiteRT 2.3.0 headers declare
                    // for it (below); the copied function pointers stay valid because
                    // `_library`, which keeps the library loaded, lives in the same `Api`.
                    $($name: unsafe {
                        let name = stringify!($name);
                        *library
                            .get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(name)
                            .map_err(|e| {
                                let lib = path.display();
                                let v = LITERT_VERSION;
                                anyhow!("{lib} is not LiteRT {v}: it lacks {name}: {e}")
                            })?
                    },)*
                    _library: library,
                })
            }
        }
    };
}

c_api! {
    LiteRtCreateEnvironment: fn(c_int, *const EnvOption, *mut Handle) -> Status;
    LiteRtCreateModelFromBuffer: fn(Handle, *const c_void, usize, *mut Handle) -> Status;
    LiteRtDestroyModel: fn(Handle);
    LiteRtGetModelMetadata: fn(Handle, *const c_char, *mut *const c_void, *mut usize) -> Status;
    LiteRtGetNumModelSignatures: fn(Handle, *mut usize) -> Status;
    LiteRtGetModelSignature: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetNumSignatureInputs: fn(Handle, *mut usize) -> Status;
    LiteRtGetNumSignatureOutputs: fn(Handle, *mut usize) -> Status;
    LiteRtGetSignatureInputTensorByIndex: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetSignatureOutputTensorByIndex: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetTensorName: fn(Handle, *mut *const c_char) -> Status;
    LiteRtGetRankedTensorType: fn(Handle, *mut RankedTensorType) -> Status;
    LiteRtGetQuantizationTypeId: fn(Handle, *mut c_int) -> Status;
    LiteRtGetPerTensorQuantization: fn(Handle, *mut QuantizationPerTensor) -> Status;
    LiteRtCreateOptions: fn(*mut Handle) -> Status;
    LiteRtDestroyOptions: fn(Handle);
    LiteRtSetOptionsHardwareAccelerators: fn(Handle, c_int) -> Status;
    LiteRtCreateCompiledModel: fn(Handle, Handle, Handle, *mut Handle) -> Status;
    LiteRtDestroyCompiledModel: fn(Handle);
    LiteRtCreateTensorBufferFromHostMemory:
        fn(*const RankedTensorType, *mut c_void, usize, *const c_void, *mut Handle) -> Status;
    LiteRtDestroyTensorBuffer: fn(Handle);
    LiteRtRunCompiledModel: fn(Handle, usize, usize, *mut Handle, usize, *mut Handle) -> Status;
}

fn status_name(status: Status) -> &'static str {
    match status {
        1 => "invalid argument",
        2 => "memory allocation failure",
        3 => "runtime failure",
        4 => "missing input tensor",
        5 => "unsupported",
        6 => "not found",
        8 => "wrong version",
        500 => "file I/O error",
        501 => "invalid flatbuffer",
        504 => "compilation error",
        1000 => "index out of bounds",
        _ => "error",
    }
}

pub(super) fn check(status: Status, what: &str) -> Result<()> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(anyhow!("LiteRT cannot {what}: {} (status {status})", status_name(status)))
    }
}
