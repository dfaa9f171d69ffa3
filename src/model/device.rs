//! Choosing where the model runs. libtorch's CUDA half is loaded by hand: the linker's
//! `--as-needed` drops `libtorch_cuda.so` from the binary (tch-rs #980), so without this
//! `tch::Cuda::is_available()` is false even on a GPU machine.

use std::ffi::CString;

use tch::Device;

use crate::config::DevicePreference;

/// Loads `libtorch_cuda.so` if it and the CUDA libraries it needs are present; returns why not.
fn load_torch_cuda() -> Result<(), String> {
    let mut candidates = Vec::new();
    if let Some(dir) = option_env!("NOVELSTREAM_LIBTORCH_LIB") {
        candidates.push(format!("{dir}/libtorch_cuda.so"));
    }
    candidates.push("libtorch_cuda.so".to_owned());
    let mut last_error = String::new();
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
            last_error = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy().into_owned();
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
        (None, DevicePreference::Cuda) => Err(crate::Error::Pipeline(format!(
            "model.device = \"cuda\" but no CUDA device is usable ({})",
            loaded.err().unwrap_or_else(|| "libtorch reports no GPU".into())
        ))),
        (None, _) => {
            tracing::info!(
                reason = %loaded.err().unwrap_or_else(|| "no GPU found".into()),
                allocator = crate::allocator::name(),
                "using CPU"
            );
            Ok(Device::Cpu)
        }
    }
}
