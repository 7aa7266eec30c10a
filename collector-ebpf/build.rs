use which::which;

/// Rebuild the object when `bpf-linker` changes (e.g. `cargo xtask setup`
/// rebuilt it for a new LLVM), which cargo cannot see on its own.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
