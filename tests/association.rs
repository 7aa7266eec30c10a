//! Attribution end to end: sessions from radclient, flows as NetFlow v5
//! exports, and the `usage` table: each row goes to the session holding its
//! address at its time, late flows after a Stop stay with the session for
//! the grace period, flows that come before their session's Start wait for
//! it, and what nobody held is written unattributed — byte for byte.

mod support;

use std::{collections::BTreeMap, net::UdpSocket};

use flowtally::netflow::v5::{Record, encode};
use flowtally_common::v5::Header;
use support::{
    RADIUS_SECRET, TempDir, eventually, radclient, scrape, start_on_loopback, usage_by_user,
};

const SECRET: &str = RADIUS_SECRET;
const T0: u32 = 1_700_000_000;

fn session(server: std::net::SocketAddr, status: &str, user: &str, ip: &str, at: u32) {
    let answered = radclient(
        server,
        SECRET,
        &format!(
            "Acct-Status-Type = {status}, User-Name = {user}, Acct-Session-Id = {user}-1, \
             Framed-IP-Address = {ip}, NAS-IP-Address = 198.18.0.1, Event-Timestamp = {}",
            T0 + at
        ),
    );
    assert!(answered, "{user}'s {status} answered");
}

/// One v5 export with one record: `ip` sent `octets` bytes at T0 + `at` s.
fn flow(ip: [u8; 4], octets: u32, at: u32) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 1_000_000,
        unix_secs: T0 + at,
        ..Header::default()
    };
    let record = Record {
        src: ip,
        dst: [198, 19, 0, 1],
        packets: 1,
        octets,
        first: 1_000_000,
        last: 1_000_000,
        protocol: 6,
        ..Record::default()
    };
    encode(&header, &[record])
}

#[test]
fn usage_goes_to_the_user_holding_the_address_and_the_rest_stays_unattributed() {
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let mut flowtally = start_on_loopback(
        &db,
        &[
            "--subscriber-net",
            "198.18.100.0/24",
            "--flush-interval",
            "100ms",
            "--late-window",
            "20s",
        ],
    );
    let radius = flowtally.ready.radius.unwrap();
    let netflow = flowtally.ready.netflow[0];
    let metrics = flowtally.metrics_addr();
    let metric = |name: &str| scrape(metrics).get(name).copied().unwrap_or(0.0) as u64;

    session(radius, "Start", "alice", "198.18.100.7", 100);
    session(radius, "Stop", "alice", "198.18.100.7", 200);
    session(radius, "Start", "bob", "198.18.100.7", 300);

    let exporter = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flows = [
        flow([198, 18, 100, 7], 1000, 150), // alice
        flow([198, 18, 100, 7], 10, 202),   // alice: inside the 5 s grace
        flow([198, 18, 100, 7], 50, 250),   // nobody: between alice and bob
        flow([198, 18, 100, 7], 2000, 350), // bob
        flow([198, 18, 100, 9], 70, 150),   // nobody, ever
        flow([198, 18, 100, 8], 300, 400),  // carol, whose Start comes later
    ];
    for export in &flows {
        exporter.send_to(export, netflow).unwrap();
    }
    let total: u64 = 1000 + 10 + 50 + 2000 + 70 + 300;
    eventually("the rows without an owner to wait", || {
        metric("flowtally_association_backlog") == 3
            && metric("flowtally_attributed_bytes_total") == 3010
    });
    session(radius, "Start", "carol", "198.18.100.8", 390);
    eventually("carol's flow to find her late Start", || {
        metric("flowtally_attributed_bytes_total") == 3310
    });

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    let by_user = usage_by_user(&db);
    let expected = BTreeMap::from([
        (None, 120),
        (Some("alice".to_owned()), 1010),
        (Some("bob".to_owned()), 2000),
        (Some("carol".to_owned()), 300),
    ]);
    assert_eq!(by_user, expected);
    assert_eq!(
        by_user.values().sum::<u64>(),
        total,
        "attributed + unattributed = input"
    );
    let sessions: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(DISTINCT session_id) FROM usage WHERE user_name IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(sessions, 3);
}
