//! A real sFlow agent: pmacct's `pmacctd` with its `sfprobe` plugin (Debian
//! package `pmacct`) reads the synthetic capture and exports sFlow v5 from
//! a test namespace to flowtally in another, through XDP or sockets.
//!
//! ```text
//!  probe ns                                   collector ns
//!  pmacctd -P sfprobe (pcap_savefile)
//!  fta 198.18.0.1/30 ======================== ftb 198.18.0.2/30
//!                                             flowtally --sflow 198.18.0.2:6343 (XDP on ftb)
//! ```
//!
//! What sfprobe (pmacct 1.7.8) sends: flow samples (format 1) with one raw
//! packet header record (Ethernet, up to 128 bytes of the frame), agent
//! `sfprobe_agentip`, sampling rate `sampling_rate`; plus counter samples
//! of its one interface, which the kernel passes up. It samples at random,
//! 1 in N on average.
//!
//! - **1 in 1**: every packet is a sample, so per subscriber and direction
//!   flowtally bills exactly the capture's IP bytes (IPv4 total length,
//!   IPv6 payload + 40), computed here from the pcap independently of
//!   flowtally's code.
//! - **1 in N**: each packet of IP length s is sampled with probability
//!   1/N and then counts N·s, so the total is unbiased with variance
//!   (N − 1)·Σs² (a sum of independent Bernoulli terms). The capture is
//!   repeated R times to shrink the relative error; the test asserts the
//!   billed total within 5 standard deviations of R·Σs (a false failure
//!   about once in 1.7 million runs).

#[path = "support/pcap.rs"]
mod pcap;
mod support;

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::Path,
    process::{Child, Command, Stdio},
};

use pcap::{Mix, Packet};
use support::{Flowtally, NetNs, TempDir, path_str, require_root, scrape, veth_pair};

const COLLECTOR: &str = "198.18.0.2:6343";
const AGENT: &str = "198.18.0.1";

/// Bytes and packets per (subscriber, direction).
type Bill = BTreeMap<(IpAddr, String), (u64, u64)>;

/// pmacctd, killed on drop.
struct Pmacctd(Child);

impl Drop for Pmacctd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pmacctd(ns: &NetNs, dir: &TempDir, capture: &Path, rate: u32) -> Pmacctd {
    let config = dir.path("pmacctd.conf");
    fs::write(
        &config,
        format!(
            "daemonize: false\n\
             pcap_savefile: {}\n\
             pcap_savefile_wait: true\n\
             pcap_savefile_delay: 3\n\
             plugins: sfprobe\n\
             plugin_pipe_size: 67108864\n\
             sfprobe_receiver: {COLLECTOR}\n\
             sfprobe_agentip: {AGENT}\n\
             sampling_rate: {rate}\n",
            path_str(capture)
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.path("pmacctd.log")).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "pmacctd",
            "-f",
            path_str(&config),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("pmacctd runs (Debian package pmacct)");
    Pmacctd(child)
}

/// Source and destination of the filler packets: transit between two
/// addresses nothing else uses.
const FILLER_SRC: [u8; 4] = [198, 19, 255, 1];
const FILLER_DST: [u8; 4] = [198, 19, 255, 2];
/// 16 s of them: sampled 1 in 4, many are sampled more than a second after
/// the capture's last packet.
const FILLERS: u64 = 64;

/// `packets` and, after them, a few small UDP packets between the filler
/// addresses, seconds later in capture time. sfprobe sends a datagram when
/// it is full or when its once-a-second tick finds one pending, and it
/// ticks on the time of the packets it reads (non-IP frames do not reach
/// it): without later packets the capture's last samples would wait
/// forever. The fillers bill as transit of `FILLER_SRC`, which the
/// comparison leaves out (the last of them may wait in turn).
fn with_fillers(packets: &[Packet], copies: u64) -> Vec<Packet> {
    let step = pcap::SPAN_US + 500_000;
    let copied = (0..copies).flat_map(|k| {
        packets.iter().map(move |p| Packet {
            ts_us: p.ts_us + k * step,
            frame: p.frame.clone(),
        })
    });
    let last = packets.last().expect("a capture").ts_us + (copies - 1) * step;
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&pcap::DST_MAC);
    frame.extend_from_slice(&pcap::SRC_MAC);
    frame.extend_from_slice(&pcap::ETHERTYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(&[0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, pcap::IPPROTO_UDP, 0, 0]);
    frame.extend_from_slice(&FILLER_SRC);
    frame.extend_from_slice(&FILLER_DST);
    frame.extend_from_slice(&[0, 9, 0, 9, 0, 8, 0, 0]);
    frame.resize(60, 0);
    let fillers = (1..=FILLERS).map(|i| Packet {
        ts_us: last + i * 250_000,
        frame: frame.clone(),
    });
    copied.chain(fillers).collect()
}

/// Per (subscriber, direction) IP bytes and packets of `packets`, billed
/// as flowtally bills (see `pcap::usage`).
fn expected(packets: &[Packet], mix: Mix) -> Bill {
    let mut flows = BTreeMap::<pcap::FlowKey, pcap::Totals>::new();
    for p in packets {
        let key = pcap::flow_key(&p.frame).unwrap();
        flows
            .entry(key)
            .or_default()
            .add(pcap::ip_len(&p.frame) as u64, 1);
    }
    pcap::usage(&flows, &mix.subscriber_nets())
        .into_iter()
        .map(|((ip, dir), t)| ((ip, dir.to_owned()), (t.bytes, t.packets)))
        .collect()
}

/// What flowtally billed, fillers left out.
fn billed(db: &Path) -> Bill {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare(
        "SELECT subscriber_ip, direction, SUM(bytes), SUM(packets) FROM usage GROUP BY 1, 2",
    )
    .unwrap()
    .query_map([], |row| {
        let ip: String = row.get(0)?;
        let (bytes, packets): (i64, i64) = (row.get(2)?, row.get(3)?);
        Ok((
            (ip.parse().unwrap(), row.get(1)?),
            (bytes as u64, packets as u64),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .filter(|((ip, _), _)| *ip != IpAddr::from(FILLER_SRC))
    .collect()
}

/// flowtally, in `mode`, fed by pmacctd sampling 1 in `rate` over `copies`
/// copies of the capture; returns what it billed and what it saw.
fn run(mode: &str, rate: u32, copies: u32) -> (Bill, Vec<Packet>) {
    require_root();
    let (probe, collector) = (NetNs::new(), NetNs::new());
    let (_, collector_if) = veth_pair(&probe, "198.18.0.1/30", &collector, "198.18.0.2/30");
    let dir = TempDir::new();
    let mix = Mix::DualStack;
    let packets = pcap::synthetic_traffic(mix);
    let capture = dir.path("capture.pcap");
    pcap::write_pcap(&capture, &with_fillers(&packets, u64::from(copies))).unwrap();
    let db = dir.path("ft.db");
    let nets: Vec<String> = mix
        .subscriber_nets()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut args = vec!["--mode", mode];
    if mode == "xdp" {
        args.extend(["--iface", &collector_if]);
    }
    args.extend([
        "--sflow",
        COLLECTOR,
        "--netflow",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    args.extend(["--db", path_str(&db), "--flush-interval", "500ms"]);
    for net in &nets {
        args.extend(["--subscriber-net", net]);
    }
    let mut flowtally = Flowtally::start(Some(&collector), &args);
    let metrics = flowtally.metrics_addr();
    let _agent = pmacctd(&probe, &dir, &capture, rate);
    let samples = |path: &str| {
        let m = collector.enter(|| scrape(metrics));
        let key = format!(r#"flowtally_sflow_samples_total{{path="{path}",kind="flow"}}"#);
        m.get(&key).copied().unwrap_or(0.0) as u64
    };
    let total = (packets.len() as u64) * u64::from(copies);
    let diagnose = || {
        let m = collector.enter(|| scrape(metrics));
        let nonzero: Vec<String> = m
            .iter()
            .filter(|(k, v)| k.starts_with("flowtally_") && **v != 0.0 && !k.contains("seconds"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "flowtally metrics:\n{}\npmacctd log:\n{}\nflowtally stderr:\n{}",
            nonzero.join("\n"),
            fs::read_to_string(dir.path("pmacctd.log")).unwrap_or_default(),
            flowtally.stderr()
        )
    };
    if rate == 1 {
        let deadline = std::time::Instant::now() + support::PATIENCE;
        while samples("xdp") + samples("socket") < total {
            assert!(
                std::time::Instant::now() < deadline,
                "not every packet arrived as a sample; {}",
                diagnose()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    } else {
        // The samples are random: wait for a sample taken 8 fillers past
        // the capture (its sample pool, the packets the agent has seen,
        // says when): every sample before it was sent before it.
        let pool = || {
            let m = collector.enter(|| scrape(metrics));
            m.iter()
                .filter(|(k, _)| k.starts_with("flowtally_sflow_source_sample_pool_total"))
                .map(|(_, v)| *v as u64)
                .sum::<u64>()
        };
        let deadline = std::time::Instant::now() + 6 * support::PATIENCE;
        while pool() < total + 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent's sample pool stayed short of {total}; {}",
                diagnose()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let (xdp, socket) = (samples("xdp"), samples("socket"));
    eprintln!("sFlow samples: xdp {xdp}, socket {socket}");
    if mode == "xdp" {
        assert!(xdp > 0, "the kernel aggregated samples");
    } else {
        assert_eq!(xdp, 0);
    }
    let m = collector.enter(|| scrape(metrics));
    let lost: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("flowtally_sflow_source_lost_samples_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(lost, 0.0, "no sample lost between two namespaces");
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let counters: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM interface_counters", [], |r| r.get(0))
        .unwrap();
    eprintln!("interface counter rows: {counters}");
    (billed(&db), packets)
}

fn bills_exactly_every_packet(mode: &str) {
    let (billed, packets) = run(mode, 1, 1);
    let expected = expected(&packets, Mix::DualStack);
    assert_eq!(
        billed, expected,
        "billed vs the pcap's IP bytes and packets"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn flowtally_xdp_bills_exactly_what_pmacct_sampled_1_in_1() {
    bills_exactly_every_packet("xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn flowtally_sockets_bill_exactly_what_pmacct_sampled_1_in_1() {
    bills_exactly_every_packet("socket");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn sampled_1_in_4_the_total_scales_within_the_statistical_bound() {
    let (rate, copies) = (4u32, 10u32);
    let (billed, packets) = run("xdp", rate, copies);
    // A packet between two subscribers is billed twice (up and down): it
    // weighs m = 2 in the billed total, m·s with variance (N − 1)·m²·s².
    let nets = Mix::DualStack.subscriber_nets();
    let subscriber = |ip| nets.iter().any(|net| net.contains(ip));
    let weighed: Vec<f64> = packets
        .iter()
        .map(|p| {
            let key = pcap::flow_key(&p.frame).unwrap();
            let m = if subscriber(key.src) && subscriber(key.dst) {
                2.0
            } else {
                1.0
            };
            m * pcap::ip_len(&p.frame) as f64
        })
        .collect();
    let mean = f64::from(copies) * weighed.iter().sum::<f64>();
    let variance =
        f64::from(copies) * f64::from(rate - 1) * weighed.iter().map(|s| s * s).sum::<f64>();
    let sigma = variance.sqrt();
    let total: u64 = billed.values().map(|(bytes, _)| bytes).sum();
    eprintln!("billed {total}, expected {mean:.0} ± {sigma:.0} (1 σ)");
    assert!(
        (total as f64 - mean).abs() <= 5.0 * sigma,
        "billed {total}, expected {mean:.0} within 5 σ = {:.0}",
        5.0 * sigma
    );
    for ((ip, dir), (_, n)) in &billed {
        assert_eq!(
            n % u64::from(rate),
            0,
            "{ip} {dir}: each sample counts {rate} packets"
        );
    }
}
