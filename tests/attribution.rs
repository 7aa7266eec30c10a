//! Attribution end to end with real peers: radclient, on the NAS's side of
//! the softflowd lab, opens, updates and closes sessions for several users;
//! softflowd exports (NetFlow v5) the synthetic capture replayed live; the
//! per-user byte totals in `usage` equal those computed from the pcap and
//! the session timeline, and what is left unattributed is exactly the
//! traffic outside any session — through XDP and through sockets.
//!
//! ```text
//!  replay ns               probe ns = the NAS               collector ns
//!  tcpreplay -> fta ====== ftb  softflowd -n 198.18.0.2:2055
//!                               radclient 198.18.0.2:1813
//!                               fta 198.18.0.1/30 ======== ftb 198.18.0.2/30
//!                                                          flowtally (XDP on ftb)
//! ```
//!
//! softflowd's record times are the real times of the replay, so the
//! timeline is built around the real clock: `T`, the Unix second read just
//! before the sessions are sent and the capture replayed, and every
//! Event-Timestamp is `T` plus or minus whole seconds. Every flow then
//! happens in `[T, T + stop_grace)` (the test checks the rows' times), and for each of the six subscribers of the IPv4
//! capture one user, or nobody, owns all of its traffic:
//!
//! | subscriber | sessions (Event-Timestamp − T, s) | owner of its flows |
//! |---|---|---|
//! | A `.10` | alice Start −60, Interim-Update −30, never stops | alice |
//! | B `.11` | none | nobody |
//! | C `.12` | carol Start −30, sent only *after* flowtally counted every record (a late Start) | carol, once the Start comes |
//! | D `.13` | dave Start −60, Stop −25; erin Start −20 (IP reuse: dave's grace would cover the flows, but erin holds the address) | erin |
//! | E `.14` | frank Start −90, Stop −40 (beyond the grace) | nobody |
//! | F `.15` | fay Start −60, Stop 0 (within the grace) | fay |
//!
//! `stop_grace` is 30 s (a config file: it has no flag) so that fay's grace
//! covers the replay with a wide margin; `--late-window 60s` keeps the rows
//! of B, C and E waiting (`flowtally_association_backlog`) longer than the
//! test runs: C's are attributed when carol's Start arrives, B's and E's
//! are written unattributed at shutdown. `transit` rows are never
//! attributed; the conversation between B and C counts for both (`up` for
//! the sender, `down` for the receiver): B's half for nobody, C's for carol.

#[path = "support/pcap.rs"]
mod pcap;
#[path = "support/softflowd_lab.rs"]
mod softflowd_lab;
mod support;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pcap::{Mix, SUBSCRIBERS};
use softflowd_lab::{COLLECTOR, Lab, Version, export_synthetic_capture, merged};
use support::{
    Flowtally, NetNs, PATIENCE, eventually, path_str, radclient_in, require_root, scrape,
};

const SECRET: &str = "testing123";
/// flowtally's RADIUS server: the collector's end of the export link.
const RADIUS: &str = "198.18.0.2:1813";
/// The NAS: the probe's end of the export link, where radclient runs.
const NAS: &str = "198.18.0.1";
/// `stop_grace`, set in the config file.
const STOP_GRACE_S: u64 = 30;

/// One accounting request: `status` for `user`'s session (Acct-Session-Id
/// `<user>-1`) on the subscriber `SUBSCRIBERS[subscriber]`, at Event-Timestamp
/// T + `at` seconds.
struct Acct {
    status: &'static str,
    user: &'static str,
    subscriber: usize,
    at: i64,
}

const fn acct(status: &'static str, user: &'static str, subscriber: usize, at: i64) -> Acct {
    Acct {
        status,
        user,
        subscriber,
        at,
    }
}

/// Sent before the replay, in this order (see the module documentation).
const BEFORE: [Acct; 9] = [
    acct("Start", "alice", 0, -60),
    acct("Interim-Update", "alice", 0, -30),
    acct("Start", "dave", 3, -60),
    acct("Stop", "dave", 3, -25),
    acct("Start", "erin", 3, -20),
    acct("Start", "frank", 4, -90),
    acct("Stop", "frank", 4, -40),
    acct("Start", "fay", 5, -60),
    acct("Stop", "fay", 5, 0),
];

/// Sent once flowtally holds the rows of subscriber C waiting.
const LATE: Acct = acct("Start", "carol", 2, -30);

/// Sessions open after [`BEFORE`] (alice's and erin's), and after [`LATE`].
const OPEN_BEFORE: u64 = 2;
const OPEN_AFTER: u64 = 3;

/// Who owns each subscriber's flows, all of which happen in
/// `[T, T + STOP_GRACE_S)`, once every request has been sent.
const OWNERS: [Option<&str>; 6] = [
    Some("alice"),
    None,
    Some("carol"),
    Some("erin"),
    None,
    Some("fay"),
];

impl Acct {
    /// radclient's input for this request.
    fn attributes(&self, t: u64) -> String {
        let ip = SUBSCRIBERS[self.subscriber];
        let event = t.checked_add_signed(self.at).unwrap();
        let mut attributes = format!(
            "Acct-Status-Type = {}, User-Name = {user}, Acct-Session-Id = {user}-1, \
             Framed-IP-Address = {ip}, NAS-IP-Address = {NAS}, Event-Timestamp = {event}",
            self.status,
            user = self.user,
        );
        if self.status != "Start" {
            let start = BEFORE
                .iter()
                .find(|a| a.user == self.user && a.status == "Start")
                .expect("a Start for every session");
            attributes.push_str(&format!(", Acct-Session-Time = {}", self.at - start.at));
        }
        if self.status == "Stop" {
            attributes.push_str(", Acct-Terminate-Cause = User-Request");
        }
        attributes
    }

    /// Sends this request with radclient from the NAS's namespace; it must
    /// be answered (flowtally answers once the record is on disk).
    fn send(&self, nas: &NetNs, t: u64) {
        radclient_in(nas, RADIUS, SECRET, &self.attributes(t));
    }
}

/// `user_name` → bytes, and (`user_name`, subscriber IP, direction) →
/// bytes.
type ByUser = BTreeMap<Option<String>, u64>;
type ByRow = BTreeMap<(Option<String>, IpAddr, String), u64>;

fn open(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database")
}

/// `SELECT user_name, SUM(bytes) FROM usage GROUP BY user_name`.
fn by_user(db: &Path) -> ByUser {
    open(db)
        .prepare("SELECT user_name, SUM(bytes) FROM usage GROUP BY user_name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The same by user, subscriber and direction.
fn by_row(db: &Path) -> ByRow {
    open(db)
        .prepare(
            "SELECT user_name, subscriber_ip, direction, SUM(bytes) FROM usage GROUP BY 1, 2, 3",
        )
        .unwrap()
        .query_map([], |row| {
            let ip: String = row.get(1)?;
            let bytes: i64 = row.get(3)?;
            Ok((
                (row.get(0)?, ip.parse().unwrap(), row.get(2)?),
                bytes as u64,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every (`user_name`, `session_id`) pair in `usage`.
fn sessions(db: &Path) -> Vec<(Option<String>, Option<String>)> {
    open(db)
        .prepare("SELECT DISTINCT user_name, session_id FROM usage")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

/// The acceptance test, flowtally through `mode` (`xdp` or `socket`).
fn usage_is_attributed_along_the_session_timeline(mode: &str) {
    require_root();
    let lab = Lab::new();
    let version = Version::V5;
    assert_eq!(version.mix(), Mix::Ipv4);
    let db = lab.dir.path("ft.db");
    let config = lab.dir.path("flowtally.toml");
    std::fs::write(&config, format!("stop_grace = \"{STOP_GRACE_S}s\"\n")).unwrap();
    let nets: Vec<String> = Mix::Ipv4
        .subscriber_nets()
        .iter()
        .map(|net| net.to_string())
        .collect();
    let mut args = vec!["--config", path_str(&config), "--mode", mode];
    if mode == "xdp" {
        args.extend(["--iface", &lab.collector_if]);
    }
    args.extend(["--netflow", COLLECTOR, "--metrics", "127.0.0.1:0"]);
    args.extend(["--radius", RADIUS, "--radius-secret", SECRET]);
    args.extend(["--db", path_str(&db)]);
    for net in &nets {
        args.extend(["--subscriber-net", net]);
    }
    args.extend(["--flush-interval", "250ms", "--late-window", "60s"]);
    let mut flowtally = Flowtally::start(Some(&lab.collector), &args);
    if mode == "xdp" {
        assert_eq!(
            flowtally.ready.xdp,
            [(lab.collector_if.clone(), "native".to_owned())]
        );
    }
    let addr = flowtally.metrics_addr();
    let metrics = || {
        catch_unwind(AssertUnwindSafe(|| lab.collector.enter(|| scrape(addr))))
            .unwrap_or_else(|_| panic!("cannot scrape flowtally:\n{}", flowtally.stderr()))
    };
    let value = |name: &str| metric(&metrics(), name);

    // The timeline, around the real clock.
    let t = unix_secs(SystemTime::now());
    for request in &BEFORE {
        request.send(&lab.probe, t);
    }
    // The gauge is set just after the answers (the history before them).
    eventually("alice's and erin's sessions open", || {
        value("flowtally_sessions_open") == OPEN_BEFORE
    });

    // The replay; after it, flowtally must have counted every record.
    let xdp = r#"flowtally_record_bytes_total{path="xdp"}"#;
    let socket = r#"flowtally_record_bytes_total{path="socket"}"#;
    let phases = export_synthetic_capture(&lab, version, |phase| {
        let sent = pcap::total(&phase.flows).bytes;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let metrics = metrics();
            let counted = metric(&metrics, xdp) + metric(&metrics, socket);
            if counted >= sent {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "flowtally counted {counted} of {sent} record bytes; stderr:\n{}",
                flowtally.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    });
    let finished = SystemTime::now();
    assert!(
        unix_secs(finished) < t + STOP_GRACE_S,
        "the replay ended {}s after T: the timeline assumes every flow within \
         [T, T + stop_grace)",
        unix_secs(finished) - t
    );
    let flows = merged(&phases);
    let total = pcap::total(&flows).bytes;
    {
        let metrics = metrics();
        let (by_xdp, by_socket) = (metric(&metrics, xdp), metric(&metrics, socket));
        assert_eq!(
            by_xdp + by_socket,
            total,
            "xdp {by_xdp}, socket {by_socket}"
        );
        match mode {
            "xdp" => assert_eq!(by_xdp, total, "the kernel parsed every export"),
            _ => assert_eq!(by_xdp, 0),
        }
    }

    // The expectation: the pcap's per-(subscriber, direction) totals, each
    // owned as the timeline says; transit by nobody.
    let usage = pcap::usage(&flows, &Mix::Ipv4.subscriber_nets());
    let owner = |ip: IpAddr, direction: &str| -> Option<String> {
        if direction == "transit" {
            return None;
        }
        let at = SUBSCRIBERS
            .iter()
            .position(|s| IpAddr::V4(*s) == ip)
            .unwrap_or_else(|| panic!("{ip} is none of the pcap's subscribers"));
        OWNERS[at].map(str::to_owned)
    };
    let mut expected_rows = ByRow::new();
    let mut expected = ByUser::new();
    for (&(ip, direction), totals) in &usage {
        let user = owner(ip, direction);
        *expected_rows
            .entry((user.clone(), ip, direction.to_owned()))
            .or_default() += totals.bytes;
        *expected.entry(user).or_default() += totals.bytes;
    }
    let subscriber = |i: usize| IpAddr::V4(SUBSCRIBERS[i]);
    let bytes_of = |pick: &dyn Fn(IpAddr, &str) -> bool| -> u64 {
        usage
            .iter()
            .filter(|((ip, direction), _)| pick(*ip, direction))
            .map(|(_, totals)| totals.bytes)
            .sum()
    };
    let transit = bytes_of(&|_, direction| direction == "transit");
    let of = |i: usize| bytes_of(&|ip, direction| direction != "transit" && ip == subscriber(i));
    // Between B (.11) and C (.12), both ways: up for one, down for the
    // other, so counted twice.
    let pair = [subscriber(1), subscriber(2)];
    let between: u64 = flows
        .iter()
        .filter(|(key, _)| pair.contains(&key.src) && pair.contains(&key.dst))
        .map(|(_, totals)| totals.bytes)
        .sum();
    assert!(between > 0 && transit > 0 && (0..6).all(|i| of(i) > 0));
    assert_eq!(expected[&None], of(1) + of(4) + transit, "B + E + transit");
    assert_eq!(expected.values().sum::<u64>(), total + between);
    eprintln!("expected bytes by user: {expected:?}");

    // Every record has been counted; two whole flushes later every row is
    // written or waiting. Those of B, C and E wait: none is in `usage`.
    let counted_at = value("flowtally_drain_duration_seconds_count");
    let carol = expected[&Some("carol".to_owned())];
    let early = expected.values().sum::<u64>() - expected[&None] - carol;
    eventually("all rows but B's, C's and E's to be written", || {
        let metrics = metrics();
        metric(&metrics, "flowtally_drain_duration_seconds_count") >= counted_at + 2
            && metric(&metrics, "flowtally_attributed_bytes_total") == early
    });
    let metrics_now = metrics();
    assert_eq!(
        metric(&metrics_now, "flowtally_unattributed_bytes_total"),
        transit,
        "only transit is written unattributed while the others wait"
    );
    let waiting = metric(&metrics_now, "flowtally_association_backlog");
    assert!(waiting > 0, "rows wait for a late Start");
    let written: Vec<IpAddr> = by_row(&db).keys().map(|(_, ip, _)| *ip).collect();
    for i in [1, 2, 4] {
        assert!(
            !written.contains(&subscriber(i)),
            "{} has rows in usage before any session covers them",
            subscriber(i)
        );
    }
    eprintln!("{waiting} rows waiting for a late Start");

    // carol's late Start: her rows leave the backlog, attributed to her.
    LATE.send(&lab.probe, t);
    eventually("carol's session open", || {
        value("flowtally_sessions_open") == OPEN_AFTER
    });
    eventually("C's rows to find carol's late Start", || {
        value("flowtally_attributed_bytes_total") == early + carol
    });
    let still_waiting = value("flowtally_association_backlog");
    assert!(
        0 < still_waiting && still_waiting < waiting,
        "B's and E's rows wait on: {still_waiting} of {waiting}"
    );

    // A clean stop writes what still waits, unattributed.
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let (first_ms, last_ms) = open(&db)
        .query_row("SELECT MIN(first_ms), MAX(last_ms) FROM usage", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .unwrap();
    let t_ms = t as i64 * 1000;
    assert!(
        t_ms <= first_ms && last_ms < t_ms + STOP_GRACE_S as i64 * 1000,
        "record times {first_ms}..={last_ms} ms not within [T, T + stop_grace), T = {t_ms} ms: \
         the expectation assumes they are"
    );
    let got = by_user(&db);
    eprintln!("usage by user: {got:?}");
    assert_eq!(
        got, expected,
        "SELECT user_name, SUM(bytes) ... GROUP BY user_name"
    );
    assert_eq!(
        by_row(&db),
        expected_rows,
        "by user, subscriber and direction"
    );
    assert_eq!(got.values().sum::<u64>(), total + between, "nothing lost");

    // Each attributed row names its user's session; unattributed ones none.
    let sessions = sessions(&db);
    for (user, session) in &sessions {
        assert_eq!(
            session.as_deref(),
            user.as_ref().map(|user| format!("{user}-1")).as_deref(),
            "session of {user:?}"
        );
    }
    let users = sessions.iter().filter(|(user, _)| user.is_some()).count();
    assert_eq!(users, 4, "alice, carol, erin, fay: {sessions:?}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_usage_is_attributed_along_a_radclient_timeline() {
    usage_is_attributed_along_the_session_timeline("xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn socket_usage_is_attributed_along_a_radclient_timeline() {
    usage_is_attributed_along_the_session_timeline("socket");
}
