//! Real exporter: softflowd (the Debian package) exports NetFlow v5 for
//! traffic replayed live (tcpreplay, real clock) on a veth in a test
//! namespace; flowtally's per-subscriber byte totals in SQLite equal the
//! totals computed from the replayed pcap, through XDP and through sockets.
//!
//! ```text
//!  replay ns               probe ns                         collector ns
//!  tcpreplay -> fta ====== ftb  softflowd -n 198.18.0.2:2055
//!              198.18.1.1/30    fta 198.18.0.1/30 ======== ftb 198.18.0.2/30
//!                                                          flowtally (XDP on ftb)
//! ```
//!
//! `softflowd_exports_exactly_the_pcap_bytes` proves the harness (and so the
//! expected totals) against a plain UDP socket, independently of flowtally.

#[path = "support/pcap.rs"]
mod pcap;
mod support;

use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, UdpSocket},
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pcap::{FlowKey, Totals};
use support::{
    Flowtally, NetNs, PATIENCE, TempDir, eventually, path_str, require_root, scrape,
    send_raw_frame, veth_pair,
};

/// Where softflowd exports to: the collector's end of the export link.
const COLLECTOR: &str = "198.18.0.2:2055";
const SUBSCRIBER_NET: &str = "198.18.100.0/24";

/// Three namespaces: tcpreplay sends out of `wire` (in `replay`), softflowd
/// captures on `tap` (in `probe`) and exports over a second veth pair to
/// `collector_if` (in `collector`).
struct Lab {
    replay: NetNs,
    probe: NetNs,
    collector: NetNs,
    wire: String,
    tap: String,
    collector_if: String,
    dir: TempDir,
}

impl Lab {
    fn new() -> Self {
        let (replay, probe, collector) = (NetNs::new(), NetNs::new(), NetNs::new());
        // The wire's addresses are never used: the replayed frames carry
        // MACs of no interface, so the probe's stack drops them and only the
        // promiscuous capture sees them.
        let (wire, tap) = veth_pair(&replay, "198.18.1.1/30", &probe, "198.18.1.2/30");
        let (_, collector_if) = veth_pair(&probe, "198.18.0.1/30", &collector, "198.18.0.2/30");
        Self {
            replay,
            probe,
            collector,
            wire,
            tap,
            collector_if,
            dir: TempDir::new(),
        }
    }
}

/// `softflowd` capturing on one interface, in the foreground; killed on drop.
struct Softflowd {
    child: Child,
    ctl: PathBuf,
    log: PathBuf,
}

/// The counters of `softflowctl statistics` that the harness relies on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Statistics {
    /// IP packets that went through flow tracking.
    processed: u64,
    non_ip: u64,
    /// NetFlow records sent, and the datagrams that carried them.
    records: u64,
    datagrams: u64,
    failures: u64,
}

impl Softflowd {
    fn start(ns: &NetNs, iface: &str, collector: &str, dir: &TempDir) -> Self {
        let (ctl, log) = (dir.path("softflowd.ctl"), dir.path("softflowd.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "softflowd", "-d", "-v", "5"])
            .args(["-i", iface, "-n", collector])
            .args(["-c", path_str(&ctl)])
            .args(["-p", path_str(&dir.path("softflowd.pid"))])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("softflowd starts (Debian package softflowd)");
        let mut this = Self { child, ctl, log };
        // softflowd activates its capture before it opens the control
        // socket, so an answer means capturing.
        eventually("softflowd's control socket", || {
            if let Some(status) = this.child.try_wait().unwrap() {
                panic!("softflowd exited ({status}): {}", this.log());
            }
            this.try_ctl("statistics").is_some()
        });
        this
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_ctl(&self, command: &str) -> Option<String> {
        let out = Command::new("softflowctl")
            .args(["-c", path_str(&self.ctl), command])
            .output()
            .expect("softflowctl runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ctl(&self, command: &str) -> String {
        self.try_ctl(command)
            .unwrap_or_else(|| panic!("softflowctl {command} failed: {}", self.log()))
    }

    fn statistics(&self) -> Statistics {
        let text = self.ctl("statistics");
        // "Packets processed: 360", "Ignored packets: 5 (5 non-IP, 0 too
        // short)", "Flows exported: 52 (52 records) in 2 packets (0 failures)"
        let numbers = |prefix: &str| -> Vec<u64> {
            let line = text
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in {text}"));
            line.split(|c: char| !c.is_ascii_digit())
                .filter(|word| !word.is_empty())
                .map(|word| word.parse().unwrap())
                .collect()
        };
        let exported = numbers("Flows exported:");
        Statistics {
            processed: numbers("Packets processed:")[0],
            non_ip: numbers("Ignored packets:")[1],
            records: exported[1],
            datagrams: exported[2],
            failures: exported[3],
        }
    }

    /// Waits until softflowd has tracked exactly `packets` IP packets.
    ///
    /// softflowd 1.1.0 opens its capture with a timeout of 0, which libpcap
    /// 1.10 turns into a TPACKET_V3 ring whose blocks (256 KiB) reach
    /// softflowd only when full: on a quiet interface the replayed frames
    /// would wait forever (see irino/softflowd#71; `softflowctl statistics`
    /// then shows them "received by libpcap" but not "processed"). So this
    /// pushes full-size non-IP frames (ethertype 0x88b5, local
    /// experimental) after them until their block is handed over; softflowd
    /// counts those as "non-IP" and tracks them in no flow.
    fn drain(&self, lab: &Lab, packets: u64) {
        let mut filler = Vec::with_capacity(1514);
        filler.extend_from_slice(&pcap::DST_MAC);
        filler.extend_from_slice(&pcap::SRC_MAC);
        filler.extend_from_slice(&0x88b5_u16.to_be_bytes());
        filler.resize(1514, 0);
        eventually("softflowd to process every replayed packet", || {
            let stats = self.statistics();
            assert!(
                stats.processed <= packets,
                "softflowd saw IP packets that were not replayed: {stats:?}"
            );
            if stats.processed == packets {
                return true;
            }
            lab.replay.enter(|| {
                for _ in 0..32 {
                    send_raw_frame(&lab.wire, &filler);
                }
            });
            false
        });
    }

    /// Exports every flow now; returns how many (bidirectional) flows.
    fn expire_all(&self) -> u64 {
        // "softflowd[1234]: Expired 26 flows."
        let reply = self.ctl("expire-all");
        reply
            .split_whitespace()
            .skip_while(|word| *word != "Expired")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply: {reply}"))
    }
}

impl Drop for Softflowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replays `file` out of `iface` at the speed it was captured.
fn replay(ns: &NetNs, iface: &str, file: &Path, packets: usize) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "tcpreplay", "-i", iface])
        .arg(file)
        .output()
        .expect("tcpreplay runs (Debian package tcpreplay)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tcpreplay failed: {stdout}{stderr}");
    let count = |label: &str| -> Option<usize> {
        let line = stdout.lines().find_map(|l| l.trim().strip_prefix(label))?;
        line.trim().parse().ok()
    };
    assert_eq!(
        (count("Successful packets:"), count("Failed packets:")),
        (Some(packets), Some(0)),
        "{stdout}{stderr}"
    );
}

/// What the replay produced: the pcap's flows and how softflowd reported
/// sending them.
struct Exported {
    flows: BTreeMap<FlowKey, Totals>,
    stats: Statistics,
}

/// Replays the synthetic capture live through softflowd, which captures on
/// the probe's end of the wire and exports v5 to [`COLLECTOR`]. Returns
/// once softflowd has sent every flow, with the flows the exports must
/// describe, computed from the pcap file that was replayed.
fn export_synthetic_capture(lab: &Lab) -> Exported {
    let file = lab.dir.path("traffic.pcap");
    pcap::write_pcap(&file, &pcap::synthetic_traffic()).unwrap();
    let packets = pcap::read_pcap(&file).unwrap();
    let flows = pcap::flows(&packets);
    let mut bidirectional: Vec<_> = flows
        .keys()
        .map(|k| {
            let (a, b) = ((k.src, k.src_port), (k.dst, k.dst_port));
            (a.min(b), a.max(b), k.protocol)
        })
        .collect();
    bidirectional.sort();
    bidirectional.dedup();

    let softflowd = Softflowd::start(&lab.probe, &lab.tap, COLLECTOR, &lab.dir);
    let started = Instant::now();
    replay(&lab.replay, &lab.wire, &file, packets.len());
    let took = started.elapsed();
    let span = Duration::from_micros(pcap::SPAN_US);
    assert!(
        took >= span - Duration::from_millis(100),
        "a real-clock replay of {span:?} took {took:?}"
    );
    softflowd.drain(lab, packets.len() as u64);
    let tracked = softflowd.ctl("dump-flows");
    assert_eq!(
        softflowd.expire_all(),
        bidirectional.len() as u64,
        "softflowd tracked other flows than the pcap's:\n{tracked}"
    );
    let stats = softflowd.statistics();
    let total = pcap::total(&flows);
    eprintln!(
        "replayed {} packets ({} octets as softflowd counts them, {} flows) in {took:?}; \
         softflowd: {stats:?}",
        packets.len(),
        total.bytes,
        flows.len(),
    );
    assert_eq!(
        (stats.records, stats.failures),
        (flows.len() as u64, 0),
        "{stats:?}"
    );
    // Everything is sent: dropping softflowd here kills it.
    Exported { flows, stats }
}

/// A NetFlow v5 datagram: the header's flow sequence and the records.
fn decode_v5(datagram: &[u8]) -> (u32, Vec<(FlowKey, Totals)>) {
    let u16_at = |at: usize| u16::from_be_bytes([datagram[at], datagram[at + 1]]);
    let u32_at = |at: usize| u32::from_be_bytes(datagram[at..at + 4].try_into().unwrap());
    let ip_at = |at: usize| Ipv4Addr::from(u32_at(at));
    assert!(datagram.len() >= 24, "short v5 datagram: {datagram:?}");
    assert_eq!(u16_at(0), 5, "version");
    let count = usize::from(u16_at(2));
    assert!((1..=30).contains(&count), "count {count}");
    assert_eq!(
        datagram.len(),
        24 + 48 * count,
        "length for {count} records"
    );
    assert_eq!(u16_at(22), 0, "not sampled");
    let records = (0..count)
        .map(|i| {
            let r = 24 + 48 * i;
            let key = FlowKey {
                src: ip_at(r),
                dst: ip_at(r + 4),
                protocol: datagram[r + 38],
                src_port: u16_at(r + 32),
                dst_port: u16_at(r + 34),
            };
            let totals = Totals {
                packets: u64::from(u32_at(r + 16)),
                bytes: u64::from(u32_at(r + 20)),
            };
            (key, totals)
        })
        .collect();
    (u32_at(16), records)
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn softflowd_exports_exactly_the_pcap_bytes() {
    require_root();
    let lab = Lab::new();
    let socket = lab
        .collector
        .enter(|| UdpSocket::bind(COLLECTOR))
        .expect("bind the collector port");
    let Exported { flows, stats } = export_synthetic_capture(&lab);

    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut exported = BTreeMap::<FlowKey, Totals>::new();
    let mut buf = [0; 65_536];
    let mut records = 0;
    for _ in 0..stats.datagrams {
        let n = socket
            .recv(&mut buf)
            .expect("every datagram softflowd sent");
        let (sequence, batch) = decode_v5(&buf[..n]);
        assert_eq!(sequence, records, "no datagram lost or reordered");
        records += batch.len() as u32;
        for (key, totals) in batch {
            exported
                .entry(key)
                .or_default()
                .add(totals.bytes, totals.packets);
        }
    }
    assert_eq!(u64::from(records), stats.records);
    socket.set_nonblocking(true).unwrap();
    assert!(socket.recv(&mut buf).is_err(), "nothing more arrives");

    assert_same(&exported, &flows, "softflowd's records vs the pcap's flows");
}

/// Asserts `actual == expected`, listing only the entries that differ.
fn assert_same<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    actual: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
    what: &str,
) {
    let keys: std::collections::BTreeSet<&K> = actual.keys().chain(expected.keys()).collect();
    let differences: Vec<String> = keys
        .into_iter()
        .filter(|key| actual.get(key) != expected.get(key))
        .map(|key| {
            format!(
                "{key:?}: got {:?}, expected {:?}",
                actual.get(key),
                expected.get(key)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{what}: {} of {} entries differ:\n{}",
        differences.len(),
        expected.len(),
        differences.join("\n")
    );
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

/// `SELECT subscriber_ip, direction, SUM(bytes), SUM(packets) ... GROUP BY`.
fn billed(db: &Path) -> BTreeMap<(Ipv4Addr, String), Totals> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    let mut query = conn
        .prepare(
            "SELECT subscriber_ip, direction, SUM(bytes), SUM(packets) \
             FROM usage GROUP BY 1, 2",
        )
        .unwrap();
    query
        .query_map([], |row| {
            let ip: String = row.get(0)?;
            let direction: String = row.get(1)?;
            let (bytes, packets): (i64, i64) = (row.get(2)?, row.get(3)?);
            Ok((ip, direction, bytes, packets))
        })
        .unwrap()
        .map(|row| {
            let (ip, direction, bytes, packets) = row.unwrap();
            let ip = match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(IpAddr::V4(v4)) => v4,
                _ => panic!("subscriber_ip {ip:?} is not an IPv4 address"),
            };
            let totals = Totals {
                bytes: bytes.try_into().unwrap(),
                packets: packets.try_into().unwrap(),
            };
            ((ip, direction), totals)
        })
        .collect()
}

/// The acceptance test, through `mode` (`xdp` or `socket`).
fn flowtally_bills_exactly_what_was_replayed(mode: &str) {
    require_root();
    let lab = Lab::new();
    let db = lab.dir.path("ft.db");
    let mut args = vec!["--mode", mode];
    if mode == "xdp" {
        args.extend(["--iface", &lab.collector_if]);
    }
    args.extend(["--netflow", COLLECTOR, "--metrics", "127.0.0.1:0"]);
    args.extend(["--db", path_str(&db), "--subscriber-net", SUBSCRIBER_NET]);
    args.extend(["--flush-interval", "500ms"]);
    let mut flowtally = Flowtally::start(Some(&lab.collector), &args);
    if mode == "xdp" {
        assert_eq!(
            flowtally.ready.xdp,
            [(lab.collector_if.clone(), "native".to_owned())]
        );
    }

    let Exported { flows, .. } = export_synthetic_capture(&lab);
    let total = pcap::total(&flows);
    let expected: BTreeMap<(Ipv4Addr, String), Totals> = pcap::usage(&flows, pcap::SUBSCRIBER_NET)
        .into_iter()
        .map(|((ip, direction), totals)| ((ip, direction.to_owned()), totals))
        .collect();

    let addr = flowtally.metrics_addr();
    let xdp = r#"flowtally_record_bytes_total{path="xdp"}"#;
    let socket = r#"flowtally_record_bytes_total{path="socket"}"#;
    let counted = || {
        let metrics = catch_unwind(AssertUnwindSafe(|| lab.collector.enter(|| scrape(addr))))
            .unwrap_or_else(|_| panic!("cannot scrape flowtally:\n{}", flowtally.stderr()));
        (metric(&metrics, xdp), metric(&metrics, socket))
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (by_xdp, by_socket) = counted();
        if by_xdp + by_socket >= total.bytes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flowtally counted {by_xdp} (xdp) + {by_socket} (socket) of {} record bytes:\n{}",
            total.bytes,
            flowtally.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (by_xdp, by_socket) = counted();
    eprintln!("flowtally counted record bytes: xdp {by_xdp}, socket {by_socket}");
    assert_eq!(
        by_xdp + by_socket,
        total.bytes,
        "xdp {by_xdp}, socket {by_socket}"
    );
    match mode {
        "xdp" => assert!(by_xdp > 0, "the kernel parsed the exports"),
        _ => assert_eq!(by_xdp, 0),
    }

    // A clean stop writes every aggregate.
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert_same(&billed(&db), &expected, "usage in SQLite vs the pcap");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn flowtally_xdp_bills_exactly_the_bytes_softflowd_saw_replayed() {
    flowtally_bills_exactly_what_was_replayed("xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn flowtally_sockets_bill_exactly_the_bytes_softflowd_saw_replayed() {
    flowtally_bills_exactly_what_was_replayed("socket");
}
