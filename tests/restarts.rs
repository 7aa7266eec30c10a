//! Stopping and restarting without loss: SIGTERM writes everything the
//! daemon holds (kernel maps, the overflow ring, rows waiting for a late
//! session, the ClickHouse spool); SIGKILL loses at most what arrived since
//! the last flush, and the next start says so (a gap in `runs`, a log line,
//! a metric) and resumes the rest (waiting rows, sessions).

mod support;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
};

use flowtally::netflow::v5::{Record, encode};
use flowtally_common::v5::Header;
use support::{
    RADIUS_SECRET, TempDir, VethLab, clickhouse::ClickHouse, eventually, path_str, radclient,
    require_root, scrape, start_on_loopback, usage_by_user,
};

const SECRET: &str = RADIUS_SECRET;
const T0: u32 = 1_700_000_000;

/// One v5 export: `hosts` (last octets in 198.18.100.0/24) each sent
/// `octets` bytes to a distinct peer at T0 + 100 s.
fn export(hosts: &[u8], octets: u32) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 1_000_000,
        unix_secs: T0 + 100,
        ..Header::default()
    };
    let records: Vec<Record> = hosts
        .iter()
        .map(|&host| Record {
            src: [198, 18, 100, host],
            dst: [198, 19, host, 1],
            packets: 1,
            octets,
            first: 1_000_000,
            last: 1_000_000,
            protocol: 17,
            ..Record::default()
        })
        .collect();
    encode(&header, &records)
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

fn start_session(radius: SocketAddr, user: &str, host: u8) {
    let attributes = format!(
        "Acct-Status-Type = Start, User-Name = {user}, Acct-Session-Id = {user}-1, \
         Framed-IP-Address = 198.18.100.{host}, NAS-IP-Address = 198.18.0.1, \
         Event-Timestamp = {}",
        T0 + 50
    );
    assert!(radclient(radius, SECRET, &attributes), "{user}'s Start");
}

/// XDP with a 4-entry map (the rest goes through the overflow ring), rows
/// nobody owns waiting for an hour, no flush before the signal, and a
/// ClickHouse: after SIGTERM every byte is in SQLite and in ClickHouse.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn sigterm_writes_maps_ring_backlog_and_clickhouse_before_exiting() {
    require_root();
    let lab = VethLab::new();
    let ch = ClickHouse::start_in(&lab.collector, [127, 0, 0, 1]);
    let tmp = TempDir::new();
    let (db, config) = (tmp.path("ft.db"), tmp.path("ft.toml"));
    std::fs::write(&config, "[maps]\naggregate_entries = 4\n").unwrap();
    let mut flowtally = lab.start(
        "xdp",
        &db,
        &[
            "--config",
            path_str(&config),
            "--subscriber-net",
            "198.18.100.0/24",
            "--flush-interval",
            "1h",
            "--late-window",
            "1h",
            "--clickhouse",
            &ch.url(),
        ],
    );
    let metrics = flowtally.metrics_addr();
    let hosts: Vec<u8> = (1..=30).collect();
    let exports = 20;
    let export = export(&hosts, 1000);
    lab.send((0..exports).map(|_| &export[..]));
    let xdp_packets = "flowtally_packets_total{path=\"xdp\"}";
    eventually("the exports aggregated in the kernel", || {
        metric(&lab.scrape(metrics), xdp_packets) == exports
    });
    assert!(
        usage_by_user(&db).is_empty(),
        "nothing flushed before the signal"
    );
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());

    let input = exports * hosts.len() as u64 * 1000;
    assert_eq!(usage_by_user(&db), BTreeMap::from([(None, input)]));
    let stored = ch.query("SELECT sum(bytes) FROM flowtally.usage");
    assert_eq!(stored.trim(), input.to_string(), "ClickHouse got it all");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let clean: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE stopped_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(clean, 1, "the run recorded its clean stop");
}

/// SIGKILL after a flush: what was flushed stays, the rows that were
/// waiting for a session and the sessions survive, and the next start
/// reports the gap.
#[test]
fn sigkill_loses_at_most_the_last_interval_and_the_next_start_says_so() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    // The sessions lie in 2023: a long assumed interim interval keeps the
    // silence check from closing them during the test.
    let config = tmp.path("ft.toml");
    std::fs::write(&config, "[radius]\ndefault_interim = \"30years\"\n").unwrap();
    let args = [
        "--config",
        path_str(&config),
        "--subscriber-net",
        "198.18.100.0/24",
        "--flush-interval",
        "100ms",
        "--late-window",
        "1h",
    ];
    let mut first = start_on_loopback(&db, &args);
    start_session(first.ready.radius.unwrap(), "alice", 1);
    let exporter = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Host 1 is alice's; hosts 2 and 3 belong to nobody yet.
    exporter
        .send_to(&export(&[1, 2, 3], 500), first.ready.netflow[0])
        .unwrap();
    let metrics = first.metrics_addr();
    eventually("alice's row written and two waiting", || {
        let now = scrape(metrics);
        metric(&now, "flowtally_attributed_bytes_total") == 500
            && metric(&now, "flowtally_association_backlog") == 2
    });
    // The backlog persists with the flush that made it; one more flush
    // makes sure that flush committed.
    let flushes = metric(&scrape(metrics), "flowtally_drain_duration_seconds_count");
    eventually("another flush", || {
        metric(&scrape(metrics), "flowtally_drain_duration_seconds_count") > flushes
    });
    first.signal(libc::SIGKILL);
    first.wait();

    let mut second = start_on_loopback(&db, &args);
    let metrics = second.metrics_addr();
    let now = scrape(metrics);
    assert_eq!(metric(&now, "flowtally_unclean_stops_total"), 1);
    assert_eq!(metric(&now, "flowtally_sessions_open"), 1, "alice survived");
    eventually("the resumed backlog", || {
        metric(&scrape(metrics), "flowtally_association_backlog") == 2
    });
    assert!(
        second
            .stderr()
            .contains("the previous run stopped without its final flush"),
        "{}",
        second.stderr()
    );
    // Bob's late Start claims host 2's waiting row after the restart.
    start_session(second.ready.radius.unwrap(), "bob", 2);
    eventually("bob's row attributed", || {
        metric(&scrape(metrics), "flowtally_attributed_bytes_total") == 500
    });
    second.signal(libc::SIGTERM);
    assert!(second.wait().success(), "{}", second.stderr());

    assert_eq!(
        usage_by_user(&db),
        BTreeMap::from([
            (None, 500),
            (Some("alice".to_owned()), 500),
            (Some("bob".to_owned()), 500),
        ]),
        "nothing flushed was lost, nothing counted twice"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let gaps: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE gap_to_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gaps, 1);
    let report = std::process::Command::new(support::BIN)
        .args(["report", "--db", path_str(&db)])
        .output()
        .unwrap();
    assert!(report.status.success());
    let warning = String::from_utf8(report.stderr).unwrap();
    assert!(
        warning.contains("was killed or crashed between"),
        "{warning}"
    );
    // A clean stop leaves no gap for the next start.
    let third = start_on_loopback(&db, &args);
    assert_eq!(
        metric(
            &scrape(third.metrics_addr()),
            "flowtally_unclean_stops_total"
        ),
        0
    );
}
