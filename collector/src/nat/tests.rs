//! The binding history as a specification, on a virtual clock: each section
//! drives events in some order and asks who held a public port when.

use std::collections::BTreeMap;

use super::*;
use crate::netflow::nat::event;

const NAT: &str = "198.18.0.1";
const PUBLIC: &str = "198.51.100.1";
const ALICE: &str = "100.64.0.7";
const BOB: &str = "100.64.0.8";
const TCP: u8 = 6;
const UDP: u8 = 17;
/// Max lifetime: 1000 s.
const LIFETIME: u64 = 1_000_000;

fn limits() -> Limits {
    Limits {
        max_lifetime_ms: LIFETIME,
        memory_retention_ms: 3_600_000,
        max_bindings: 1_000,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A NAT44 session event: `inside`:40000 behind `PUBLIC`:`port`.
fn session(kind: u8, inside: &str, port: u16, protocol: u8, at: u64) -> NatEvent {
    NatEvent {
        event: kind,
        time_ms: at,
        started_ms: None,
        protocol,
        inside: Some(ip(inside)),
        inside_port: Some(40_000),
        inside_vrf: 0,
        outside: Some(ip(PUBLIC)),
        outside_ports: PortRange::one(port),
        outside_vrf: 0,
    }
}

fn create(inside: &str, port: u16, at: u64) -> NatEvent {
    session(event::NAT44_SESSION_CREATE, inside, port, TCP, at)
}

fn delete(inside: &str, port: u16, at: u64) -> NatEvent {
    session(event::NAT44_SESSION_DELETE, inside, port, TCP, at)
}

fn block(kind: u8, inside: &str, start: u16, end: u16, step: u16, at: u64) -> NatEvent {
    NatEvent {
        inside_port: None,
        protocol: 0,
        outside_ports: PortRange { start, end, step },
        ..session(kind, inside, start, 0, at)
    }
}

/// Bindings and the `nat_bindings` table their changes make.
struct Store {
    bindings: Bindings,
    rows: BTreeMap<u64, Binding>,
}

impl Store {
    fn new() -> Self {
        Self {
            bindings: Bindings::new(limits()),
            rows: BTreeMap::new(),
        }
    }

    fn apply(&mut self, events: &[NatEvent]) -> Vec<Applied> {
        events
            .iter()
            .map(|e| {
                let applied = self.bindings.apply(ip(NAT), e);
                for change in self.bindings.take_changes() {
                    let b = match change {
                        Change::Insert(row) => row.binding,
                        Change::Update(b) => b,
                    };
                    self.rows.insert(b.id, b);
                }
                applied
            })
            .collect()
    }

    /// A restart: the history rebuilt from the table alone.
    fn restart(&mut self) {
        let last = self.rows.keys().last().copied().unwrap_or(0);
        self.bindings = Bindings::from_rows(limits(), self.rows.values().copied(), last);
    }

    fn who(&self, port: u16, at: u64) -> Option<String> {
        self.bindings
            .lookup(0, ip(PUBLIC), TCP, port, at)
            .map(|b| b.inside_ip.to_string())
    }
}

#[test]
fn a_binding_holds_from_its_create_until_its_delete() {
    let mut s = Store::new();
    assert_eq!(
        s.apply(&[create(ALICE, 1024, 10_000), delete(ALICE, 1024, 20_000)]),
        [Applied::Opened, Applied::Closed]
    );
    assert_eq!(s.who(1024, 9_999), None);
    assert_eq!(s.who(1024, 10_000).as_deref(), Some(ALICE));
    assert_eq!(s.who(1024, 19_999).as_deref(), Some(ALICE));
    assert_eq!(s.who(1024, 20_000), None, "half-open");
    assert_eq!(s.who(1025, 15_000), None, "another port");
    assert_eq!(
        s.bindings.lookup(0, ip(PUBLIC), UDP, 1024, 15_000),
        None,
        "another protocol"
    );
    assert_eq!(
        s.bindings.lookup(7, ip(PUBLIC), TCP, 1024, 15_000),
        None,
        "another VRF"
    );
    let b = s.bindings.lookup(0, ip(PUBLIC), TCP, 1024, 15_000).unwrap();
    assert!(b.start_seen && b.deleted);
    assert_eq!(
        (b.from_ms, b.to_ms, b.inside_port),
        (10_000, 20_000, Some(40_000))
    );
}

#[test]
fn repeats_change_nothing() {
    let mut s = Store::new();
    let events = [create(ALICE, 1024, 10_000), delete(ALICE, 1024, 20_000)];
    s.apply(&events);
    let rows = s.rows.clone();
    assert_eq!(
        s.apply(&[
            events[0],
            create(ALICE, 1024, 15_000),
            events[1],
            delete(ALICE, 1024, 18_000)
        ]),
        [Applied::Duplicate; 4]
    );
    assert_eq!(s.rows, rows);
}

#[test]
fn a_later_start_ends_an_earlier_binding_whose_delete_was_lost() {
    let mut s = Store::new();
    s.apply(&[create(ALICE, 1024, 10_000), create(BOB, 1024, 30_000)]);
    assert_eq!(s.who(1024, 29_999).as_deref(), Some(ALICE));
    assert_eq!(s.who(1024, 30_000).as_deref(), Some(BOB));
}

#[test]
fn a_binding_without_delete_ends_at_its_lifetime_unless_a_delete_comes() {
    let mut s = Store::new();
    s.apply(&[create(ALICE, 1024, 10_000)]);
    assert_eq!(s.who(1024, 10_000 + LIFETIME - 1).as_deref(), Some(ALICE));
    assert_eq!(s.who(1024, 10_000 + LIFETIME), None);
    // A delete later than the lifetime is better evidence than our limit.
    assert_eq!(
        s.apply(&[delete(ALICE, 1024, 10_000 + 2 * LIFETIME)]),
        [Applied::Closed]
    );
    assert_eq!(s.who(1024, 10_000 + LIFETIME).as_deref(), Some(ALICE));
}

#[test]
fn out_of_order_a_create_after_its_delete_gives_the_binding_its_start() {
    let mut s = Store::new();
    // Both bindings of port 1024, each delete before its create, and bob's
    // pair before alice's.
    let applied = s.apply(&[
        delete(BOB, 1024, 50_000),
        create(BOB, 1024, 30_000),
        delete(ALICE, 1024, 20_000),
        create(ALICE, 1024, 10_000),
    ]);
    assert_eq!(
        applied,
        [
            Applied::Orphan,
            Applied::Completed,
            Applied::Orphan,
            Applied::Completed
        ]
    );
    for (at, who) in [
        (9_999, None),
        (10_000, Some(ALICE)),
        (19_999, Some(ALICE)),
        (20_000, None),
        (29_999, None),
        (30_000, Some(BOB)),
        (49_999, Some(BOB)),
        (50_000, None),
    ] {
        assert_eq!(s.who(1024, at).as_deref(), who, "at {at}");
    }
    assert!(s.rows.values().all(|b| b.start_seen && b.deleted));
}

#[test]
fn a_delete_without_create_holds_back_to_a_guessed_start_behind_known_bindings() {
    let mut s = Store::new();
    // alice [100 000, 200 000) known; bob's create lost, his delete at
    // 500 000: he held the port at most LIFETIME before.
    let applied = s.apply(&[
        create(ALICE, 1024, 100_000),
        delete(ALICE, 1024, 200_000),
        delete(BOB, 1024, 500_000),
    ]);
    assert_eq!(applied[2], Applied::Orphan);
    let b = s
        .bindings
        .lookup(0, ip(PUBLIC), TCP, 1024, 499_999)
        .unwrap();
    assert!(!b.start_seen);
    assert_eq!(
        (b.from_ms, b.to_ms),
        (0, 500_000),
        "500 000 − LIFETIME, floored at 0"
    );
    assert_eq!(s.who(1024, 50_000).as_deref(), Some(BOB), "guessed");
    assert_eq!(s.who(1024, 150_000).as_deref(), Some(ALICE), "known wins");
    assert_eq!(
        s.who(1024, 200_000).as_deref(),
        Some(BOB),
        "after alice's delete"
    );
    assert_eq!(s.who(1024, 500_000), None);
    // A delete that says when it began is not a guess.
    let mut started = delete(BOB, 2048, 500_000);
    started.started_ms = Some(450_000);
    s.apply(&[started]);
    assert_eq!(s.who(2048, 449_999), None);
    assert!(
        s.bindings
            .lookup(0, ip(PUBLIC), TCP, 2048, 450_000)
            .unwrap()
            .start_seen
    );
}

#[test]
fn port_blocks_bind_every_step_of_their_range_for_every_protocol() {
    let mut s = Store::new();
    let (alloc, dealloc) = (event::PORT_BLOCK_ALLOCATION, event::PORT_BLOCK_DEALLOCATION);
    s.apply(&[
        block(alloc, ALICE, 2000, 2060, 4, 10_000),
        block(alloc, BOB, 2001, 2061, 4, 12_000),
        block(dealloc, ALICE, 2000, 2060, 4, 20_000),
    ]);
    assert_eq!(s.bindings.len(), 2, "one entry per block");
    assert_eq!(s.who(2004, 15_000).as_deref(), Some(ALICE));
    assert_eq!(s.who(2005, 15_000).as_deref(), Some(BOB));
    assert_eq!(s.who(2002, 15_000), None, "between the steps");
    assert_eq!(s.who(2064, 15_000), None, "past the end");
    assert_eq!(s.who(2004, 20_000), None, "deallocated");
    let udp = s.bindings.lookup(0, ip(PUBLIC), UDP, 2061, 15_000).unwrap();
    assert_eq!((udp.inside_ip, udp.ports.start), (ip(BOB), 2001));
    assert_eq!(s.bindings.protocols(0, ip(PUBLIC), 2005), [0]);
}

#[test]
fn nat64_binds_an_ipv6_inside_to_an_ipv4_public_port() {
    let mut s = Store::new();
    let mut e = session(
        event::NAT64_SESSION_CREATE,
        "2001:db8::7",
        1024,
        UDP,
        10_000,
    );
    e.inside_port = Some(5353);
    s.apply(&[e]);
    let b = s.bindings.lookup(0, ip(PUBLIC), UDP, 1024, 10_001).unwrap();
    assert_eq!(
        (b.inside_ip, b.inside_port),
        (ip("2001:db8::7"), Some(5353))
    );
}

#[test]
fn events_that_bind_nothing_are_counted_only() {
    let mut s = Store::new();
    let mut no_public = create(ALICE, 1024, 1);
    no_public.outside = None;
    let quota = session(event::QUOTA_EXCEEDED, ALICE, 1024, TCP, 1);
    assert_eq!(
        s.apply(&[no_public, quota]),
        [Applied::Incomplete, Applied::Counted]
    );
    assert!(s.rows.is_empty() && s.bindings.is_empty());
}

#[test]
fn a_restart_rebuilds_the_same_answers_and_goes_on() {
    let mut s = Store::new();
    s.apply(&[
        create(ALICE, 1024, 10_000),
        delete(BOB, 1025, 40_000),
        block(event::PORT_BLOCK_ALLOCATION, BOB, 3000, 3063, 1, 5_000),
    ]);
    let instants = [0, 9_999, 10_000, 30_000, 39_999, 40_000];
    let answer = |s: &Store| -> Vec<_> {
        instants
            .iter()
            .flat_map(|&at| [1024, 1025, 3010].map(|port| s.who(port, at)))
            .collect()
    };
    let before = answer(&s);
    s.restart();
    assert_eq!(answer(&s), before);
    // Events after the restart pair with bindings from before it.
    assert_eq!(
        s.apply(&[
            delete(ALICE, 1024, 20_000),
            create(BOB, 1025, 30_000),
            create(ALICE, 1026, 1)
        ]),
        [Applied::Closed, Applied::Completed, Applied::Opened]
    );
    assert_eq!(s.who(1024, 20_000), None);
    assert_eq!(s.who(1025, 29_999), None);
    let ids: Vec<u64> = s.rows.keys().copied().collect();
    assert_eq!(ids, [1, 2, 3, 4], "new ids after the old ones");
}

#[test]
fn memory_keeps_the_retention_and_at_most_max_bindings() {
    let limits = Limits {
        max_bindings: 4,
        ..limits()
    };
    let mut bindings = Bindings::new(limits);
    for (port, at) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
        bindings.apply(ip(NAT), &create(ALICE, port, at));
        bindings.apply(ip(NAT), &delete(ALICE, port, at + 10));
    }
    bindings.apply(ip(NAT), &create(ALICE, 4, 4_000));
    assert_eq!(
        bindings.apply(ip(NAT), &create(ALICE, 5, 5_000)),
        Applied::Refused,
        "persisted, not kept"
    );
    let changes = bindings.take_changes();
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, Change::Insert(_)))
            .count(),
        5
    );
    // Full: the earliest-ended leave, down to three quarters.
    let pruned = bindings.prune(5_000);
    assert_eq!((pruned.evicted, pruned.kept, pruned.open), (1, 3, 1));
    assert!(bindings.lookup(0, ip(PUBLIC), TCP, 1, 1_005).is_none());
    assert!(bindings.lookup(0, ip(PUBLIC), TCP, 2, 2_005).is_some());
    // Past the retention of ports 2 and 3; port 4 ended by its lifetime
    // later and stays.
    let pruned = bindings.prune(3_010 + limits.memory_retention_ms + 1);
    assert_eq!((pruned.expired, pruned.kept, pruned.open), (2, 1, 0));
    assert!(bindings.lookup(0, ip(PUBLIC), TCP, 4, 4_000).is_some());
}
