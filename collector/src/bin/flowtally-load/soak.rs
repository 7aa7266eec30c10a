//! `flowtally-load soak`: the XDP daemon under a steady load with RADIUS
//! churn for a while, stopped (SIGTERM) and started again on the same
//! database every `--restart-every` seconds. At the end: every byte and
//! record sent is in `usage` (conservation across all the restarts), every
//! RADIUS request was answered, and memory stayed flat — within each run
//! (no leak) and from run to run (nothing that grows with the database).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use clap::Args;

use crate::{
    StreamArgs,
    churn::{Churn, ChurnReport},
    collectors::{Kind, RADIUS_SECRET},
    procfs,
    sender::Sent,
    trial::{self, Bench},
};

/// Memory may vary by this much on top of a relative margin: allocator
/// and SQLite page cache noise.
const MEMORY_SLACK: u64 = 16 << 20;

#[derive(Args)]
pub struct SoakArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Minutes in all
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Runs in all, each of --restart-every seconds; replaces --minutes
    /// with a count that a slow machine cannot shorten
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds between restarts
    #[arg(long, default_value_t = 60.0)]
    restart_every: f64,
    /// Seconds between memory samples
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Export datagrams per second
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// RADIUS accounting requests per second
    #[arg(long, default_value_t = 200.0)]
    radius_rate: f64,
    /// Sessions kept open by the churn
    #[arg(long, default_value_t = 2_000)]
    sessions: u32,
    /// `radius.history_retention` of the daemon: short, so that pruning
    /// happens within the soak
    #[arg(long, default_value = "40s")]
    history_retention: String,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let segment = Duration::from_secs_f64(args.restart_every);
    let sample = Duration::from_secs_f64(args.sample_every);
    let mut bench = Bench::new(&args.stream, 262_144)?;
    bench.radius_toml = format!("history_retention = {:?}\n", args.history_retention);
    let started = Instant::now();
    let mut sent = Sent::default();
    let mut radius = ChurnReport::default();
    // Memory (PSS) samples of each run.
    let mut runs: Vec<Vec<u64>> = Vec::new();
    let mut db = None;
    let more = |done: usize| match args.runs {
        Some(runs) => done < runs,
        None => started.elapsed() < total,
    };
    while more(runs.len()) {
        let collector = bench.start(Kind::Xdp)?;
        db = Some(collector.db());
        let end = match args.runs {
            Some(_) => Instant::now() + segment,
            None => (Instant::now() + segment).min(started + total),
        };
        let mut samples = Vec::new();
        while Instant::now() < end {
            let churn = Churn {
                rate: args.radius_rate,
                open: args.sessions,
                subscribers: args.stream.subscribers,
                secret: RADIUS_SECRET.into(),
                first_step: radius.next_step,
            };
            let chunk = sample.min(end.saturating_duration_since(Instant::now()));
            let result = bench.trial(&collector, Some(args.rate), chunk, Some(&churn))?;
            ensure!(
                result.lost_bytes() == 0,
                "run {}: {}",
                runs.len() + 1,
                result.describe()
            );
            sent.add(&result.sent);
            if let Some(churn) = result.churn {
                radius.sent += churn.sent;
                radius.answered += churn.answered;
                radius.next_step = churn.next_step;
            }
            samples.push(procfs::memory(&collector.processes()).0);
        }
        let status = collector.stop()?;
        ensure!(status.success(), "flowtally exited with {status}");
        println!(
            "run {}: {} exports sent so far, memory (PSS) {} MiB",
            runs.len() + 1,
            sent.frames,
            samples
                .iter()
                .map(|b| format!("{:.1}", *b as f64 / f64::from(1 << 20)))
                .collect::<Vec<_>>()
                .join(" → ")
        );
        runs.push(samples);
    }

    let db = db.context("the soak ran no collector")?;
    let usage = trial::usage_totals(&db).context("reading the usage table")?;
    println!(
        "soak: {:.1} min, {} runs ({} restarts), {} exports, {} records, {} bytes sent; \
         {} RADIUS requests, {} answered",
        started.elapsed().as_secs_f64() / 60.0,
        runs.len(),
        runs.len().saturating_sub(1),
        sent.frames,
        sent.records,
        sent.bytes,
        radius.sent,
        radius.answered
    );
    ensure!(
        usage.bytes == sent.bytes + bench.primed.bytes
            && usage.flows == sent.records + bench.primed.records,
        "conservation: sent {} bytes / {} records, the database holds {} / {}",
        sent.bytes,
        sent.records,
        usage.bytes,
        usage.flows
    );
    ensure!(
        radius.answered == radius.sent,
        "RADIUS: {} sent, {} answered",
        radius.sent,
        radius.answered
    );
    println!("conservation: ok (across every restart)");
    check_memory(&runs)?;
    println!("memory: ok (flat within runs and from run to run)");
    Ok(())
}

/// Flat within a run: the second half's peak at most 25 % (plus slack)
/// above the first half's, once warm. Flat across runs: the last run's
/// peak at most 25 % (plus slack) above the first run's.
fn check_memory(runs: &[Vec<u64>]) -> Result<()> {
    let peak = |samples: &[u64]| samples.iter().copied().max().unwrap_or(0);
    let bound = |base: u64| base + base / 4 + MEMORY_SLACK;
    for (i, samples) in runs.iter().enumerate() {
        if samples.len() >= 4 {
            let (first, second) = samples.split_at(samples.len() / 2);
            ensure!(
                peak(second) <= bound(peak(first)),
                "run {}: memory grew from {} to {} bytes",
                i + 1,
                peak(first),
                peak(second)
            );
        }
    }
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        ensure!(
            peak(last) <= bound(peak(first)),
            "memory grew from run to run: {} bytes in the first, {} in the last",
            peak(first),
            peak(last)
        );
    }
    Ok(())
}
