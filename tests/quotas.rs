//! Quotas enforced over RADIUS end to end, on loopback: radclient opens
//! sessions, NetFlow v5 exports push one user over a quota, and a NAS's
//! RFC 5176 server played by pyrad (`support/coa_nas.py`, which checks the
//! Request Authenticator and the Message-Authenticator) receives exactly one
//! Disconnect-Request per session of that user and period, none for the
//! others; a NAK is recorded and retried as configured; a NAS with another
//! secret gets its silence or its unverifiable answers logged and counted,
//! never a crash; a restart keeps the usage and sends nothing twice.
//!
//! Flows and sessions are at the real time (quotas count calendar days of
//! the real clock); the NASes are 127.0.0.2 and 127.0.0.3, which the
//! sessions report as NAS-IP-Address.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flowtally::netflow::v5::{Record, encode};
use flowtally_common::v5::Header;
use serde_json::Value;
use support::{
    BIN, Flowtally, PATIENCE, RADIUS_SECRET, TempDir, eventually, eventually_equal, path_str,
    radclient, scrape, start_on_loopback,
};

const COA_SECRET: &str = "coa-secret";
const FLUSHES: &str = "flowtally_drain_duration_seconds_count";
const ATTRIBUTED: &str = "flowtally_attributed_bytes_total";

/// pyrad's RFC 5176 server on `address`, port chosen by the kernel.
struct Nas {
    child: Child,
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Nas {
    fn start(address: &str, secret: &str, extra: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/coa_nas.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([address, secret])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with pyrad (PyPI) runs the NAS");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("the NAS says where it listens")
            .unwrap();
        let port = first
            .strip_prefix("listen ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("not `listen PORT`: {first}"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&requests);
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let request = serde_json::from_str(&line).expect("a JSON line per request");
                sink.lock().unwrap().push(request);
            }
        });
        Self {
            child,
            port,
            requests,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Nas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// A Start of `user`'s session `id` holding `ip`, reported by NAS `nas`.
fn start(radius: SocketAddr, user: &str, id: &str, ip: &str, nas: &str) {
    let answered = radclient(
        radius,
        RADIUS_SECRET,
        &format!(
            "Acct-Status-Type = Start, User-Name = {user}, Acct-Session-Id = {id}, \
             Framed-IP-Address = {ip}, NAS-IP-Address = {nas}, Event-Timestamp = {}",
            now_s() - 60
        ),
    );
    assert!(answered, "{user}'s Start answered");
}

/// One v5 export, now: `ip` sent (`up`) or received `octets` bytes.
fn flow(ip: [u8; 4], octets: u32, up: bool) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 1_000_000,
        unix_secs: now_s(),
        ..Header::default()
    };
    let peer = [198, 19, 0, 1];
    let (src, dst) = if up { (ip, peer) } else { (peer, ip) };
    let record = Record {
        src,
        dst,
        packets: 1,
        octets,
        first: 1_000_000,
        last: 1_000_000,
        protocol: 6,
        ..Record::default()
    };
    encode(&header, &[record])
}

const BOB: [u8; 4] = [198, 18, 100, 7];
const CAROL: [u8; 4] = [198, 18, 100, 8];
const BOB_AGAIN: [u8; 4] = [198, 18, 100, 9];

/// A config file: `nas` entries (address, secret, port, extra keys), then
/// `quotas`.
fn config(dir: &TempDir, nas: &[(&str, &str, u16, &str)], quotas: &str) -> PathBuf {
    let mut text = String::new();
    for (address, secret, port, extra) in nas {
        text += &format!(
            "[[radius.nas]]\naddress = \"{address}\"\nsecret = \"{secret}\"\ncoa_port = {port}\n\
             timeout = \"200ms\"\nretries = 2\n{extra}\n"
        );
    }
    text += quotas;
    let path = dir.path("flowtally.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const DAILY_1MB: &str = r#"
[[quotas]]
name = "daily-1mb"
users = ["q-bob"]
period = "day"
bytes = 1000000
direction = "both"
classes = ["*"]
action = "disconnect"
notify_at = [0.5]

[[quotas]]
name = "everyone-10mb"
users = "*"
period = "month"
bytes = 10000000
"#;

fn start_daemon(db: &Path, config: &Path) -> Flowtally {
    start_on_loopback(
        db,
        &[
            "--config",
            path_str(config),
            "--subscriber-net",
            "198.18.100.0/24",
            "--flush-interval",
            "100ms",
        ],
    )
}

/// The `enforcement` table: quota, user, session id, result, Error-Cause,
/// transmissions, in order.
type Enforcement = (
    String,
    String,
    String,
    Option<String>,
    Option<u32>,
    Option<u32>,
);

fn enforcement(db: &Path) -> Vec<Enforcement> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare(
        "SELECT quota, user_name, session_id, result, error_cause, transmissions
         FROM enforcement ORDER BY id",
    )
    .unwrap()
    .query_map([], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn row(session: &str, result: &str, cause: Option<u32>, sent: u32) -> Enforcement {
    (
        "daily-1mb".into(),
        "q-bob".into(),
        session.into(),
        Some(result.into()),
        cause,
        Some(sent),
    )
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    scrape(addr).get(name).copied().unwrap_or(0.0) as u64
}

/// Sends `exports` and waits until the flush that attributed them (to a
/// total of `attributed` bytes) and `then` more flushes have run.
fn push(flowtally: &Flowtally, exports: &[Vec<u8>], attributed: u64, then: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for export in exports {
        socket.send_to(export, flowtally.ready.netflow[0]).unwrap();
    }
    let metrics = flowtally.metrics_addr();
    eventually_equal("the exports attributed", attributed, || {
        metric(metrics, ATTRIBUTED)
    });
    let seen = metric(metrics, FLUSHES);
    eventually("more flushes", || metric(metrics, FLUSHES) >= seen + then);
}

/// The request's attributes as pyrad decoded them.
fn names(request: &Value) -> (&str, &str, &str, &str) {
    let a = &request["attributes"];
    (
        request["code"].as_str().unwrap(),
        a["User-Name"].as_str().unwrap(),
        a["Acct-Session-Id"].as_str().unwrap(),
        a["Framed-IP-Address"].as_str().unwrap(),
    )
}

#[test]
fn one_user_over_a_quota_gets_one_disconnect_per_session_and_period_even_across_a_restart() {
    let nas = Nas::start("127.0.0.2", COA_SECRET, &[]);
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = config(&tmp, &[("127.0.0.2", COA_SECRET, nas.port, "")], DAILY_1MB);
    let mut flowtally = start_daemon(&db, &config);
    let radius = flowtally.ready.radius.unwrap();
    let metrics = flowtally.metrics_addr();
    start(radius, "q-bob", "bob-1", "198.18.100.7", "127.0.0.2");
    start(radius, "q-carol", "carol-1", "198.18.100.8", "127.0.0.2");

    // bob at 600 kB, carol (in no daily quota) at 2 MB: half bob's quota.
    push(
        &flowtally,
        &[flow(BOB, 600_000, true), flow(CAROL, 2_000_000, false)],
        2_600_000,
        2,
    );
    assert_eq!(
        metric(
            metrics,
            "flowtally_quota_crossings_total{quota=\"daily-1mb\",threshold=\"0.5\"}"
        ),
        1
    );
    assert!(nas.requests().is_empty(), "nobody is over yet");

    // bob over: one Disconnect-Request, for his session.
    let sent = Instant::now();
    push(&flowtally, &[flow(BOB, 500_000, false)], 3_100_000, 0);
    eventually_equal(
        "bob's disconnect acknowledged",
        vec![row("bob-1", "ack", None, 1)],
        || enforcement(&db),
    );
    eprintln!(
        "measured: from the export over the quota to its ACK recorded: {:?} (flushes every 100ms)",
        sent.elapsed()
    );
    let requests = nas.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        names(&requests[0]),
        ("Disconnect-Request", "q-bob", "bob-1", "198.18.100.7")
    );
    assert_eq!(requests[0]["attributes"]["NAS-IP-Address"], "127.0.0.2");
    assert_eq!(requests[0]["message_authenticator"], true);
    let stamp = requests[0]["attributes"]["Event-Timestamp"]
        .as_u64()
        .unwrap();
    assert!(
        stamp.abs_diff(u64::from(now_s())) < 60,
        "Event-Timestamp {stamp}"
    );
    assert_eq!(
        metric(
            metrics,
            "flowtally_coa_requests_total{kind=\"disconnect\",result=\"ack\"}"
        ),
        1
    );

    // More of bob's traffic and flushes: nothing more for bob-1.
    push(&flowtally, &[flow(BOB, 100_000, true)], 3_200_000, 3);
    assert_eq!(nas.requests().len(), 1);

    // bob reconnects while over: one more, for the new session only.
    start(radius, "q-bob", "bob-2", "198.18.100.9", "127.0.0.2");
    eventually_equal("bob-2's disconnect", 2, || nas.requests().len());
    assert_eq!(
        names(&nas.requests()[1]),
        ("Disconnect-Request", "q-bob", "bob-2", "198.18.100.9")
    );
    eventually_equal(
        "both acknowledged",
        vec![row("bob-1", "ack", None, 1), row("bob-2", "ack", None, 1)],
        || enforcement(&db),
    );

    // A restart mid-period: the usage is restored, nothing sent again.
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let flowtally = start_daemon(&db, &config);
    let metrics = flowtally.metrics_addr();
    eventually_equal("bob over again after the restart", 1, || {
        metric(metrics, "flowtally_quota_users_over")
    });
    push(&flowtally, &[flow(BOB_AGAIN, 1_000, true)], 1_000, 3);
    assert_eq!(nas.requests().len(), 2, "{:?}", nas.requests());
    assert_eq!(
        enforcement(&db),
        [row("bob-1", "ack", None, 1), row("bob-2", "ack", None, 1)]
    );
    assert_eq!(
        metric(
            metrics,
            "flowtally_quota_crossings_total{quota=\"daily-1mb\",threshold=\"1\"}"
        ),
        0,
        "crossed before the restart: not announced again"
    );

    // `flowtally quota` tells the usage, the state and the last action.
    let out = Command::new(BIN)
        .args([
            "quota",
            "--db",
            path_str(&db),
            "--config",
            path_str(&config),
        ])
        .args(["--user", "q-bob"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|line| line.starts_with("daily-1mb"))
        .unwrap_or_else(|| panic!("a line for daily-1mb: {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[..6],
        ["daily-1mb", "q-bob", "1201000", "1000000", "120.1%", "over"],
        "{stdout}"
    );
    assert!(line.contains("disconnect bob-2 ack"), "{line}");
}

#[test]
fn a_nak_is_recorded_and_retried_as_configured() {
    let nas = Nas::start("127.0.0.2", COA_SECRET, &["--naks", "1"]);
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = config(
        &tmp,
        &[("127.0.0.2", COA_SECRET, nas.port, "nak_retries = 1")],
        DAILY_1MB,
    );
    let flowtally = start_daemon(&db, &config);
    start(
        flowtally.ready.radius.unwrap(),
        "q-bob",
        "bob-1",
        "198.18.100.7",
        "127.0.0.2",
    );
    push(&flowtally, &[flow(BOB, 1_500_000, true)], 1_500_000, 0);
    eventually_equal(
        "a NAK (506, Resources Unavailable), then an ACK",
        vec![
            row("bob-1", "nak", Some(506), 1),
            row("bob-1", "ack", None, 1),
        ],
        || enforcement(&db),
    );
    // A reader thread collects the NAS's log, so it may trail the daemon's row.
    eventually_equal(
        "the NAS's log: a NAK, then an ACK",
        vec!["nak".to_owned(), "ack".to_owned()],
        || {
            nas.requests()
                .iter()
                .map(|r| r["answer"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        },
    );
    let metrics = flowtally.metrics_addr();
    for result in ["nak", "ack"] {
        assert_eq!(
            metric(
                metrics,
                &format!("flowtally_coa_requests_total{{kind=\"disconnect\",result=\"{result}\"}}")
            ),
            1
        );
    }
    assert!(
        flowtally
            .stderr()
            .contains("Error-Cause 506 (Resources Unavailable)"),
        "{}",
        flowtally.stderr()
    );
}

#[test]
fn a_nas_with_another_secret_gets_silence_or_bad_answers_logged_never_a_crash() {
    // Drops what does not verify (silence) / answers anyway, with its secret.
    let silent = Nas::start("127.0.0.2", "not-ours", &[]);
    let answering = Nas::start("127.0.0.3", "not-ours", &["--answer-unverified"]);
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = config(
        &tmp,
        &[
            ("127.0.0.2", COA_SECRET, silent.port, ""),
            ("127.0.0.3", COA_SECRET, answering.port, ""),
        ],
        &DAILY_1MB.replace("[\"q-bob\"]", "[\"q-bob\", \"q-carol\"]"),
    );
    let mut flowtally = start_daemon(&db, &config);
    let radius = flowtally.ready.radius.unwrap();
    start(radius, "q-bob", "bob-1", "198.18.100.7", "127.0.0.2");
    start(radius, "q-carol", "carol-1", "198.18.100.8", "127.0.0.3");
    let started = Instant::now();
    push(
        &flowtally,
        &[flow(BOB, 1_500_000, true), flow(CAROL, 1_500_000, true)],
        3_000_000,
        0,
    );
    let timeout = |session: &str, user: &str| {
        let mut row = row(session, "timeout", None, 3);
        row.1 = user.into();
        row
    };
    eventually_equal(
        "both requests given up after 2 retransmissions",
        vec![timeout("bob-1", "q-bob"), timeout("carol-1", "q-carol")],
        || {
            let mut rows = enforcement(&db);
            rows.sort();
            rows
        },
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200 + 400 + 800),
        "waits double: 200ms, 400ms, 800ms"
    );
    assert!(
        silent.requests().is_empty(),
        "pyrad dropped them unverified"
    );
    let answered = answering.requests();
    assert_eq!(
        answered.len(),
        3,
        "each transmission answered: {answered:?}"
    );
    assert!(answered.iter().all(|r| r["verified"] == false));
    let metrics = flowtally.metrics_addr();
    assert_eq!(
        metric(
            metrics,
            "flowtally_coa_bad_responses_total{reason=\"radius_bad_authenticator\"}"
        ),
        3
    );
    assert_eq!(metric(metrics, "flowtally_coa_retransmissions_total"), 4);
    assert_eq!(
        metric(
            metrics,
            "flowtally_coa_requests_total{kind=\"disconnect\",result=\"timeout\"}"
        ),
        2
    );
    let stderr = flowtally.stderr();
    assert!(stderr.contains("does not answer the request"), "{stderr}");
    assert!(
        stderr.contains("no valid answer after 3 transmissions"),
        "{stderr}"
    );
    // Still running, and stops cleanly.
    push(&flowtally, &[flow(BOB, 10, true)], 3_000_010, 1);
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn a_coa_quota_sends_its_attributes_to_the_session() {
    let nas = Nas::start("127.0.0.2", COA_SECRET, &[]);
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = config(
        &tmp,
        &[("127.0.0.2", COA_SECRET, nas.port, "")],
        r#"
[[quotas]]
name = "throttle"
users = "*"
period = "week"
bytes = 1000
direction = "up"
action = "coa"
coa_attributes = { "Filter-Id" = "throttled" }
restore_attributes = { "Filter-Id" = "default" }
"#,
    );
    let flowtally = start_daemon(&db, &config);
    let radius = flowtally.ready.radius.unwrap();
    start(radius, "q-bob", "bob-1", "198.18.100.7", "127.0.0.2");
    start(radius, "q-carol", "carol-1", "198.18.100.8", "127.0.0.2");
    // carol's 5000 bytes are downloads: only uploads count.
    push(
        &flowtally,
        &[flow(BOB, 1_000, true), flow(CAROL, 5_000, false)],
        6_000,
        0,
    );
    eventually_equal("bob's CoA", 1, || nas.requests().len());
    let request = &nas.requests()[0];
    assert_eq!(
        names(request),
        ("CoA-Request", "q-bob", "bob-1", "198.18.100.7")
    );
    assert_eq!(request["attributes"]["Filter-Id"], "throttled");
    assert_eq!(request["message_authenticator"], true);
    eventually_equal(
        "recorded",
        vec![(
            "throttle".to_owned(),
            "q-bob".to_owned(),
            "bob-1".to_owned(),
            Some("ack".to_owned()),
            None,
            Some(1),
        )],
        || enforcement(&db),
    );
    push(&flowtally, &[flow(CAROL, 10, false)], 6_010, 2);
    assert_eq!(nas.requests().len(), 1);
}

#[test]
fn a_quota_naming_a_class_not_defined_is_refused_naming_the_key() {
    let tmp = TempDir::new();
    let config = config(
        &tmp,
        &[],
        &DAILY_1MB.replace("classes = [\"*\"]", "classes = [\"local\"]"),
    );
    for command in ["quota", "check-config"] {
        let out = Command::new(BIN)
            .args([command, "--config", path_str(&config)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("`quotas.classes`") && stderr.contains("not a class defined"),
            "{command}: {stderr}"
        );
    }
}
