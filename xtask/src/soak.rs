//! `cargo xtask soak --minutes N`: builds the release binaries and runs
//! `flowtally-load soak` — load, RADIUS churn and periodic restarts of the
//! XDP daemon, then conservation and memory checks (needs root).

use std::ffi::OsString;

use anyhow::{Context as _, Result};

use crate::{
    cmd::{self, Workspace},
    load::build_release,
};

pub fn run(ws: &Workspace, minutes: f64, args: &[OsString]) -> Result<()> {
    let bin = build_release(ws)?;
    cmd::run(
        ws.command(bin.join("flowtally-load"))
            .args(["soak", "--minutes", &minutes.to_string()])
            .args(args),
    )
    .context("the soak failed; see its output above")
}
