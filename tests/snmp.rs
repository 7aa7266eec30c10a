//! Flow bytes against interface counters, with real peers: traffic
//! replayed live (tcpreplay) on a veth in the probe namespace, softflowd
//! exporting it from that veth, a real net-snmp `snmpd` in the same
//! namespace serving the veth's IF-MIB counters, and flowtally polling them
//! (SNMPv2c, and SNMPv3 with authentication and privacy) while it bills the
//! flows. `flowtally audit` then compares the interface's octets with the
//! flow bytes (plus the 14-byte Ethernet header per packet that interface
//! counters include): the ratio is 1.00. With one export in ten dropped on
//! the way to the collector (an nftables egress rule, which counts what it
//! drops), the ratio falls by what the sequence numbers say was lost.
//!
//! ```text
//!  replay ns                probe ns                                collector ns
//!  tcpreplay -> fta ======= ftb  softflowd -i IFINDEX:ftb
//!  (+ fillers)                   snmpd udp:198.18.0.1:161 (ftb's counters)
//!                                fta 198.18.0.1 ====[nft drop]==== ftb 198.18.0.2
//!                                                                  flowtally (polls snmpd)
//! ```

#[path = "support/pcap.rs"]
mod pcap;
#[path = "support/softflowd_lab.rs"]
mod softflowd_lab;
mod support;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use softflowd_lab::{COLLECTOR, Lab, Softflowd, Version};
use support::{
    BIN, Flowtally, NetNs, eventually, frames::udp_v4_frame, path_str, require_root, send_raw_frame,
};

const COMMUNITY: &str = "flowtally-test";
const V3_USER: &str = "ftuser";
const AUTH_PASSWORD: &str = "ft-auth-secret";
const PRIVACY_PASSWORD: &str = "ft-privacy-secret";
/// One-packet flows sent besides the replayed capture: enough records for
/// dropping one export in ten to be measurable, and IP packets to push
/// softflowd's capture buffer (see `Softflowd::drain`).
const FILLER_FLOWS: u16 = 1200;
const FILLER_PAYLOAD: usize = 958;

/// `snmpd` in the foreground in `ns`, answering on 198.18.0.1:161; killed
/// on drop.
struct Snmpd(Child);

impl Snmpd {
    fn start(ns: &NetNs, dir: &Path) -> Self {
        let conf = dir.join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "agentAddress udp:198.18.0.1:161\n\
                 rocommunity {COMMUNITY} default\n\
                 createUser {V3_USER} SHA \"{AUTH_PASSWORD}\" AES \"{PRIVACY_PASSWORD}\"\n\
                 rouser {V3_USER} priv\n"
            ),
        )
        .unwrap();
        let state = dir.join("snmp-state");
        std::fs::create_dir_all(&state).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "snmpd", "-f", "-Lf"])
            .arg(dir.join("snmpd.log"))
            .args(["-C", "-c", path_str(&conf), "-p"])
            .arg(dir.join("snmpd.pid"))
            .env("SNMP_PERSISTENT_DIR", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("snmpd starts (Debian package snmpd)");
        Self(child)
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ifindex(ns: &NetNs, iface: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", "dev", iface]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// `snmpget` from the collector's namespace answers for the interface.
fn agent_answers(ns: &NetNs, ifindex: u32) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "snmpget", "-v2c", "-c", COMMUNITY,
        ])
        .args(["-t", "1", "-r", "0", "198.18.0.1"])
        .arg(format!("1.3.6.1.2.1.31.1.1.1.6.{ifindex}"))
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Counter64")
        })
}

fn query_u64(db: &Path, sql: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |row| row.get::<_, Option<i64>>(0))
        .unwrap()
        .unwrap_or(0) as u64
}

fn filler(port: u16) -> Vec<u8> {
    udp_v4_frame([198, 18, 100, 10], port, &[0; FILLER_PAYLOAD])
}

/// What crossed the probe's capture interface, from its own counters
/// (what the veth dropped, if a burst overflowed its peer's backlog, never
/// reached softflowd or the interface counters).
struct Traffic {
    /// rx packets and bytes of the interface before any traffic.
    base: (u64, u64),
}

impl Traffic {
    fn new(lab: &Lab) -> Self {
        Self { base: rx(lab) }
    }

    /// Packets and frame bytes received since the start.
    fn received(&self, lab: &Lab) -> (u64, u64) {
        let now = rx(lab);
        (now.0 - self.base.0, now.1 - self.base.1)
    }

    /// Sends frames in bursts the veth takes whole.
    fn send(&self, lab: &Lab, frames: &[Vec<u8>]) {
        for burst in frames.chunks(100) {
            let before = rx(lab).0;
            lab.replay.enter(|| {
                for frame in burst {
                    send_raw_frame(&lab.wire, frame);
                }
            });
            eventually("the burst to arrive", || {
                rx(lab).0 >= before + burst.len() as u64
            });
        }
    }

    /// Pushes non-IP frames *out* of the interface (softflowd's capture
    /// sees both directions; see `Softflowd::drain` for why pushing is
    /// needed) until softflowd has processed every packet it received.
    /// They count in its out-octets, which the audit compares with flows
    /// that left by it (none here), not in its in-octets.
    fn drain(&self, lab: &Lab, softflowd: &Softflowd) {
        let mut push = Vec::with_capacity(1514);
        push.extend_from_slice(&pcap::DST_MAC);
        push.extend_from_slice(&pcap::SRC_MAC);
        push.extend_from_slice(&0x88b5_u16.to_be_bytes());
        push.resize(1514, 0);
        eventually("softflowd to process every packet", || {
            let (received, _) = self.received(lab);
            let processed = softflowd.statistics().processed;
            if processed < received {
                lab.probe.enter(|| {
                    for _ in 0..32 {
                        send_raw_frame(&lab.tap, &push);
                    }
                });
            }
            processed == received
        });
    }
}

/// The capture interface's rx packets and bytes.
fn rx(lab: &Lab) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_{what}", lab.tap);
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.probe.name, "cat", &path])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (read("packets"), read("bytes"))
}

struct Run {
    /// What the audit says of the interface and of the exporter.
    ratio: f64,
    interface_octets: u64,
    lost_records: u64,
    received_records: u64,
    /// Frame bytes that crossed the interface, and records softflowd sent.
    frame_bytes: u64,
    sent_records: u64,
    /// Records the drop rule took, from its own counter.
    dropped_records: u64,
}

/// Replays the capture and the fillers through softflowd (v5) while
/// flowtally polls `snmpd`; then audits.
fn replay_and_audit(mode: &str, snmp: &str, drop: bool) -> Run {
    require_root();
    let lab = Lab::new();
    let tap = ifindex(&lab.probe, &lab.tap);
    let _snmpd = Snmpd::start(&lab.probe, &lab.dir.0);
    eventually("snmpd to answer", || agent_answers(&lab.collector, tap));

    let db = lab.dir.path("ft.db");
    let config = lab.dir.path("flowtally.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{collector_if}\"]\nmode = \"{mode}\"\nnetflow = [\"{COLLECTOR}\"]\n\
             metrics = \"127.0.0.1:0\"\ndb = \"{db}\"\nflush_interval = \"200ms\"\n\
             subscriber_networks = [\"198.18.100.0/24\"]\n\
             [snmp]\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             [[snmp.agents]]\nexporter = \"198.18.0.1\"\ninterfaces = [{tap}]\n{snmp}",
            collector_if = lab.collector_if,
            db = path_str(&db),
        ),
    )
    .unwrap();
    let mut daemon = Flowtally::start(Some(&lab.collector), &["--config", path_str(&config)]);
    let polls = |db: &Path| query_u64(db, "SELECT COUNT(*) FROM interface_counters");
    let started = std::time::Instant::now();
    while polls(&db) == 0 {
        assert!(
            started.elapsed() < support::PATIENCE,
            "no first poll before any traffic: {}",
            daemon.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let softflowd = Softflowd::start(
        &lab.probe,
        &format!("{tap}:{}", lab.tap),
        Version::V5,
        &lab.dir,
    );
    let traffic = Traffic::new(&lab);
    if drop {
        // A first export gets through, so that the stream is known before
        // anything is dropped: loss before an exporter's first export seen
        // cannot be told from exports sent before flowtally listened.
        traffic.send(&lab, &[filler(59_999)]);
        traffic.drain(&lab, &softflowd);
        softflowd.expire_all();
        let received = |db: &Path| query_u64(db, "SELECT SUM(records) FROM export_health");
        eventually("the first export to be written", || received(&db) == 1);
        // Every tenth export from the first on, not a random tenth: over
        // ~40 exports a random rule dropped none about once in a hundred
        // runs, and the test must see a loss.
        let rules = format!(
            "table netdev integrity {{\n chain out {{\n  type filter hook egress device \"{}\" \
                 priority 0;\n  udp dport 2055 numgen inc mod 10 0 counter drop\n }}\n}}\n",
            lab.export_if
        );
        lab.probe.nft(&["-f", "-"], Some(&rules));
    }
    // With drops, flows of one size only: then what share of the records
    // was lost is what share of the bytes was (a capture's big flows
    // would make that a matter of which exports were dropped).
    if !drop {
        let capture = pcap::synthetic_traffic(Version::V5.mix());
        let file = lab.dir.path("capture.pcap");
        pcap::write_pcap(&file, &capture).unwrap();
        softflowd_lab::replay(&lab.replay, &lab.wire, &file, capture.len());
    }
    // One-packet flows from a subscriber; then more packets of one last
    // flow until softflowd has processed all.
    let fillers: Vec<Vec<u8>> = (0..FILLER_FLOWS).map(|port| filler(1000 + port)).collect();
    traffic.send(&lab, &fillers);
    traffic.drain(&lab, &softflowd);
    softflowd.expire_all();
    let (dropped_packets, dropped_bytes) = if drop {
        let counted = lab.probe.nft_counter("netdev", "integrity");
        lab.probe
            .nft(&["delete", "table", "netdev", "integrity"], None);
        // One more export, let through, shows a gap at the tail.
        traffic.send(&lab, &[filler(60_000)]);
        traffic.drain(&lab, &softflowd);
        softflowd.expire_all();
        counted
    } else {
        (0, 0)
    };
    let sent_records = softflowd.statistics().records;
    let (_, frame_bytes) = traffic.received(&lab);
    // v5 datagram: Ethernet 14, IPv4 20, UDP 8, header 24, records 48 each.
    let dropped_records = (dropped_bytes - dropped_packets * (14 + 20 + 8 + 24)) / 48;
    let received = |db: &Path| query_u64(db, "SELECT SUM(records) FROM export_health");
    eventually("flowtally to write every record that arrived", || {
        received(&db) + dropped_records >= sent_records
    });
    eventually("the interface counters to show all traffic", || {
        let last_in = query_u64(
            &db,
            "SELECT in_octets FROM interface_counters ORDER BY time_ms DESC LIMIT 1",
        );
        let first_in = query_u64(
            &db,
            "SELECT in_octets FROM interface_counters ORDER BY time_ms LIMIT 1",
        );
        last_in - first_in >= frame_bytes
    });
    let flushed = polls(&db);
    eventually("a poll after the last flush of flows", || {
        polls(&db) > flushed
    });
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "{}", daemon.stderr());

    let out = Command::new(BIN)
        .args(["audit", "--db", path_str(&db), "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let interface = audit["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| line["direction"] == "in")
        .unwrap();
    assert_eq!(interface["ifindex"], tap, "{audit}");
    assert_eq!(interface["source"], "snmp");
    let exporter = &audit["exporters"][0];
    eprintln!("{mode} {snmp:?} drop {drop}: {audit}");
    Run {
        ratio: interface["ratio"].as_f64().unwrap(),
        interface_octets: interface["interface_octets"].as_u64().unwrap(),
        lost_records: exporter["lost"].as_u64().unwrap(),
        received_records: exporter["received"].as_u64().unwrap(),
        frame_bytes,
        sent_records,
        dropped_records,
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn snmpv2c_interface_octets_match_the_flow_bytes_through_xdp() {
    let run = replay_and_audit(
        "xdp",
        &format!("version = \"2c\"\ncommunity = \"{COMMUNITY}\"\n"),
        false,
    );
    assert!(run.interface_octets >= run.frame_bytes);
    assert!((run.ratio - 1.0).abs() <= 0.005, "ratio {}", run.ratio);
    assert_eq!(
        (run.lost_records, run.received_records),
        (0, run.sent_records)
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn with_exports_dropped_the_ratio_and_the_loss_estimate_agree_over_snmpv3() {
    let run = replay_and_audit(
        "socket",
        &format!(
            "version = \"3\"\nuser = \"{V3_USER}\"\nauth_protocol = \"sha1\"\n\
             auth_password = \"{AUTH_PASSWORD}\"\nprivacy_protocol = \"aes128\"\n\
             privacy_password = \"{PRIVACY_PASSWORD}\"\n"
        ),
        true,
    );
    assert!(run.dropped_records > 0, "the rule dropped nothing");
    assert_eq!(
        run.lost_records, run.dropped_records,
        "the estimate is what was dropped"
    );
    assert_eq!(run.received_records + run.lost_records, run.sent_records);
    let lost_share = run.lost_records as f64 / run.sent_records as f64;
    assert!(
        (run.ratio - (1.0 - lost_share)).abs() <= 0.02,
        "ratio {} against {:.4} of the records received",
        run.ratio,
        1.0 - lost_share
    );
}
