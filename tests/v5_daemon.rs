//! The running daemon end to end: NetFlow v5 exports sent over a veth to
//! flowtally (XDP in native mode, or sockets only) while it drains every
//! 100 ms; after SIGTERM, the `usage` table holds exactly the bytes sent.

mod support;

use std::collections::BTreeMap;

use flowtally_common::agg::Direction;
use support::{
    TempDir, VethLab, eventually, require_root,
    v5gen::{Export, SUBSCRIBERS, expected_bytes, exports},
};

/// Exports go out in batches, each waited for on `/metrics`: a veth ring
/// drops what floods it, and a lost datagram is not what this test is about.
const BATCH: usize = 50;
const DRAINS: &str = "flowtally_drain_duration_seconds_count";

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

fn usage_bytes(db: &std::path::Path) -> (BTreeMap<Direction, u64>, u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut bytes = BTreeMap::new();
    let mut query = conn
        .prepare("SELECT direction, SUM(bytes) FROM usage GROUP BY direction")
        .unwrap();
    let rows = query
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .unwrap();
    for row in rows {
        let (dir, sum) = row.unwrap();
        let dir = match dir.as_str() {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => Direction::Transit,
        };
        bytes.insert(dir, sum as u64);
    }
    let unattributed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM usage WHERE user_name IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (bytes, unattributed as u64)
}

fn every_exported_byte_lands_in_usage(mode: &str, path: &str) {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut flowtally = lab.start(
        mode,
        &db,
        &["--subscriber-net", SUBSCRIBERS, "--flush-interval", "100ms"],
    );
    let metrics = flowtally.metrics_addr();
    let exports = exports(400, 0xfeed);
    let packets = format!("flowtally_packets_total{{path=\"{path}\"}}");
    let records = format!("flowtally_records_total{{path=\"{path}\"}}");
    for (batch, chunk) in exports.chunks(BATCH).enumerate() {
        let bytes: Vec<Vec<u8>> = chunk.iter().map(Export::bytes).collect();
        lab.send(bytes.iter().map(Vec::as_slice));
        let sent = (batch * BATCH + chunk.len()) as u64;
        let now = || lab.scrape(metrics);
        eventually("a batch to be counted", || metric(&now(), &packets) >= sent);
        // Let a drain fall between every other pair of batches, so that
        // both kernel maps take turns holding data.
        if batch % 2 == 0 {
            let drains = metric(&now(), DRAINS);
            eventually("a drain", || metric(&now(), DRAINS) > drains);
        }
    }
    let record_count: usize = exports.iter().map(|e| e.records.len()).sum();
    let seen = lab.scrape(metrics);
    assert_eq!(metric(&seen, &records), record_count as u64, "{seen:#?}");
    assert!(metric(&seen, DRAINS) >= 4, "drained while exports arrived");

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let (written, unattributed) = usage_bytes(&db);
    assert_eq!(written, expected_bytes(&exports));
    assert!(unattributed > 0, "no RADIUS yet: every row is unattributed");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_mode_writes_every_exported_byte_while_draining_under_load() {
    every_exported_byte_lands_in_usage("xdp", "xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn socket_mode_writes_every_exported_byte_while_draining_under_load() {
    every_exported_byte_lands_in_usage("socket", "socket");
}

/// With a map of 16 keys and a ring of ~140 aggregates, nearly every
/// aggregate of 100 exports overflows, far more than the ring holds; no
/// flush comes before the last one (an hour apart), so only reading the ring
/// as it fills can keep every byte.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_overflow_ring_is_read_as_it_fills_not_only_at_flushes() {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = tmp.path("flowtally.toml");
    std::fs::write(
        &config,
        "[maps]\naggregate_entries = 16\noverflow_ring_bytes = 16384\n",
    )
    .unwrap();
    let mut flowtally = lab.start(
        "xdp",
        &db,
        &[
            "--config",
            support::path_str(&config),
            "--subscriber-net",
            SUBSCRIBERS,
            "--flush-interval",
            "1h",
        ],
    );
    let metrics = flowtally.metrics_addr();
    let exports = exports(100, 0x0f10);
    let packets = "flowtally_packets_total{path=\"xdp\"}";
    for (sent, export) in exports.iter().enumerate() {
        lab.send([export.bytes().as_slice()]);
        let now = || lab.scrape(metrics);
        eventually("the export to be counted", || {
            metric(&now(), packets) > sent as u64
        });
    }
    assert_eq!(metric(&lab.scrape(metrics), DRAINS), 0, "no flush yet");
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let (written, _) = usage_bytes(&db);
    assert_eq!(written, expected_bytes(&exports), "nothing dropped");
}
