use which::which;

/// Rebuild the object when `bpf-linker` changes (e.g. `cargo xtask setup`
/// rebuilt it for a new LLVM), which cargo cannot see on its own.
fn main() {
    // bpf-linker generates the code: LLVM 22 can then load a field of any
    // alignment in one instruction instead of byte by byte (the kernel
    // allows misaligned loads from packets and maps on x86-64).
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
