//! `cargo xtask bench`: every figure of BENCHMARKS.md in one run (needs
//! root). The micro-benchmarks and scaling curves (`cargo bench -p
//! flowtally`), then the side-by-side comparison of flowtally (XDP and
//! socket mode) with nfacctd and nfcapd on one generated NetFlow stream and
//! with sfacctd and sfcapd on one generated sFlow stream (`flowtally-load
//! compare`), then a PNG per curve in `benchmarks/`.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};

use crate::cmd::{self, Workspace};
use crate::load;

pub fn run(ws: &Workspace, args: &[OsString]) -> Result<()> {
    let out = load::target_dir(ws).join("bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    ensure_package(ws, "gnuplot", "gnuplot-nox")?;
    ensure_package(ws, "sfcapd", "nfdump-sflow")?;
    // Every benchmark runs even when one fails; the failure is reported at
    // the end, after the comparison and the plots.
    let micro = cmd::run(
        ws.cargo()
            .env("FLOWTALLY_BENCH_OUT", &out)
            .args(["bench", "-p", "flowtally", "--no-fail-fast", "--"])
            .args(args),
    )
    .context("a benchmark failed; see the output above");
    let bin = load::build_release(ws)?;
    let table = out.join("compare.md");
    cmd::run(
        ws.command(bin.join("flowtally-load"))
            .args(["compare", "--out"])
            .arg(&table),
    )
    .context("the comparison with nfacctd failed; see the output above")?;
    let sflow_table = out.join("compare-sflow.md");
    cmd::run(
        ws.command(bin.join("flowtally-load"))
            .args(["compare", "--formats", "sflow"])
            .args(["--collectors", "sfacctd,sfcapd,socket,xdp", "--out"])
            .arg(&sflow_table),
    )
    .context("the sFlow comparison with sfacctd failed; see the output above")?;
    let plots = ws.root.join("benchmarks");
    fs::create_dir_all(&plots)?;
    for entry in fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "dat") {
            plot(ws, &path, &plots)?;
        }
    }
    eprintln!(
        "bench: tables above; comparisons in {} and {}, curves in {}",
        table.display(),
        sflow_table.display(),
        plots.display()
    );
    micro
}

/// Installs Debian `package` unless `program` is on the PATH: gnuplot
/// draws the curves (gnuplot-nox has no X dependencies), sfcapd is in the
/// sFlow comparison (nfdump-sflow).
fn ensure_package(ws: &Workspace, program: &str, package: &str) -> Result<()> {
    if cmd::output(ws.command("which").arg(program)).is_ok() {
        return Ok(());
    }
    cmd::run(
        ws.command("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| {
        format!("{program} is missing and could not be installed (apt-get install {package})")
    })
}

/// Plots one curve. The data file starts with `# title|x label|y label|y2
/// label` and then has columns x, y and optionally y2 (right axis).
fn plot(ws: &Workspace, data: &Path, plots: &Path) -> Result<()> {
    let text = fs::read_to_string(data)?;
    let head = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .with_context(|| format!("{} has no header line", data.display()))?;
    let labels: Vec<&str> = head.split('|').collect();
    ensure!(
        labels.len() >= 3,
        "{}: header needs title|x|y",
        data.display()
    );
    let stem = data.file_stem().context("no file name")?.to_string_lossy();
    let png = plots.join(format!("{stem}.png"));
    let file = data.display();
    let mut script = format!(
        "set terminal pngcairo size 800,500 noenhanced\n\
         set output '{}'\n\
         set title '{}'\n\
         set xlabel '{}'\n\
         set ylabel '{}'\n\
         set logscale x\n\
         set grid\n\
         set key left top\n",
        png.display(),
        labels[0],
        labels[1],
        labels[2]
    );
    if let Some(y2) = labels.get(3) {
        script += &format!(
            "set y2label '{y2}'\nset y2tics\nset ytics nomirror\n\
             plot '{file}' using 1:2 with linespoints title '{}', \
             '{file}' using 1:3 axes x1y2 with linespoints title '{y2}'\n",
            labels[2]
        );
    } else {
        script += &format!(
            "plot '{file}' using 1:2 with linespoints title '{}'\n",
            labels[2]
        );
    }
    let script_path = data.with_extension("gp");
    fs::write(&script_path, script)?;
    cmd::run(ws.command("gnuplot").arg(&script_path))
        .with_context(|| format!("gnuplot could not draw {}", png.display()))
}
