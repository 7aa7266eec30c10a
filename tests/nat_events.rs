//! NAT events through the real daemon, in every shape a CGNAT exports them:
//! NEL-like NetFlow v9 (natEvent 1/2) and IPFIX NAT44 and NAT64 sessions
//! (4/5, 6/7), port blocks over both (16/17), a NAT66-style IPv6 public
//! side, a quota event; deletes before their creates, a delete without a
//! create, and a restart between halves of the events. Then `flowtally
//! whois PUBLIC:PORT` answers chosen instants exactly, naming the user
//! whose RADIUS session (radclient) held the inside address.
//!
//! The timeline, T a few minutes before now (ms offsets; `|` the restart):
//!
//! | public port | shape | inside (user) | events |
//! |---|---|---|---|
//! | 1024 tcp | v9 NEL | .10 (alice) | create T \| delete T+10 000 |
//! | 1024 udp | IPFIX NAT44 | .11 (bob) | delete T+20 000 \| create T+5 000 |
//! | 2000 tcp | IPFIX NAT64 | 2001:db8::12 | delete T+3 000, create T+1 000 |
//! | 3000–3063 | IPFIX port block | .13 (dave) | allocate T \| deallocate T+30 000 |
//! | 3064–3127 step 1 | v9 port block | .14 (erin) | allocate T (never released) |
//! | 4000 tcp | IPFIX NAT44 | .15 (frank) | \| delete T+8 000 only |
//! | [2001:db8:ffff::1]:5000 udp | IPFIX, IPv6 public | 2001:db8::20 | create T+500 |

mod support;

use std::{
    net::UdpSocket,
    path::Path,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use flowtally::{
    netflow::{
        encode::{self, Set, Template},
        nat::{event, ie},
        sets::{FieldSpec, Header, IPFIX, V9},
    },
    timestamp::Timestamp,
};
use support::{
    BIN, Flowtally, RADIUS_SECRET, TempDir, eventually, path_str, radclient, scrape,
    start_on_loopback,
};

const PUBLIC: [u8; 4] = [198, 51, 100, 1];
const PUBLIC6: &str = "2001:db8:ffff::1";
/// `cgnat.max_lifetime`.
const LIFETIME_MS: u64 = 3_600_000;

/// A record field: (element, bytes).
type Field = (u16, Vec<u8>);

fn be(value: u64, len: usize) -> Vec<u8> {
    value.to_be_bytes()[8 - len..].to_vec()
}

fn v4(last: u8) -> Vec<u8> {
    vec![100, 64, 0, last]
}

fn v6(text: &str) -> Vec<u8> {
    text.parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec()
}

/// One export of `records` (all of one layout) under template `id`.
fn export(version: u16, id: u16, records: &[Vec<Field>]) -> Vec<u8> {
    let fields = records[0]
        .iter()
        .map(|(ie, value)| FieldSpec::iana(*ie, value.len() as u16))
        .collect();
    let data = records
        .iter()
        .map(|r| r.iter().flat_map(|(_, v)| v.clone()).collect())
        .collect();
    let header = Header {
        version,
        unix_secs: (now_ms() / 1000) as u32,
        sys_uptime_ms: if version == V9 { 1_000 } else { 0 },
        sequence: 1,
        domain: 7,
    };
    encode::export(
        &header,
        &[
            Set::Templates(vec![Template { id, fields }]),
            Set::Data { id, records: data },
        ],
        true,
    )
}

/// A NEL-like v9 session record (Cisco's layout).
fn nel(kind: u8, inside: u8, port: u16, at: u64) -> Vec<Field> {
    vec![
        (ie::SOURCE_IPV4_ADDRESS, v4(inside)),
        (12, vec![203, 0, 113, 9]),
        (ie::SOURCE_TRANSPORT_PORT, be(40_000, 2)),
        (11, be(443, 2)),
        (ie::POST_NAT_SOURCE_IPV4_ADDRESS, PUBLIC.to_vec()),
        (226, vec![203, 0, 113, 9]),
        (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, be(u64::from(port), 2)),
        (228, be(443, 2)),
        (ie::PROTOCOL, vec![6]),
        (ie::NAT_EVENT, vec![kind]),
        (ie::INGRESS_VRF_ID, be(0, 4)),
        (ie::OBSERVATION_TIME_MILLISECONDS, be(at, 8)),
    ]
}

/// An IPFIX session record: `inside` (v4 or v6 bytes) behind `public`.
fn session(
    kind: u8,
    inside: Vec<u8>,
    public: Vec<u8>,
    port: u16,
    protocol: u8,
    at: u64,
) -> Vec<Field> {
    let inside_ie = if inside.len() == 4 {
        ie::SOURCE_IPV4_ADDRESS
    } else {
        ie::SOURCE_IPV6_ADDRESS
    };
    let public_ie = if public.len() == 4 {
        ie::POST_NAT_SOURCE_IPV4_ADDRESS
    } else {
        ie::POST_NAT_SOURCE_IPV6_ADDRESS
    };
    vec![
        (ie::OBSERVATION_TIME_MILLISECONDS, be(at, 8)),
        (ie::NAT_EVENT, vec![kind]),
        (ie::PROTOCOL, vec![protocol]),
        (inside_ie, inside),
        (ie::SOURCE_TRANSPORT_PORT, be(40_000, 2)),
        (public_ie, public),
        (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, be(u64::from(port), 2)),
    ]
}

/// A port block record.
fn block(kind: u8, inside: u8, start: u16, end: u16, at: u64) -> Vec<Field> {
    vec![
        (ie::NAT_EVENT, vec![kind]),
        (ie::SOURCE_IPV4_ADDRESS, v4(inside)),
        (ie::POST_NAT_SOURCE_IPV4_ADDRESS, PUBLIC.to_vec()),
        (ie::PORT_RANGE_START, be(u64::from(start), 2)),
        (ie::PORT_RANGE_END, be(u64::from(end), 2)),
        (ie::PORT_RANGE_STEP_SIZE, be(1, 2)),
        (ie::OBSERVATION_TIME_MILLISECONDS, be(at, 8)),
    ]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn send(flowtally: &Flowtally, exports: &[Vec<u8>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for export in exports {
        socket.send_to(export, flowtally.ready.netflow[0]).unwrap();
    }
}

/// Waits until the daemon took in `n` NAT events, then stops it cleanly
/// (its final flush persists the bindings).
fn applied_then_stop(mut flowtally: Flowtally, n: u64) {
    let addr = flowtally.metrics_addr();
    eventually("the NAT events to be applied", || {
        scrape(addr)
            .iter()
            .filter(|(name, _)| name.starts_with("flowtally_nat_events_applied_total{"))
            .map(|(_, value)| *value as u64)
            .sum::<u64>()
            == n
    });
    let metrics = scrape(addr);
    assert!(
        metrics
            .keys()
            .all(|name| !name.starts_with("flowtally_usage_rows") || metrics[name] == 0.0),
        "NAT events are never usage"
    );
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
}

fn whois(db: &Path, target: &str, at: u64, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "whois",
            target,
            "--at",
            &Timestamp(at).to_string(),
            "--db",
            path_str(db),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ts(ms: u64) -> String {
    Timestamp(ms).to_string()
}

#[test]
fn nat_events_of_every_shape_answer_whois_across_a_restart() {
    let dir = TempDir::new();
    let db = dir.path("ft.db");
    let config = dir.path("flowtally.toml");
    std::fs::write(&config, "[cgnat]\nmax_lifetime = \"1h\"\n").unwrap();
    let config_args = ["--config", path_str(&config)];
    let t = now_ms() / 1000 * 1000 - 300_000;
    let public = Vec::from(PUBLIC);

    let first = start_on_loopback(&db, &config_args);
    let radius = first.ready.radius.unwrap();
    for (user, last) in [("alice", 10), ("bob", 11), ("dave", 13), ("frank", 15)] {
        let attributes = format!(
            "Acct-Status-Type = Start, User-Name = {user}, Acct-Session-Id = {user}-1, \
             Framed-IP-Address = 100.64.0.{last}, NAS-IP-Address = 198.18.0.1, \
             Event-Timestamp = {}",
            (t - 60_000) / 1000
        );
        assert!(radclient(radius, RADIUS_SECRET, &attributes));
    }
    let quota = vec![
        (ie::NAT_EVENT, vec![event::QUOTA_EXCEEDED]),
        (ie::SOURCE_IPV4_ADDRESS, v4(10)),
        (ie::OBSERVATION_TIME_MILLISECONDS, be(t, 8)),
    ];
    send(
        &first,
        &[
            export(V9, 256, &[nel(event::TRANSLATION_CREATE, 10, 1024, t)]),
            export(
                IPFIX,
                257,
                &[session(
                    event::NAT44_SESSION_DELETE,
                    v4(11),
                    public.clone(),
                    1024,
                    17,
                    t + 20_000,
                )],
            ),
            export(
                IPFIX,
                258,
                &[
                    session(
                        event::NAT64_SESSION_DELETE,
                        v6("2001:db8::12"),
                        public.clone(),
                        2000,
                        6,
                        t + 3_000,
                    ),
                    session(
                        event::NAT64_SESSION_CREATE,
                        v6("2001:db8::12"),
                        public.clone(),
                        2000,
                        6,
                        t + 1_000,
                    ),
                ],
            ),
            export(
                IPFIX,
                259,
                &[block(event::PORT_BLOCK_ALLOCATION, 13, 3000, 3063, t)],
            ),
            export(
                V9,
                260,
                &[block(event::PORT_BLOCK_ALLOCATION, 14, 3064, 3127, t)],
            ),
            export(
                IPFIX,
                261,
                &[session(
                    event::TRANSLATION_CREATE,
                    v6("2001:db8::20"),
                    v6(PUBLIC6),
                    5000,
                    17,
                    t + 500,
                )],
            ),
            export(IPFIX, 262, &[quota]),
        ],
    );
    applied_then_stop(first, 8);

    // The second half pairs with bindings the first run persisted.
    let second = start_on_loopback(&db, &config_args);
    send(
        &second,
        &[
            export(
                V9,
                256,
                &[nel(event::TRANSLATION_DELETE, 10, 1024, t + 10_000)],
            ),
            export(
                IPFIX,
                257,
                &[
                    session(
                        event::NAT44_SESSION_CREATE,
                        v4(11),
                        public.clone(),
                        1024,
                        17,
                        t + 5_000,
                    ),
                    session(
                        event::NAT44_SESSION_DELETE,
                        v4(15),
                        public.clone(),
                        4000,
                        6,
                        t + 8_000,
                    ),
                ],
            ),
            export(
                IPFIX,
                259,
                &[block(
                    event::PORT_BLOCK_DEALLOCATION,
                    13,
                    3000,
                    3063,
                    t + 30_000,
                )],
            ),
        ],
    );
    let metrics = second.metrics_addr();
    eventually("the second half", || {
        let m = scrape(metrics);
        m.get(r#"flowtally_nat_events_applied_total{result="closed"}"#) == Some(&2.0)
            && m.get(r#"flowtally_nat_events_applied_total{result="completed"}"#) == Some(&1.0)
    });
    let m = scrape(metrics);
    for (name, n) in [
        (
            r#"flowtally_nat_events_total{type="translation_delete"}"#,
            1.0,
        ),
        (
            r#"flowtally_nat_events_total{type="nat44_session_create"}"#,
            1.0,
        ),
        (
            r#"flowtally_nat_events_total{type="port_block_deallocation"}"#,
            1.0,
        ),
        (
            r#"flowtally_nat_events_applied_total{result="delete_without_create"}"#,
            1.0,
        ),
    ] {
        assert_eq!(m.get(name), Some(&n), "{name}: {m:?}");
    }
    applied_then_stop(second, 4);

    let p = "198.51.100.1";
    let port = |n: u16| format!("{p}:{n}");
    let alice = format!(
        "tcp port 1024 bound to 100.64.0.10:40000 from {} to {}; 100.64.0.10 then: alice \
         (session alice-1 on NAS 198.18.0.1)",
        ts(t),
        ts(t + 10_000)
    );
    let bob = format!(
        "udp port 1024 bound to 100.64.0.11:40000 from {} to {}; 100.64.0.11 then: bob \
         (session bob-1 on NAS 198.18.0.1)",
        ts(t + 5_000),
        ts(t + 20_000)
    );
    assert_eq!(
        whois(&db, &port(1024), t - 1, &[]).trim(),
        format!("{p}:1024 at {}: no NAT binding of this port", ts(t - 1))
    );
    let at_t = whois(&db, &port(1024), t, &["--protocol", "tcp"]);
    assert!(at_t.contains(&alice), "{at_t}");
    let both = whois(&db, &port(1024), t + 6_000, &[]);
    assert_eq!(both.lines().count(), 2, "{both}");
    assert!(both.contains(&alice) && both.contains(&bob), "{both}");
    let udp = whois(&db, &port(1024), t + 10_000, &[]);
    assert_eq!(udp.lines().count(), 1, "{udp}");
    assert!(udp.contains(&bob), "{udp}");
    let nat64 = whois(&db, &port(2000), t + 2_000, &[]);
    assert!(
        nat64.contains(&format!(
            "tcp port 2000 bound to [2001:db8::12]:40000 from {} to {}; 2001:db8::12 then: \
             nobody held this address",
            ts(t + 1_000),
            ts(t + 3_000)
        )),
        "{nat64}"
    );
    assert!(whois(&db, &port(2000), t + 3_000, &[]).contains("no NAT binding"));
    let dave = whois(&db, &port(3010), t + 29_999, &[]);
    assert!(
        dave.contains(&format!(
            "any protocol port block 3000-3063 bound to 100.64.0.13 from {} to {}; \
             100.64.0.13 then: dave",
            ts(t),
            ts(t + 30_000)
        )),
        "{dave}"
    );
    assert!(whois(&db, &port(3010), t + 30_000, &[]).contains("no NAT binding"));
    let erin = whois(&db, &port(3100), t + 100_000, &["--protocol", "udp"]);
    assert!(
        erin.contains(&format!(
            "port block 3064-3127 bound to 100.64.0.14 from {} to {} (no delete seen: max \
             lifetime)",
            ts(t),
            ts(t + LIFETIME_MS)
        )),
        "{erin}"
    );
    let frank = whois(&db, &port(4000), t + 7_999, &[]);
    assert!(
        frank.contains(&format!(
            "tcp port 4000 bound to 100.64.0.15:40000 from {} at the earliest (create not \
             seen) to {}; 100.64.0.15 then: frank",
            ts(t + 8_000 - LIFETIME_MS),
            ts(t + 8_000)
        )),
        "{frank}"
    );
    let v6 = whois(&db, &format!("[{PUBLIC6}]:5000"), t + 500, &[]);
    assert!(
        v6.contains("udp port 5000 bound to [2001:db8::20]:40000"),
        "{v6}"
    );
    assert!(whois(&db, &format!("[{PUBLIC6}]:5000"), t + 499, &[]).contains("no NAT binding"));
    let plain = whois(&db, "100.64.0.10", t, &[]);
    assert!(
        plain.starts_with(&format!("100.64.0.10 at {}: alice", ts(t))),
        "{plain}"
    );
}
