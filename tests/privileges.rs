//! Least privilege: once set up, the running daemon holds no capability
//! in any thread and cannot gain one, and still does its work without
//! them — kernel maps drained into `usage`, RADIUS accounting answered.

mod support;

use std::{collections::BTreeMap, fs, net::UdpSocket};

use support::{
    Flowtally, NetNs, TempDir, eventually, path_str, radclient, require_root, scrape,
    v5gen::{SUBSCRIBERS, exports},
};

const NONE: &str = "0000000000000000";

/// The privilege lines of every thread of `pid`, by thread id.
fn privileges(pid: i32) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut threads = BTreeMap::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let status = fs::read_to_string(task.path().join("status")).unwrap();
        let lines = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(key, _)| key.starts_with("Cap") || *key == "NoNewPrivs")
            .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
            .collect();
        threads.insert(task.file_name().to_string_lossy().into_owned(), lines);
    }
    threads
}

fn metric(addr: std::net::SocketAddr, ns: &NetNs, name: &str) -> u64 {
    ns.enter(|| scrape(addr)).get(name).copied().unwrap_or(0.0) as u64
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn after_attaching_every_thread_has_no_capability_and_the_daemon_still_works() {
    require_root();
    let (ns, tmp) = (NetNs::new(), TempDir::new());
    let db = tmp.path("ft.db");
    let mut flowtally = Flowtally::start(
        Some(&ns),
        &[
            "--iface",
            "lo",
            "--mode",
            "xdp",
            "--netflow",
            "127.0.0.1:0",
            "--radius",
            "127.0.0.1:0",
            "--radius-secret",
            "testing123",
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(&db),
            "--subscriber-net",
            SUBSCRIBERS,
            "--flush-interval",
            "100ms",
        ],
    );
    assert_eq!(
        flowtally.ready.xdp,
        [("lo".to_owned(), "generic".to_owned())]
    );
    let root = privileges(std::process::id() as i32);
    let ours = root.values().next().unwrap();
    assert_ne!(ours["CapEff"], NONE, "the test itself runs privileged");

    let threads = privileges(flowtally.pid());
    assert!(
        threads.len() >= 3,
        "the runtime's workers too: {threads:#?}"
    );
    for (tid, lines) in &threads {
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(lines[set], NONE, "thread {tid}: {set}");
        }
        assert_eq!(lines["NoNewPrivs"], "1", "thread {tid}");
    }
    // Logged before `ready`, but stderr is read by a thread of its own.
    eventually("the drop logged", || {
        flowtally.stderr().contains("bounding set emptied")
    });

    // Without capabilities: the XDP program still aggregates, the daemon
    // still swaps and drains its maps, RADIUS is still answered and stored.
    let metrics = flowtally.metrics_addr();
    let netflow = flowtally.ready.netflow[0];
    let exports = exports(20, 0xcafe);
    ns.enter(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for export in &exports {
            socket.send_to(&export.bytes(), netflow).unwrap();
        }
    });
    let xdp = r#"flowtally_packets_total{path="xdp"}"#;
    eventually("the exports to be aggregated in the kernel", || {
        metric(metrics, &ns, xdp) == exports.len() as u64
    });
    let drains = "flowtally_drain_duration_seconds_count";
    let before = metric(metrics, &ns, drains);
    eventually("a drain", || metric(metrics, &ns, drains) > before + 1);
    let radius = flowtally.ready.radius.unwrap();
    let start = "Acct-Status-Type = Start, User-Name = alice, Acct-Session-Id = p1, \
                 Framed-IP-Address = 198.18.100.7";
    assert!(
        ns.enter(|| radclient(radius, "testing123", start)),
        "answered"
    );
    assert!(
        privileges(flowtally.pid())
            .values()
            .all(|lines| lines["CapEff"] == NONE),
        "threads started since have none either"
    );

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let sessions: i64 = conn
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1);
    let written: i64 = conn
        .query_row("SELECT COALESCE(SUM(bytes), 0) FROM usage", [], |r| {
            r.get(0)
        })
        .unwrap();
    let sent: u64 = support::v5gen::expected_bytes(&exports).values().sum();
    assert_eq!(written as u64, sent, "every byte drained and written");
}
