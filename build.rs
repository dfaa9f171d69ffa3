//! Bakes libtorch's location into the binary (torch-sys sets no rpath), so `novelstream` runs
//! without `LD_LIBRARY_PATH`, and records it so start-up can `dlopen` libtorch_cuda from there.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=NOVELSTREAM_LIBTORCH_LIB={lib}");
    }
}
