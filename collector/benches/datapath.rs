//! Data path micro-benchmarks (`cargo xtask bench`): the XDP program's cost
//! per export in the kernel (BPF_PROG_TEST_RUN, the kernel's own clock) and
//! the socket path's decode + aggregate cost (this thread's CPU time),
//! measured side by side in one
//! run. Prints a Markdown table; BENCHMARKS.md explains the method.

#[path = "support/jit_profile.rs"]
mod jit_profile;

use std::{hint::black_box, path::PathBuf, sync::Mutex, time::Duration};

use flowtally::{
    aggregate::Aggregator,
    classes::{ClassConfig, Classes},
    ip::to_ip,
    netflow::{
        Limits, TemplateCache, TemplateChange,
        encode::{Set, Template, export},
        layouts,
        sets::{FieldSpec, Header as SetsHeader, IPFIX},
        v5::{Record, encode},
    },
    sflow::{
        self,
        fixtures::{Packet, datagram, flow_sample},
    },
    subscribers::SubscriberNets,
    xdp::{DataPlane, ExportRing, KernelConfig, KernelTemplates},
};
use flowtally_common::{
    DEFAULT_AGGREGATE_ENTRIES, DEFAULT_AGGREGATE_ENTRIES_V6, DEFAULT_OVERFLOW_RING_BYTES,
    agg::{FLAG_SCALE_SAMPLING, KEEP_ALL, Profile},
    v5::Header,
};

const XDP_DROP: u32 = 1;
const EXPORTER: [u8; 4] = [198, 18, 0, 1];
const SUBSCRIBERS: &str = "198.18.100.0/24";
const SUBSCRIBERS_V6: &str = "2001:db8:100::/48";
const IPFIX_TEMPLATE: u16 = 256;
const UNIX_SECS: u32 = 1_700_000_000;
/// Runs per measurement, and rounds of measurements (medians are reported).
const REPEAT: u32 = 20_000;
const ROUNDS: usize = 11;

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("datapath bench: the XDP figures need root (BPF_PROG_TEST_RUN)");
        std::process::exit(1);
    }
    let config = KernelConfig {
        collector_ports: [2055].into(),
        subscriber_networks: vec![
            SUBSCRIBERS.parse().unwrap(),
            SUBSCRIBERS_V6.parse().unwrap(),
        ],
        classes: Vec::new(),
        exporters: Vec::new(),
        billing_scope: Vec::new(),
        profile: Profile {
            keep: KEEP_ALL,
            bucket_ms: 60_000,
        },
        flags: FLAG_SCALE_SAMPLING,
        aggregate_entries: DEFAULT_AGGREGATE_ENTRIES,
        aggregate_entries_v6: DEFAULT_AGGREGATE_ENTRIES_V6,
        overflow_ring_bytes: DEFAULT_OVERFLOW_RING_BYTES,
        interfaces: Vec::new(),
        log_level: 0,
    };
    let mut plane = DataPlane::start(&[], &config).expect("the XDP program loads");
    let mut kernel_templates = plane.take_templates().expect("template map");
    let exports = plane.take_integrity().expect("exports ring").ring;
    // `FLOWTALLY_PROFILE=v5|ipfix4|ipfix6` only runs that export through
    // the kernel, under `perf record`, and prints where its time went
    // (BENCHMARKS.md, where the time goes).
    if let Ok(which) = std::env::var("FLOWTALLY_PROFILE") {
        return profile(
            &plane,
            &exports,
            &mut kernel_templates,
            config.flags,
            &which,
        );
    }
    println!(
        "| measurement | records/export | per export | per record | records/s | XDP / socket |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for records in [1, 30] {
        let export = v5_export(records);
        let frame = udp_frame(&export);
        let mut aggregator = aggregator(&config);
        let exporter = to_ip(EXPORTER.into());
        compare(
            "NetFlow v5",
            records,
            || kernel_time(&plane, &exports, &frame),
            || {
                socket_time(|| {
                    black_box(aggregator.add_v5(&exporter, black_box(&export)).unwrap());
                })
            },
        );
    }

    // The same v5 exports with destination classes: every peer is in a
    // local /24 inside a national /8, among 4096 other class networks;
    // whole (the kernel's /24 table answers) or split by a /25 (the trie).
    for (what, split) in [("/24 table", false), ("trie", true)] {
        let classes = bench_classes(split);
        let classed = KernelConfig {
            classes: classes.networks().collect(),
            ..config.clone()
        };
        let mut classed_plane = DataPlane::start(&[], &classed).expect("the XDP program loads");
        let classed_exports = classed_plane.take_integrity().expect("exports ring").ring;
        let records = 30;
        let export = v5_export(records);
        let frame = udp_frame(&export);
        let mut aggregator = aggregator(&config).with_classes(classes.lookup());
        let exporter = to_ip(EXPORTER.into());
        compare(
            &format!("NetFlow v5, classes ({what})"),
            records,
            || kernel_time(&classed_plane, &classed_exports, &frame),
            || {
                socket_time(|| {
                    black_box(aggregator.add_v5(&exporter, black_box(&export)).unwrap());
                })
            },
        );
    }

    let exporter = to_ip(EXPORTER.into());
    for (name, v6, records) in [("IPFIX, IPv4", false, 30), ("IPFIX, IPv6", true, 20)] {
        let mut cache = install_ipfix_template(&mut kernel_templates, v6, config.flags);
        let mut out = Vec::new();
        let now_ms = u64::from(UNIX_SECS) * 1000;
        let export = ipfix_data(v6, records);
        let frame = udp_frame(&export);
        let mut aggregator = aggregator(&config);
        compare(
            name,
            records,
            || kernel_time(&plane, &exports, &frame),
            || {
                socket_time(|| {
                    out.clear();
                    cache
                        .decode(
                            &exporter,
                            black_box(&export),
                            now_ms,
                            config.flags,
                            &mut out,
                        )
                        .unwrap();
                    for record in &out {
                        aggregator.add(&exporter, record);
                    }
                })
            },
        );
    }

    for (name, raw_header) in [
        ("sFlow, Ethernet headers", true),
        ("sFlow, sampled IPv4", false),
    ] {
        let records = 16;
        let datagram = sflow_datagram(records, raw_header);
        let frame = udp_frame(&datagram);
        let mut aggregator = aggregator(&config);
        let mut decoded = sflow::Decoded::default();
        compare(
            name,
            records,
            || kernel_time(&plane, &exports, &frame),
            || {
                socket_time(|| {
                    sflow::decode(
                        black_box(&datagram),
                        config.flags,
                        0,
                        |_| None,
                        &mut decoded,
                    )
                    .unwrap();
                    for record in &decoded.records {
                        aggregator.add(&decoded.agent, record);
                    }
                })
            },
        );
    }
}

/// An sFlow datagram of `records` compact flow samples, one per subscriber,
/// each with an Ethernet header (one VLAN tag) or a sampled IPv4 record.
/// `national` 198.0.0.0/8 with `local` 198.19.0.0/24 (the bench's peers)
/// inside it, `ix` 4096 /24s elsewhere and, if `split`, 198.19.0.128/25
/// (no peer's) too, which sends the peers' /24 to the kernel's trie.
fn bench_classes(split: bool) -> Classes {
    let class = |name: &str, networks: Vec<String>| ClassConfig {
        name: name.into(),
        networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        files: Vec::new(),
    };
    let mut ix: Vec<String> = (0..4096)
        .map(|i| format!("203.{}.{}.0/24", i / 256, i % 256))
        .collect();
    if split {
        ix.push("198.19.0.128/25".into());
    }
    Classes::load(
        &[
            class("national", vec!["198.0.0.0/8".into()]),
            class("local", vec!["198.19.0.0/24".into()]),
            class("ix", ix),
        ],
        |_| unreachable!("no files"),
    )
    .unwrap()
}

fn sflow_datagram(records: usize, raw_header: bool) -> Vec<u8> {
    let packets: Vec<Packet> = (0..records)
        .map(|i| {
            let mut p = Packet::v4(true, 6, 1500);
            p.src = std::net::Ipv4Addr::new(198, 18, 100, i as u8).into();
            p
        })
        .collect();
    let mut headers = vec![Vec::new(); records];
    let samples = packets
        .iter()
        .zip(&mut headers)
        .enumerate()
        .map(|(i, (p, h))| {
            let record = if raw_header {
                p.raw_ethernet(&[0x8100], h)
            } else {
                p.sampled()
            };
            flow_sample(false, i as u32, 3, 512, vec![record])
        })
        .collect();
    datagram(std::net::Ipv4Addr::from(EXPORTER).into(), 1, samples).encode()
}

/// Runs one export through the kernel, over and over, while `perf`
/// samples, and prints the program's hottest instructions.
fn profile(
    plane: &DataPlane,
    exports: &Mutex<ExportRing>,
    kernel: &mut KernelTemplates,
    flags: u32,
    which: &str,
) {
    let export = match which {
        "v5" => v5_export(30),
        "ipfix4" | "ipfix6" => {
            let v6 = which == "ipfix6";
            install_ipfix_template(kernel, v6, flags);
            ipfix_data(v6, if v6 { 20 } else { 30 })
        }
        other => panic!("FLOWTALLY_PROFILE: unknown export {other:?}"),
    };
    let frame = udp_frame(&export);
    let dir = std::env::var_os("FLOWTALLY_BENCH_OUT")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
            PathBuf::from,
        )
        .join(format!("profile-{which}"));
    std::fs::create_dir_all(&dir).unwrap();
    let id = plane.program_id().expect("the program's id");
    let images = jit_profile::images(id).expect("the program's JIT images (root)");
    let perf_data = dir.join("perf.data");
    let mut perf = jit_profile::record(&perf_data, 6)
        .expect("FLOWTALLY_PROFILE runs `perf` (Debian: linux-perf)");
    while perf.try_wait().unwrap().is_none() {
        kernel_time(plane, exports, &frame);
    }
    jit_profile::report(&images, &perf_data, &dir, 10)
        .expect("`perf script` and `objdump` (Debian: binutils) read the samples");
}

/// Teaches a template cache the IPFIX template and installs its compiled
/// form in the kernel, as the daemon does; returns the cache.
fn install_ipfix_template(kernel: &mut KernelTemplates, v6: bool, flags: u32) -> TemplateCache {
    let mut cache = TemplateCache::new(Limits::default());
    let now_ms = u64::from(UNIX_SECS) * 1000;
    cache
        .decode(
            &to_ip(EXPORTER.into()),
            &ipfix_template(v6),
            now_ms,
            flags,
            &mut Vec::new(),
        )
        .unwrap();
    for change in cache.take_changes() {
        if let TemplateChange::Install(key, template) = change {
            kernel.install(&key, &template).unwrap();
        }
    }
    cache
}

/// The layout softflowd uses, with 8-byte counters and millisecond times.
fn ipfix_fields(v6: bool) -> Vec<FieldSpec> {
    if v6 {
        layouts::V6_MILLISECONDS
    } else {
        layouts::V4_MILLISECONDS
    }
    .iter()
    .map(|&(ie, len)| FieldSpec::iana(ie, len))
    .collect()
}

fn ipfix_header() -> SetsHeader {
    SetsHeader {
        version: IPFIX,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: 0,
        sequence: 0,
        domain: 1,
    }
}

fn ipfix_template(v6: bool) -> Vec<u8> {
    let template = Template {
        id: IPFIX_TEMPLATE + u16::from(v6),
        fields: ipfix_fields(v6),
    };
    export(&ipfix_header(), &[Set::Templates(vec![template])], false)
}

/// `records` records from distinct subscribers, each to its own aggregate.
fn ipfix_data(v6: bool, records: usize) -> Vec<u8> {
    let records = (0..records)
        .map(|i| {
            let i = i as u8;
            let mut r = if v6 {
                let mut src = vec![0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00];
                src.extend_from_slice(&[0; 9]);
                src.push(i);
                let mut dst = vec![0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00];
                dst.extend_from_slice(&[0; 9]);
                dst.push(i);
                [src, dst].concat()
            } else {
                vec![198, 18, 100, i, 198, 19, 0, i]
            };
            r.extend_from_slice(&(40_000 + u16::from(i)).to_be_bytes());
            r.extend_from_slice(&443u16.to_be_bytes());
            r.push(6);
            r.extend_from_slice(&15_000u64.to_be_bytes());
            r.extend_from_slice(&10u64.to_be_bytes());
            let end = u64::from(UNIX_SECS) * 1000 - 1_000;
            r.extend_from_slice(&(end - 9_000).to_be_bytes());
            r.extend_from_slice(&end.to_be_bytes());
            r
        })
        .collect();
    let id = IPFIX_TEMPLATE + u16::from(v6);
    export(&ipfix_header(), &[Set::Data { id, records }], false)
}

/// CPU time of this thread: unlike the wall clock, it leaves out the time
/// other processes of a busy machine hold the core (the kernel's figure for
/// XDP leaves out preemptions too).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The socket path's aggregator for `config`.
fn aggregator(config: &KernelConfig) -> Aggregator {
    Aggregator::new(
        config.profile,
        config.flags,
        SubscriberNets::new(&config.subscriber_networks),
    )
}

/// The socket path's cost of `one` input: this thread's CPU time over
/// [`REPEAT`] runs.
fn socket_time(mut one: impl FnMut()) -> Duration {
    let started = thread_cpu();
    for _ in 0..REPEAT {
        one();
    }
    (thread_cpu() - started) / REPEAT
}

/// The kernel's and the socket path's cost of the same input, measured in
/// turns, round after round, so that a burst of the host's noise hits both
/// sides alike; prints the median of each and of the per-round ratios.
fn compare(
    name: &str,
    records: usize,
    mut xdp: impl FnMut() -> Duration,
    mut socket: impl FnMut() -> Duration,
) {
    let (mut kernel, mut user, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (k, u) = (xdp(), socket());
        ratios.push(k.as_secs_f64() / u.as_secs_f64().max(1e-12));
        kernel.push(k);
        user.push(u);
    }
    let ratio = format!("{:.2}×", median(ratios));
    row(&format!("XDP, {name}"), records, median(kernel), &ratio);
    row(&format!("socket path, {name}"), records, median(user), "");
}

fn row(what: &str, records: usize, per_export: Duration, ratio: &str) {
    let per_record = per_export / records as u32;
    let rate = 1e9 / per_record.as_nanos().max(1) as f64;
    println!(
        "| {what} | {records} | {} ns | {} ns | {:.2} M | {ratio} |",
        per_export.as_nanos(),
        per_record.as_nanos(),
        rate / 1e6
    );
}

/// The kernel's mean time per run of `frame` over [`REPEAT`] runs, which
/// must aggregate it. The exports ring is emptied first, as the daemon
/// does continuously: a full ring sends exports up to the socket path
/// instead (cheaply), which would time the wrong path.
fn kernel_time(plane: &DataPlane, exports: &Mutex<ExportRing>, frame: &[u8]) -> Duration {
    exports.lock().expect("exports ring lock").read(|_| {});
    let (verdict, mean) = plane.time_frame(frame, REPEAT).unwrap();
    assert_eq!(verdict, XDP_DROP, "aggregated in the kernel");
    mean
}

fn median<T: PartialOrd>(mut samples: Vec<T>) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    samples.swap_remove(samples.len() / 2)
}

/// An export whose records belong to distinct subscribers and peers, so
/// that each updates its own aggregate.
fn v5_export(records: usize) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 100_000,
        unix_secs: 1_700_000_000,
        ..Header::default()
    };
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            src: [198, 18, 100, i as u8],
            dst: [198, 19, 0, i as u8],
            packets: 10,
            octets: 15_000,
            first: 90_000,
            last: 99_000,
            src_port: 40_000 + i as u16,
            dst_port: 443,
            protocol: 6,
            ..Record::default()
        })
        .collect();
    encode(&header, &records)
}

/// `payload` in UDP to port 2055 from `EXPORTER`, in IPv4 in Ethernet.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&EXPORTER);
    frame.extend_from_slice(&[198, 18, 0, 2]);
    frame.extend_from_slice(&[0x30, 0x39, 0x08, 0x07]);
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}
