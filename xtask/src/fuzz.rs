//! `cargo xtask fuzz`: the cargo-fuzz targets of `collector/fuzz`, each
//! started from its committed seeds (`collector/fuzz/seeds/<target>`) and
//! the corpus earlier runs grew (`collector/fuzz/corpus/<target>`, not
//! committed). `cargo xtask test` runs every target briefly.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use crate::cmd::{self, Workspace};

pub const TARGETS: [&str; 7] = [
    "netflow_v5",
    "netflow_templates",
    "template_compiler",
    "netflow_encode",
    "radius_codec",
    "sflow_decode",
    "sflow_kernel",
];

/// Per target in `cargo xtask test`: long enough to get past the seeds,
/// short enough for CI (seven targets, under three minutes).
pub const CI_SECONDS_PER_TARGET: u64 = 20;

/// Builds every target, then fuzzes each of `targets` for `seconds`.
pub fn run(ws: &Workspace, targets: &[&str], seconds: u64) -> Result<()> {
    for target in targets {
        ensure!(
            TARGETS.contains(target),
            "unknown fuzz target `{target}`; the targets are {}",
            TARGETS.join(", ")
        );
    }
    ensure_cargo_fuzz(ws)?;
    let fuzz_dir = ws.root.join("collector/fuzz");
    cmd::run(&mut cargo_fuzz(ws, &["build"]))
        .context("building the fuzz targets failed; see the compiler output above")?;
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let mut fuzz = cargo_fuzz(ws, &["run", target]);
        fuzz.arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-rss_limit_mb=2048"]);
        println!("fuzz: {}", run_quietly(&mut fuzz, target, &fuzz_dir)?);
    }
    Ok(())
}

/// `cargo +nightly fuzz <command> <target> --sanitizer none` from
/// `collector/`, where cargo-fuzz finds `fuzz/`. Nightly: the coverage
/// flags need it. No sanitizer: the fuzzed code is safe Rust, so
/// AddressSanitizer would find nothing the bounds checks do not, and it
/// halves the runs per second; overflow checks and debug assertions stay on
/// (cargo-fuzz's default).
fn cargo_fuzz(ws: &Workspace, args: &[&str]) -> Command {
    let mut cargo = ws.command("cargo");
    cargo
        .current_dir(ws.root.join("collector"))
        .args(["+nightly", "fuzz"])
        .args(args)
        .args(["--sanitizer", "none"]);
    cargo
}

fn ensure_cargo_fuzz(ws: &Workspace) -> Result<()> {
    if cmd::output(ws.command("cargo").args(["fuzz", "--version"])).is_ok() {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz");
    cmd::run(
        ws.command("cargo")
            .args(["install", "cargo-fuzz", "--locked"]),
    )
    .context("installing cargo-fuzz failed; retry `cargo install cargo-fuzz --locked`")
}

/// Runs one target with libFuzzer's progress lines captured (thousands of
/// them), and returns its final statistics; on failure prints its output's
/// tail, which names the input that failed.
fn run_quietly(fuzz: &mut Command, target: &str, fuzz_dir: &Path) -> Result<String> {
    eprintln!("+ {}", cmd::line(fuzz));
    let out = fuzz
        .output()
        .with_context(|| format!("could not start `{}`", cmd::line(fuzz)))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(80)..].join("\n"));
        anyhow::bail!(
            "fuzz target {target} failed ({}); the failing input is under {}; \
             reproduce with `cargo +nightly fuzz run -s none {target} <input>` in collector/, \
             and once fixed, add it to {} so that it stays tested",
            out.status,
            fuzz_dir.join("artifacts").join(target).display(),
            fuzz_dir.join("seeds").join(target).display(),
        );
    }
    Ok(summary(target, &log))
}

/// "netflow_v5: 1234567 runs in 21 s, cov 812, corpus 97" from
/// libFuzzer's last status line and its `Done` line.
fn summary(target: &str, log: &str) -> String {
    let done = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Done "))
        .unwrap_or("(no Done line)");
    let field = |line: &str, key: &str| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next().map(str::to_owned)
    };
    let status = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains(" cov: "))
        .unwrap_or_default();
    let cov = field(status, "cov:").unwrap_or_default();
    let corpus = field(status, "corp:").unwrap_or_default();
    format!("{target}: {done}, cov {cov}, corpus {corpus}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_libfuzzers_last_status_and_done_lines() {
        let log = "INFO: seed\n#2 INITED cov: 10 ft: 11 corp: 3/100b exec/s: 0\n\
                   #4096 pulse  cov: 812 ft: 2000 corp: 97/9Kb lim: 4 exec/s: 2048\n\
                   Done 1234567 runs in 21 second(s)\n";
        assert_eq!(
            summary("netflow_v5", log),
            "netflow_v5: 1234567 runs in 21 second(s), cov 812, corpus 97/9Kb"
        );
    }
}
