//! `cargo xtask test`: format and lint checks, then every test, including the
//! privileged ones when running as root, then the Debian package's checks and
//! a short run of every fuzz target. main.rs has made sure of the packages
//! the tests use (deps.rs) before.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

use crate::cmd::{self, Workspace};

const SKIPPED_BANNER: &str = "
################################################################################
# SKIPPED: privileged tests (XDP attach, network namespaces) need root.
# They are reported as ignored, NOT passed. To run them:
#     sudo -E env \"PATH=$PATH\" cargo xtask test
################################################################################
";

pub fn run(ws: &Workspace, args: &[OsString]) -> Result<()> {
    cmd::run(ws.cargo().args(["fmt", "--all", "--", "--check"]))
        .context("the code is not formatted; run `cargo fmt --all`")?;
    // The default members only: the eBPF crate does not build for the host.
    cmd::run(
        ws.cargo()
            .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )
    .context("clippy found problems (warnings are denied); see the output above")?;

    let root = is_root()?;
    if !root {
        eprintln!("{SKIPPED_BANNER}");
    }
    let mut test = ws.cargo();
    test.env("RUST_BACKTRACE", "1")
        // Every test binary runs even after one fails: CI shows every failure.
        .args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "flowtally-ebpf",
        ])
        .args(args);
    if root {
        // The privileged tests are #[ignore]d so that plain `cargo test` passes.
        if !args.iter().any(|arg| arg == "--") {
            test.arg("--");
        }
        test.arg("--include-ignored");
    }
    let result = run_tallied(&mut test);
    // Again at the end, where it cannot scroll out of sight.
    if !root {
        eprintln!("{SKIPPED_BANNER}");
    }
    result?;
    let deb = crate::package::build(ws)?;
    crate::package::check(ws, &deb)?;
    crate::fuzz::run(
        ws,
        &crate::fuzz::TARGETS,
        crate::fuzz::CI_SECONDS_PER_TARGET,
    )
}

/// Runs `cargo test`, echoing its output, and closes with one line summing
/// every test binary's result: cargo's own last line is that of the last
/// (often empty) doc-test run.
fn run_tallied(test: &mut Command) -> Result<()> {
    eprintln!("+ {}", cmd::line(test));
    let mut child = test
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    anyhow::ensure!(
        status.success(),
        "tests failed ({status}); see the output above"
    );
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds a `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Whether the effective uid is 0, read from /proc to spare a libc dependency.
pub fn is_root() -> Result<bool> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    // `Uid:` lists the real, effective, saved and filesystem uids.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(euid == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_sums_cargo_result_lines_and_ignores_the_rest() {
        let mut tally = Tally::default();
        for line in [
            "test result: ok. 13 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; \
             finished in 0.01s",
            "test a_test ... ok",
            "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            tally.add(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 17,
                failed: 1,
                ignored: 2
            }
        );
    }
}
