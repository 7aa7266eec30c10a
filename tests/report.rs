//! `flowtally report` end to end: a database written through the library,
//! the real binary, and its figures in all three formats — usage split at
//! a peak/off-peak boundary, time online, costs, unattributed and transit
//! usage — plus the exit codes for bad files and a missing database.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command};

use flowtally::{
    sessions::{AddressRow, Change, SessionRow},
    sink::{session_store, sqlite},
    usage::UsageRow,
};
use flowtally_common::agg::Direction::{self, Down, Transit, Up};
use serde_json::Value;
use support::{BIN, TempDir, path_str};

/// Peak 08:00–20:00 on weekdays at +01:00, the documented example.
const TARIFF: &str = r#"
currency = "EUR"
timezone = "+01:00"

[[period]]
name = "peak"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "08:00"
to = "20:00"
price_per_gb = 0.50
price_per_hour = 0.10

[[period]]
name = "off-peak"
price_per_gb = 0.20
price_per_hour = 0.0
"#;

/// Monday 2025-11-24 at `hh_mm` local time (+01:00), as RFC 3339.
fn local(hh_mm: &str) -> String {
    format!("2025-11-24T{hh_mm}:00+01:00")
}

/// Unix ms of `local(time)`, or of `time` if it is RFC 3339 already.
fn ms(time: &str) -> u64 {
    let rfc3339 = if time.len() == 5 {
        local(time)
    } else {
        time.to_owned()
    };
    rfc3339
        .parse::<flowtally::timestamp::Timestamp>()
        .unwrap()
        .0
}

const FROM: &str = "00:00";
/// Midnight at the end of the Monday.
fn to() -> String {
    "2025-11-25T00:00:00+01:00".into()
}

const GB: u64 = 1_000_000_000;
const MINUTE: u64 = 60_000;

fn row(
    user: Option<&str>,
    ip: &str,
    direction: Direction,
    at: &str,
    minutes: u64,
    bytes: u64,
    peer_port: u16,
) -> UsageRow {
    UsageRow {
        bucket_start_ms: ms(at),
        bucket_width_ms: minutes * MINUTE,
        subscriber_ip: ip.parse().unwrap(),
        direction,
        user_name: user.map(str::to_owned),
        session_id: user.map(|u| format!("{u}-1")),
        peer_ip: Some("198.19.0.1".parse().unwrap()),
        protocol: Some(6),
        subscriber_port: Some(40000),
        peer_port: Some(peer_port),
        exporter: Some("198.18.0.1".parse().unwrap()),
        class: None,
        unattributed: None,
        bytes,
        packets: bytes / 1_000_000,
        flows: 1,
        first_ms: ms(at),
        last_ms: ms(at) + minutes * MINUTE - 1,
    }
}

fn session(id: u64, user: &str, ip: &str, start: &str, stop: Option<&str>) -> [Change; 2] {
    [
        Change::Session(SessionRow {
            id,
            user_name: user.into(),
            nas: "198.18.0.1".into(),
            session_id: format!("{user}-1"),
            framed_ip: Some(ip.parse().unwrap()),
            framed_prefix: None,
            start_ms: ms(start),
            stop_ms: stop.map(ms),
            last_update_ms: ms(start),
            interim_interval_s: None,
            nas_port_id: None,
            calling_station_id: None,
            class: None,
            input_octets: None,
            output_octets: None,
            terminate_cause: None,
        }),
        Change::Address(AddressRow {
            session: id,
            net: ip.parse::<std::net::IpAddr>().unwrap().into(),
            from_ms: ms(start),
            to_ms: stop.map(ms),
        }),
    ]
}

/// alice: online 07:00–09:00 (one hour each side of 08:00); 2 GB down in
/// a 4-minute bucket from 07:58 (half off-peak, half peak, written as two
/// rows that differ by peer port) and 0.4 GB up at 08:30.
/// bob: online from 19:30 and still, no traffic.
/// Nobody: 1 GB up at 10:00. Transit: 0.5 GB at 12:00.
/// Outside the range: a row starting at its end, one ending at its start.
fn database(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path("flowtally.db");
    let mut conn = sqlite::open(&path).unwrap();
    sqlite::write_usage(
        &mut conn,
        &[
            row(
                Some("alice"),
                "198.18.100.7",
                Down,
                "07:58",
                4,
                3 * GB / 2,
                443,
            ),
            row(Some("alice"), "198.18.100.7", Down, "07:58", 4, GB / 2, 80),
            row(
                Some("alice"),
                "198.18.100.7",
                Up,
                "08:30",
                1,
                4 * GB / 10,
                443,
            ),
            row(None, "198.18.100.9", Up, "10:00", 1, GB, 443),
            row(None, "203.0.113.5", Transit, "12:00", 1, GB / 2, 443),
            row(Some("alice"), "198.18.100.7", Down, &to(), 1, 77 * GB, 443),
            row(
                Some("alice"),
                "198.18.100.7",
                Down,
                "2025-11-23T23:59:00+01:00",
                1,
                99 * GB,
                443,
            ),
        ],
    )
    .unwrap();
    let changes: Vec<Change> = [
        session(1, "alice", "198.18.100.7", "07:00", Some("09:00")),
        session(2, "bob", "198.18.100.8", "19:30", None),
    ]
    .into_iter()
    .flatten()
    .collect();
    session_store::write(&mut conn, &changes).unwrap();
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `flowtally report` over the Monday, with `extra` arguments.
fn report(db: &Path, extra: &[&str]) -> Run {
    let (from, to) = (local(FROM), to());
    let mut args = vec!["report", "--db", path_str(db), "--from", &from, "--to", &to];
    args.extend(extra);
    flowtally(&args)
}

fn flowtally(args: &[&str]) -> Run {
    let out = Command::new(BIN).args(args).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(run: Run) -> String {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
}

/// CSV records as name → (column → field), for unquoted fields.
fn csv(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut lines = text.split_terminator("\r\n");
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{line}");
            let record = header
                .iter()
                .zip(&fields)
                .map(|(h, f)| (h.to_string(), f.to_string()))
                .collect();
            (fields[0].to_owned(), record)
        })
        .collect()
}

/// Table rows as name → cells (names without spaces), header included.
fn table(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .skip(2)
        .filter(|line| !line.starts_with('-'))
        .map(|line| {
            let cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            (cells[0].clone(), cells)
        })
        .collect()
}

#[test]
fn usage_time_online_and_cost_per_user_split_by_period() {
    let dir = TempDir::new();
    let db = database(&dir);
    let tariff = dir.path("tariff.toml");
    std::fs::write(&tariff, TARIFF).unwrap();
    let csv = csv(&ok(report(
        &db,
        &["--tariff", path_str(&tariff), "--format", "csv"],
    )));

    let expected = [
        // name, up, down, online s, peak, off-peak, cost
        (
            "alice",
            "400000000",
            "2000000000",
            "7200.000",
            "0.8000",
            "0.2000",
            "1.0000",
        ),
        ("bob", "0", "0", "16200.000", "0.0500", "0.0000", "0.0500"),
        (
            "(unattributed)",
            "1000000000",
            "0",
            "0.000",
            "0.5000",
            "0.0000",
            "0.5000",
        ),
        (
            "(total)",
            "1400000000",
            "2000000000",
            "23400.000",
            "1.3500",
            "0.2000",
            "1.5500",
        ),
    ];
    for (name, up, down, online, peak, off_peak, cost) in expected {
        let record = &csv[name];
        let field = |column: &str| record[column].as_str();
        assert_eq!(
            [
                field("bytes_up"),
                field("bytes_down"),
                field("online_s"),
                field("cost_peak"),
                field("cost_off-peak"),
                field("cost")
            ],
            [up, down, online, peak, off_peak, cost],
            "{name}"
        );
    }
    assert_eq!(csv["alice"]["packets"], "2400", "SUM over the peer ports");
    assert_eq!(csv["(transit)"]["bytes"], "500000000");
    assert_eq!(csv["(transit)"]["cost"], "");
    assert_eq!(csv.len(), 5);
}

#[test]
fn table_csv_and_json_carry_the_same_figures() {
    let dir = TempDir::new();
    let db = database(&dir);
    let tariff = dir.path("tariff.toml");
    std::fs::write(&tariff, TARIFF).unwrap();
    let format = |f: &str| ok(report(&db, &["--tariff", path_str(&tariff), "--format", f]));
    let (table_text, csv_text, json_text) = (format("table"), format("csv"), format("json"));
    let (table, csv) = (table(&table_text), csv(&csv_text));
    let json: Value = serde_json::from_str(&json_text).unwrap();

    assert_eq!(json["currency"], "EUR");
    assert_eq!(json["periods"], serde_json::json!(["peak", "off-peak"]));
    assert_eq!(
        table["user"],
        [
            "user", "up", "GB", "down", "GB", "GB", "packets", "flows", "online", "peak", "EUR",
            "off-peak", "EUR", "total", "EUR"
        ]
    );
    let mut lines: Vec<(String, &Value)> = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["user"].as_str().unwrap().to_owned(), g))
        .collect();
    lines.push(("(total)".into(), &json["totals"]));
    assert_eq!(
        lines
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob", "(unattributed)", "(total)"]
    );
    for (name, j) in &lines {
        let (c, t) = (&csv[name.as_str()], &table[name.as_str()]);
        let number = |key: &str| j[key].as_u64().unwrap();
        let cost = |value: &Value| format!("{:.4}", value.as_f64().unwrap());
        for key in ["bytes_up", "bytes_down", "bytes", "packets", "flows"] {
            assert_eq!(c[key], number(key).to_string(), "{name} {key}");
        }
        assert_eq!(
            c["online_s"],
            format!("{:.3}", j["online_s"].as_f64().unwrap())
        );
        assert_eq!(c["cost_peak"], cost(&j["cost_by_period"]["peak"]), "{name}");
        assert_eq!(
            c["cost_off-peak"],
            cost(&j["cost_by_period"]["off-peak"]),
            "{name}"
        );
        assert_eq!(c["cost"], cost(&j["cost"]), "{name}");

        let gb = |key: &str| format!("{:.3}", number(key) as f64 / 1e9);
        let online_s = j["online_s"].as_f64().unwrap() as u64;
        let hms = format!(
            "{}:{:02}:{:02}",
            online_s / 3600,
            online_s / 60 % 60,
            online_s % 60
        );
        assert_eq!(
            t[1..],
            [
                gb("bytes_up"),
                gb("bytes_down"),
                gb("bytes"),
                number("packets").to_string(),
                number("flows").to_string(),
                hms,
                c["cost_peak"].clone(),
                c["cost_off-peak"].clone(),
                c["cost"].clone(),
            ],
            "{name}"
        );
    }
    assert_eq!(json["transit"]["bytes"], 500_000_000);
    assert_eq!(table["(transit)"][1..], ["0.500", "500", "1"]);
    assert_eq!(csv["(transit)"]["packets"], "500");
}

#[test]
fn without_a_tariff_there_are_no_costs() {
    let dir = TempDir::new();
    let db = database(&dir);
    let csv_text = ok(report(&db, &["--format", "csv"]));
    assert_eq!(
        csv_text.lines().next().unwrap(),
        "user,bytes_up,bytes_down,bytes,packets,flows,online_s"
    );
    let json: Value = serde_json::from_str(&ok(report(&db, &["--format", "json"]))).unwrap();
    assert_eq!(json["totals"]["bytes"], 3_400_000_000u64);
    assert!(json.get("currency").is_none() && json["totals"].get("cost").is_none());
}

#[test]
fn by_session_subnet_and_org() {
    let dir = TempDir::new();
    let db = database(&dir);
    let sessions = csv(&ok(report(&db, &["--by", "session", "--format", "csv"])));
    assert_eq!(sessions["alice"]["session"], "alice-1");
    assert_eq!(sessions["(unattributed)"]["session"], "");

    let subnets = csv(&ok(report(
        &db,
        &[
            "--by",
            "subnet",
            "--subnet-prefix-v4",
            "25",
            "--format",
            "csv",
        ],
    )));
    // alice and the unattributed address share a /25, bob's address too:
    // online is when any of them was held, 07:00–09:00 and 19:30–24:00.
    assert_eq!(subnets["198.18.100.0/25"]["bytes"], "3400000000");
    assert_eq!(subnets["198.18.100.0/25"]["online_s"], "23400.000");

    let orgs = dir.path("orgs.toml");
    std::fs::write(
        &orgs,
        "[orgs]\n\"198.18.100.0/24\" = \"Acme\"\n\"198.18.100.8\" = \"Bob & Co\"\n",
    )
    .unwrap();
    let orgs = csv(&ok(report(
        &db,
        &["--by", "org", "--orgs", path_str(&orgs), "--format", "csv"],
    )));
    assert_eq!(orgs["Acme"]["bytes"], "3400000000");
    assert_eq!(orgs["Acme"]["online_s"], "7200.000");
    assert_eq!(orgs["Bob & Co"]["online_s"], "16200.000");
}

#[test]
fn a_bad_tariff_exits_2_naming_the_key() {
    let dir = TempDir::new();
    let db = database(&dir);
    let tariff = dir.path("tariff.toml");
    std::fs::write(
        &tariff,
        TARIFF.replace("price_per_gb = 0.50", "price_per_gig = 0.50"),
    )
    .unwrap();
    let run = report(&db, &["--tariff", path_str(&tariff)]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains(path_str(&tariff)), "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown field `price_per_gig`"),
        "{}",
        run.stderr
    );

    // As written in many a first draft: below a [[period]] header, TOML
    // puts the timezone into that period.
    let misplaced = TARIFF.replace("timezone = \"+01:00\"\n", "") + "timezone = \"+01:00\"\n";
    std::fs::write(&tariff, misplaced).unwrap();
    let run = report(&db, &["--tariff", path_str(&tariff)]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("`timezone` is a top-level key"),
        "{}",
        run.stderr
    );

    let gap = TARIFF.replace(
        "name = \"off-peak\"",
        "name = \"off-peak\"\ndays = [\"sat\", \"sun\"]",
    );
    std::fs::write(&tariff, gap).unwrap();
    let run = report(&db, &["--tariff", path_str(&tariff)]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("no period covers mon 00:00–08:00"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = TempDir::new();
    let db = database(&dir);
    let run = report(&db, &["--by", "org"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--orgs"), "{}", run.stderr);

    let orgs = dir.path("orgs.toml");
    std::fs::write(&orgs, "[orgs]\n\"198.18.100.7/24\" = \"Acme\"\n").unwrap();
    let run = report(&db, &["--by", "org", "--orgs", path_str(&orgs)]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("host bits"), "{}", run.stderr);

    let run = report(&db, &["--tariff", "/nonexistent/tariff.toml"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("/nonexistent/tariff.toml"),
        "{}",
        run.stderr
    );

    let (from, to) = (to(), local(FROM));
    let run = flowtally(&[
        "report",
        "--db",
        path_str(&db),
        "--from",
        &from,
        "--to",
        &to,
    ]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("must be before --to"), "{}", run.stderr);

    let run = report(&db, &["--subnet-prefix-v4", "33"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--subnet-prefix-v4"), "{}", run.stderr);
}

#[test]
fn a_missing_database_is_a_runtime_failure_exit_1() {
    let run = flowtally(&["report", "--db", "/nonexistent/flowtally.db"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("/nonexistent/flowtally.db"),
        "{}",
        run.stderr
    );
}

/// On a terminal (`script` gives the report one), a progress bar on stderr
/// and volumes each in its own unit; piped, neither: the table is in GB for
/// scripts and stderr stays empty.
#[test]
fn a_terminal_gets_progress_and_auto_units_a_pipe_neither() {
    let dir = TempDir::new();
    let db = database(&dir);
    let piped = report(&db, &[]);
    assert_eq!(piped.code, Some(0), "{}", piped.stderr);
    assert_eq!(piped.stderr, "", "nothing but the report when piped");
    assert!(table(&piped.stdout)["user"].contains(&"GB".to_owned()));

    let (from, to) = (local(FROM), to());
    let command = format!(
        "{BIN} report --db {} --from {from} --to {to}",
        path_str(&db)
    );
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(seen.contains("reading usage ["), "a progress bar: {seen:?}");
    assert!(seen.contains("100%"), "{seen:?}");
    assert!(
        seen.contains("\x1b[2K"),
        "the bar's line is cleared: {seen:?}"
    );
    // alice's 0.4 GB up and 2 GB down, each in its own unit.
    assert!(seen.contains("400.000 MB"), "{seen}");
    assert!(seen.contains("2.000 GB"), "{seen}");
}

/// `now` and times before now, wherever a time is taken.
#[test]
fn now_and_relative_times_are_taken() {
    let dir = TempDir::new();
    let db = database(&dir);
    let recent = ok(flowtally(&[
        "report",
        "--db",
        path_str(&db),
        "--from",
        "-30m",
        "--to",
        "now",
        "--format",
        "json",
    ]));
    let json: Value = serde_json::from_str(&recent).unwrap();
    let (from, to) = (
        ms(json["from"].as_str().unwrap()),
        ms(json["to"].as_str().unwrap()),
    );
    assert_eq!(to - from, 30 * 60_000, "{recent}");
    assert_eq!(
        json["groups"].as_array().unwrap().len(),
        1,
        "bob, still online: {recent}"
    );
    let whois = ok(flowtally(&[
        "whois",
        "198.18.100.8",
        "--at",
        "now",
        "--db",
        path_str(&db),
    ]));
    assert!(whois.contains("bob"), "{whois}");
    let bad = flowtally(&[
        "whois",
        "198.18.100.8",
        "--at",
        "-soon",
        "--db",
        path_str(&db),
    ]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("-30m"), "{}", bad.stderr);
}

/// One day of alice's and bob's traffic and some nobody held, in 1-minute
/// buckets (several rows per bucket, as the detail profile writes them),
/// every 5-minute interval's bytes a multiple of 75 so that its rate
/// (bytes × 8 ÷ 300 s) is a whole bit/s. Returns the database and, per
/// CSV row name, the bytes of each of the day's 288 intervals, down and up.
type Intervals = BTreeMap<String, [Vec<u64>; 2]>;

fn day_of_rates(dir: &TempDir) -> (std::path::PathBuf, Intervals) {
    let path = dir.path("rates.db");
    let mut conn = sqlite::open(&path).unwrap();
    let mut rng = flowtally::rng::Rng(18);
    let mut intervals = Intervals::new();
    let mut rows = Vec::new();
    for (user, ip) in [
        (Some("alice"), "198.18.100.7"),
        (Some("bob"), "198.18.100.8"),
        (None, "198.18.100.9"),
    ] {
        let name = user.unwrap_or("(unattributed)").to_owned();
        let series = intervals
            .entry(name)
            .or_insert_with(|| [vec![0; 288], vec![0; 288]]);
        for minute in 0..288 * 5 {
            for (side, direction) in [(0, Down), (1, Up)] {
                // Quiet most of the time, bursts now and then.
                let bytes = match rng.below(10) {
                    0..=5 => 0,
                    6..=8 => 75 * rng.below(1_000),
                    _ => 75 * rng.below(1_000_000),
                };
                if bytes == 0 {
                    continue;
                }
                let at = format!("{:02}:{:02}", minute / 60, minute % 60);
                // Two rows (two peer ports) that SQLite sums.
                let half = bytes / 75 / 2 * 75;
                for (part, port) in [(half, 443), (bytes - half, 80)] {
                    rows.push(row(user, ip, direction, &at, 1, part, port));
                }
                series[side][minute / 5] += bytes;
            }
        }
    }
    sqlite::write_usage(&mut conn, &rows).unwrap();
    (path, intervals)
}

/// numpy's nearest-rank percentile (`inverted_cdf`) of each series.
fn numpy_percentile(p: &str, series: &[&Vec<u64>]) -> Vec<u64> {
    let lists: Vec<String> = series.iter().map(|s| format!("{s:?}")).collect();
    let script = format!(
        "import numpy\nfor s in [{}]:\n    print(int(numpy.percentile(numpy.array(s, dtype=numpy.int64), {p}, method='inverted_cdf')))\n",
        lists.join(", ")
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn percentiles_of_five_minute_rates_match_numpy() {
    let dir = TempDir::new();
    let (db, intervals) = day_of_rates(&dir);
    let mut total = [vec![0; 288], vec![0; 288]];
    for series in intervals.values() {
        for side in 0..2 {
            for (sum, bytes) in total[side].iter_mut().zip(&series[side]) {
                *sum += bytes;
            }
        }
    }
    for p in ["95", "99.5", "50"] {
        let out = csv(&ok(report(&db, &["--percentile", p, "--format", "csv"])));
        let column = |way| format!("p{p}_{way}_bps");
        for (name, series) in intervals.iter().chain([(&"(total)".to_owned(), &total)]) {
            let expected = numpy_percentile(p, &[&series[0], &series[1]]);
            // 75 bytes in 300 s are 2 bit/s.
            let (down, up) = (expected[0] * 2 / 75, expected[1] * 2 / 75);
            assert!(down > 0 || p != "95", "{name}: a test of nothing");
            let line = &out[name.as_str()];
            assert_eq!(line[&column("in")], down.to_string(), "{name} p{p}");
            assert_eq!(line[&column("out")], up.to_string(), "{name} p{p}");
            assert_eq!(line[&column("max")], down.max(up).to_string(), "{name}");
        }
    }
    let json: Value = serde_json::from_str(&ok(report(
        &db,
        &["--percentile", "95", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json["percentile"], 95);
    assert_eq!(json["intervals"], 288);
    let table = ok(report(&db, &["--percentile", "95"]));
    assert!(
        table.contains("95th percentile of 288 5-minute rates"),
        "{table}"
    );
    assert!(
        table.contains("p95 in") && table.contains("bit/s"),
        "{table}"
    );
}

#[test]
fn a_percentile_needs_a_start_and_buckets_within_five_minutes() {
    let dir = TempDir::new();
    // The example database has a 4-minute bucket from 07:58: across 08:00.
    let db = database(&dir);
    let run = report(&db, &["--percentile", "95"]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("crosses a 5-minute boundary"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("aggregation.bucket"), "{}", run.stderr);
    let run = flowtally(&["report", "--db", path_str(&db), "--percentile", "95"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--percentile needs --from"),
        "{}",
        run.stderr
    );
    let run = report(&db, &["--percentile", "101"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("not a percentile"), "{}", run.stderr);
}

/// The Monday's traffic with destination classes: alice 2 GB from a local
/// peer and 1 GB from the IX at 10:00 (peak) and 1 GB from an unclassified
/// peer at 21:00 (off-peak); bob 0.5 GB to a local peer at 21:00, in two
/// rows (two peer ports) SQLite sums; transit from the IX.
fn classed_database(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path("classes.db");
    let mut conn = sqlite::open(&path).unwrap();
    let classed = |class: Option<&str>, row: UsageRow| UsageRow {
        class: class.map(str::to_owned),
        ..row
    };
    let alice = |at, bytes, port| row(Some("alice"), "198.18.100.7", Down, at, 1, bytes, port);
    sqlite::write_usage(
        &mut conn,
        &[
            classed(Some("local"), alice("10:00", 2 * GB, 443)),
            classed(Some("ix"), alice("10:00", GB, 80)),
            classed(None, alice("21:00", GB, 443)),
            classed(
                Some("local"),
                row(Some("bob"), "198.18.100.8", Up, "21:00", 1, GB / 4, 443),
            ),
            classed(
                Some("local"),
                row(Some("bob"), "198.18.100.8", Up, "21:00", 1, GB / 4, 80),
            ),
            classed(
                Some("ix"),
                row(None, "203.0.113.5", Transit, "12:00", 1, GB, 443),
            ),
        ],
    )
    .unwrap();
    path
}

#[test]
fn by_class_the_lines_add_up_to_the_total_and_a_free_class_costs_nothing() {
    let dir = TempDir::new();
    let db = classed_database(&dir);
    let tariff = dir.path("tariff.toml");
    std::fs::write(
        &tariff,
        format!("{TARIFF}\n[classes.local]\nprice_per_gb = 0\n[classes.ix]\nprice_per_gb = {{ peak = 0.10 }}\n"),
    )
    .unwrap();
    let tariff = path_str(&tariff);
    let classes = csv(&ok(report(
        &db,
        &["--by", "class", "--tariff", tariff, "--format", "csv"],
    )));
    assert_eq!(classes["local"]["bytes"], "2500000000");
    assert_eq!(classes["local"]["cost"], "0.0000");
    assert_eq!(classes["ix"]["bytes"], "1000000000");
    assert_eq!(classes["ix"]["cost_peak"], "0.1000");
    assert_eq!(classes["(unclassified)"]["cost_off-peak"], "0.2000");
    // Costs have 4 decimals: compared in ten-thousandths, exactly.
    let units = |field: &str| field.replace('.', "").parse::<u64>().unwrap();
    let sum = |column: &str| -> u64 {
        ["local", "ix", "(unclassified)"]
            .iter()
            .map(|c| units(&classes[*c][column]))
            .sum()
    };
    for column in [
        "bytes_up",
        "bytes_down",
        "bytes",
        "packets",
        "flows",
        "cost",
    ] {
        assert_eq!(sum(column), units(&classes["(total)"][column]), "{column}");
    }
    assert_eq!(classes["(total)"]["bytes"], "4500000000");
    assert_eq!(classes["(transit)"]["bytes"], "1000000000");
    // Per user, the same tariff: alice pays 0.10 (ix, peak) + 0.20 (the
    // unclassified off-peak GB); bob's local traffic is free.
    let users = csv(&ok(report(&db, &["--tariff", tariff, "--format", "csv"])));
    assert_eq!(users["alice"]["cost"], "0.3000");
    assert_eq!(users["bob"]["cost"], "0.0000");
    assert_eq!(users["(total)"]["cost"], classes["(total)"]["cost"]);
}

#[test]
fn a_database_from_before_classes_reads_as_unclassified() {
    let dir = TempDir::new();
    let db = database(&dir);
    // As flowtally before destination classes left it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "ALTER TABLE usage DROP COLUMN class; ALTER TABLE usage_pending DROP COLUMN class;
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    let classes = csv(&ok(report(&db, &["--by", "class", "--format", "csv"])));
    assert_eq!(classes["(unclassified)"]["bytes"], "3400000000");
    assert_eq!(classes.len(), 3, "(unclassified), (total), (transit)");
}
