//! The side-by-side comparison: for each collector, on the same generated
//! stream in the same lab, the highest offered rate it accounts without
//! losing a byte (binary search), its CPU at a common rate, and its memory.

use std::{fmt::Write as _, fs, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;

use crate::{
    StreamArgs,
    collectors::Kind,
    procfs,
    trial::{Bench, TrialResult},
};

/// The lowest rate the search tries, exports/s.
const MIN_RATE: f64 = 500.0;

#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Collectors, in order; the first one's loss-free rate is the common
    /// rate at which every collector's CPU is measured
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nfacctd,nfcapd,socket,xdp"
    )]
    collectors: Vec<Kind>,
    /// Seconds per trial
    #[arg(long, default_value_t = 3.0)]
    trial: f64,
    /// Trials of the binary search after the first, unpaced one
    #[arg(long, default_value_t = 7)]
    steps: u32,
    /// A fixed offered rate (exports/s) at which every collector's CPU is
    /// measured too, besides the first collector's loss-free rate
    #[arg(long, default_value_t = 50_000.0)]
    fixed_rate: f64,
    /// Entries of flowtally's kernel aggregate maps
    #[arg(long, default_value_t = 262_144)]
    aggregate_entries: u32,
    /// Write the Markdown table here too
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Outcome {
    kind: Kind,
    /// Highest loss-free rate found, exports/s, and the trial at it.
    best: Option<TrialResult>,
    /// The sender's ceiling reached without loss: the figure is a floor.
    sender_bound: bool,
    ceiling: f64,
    at_common: Option<TrialResult>,
    at_fixed: Option<TrialResult>,
    pss: u64,
    peak_rss: u64,
    bpf: u64,
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let mut bench = Bench::new(&args.stream, args.aggregate_entries)?;
    let duration = Duration::from_secs_f64(args.trial);
    let records_per_export = bench.records_per_export();
    eprintln!(
        "stream: {} exporters, {} subscribers, {} distinct exports ({:.1} records each)",
        args.stream.exporters,
        args.stream.subscribers,
        bench.frames(),
        records_per_export
    );
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut common: Option<f64> = None;
    for &kind in &args.collectors {
        let collector = bench.start(kind)?;
        let trial = |rate| -> Result<TrialResult> {
            let r = bench.trial(&collector, rate, duration, None)?;
            eprintln!("  {}", r.describe());
            Ok(r)
        };
        eprintln!("{kind}: binary search on the offered rate");
        let first = trial(None)?;
        let ceiling = first.sent.rate();
        let mut outcome = Outcome {
            kind,
            best: None,
            sender_bound: false,
            ceiling,
            at_common: None,
            at_fixed: None,
            pss: 0,
            peak_rss: 0,
            bpf: 0,
        };
        if first.passed() {
            outcome.sender_bound = true;
            outcome.best = Some(first);
        } else {
            // Geometric: the rates of the collectors span orders of
            // magnitude, and each step should narrow the ratio, not the gap.
            let (mut lo, mut hi) = (MIN_RATE, ceiling);
            for _ in 0..args.steps {
                let mid = (lo * hi).sqrt();
                let r = trial(Some(mid))?;
                if r.passed() {
                    lo = mid;
                    outcome.best = Some(r);
                } else {
                    hi = mid;
                }
            }
        }
        let rate = *common.get_or_insert(outcome.best.as_ref().map_or(0.0, |b| b.sent.rate()));
        if rate > 0.0 {
            outcome.at_common = Some(trial(Some(rate))?);
        }
        if args.fixed_rate > 0.0 {
            outcome.at_fixed = Some(trial(Some(args.fixed_rate))?);
        }
        let pids = collector.processes();
        (outcome.pss, outcome.peak_rss) = procfs::memory(&pids);
        outcome.bpf = procfs::bpf_map_bytes(&pids);
        drop(collector);
        outcomes.push(outcome);
    }
    let table = render(&outcomes, common.unwrap_or(0.0), records_per_export, args);
    println!("{table}");
    if let Some(path) = &args.out {
        fs::write(path, &table)?;
    }
    Ok(())
}

fn render(outcomes: &[Outcome], common: f64, per_export: f64, args: &CompareArgs) -> String {
    // pmacct's daemon is the yardstick: nfacctd, or sfacctd for sFlow.
    let pmacct = outcomes
        .iter()
        .find(|o| matches!(o.kind, Kind::Nfacctd | Kind::Sfacctd));
    let reference = pmacct.and_then(|o| o.best.as_ref()).map(|b| b.sent.rate());
    let reference_name = pmacct.map_or("nfacctd".to_owned(), |o| o.kind.to_string());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| collector | loss-free exports/s | records/s | × {reference_name} | at {common:.0} exports/s: collector CPU | softirq CPU | CPU µs/export | at {fixed:.0} exports/s: collector CPU | softirq CPU | CPU µs/export | lost | memory (PSS) | peak RSS | BPF maps |",
        fixed = args.fixed_rate,
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for o in outcomes {
        let rate = o.best.as_ref().map_or(0.0, |b| b.sent.rate());
        let bound = if o.sender_bound { "≥ " } else { "" };
        let ratio = reference
            .filter(|r| *r > 0.0)
            .map_or("–".into(), |r| format!("{bound}{:.1}", rate / r));
        let (cpu, softirq, cpu_per_export) = cpu_columns(o.at_common.as_ref());
        let (fixed_cpu, fixed_softirq, fixed_per_export) = cpu_columns(o.at_fixed.as_ref());
        let lost = o
            .at_fixed
            .as_ref()
            .map_or("–".into(), |t| match t.lost_bytes() {
                0 => "none".to_string(),
                lost => format!("{:.2} %", 100.0 * lost as f64 / t.expected().max(1) as f64),
            });
        let _ = writeln!(
            s,
            "| {} | {bound}{rate:.0} | {bound}{:.2} M | {ratio} | {cpu} | {softirq} | {cpu_per_export} | {fixed_cpu} | {fixed_softirq} | {fixed_per_export} | {lost} | {:.0} MiB | {:.0} MiB | {:.1} MiB |",
            o.kind,
            rate * per_export / 1e6,
            o.pss as f64 / 1048576.0,
            o.peak_rss as f64 / 1048576.0,
            o.bpf as f64 / 1048576.0,
        );
    }
    let _ = writeln!(
        s,
        "\nSender ceiling (unpaced, {} threads): {}. Trials of {:.0} s; {} exporters, {} subscribers, formats {:?}.",
        args.stream.threads,
        outcomes
            .iter()
            .map(|o| format!("{:.0} exports/s with {}", o.ceiling, o.kind))
            .collect::<Vec<_>>()
            .join(", "),
        args.trial,
        args.stream.exporters,
        args.stream.subscribers,
        args.stream.formats,
    );
    s
}

/// Collector CPU, softirq CPU (percent of one core) and their sum per
/// export, over one trial.
fn cpu_columns(trial: Option<&TrialResult>) -> (String, String, String) {
    trial.map_or(("–".into(), "–".into(), "–".into()), |t| {
        let secs = t.sent.elapsed.as_secs_f64();
        let total = t.collector_cpu + t.softirq;
        (
            format!("{:.0} %", 100.0 * t.collector_cpu.as_secs_f64() / secs),
            format!("{:.0} %", 100.0 * t.softirq.as_secs_f64() / secs),
            format!(
                "{:.1}",
                total.as_secs_f64() * 1e6 / t.sent.frames.max(1) as f64
            ),
        )
    })
}
