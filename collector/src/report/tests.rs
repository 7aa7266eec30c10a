//! How usage and sessions become a report's groups, lines and costs.

use super::{
    group::{Key, Name},
    orgs::Orgs,
    *,
};
use crate::timestamp::Timestamp;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

/// Unix ms of a moment on Monday 2026-11-23 (UTC), like "07:59".
fn monday(hh_mm: &str) -> u64 {
    format!("2026-11-23T{hh_mm}:00Z")
        .parse::<Timestamp>()
        .unwrap()
        .0
}

/// One minute of `bytes` to or from `ip`, held by `user`'s session
/// `<user>-1` unless it is `None`.
fn usage(user: Option<&str>, ip: &str, direction: Direction, at: &str, bytes: u64) -> Usage {
    Usage {
        bucket_start_ms: monday(at),
        bucket_width_ms: MINUTE,
        user_name: user.map(str::to_owned),
        session_id: user.map(|u| format!("{u}-1")),
        subscriber_ip: ip.parse().unwrap(),
        direction,
        class: None,
        bytes,
        packets: 1,
        flows: 1,
    }
}

fn session(id: u64, user: &str, session_id: &str, start: &str, stop: Option<&str>) -> SessionRow {
    SessionRow {
        id,
        user_name: user.into(),
        nas: "198.18.0.1".into(),
        session_id: session_id.into(),
        framed_ip: None,
        framed_prefix: None,
        start_ms: monday(start),
        stop_ms: stop.map(monday),
        last_update_ms: monday(start),
        interim_interval_s: None,
        nas_port_id: None,
        calling_station_id: None,
        class: None,
        input_octets: None,
        output_octets: None,
        terminate_cause: None,
    }
}

fn address(session: u64, net: &str, from: &str, to: Option<&str>) -> AddressRow {
    AddressRow {
        session,
        net: net
            .parse()
            .unwrap_or_else(|_| ipnet::IpNet::from(net.parse::<IpAddr>().unwrap())),
        from_ms: monday(from),
        to_ms: to.map(monday),
    }
}

/// Peak on weekdays 08:00–20:00 UTC at 0.50/GB and 0.10/h, off-peak
/// 0.20/GB.
fn tariff() -> Tariff {
    Tariff::parse(
        r#"
        currency = "EUR"
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
        price_per_hour = 0
        "#,
    )
    .unwrap()
}

const PEAK: usize = 0;
const OFF_PEAK: usize = 1;

/// Monday 00:00 to 24:00, now at 23:00.
fn report(
    grouping: &Grouping,
    tariff: Option<&Tariff>,
    usage: &[Usage],
    sessions: &[SessionRow],
    addresses: &[AddressRow],
) -> Report {
    let query = Query {
        from_ms: monday("00:00"),
        to_ms: monday("00:00") + 24 * HOUR,
        now_ms: monday("23:00"),
        grouping,
        tariff,
    };
    compute(&query, usage, sessions, addresses)
}

fn user(name: &str) -> Key {
    Key::User(Name::Known(name.into()))
}

fn keys(report: &Report) -> Vec<Key> {
    report.groups.iter().map(|(key, _)| key.clone()).collect()
}

fn line<'a>(report: &'a Report, key: &Key) -> &'a Line {
    &report.groups.iter().find(|(k, _)| k == key).unwrap().1
}

use Direction::{Down, Transit, Up};

#[test]
fn usage_goes_to_its_user_and_what_nobody_held_comes_last() {
    let report = report(
        &Grouping::User,
        None,
        &[
            usage(Some("bob"), "198.18.100.8", Down, "10:00", 500),
            usage(None, "198.18.100.9", Up, "10:00", 70),
            usage(Some("alice"), "198.18.100.7", Up, "10:00", 100),
            usage(Some("alice"), "198.18.100.7", Down, "10:01", 200),
        ],
        &[],
        &[],
    );
    assert_eq!(
        keys(&report),
        [user("alice"), user("bob"), Key::User(Name::Unknown)]
    );
    let alice = line(&report, &user("alice"));
    assert_eq!(
        (alice.bytes_up, alice.bytes_down, alice.packets, alice.flows),
        (100, 200, 2, 2)
    );
    assert_eq!(line(&report, &Key::User(Name::Unknown)).bytes(), 70);
    assert_eq!(report.total.bytes(), 870);
    assert!(report.total.periods.is_empty(), "no tariff, no periods");
}

#[test]
fn transit_is_in_no_group_and_not_in_the_total() {
    let report = report(
        &Grouping::User,
        None,
        &[
            usage(Some("alice"), "198.18.100.7", Up, "10:00", 100),
            usage(None, "203.0.113.5", Transit, "10:00", 9000),
        ],
        &[],
        &[],
    );
    assert_eq!(keys(&report), [user("alice")]);
    assert_eq!(report.total.bytes(), 100);
    assert_eq!(
        report.transit,
        Traffic {
            bytes: 9000,
            packets: 1,
            flows: 1
        }
    );
}

#[test]
fn rows_count_when_their_bucket_starts_in_the_range() {
    let query = Query {
        from_ms: monday("10:00"),
        to_ms: monday("11:00"),
        now_ms: monday("23:00"),
        grouping: &Grouping::User,
        tariff: None,
    };
    let rows = [
        usage(Some("alice"), "198.18.100.7", Up, "09:59", 1), // ends inside: out
        usage(Some("alice"), "198.18.100.7", Up, "10:00", 10), // starts at `from`: in
        usage(Some("alice"), "198.18.100.7", Up, "10:59", 100), // ends after `to`: in
        usage(Some("alice"), "198.18.100.7", Up, "11:00", 1000), // starts at `to`: out
    ];
    assert_eq!(compute(&query, &rows, &[], &[]).total.bytes_up, 110);
}

#[test]
fn a_bucket_across_a_period_boundary_splits_its_bytes_by_time() {
    let tariff = tariff();
    let mut row = usage(Some("alice"), "198.18.100.7", Down, "07:59", 4_000_000_000);
    row.bucket_width_ms = 4 * MINUTE; // 1 minute off-peak, 3 peak
    let report = report(&Grouping::User, Some(&tariff), &[row], &[], &[]);
    let alice = line(&report, &user("alice"));
    assert_eq!(alice.periods[OFF_PEAK].bytes, 1_000_000_000);
    assert_eq!(alice.periods[PEAK].bytes, 3_000_000_000);
    assert_eq!(alice.periods[OFF_PEAK].cost.to_string(), "0.2000");
    assert_eq!(alice.periods[PEAK].cost.to_string(), "1.5000");
    assert_eq!(alice.cost().to_string(), "1.7000");
}

#[test]
fn split_bytes_are_whole_and_add_up() {
    let tariff = tariff();
    let mut row = usage(Some("alice"), "198.18.100.7", Down, "07:59", 1000);
    row.bucket_width_ms = 3 * MINUTE; // 1/3 off-peak, 2/3 peak
    let report = report(&Grouping::User, Some(&tariff), &[row], &[], &[]);
    let alice = line(&report, &user("alice"));
    assert_eq!(
        (alice.periods[OFF_PEAK].bytes, alice.periods[PEAK].bytes),
        (333, 667)
    );
}

#[test]
fn time_online_is_each_session_clipped_to_the_range_and_summed() {
    let query = Query {
        from_ms: monday("06:00"),
        to_ms: monday("22:00"),
        now_ms: monday("21:00"),
        grouping: &Grouping::User,
        tariff: None,
    };
    let sessions = [
        session(1, "alice", "a-1", "05:00", Some("07:00")), // 1 h in range
        session(2, "alice", "a-2", "06:30", Some("07:30")), // 1 h, alongside a-1
        session(3, "alice", "a-3", "20:00", None),          // open: until now, 1 h
        session(4, "alice", "a-0", "01:00", Some("02:00")), // before the range
        session(5, "bob", "b-1", "12:00", Some("12:30")),   // no usage at all
    ];
    let report = compute(&query, &[], &sessions, &[]);
    assert_eq!(keys(&report), [user("alice"), user("bob")]);
    assert_eq!(line(&report, &user("alice")).online_ms, 3 * HOUR);
    assert_eq!(line(&report, &user("bob")).online_ms, HOUR / 2);
    assert_eq!(report.total.online_ms, 3 * HOUR + HOUR / 2);
}

#[test]
fn time_online_is_split_and_priced_by_period() {
    let tariff = tariff();
    let sessions = [session(1, "bob", "b-1", "07:00", Some("10:30"))];
    let report = report(&Grouping::User, Some(&tariff), &[], &sessions, &[]);
    let bob = line(&report, &user("bob"));
    assert_eq!(bob.periods[OFF_PEAK].online_ms, HOUR);
    assert_eq!(bob.periods[PEAK].online_ms, 2 * HOUR + HOUR / 2);
    assert_eq!(bob.periods[PEAK].cost.to_string(), "0.2500");
    assert_eq!(bob.periods[OFF_PEAK].cost.to_string(), "0.0000");
}

#[test]
fn by_session_each_session_id_of_a_user_is_a_group() {
    let mut second = usage(Some("alice"), "198.18.100.7", Up, "10:00", 5);
    second.session_id = Some("alice-2".into());
    let report = report(
        &Grouping::Session,
        None,
        &[
            usage(Some("alice"), "198.18.100.7", Up, "09:00", 1),
            second,
            usage(None, "198.18.100.7", Up, "11:00", 7),
        ],
        &[session(1, "alice", "alice-1", "08:00", Some("09:30"))],
        &[],
    );
    let alice = |id: &str| Key::Session(Name::Known("alice".into()), id.into());
    assert_eq!(
        keys(&report),
        [
            alice("alice-1"),
            alice("alice-2"),
            Key::Session(Name::Unknown, String::new())
        ]
    );
    assert_eq!(line(&report, &alice("alice-1")).online_ms, 90 * MINUTE);
    assert_eq!(line(&report, &alice("alice-2")).online_ms, 0);
    assert_eq!(
        Key::Session(Name::Unknown, String::new()).cells(),
        ["(unattributed)", ""]
    );
}

#[test]
fn by_subnet_addresses_group_by_their_24_or_64() {
    let grouping = Grouping::Subnet { v4: 24, v6: 64 };
    let report = report(
        &grouping,
        None,
        &[
            usage(Some("alice"), "198.18.100.7", Up, "10:00", 1),
            usage(Some("bob"), "198.18.100.200", Up, "10:00", 2),
            usage(None, "198.18.101.1", Up, "10:00", 4),
            usage(Some("carol"), "2001:db8:1:2::5", Down, "10:00", 8),
            usage(Some("dave"), "2001:db8:1:3::5", Down, "10:00", 16),
        ],
        &[],
        &[],
    );
    let subnet = |net: &str| Key::Subnet(net.parse().unwrap());
    assert_eq!(
        keys(&report),
        [
            subnet("198.18.100.0/24"),
            subnet("198.18.101.0/24"),
            subnet("2001:db8:1:2::/64"),
            subnet("2001:db8:1:3::/64"),
        ]
    );
    assert_eq!(line(&report, &subnet("198.18.100.0/24")).bytes(), 3);

    let wider = Grouping::Subnet { v4: 16, v6: 48 };
    let report = self::report(
        &wider,
        None,
        &[
            usage(Some("alice"), "198.18.100.7", Up, "10:00", 1),
            usage(None, "198.18.101.1", Up, "10:00", 4),
            usage(Some("carol"), "2001:db8:1:2::5", Down, "10:00", 8),
            usage(Some("dave"), "2001:db8:1:3::5", Down, "10:00", 16),
        ],
        &[],
        &[],
    );
    assert_eq!(
        report
            .groups
            .iter()
            .map(|(k, l)| (k.cells(), l.bytes()))
            .collect::<Vec<_>>(),
        [
            (vec!["198.18.0.0/16".to_owned()], 5),
            (vec!["2001:db8:1::/48".to_owned()], 24)
        ]
    );
}

#[test]
fn by_subnet_time_online_is_when_any_address_in_it_was_held() {
    let grouping = Grouping::Subnet { v4: 24, v6: 64 };
    let addresses = [
        address(1, "198.18.100.7", "08:00", Some("10:00")),
        address(2, "198.18.100.8", "09:00", Some("11:00")), // overlaps: counted once
        address(3, "198.18.100.9", "12:00", None),          // open: until now, 23:00
        address(4, "2001:db8:1:2::/64", "08:00", Some("09:00")),
        address(5, "2001:db8:2::/56", "08:00", Some("09:00")), // wider than a /64
    ];
    let report = report(&grouping, None, &[], &[], &addresses);
    let subnet = |net: &str| Key::Subnet(net.parse().unwrap());
    assert_eq!(
        keys(&report),
        [subnet("198.18.100.0/24"), subnet("2001:db8:1:2::/64")]
    );
    assert_eq!(
        line(&report, &subnet("198.18.100.0/24")).online_ms,
        3 * HOUR + 11 * HOUR
    );
}

#[test]
fn by_org_the_longest_prefix_names_the_group_and_the_rest_has_none() {
    let orgs = Orgs::parse(
        r#"
        [orgs]
        "198.18.100.0/24" = "Acme"
        "198.18.100.128/25" = "Acme Labs"
        "2001:db8:1::/48" = "Acme"
        "#,
    )
    .unwrap();
    let grouping = Grouping::Org(orgs);
    let report = report(
        &grouping,
        None,
        &[
            usage(Some("alice"), "198.18.100.7", Up, "10:00", 1),
            usage(Some("bob"), "198.18.100.200", Up, "10:00", 2),
            usage(Some("carol"), "2001:db8:1:2::5", Down, "10:00", 4),
            usage(None, "198.18.101.1", Up, "10:00", 8),
        ],
        &[],
        &[
            address(1, "198.18.100.7", "08:00", Some("10:00")),
            address(2, "2001:db8:1:2::/64", "09:00", Some("11:00")),
        ],
    );
    let org = |name: &str| Key::Org(Name::Known(name.into()));
    assert_eq!(
        report
            .groups
            .iter()
            .map(|(k, l)| (k.clone(), l.bytes(), l.online_ms))
            .collect::<Vec<_>>(),
        [
            (org("Acme"), 5, 3 * HOUR),
            (org("Acme Labs"), 2, 0),
            (Key::Org(Name::Unknown), 8, 0),
        ]
    );
    assert_eq!(Key::Org(Name::Unknown).cells(), ["(none)"]);
}

#[test]
fn totals_are_sums_of_the_rounded_parts() {
    let tariff = tariff();
    // 0.00006 each at peak: each group rounds to 0.0001, the total is
    // their sum, 0.0003, not the 0.00018 it would be unrounded.
    let rows: Vec<Usage> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|u| usage(Some(u), "198.18.100.7", Down, "10:00", 120_000))
        .collect();
    let report = report(&Grouping::User, Some(&tariff), &rows, &[], &[]);
    for (_, line) in &report.groups {
        assert_eq!(line.cost().to_string(), "0.0001");
    }
    assert_eq!(report.total.periods[PEAK].cost.to_string(), "0.0003");
    assert_eq!(report.total.cost().to_string(), "0.0003");
    assert_eq!(report.total.periods[PEAK].bytes, 360_000);
}

/// `tariff()` with local traffic free and ix at 0.10/GB in peak time only.
fn tariff_with_classes() -> Tariff {
    let text = r#"
        currency = "EUR"
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
        price_per_hour = 0
        [classes.local]
        price_per_gb = 0
        [classes.ix]
        price_per_gb = { peak = 0.10 }
    "#;
    Tariff::parse(text).unwrap()
}

fn classed(class: Option<&str>, at: &str, bytes: u64) -> Usage {
    Usage {
        class: class.map(str::to_owned),
        ..usage(Some("alice"), "198.18.100.7", Down, at, bytes)
    }
}

const GB: u64 = 1_000_000_000;

#[test]
fn a_free_class_costs_nothing_and_a_class_priced_by_period_keeps_the_others() {
    let tariff = tariff_with_classes();
    // Peak: 1 GB local (free), 1 GB ix (0.10), 1 GB unclassified (0.50),
    // 1 GB of a class the tariff does not name (the period's 0.50).
    // Off-peak: 1 GB local (free), 1 GB ix (the period's 0.20).
    let rows = [
        classed(Some("local"), "10:00", GB),
        classed(Some("ix"), "10:00", GB),
        classed(None, "10:01", GB),
        classed(Some("national"), "10:02", GB),
        classed(Some("local"), "21:00", GB),
        classed(Some("ix"), "21:00", GB),
    ];
    let priced = report(&Grouping::User, Some(&tariff), &rows, &[], &[]);
    let alice = line(&priced, &user("alice"));
    assert_eq!(alice.periods[PEAK].bytes, 4 * GB);
    assert_eq!(alice.periods[PEAK].cost.to_string(), "1.1000");
    assert_eq!(alice.periods[OFF_PEAK].cost.to_string(), "0.2000");
    assert_eq!(alice.cost().to_string(), "1.3000");
    // The free class alone costs nothing at all.
    let local: Vec<Usage> = rows
        .iter()
        .filter(|r| r.class.as_deref() == Some("local"))
        .cloned()
        .collect();
    let free = report(&Grouping::User, Some(&tariff), &local, &[], &[]);
    assert_eq!(free.total.cost(), Cost(0));
    assert_eq!(free.total.bytes(), 2 * GB);
}

#[test]
fn by_class_the_groups_add_up_to_the_total_in_bytes_and_cost() {
    let tariff = tariff_with_classes();
    let rows = [
        classed(Some("local"), "10:00", 3 * GB),
        classed(Some("ix"), "07:59", GB),
        classed(None, "10:01", 7),
        Usage {
            class: Some("ix".into()),
            ..usage(Some("bob"), "198.18.100.8", Up, "21:00", 5 * GB)
        },
        Usage {
            class: Some("ix".into()),
            ..usage(None, "203.0.113.9", Transit, "21:00", 99 * GB)
        },
    ];
    let by_class = report(&Grouping::Class, Some(&tariff), &rows, &[], &[]);
    let by_user = report(&Grouping::User, Some(&tariff), &rows, &[], &[]);
    assert_eq!(
        keys(&by_class),
        [
            Key::Class(Name::Known("ix".into())),
            Key::Class(Name::Known("local".into())),
            Key::Class(Name::Unknown),
        ]
    );
    let ix = line(&by_class, &Key::Class(Name::Known("ix".into())));
    // 1 GB ix over 07:59–08:00 (a minute bucket: off-peak) and 5 GB off-peak.
    assert_eq!((ix.bytes_up, ix.bytes_down), (5 * GB, GB));
    assert_eq!(ix.cost().to_string(), "1.2000");
    let sum: u64 = by_class.groups.iter().map(|(_, l)| l.bytes()).sum();
    let cost: Cost = by_class.groups.iter().map(|(_, l)| l.cost()).sum();
    assert_eq!(sum, by_class.total.bytes());
    assert_eq!(by_class.total.bytes(), by_user.total.bytes());
    assert_eq!(cost, by_class.total.cost());
    assert_eq!(by_class.total.bytes(), 9 * GB + 7);
    assert_eq!(by_class.transit.bytes, 99 * GB, "transit stays apart");
    // Sessions have no destination: no class is online.
    assert!(by_class.groups.iter().all(|(_, l)| l.online_ms == 0));
}
