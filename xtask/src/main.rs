//! Development tasks for flowtally: `cargo xtask <task>`.

mod bench;
mod cmd;
mod deps;
mod fuzz;
mod load;
mod package;
mod setup;
mod soak;
mod test;

use std::env;
use std::ffi::OsString;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::cmd::Workspace;

#[derive(Parser)]
#[command(about = "Development tasks for flowtally; each but `deps` runs `setup` first")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF program needs (nightly rust-src, bpf-linker)
    Setup,
    /// Build the collector together with its eBPF program
    Build {
        /// Use the release profile
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the collector on loopback with local ports and ./flowtally.db
    Run {
        /// Use the release profile
        #[arg(long)]
        release: bool,
        /// Arguments for `flowtally run`, replacing the defaults
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Load, RADIUS churn and restarts of the XDP daemon for a while, then
    /// conservation and memory checks (needs root)
    Soak {
        /// Minutes in all
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// More arguments for `flowtally-load soak` (see its --help)
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Load the collector in a lab of network namespaces and check what it
    /// accounted (needs root)
    Load {
        /// Arguments for `flowtally-load run`, replacing the defaults
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Every benchmark: micro figures, scaling curves, the comparison with
    /// nfacctd (needs root); BENCHMARKS.md explains them
    Bench {
        /// Arguments for the benchmark binary
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build the Debian package (target/deb/) and check it
    Deb,
    /// Fuzz the codecs (collector/fuzz) from their seeds, one target after another
    Fuzz {
        /// Minutes per target (fractions allowed)
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// One target (default: all)
        target: Option<String>,
    },
    /// Install the Debian and PyPI packages the tests use where missing
    /// (apt-get needs root); `test` does this first
    Deps,
    /// Check formatting and clippy, run all tests (privileged ones as root), fuzz briefly
    Test {
        /// Arguments for `cargo test`
        #[arg(last = true)]
        args: Vec<OsString>,
    },
}

/// `flowtally run` flags for local use. They are replaced, not extended, by
/// user arguments, because the repeatable flags would otherwise accumulate.
const DEFAULT_RUN_ARGS: &str = "--iface lo --netflow 127.0.0.1:2055 --netflow 127.0.0.1:4739 \
    --radius 127.0.0.1:1813 --radius-secret testing123 --metrics 127.0.0.1:9725 --db ./flowtally.db";

/// Prints the error chain without anyhow's backtrace: with RUST_BACKTRACE=1,
/// common among Rust developers, it would bury the message in xtask internals.
fn main() -> ExitCode {
    let Err(err) = try_main() else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    // Before setup: the check takes a fifth of a second and may fail (not
    // root), which is better learnt before minutes of building bpf-linker.
    match cli.task {
        Task::Deps => return deps::ensure(test::is_root()?),
        Task::Test { .. } => deps::ensure(test::is_root()?)?,
        _ => {}
    }
    let ws = Workspace::locate()?;
    setup::run(&ws)?;
    match cli.task {
        Task::Setup | Task::Deps => Ok(()),
        Task::Build { release } => build(&ws, release),
        Task::Run { release, args } => {
            build(&ws, release)?;
            run_collector(&ws, release, &args)
        }
        Task::Test { args } => test::run(&ws, &args),
        Task::Deb => package::build(&ws).and_then(|deb| package::check(&ws, &deb)),
        Task::Fuzz { minutes, target } => {
            let targets = target
                .as_deref()
                .map_or(fuzz::TARGETS.to_vec(), |t| vec![t]);
            // libFuzzer reads 0 as "no limit".
            fuzz::run(&ws, &targets, ((minutes * 60.0).round() as u64).max(1))
        }
        Task::Load { args } => load::run(&ws, &args),
        Task::Soak { minutes, args } => soak::run(&ws, minutes, &args),
        Task::Bench { args } => bench::run(&ws, &args),
    }
}

fn build(ws: &Workspace, release: bool) -> Result<()> {
    let mut cargo = ws.cargo();
    cargo.args(["build", "-p", "flowtally"]);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo).context("building flowtally failed; see the compiler output above")
}

/// Runs the built collector from the user's directory, so that the default
/// ./flowtally.db lands where they ran the task.
fn run_collector(ws: &Workspace, release: bool, args: &[OsString]) -> Result<()> {
    // Relative CARGO_TARGET_DIR is relative to the root, where cargo ran.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| ws.root.join("target"), |dir| ws.root.join(dir));
    let profile = if release { "release" } else { "debug" };
    let mut flowtally = Command::new(target_dir.join(profile).join("flowtally"));
    flowtally.arg("run");
    if args.is_empty() {
        flowtally.args(DEFAULT_RUN_ARGS.split_whitespace());
    } else {
        flowtally.args(args);
    }
    Err(cmd::exec(&mut flowtally))
}
