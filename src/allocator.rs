//! Which `malloc` serves the process, and handing its free memory back to the OS.
//!
//! `build.rs` links TCMalloc when the machine has it; which `malloc` is in use is asked of the
//! dynamic linker rather than assumed, and a build without it uses glibc's `malloc_trim`.

use std::ffi::CStr;

#[cfg(novelstream_tcmalloc)]
extern "C" {
    fn MallocExtension_ReleaseFreeMemory();
}

/// Looks a symbol up in the process's global scope.
fn symbol(name: &CStr) -> *mut libc::c_void {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded objects'
    // symbol tables.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// The allocator `malloc` resolves to: `"tcmalloc"` or `"glibc"`.
pub fn name() -> &'static str {
    let tc = symbol(c"tc_malloc");
    if !tc.is_null() && tc == symbol(c"malloc") {
        "tcmalloc"
    } else {
        "glibc"
    }
}

/// Returns freed memory to the OS, so resident memory tracks what is in use. Tensors of many
/// sizes are allocated and freed on the decoder, model and trainer threads, and allocators keep
/// what is freed for reuse; call it now and then (the trainer does after each model version).
pub fn release_free_memory() {
    #[cfg(novelstream_tcmalloc)]
    if name() == "tcmalloc" {
        // SAFETY: TCMalloc's C API, no arguments, callable from any thread at any time.
        unsafe { MallocExtension_ReleaseFreeMemory() };
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// The allocator build.rs linked is the one `malloc` resolves to at run time.
    #[test]
    fn malloc_resolves_to_the_linked_allocator() {
        assert_eq!(super::name(), env!("NOVELSTREAM_LINKED_ALLOCATOR"));
        let buffers: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << 20]).collect();
        drop(buffers);
        super::release_free_memory();
    }
}
