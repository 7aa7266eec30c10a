//! Export loss found from sequence numbers, end to end: the daemon (XDP or
//! sockets) receives NetFlow v5, v9 and IPFIX from a sender namespace over
//! a veth, in three streams (one exporter, three domains):
//!
//! - **lost**: an nftables rule on the sender's way out (`numgen random mod
//!   10 0 drop`, this kernel has no netem) drops about one export in ten after the first,
//!   and counts what it drops; a last export after the rule is gone shows
//!   the tail. The loss flowtally estimates is exactly what the rule
//!   dropped (in records for v5/IPFIX, exports for v9), in `export_health`,
//!   in `flowtally_export_lost_total` and in `flowtally audit`, and
//!   `flowtally report` warns of it.
//! - **reordered**: exports shuffled within windows of four, some sent
//!   twice: no loss, the copies counted as duplicates.
//! - **restarted**: the exporter starts again (sequence from 0; v5/v9
//!   uptime back to 1 s, IPFIX a later export time): one restart, no loss.

mod support;

use std::{collections::BTreeMap, net::UdpSocket, path::Path, process::Command};

use flowtally::netflow::{
    encode::{Set, Template, export},
    layouts,
    sets::{FieldSpec, Header, IPFIX, V9},
    v5::{Record, encode as encode_v5},
};
use flowtally_common::v5;
use support::{
    BIN, NetNs, TempDir, VethLab, eventually, eventually_equal, path_str, require_root, v5gen::Rng,
};

/// Records per v5 and IPFIX export (v9 sequence numbers count exports).
const RECORDS: u32 = 10;
const LOST: u32 = 1;
const REORDERED: u32 = 2;
const RESTARTED: u32 = 3;
const TEMPLATE_ID: u16 = 300;
const UNIX_SECS: u32 = 1_700_000_000;
const UPTIME_MS: u32 = 5_000_000;

#[derive(Clone, Copy, Debug)]
enum Version {
    V5,
    V9,
    Ipfix,
}

/// One export of a stream.
#[derive(Clone, Copy, Debug)]
struct Export {
    domain: u32,
    sequence: u32,
    /// v5/v9 uptime (ms) or IPFIX export time (s).
    clock: u32,
}

impl Version {
    /// What a sequence number counts per export.
    fn units(self) -> u64 {
        match self {
            Self::V9 => 1,
            _ => u64::from(RECORDS),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::V9 => "exports",
            _ => "records",
        }
    }

    /// Export `i` (from 0) of a run of `domain` started at `clock`.
    fn nth(self, domain: u32, i: u32, clock: u32) -> Export {
        let sequence = match self {
            // softflowd-like: v9 numbers exports from 1.
            Self::V9 => i + 1,
            _ => i * RECORDS,
        };
        let clock = match self {
            Self::Ipfix => clock,
            _ => clock + i * 10,
        };
        Export {
            domain,
            sequence,
            clock,
        }
    }

    fn encode(self, e: &Export) -> Vec<u8> {
        let records: Vec<[u8; 4]> = (0..RECORDS).map(|r| [198, 18, 100, 1 + r as u8]).collect();
        match self {
            Self::V5 => {
                let header = v5::Header {
                    version: 5,
                    sys_uptime: e.clock,
                    unix_secs: UNIX_SECS,
                    flow_sequence: e.sequence,
                    engine_id: e.domain as u8,
                    ..v5::Header::default()
                };
                let records: Vec<Record> = records
                    .iter()
                    .map(|&src| Record {
                        src,
                        dst: [198, 19, 0, 1],
                        octets: 1000,
                        packets: 1,
                        last: e.clock,
                        ..Record::default()
                    })
                    .collect();
                encode_v5(&header, &records)
            }
            Self::V9 | Self::Ipfix => {
                let records = records
                    .iter()
                    .map(|src| [&src[..], &[198, 19, 0, 1], &1000u32.to_be_bytes()].concat())
                    .collect();
                templated(
                    self,
                    e,
                    vec![Set::Data {
                        id: TEMPLATE_ID,
                        records,
                    }],
                )
            }
        }
    }
}

fn templated(version: Version, e: &Export, sets: Vec<Set>) -> Vec<u8> {
    let ipfix = matches!(version, Version::Ipfix);
    let header = Header {
        version: if ipfix { IPFIX } else { V9 },
        unix_secs: if ipfix { e.clock } else { UNIX_SECS },
        sys_uptime_ms: if ipfix { 0 } else { e.clock },
        sequence: e.sequence,
        domain: e.domain,
    };
    export(&header, &sets, true)
}

fn template(version: Version, domain: u32, clock: u32) -> Vec<u8> {
    let fields = layouts::MINIMAL_V4
        .iter()
        .map(|&(ie, len)| FieldSpec::iana(ie, len))
        .collect();
    let e = Export {
        domain,
        // v9: the template export is export 0; IPFIX: no data records before.
        sequence: 0,
        clock,
    };
    templated(
        version,
        &e,
        vec![Set::Templates(vec![Template {
            id: TEMPLATE_ID,
            fields,
        }])],
    )
}

/// A stream's figures flush by flush, for failure messages.
fn flushes(db: &Path, domain: u32) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<String> = conn
        .prepare(
            "SELECT time_ms, exports, received, lost, duplicates, restarts FROM export_health
             WHERE domain = ?1 ORDER BY time_ms",
        )
        .unwrap()
        .query_map([domain], |row| {
            let n = |i| row.get::<_, i64>(i);
            Ok(format!(
                "{} {} {} {} {} {}",
                n(0)?,
                n(1)?,
                n(2)?,
                n(3)?,
                n(4)?,
                n(5)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.join("\n")
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

/// Export datagrams the daemon has taken in, on either path.
fn handled(lab: &VethLab, metrics_addr: std::net::SocketAddr) -> u64 {
    let m = lab.scrape(metrics_addr);
    let kernel = |class| {
        metric(
            &m,
            &format!(r#"flowtally_xdp_frames_total{{verdict="drop",class="{class}"}}"#),
        )
    };
    metric(&m, r#"flowtally_packets_total{path="socket"}"#)
        + kernel("v5_aggregated")
        + kernel("templated_aggregated")
}

/// The drop rule in the sender's namespace, for exports from `sport`.
fn drop_one_in_ten(ns: &NetNs, sport: u16) {
    let rules = format!(
        "table inet integrity {{\n chain out {{\n  type filter hook output priority 0;\n  \
         udp sport {sport} numgen random mod 10 0 counter drop\n }}\n}}\n"
    );
    ns.nft(&["-f", "-"], Some(&rules));
}

/// Packets the drop rule dropped.
fn dropped(ns: &NetNs) -> u64 {
    ns.nft_counter("inet", "integrity").0
}

/// Sends each payload from the sender's port `sport`, in batches that the
/// daemon is seen to take in before the next (a flooded veth ring would
/// drop exports of its own, which is not what this test measures). What
/// the drop rule took, when `rule`, is not waited for.
fn send(
    lab: &VethLab,
    metrics_addr: std::net::SocketAddr,
    sport: u16,
    payloads: &[Vec<u8>],
    rule: bool,
    taken: &mut u64,
) {
    for batch in payloads.chunks(25) {
        let dropped_before = if rule { dropped(&lab.sender) } else { 0 };
        lab.sender.enter(|| {
            let socket = UdpSocket::bind(("198.18.0.1", sport)).unwrap();
            for payload in batch {
                match socket.send_to(payload, VethLab::NETFLOW) {
                    Ok(_) => {}
                    // An output-hook drop tells the sender so.
                    Err(err) if rule && err.kind() == std::io::ErrorKind::PermissionDenied => {}
                    Err(err) => panic!("sending: {err}"),
                }
            }
        });
        let dropped_now = if rule { dropped(&lab.sender) } else { 0 };
        *taken += batch.len() as u64 - (dropped_now - dropped_before);
        eventually("the daemon to take in the batch", || {
            handled(lab, metrics_addr) >= *taken
        });
    }
}

/// Per domain: (lost, duplicates, restarts, received) summed over flushes.
fn health(db: &Path) -> BTreeMap<u32, (u64, u64, u64, u64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare(
        "SELECT domain, SUM(lost), SUM(duplicates), SUM(restarts), SUM(received)
         FROM export_health GROUP BY domain",
    )
    .unwrap()
    .query_map([], |row| {
        let n = |i| row.get::<_, i64>(i).map(|n| n as u64);
        Ok((row.get(0)?, (n(1)?, n(2)?, n(3)?, n(4)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn losses_restarts_and_reordering_are_told_apart(version: Version, mode: &str) {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut daemon = lab.start(
        mode,
        &db,
        &[
            "--subscriber-net",
            "198.18.100.0/24",
            "--flush-interval",
            "200ms",
        ],
    );
    let metrics_addr = daemon.metrics_addr();
    let mut taken = 0;
    if !matches!(version, Version::V5) {
        let templates: Vec<Vec<u8>> = [LOST, REORDERED, RESTARTED]
            .iter()
            .map(|&d| {
                template(
                    version,
                    d,
                    if matches!(version, Version::Ipfix) {
                        UNIX_SECS
                    } else {
                        UPTIME_MS
                    },
                )
            })
            .collect();
        send(&lab, metrics_addr, 40_000, &templates, false, &mut taken);
    }
    let start_clock = if matches!(version, Version::Ipfix) {
        UNIX_SECS
    } else {
        UPTIME_MS
    };

    // Lost: 400 exports, about 40 dropped; then one more without the rule.
    // The first gets through: a loss before the first export seen is not
    // known to be one.
    let first = version.encode(&version.nth(LOST, 0, start_clock));
    send(
        &lab,
        metrics_addr,
        40_000 + LOST as u16,
        &[first],
        false,
        &mut taken,
    );
    drop_one_in_ten(&lab.sender, 40_000 + LOST as u16);
    let lost: Vec<Vec<u8>> = (1..400)
        .map(|i| version.encode(&version.nth(LOST, i, start_clock)))
        .collect();
    send(
        &lab,
        metrics_addr,
        40_000 + LOST as u16,
        &lost,
        true,
        &mut taken,
    );
    let dropped_exports = dropped(&lab.sender);
    lab.sender
        .nft(&["delete", "table", "inet", "integrity"], None);
    let last = version.encode(&version.nth(LOST, 400, start_clock));
    send(
        &lab,
        metrics_addr,
        40_000 + LOST as u16,
        &[last],
        false,
        &mut taken,
    );
    assert!(
        (20..=70).contains(&dropped_exports),
        "numgen random mod 10 dropped {dropped_exports} of 399"
    );

    // Reordered and duplicated.
    let mut rng = Rng(0x15 + mode.len() as u64);
    let mut order: Vec<u32> = (0..200).collect();
    for window in order.chunks_mut(4) {
        for i in (1..window.len()).rev() {
            window.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let copies: Vec<u32> = (0..10).map(|_| rng.below(200) as u32).collect();
    for (n, copy) in copies.iter().enumerate() {
        order.insert(20 * n + 7, *copy);
    }
    let reordered: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| version.encode(&version.nth(REORDERED, i, start_clock)))
        .collect();
    send(
        &lab,
        metrics_addr,
        40_000 + REORDERED as u16,
        &reordered,
        false,
        &mut taken,
    );

    // Restarted: a run, then sequence numbers from 0 again.
    let before: Vec<Vec<u8>> = (0..60)
        .map(|i| version.encode(&version.nth(RESTARTED, i, start_clock)))
        .collect();
    send(
        &lab,
        metrics_addr,
        40_000 + RESTARTED as u16,
        &before,
        false,
        &mut taken,
    );
    let again_clock = if matches!(version, Version::Ipfix) {
        UNIX_SECS + 30
    } else {
        1_000
    };
    let mut after = Vec::new();
    if !matches!(version, Version::V5) {
        // A restarted exporter sends its templates again first.
        after.push(template(version, RESTARTED, again_clock));
    }
    after.extend((0..20).map(|i| version.encode(&version.nth(RESTARTED, i, again_clock))));
    send(
        &lab,
        metrics_addr,
        40_000 + RESTARTED as u16,
        &after,
        false,
        &mut taken,
    );

    let expected_lost = dropped_exports * version.units();
    let lost_metric = format!(
        r#"flowtally_export_lost_total{{exporter="198.18.0.1",unit="{}"}}"#,
        version.unit()
    );
    eventually_equal(
        "the loss to be counted once the gaps are held long enough",
        expected_lost,
        || metric(&lab.scrape(metrics_addr), &lost_metric),
    );
    let metrics = lab.scrape(metrics_addr);
    assert_eq!(
        metric(
            &metrics,
            r#"flowtally_exporter_restarts_total{exporter="198.18.0.1"}"#
        ),
        1
    );
    // The API's exporter list says the same.
    let api = lab
        .collector
        .enter(|| support::http_get(metrics_addr, "/api/v1/exporters", &[]).json());
    let exporter = api["exporters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["exporter"] == "198.18.0.1")
        .unwrap_or_else(|| panic!("{api}"));
    assert_eq!(
        exporter["estimated_loss"][version.unit()],
        expected_lost,
        "{api}"
    );
    assert_eq!(exporter["restarts"], 1, "{api}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "{}", daemon.stderr());

    let health = health(&db);
    let (lost, duplicates, restarts, received) = health[&LOST];
    assert_eq!(
        (lost, duplicates, restarts),
        (expected_lost, 0, 0),
        "{health:?}"
    );
    // v9 counts the template export too.
    let templates = u64::from(matches!(version, Version::V9));
    assert_eq!(
        received,
        (401 - dropped_exports) * version.units() + templates
    );
    let (lost, duplicates, restarts, received) = health[&REORDERED];
    assert_eq!(
        (lost, restarts),
        (0, 0),
        "reordering is no loss: {health:?}"
    );
    assert_eq!(
        (duplicates, received),
        (
            copies.len() as u64 * version.units(),
            200 * version.units() + templates
        ),
        "copies {copies:?}: {}",
        flushes(&db, REORDERED)
    );
    let (lost, _, restarts, _) = health[&RESTARTED];
    assert_eq!((lost, restarts), (0, 1), "a restart is no loss: {health:?}");

    // The audit tells it, and exits 0; the report warns of it.
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
    let line = audit["exporters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == LOST)
        .unwrap();
    assert_eq!(line["lost"], expected_lost);
    assert_eq!(line["unit"], version.unit());
    let out = Command::new(BIN)
        .args(["report", "--db", path_str(&db)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "an estimated {expected_lost} {} were lost",
            version.unit()
        )),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn v5_loss_restarts_and_reordering_through_xdp() {
    losses_restarts_and_reordering_are_told_apart(Version::V5, "xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn v5_loss_restarts_and_reordering_through_sockets() {
    losses_restarts_and_reordering_are_told_apart(Version::V5, "socket");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn v9_loss_restarts_and_reordering_through_xdp() {
    losses_restarts_and_reordering_are_told_apart(Version::V9, "xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn v9_loss_restarts_and_reordering_through_sockets() {
    losses_restarts_and_reordering_are_told_apart(Version::V9, "socket");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn ipfix_loss_restarts_and_reordering_through_xdp() {
    losses_restarts_and_reordering_are_told_apart(Version::Ipfix, "xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn ipfix_loss_restarts_and_reordering_through_sockets() {
    losses_restarts_and_reordering_are_told_apart(Version::Ipfix, "socket");
}
