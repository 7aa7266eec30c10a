use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the XDP program with nightly + bpf-linker and leaves the object in
/// `OUT_DIR`, where `src/xdp/mod.rs` embeds it.
fn main() -> anyhow::Result<()> {
    // Read at run time, not baked in with env!: a build script reused from
    // a target directory moved from another checkout must build this one.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("cargo sets CARGO_MANIFEST_DIR")?;
    let metadata = std::path::Path::new(&manifest_dir)
        .parent()
        .context("collector/ has a parent")?
        .join("collector-ebpf");
    let root_dir = metadata
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", metadata.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "flowtally-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF program failed; `cargo xtask setup` installs what it needs")
}
