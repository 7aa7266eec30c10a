//! `cargo xtask load`: builds the release collector and its load generator,
//! then sends a load to the collector in a lab of network namespaces and
//! checks what it accounted (`flowtally-load run`, needs root).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd::{self, Workspace};

/// A short load with RADIUS churn, checked byte for byte, unless the user
/// passes arguments of their own.
const DEFAULT_ARGS: &str = "--collector xdp --rate 20000 --duration 5 --check";

pub fn run(ws: &Workspace, args: &[OsString]) -> Result<()> {
    let bin = build_release(ws)?;
    let mut load = ws.command(bin.join("flowtally-load"));
    load.arg("run");
    if args.is_empty() {
        load.args(DEFAULT_ARGS.split_whitespace());
    } else {
        load.args(args);
    }
    cmd::run(&mut load).context("the load test failed; see its output above")
}

/// Builds both binaries of the `flowtally` package in release mode; returns
/// the directory holding them.
pub fn build_release(ws: &Workspace) -> Result<PathBuf> {
    cmd::run(
        ws.cargo()
            .args(["build", "--release", "-p", "flowtally", "--bins"]),
    )
    .context("building flowtally failed; see the compiler output above")?;
    Ok(target_dir(ws).join("release"))
}

/// Cargo's target directory (a relative CARGO_TARGET_DIR is relative to the
/// root, where cargo runs).
pub fn target_dir(ws: &Workspace) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| ws.root.join("target"), |dir| ws.root.join(dir))
}
