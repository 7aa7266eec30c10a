use std::collections::BTreeMap;

use super::*;
use crate::rng::Rng;

const T0: u64 = 1_700_000_000_000;
const NAS: &str = "198.18.0.1";

fn s(seconds: u64) -> u64 {
    seconds * 1000
}

fn event(kind: EventKind, session_id: &str, time_ms: u64) -> Event {
    Event::new(kind, NAS, session_id, time_ms)
}

/// A Start of `user` holding the IPv4 address `ip`.
fn start(session_id: &str, user: &str, ip: &str, time_ms: u64) -> Event {
    Event::start_v4(NAS, session_id, user, ip.parse().unwrap(), time_ms)
}

fn interim(session_id: &str, time_ms: u64) -> Event {
    event(EventKind::InterimUpdate, session_id, time_ms)
}

fn stop(session_id: &str, time_ms: u64) -> Event {
    event(EventKind::Stop, session_id, time_ms)
}

fn on_nas(nas: &str, event: Event) -> Event {
    Event {
        nas: nas.into(),
        ..event
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn session_rows(changes: &[Change]) -> Vec<&SessionRow> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Session(row) => Some(row),
            Change::Address(_) => None,
        })
        .collect()
}

/// The only session row of `changes`.
fn session_row(changes: &[Change]) -> &SessionRow {
    let rows = session_rows(changes);
    assert_eq!(rows.len(), 1, "one session row in {changes:#?}");
    rows[0]
}

/// Address rows as (net, from, to), sorted.
fn intervals(changes: &[Change]) -> Vec<(IpNet, u64, Option<u64>)> {
    let mut rows: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Address(a) => Some((a.net, a.from_ms, a.to_ms)),
            Change::Session(_) => None,
        })
        .collect();
    rows.sort_unstable();
    rows
}

/// The user holding `ip` at `at_ms`.
fn holder(history: &History, ip: &str, at_ms: u64) -> Option<String> {
    history
        .whois(ip.parse().unwrap(), at_ms)
        .map(|owner| owner.user_name)
}

// 1. Session keys.

#[test]
fn a_start_for_an_id_still_open_supersedes_that_session_at_the_new_start() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&interim("s1", T0 + s(60)));
    // The NAS rebooted without Accounting-On and reused the id.
    let changes = history.apply(&start("s1", "bob", "100.64.0.1", T0 + s(120)));

    let rows = session_rows(&changes);
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].id, rows[0].user_name.as_str()), (1, "alice"));
    assert_eq!(rows[0].stop_ms, Some(T0 + s(120)));
    assert_eq!(rows[0].terminate_cause.as_deref(), Some(SUPERSEDED));
    assert_eq!((rows[1].id, rows[1].user_name.as_str()), (2, "bob"));
    assert_eq!((rows[1].start_ms, rows[1].stop_ms), (T0 + s(120), None));
    assert_eq!(
        intervals(&changes),
        [
            (net("100.64.0.1/32"), T0, Some(T0 + s(120))),
            (net("100.64.0.1/32"), T0 + s(120), None),
        ]
    );
    assert_eq!(history.open_sessions(), 1);
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(120) - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(120)).as_deref(),
        Some("bob")
    );
}

#[test]
fn a_retransmitted_or_late_start_changes_nothing() {
    let mut history = History::new();
    let first = start("s1", "alice", "100.64.0.1", T0);
    history.apply(&first);
    assert_eq!(history.apply(&first), []);

    // The Interim overtook the Start: the Start is late, not a new session.
    let late = start("s2", "bob", "100.64.0.2", T0);
    history.apply(&Event {
        session_time_s: Some(60),
        ..interim("s2", T0 + s(60))
    });
    assert_eq!(history.apply(&late), []);
    assert_eq!(history.open_sessions(), 2);
}

#[test]
fn session_ids_are_per_nas() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&on_nas("198.18.0.2", start("s1", "bob", "100.64.0.2", T0)));
    assert_eq!(history.open_sessions(), 2);

    let changes = history.apply(&on_nas("198.18.0.2", stop("s1", T0 + s(10))));
    assert_eq!(session_row(&changes).user_name, "bob");
    assert_eq!(history.open_sessions(), 1);
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(10)).as_deref(),
        Some("alice")
    );
}

// 2. Start, Interim-Update, Stop.

#[test]
fn a_start_opens_an_interval_for_every_address_it_carries() {
    let mut history = History::new();
    let changes = history.apply(&Event {
        framed_ipv6: Some("2001:db8:1::1".parse().unwrap()),
        framed_prefixes: vec![
            "2001:db8:1::/64".parse().unwrap(),
            // Host bits set: kept as the network.
            "2001:db8:100:1::/56".parse().unwrap(),
        ],
        nas_port_id: Some("ge-0/0/1.100:100".into()),
        calling_station_id: Some("00-11-22-33-44-55".into()),
        class: Some(b"gold".to_vec()),
        interim_interval_s: Some(300),
        ..start("s1", "alice", "100.64.0.1", T0)
    });

    assert_eq!(
        session_row(&changes),
        &SessionRow {
            id: 1,
            user_name: "alice".into(),
            nas: NAS.into(),
            session_id: "s1".into(),
            framed_ip: Some("100.64.0.1".parse().unwrap()),
            framed_prefix: Some("2001:db8:1::/64".parse().unwrap()),
            start_ms: T0,
            stop_ms: None,
            last_update_ms: T0,
            interim_interval_s: Some(300),
            nas_port_id: Some("ge-0/0/1.100:100".into()),
            calling_station_id: Some("00-11-22-33-44-55".into()),
            class: Some(b"gold".to_vec()),
            input_octets: None,
            output_octets: None,
            terminate_cause: None,
        }
    );
    assert!(
        matches!(changes[0], Change::Session(_)),
        "the session row comes first"
    );
    assert_eq!(
        intervals(&changes),
        [
            (net("100.64.0.1/32"), T0, None),
            (net("2001:db8:1::/64"), T0, None),
            (net("2001:db8:1::1/128"), T0, None),
            (net("2001:db8:100::/56"), T0, None),
        ]
    );
    for ip in [
        "100.64.0.1",
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db8:100:ff::1",
    ] {
        assert_eq!(holder(&history, ip, T0).as_deref(), Some("alice"), "{ip}");
    }
    assert_eq!(history.open_sessions(), 1);
}

#[test]
fn an_interim_refreshes_the_session_and_leaves_unchanged_addresses_alone() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    let changes = history.apply(&Event {
        framed_ip: Some("100.64.0.1".parse().unwrap()),
        input_octets: Some(1_000),
        output_octets: Some(20_000),
        interim_interval_s: Some(300),
        session_time_s: Some(300),
        ..interim("s1", T0 + s(300))
    });

    assert_eq!(changes.len(), 1, "no address rows: {changes:#?}");
    let row = session_row(&changes);
    assert_eq!(row.last_update_ms, T0 + s(300));
    assert_eq!(
        (row.input_octets, row.output_octets),
        (Some(1_000), Some(20_000))
    );
    assert_eq!(row.interim_interval_s, Some(300));
    assert_eq!((row.start_ms, row.stop_ms), (T0, None));
}

#[test]
fn an_address_change_closes_the_old_intervals_and_opens_new_ones() {
    let mut history = History::new();
    history.apply(&Event {
        framed_prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    let t1 = T0 + s(300);
    let changes = history.apply(&Event {
        framed_ip: Some("100.64.0.9".parse().unwrap()),
        framed_prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
        ..interim("s1", t1)
    });

    assert_eq!(
        session_row(&changes).framed_ip,
        Some("100.64.0.9".parse().unwrap())
    );
    // The whole set moves: the unchanged prefix gets a new interval too, so
    // that a session's current intervals always start together.
    assert_eq!(
        intervals(&changes),
        [
            (net("100.64.0.1/32"), T0, Some(t1)),
            (net("100.64.0.9/32"), t1, None),
            (net("2001:db8:1::/64"), T0, Some(t1)),
            (net("2001:db8:1::/64"), t1, None),
        ]
    );
    assert_eq!(
        holder(&history, "100.64.0.1", t1 - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.1", t1), None);
    assert_eq!(holder(&history, "100.64.0.9", t1).as_deref(), Some("alice"));
    assert_eq!(
        holder(&history, "2001:db8:1::5", t1 - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(
        holder(&history, "2001:db8:1::5", t1).as_deref(),
        Some("alice")
    );
}

#[test]
fn an_event_without_an_address_of_a_family_keeps_that_family() {
    let mut history = History::new();
    history.apply(&Event {
        framed_prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    let same_v4_only = Event {
        framed_ip: Some("100.64.0.1".parse().unwrap()),
        ..interim("s1", T0 + s(300))
    };
    assert_eq!(
        history.apply(&same_v4_only).len(),
        1,
        "the session row only"
    );
    assert_eq!(history.apply(&interim("s1", T0 + s(600))).len(), 1);

    let changes = history.apply(&Event {
        framed_prefixes: vec!["2001:db8:2::/64".parse().unwrap()],
        ..interim("s1", T0 + s(900))
    });
    assert_eq!(
        intervals(&changes),
        [
            (net("100.64.0.1/32"), T0, Some(T0 + s(900))),
            (net("100.64.0.1/32"), T0 + s(900), None),
            (net("2001:db8:1::/64"), T0, Some(T0 + s(900))),
            (net("2001:db8:2::/64"), T0 + s(900), None),
        ]
    );
}

#[test]
fn a_stop_closes_the_session_and_its_intervals_with_counters_and_cause() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    let t1 = T0 + s(3600);
    let changes = history.apply(&Event {
        input_octets: Some(5_000_000_000),
        output_octets: Some(70_000),
        session_time_s: Some(3600),
        terminate_cause: Some(1),
        ..stop("s1", t1)
    });

    let row = session_row(&changes);
    assert_eq!(
        (row.start_ms, row.stop_ms, row.last_update_ms),
        (T0, Some(t1), t1)
    );
    assert_eq!(
        (row.input_octets, row.output_octets),
        (Some(5_000_000_000), Some(70_000))
    );
    assert_eq!(row.terminate_cause.as_deref(), Some("User-Request"));
    assert_eq!(intervals(&changes), [(net("100.64.0.1/32"), T0, Some(t1))]);
    assert_eq!(history.open_sessions(), 0);
}

#[test]
fn terminate_causes_are_named_and_unknown_codes_are_numbers() {
    assert_eq!(terminate_cause_name(1), "User-Request");
    assert_eq!(terminate_cause_name(2), "Lost-Carrier");
    assert_eq!(terminate_cause_name(4), "Idle-Timeout");
    assert_eq!(terminate_cause_name(11), "NAS-Reboot");
    assert_eq!(terminate_cause_name(22), "Port-Disabled");
    assert_eq!(terminate_cause_name(0), "0");
    assert_eq!(terminate_cause_name(23), "23");
}

// 3. Events without a Start.

#[test]
fn an_interim_without_start_opens_the_session_its_session_time_implies() {
    let mut history = History::new();
    let changes = history.apply(&Event {
        user_name: Some("alice".into()),
        framed_ip: Some("100.64.0.1".parse().unwrap()),
        session_time_s: Some(600),
        ..interim("s1", T0 + s(600))
    });
    let row = session_row(&changes);
    assert_eq!(
        (row.start_ms, row.last_update_ms, row.stop_ms),
        (T0, T0 + s(600), None)
    );
    assert_eq!(intervals(&changes), [(net("100.64.0.1/32"), T0, None)]);
    assert_eq!(holder(&history, "100.64.0.1", T0).as_deref(), Some("alice"));

    // Without a session time, it starts at the event.
    let changes = history.apply(&interim("s2", T0 + s(600)));
    assert_eq!(session_row(&changes).start_ms, T0 + s(600));
    assert_eq!(history.open_sessions(), 2);
}

#[test]
fn a_stop_without_start_yields_a_closed_session_with_its_interval() {
    let mut history = History::new();
    let changes = history.apply(&Event {
        user_name: Some("alice".into()),
        framed_ip: Some("100.64.0.1".parse().unwrap()),
        session_time_s: Some(600),
        terminate_cause: Some(2),
        ..stop("s1", T0 + s(600))
    });
    let row = session_row(&changes);
    assert_eq!((row.start_ms, row.stop_ms), (T0, Some(T0 + s(600))));
    assert_eq!(row.terminate_cause.as_deref(), Some("Lost-Carrier"));
    assert_eq!(
        intervals(&changes),
        [(net("100.64.0.1/32"), T0, Some(T0 + s(600)))]
    );
    assert_eq!(history.open_sessions(), 0);
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(599)).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.1", T0 + s(600)), None);
}

// 4. Accounting-On/Off.

#[test]
fn accounting_on_closes_every_session_its_nas_started_before_it() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&start("s2", "bob", "100.64.0.2", T0 + s(10)));
    history.apply(&on_nas(
        "198.18.0.2",
        start("s1", "carol", "100.64.1.1", T0),
    ));
    // Sent after the reboot, but it overtook the Accounting-On.
    history.apply(&start("s9", "dave", "100.64.0.9", T0 + s(150)));

    let changes = history.apply(&event(EventKind::AccountingOn, "", T0 + s(100)));
    let rows = session_rows(&changes);
    assert_eq!(
        rows.iter()
            .map(|r| (
                r.user_name.as_str(),
                r.stop_ms,
                r.terminate_cause.as_deref()
            ))
            .collect::<Vec<_>>(),
        [
            ("alice", Some(T0 + s(100)), Some(ACCOUNTING_ON)),
            ("bob", Some(T0 + s(100)), Some(ACCOUNTING_ON)),
        ]
    );
    assert_eq!(
        intervals(&changes),
        [
            (net("100.64.0.1/32"), T0, Some(T0 + s(100))),
            (net("100.64.0.2/32"), T0 + s(10), Some(T0 + s(100))),
        ]
    );
    assert_eq!(
        history.open_sessions(),
        2,
        "carol on the other NAS, and dave"
    );

    // The id after the reboot is a new session.
    let changes = history.apply(&start("s1", "erin", "100.64.0.1", T0 + s(200)));
    assert_eq!(session_row(&changes).id, 5);
}

#[test]
fn accounting_off_closes_the_sessions_of_its_nas_too() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    let changes = history.apply(&event(EventKind::AccountingOff, "", T0 + s(100)));
    let row = session_row(&changes);
    assert_eq!(row.stop_ms, Some(T0 + s(100)));
    assert_eq!(row.terminate_cause.as_deref(), Some(ACCOUNTING_OFF));
    assert_eq!(history.open_sessions(), 0);
}

// 5. Silence.

#[test]
fn a_session_silent_for_longer_than_its_allowance_closes_at_its_last_update() {
    let mut history = History::new();
    history.apply(&Event {
        interim_interval_s: Some(60),
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    history.apply(&interim("s1", T0 + s(60)));
    // No interim interval: the default (300 s) applies.
    history.apply(&start("s2", "bob", "100.64.0.2", T0));

    assert_eq!(history.close_silent(T0 + s(60 + 3 * 60), 3, 300), []);
    let changes = history.close_silent(T0 + s(60 + 3 * 60) + 1, 3, 300);
    let row = session_row(&changes);
    assert_eq!(row.user_name, "alice");
    assert_eq!(row.stop_ms, Some(T0 + s(60)));
    assert_eq!(row.terminate_cause.as_deref(), Some(SILENT));
    assert_eq!(
        intervals(&changes),
        [(net("100.64.0.1/32"), T0, Some(T0 + s(60)))]
    );
    assert_eq!(history.open_sessions(), 1);

    assert_eq!(history.close_silent(T0 + s(3 * 300), 3, 300), []);
    let changes = history.close_silent(T0 + s(3 * 300) + 1, 3, 300);
    assert_eq!(session_row(&changes).user_name, "bob");
    assert_eq!(history.open_sessions(), 0);
    assert_eq!(
        history.close_silent(T0 + s(100_000), 3, 300),
        [],
        "closed once"
    );
}

#[test]
fn a_silent_session_revives_on_its_next_interim() {
    let mut history = History::new();
    history.apply(&Event {
        interim_interval_s: Some(60),
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    history.close_silent(T0 + s(1000), 3, 300);
    // The NAS was only unreachable; it delivers an update from later on.
    let changes = history.apply(&interim("s1", T0 + s(900)));

    let row = session_row(&changes);
    assert_eq!(
        (row.id, row.stop_ms, row.terminate_cause.as_deref()),
        (1, None, None)
    );
    assert_eq!(intervals(&changes), [(net("100.64.0.1/32"), T0, None)]);
    assert_eq!(history.open_sessions(), 1);
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(500)).as_deref(),
        Some("alice")
    );
}

#[test]
fn a_stop_after_silence_closes_at_its_own_time() {
    for stop_at in [T0 + s(900), T0 + s(30)] {
        let mut history = History::new();
        history.apply(&Event {
            interim_interval_s: Some(60),
            ..start("s1", "alice", "100.64.0.1", T0)
        });
        history.apply(&interim("s1", T0 + s(60)));
        history.close_silent(T0 + s(1000), 3, 300);
        let last = Event {
            terminate_cause: Some(4),
            ..stop("s1", stop_at)
        };
        let changes = history.apply(&last);

        let row = session_row(&changes);
        assert_eq!(row.stop_ms, Some(stop_at));
        assert_eq!(row.terminate_cause.as_deref(), Some("Idle-Timeout"));
        assert_eq!(
            intervals(&changes),
            [(net("100.64.0.1/32"), T0, Some(stop_at))]
        );
        assert_eq!(history.open_sessions(), 0);
        assert_eq!(history.apply(&last), [], "closed for good");
    }
}

#[test]
fn accounting_on_ends_silent_sessions_for_good() {
    let mut history = History::new();
    history.apply(&Event {
        interim_interval_s: Some(60),
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    history.close_silent(T0 + s(1000), 3, 300);
    let changes = history.apply(&event(EventKind::AccountingOn, "", T0 + s(2000)));
    let row = session_row(&changes);
    assert_eq!(row.stop_ms, Some(T0), "the silent stop stays");
    assert_eq!(row.terminate_cause.as_deref(), Some(ACCOUNTING_ON));
    assert_eq!(intervals(&changes), []);

    // The id after the reboot is a new session, not the old one revived.
    let changes = history.apply(&interim("s1", T0 + s(2100)));
    assert_eq!(session_row(&changes).id, 2);
}

// 6. Late and repeated events.

#[test]
fn a_stop_older_than_the_last_update_still_closes_at_its_own_time() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&interim("s1", T0 + s(300)));
    let changes = history.apply(&stop("s1", T0 + s(200)));
    let row = session_row(&changes);
    assert_eq!(
        (row.stop_ms, row.last_update_ms),
        (Some(T0 + s(200)), T0 + s(300))
    );
    assert_eq!(
        intervals(&changes),
        [(net("100.64.0.1/32"), T0, Some(T0 + s(200)))]
    );
}

#[test]
fn an_event_for_a_session_already_closed_changes_nothing() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&interim("s1", T0 + s(300)));
    let last = stop("s1", T0 + s(400));
    history.apply(&last);

    assert_eq!(history.apply(&last), [], "retransmitted Stop");
    assert_eq!(
        history.apply(&interim("s1", T0 + s(300))),
        [],
        "retransmitted Interim"
    );
    assert_eq!(
        history.apply(&interim("s1", T0 + s(350))),
        [],
        "late Interim"
    );
    assert_eq!(history.open_sessions(), 0);
}

#[test]
fn an_interim_older_than_the_last_update_changes_nothing() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&interim("s1", T0 + s(300)));
    let late = Event {
        framed_ip: Some("100.64.0.7".parse().unwrap()),
        ..interim("s1", T0 + s(200))
    };
    assert_eq!(history.apply(&late), []);
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(250)).as_deref(),
        Some("alice")
    );
}

#[test]
fn a_stop_before_the_start_closes_at_the_start() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0 + s(100)));
    let changes = history.apply(&stop("s1", T0 + s(50)));
    assert_eq!(session_row(&changes).stop_ms, Some(T0 + s(100)));
    assert_eq!(
        intervals(&changes),
        [(net("100.64.0.1/32"), T0 + s(100), Some(T0 + s(100)))]
    );
    assert_eq!(holder(&history, "100.64.0.1", T0 + s(100)), None);
}

// 7. whois.

#[test]
fn intervals_are_half_open_and_an_open_one_never_ends() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    assert_eq!(holder(&history, "100.64.0.1", T0 - 1), None);
    assert_eq!(holder(&history, "100.64.0.1", T0).as_deref(), Some("alice"));
    assert_eq!(
        holder(&history, "100.64.0.1", u64::MAX - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.2", T0), None);

    history.apply(&stop("s1", T0 + s(10)));
    assert_eq!(
        holder(&history, "100.64.0.1", T0 + s(10) - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.1", T0 + s(10)), None);
}

#[test]
fn whois_tells_the_session_and_its_interval() {
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&stop("s1", T0 + s(10)));
    assert_eq!(
        history.whois("100.64.0.1".parse().unwrap(), T0 + s(5)),
        Some(Owner {
            session: 1,
            user_name: "alice".into(),
            session_id: "s1".into(),
            nas: NAS.into(),
            from_ms: T0,
            to_ms: Some(T0 + s(10)),
        })
    );
}

#[test]
fn a_reused_address_belongs_to_each_holder_in_turn() {
    let (t1, t2) = (T0 + s(100), T0 + s(200));
    let mut history = History::new();
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&stop("s1", t1));
    history.apply(&start("s2", "bob", "100.64.0.1", t2));
    // Handed on at the very instant it was released.
    history.apply(&start("s3", "carol", "100.64.0.3", T0));
    history.apply(&stop("s3", t1));
    history.apply(&start("s4", "dave", "100.64.0.3", t1));

    assert_eq!(
        holder(&history, "100.64.0.1", t1 - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.1", t1), None);
    assert_eq!(holder(&history, "100.64.0.1", t2 - 1), None);
    assert_eq!(holder(&history, "100.64.0.1", t2).as_deref(), Some("bob"));
    assert_eq!(
        holder(&history, "100.64.0.3", t1 - 1).as_deref(),
        Some("carol")
    );
    assert_eq!(holder(&history, "100.64.0.3", t1).as_deref(), Some("dave"));
}

#[test]
fn of_overlapping_intervals_the_latest_start_wins_and_ends_the_earlier() {
    let (t1, t2) = (T0 + s(100), T0 + s(200));
    let mut history = History::new();
    // alice's Stop was lost; the NAS hands her address to bob.
    history.apply(&start("s1", "alice", "100.64.0.1", T0));
    history.apply(&start("s2", "bob", "100.64.0.1", t1));
    assert_eq!(
        holder(&history, "100.64.0.1", t1 - 1).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "100.64.0.1", t1).as_deref(), Some("bob"));

    history.apply(&stop("s2", t2));
    assert_eq!(holder(&history, "100.64.0.1", t2), None, "not alice again");

    // Two starts at the same instant: the later session wins.
    history.apply(&start("s3", "carol", "100.64.0.2", T0));
    history.apply(&start("s4", "dave", "100.64.0.2", T0));
    assert_eq!(holder(&history, "100.64.0.2", T0).as_deref(), Some("dave"));
}

#[test]
fn ipv6_takes_the_longest_matching_prefix_with_a_holder() {
    let mut history = History::new();
    history.apply(&Event {
        framed_prefixes: vec!["2001:db8:100::/56".parse().unwrap()],
        ..start("s1", "alice", "100.64.0.1", T0)
    });
    history.apply(&Event {
        framed_ipv6: Some("2001:db8:100:1::1".parse().unwrap()),
        framed_prefixes: vec!["2001:db8:100:1::/64".parse().unwrap()],
        ..start("s2", "bob", "100.64.0.2", T0 + s(10))
    });
    history.apply(&Event {
        framed_ipv6: Some("2001:db8:100:1::2".parse().unwrap()),
        ..start("s3", "carol", "100.64.0.3", T0 + s(20))
    });

    let at = T0 + s(30);
    assert_eq!(
        holder(&history, "2001:db8:100:1::2", at).as_deref(),
        Some("carol")
    );
    assert_eq!(
        holder(&history, "2001:db8:100:1::1", at).as_deref(),
        Some("bob")
    );
    assert_eq!(
        holder(&history, "2001:db8:100:1::3", at).as_deref(),
        Some("bob")
    );
    assert_eq!(
        holder(&history, "2001:db8:100:2::3", at).as_deref(),
        Some("alice")
    );
    assert_eq!(holder(&history, "2001:db8:101::1", at), None);
    // Before the longer prefix had a holder, and after it has none.
    assert_eq!(
        holder(&history, "2001:db8:100:1::3", T0).as_deref(),
        Some("alice")
    );
    history.apply(&stop("s2", T0 + s(40)));
    assert_eq!(
        holder(&history, "2001:db8:100:1::3", T0 + s(40)).as_deref(),
        Some("alice")
    );
}

// 8a. Open sessions per NAS, and which events would begin one.

#[test]
fn open_sessions_are_counted_per_nas_through_every_transition() {
    let other = "198.18.0.2";
    let mut history = History::new();
    let opens = |history: &History, e: &Event| history.would_begin(e).map(|n| n.adds_open);
    let s1 = start("s1", "alice", "100.64.0.1", T0);
    assert_eq!(opens(&history, &s1), Some(true), "an unknown id");
    history.apply(&s1);
    assert_eq!(opens(&history, &s1), None, "retransmitted");
    history.apply(&start("s2", "bob", "100.64.0.2", T0));
    history.apply(&on_nas(other, start("s1", "carol", "100.64.0.3", T0)));
    assert_eq!(history.open_sessions_on(NAS), 2);
    assert_eq!(history.open_sessions_on(other), 1);

    let reused = start("s1", "alice", "100.64.0.1", T0 + s(5));
    assert_eq!(
        opens(&history, &reused),
        Some(false),
        "supersedes an open one"
    );
    history.apply(&reused);
    assert_eq!(history.open_sessions_on(NAS), 2);
    assert_eq!(opens(&history, &interim("s2", T0 + s(6))), None);
    let lost_start = stop("s9", T0 + s(7));
    assert_eq!(
        opens(&history, &lost_start),
        Some(false),
        "opens and closes"
    );
    history.apply(&lost_start);
    history.apply(&stop("s2", T0 + s(8)));
    assert_eq!(history.open_sessions_on(NAS), 1);

    history.close_silent(T0 + s(10_000), 3, 60);
    assert_eq!(
        (history.open_sessions_on(NAS), history.open_sessions()),
        (0, 0)
    );
    assert_eq!(
        opens(&history, &interim("s1", T0 + s(10_001))),
        None,
        "a silent session revives, it is not new"
    );
    history.apply(&interim("s1", T0 + s(10_001)));
    assert_eq!(history.open_sessions_on(NAS), 1);
    assert_eq!(
        opens(
            &history,
            &event(EventKind::AccountingOn, "", T0 + s(10_002))
        ),
        None
    );
    history.apply(&event(EventKind::AccountingOn, "", T0 + s(10_002)));
    assert_eq!(history.open_sessions_on(NAS), 0);
    let mut rows = Rows::default();
    rows.add(history.apply(&start("s3", "dave", "100.64.0.4", T0 + s(10_003))));
    assert_eq!(history.open_sessions_on(NAS), 1);
    let rebuilt = rows.rebuild();
    assert_eq!(rebuilt.open_sessions_on(NAS), 1, "rebuilt from rows");
}

// 8. Memory.

/// Counts, per thread, the heap blocks and bytes allocated and not yet
/// freed, so that a test can measure what a structure it builds keeps.
mod counting {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };

    thread_local! {
        static BYTES: Cell<isize> = const { Cell::new(0) };
        static BLOCKS: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    fn add(bytes: isize, blocks: isize) {
        // During thread teardown the counters may be gone; nothing measures then.
        let _ = BYTES.try_with(|b| b.set(b.get() + bytes));
        let _ = BLOCKS.try_with(|b| b.set(b.get() + blocks));
    }

    // SAFETY: every call goes to `System` unchanged; counting only reads sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize, 1);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize), -1);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize, 0);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Heap kept: bytes as requested (the allocator adds its own overhead
    /// per block on top, 8 to 16 bytes with glibc).
    #[derive(Clone, Copy, Debug)]
    pub struct Kept {
        pub bytes: usize,
        pub blocks: usize,
    }

    /// What `build` returns, and the heap it keeps.
    pub fn kept<T>(build: impl FnOnce() -> T) -> (T, Kept) {
        let now = || (BYTES.with(Cell::get), BLOCKS.with(Cell::get));
        let before = now();
        let built = build();
        let after = now();
        let kept = Kept {
            bytes: usize::try_from(after.0 - before.0).expect("building keeps memory"),
            blocks: usize::try_from(after.1 - before.1).expect("building keeps blocks"),
        };
        (built, kept)
    }
}

/// A dual-stack subscriber as a BNG reports one: IPv4, a /64 and a delegated
/// /56, with port, MAC and Class.
fn dual_stack_start(i: u32) -> Event {
    let [_, a, b, c] = i.to_be_bytes();
    Event {
        user_name: Some(format!("user{i:06}@isp.example")),
        framed_ip: Some(std::net::Ipv4Addr::new(100, 64 + a, b, c)),
        framed_prefixes: vec![
            format!("2001:db8:{i:x}::/64").parse().unwrap(),
            format!("2001:db9:{:x}:{:x}00::/56", i >> 8, i & 0xff)
                .parse()
                .unwrap(),
        ],
        interim_interval_s: Some(300),
        nas_port_id: Some(format!("ge-0/0/1.{}:{}", i % 4000, i)),
        calling_station_id: Some(format!("00-11-22-{a:02X}-{b:02X}-{c:02X}")),
        class: Some(format!("plan-{:04}", i % 16).into_bytes()),
        ..event(EventKind::Start, &format!("{i:016X}"), T0 + u64::from(i))
    }
}

fn ipv4_only_start(i: u32) -> Event {
    let [_, a, b, c] = i.to_be_bytes();
    Event {
        user_name: Some(format!("user{i:06}@isp.example")),
        framed_ip: Some(std::net::Ipv4Addr::new(100, 64 + a, b, c)),
        ..event(EventKind::Start, &format!("{i:016X}"), T0 + u64::from(i))
    }
}

/// Heap kept per session: bytes as requested, and blocks (each costs the
/// allocator 8 to 16 bytes more with glibc).
#[derive(Debug)]
struct PerSession {
    bytes: usize,
    blocks: f64,
}

/// What the history, and its address index alone, keep per session after
/// the events of `n` sessions from `make`.
fn kept_per_session(n: u32, make: fn(u32) -> Vec<Event>) -> (PerSession, PerSession) {
    let events: Vec<Event> = (0..n).flat_map(make).collect();
    let (history, kept) = counting::kept(|| {
        let mut history = History::new();
        for event in &events {
            history.apply(event);
        }
        history
    });
    let mut writer = History::new();
    let mut rows = Rows::default();
    for event in &events {
        rows.add(writer.apply(event));
    }
    assert_eq!(history.open_sessions(), writer.open_sessions());
    let (_, index_kept) = counting::kept(|| {
        let mut index = index::Index::default();
        // A fresh history's ids are its slots + 1.
        for row in rows.addresses.values() {
            index.set(row.net, (row.session - 1) as u32, row.from_ms, row.to_ms);
        }
        index
    });
    let per = |kept: counting::Kept| PerSession {
        bytes: kept.bytes / n as usize,
        blocks: kept.blocks as f64 / f64::from(n),
    };
    (per(kept), per(index_kept))
}

#[test]
fn an_open_session_costs_a_few_hundred_bytes_of_which_the_index_under_256() {
    // 12 000 sessions leave the hash tables 73% full: neither the best nor
    // the worst case of their doubling.
    let (dual_stack, dual_stack_index) = kept_per_session(12_000, |i| vec![dual_stack_start(i)]);
    let (ipv4_only, ipv4_only_index) = kept_per_session(12_000, |i| vec![ipv4_only_start(i)]);
    println!("per open session, dual stack: {dual_stack:?}, its index {dual_stack_index:?}");
    println!("per open session, IPv4 only: {ipv4_only:?}, its index {ipv4_only_index:?}");
    assert!(
        dual_stack.bytes <= 700 && dual_stack.blocks < 8.1,
        "{dual_stack:?}"
    );
    assert!(
        ipv4_only.bytes <= 480 && ipv4_only.blocks < 5.1,
        "{ipv4_only:?}"
    );
    // No block per address: one holder at a time is kept inline.
    for index in [dual_stack_index, ipv4_only_index] {
        assert!(index.bytes <= 256 && index.blocks < 0.01, "{index:?}");
    }
}

#[test]
fn a_closed_session_keeps_only_what_whois_needs() {
    let (closed, _) = kept_per_session(12_000, |i| {
        let start = dual_stack_start(i);
        let stop = Event {
            terminate_cause: Some(1),
            ..event(EventKind::Stop, &start.session_id, start.time_ms + s(60))
        };
        vec![start, stop]
    });
    println!("per closed session, dual stack: {closed:?}");
    assert!(closed.bytes <= 480 && closed.blocks < 3.1, "{closed:?}");
}

// 9. Rebuilding from rows.

#[test]
fn a_rebuilt_history_goes_on_where_its_rows_left_off() {
    let mut history = History::new();
    let mut rows = Rows::default();
    rows.add(history.apply(&Event {
        interim_interval_s: Some(60),
        ..start("s1", "alice", "100.64.0.1", T0)
    }));
    rows.add(history.apply(&start("s2", "bob", "100.64.0.2", T0)));
    rows.add(history.apply(&stop("s2", T0 + s(10))));
    rows.add(history.close_silent(T0 + s(1000), 3, 300));

    let mut rebuilt = rows.rebuild();
    assert_eq!(rebuilt.open_sessions(), 0);
    assert_eq!(rebuilt.open_sessions_on(NAS), 0);
    assert_eq!(
        rebuilt.apply(&stop("s2", T0 + s(10))),
        [],
        "bob's Stop, retransmitted"
    );
    let changes = rebuilt.apply(&interim("s1", T0 + s(1100)));
    assert_eq!(session_row(&changes).id, 1, "alice revives");
    assert_eq!(intervals(&changes), [(net("100.64.0.1/32"), T0, None)]);
    let changes = rebuilt.apply(&start("s3", "carol", "100.64.0.3", T0 + s(1200)));
    assert_eq!(session_row(&changes).id, 3, "ids go on");
    assert_eq!(rebuilt.open_sessions_on(NAS), 2);
}

/// A database: the rows of every change, each replacing its predecessor.
#[derive(Default)]
struct Rows {
    sessions: BTreeMap<u64, SessionRow>,
    addresses: BTreeMap<(u64, IpNet, u64), AddressRow>,
}

impl Rows {
    fn add(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Session(row) => {
                    self.sessions.insert(row.id, row);
                }
                Change::Address(row) => {
                    self.addresses
                        .insert((row.session, row.net, row.from_ms), row);
                }
            }
        }
    }

    fn rebuild(&self) -> History {
        // In an order of their own, as a database may return them.
        History::from_rows(
            self.sessions.values().rev().cloned(),
            self.addresses.values().rev().cloned(),
        )
    }
}

const NASES: [&str; 3] = ["198.18.0.1", "198.18.0.2", "nas-3.example"];

/// One step of an accounting stream.
enum Step {
    Event(Box<Event>),
    CloseSilent(u64),
}

/// An accounting stream with what real ones have: few addresses reused
/// often, address changes, lost Starts, retransmissions, late events, ids
/// reused after reboots, Accounting-On, silence.
struct Stream {
    rng: Rng,
    now_ms: u64,
    /// (NAS, id, start) of the sessions begun and not stopped.
    running: Vec<(usize, String, u64)>,
    sent: Vec<Event>,
    next_id: u64,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            now_ms: T0,
            running: Vec::new(),
            sent: Vec::new(),
            next_id: 0,
        }
    }

    /// `event` with addresses from pools small enough to be reused often.
    fn addresses(&mut self, event: Event) -> Event {
        let ip = std::net::Ipv4Addr::new(100, 64, 0, self.rng.below(24) as u8);
        let v6 = self.rng.below(3);
        Event {
            framed_ip: (self.rng.below(8) > 0).then_some(ip),
            framed_ipv6: (v6 == 1).then(|| {
                format!("2001:db8:0:{}::1", self.rng.below(6))
                    .parse()
                    .unwrap()
            }),
            framed_prefixes: match v6 {
                2 => vec![
                    format!("2001:db8:0:{}::/64", self.rng.below(6))
                        .parse()
                        .unwrap(),
                    format!("2001:db8:1:{}00::/56", self.rng.below(4))
                        .parse()
                        .unwrap(),
                ],
                _ => Vec::new(),
            },
            ..event
        }
    }

    fn step(&mut self) -> Step {
        self.now_ms += self.rng.below(s(40));
        let now = self.now_ms;
        let roll = self.rng.below(100);
        let event = match roll {
            0..25 => {
                let mut nas = self.rng.below(3) as usize;
                // Now and then an id from before, as after a NAS reboot, even
                // one still running.
                let id = match self.rng.below(20) {
                    0 if !self.running.is_empty() => {
                        let at = self.rng.below(self.running.len() as u64) as usize;
                        let (running_nas, id, _) = self.running.swap_remove(at);
                        nas = running_nas;
                        id
                    }
                    1 | 2 if !self.sent.is_empty() => self.rng.pick(&self.sent).session_id.clone(),
                    _ => {
                        self.next_id += 1;
                        format!("{:08X}", self.next_id)
                    }
                };
                self.running.push((nas, id.clone(), now));
                let start = Event {
                    user_name: Some(format!("user{}", self.rng.below(40))),
                    interim_interval_s: *self.rng.pick(&[None, Some(0), Some(60), Some(300)]),
                    nas_port_id: Some(format!("port{}", self.rng.below(100))),
                    class: (self.rng.below(2) == 0).then(|| vec![1, 2, 3]),
                    ..on_nas(NASES[nas], event(EventKind::Start, &id, now))
                };
                self.addresses(start)
            }
            25..70 if !self.running.is_empty() => {
                let at = self.rng.below(self.running.len() as u64) as usize;
                let stopping = roll >= 55;
                let (nas, id, started) = if stopping {
                    self.running.swap_remove(at)
                } else {
                    self.running[at].clone()
                };
                let kind = if stopping {
                    EventKind::Stop
                } else {
                    EventKind::InterimUpdate
                };
                let update = Event {
                    session_time_s: (self.rng.below(5) > 0)
                        .then_some(((now - started) / 1000) as u32),
                    input_octets: Some((now - started) * 3),
                    output_octets: (self.rng.below(4) > 0).then_some((now - started) * 7),
                    terminate_cause: stopping.then(|| self.rng.below(25) as u32),
                    ..on_nas(NASES[nas], event(kind, &id, now))
                };
                // A third of updates carry addresses, which may have moved.
                if self.rng.below(3) == 0 {
                    self.addresses(update)
                } else {
                    update
                }
            }
            70..82 if !self.sent.is_empty() => self.rng.pick(&self.sent).clone(),
            82..90 if !self.sent.is_empty() => {
                let late = self.rng.pick(&self.sent).clone();
                let earlier = self.rng.below(s(120));
                Event {
                    time_ms: late.time_ms.saturating_sub(earlier),
                    ..late
                }
            }
            90..94 => {
                // Its Start was lost.
                self.next_id += 1;
                let kind = *self.rng.pick(&[EventKind::InterimUpdate, EventKind::Stop]);
                let lost = Event {
                    user_name: Some(format!("user{}", self.rng.below(40))),
                    session_time_s: Some(self.rng.below(600) as u32),
                    ..on_nas(
                        NASES[self.rng.below(3) as usize],
                        event(kind, &format!("L{}", self.next_id), now),
                    )
                };
                self.addresses(lost)
            }
            94 => {
                let nas = self.rng.below(3) as usize;
                self.running.retain(|(n, ..)| *n != nas);
                let kind = *self
                    .rng
                    .pick(&[EventKind::AccountingOn, EventKind::AccountingOff]);
                on_nas(NASES[nas], event(kind, "", now))
            }
            _ => return Step::CloseSilent(now),
        };
        self.sent.push(event.clone());
        Step::Event(Box::new(event))
    }
}

fn run(history: &mut History, step: &Step) -> Vec<Change> {
    match step {
        Step::Event(event) => history.apply(event),
        Step::CloseSilent(now_ms) => history.close_silent(*now_ms, 3, 120),
    }
}

/// Asks both histories about every address at the edges of every interval,
/// and at random moments; returns how many answers named someone.
fn assert_same_answers(a: &History, b: &History, rows: &Rows, rng: &mut Rng, end_ms: u64) -> usize {
    let probe = |net: IpNet| match net {
        IpNet::V4(net) => IpAddr::V4(net.addr()),
        // An address inside the network other than its first.
        IpNet::V6(net) => IpAddr::V6((u128::from(net.network()) | 1).into()),
    };
    let mut questions: Vec<(IpAddr, u64)> = Vec::new();
    for row in rows.addresses.values() {
        let ip = probe(row.net);
        for at in [Some(row.from_ms), row.to_ms].into_iter().flatten() {
            questions.extend([(ip, at - 1), (ip, at)]);
        }
    }
    let nets: Vec<IpNet> = rows.addresses.values().map(|row| row.net).collect();
    for _ in 0..5_000 {
        let at = T0 + rng.below(end_ms - T0 + s(100));
        questions.push((probe(*rng.pick(&nets)), at));
    }
    let mut named = 0;
    for (ip, at) in questions {
        let answer = a.whois(ip, at);
        assert_eq!(answer, b.whois(ip, at), "whois {ip} at {at}");
        named += usize::from(answer.is_some());
    }
    named
}

#[test]
fn a_history_rebuilt_from_its_rows_answers_and_goes_on_as_the_original() {
    for seed in [0x9E37_79B9_7F4A_7C15, 42, 7_777_777] {
        let mut stream = Stream::new(seed);
        let mut original = History::new();
        let mut rows = Rows::default();
        for _ in 0..3_000 {
            rows.add(run(&mut original, &stream.step()));
        }
        let mut rebuilt = rows.rebuild();
        assert_eq!(rebuilt.open_sessions(), original.open_sessions());
        let named = assert_same_answers(&original, &rebuilt, &rows, &mut Rng(seed), stream.now_ms);
        assert!(
            named > 2_000,
            "the stream holds addresses often enough: {named}"
        );

        for _ in 0..1_000 {
            let step = stream.step();
            let changes = run(&mut original, &step);
            assert_eq!(run(&mut rebuilt, &step), changes);
            rows.add(changes);
        }
        assert_eq!(rebuilt.open_sessions(), original.open_sessions());
        assert_same_answers(&original, &rebuilt, &rows, &mut Rng(seed), stream.now_ms);
        // And a history rebuilt at the end agrees with both.
        assert_same_answers(
            &original,
            &rows.rebuild(),
            &rows,
            &mut Rng(seed),
            stream.now_ms,
        );
    }
}
