//! Choosing where the model runs. libtorch's CUDA half is loaded by hand: the linker's
//! `--as-needed` drops `libtorch_cuda.so` from the binary (tch-rs #980), so without this
//! `tch::Cuda::is_available()` is false even on a GPU machine.

use std::ffi::CString;

use tch::Device;

use crate::config::DevicePreference;

/// Why the model cannot run where the config says it must.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `model.device = "cuda"` on a machine where CUDA cannot be used; `reason` is the dynamic
    /// loader's message for `libtorch_cuda.so`, or libtorch's own answer when that loaded.
    #[error("model.device = \"cuda\" but no CUDA device is usable ({reason})")]
    NoCuda { reason: String },
}

/// `libtorch_cuda.so` (or a CUDA library it needs) could not be loaded: the dynamic loader's
/// message, which names the library that was missing.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct LoadError {
    message: String,
}

/// Loads `libtorch_cuda.so` if it and the CUDA libraries it needs are present.
fn load_torch_cuda() -> Result<(), LoadError> {
    let mut candidates = Vec::new();
    if let Some(dir) = option_env!("NOVELSTREAM_LIBTORCH_LIB") {
        candidates.push(format!("{dir}/libtorch_cuda.so"));
    }
    candidates.push("libtorch_cuda.so".to_owned());
    let mut last_error = LoadError { message: "libtorch_cuda.so: not found".into() };
    for name in candidates {
        let c_name = CString::new(name).expect("library name has no NUL");
        // SAFETY: dlopen with a valid C string; the handle is kept for the life of the process.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(());
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let message = unsafe { libc::dlerror() };
        if !message.is_null() {
            let message = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy().into_owned();
            last_error = LoadError { message };
        }
    }
    Err(last_error)
}

/// The device the model runs on, given the configured preference.
pub fn select_device(preference: DevicePreference) -> Result<Device, crate::Error> {
    if preference == DevicePreference::Cpu {
        return Ok(Device::Cpu);
    }
    let loaded = load_torch_cuda();
    let device = if tch::Cuda::is_available() { Some(Device::Cuda(0)) } else { None };
    match (device, preference) {
        (Some(device), _) => {
            tracing::info!(gpus = tch::Cuda::device_count(), "using CUDA");
            Ok(device)
        }
        (None, DevicePreference::Cuda) => Err(DeviceError::NoCuda {
            reason: loaded.err().map_or_else(|| "libtorch reports no GPU".into(), |e| e.to_string()),
        }
        .into()),
        (None, _) => {
            tracing::info!(
                reason = %loaded.err().map_or_else(|| "no GPU found".into(), |e| e.to_string()),
                allocator = crate::allocator::name(),
                "using CPU"
            );
            Ok(Device::Cpu)
        }
    }
}
