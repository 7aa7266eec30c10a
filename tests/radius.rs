//! The RADIUS accounting server against a real client (radclient, from
//! freeradius-utils): session history, whois, wrong secrets,
//! retransmissions, durability across a kill, malformed packets.

mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use flowtally::radius::{AccountingRequest, StatusType};
use support::{
    BIN, Flowtally, RADIUS_SECRET, TempDir, eventually, path_str, radclient, scrape,
    start_on_loopback,
};

const SECRET: &str = RADIUS_SECRET;
/// Event times are given explicitly (Event-Timestamp), so the history does
/// not depend on when the test runs.
const T0: u64 = 1_700_000_000;

fn start(db: &Path) -> Flowtally {
    start_on_loopback(db, &[])
}

/// Now, in seconds after T0: for sessions that must not look silent.
fn now_after_t0() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - T0
}

fn account(server: SocketAddr, nas: &str, status: &str, at: u64, rest: &str) {
    let attributes = format!(
        "Acct-Status-Type = {status}, NAS-IP-Address = {nas}, Event-Timestamp = {}{rest}",
        T0 + at
    );
    assert!(
        radclient(server, SECRET, &attributes),
        "answered: {attributes}"
    );
}

fn whois(db: &Path, ip: &str, at: u64) -> String {
    let out = Command::new(BIN)
        .args([
            "whois",
            ip,
            "--at",
            &(T0 + at).to_string(),
            "--db",
            path_str(db),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn holder(db: &Path, ip: &str, at: u64) -> Option<String> {
    let answer = whois(db, ip, at);
    if answer.contains("nobody held") {
        return None;
    }
    let (_, rest) = answer.split_once(": ").expect("an answer line");
    Some(rest.split_whitespace().next().unwrap().to_owned())
}

#[test]
fn radclient_sessions_make_a_history_that_whois_and_the_table_answer_from() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut flowtally = start(&db);
    let radius = flowtally.ready.radius.expect("radius listens");
    let ip = ", Framed-IP-Address = ";
    // alice on NAS 1: start, interim, stop; then bob reuses her address.
    account(
        radius,
        "198.18.0.1",
        "Start",
        1000,
        &format!(", User-Name = alice, Acct-Session-Id = a1{ip}198.18.100.7"),
    );
    account(
        radius,
        "198.18.0.1",
        "Interim-Update",
        1600,
        &format!(
            ", User-Name = alice, Acct-Session-Id = a1{ip}198.18.100.7, Acct-Session-Time = 600"
        ),
    );
    account(
        radius,
        "198.18.0.1",
        "Stop",
        2000,
        &format!(
            ", User-Name = alice, Acct-Session-Id = a1{ip}198.18.100.7, Acct-Session-Time = 1000, Acct-Terminate-Cause = User-Request"
        ),
    );
    account(
        radius,
        "198.18.0.1",
        "Start",
        2500,
        &format!(", User-Name = bob, Acct-Session-Id = b1{ip}198.18.100.7"),
    );
    // carol on NAS 2, until NAS 2 reboots (Accounting-On).
    account(
        radius,
        "198.18.0.2",
        "Start",
        1200,
        &format!(", User-Name = carol, Acct-Session-Id = c1{ip}198.18.100.8"),
    );
    account(radius, "198.18.0.2", "Accounting-On", 3000, "");
    // dave: an interim update without a start opens at event − session time.
    account(
        radius,
        "198.18.0.2",
        "Interim-Update",
        5000,
        &format!(
            ", User-Name = dave, Acct-Session-Id = d1{ip}198.18.100.9, Acct-Session-Time = 600"
        ),
    );
    // erin: IPv6, a delegated prefix.
    account(
        radius,
        "198.18.0.1",
        "Start",
        1000,
        ", User-Name = erin, Acct-Session-Id = e1, Delegated-IPv6-Prefix = 2001:db8:100:ab00::/56",
    );

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());

    let cases = [
        ("198.18.100.7", 999, None),
        ("198.18.100.7", 1000, Some("alice")),
        ("198.18.100.7", 1999, Some("alice")),
        ("198.18.100.7", 2000, None),
        ("198.18.100.7", 2499, None),
        ("198.18.100.7", 2500, Some("bob")),
        ("198.18.100.7", 9999, Some("bob")),
        ("198.18.100.8", 2999, Some("carol")),
        ("198.18.100.8", 3000, None),
        ("198.18.100.9", 4399, None),
        ("198.18.100.9", 4400, Some("dave")),
        ("2001:db8:100:abcd::1", 1500, Some("erin")),
        ("2001:db8:100:ac00::1", 1500, None),
    ];
    for (ip, at, expected) in cases {
        assert_eq!(holder(&db, ip, at).as_deref(), expected, "{ip} at T0+{at}");
    }
    assert!(whois(&db, "198.18.100.7", 1500).contains("session a1 on NAS 198.18.0.1"));

    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, i64, Option<i64>, Option<String>)> = conn
        .prepare(
            "SELECT user_name, start_ms, stop_ms, terminate_cause FROM sessions ORDER BY user_name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ms = |at: u64| ((T0 + at) * 1000) as i64;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(
        rows[0],
        (
            "alice".into(),
            ms(1000),
            Some(ms(2000)),
            Some("User-Request".into())
        )
    );
    assert_eq!((rows[1].0.as_str(), rows[1].2), ("bob", None));
    assert_eq!(rows[2].0, "carol");
    assert_eq!(rows[2].2, Some(ms(3000)));
    assert_eq!((rows[3].0.as_str(), rows[3].1), ("dave", ms(4400)));
}

#[test]
fn a_wrong_secret_gets_no_answer_and_records_nothing() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let flowtally = start(&db);
    let radius = flowtally.ready.radius.unwrap();
    let attributes = "Acct-Status-Type = Start, User-Name = mallory, Acct-Session-Id = m1, Framed-IP-Address = 198.18.100.66";
    assert!(
        !radclient(radius, "not-the-secret", attributes),
        "no answer"
    );
    let bad = r#"flowtally_radius_requests_total{status="unknown",result="bad_authenticator"}"#;
    eventually("the discard to be counted", || {
        scrape(flowtally.metrics_addr())
            .get(bad)
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(holder(&db, "198.18.100.66", 10_000_000), None);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_retransmission_is_answered_each_time_and_recorded_once() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let flowtally = start(&db);
    let radius = flowtally.ready.radius.unwrap();
    let mut request = AccountingRequest::new(StatusType::Start);
    request.user_name = Some("alice".into());
    request.session_id = Some("r1".into());
    request.framed_ip = Some("198.18.100.7".parse().unwrap());
    request.event_timestamp = Some(T0 as u32);
    let bytes = request.encode(42, SECRET.as_bytes()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        socket.send_to(&bytes, radius).unwrap();
        let mut buf = [0; 64];
        let (len, _) = socket.recv_from(&mut buf).expect("answered");
        answers.push(buf[..len].to_vec());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "the same answer");
    assert_eq!(answers[0][0], 5, "Accounting-Response");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let duplicates = r#"flowtally_radius_requests_total{status="unknown",result="duplicate"}"#;
    assert_eq!(scrape(flowtally.metrics_addr())[duplicates], 2.0);
}

#[test]
fn an_answered_session_survives_a_kill() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut flowtally = start(&db);
    let radius = flowtally.ready.radius.unwrap();
    // Started now: a session last heard of in the past would rightly be
    // closed as silent by the restarted daemon's first check.
    let at = now_after_t0();
    account(
        radius,
        "198.18.0.1",
        "Start",
        at,
        ", User-Name = alice, Acct-Session-Id = k1, Framed-IP-Address = 198.18.100.7",
    );
    flowtally.signal(libc::SIGKILL);
    flowtally.wait();
    assert_eq!(holder(&db, "198.18.100.7", at).as_deref(), Some("alice"));
    let restarted = start(&db);
    let open = scrape(restarted.metrics_addr())["flowtally_sessions_open"];
    assert_eq!(open, 1.0, "rebuilt from SQLite at start");
}

#[test]
fn malformed_packets_are_counted_and_the_server_goes_on() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let flowtally = start(&db);
    let radius = flowtally.ready.radius.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let header = |code: u8, len: u16| {
        let mut p = vec![code, 1];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    };
    let mut attr_len_0 = header(4, 23);
    attr_len_0.extend_from_slice(&[40, 0, 0]);
    let mut attr_len_1 = header(4, 23);
    attr_len_1.extend_from_slice(&[40, 1, 0]);
    let mut too_many = header(4, 20 + 300 * 2);
    for _ in 0..300 {
        too_many.extend_from_slice(&[1, 2]);
    }
    let malformed = [
        vec![4, 1, 0],
        header(4, 400),
        attr_len_0,
        attr_len_1,
        too_many,
        header(4, 19),
    ];
    for packet in &malformed {
        socket.send_to(packet, radius).unwrap();
    }
    socket.send_to(&header(99, 20), radius).unwrap();
    let counted = |result: &str| {
        let name =
            format!(r#"flowtally_radius_requests_total{{status="unknown",result="{result}"}}"#);
        scrape(flowtally.metrics_addr())
            .get(&name)
            .copied()
            .unwrap_or(0.0) as usize
    };
    eventually("every malformed packet counted", || {
        counted("malformed") == malformed.len() && counted("unsupported_code") == 1
    });
    account(
        radius,
        "198.18.0.1",
        "Start",
        1,
        ", User-Name = alice, Acct-Session-Id = ok1, Framed-IP-Address = 198.18.100.7",
    );
}

/// Sessions stopped longer ago than `radius.history_retention` leave memory
/// but not SQLite, and ids stay unique after they go.
#[test]
fn sessions_past_the_retention_leave_memory_not_the_database() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = tmp.path("ft.toml");
    std::fs::write(
        &config,
        "late_window = \"1s\"\nstop_grace = \"1s\"\n[radius]\nhistory_retention = \"2s\"\n",
    )
    .unwrap();
    let flowtally = start_on_loopback(&db, &["--config", path_str(&config)]);
    let radius = flowtally.ready.radius.unwrap();
    let now = now_after_t0();
    let user = |name: &str, ip: &str| {
        format!(", User-Name = {name}, Acct-Session-Id = {name}1, Framed-IP-Address = {ip}")
    };
    // The pruned session is the newest: its id is the highest one stored.
    account(
        radius,
        "198.18.0.1",
        "Start",
        now,
        &user("open", "198.18.100.2"),
    );
    account(
        radius,
        "198.18.0.1",
        "Start",
        now - 60,
        &user("old", "198.18.100.1"),
    );
    account(
        radius,
        "198.18.0.1",
        "Stop",
        now - 30,
        &user("old", "198.18.100.1"),
    );
    eventually("the stopped session to leave memory", || {
        flowtally
            .stderr()
            .contains("1 sessions stopped before the retention left memory")
    });
    let metrics = scrape(flowtally.metrics_addr());
    assert_eq!(metrics["flowtally_sessions_in_memory"], 1.0);
    assert_eq!(metrics["flowtally_sessions_open"], 1.0);
    assert_eq!(
        holder(&db, "198.18.100.1", now - 45).as_deref(),
        Some("old")
    );

    account(
        radius,
        "198.18.0.1",
        "Start",
        now,
        &user("new", "198.18.100.3"),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, ids): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT id) FROM sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, ids),
        (3, 3),
        "a new session never takes a pruned one's id"
    );
}

/// Sends `requests` (identifier, request) from `socket` without waiting,
/// then an Interim-Update of the known session `known` as a marker: the
/// server answers in order, so the identifiers answered before the
/// marker's answer are all those that will ever be.
fn answered_of(
    socket: &UdpSocket,
    server: SocketAddr,
    requests: &[(u8, AccountingRequest)],
    known: &str,
) -> Vec<u8> {
    for (identifier, request) in requests {
        let bytes = request.encode(*identifier, SECRET.as_bytes()).unwrap();
        socket.send_to(&bytes, server).unwrap();
    }
    let mut marker = AccountingRequest::new(StatusType::InterimUpdate);
    marker.nas_ip = Some("198.18.0.1".parse().unwrap());
    marker.session_id = Some(known.into());
    socket
        .send_to(&marker.encode(255, SECRET.as_bytes()).unwrap(), server)
        .unwrap();
    socket.set_read_timeout(Some(support::PATIENCE)).unwrap();
    let mut answered = Vec::new();
    let mut buf = [0; 64];
    loop {
        let (len, _) = socket.recv_from(&mut buf).expect("the marker is answered");
        assert!(len >= 20 && buf[0] == 5, "an Accounting-Response");
        if buf[1] == 255 {
            return answered;
        }
        answered.push(buf[1]);
    }
}

fn bound_request(status: StatusType, session: &str) -> AccountingRequest {
    let mut request = AccountingRequest::new(status);
    request.nas_ip = Some("198.18.0.1".parse().unwrap());
    request.session_id = Some(session.into());
    request.user_name = Some(format!("user-{session}"));
    request
}

#[test]
fn a_nas_beyond_its_bounds_is_refused_unanswered_counted_and_logged_once() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = tmp.path("flowtally.toml");
    // At most 3 open, 60 new sessions a minute (one a second, 3 at once).
    std::fs::write(
        &config,
        "[radius]\nnas_max_open_sessions = 3\nnas_new_sessions_per_minute = 60\n",
    )
    .unwrap();
    let flowtally = start_on_loopback(&db, &["--config", path_str(&config)]);
    let server = flowtally.ready.radius.unwrap();
    let start_of = |session: &str| {
        format!(
            "Acct-Status-Type = Start, NAS-IP-Address = 198.18.0.1, \
             Acct-Session-Id = \"{session}\", User-Name = \"user-{session}\""
        )
    };
    for session in ["b1", "b2", "b3"] {
        assert!(radclient(server, SECRET, &start_of(session)), "{session}");
    }
    assert!(
        !radclient(server, SECRET, &start_of("b4")),
        "a fourth open session is refused: no answer"
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flood: Vec<_> = (0..20)
        .map(|i| (i, bound_request(StatusType::Start, &format!("f{i}"))))
        .collect();
    assert_eq!(
        answered_of(&socket, server, &flood, "b2"),
        Vec::<u8>::new(),
        "none answered"
    );
    let refused = |reason: &str| {
        let name =
            format!("flowtally_radius_nas_refused_total{{nas=\"198.18.0.1\",reason=\"{reason}\"}}");
        scrape(flowtally.metrics_addr())
            .get(&name)
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(refused("open_sessions"), 21.0);
    let log = flowtally.stderr();
    assert_eq!(
        log.matches("is beyond radius.nas_max_open_sessions")
            .count(),
        1,
        "one line per incident:\n{log}"
    );

    // A Stop of a known session always passes, and makes room.
    let stop_b1 = "Acct-Status-Type = Stop, NAS-IP-Address = 198.18.0.1, \
                   Acct-Session-Id = \"b1\"";
    assert!(radclient(server, SECRET, stop_b1));
    assert!(radclient(server, SECRET, &start_of("b4")), "room again");
    eventually("the end of the incident logged", || {
        flowtally
            .stderr()
            .contains("is within radius.nas_max_open_sessions again: 21 requests refused")
    });

    // Churn: Stops of unknown ids each leave a closed session in memory;
    // beyond the bucket they are refused too.
    let stops: Vec<_> = (0..10)
        .map(|i| (100 + i, bound_request(StatusType::Stop, &format!("c{i}"))))
        .collect();
    let answered = answered_of(&socket, server, &stops, "b2");
    assert!(answered.len() <= 3, "at most the bucket: {answered:?}");
    assert_eq!(
        refused("session_churn"),
        (10 - answered.len()) as f64,
        "every unanswered one counted"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let recorded: i64 = conn
        .query_row(
            "SELECT count(*) FROM sessions WHERE session_id LIKE 'c%' OR session_id LIKE 'f%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        recorded,
        answered.len() as i64,
        "only the answered recorded"
    );
    let sessions: i64 = conn
        .query_row(
            "SELECT count(*) FROM sessions WHERE session_id LIKE 'b%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sessions, 4);
}
