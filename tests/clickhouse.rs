//! The ClickHouse sink against a real clickhouse-server (Debian's 18.16):
//! the same rows as SQLite, reports that read the same from either, no loss
//! and no duplicates across outages and restarts, and several instances
//! splitting the exporters adding up to what one instance bills.

mod support;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    process::Command,
};

use flowtally::netflow::v5::{Record, encode};
use flowtally::report::source::clickhouse as read;
use flowtally_common::v5::Header;
use support::{
    BIN, Flowtally, NetNs, RADIUS_SECRET, TempDir,
    clickhouse::{ClickHouse, TestCa},
    eventually,
    http_capture::Capture,
    path_str, radclient, require_root, scrape, start_on_loopback, usage_by_user,
    v5gen::Rng,
    veth_named,
};

const SECRET: &str = RADIUS_SECRET;
const T0: u32 = 1_700_000_000;
/// Users hold 198.18.100.10.. from T0 + 100 s to T0 + 1000 s; .16 and .17
/// belong to nobody.
const USERS: u8 = 6;

fn accounting(server: SocketAddr, status: &str, user: u8, at: u32) {
    let attributes = format!(
        "Acct-Status-Type = {status}, User-Name = user{user}, Acct-Session-Id = s{user}, \
         Framed-IP-Address = 198.18.100.{}, NAS-IP-Address = 198.18.0.1, Event-Timestamp = {}",
        10 + user,
        T0 + at
    );
    assert!(
        radclient(server, SECRET, &attributes),
        "user{user} {status}"
    );
}

fn sessions(server: SocketAddr, status: &str) {
    let at = if status == "Start" { 100 } else { 1000 };
    for user in 0..USERS {
        accounting(server, status, user, at);
    }
}

/// `n` v5 exports of 10 records each inside the sessions' time, and the
/// bytes they carry per user (`None`: nobody's).
fn exports(n: usize, seed: u64) -> (Vec<Vec<u8>>, BTreeMap<Option<String>, u64>) {
    let mut rng = Rng(seed);
    let mut expected = BTreeMap::new();
    let exports = (0..n)
        .map(|_| {
            let at = 150 + rng.below(800) as u32;
            let header = Header {
                version: 5,
                sys_uptime: 1_000_000,
                unix_secs: T0 + at,
                ..Header::default()
            };
            let records: Vec<Record> = (0..10)
                .map(|_| {
                    let host = rng.below(u64::from(USERS) + 2) as u8;
                    let octets = 40 + rng.below(1500) as u32;
                    let user = (host < USERS).then(|| format!("user{host}"));
                    *expected.entry(user).or_default() += u64::from(octets);
                    let subscriber = [198, 18, 100, 10 + host];
                    let peer = [198, 19, 0, 1 + rng.below(50) as u8];
                    let up = rng.below(2) == 0;
                    Record {
                        src: if up { subscriber } else { peer },
                        dst: if up { peer } else { subscriber },
                        packets: 1,
                        octets,
                        first: 1_000_000,
                        last: 1_000_000,
                        protocol: 6,
                        dst_port: 443,
                        ..Record::default()
                    }
                })
                .collect();
            encode(&header, &records)
        })
        .collect();
    (exports, expected)
}

/// Sends `exports` from `exporter` in batches that `flowtally` (scraped in
/// `netns`) has counted on `path` before the next, so that none overflows
/// a receive buffer.
fn send_paced(
    flowtally: &Flowtally,
    netns: Option<&NetNs>,
    path: &str,
    exporter: &UdpSocket,
    to: SocketAddr,
    exports: &[Vec<u8>],
) {
    let packets = format!("flowtally_packets_total{{path=\"{path}\"}}");
    let counted_now = || match netns {
        Some(ns) => ns.enter(|| metric(flowtally, &packets)),
        None => metric(flowtally, &packets),
    };
    let mut counted = counted_now();
    for batch in exports.chunks(25) {
        for export in batch {
            exporter.send_to(export, to).unwrap();
        }
        counted += batch.len() as u64;
        eventually("a batch to be received", || counted_now() >= counted);
    }
}

/// [`send_paced`] on loopback to a socket-mode flowtally.
fn send(flowtally: &Flowtally, exports: &[Vec<u8>]) {
    let exporter = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = flowtally.ready.netflow[0];
    send_paced(flowtally, None, "socket", &exporter, to, exports);
}

fn total(expected: &BTreeMap<Option<String>, u64>) -> u64 {
    expected.values().sum()
}

fn add(into: &mut BTreeMap<Option<String>, u64>, from: &BTreeMap<Option<String>, u64>) {
    for (user, bytes) in from {
        *into.entry(user.clone()).or_default() += bytes;
    }
}

/// Bytes per user in ClickHouse database `database`.
fn clickhouse_by_user(ch: &ClickHouse, database: &str) -> BTreeMap<Option<String>, u64> {
    ch.query(&format!(
        "SELECT user_name, sum(bytes) FROM {database}.usage FINAL
         GROUP BY user_name FORMAT TSV"
    ))
    .lines()
    .map(|line| {
        let (user, bytes) = line.split_once('\t').unwrap();
        let user = (user != "\\N").then(|| user.to_owned());
        (user, bytes.parse().unwrap())
    })
    .collect()
}

fn clickhouse_bytes(ch: &ClickHouse, database: &str) -> u64 {
    ch.query(&format!("SELECT sum(bytes) FROM {database}.usage"))
        .trim()
        .parse()
        .unwrap_or(0)
}

fn report(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("report")
        .args(args)
        .args(["--from", &T0.to_string(), "--to", &(T0 + 2000).to_string()])
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The sessions of these tests lie in 2023: a long assumed interim
/// interval keeps the daemon's silence check from closing them while a test
/// runs.
const RADIUS_TOML: &str = "[radius]\ndefault_interim = \"30years\"\n";

/// A socket-mode flowtally on loopback; its config file is [`RADIUS_TOML`]
/// plus `toml`.
fn start(db: &std::path::Path, toml: &str, extra: &[&str]) -> Flowtally {
    let config = db.with_extension("toml");
    std::fs::write(&config, format!("{RADIUS_TOML}{toml}")).unwrap();
    let mut args = vec![
        "--config",
        path_str(&config),
        "--subscriber-net",
        "198.18.100.0/24",
        "--flush-interval",
        "100ms",
        // Nobody's rows are written after this, not at shutdown.
        "--late-window",
        "1s",
    ];
    args.extend_from_slice(extra);
    start_on_loopback(db, &args)
}

fn metric(flowtally: &Flowtally, name: &str) -> u64 {
    scrape(flowtally.metrics_addr())
        .get(name)
        .copied()
        .unwrap_or(0.0) as u64
}

#[test]
fn clickhouse_receives_what_sqlite_receives_and_reports_read_the_same() {
    let ch = ClickHouse::start();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut flowtally = start(&db, "", &["--clickhouse", &ch.url()]);
    let radius = flowtally.ready.radius.unwrap();
    sessions(radius, "Start");
    let (exports, expected) = exports(300, 7);
    send(&flowtally, &exports);
    sessions(radius, "Stop");
    eventually("every byte in ClickHouse", || {
        clickhouse_bytes(&ch, "flowtally") == total(&expected)
    });
    eventually("both stopped sessions in ClickHouse", || {
        ch.query("SELECT count() FROM flowtally.sessions FINAL WHERE stop_ms IS NOT NULL")
            .trim()
            == USERS.to_string()
    });
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());

    assert_eq!(usage_by_user(&db), expected);
    assert_eq!(clickhouse_by_user(&ch, "flowtally"), expected);
    let url = ch.url();
    for by in ["user", "session", "subnet"] {
        let from_sqlite = report(&["--db", path_str(&db), "--by", by]);
        let from_clickhouse = report(&["--clickhouse", &url, "--by", by]);
        assert_eq!(from_sqlite, from_clickhouse, "--by {by}");
        let total_line = format!(",{},", total(&expected));
        assert!(from_sqlite.contains(&total_line), "{from_sqlite}");
    }
}

/// `usage` as flowtally created it before destination classes.
const USAGE_WITHOUT_CLASS: &str = "
CREATE TABLE flowtally.usage (
    bucket_start_ms Int64, bucket_width_ms Int64, user_name Nullable(String),
    session_id Nullable(String), subscriber_ip String,
    direction Enum8('up' = 1, 'down' = 2, 'transit' = 3), peer_ip Nullable(String),
    protocol Nullable(UInt8), subscriber_port Nullable(UInt16), peer_port Nullable(UInt16),
    exporter Nullable(String), bytes UInt64, packets UInt64, flows UInt64, first_ms Int64,
    last_ms Int64, writer String, local_id Int64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(bucket_start_ms, 1000)))
ORDER BY (ifNull(user_name, ''), bucket_start_ms, subscriber_ip, writer, local_id)";

/// An existing `usage` table gains the `class` and `unattributed` columns
/// when flowtally starts (18.16 has no ADD COLUMN IF NOT EXISTS), and a report by class
/// reads the same from ClickHouse as from SQLite.
#[test]
fn an_old_usage_table_gains_the_new_columns_and_reports_by_class_agree() {
    let ch = ClickHouse::start();
    ch.query("CREATE DATABASE flowtally");
    ch.query(USAGE_WITHOUT_CLASS);
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    // Peers are 198.19.0.1–50: some local, some in no class.
    let classes = "[[classes]]\nname = \"local\"\nnetworks = [\"198.19.0.0/27\"]\n";
    let mut flowtally = start(&db, classes, &["--clickhouse", &ch.url()]);
    let radius = flowtally.ready.radius.unwrap();
    sessions(radius, "Start");
    let (exports, expected) = exports(100, 18);
    send(&flowtally, &exports);
    sessions(radius, "Stop");
    eventually("every byte in ClickHouse", || {
        clickhouse_bytes(&ch, "flowtally") == total(&expected)
    });
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let classes = ch.query(
        "SELECT ifNull(class, '-'), count() > 0 FROM flowtally.usage GROUP BY class \
         ORDER BY class FORMAT TSV",
    );
    assert_eq!(classes, "local\t1\n-\t1\n");
    // The reason column came the same way: its rows are SQLite's.
    let reasons = ch.query(
        "SELECT ifNull(unattributed, '-') AS reason, sum(bytes) FROM flowtally.usage \
         GROUP BY reason ORDER BY reason FORMAT TSV",
    );
    let sqlite_reasons: String = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare(
            "SELECT ifnull(unattributed, '-'), sum(bytes) FROM usage \
             GROUP BY unattributed ORDER BY 1",
        )
        .unwrap()
        .query_map([], |row| {
            Ok(format!(
                "{}\t{}\n",
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reasons, sqlite_reasons);
    assert!(
        reasons.contains(&format!("no_session\t{}\n", expected[&None])),
        "hosts nobody logged in as: {reasons}"
    );
    let from_sqlite = report(&["--db", path_str(&db), "--by", "class"]);
    let from_clickhouse = report(&["--clickhouse", &ch.url(), "--by", "class"]);
    assert_eq!(from_sqlite, from_clickhouse);
    assert!(from_sqlite.contains("\r\nlocal,"), "{from_sqlite}");
    assert!(from_sqlite.contains("\r\n(unclassified),"), "{from_sqlite}");
    let total_line = format!(",{},", total(&expected));
    assert!(from_sqlite.contains(&total_line), "{from_sqlite}");
}

/// Past `clickhouse.spool_max_rows` the oldest undelivered rows are given
/// up for ClickHouse — loudly: an error naming them and a counter — and
/// stay in SQLite; the rest is delivered when ClickHouse returns.
#[test]
fn a_full_spool_gives_up_the_oldest_rows_loudly_and_delivers_the_rest() {
    let mut ch = ClickHouse::start();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let toml = "[clickhouse]\nspool_max_rows = 100\n";
    let flowtally = start(&db, toml, &["--clickhouse", &ch.url()]);
    eventually("the tables", || {
        metric(&flowtally, "flowtally_clickhouse_up") == 1
    });
    ch.kill();
    let (exports, expected) = exports(100, 9);
    send(&flowtally, &exports);
    let discarded = "flowtally_clickhouse_discarded_rows_total{table=\"usage\"}";
    eventually("rows given up", || metric(&flowtally, discarded) > 0);
    // Counted before it is logged, and the log is read by another thread.
    eventually("the rows given up logged", || {
        flowtally
            .stderr()
            .contains("ClickHouse spool over clickhouse.spool_max_rows (100)")
    });
    eventually("every byte in SQLite", || {
        usage_by_user(&db).values().sum::<u64>() == total(&expected)
    });
    ch.resume();
    eventually("the spool delivered", || {
        metric(
            &flowtally,
            "flowtally_clickhouse_spool_rows{table=\"usage\"}",
        ) == 0
            && metric(&flowtally, "flowtally_clickhouse_up") == 1
    });
    let sqlite_rows: u64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM usage", [], |row| row.get::<_, i64>(0))
        .unwrap() as u64;
    let delivered: u64 = ch
        .query("SELECT count() FROM flowtally.usage")
        .trim()
        .parse()
        .unwrap();
    assert!(delivered > 0, "the newest rows were delivered");
    assert_eq!(
        delivered + metric(&flowtally, discarded),
        sqlite_rows,
        "every row is delivered or counted as given up"
    );
}

#[test]
fn an_outage_and_restarts_lose_nothing_and_duplicate_nothing() {
    let mut ch = ClickHouse::start();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    // Small batches, so that the rewind below spans several of them.
    let toml = "[clickhouse]\nshutdown_timeout = \"1s\"\nbatch_rows = 20\n";
    let args = ["--clickhouse", &ch.url()];
    let mut flowtally = start(&db, toml, &args);
    sessions(flowtally.ready.radius.unwrap(), "Start");
    let mut expected = BTreeMap::new();
    let delivered = |ch: &ClickHouse, expected: &BTreeMap<_, _>| {
        eventually("every byte so far in ClickHouse", || {
            clickhouse_bytes(ch, "flowtally") == total(expected)
        });
    };

    let (part, bytes) = exports(100, 1);
    send(&flowtally, &part);
    add(&mut expected, &bytes);
    delivered(&ch, &expected);

    // Down while traffic goes on: rows wait in the SQLite spool.
    ch.kill();
    let (part, bytes) = exports(100, 2);
    send(&flowtally, &part);
    add(&mut expected, &bytes);
    eventually("the spool to hold rows and the failure to show", || {
        metric(
            &flowtally,
            "flowtally_clickhouse_spool_rows{table=\"usage\"}",
        ) > 0
            && metric(&flowtally, "flowtally_clickhouse_up") == 0
            && metric(&flowtally, "flowtally_usage_rows_total") > 0
    });
    ch.resume();
    delivered(&ch, &expected);
    assert!(metric(&flowtally, "flowtally_clickhouse_errors_total") > 0);

    // Down at shutdown: what is left stays spooled for the next start.
    ch.kill();
    let (part, bytes) = exports(100, 3);
    send(&flowtally, &part);
    add(&mut expected, &bytes);
    eventually("the third part written to SQLite", || {
        usage_by_user(&db).values().sum::<u64>() == total(&expected)
    });
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert!(
        flowtally.stderr().contains("rows still spooled"),
        "{}",
        flowtally.stderr()
    );

    // As if the previous run had crashed after ClickHouse took its last
    // batches but before it noted that: the next run must not send them
    // again.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rewound = 50;
    conn.execute(
        "UPDATE clickhouse_progress SET delivered = delivered - ?1 WHERE source = 'usage'",
        [rewound],
    )
    .unwrap();
    ch.resume();
    let flowtally = start(&db, toml, &args);
    delivered(&ch, &expected);
    eventually("the spool to be empty", || {
        metric(
            &flowtally,
            "flowtally_clickhouse_spool_rows{table=\"usage\"}",
        ) == 0
    });
    // At least the rewound rows; more when the kill before shutdown fell
    // between ClickHouse showing an INSERT's rows and its answer reaching
    // flowtally (that batch stayed spooled, and is found present too).
    let present = metric(
        &flowtally,
        "flowtally_clickhouse_already_present_rows_total",
    );
    assert!(present >= rewound, "{present} rows found present");

    // Exactly once: as many rows as SQLite has, each (writer, local_id)
    // once, without FINAL folding anything away.
    let sqlite_rows: u64 = conn
        .query_row("SELECT count(*) FROM usage", [], |row| row.get::<_, i64>(0))
        .unwrap() as u64;
    let counts =
        ch.query("SELECT count(), uniqExact(writer, local_id) FROM flowtally.usage FORMAT TSV");
    assert_eq!(counts.trim(), format!("{sqlite_rows}\t{sqlite_rows}"));
    assert_eq!(clickhouse_by_user(&ch, "flowtally"), expected);
    assert_eq!(usage_by_user(&db), expected);
}

/// Scale-out: instances A and B each receive one exporter's flows and all
/// of the RADIUS accounting (as from a NAS that sends to both) and write to
/// one ClickHouse; a single instance S receives everything and writes to a
/// database of its own there. Per user, A + B must bill what S bills.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn two_instances_splitting_the_exporters_bill_what_one_instance_bills() {
    require_root();
    let hub = NetNs::new();
    let instances: Vec<(NetNs, u8, &str, bool)> = vec![
        (NetNs::new(), 1, "flowtally", true),
        (NetNs::new(), 2, "flowtally", false),
        (NetNs::new(), 3, "single", true),
    ];
    for (ns, link, _, _) in &instances {
        veth_named(
            &hub,
            &format!("h{link}"),
            &format!("198.18.{link}.1/24"),
            ns,
            "uplink",
            &format!("198.18.{link}.2/24"),
        );
    }
    let ch = ClickHouse::start_in(&hub, [198, 18, 1, 1]);
    let tmp = TempDir::new();
    let collectors: Vec<Flowtally> = instances
        .iter()
        .map(|(ns, link, database, sessions)| {
            let config = tmp.path(&format!("{link}.toml"));
            std::fs::write(
                &config,
                format!(
                    "{RADIUS_TOML}[clickhouse]\nurl = \"http://198.18.{link}.1:8123\"\n\
                     database = \"{database}\"\nsessions = {sessions}\n"
                ),
            )
            .unwrap();
            let db = tmp.path(&format!("{link}.db"));
            Flowtally::start(
                Some(ns),
                &[
                    "--config",
                    path_str(&config),
                    "--iface",
                    "uplink",
                    "--mode",
                    "xdp",
                    "--netflow",
                    "0.0.0.0:2055",
                    "--radius",
                    "0.0.0.0:1813",
                    "--radius-secret",
                    SECRET,
                    "--metrics",
                    "127.0.0.1:0",
                    "--db",
                    path_str(&db),
                    "--subscriber-net",
                    "198.18.100.0/24",
                    "--flush-interval",
                    "100ms",
                    "--late-window",
                    "1s",
                ],
            )
        })
        .collect();
    let radius = |link: u8| SocketAddr::from(([198, 18, link, 2], 1813));
    let netflow = |link: u8| SocketAddr::from(([198, 18, link, 2], 2055));

    hub.enter(|| {
        for link in 1..=3 {
            sessions(radius(link), "Start");
        }
    });
    let (exports, expected) = exports(300, 11);
    let (to_a, to_b): (Vec<_>, Vec<_>) = exports
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let strip = |v: Vec<(usize, Vec<u8>)>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
    let shares = [(1, strip(to_a)), (2, strip(to_b)), (3, exports.clone())];
    for ((link, share), ((ns, ..), flowtally)) in
        shares.iter().zip(instances.iter().zip(&collectors))
    {
        let exporter = hub.enter(|| UdpSocket::bind(format!("198.18.{link}.1:0")).unwrap());
        send_paced(flowtally, Some(ns), "xdp", &exporter, netflow(*link), share);
    }
    hub.enter(|| {
        for link in 1..=3 {
            sessions(radius(link), "Stop");
        }
    });
    for database in ["flowtally", "single"] {
        eventually("every byte in ClickHouse", || {
            clickhouse_bytes(&ch, database) == total(&expected)
        });
        eventually("the stopped sessions in ClickHouse", || {
            ch.query(&format!(
                "SELECT count() FROM {database}.sessions FINAL WHERE stop_ms IS NOT NULL"
            ))
            .trim()
                == USERS.to_string()
        });
    }
    assert_eq!(clickhouse_by_user(&ch, "flowtally"), expected);
    assert_eq!(clickhouse_by_user(&ch, "single"), expected);
    let writers = ch.query("SELECT uniqExact(writer) FROM flowtally.usage");
    assert_eq!(writers.trim(), "2", "both instances wrote usage");

    let url = ch.url();
    let report_of = |database: &str| {
        hub.enter(|| {
            report(&[
                "--clickhouse",
                &url,
                "--clickhouse-database",
                database,
                "--by",
                "user",
            ])
        })
    };
    assert_eq!(report_of("flowtally"), report_of("single"));
}

/// Current ClickHouse runs here only as a library (chdb, ClickHouse 26.9,
/// from PyPI), not as a server: what flowtally sends over HTTP is captured
/// and replayed into it — the DDL, the INSERTs with their RowBinary bodies
/// byte for byte — and the report's queries then run on it.
#[test]
fn tables_inserts_and_report_queries_work_on_current_clickhouse() {
    let capture = Capture::start();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let url = format!("http://{}", capture.addr);
    let mut flowtally = start(&db, "", &["--clickhouse", &url]);
    let radius = flowtally.ready.radius.unwrap();
    sessions(radius, "Start");
    let (exports, expected) = exports(100, 5);
    send(&flowtally, &exports);
    sessions(radius, "Stop");
    eventually("every row delivered (to the capture)", || {
        let spooled = scrape(flowtally.metrics_addr());
        let delivered = |table: &str| {
            spooled
                .get(&format!(
                    "flowtally_clickhouse_delivered_rows_total{{table=\"{table}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        delivered("sessions") > 0.0
            && metric(&flowtally, "flowtally_association_backlog") == 0
            && metric(
                &flowtally,
                "flowtally_clickhouse_spool_rows{table=\"usage\"}",
            ) == 0
            && usage_by_user(&db).values().sum::<u64>() == total(&expected)
    });
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());

    // The captured conversation as statements for chdb.
    let mut statements = Vec::new();
    for (i, request) in capture.requests().into_iter().enumerate() {
        match request.param("query") {
            Some(insert) => {
                let data = tmp.path(&format!("insert{i}.bin"));
                std::fs::write(&data, &request.body).unwrap();
                let database = request.param("database").unwrap();
                let target = insert
                    .strip_prefix("INSERT INTO ")
                    .and_then(|rest| rest.strip_suffix(" FORMAT RowBinary"))
                    .unwrap_or_else(|| panic!("an INSERT in RowBinary: {insert}"));
                statements.push(format!(
                    "INSERT INTO {database}.{target} FROM INFILE '{}' FORMAT RowBinary",
                    data.display()
                ));
            }
            None => {
                let sql = String::from_utf8(request.body).unwrap();
                if !sql.trim_start().starts_with("SELECT") {
                    statements.push(sql);
                }
            }
        }
    }
    assert!(
        statements
            .iter()
            .any(|s| s.contains("CREATE TABLE IF NOT EXISTS flowtally.usage"))
    );
    let (from, to) = (i64::from(T0) * 1000, i64::from(T0 + 2000) * 1000);
    let usage_sums = read::USAGE_SUMS
        .replacen('?', &from.to_string(), 1)
        .replacen('?', &to.to_string(), 1);
    let checks = [
        "SELECT user_name, sum(bytes) FROM usage FINAL GROUP BY user_name ORDER BY user_name",
        "SELECT count() FROM sessions FINAL WHERE stop_ms IS NOT NULL",
        &format!("SELECT count() FROM ({usage_sums})"),
        &format!("SELECT count() FROM ({})", read::SESSIONS),
        &format!("SELECT count() FROM ({})", read::ADDRESSES),
        "SELECT version()",
    ];
    let script = format!(
        "import sys\nfrom chdb import session\ns = session.Session({:?})\n\
         for sql in {statements:?}:\n    s.query(sql)\ns.query('USE flowtally')\n\
         for sql in {checks:?}:\n    print(s.query(sql, 'TSV'), end='')\n    print('--')\n",
        path_str(&tmp.path("chdb"))
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chdb (pip install chdb-core): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let results: Vec<&str> = out.split("--\n").collect();
    let by_user: BTreeMap<Option<String>, u64> = results[0]
        .lines()
        .map(|line| {
            let (user, bytes) = line.split_once('\t').unwrap();
            (
                (user != "\\N").then(|| user.to_owned()),
                bytes.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_user, expected);
    assert_eq!(results[1].trim(), USERS.to_string(), "stopped sessions");
    let sqlite = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str| -> String {
        sqlite
            .query_row(sql, [], |row| row.get::<_, i64>(0))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        results[2].trim(),
        count(
            "SELECT count(*) FROM (SELECT 1 FROM usage GROUP BY bucket_start_ms, \
             bucket_width_ms, user_name, session_id, subscriber_ip, direction)"
        )
    );
    assert_eq!(results[3].trim(), count("SELECT count(*) FROM sessions"));
    assert_eq!(
        results[4].trim(),
        count("SELECT count(*) FROM session_addresses")
    );
    let version = results[5].trim();
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 24, "a current ClickHouse, not {version}");
}

/// TLS to a real clickhouse-server serving HTTPS with a certificate a test
/// CA signed for `localhost`: verified against `clickhouse.ca_file`, the
/// rows are delivered (with a password read from a file, sent only inside
/// TLS) and the report reads them back over HTTPS; against another CA, or
/// under a name the certificate does not hold, delivery fails with an
/// error saying so, and the rows stay spooled in SQLite until it succeeds.
#[test]
fn https_delivers_with_the_right_ca_and_a_wrong_ca_or_name_keeps_rows_spooled() {
    let ca = TestCa::new("flowtally test CA");
    let other_ca = TestCa::new("another CA");
    let ch = ClickHouse::start_https(&ca, "biller", "ch-tls-pass");
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let password = tmp.path("ch-password");
    std::fs::write(&password, "ch-tls-pass\n").unwrap();
    let clickhouse_toml = |url: &str, ca_file: &std::path::Path| {
        format!(
            "[clickhouse]\nurl = \"{url}\"\nca_file = \"{}\"\nuser = \"biller\"\n\
             password_file = \"{}\"\nshutdown_timeout = \"1s\"\n",
            path_str(ca_file),
            path_str(&password)
        )
    };
    let spooled = "flowtally_clickhouse_spool_rows{table=\"usage\"}";
    let (exports, expected) = exports(50, 11);
    for (url, ca_file, error) in [
        (ch.https_url("localhost"), other_ca.ca(), "UnknownIssuer"),
        (ch.https_url("127.0.0.1"), ca.ca(), "not valid for name"),
    ] {
        let mut flowtally = start(&db, &clickhouse_toml(&url, &ca_file), &[]);
        if usage_by_user(&db).is_empty() {
            sessions(flowtally.ready.radius.unwrap(), "Start");
            send(&flowtally, &exports);
        }
        eventually("the failure logged", || flowtally.stderr().contains(error));
        let log = flowtally.stderr();
        let line = log.lines().find(|l| l.contains(error)).unwrap();
        assert!(
            line.contains("rows stay spooled") && line.contains("must name the URL's host"),
            "{line}"
        );
        assert!(!log.contains("ch-tls-pass"), "{log}");
        eventually("rows spooled", || metric(&flowtally, spooled) > 0);
        assert_eq!(metric(&flowtally, "flowtally_clickhouse_up"), 0);
        flowtally.signal(libc::SIGTERM);
        flowtally.wait();
    }
    assert_eq!(
        ch.query("EXISTS TABLE flowtally.usage").trim(),
        "0",
        "nothing reached ClickHouse"
    );

    let url = ch.https_url("localhost");
    let flowtally = start(&db, &clickhouse_toml(&url, &ca.ca()), &[]);
    eventually("the spool delivered over TLS", || {
        metric(&flowtally, "flowtally_clickhouse_up") == 1 && metric(&flowtally, spooled) == 0
    });
    eventually("every byte in ClickHouse", || {
        clickhouse_bytes(&ch, "flowtally") == total(&expected)
    });
    assert_eq!(clickhouse_by_user(&ch, "flowtally"), expected);
    let out = Command::new(BIN)
        .args([
            "report",
            "--clickhouse",
            &url,
            "--clickhouse-user",
            "biller",
        ])
        .args(["--clickhouse-ca-file", path_str(&ca.ca())])
        .args(["--from", &T0.to_string(), "--to", &(T0 + 2000).to_string()])
        .args(["--format", "csv"])
        .env("FLOWTALLY_CLICKHOUSE_PASSWORD", "ch-tls-pass")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        report(&["--db", path_str(&db)]),
        "the report reads the same over HTTPS"
    );
}
