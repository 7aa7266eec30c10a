//! The softflowd lab, shared by the tests that need a real exporter:
//! traffic replayed live (tcpreplay, real clock) on a veth in a test
//! namespace, captured by softflowd (the Debian package), which exports it
//! as NetFlow v5, v9 or IPFIX to the collector's namespace.
//!
//! ```text
//!  replay ns               probe ns                         collector ns
//!  tcpreplay -> fta ====== ftb  softflowd -n 198.18.0.2:2055
//!              198.18.1.1/30    fta 198.18.0.1/30 ======== ftb 198.18.0.2/30
//!                                                          flowtally (XDP on ftb)
//! ```
//!
//! Included with `#[path = "support/softflowd_lab.rs"] mod softflowd_lab;`
//! next to `#[path = "support/pcap.rs"] mod pcap;` and `mod support;` (it
//! uses both from the crate root). What softflowd exports, and how, is
//! documented in `tests/softflowd.rs`, whose harness tests prove it.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    pcap::{self, FlowKey, Mix, Packet, Totals},
    support::{self, NetNs, TempDir, eventually, path_str, send_raw_frame, veth_pair},
};

/// Where softflowd exports to: the collector's end of the export link.
pub const COLLECTOR: &str = "198.18.0.2:2055";

/// The export protocol softflowd is run with (`-v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V5,
    V9,
    Ipfix,
}

/// How softflowd is made to export what it tracked at the end of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `softflowctl expire-all`: v9/IPFIX templates lead the first datagram.
    ExpireAll,
    /// `softflowctl shutdown`: softflowd exports everything and exits; no
    /// template is re-sent. Only as the last phase.
    Shutdown,
}

impl Version {
    pub fn number(self) -> u16 {
        match self {
            Self::V5 => 5,
            Self::V9 => 9,
            Self::Ipfix => 10,
        }
    }

    /// v5 cannot carry IPv6 (and softflowd does not track it for v5).
    pub fn mix(self) -> Mix {
        match self {
            Self::V5 => Mix::Ipv4,
            Self::V9 | Self::Ipfix => Mix::DualStack,
        }
    }

    /// One phase per entry, each replaying an equal share of the capture.
    /// v9/IPFIX: templates in the first, data-only datagrams in the second
    /// (see the module documentation).
    pub fn phases(self) -> &'static [End] {
        match self {
            Self::V5 => &[End::ExpireAll],
            Self::V9 | Self::Ipfix => &[End::ExpireAll, End::Shutdown],
        }
    }
}

/// Three namespaces: tcpreplay sends out of `wire` (in `replay`), softflowd
/// captures on `tap` (in `probe`) and exports over a second veth pair to
/// `collector_if` (in `collector`).
pub struct Lab {
    pub replay: NetNs,
    pub probe: NetNs,
    pub collector: NetNs,
    pub wire: String,
    pub tap: String,
    /// The probe's end of the export link, and the collector's.
    pub export_if: String,
    pub collector_if: String,
    pub dir: TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let (replay, probe, collector) = (NetNs::new(), NetNs::new(), NetNs::new());
        // No IPv6 on the wire: the kernel's own IPv6 packets (DAD, router
        // solicitations, MLD) would be flows for a v9/IPFIX softflowd. Set
        // before the veths exist, which take the namespace's default.
        for ns in [&replay, &probe] {
            support::sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns.name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
        }
        // The wire's addresses are never used: the replayed frames carry
        // MACs of no interface, so the probe's stack drops them and only the
        // promiscuous capture sees them.
        let (wire, tap) = veth_pair(&replay, "198.18.1.1/30", &probe, "198.18.1.2/30");
        let (export_if, collector_if) =
            veth_pair(&probe, "198.18.0.1/30", &collector, "198.18.0.2/30");
        Self {
            replay,
            probe,
            collector,
            wire,
            tap,
            export_if,
            collector_if,
            dir: TempDir::new(),
        }
    }
}

/// `softflowd` capturing on one interface, in the foreground; killed on drop.
pub struct Softflowd {
    child: Child,
    ctl: PathBuf,
    log: PathBuf,
}

/// The counters of `softflowctl statistics` that the harness relies on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Flows being tracked.
    pub active: u64,
    /// IP packets that went through flow tracking.
    pub processed: u64,
    pub non_ip: u64,
    /// NetFlow records sent, and the datagrams that carried them.
    pub records: u64,
    pub datagrams: u64,
    pub failures: u64,
}

impl Softflowd {
    /// Captures on `iface` (`ifindex:name` makes softflowd report that
    /// ifIndex as the records' input and output interface).
    pub fn start(ns: &NetNs, iface: &str, version: Version, dir: &TempDir) -> Self {
        let (ctl, log) = (dir.path("softflowd.ctl"), dir.path("softflowd.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "softflowd", "-d"])
            .args(["-v", &version.number().to_string()])
            .args(["-i", iface, "-n", COLLECTOR])
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_ctl(&self, command: &str) -> Option<String> {
        let out = Command::new("softflowctl")
            .args(["-c", path_str(&self.ctl), command])
            .output()
            .expect("softflowctl runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn ctl(&self, command: &str) -> String {
        self.try_ctl(command)
            .unwrap_or_else(|| panic!("softflowctl {command} failed: {}", self.log()))
    }

    pub fn statistics(&self) -> Statistics {
        let text = self.ctl("statistics");
        // "Number of active flows: 26", "Packets processed: 360", "Ignored
        // packets: 5 (5 non-IP, 0 too short)", "Flows exported: 52 (52
        // records) in 2 packets (0 failures)"
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
            active: numbers("Number of active flows:")[0],
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
    pub fn drain(&self, lab: &Lab, packets: u64) {
        self.drain_through(&lab.replay, &lab.wire, packets);
    }

    /// [`Softflowd::drain`], the filler frames sent out of `iface` in `ns`,
    /// which must reach the interface softflowd captures on.
    pub fn drain_through(&self, ns: &NetNs, iface: &str, packets: u64) {
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
            ns.enter(|| {
                for _ in 0..32 {
                    send_raw_frame(iface, &filler);
                }
            });
            false
        });
    }

    /// Exports every flow now; returns how many (bidirectional) flows.
    pub fn expire_all(&self) -> u64 {
        // "softflowd[1234]: Expired 26 flows."
        let reply = self.ctl("expire-all");
        reply
            .split_whitespace()
            .skip_while(|word| *word != "Expired")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply: {reply}"))
    }

    /// Stops softflowd gracefully: it exports every flow, then exits. Its
    /// exit status is no use (1.1.0 exits 1 after a graceful shutdown).
    pub fn shutdown(&mut self) {
        self.ctl("shutdown");
        eventually("softflowd to export everything and exit", || {
            self.child.try_wait().unwrap().is_some()
        });
    }
}

impl Drop for Softflowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replays `file` out of `iface` at the speed it was captured.
pub fn replay(ns: &NetNs, iface: &str, file: &Path, packets: usize) {
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

/// One replay of a share of the capture, and how softflowd was made to
/// export it.
pub struct Phase {
    /// The pcap file replayed, and its packets.
    pub file: PathBuf,
    pub packets: Vec<Packet>,
    /// What the exports of this phase must describe, from the pcap file
    /// that was replayed.
    pub flows: BTreeMap<FlowKey, Totals>,
    pub end: End,
}

/// Replays the synthetic capture for `version` live through softflowd,
/// which captures on the probe's end of the wire and exports to
/// [`COLLECTOR`], in [`Version::phases`]; calls `exported` once softflowd
/// has sent every flow of a phase, before the next phase starts.
pub fn export_synthetic_capture(
    lab: &Lab,
    version: Version,
    mut exported: impl FnMut(&Phase),
) -> Vec<Phase> {
    let capture = pcap::synthetic_traffic(version.mix());
    let ends = version.phases();
    assert!(!ends[..ends.len() - 1].contains(&End::Shutdown));
    let share = capture.len().div_ceil(ends.len());
    let phases: Vec<Phase> = capture
        .chunks(share)
        .zip(ends)
        .enumerate()
        .map(|(i, (packets, &end))| {
            let file = lab.dir.path(&format!("phase{i}.pcap"));
            pcap::write_pcap(&file, packets).unwrap();
            let packets = pcap::read_pcap(&file).unwrap();
            let flows = pcap::flows(&packets);
            Phase {
                file,
                packets,
                flows,
                end,
            }
        })
        .collect();

    let mut softflowd = Softflowd::start(&lab.probe, &lab.tap, version, &lab.dir);
    let (mut processed, mut records) = (0, 0);
    for (i, phase) in phases.iter().enumerate() {
        let packets = &phase.packets;
        let started = Instant::now();
        replay(&lab.replay, &lab.wire, &phase.file, packets.len());
        let took = started.elapsed();
        let span = Duration::from_micros(packets[packets.len() - 1].ts_us - packets[0].ts_us);
        assert!(
            took >= span.saturating_sub(Duration::from_millis(100)),
            "a real-clock replay of {span:?} took {took:?}"
        );
        processed += packets.len() as u64;
        softflowd.drain(lab, processed);
        let mut bidirectional: Vec<_> = phase
            .flows
            .keys()
            .map(|k| {
                let (a, b) = ((k.src, k.src_port), (k.dst, k.dst_port));
                (a.min(b), a.max(b), k.protocol)
            })
            .collect();
        bidirectional.sort();
        bidirectional.dedup();
        let tracked = softflowd.ctl("dump-flows");
        let before = softflowd.statistics();
        assert_eq!(
            before.active,
            bidirectional.len() as u64,
            "softflowd tracked other flows than the pcap's:\n{tracked}"
        );
        records += phase.flows.len() as u64;
        let total = pcap::total(&phase.flows);
        eprintln!(
            "phase {i}: replayed {} packets ({} octets as softflowd counts them, {} flows) \
             in {took:?}; softflowd before {:?}: {before:?}",
            packets.len(),
            total.bytes,
            phase.flows.len(),
            phase.end,
        );
        match phase.end {
            End::ExpireAll => {
                assert_eq!(softflowd.expire_all(), bidirectional.len() as u64);
                let stats = softflowd.statistics();
                assert_eq!((stats.records, stats.failures), (records, 0), "{stats:?}");
            }
            End::Shutdown => softflowd.shutdown(),
        }
        exported(phase);
    }
    // Dropping softflowd kills it if it still runs: everything is sent.
    phases
}

/// Sums the flows of all phases.
pub fn merged(phases: &[Phase]) -> BTreeMap<FlowKey, Totals> {
    let mut all = BTreeMap::<FlowKey, Totals>::new();
    for (key, totals) in phases.iter().flat_map(|phase| &phase.flows) {
        all.entry(*key)
            .or_default()
            .add(totals.bytes, totals.packets);
    }
    all
}
