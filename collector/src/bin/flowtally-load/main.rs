//! flowtally-load: load tests and the side-by-side collector comparison
//! (`cargo xtask load`, `cargo xtask bench`). It builds a lab of two network
//! namespaces joined by a veth, runs a collector in one, and sends it NetFlow
//! v5/v9/IPFIX (and RADIUS churn) from the other, then compares what was
//! sent with what the collector accounted. Needs root.

mod churn;
mod collectors;
mod compare;
mod lab;
mod procfs;
mod sender;
mod soak;
mod stream;
mod trial;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::{collectors::Kind, stream::Format};

#[derive(Parser)]
#[command(about = "Load tests for flowtally and a comparison with nfacctd (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a load to one collector and check what it accounted
    Run(RunArgs),
    /// Find each collector's highest loss-free rate on the same stream
    Compare(compare::CompareArgs),
    /// Load, RADIUS churn and periodic restarts for a while, then check
    /// conservation and memory stability
    Soak(soak::SoakArgs),
}

/// The generated stream and the sender.
#[derive(Args, Clone, Debug)]
pub struct StreamArgs {
    /// Exporters (distinct source addresses), formats assigned in turn
    #[arg(long, default_value_t = 60)]
    exporters: u32,
    /// Subscribers the records are about (≤ 65536)
    #[arg(long, default_value_t = 50_000)]
    subscribers: u32,
    /// Formats of the exporters, in turn
    #[arg(long, value_delimiter = ',', default_value = "v5,v9,ipfix")]
    formats: Vec<Format>,
    /// Data templates per v9/IPFIX exporter (≤ 16)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    templates: u16,
    /// Distinct exports per exporter, replayed in turn
    #[arg(long, default_value_t = 16)]
    exports_per_exporter: u32,
    /// Sender threads (one AF_PACKET socket each); more than cores helps
    /// when a veth pushes back and threads sleep
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Path of the flowtally binary (default: next to this one)
    #[arg(long)]
    flowtally: Option<PathBuf>,
    /// flowtally's `socket_receive_threads` (0: its default, one per CPU)
    #[arg(long, default_value_t = 0)]
    socket_threads: usize,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Collector to load
    #[arg(long, value_enum, default_value = "xdp")]
    collector: Kind,
    /// Export datagrams per second
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Seconds of load
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// RADIUS accounting requests per second (flowtally only)
    #[arg(long, default_value_t = 300.0)]
    radius_rate: f64,
    /// Sessions kept open by the churn
    #[arg(long, default_value_t = 10_000)]
    sessions: u32,
    /// Fail unless every byte and record sent is in the database and every
    /// RADIUS request was answered (flowtally only)
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "flowtally-load needs root (network namespaces, AF_PACKET, XDP)"
    );
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Soak(args) => soak::run(&args),
    }
}

fn run(args: &RunArgs) -> Result<()> {
    let duration = Duration::from_secs_f64(args.duration);
    let mut bench = trial::Bench::new(&args.stream, 262_144)?;
    let collector = bench.start(args.collector)?;
    let flowtally = matches!(args.collector, Kind::Xdp | Kind::Socket);
    let churn = (flowtally && args.radius_rate > 0.0).then(|| churn::Churn {
        rate: args.radius_rate,
        open: args.sessions,
        subscribers: args.stream.subscribers,
        secret: collectors::RADIUS_SECRET.into(),
        first_step: 0,
    });
    let result = bench.trial(&collector, Some(args.rate), duration, churn.as_ref())?;
    println!("{}", result.describe());
    if !args.check {
        return Ok(());
    }
    anyhow::ensure!(flowtally, "--check reads flowtally's database");
    anyhow::ensure!(
        result.lost_bytes() == 0,
        "lost bytes: {}",
        result.describe()
    );
    if let Some(c) = result.churn {
        anyhow::ensure!(
            c.answered == c.sent,
            "RADIUS: {} sent, {} answered",
            c.sent,
            c.answered
        );
    }
    let db = collector.db();
    let status = collector.stop()?;
    anyhow::ensure!(status.success(), "flowtally exited with {status}");
    let usage = trial::usage_totals(&db).context("reading the usage table")?;
    println!(
        "database: {} bytes and {} records in usage rows ({} bytes attributed to a user), {} sessions",
        usage.bytes, usage.flows, usage.attributed_bytes, usage.sessions
    );
    anyhow::ensure!(
        usage.bytes == result.sent.bytes + bench.primed.bytes
            && usage.flows == result.sent.records + bench.primed.records,
        "conservation: sent {} bytes / {} records, the database holds {} / {}",
        result.sent.bytes,
        result.sent.records,
        usage.bytes,
        usage.flows
    );
    if churn.is_some() {
        anyhow::ensure!(usage.attributed_bytes > 0, "no usage was attributed");
    }
    println!("conservation: ok (bytes and records sent = bytes and records in the database)");
    Ok(())
}
