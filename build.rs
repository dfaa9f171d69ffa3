//! Bakes libtorch's location into the binary (torch-sys sets no rpath), so `novelstream` runs
//! without `LD_LIBRARY_PATH`, and records it so start-up can `dlopen` libtorch_cuda from there.
//!
//! Links TCMalloc (Debian's `libtcmalloc-minimal4`) ahead of libc, so that it serves every
//! `malloc`, libtorch's included. A training step allocates and frees tensors of tens of
//! megabytes; glibc hands buffers that large back to the kernel at once and takes fresh zeroed
//! pages for the next step, which cost about 40% of a CPU step in page faults (BENCHMARKS.md).
//! `NOVELSTREAM_ALLOCATOR=system` builds without it.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=NOVELSTREAM_LIBTORCH_LIB={lib}");
    }
    println!("cargo:rerun-if-env-changed=NOVELSTREAM_ALLOCATOR");
    println!("cargo::rustc-check-cfg=cfg(novelstream_tcmalloc)");
    if std::env::var("NOVELSTREAM_ALLOCATOR").as_deref() == Ok("system") {
        println!("cargo:rustc-env=NOVELSTREAM_LINKED_ALLOCATOR=glibc");
        return;
    }
    const TCMALLOC: &str = "libtcmalloc_minimal.so.4";
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"];
    match dirs.iter().find(|dir| std::path::Path::new(dir).join(TCMALLOC).is_file()) {
        Some(dir) => {
            println!("cargo:rerun-if-changed={dir}/{TCMALLOC}");
            // As a library of this crate it comes before libc among the binary's needed
            // libraries, so the dynamic linker resolves `malloc` to it; src/allocator.rs calls
            // one of its functions, which keeps `--as-needed` from dropping it.
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-lib=dylib:+verbatim={TCMALLOC}");
            println!("cargo:rustc-cfg=novelstream_tcmalloc");
            println!("cargo:rustc-env=NOVELSTREAM_LINKED_ALLOCATOR=tcmalloc");
        }
        None => {
            println!("cargo:rustc-env=NOVELSTREAM_LINKED_ALLOCATOR=glibc");
            println!(
                "cargo:warning={TCMALLOC} not found (apt install libtcmalloc-minimal4): using the system allocator, \
             training on the CPU is slower"
            );
        }
    }
}
