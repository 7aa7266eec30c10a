//! What a collector costs, read from /proc: CPU time of its processes,
//! resident memory, BPF map memory, and the machine's softirq time (where
//! the XDP program and the kernel's UDP receive path run).

use std::{fs, time::Duration};

use anyhow::{Context as _, Result};

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// `pid` and its descendants (nfacctd runs its plugins as children).
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let parents: Vec<(i32, i32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, stat_fields(p).ok()?.get(1)?.parse().ok()?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// Fields of /proc/PID/stat after the command name: state is [0], ppid [1],
/// utime [11], stime [12].
fn stat_fields(pid: i32) -> Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat without comm")?.1;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU time of the processes.
pub fn cpu(pids: &[i32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&p| {
            let f = stat_fields(p).ok()?;
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / TICKS)
}

/// Softirq time of all CPUs (/proc/stat), zero when the kernel does not
/// account it separately.
pub fn softirq() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(7)?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / TICKS)
}

/// Memory now (proportional set size: pages shared between the processes,
/// such as nfacctd's core-to-plugin pipe, counted once) and the peak
/// resident size (VmHWM, summed), bytes.
pub fn memory(pids: &[i32]) -> (u64, u64) {
    let mut now = 0;
    let mut peak = 0;
    for &p in pids {
        let rollup = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        now += status_kib(&rollup, "Pss:") * 1024;
        let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        peak += status_kib(&status, "VmHWM:") * 1024;
    }
    (now, peak)
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Memory charged to the BPF maps the processes hold (`memlock` in each map
/// fd's fdinfo), counting each map once.
pub fn bpf_map_bytes(pids: &[i32]) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for &p in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{p}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = fs::read_to_string(fd.path()).unwrap_or_default();
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:"))
                && seen.insert(id)
            {
                total += memlock.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// UDP datagrams dropped because a socket's receive buffer was full, in
/// the network namespace of `pid`.
pub fn udp_rcvbuf_errors(pid: i32) -> u64 {
    let snmp = fs::read_to_string(format!("/proc/{pid}/net/snmp")).unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
