//! ClickHouse sink benchmarks (`cargo xtask bench`), against a real
//! clickhouse-server started here: how fast flushes put usage rows into the
//! SQLite spool, how fast the spool is read back, how fast the delivery task
//! moves a backlog into ClickHouse (the catch-up after an outage), and the
//! same backlog again when every batch is a retry whose rows ClickHouse
//! already has. Prints a Markdown table; BENCHMARKS.md explains the method.

#[path = "../../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

use flowtally::{
    sink::{
        clickhouse::{self, ClickHouseMetrics, Deliverer, Source, Spool},
        sqlite,
    },
    usage::UsageRow,
};
use flowtally_common::agg::Direction;
use support::{TempDir, clickhouse::ClickHouse};

const ROWS: u64 = 1_000_000;
const FLUSH_ROWS: usize = 50_000;

fn main() {
    let ch = ClickHouse::start();
    let tmp = TempDir::new();
    let db = tmp.path("bench.db");
    println!("| measurement | figure |");
    println!("|---|---:|");

    let mut conn = sqlite::open(&db).unwrap();
    let started = Instant::now();
    for flush in 0..ROWS / FLUSH_ROWS as u64 {
        let rows: Vec<UsageRow> = (0..FLUSH_ROWS as u64)
            .map(|i| row(flush * FLUSH_ROWS as u64 + i))
            .collect();
        sqlite::write_usage(&mut conn, &rows).unwrap();
    }
    report(
        "spool write (usage rows into SQLite, 50 000 per flush)",
        started,
    );

    let spool = Spool::open(&db).unwrap();
    let started = Instant::now();
    let mut after = 0;
    loop {
        let batch = spool.usage(after, FLUSH_ROWS).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.local_id;
    }
    report("spool read (batches of 50 000)", started);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        deliver(&ch, &db, spool).await;
        report("delivery into ClickHouse (batches of 50 000)", started);

        // Rewind: as after a crash, every batch is checked first and all
        // of its rows are found present.
        sqlite::open(&db)
            .unwrap()
            .execute("UPDATE clickhouse_progress SET delivered = 0", [])
            .unwrap();
        let started = Instant::now();
        deliver(&ch, &db, Spool::open(&db).unwrap()).await;
        report("redelivery check (rows already in ClickHouse)", started);
    });
    let stored = ch.query("SELECT count() FROM flowtally.usage");
    assert_eq!(stored.trim(), ROWS.to_string(), "exactly once");
}

/// Runs the delivery task until the whole spool is in ClickHouse.
async fn deliver(ch: &ClickHouse, db: &std::path::Path, spool: Spool) {
    let metrics = ClickHouseMetrics::default();
    let stop = Deliverer {
        client: clickhouse::client(&clickhouse::Endpoint {
            url: &ch.url(),
            database: "flowtally",
            user: None,
            password: None,
            ca_file: None,
        })
        .expect("a plain HTTP client"),
        database: "flowtally".into(),
        spool: Mutex::new(spool),
        gate: Default::default(),
        batch_rows: FLUSH_ROWS,
        spool_max_rows: u64::MAX,
        sessions: false,
        metrics: metrics.clone(),
        poll: Duration::from_millis(10),
        shutdown_timeout: Duration::from_secs(60),
    }
    .spawn();
    let progress = Spool::open(db).unwrap();
    let source_done = || {
        progress
            .delivered(Source::Usage)
            .is_ok_and(|n| n as u64 == ROWS)
    };
    while !source_done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.finish().await;
    assert_eq!(metrics.errors.get(), 0);
}

fn report(what: &str, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "| {what} | {:.0} rows/s ({:.2} s for {ROWS}) |",
        ROWS as f64 / seconds,
        seconds
    );
}

/// A detail-profile row: one subscriber of 65 536 talking to a peer.
fn row(i: u64) -> UsageRow {
    let subscriber = Ipv4Addr::from(0x6440_0000 + (i % 65_536) as u32);
    UsageRow {
        bucket_start_ms: 1_763_000_000_000 + (i / 10_000) * 60_000,
        bucket_width_ms: 60_000,
        subscriber_ip: IpAddr::V4(subscriber),
        direction: if i.is_multiple_of(2) {
            Direction::Up
        } else {
            Direction::Down
        },
        user_name: Some(format!("user{}", i % 65_536)),
        session_id: Some(format!("s{}", i % 65_536)),
        peer_ip: Some(IpAddr::V4(Ipv4Addr::from(0xc613_0000 + (i % 4096) as u32))),
        protocol: Some(6),
        subscriber_port: Some(40_000 + (i % 20_000) as u16),
        peer_port: Some(443),
        exporter: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
        class: None,
        unattributed: None,
        bytes: 1500 * (1 + i % 100),
        packets: 1 + i % 100,
        flows: 1,
        first_ms: 1_763_000_000_000 + (i / 10_000) * 60_000,
        last_ms: 1_763_000_000_000 + (i / 10_000) * 60_000 + 59_000,
    }
}
