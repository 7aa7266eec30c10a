//! The daemon with NetFlow v9: templates learned on the socket path make
//! the kernel aggregate later data itself, and they survive a restart, so
//! data arriving right after one is parsed at once.

mod support;

use std::collections::BTreeMap;

use flowtally::netflow::{
    encode::{Set, Template, export},
    sets::{FieldSpec, Header, V9},
};
use support::{TempDir, VethLab, eventually, require_root};

const TEMPLATE_ID: u16 = 260;
/// Source, destination, octets, packets, last switched.
const FIELDS: [(u16, u16); 5] = [(8, 4), (12, 4), (1, 4), (2, 4), (21, 4)];

fn header(sequence: u32) -> Header {
    Header {
        version: V9,
        unix_secs: 1_700_000_000,
        sys_uptime_ms: 1_000_000,
        sequence,
        domain: 1,
    }
}

fn template() -> Vec<u8> {
    let fields = FIELDS
        .iter()
        .map(|&(ie, len)| FieldSpec::iana(ie, len))
        .collect();
    export(
        &header(0),
        &[Set::Templates(vec![Template {
            id: TEMPLATE_ID,
            fields,
        }])],
        false,
    )
}

/// One record: 198.18.100.1 sent `octets` bytes to 198.19.0.1.
fn data(sequence: u32, octets: u32) -> Vec<u8> {
    let mut record = vec![198, 18, 100, 1, 198, 19, 0, 1];
    record.extend_from_slice(&octets.to_be_bytes());
    record.extend_from_slice(&1u32.to_be_bytes());
    record.extend_from_slice(&999_000u32.to_be_bytes());
    export(
        &header(sequence),
        &[Set::Data {
            id: TEMPLATE_ID,
            records: vec![record],
        }],
        false,
    )
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn templates_move_data_into_the_kernel_and_survive_a_kill() {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let args = [
        "--subscriber-net",
        "198.18.100.0/24",
        "--flush-interval",
        "100ms",
    ];
    let send = |payload: &[u8]| lab.send([payload]);
    let xdp_records = r#"flowtally_records_total{path="xdp"}"#;
    let socket_records = r#"flowtally_records_total{path="socket"}"#;

    let mut first = lab.start("xdp", &db, &args);
    let metrics = first.metrics_addr();
    let now = || lab.scrape(metrics);
    send(&data(1, 1000));
    eventually("data before its template to be buffered", || {
        metric(
            &now(),
            r#"flowtally_pending_sets_total{outcome="buffered"}"#,
        ) == 1
    });
    send(&template());
    eventually("the buffered data to be replayed", || {
        metric(&now(), socket_records) == 1
    });
    send(&data(2, 2000));
    eventually(
        "data after the template to be aggregated in the kernel",
        || metric(&now(), xdp_records) == 1,
    );
    // Saved at the next flush: wait for one to pass, then stop.
    let flushes = metric(&now(), "flowtally_drain_duration_seconds_count");
    eventually("a flush", || {
        metric(&now(), "flowtally_drain_duration_seconds_count") > flushes
    });
    // Killed, not stopped: templates are saved with every flush, so they
    // survive what a crash leaves behind.
    first.signal(libc::SIGKILL);
    first.wait();

    let mut second = lab.start("xdp", &db, &args);
    let metrics = second.metrics_addr();
    let now = || lab.scrape(metrics);
    assert_eq!(
        metric(&now(), "flowtally_templates_compiled"),
        1,
        "restored"
    );
    send(&data(3, 4000));
    eventually(
        "data right after the restart to be aggregated in the kernel",
        || metric(&now(), xdp_records) == 1,
    );
    second.signal(libc::SIGTERM);
    assert!(second.wait().success(), "{}", second.stderr());

    let conn = rusqlite::Connection::open(&db).unwrap();
    let up: i64 = conn
        .query_row(
            "SELECT SUM(bytes) FROM usage WHERE subscriber_ip = '198.18.100.1' AND direction = 'up'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(up, 1000 + 2000 + 4000, "every byte of both runs");
}
