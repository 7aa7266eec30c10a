//! The rules of `quota`, on a virtual clock (times are 2026-12, UTC).

use std::net::Ipv4Addr;

use flowtally_common::agg::Direction::{self, Down, Transit, Up};

use super::*;
use crate::{
    config::Config,
    sessions::{Event, History},
};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// 2026-12-07T00:00:00Z, a Monday.
const MONDAY: u64 = 1_796_601_600_000;

fn quotas(toml: &str) -> Quotas {
    let config = Config::from_toml(toml).unwrap();
    Quotas::from_config(&config.quotas)
}

const DAILY: &str = r#"
[[quotas]]
name = "daily"
users = ["bob", "carol"]
period = "day"
bytes = 1000
notify_at = [0.5, 0.8]
"#;

fn row(user: &str, direction: Direction, at_ms: u64, bytes: u64) -> UsageRow {
    UsageRow {
        user_name: Some(user.to_owned()),
        ..UsageRow::bare(at_ms, "198.18.100.7".parse().unwrap(), direction, bytes)
    }
}

/// `user`'s open sessions in a history of one Start each.
fn sessions(starts: &[(&str, &str, u8)], wanted: &[&str]) -> Vec<OpenSession> {
    let mut history = History::new();
    for (user, id, host) in starts {
        history.apply(&Event::start_v4(
            "192.0.2.1",
            *id,
            *user,
            Ipv4Addr::new(198, 18, 100, *host),
            MONDAY,
        ));
    }
    history.open_sessions_of(|user| wanted.contains(&user))
}

fn summary(actions: &[Action]) -> Vec<(&str, &str, &str)> {
    actions
        .iter()
        .map(|a| {
            (
                a.quota.as_str(),
                a.session.user_name.as_str(),
                a.session.session_id.as_str(),
            )
        })
        .collect()
}

#[test]
fn only_the_listed_destination_classes_count() {
    let mut q = quotas(
        r#"
[[classes]]
name = "local"
networks = ["198.19.0.0/16"]
[[classes]]
name = "national"
networks = ["198.20.0.0/16"]

[[quotas]]
name = "paid"
users = ["bob"]
period = "day"
bytes = 1000
classes = ["national"]
"#,
    );
    let noon = MONDAY + 12 * HOUR;
    let to = |class: Option<&str>, bytes| UsageRow {
        class: class.map(str::to_owned),
        ..row("bob", Down, noon, bytes)
    };
    q.observe(&[
        to(Some("local"), 5000),
        to(None, 5000),
        to(Some("national"), 999),
    ]);
    assert!(q.over(noon).is_empty(), "only national counts: 999 of 1000");
    q.observe(&[to(Some("national"), 1)]);
    assert_eq!(q.over(noon), HashSet::from(["bob".to_owned()]));
}

#[test]
fn usage_counts_for_the_quotas_users_and_directions_in_its_period() {
    let mut q = quotas(DAILY);
    let noon = MONDAY + 12 * HOUR;
    q.observe(&[
        row("bob", Up, noon, 300),
        row("bob", Down, noon, 300),
        row("bob", Transit, noon, 5000),
        row("dave", Up, noon, 5000),
        UsageRow::bare(noon, "198.18.100.9".parse().unwrap(), Up, 5000),
    ]);
    assert!(
        q.over(noon).is_empty(),
        "600 of 1000: transit, dave and nobody do not count"
    );
    let crossed: Vec<_> = q.crossings(noon).iter().map(|c| c.threshold).collect();
    assert_eq!(crossed, [0.5], "announced once");
    assert!(q.crossings(noon).is_empty());
    q.observe(&[row("bob", Down, noon + HOUR, 400)]);
    let crossed: Vec<_> = q.crossings(noon).iter().map(|c| c.threshold).collect();
    assert_eq!(crossed, [0.8, 1.0], "1000 reaches the quota itself");
    assert_eq!(q.over(noon), HashSet::from(["bob".to_owned()]));
}

#[test]
fn direction_up_or_down_counts_only_that_way() {
    let mut q = quotas(&DAILY.replace("notify_at = [0.5, 0.8]", "direction = \"down\""));
    q.observe(&[
        row("bob", Up, MONDAY, 1000),
        row("carol", Down, MONDAY, 1000),
    ]);
    assert_eq!(q.over(MONDAY), HashSet::from(["carol".to_owned()]));
}

#[test]
fn one_action_per_session_and_period_and_one_more_for_a_new_session() {
    let mut q = quotas(DAILY);
    let at = MONDAY + HOUR;
    q.observe(&[row("bob", Up, at, 1200), row("carol", Up, at, 10)]);
    let open = sessions(&[("bob", "b-1", 7), ("carol", "c-1", 8)], &["bob", "carol"]);
    let actions = q.actions(at, &open);
    assert_eq!(
        summary(&actions),
        [("daily", "bob", "b-1")],
        "carol is under"
    );
    let action = &actions[0];
    assert_eq!(action.kind, Kind::Disconnect);
    assert_eq!(action.bytes, 1200);
    assert_eq!(
        action.period,
        Period {
            start_ms: MONDAY,
            end_ms: MONDAY + DAY
        }
    );
    assert_eq!(
        action.session.framed_ip,
        Some(Ipv4Addr::new(198, 18, 100, 7))
    );
    assert_eq!(action.session.nas, "192.0.2.1");

    q.observe(&[row("bob", Up, at + HOUR, 500)]);
    assert!(
        q.actions(at + HOUR, &open).is_empty(),
        "never twice for b-1 today"
    );
    // bob reconnects: the new session is over the quota too.
    let open = sessions(&[("bob", "b-1", 7), ("bob", "b-2", 9)], &["bob"]);
    assert_eq!(
        summary(&q.actions(at + 2 * HOUR, &open)),
        [("daily", "bob", "b-2")]
    );
}

#[test]
fn a_new_period_starts_at_zero_and_lifts_nothing_by_itself() {
    let mut q = quotas(DAILY);
    q.observe(&[row("bob", Up, MONDAY + HOUR, 1500)]);
    let open = sessions(&[("bob", "b-1", 7)], &["bob"]);
    assert_eq!(q.actions(MONDAY + HOUR, &open).len(), 1);
    let tuesday = MONDAY + DAY;
    assert!(q.over(tuesday).is_empty(), "yesterday's usage is over");
    assert!(q.actions(tuesday, &open).is_empty(), "and sends nothing");
    // A late row of Monday changes nothing on Tuesday.
    q.observe(&[
        row("bob", Up, tuesday + HOUR, 600),
        row("bob", Up, MONDAY + 2 * HOUR, 900),
    ]);
    assert!(q.over(tuesday + HOUR).is_empty());
    q.observe(&[row("bob", Down, tuesday + 2 * HOUR, 400)]);
    assert_eq!(
        summary(&q.actions(tuesday + 2 * HOUR, &open)),
        [("daily", "bob", "b-1")],
        "over again on Tuesday: the same session is acted on for the new period"
    );
}

#[test]
fn a_restart_restores_usage_and_actions_and_repeats_nothing() {
    let mut before = quotas(DAILY);
    let at = MONDAY + HOUR;
    before.observe(&[row("bob", Up, at, 900), row("bob", Down, at, 300)]);
    let open = sessions(&[("bob", "b-1", 7)], &["bob"]);
    let acted = before.actions(at, &open);
    assert_eq!(acted.len(), 1);
    before.crossings(at);

    // What SQLite holds: the usage of today, and the action in `enforcement`.
    let mut after = quotas(DAILY);
    let start = after.rules()[0].calendar.period(at).start_ms;
    after.restore_usage(0, start, "bob", Up, None, 900);
    after.restore_usage(0, start, "bob", Down, None, 300);
    after.restore_action("daily", "disconnect", acted[0].session.id, "bob", start);
    after.restore_action("renamed-since", "disconnect", 99, "bob", start);
    assert!(after.crossings(at).is_empty(), "crossed before the restart");
    assert_eq!(after.over(at), HashSet::from(["bob".to_owned()]));
    assert!(
        after.actions(at + HOUR, &open).is_empty(),
        "sent before the restart"
    );
    after.observe(&[row("bob", Up, at + HOUR, 10)]);
    assert!(after.actions(at + HOUR, &open).is_empty());
}

#[test]
fn everyones_quota_and_a_coa_with_its_changes() {
    let mut q = quotas(
        r#"
[[quotas]]
name = "weekly"
users = "*"
period = "week"
timezone = "+01:00"
bytes = 100
action = "coa"
coa_attributes = { "Filter-Id" = "throttled" }
"#,
    );
    // Sunday 23:30 UTC is Monday at +01:00: a new week.
    let sunday_late = MONDAY - 30 * 60_000;
    q.observe(&[row("zoe", Up, MONDAY - 2 * HOUR, 100)]);
    q.observe(&[row("yan", Up, sunday_late, 100)]);
    let open = sessions(&[("zoe", "z-1", 7), ("yan", "y-1", 8)], &["zoe", "yan"]);
    let actions = q.actions(sunday_late, &open);
    assert_eq!(summary(&actions), [("weekly", "yan", "y-1")]);
    assert_eq!(actions[0].kind, Kind::Coa);
    assert_eq!(
        actions[0].changes,
        [(crate::radius::attributes::FILTER_ID, b"throttled".to_vec())]
    );
}

#[test]
fn a_session_goes_to_the_nas_of_its_address_else_of_its_identifier() {
    let config = Config::from_toml(
        r#"
[[radius.nas]]
address = "192.0.2.1"
secret = "a"
[[radius.nas]]
address = "2001:db8::1"
identifier = "bras-2"
secret = "b"
"#,
    )
    .unwrap();
    let nas = &config.radius.nas;
    let secret = |nas: &crate::config::NasConfig| nas.secret.as_ref().unwrap().expose().to_owned();
    assert_eq!(secret(owner(nas, "192.0.2.1").unwrap()), "a");
    assert_eq!(secret(owner(nas, "2001:db8::1").unwrap()), "b");
    assert_eq!(secret(owner(nas, "bras-2").unwrap()), "b");
    assert_eq!(owner(nas, "192.0.2.2"), None);
    assert_eq!(owner(nas, "bras-3"), None);
}

#[test]
fn retransmissions_wait_twice_as_long_each_time() {
    let waits: Vec<_> = waits(Duration::from_millis(500), 3).collect();
    assert_eq!(waits, [500, 1000, 2000, 4000].map(Duration::from_millis));
    assert_eq!(super::waits(Duration::from_secs(1), 0).count(), 1);
}

const THROTTLE: &str = r#"
[[quotas]]
name = "throttle"
users = "*"
period = "day"
bytes = 100
action = "coa"
coa_attributes = { "Filter-Id" = "throttled" }
restore_attributes = { "Filter-Id" = "default" }
"#;

fn kinds(actions: &[Action]) -> Vec<(&str, &str, Vec<u8>)> {
    actions
        .iter()
        .map(|a| {
            (
                a.name(),
                a.session.session_id.as_str(),
                a.changes[0].1.clone(),
            )
        })
        .collect()
}

#[test]
fn a_restoring_coa_lifts_the_throttle_once_in_the_next_period_unless_over_again() {
    let mut q = quotas(THROTTLE);
    let open = sessions(
        &[("bob", "b-1", 7), ("zoe", "z-1", 8), ("yan", "y-1", 9)],
        &["bob", "zoe", "yan"],
    );
    q.observe(&[
        row("bob", Up, MONDAY + HOUR, 100),
        row("zoe", Up, MONDAY + HOUR, 100),
        row("yan", Up, MONDAY + HOUR, 100),
    ]);
    assert_eq!(q.actions(MONDAY + HOUR, &open).len(), 3);
    assert!(q.to_restore(MONDAY + 2 * HOUR).is_empty(), "still Monday");
    assert!(q.actions(MONDAY + 2 * HOUR, &open).is_empty());

    // Tuesday: zoe is over again at once; yan's session has closed.
    let tuesday = MONDAY + DAY;
    q.observe(&[row("zoe", Up, tuesday, 150)]);
    assert_eq!(
        q.to_restore(tuesday),
        HashSet::from(["bob".to_owned(), "zoe".to_owned(), "yan".to_owned()])
    );
    let still_open: Vec<_> = open
        .iter()
        .filter(|s| s.user_name != "yan")
        .cloned()
        .collect();
    let tuesdays = q.actions(tuesday, &still_open);
    let mut actions = kinds(&tuesdays);
    actions.sort();
    assert_eq!(
        actions,
        [
            ("coa", "z-1", b"throttled".to_vec()),
            ("restore", "b-1", b"default".to_vec()),
        ]
    );
    assert!(q.actions(tuesday + HOUR, &still_open).is_empty(), "once");
    assert!(q.to_restore(tuesday + HOUR).is_empty());
    // Wednesday: zoe's Tuesday throttle is lifted.
    assert_eq!(
        kinds(&q.actions(tuesday + DAY, &still_open)),
        [("restore", "z-1", b"default".to_vec())]
    );
}

#[test]
fn restoring_coas_survive_a_restart() {
    let open = sessions(&[("bob", "b-1", 7), ("zoe", "z-1", 8)], &["bob", "zoe"]);
    let (b1, z1) = (open[0].id, open[1].id);
    let mut q = quotas(THROTTLE);
    // From `enforcement`, in order: both throttled Monday, zoe restored.
    q.restore_action("throttle", "coa", b1, "bob", MONDAY);
    q.restore_action("throttle", "coa", z1, "zoe", MONDAY);
    q.restore_action("throttle", "restore", z1, "zoe", MONDAY + DAY);
    let tuesday = MONDAY + DAY + HOUR;
    assert_eq!(q.to_restore(tuesday), HashSet::from(["bob".to_owned()]));
    assert_eq!(
        kinds(&q.actions(tuesday, &open)),
        [("restore", "b-1", b"default".to_vec())]
    );
}
