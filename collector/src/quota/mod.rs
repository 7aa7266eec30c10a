//! Quotas, sans-IO: usage per user and calendar period, kept current from
//! the rows each flush writes, and what crossing a quota does.
//!
//! The rules:
//! - A usage row counts for a quota if its user is one of the quota's (or
//!   the quota is everyone's) and its direction is the quota's (`both`:
//!   up and down; transit never). It counts in the period its bucket starts
//!   in. A row of a period before the user's current one changes nothing
//!   (it is billed, the period is over); one of a later period starts it.
//! - At start the tallies of the current periods are restored from what
//!   SQLite holds, and so are the actions already taken: nothing is sent
//!   twice, and thresholds already crossed are not announced again.
//! - Crossing a threshold is announced once per user and period: the
//!   `notify_at` fractions (logged and counted only), and the quota itself.
//! - A user over a quota in the current period gets one action per open
//!   session: never two for the same session and period, one for each new
//!   session opened while still over.
//! - A new period starts every tally at zero; it lifts nothing by itself
//!   (sessions disconnected stay so, a throttled one stays throttled until
//!   its NAS is told otherwise). A `coa` quota with `restore_attributes`
//!   tells it: once the period is over, each session its CoA changed and
//!   still open gets one CoA with those attributes, unless its user is
//!   already over the quota again.

pub mod command;
pub mod period;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use flowtally_common::agg::Direction;

pub use self::period::{Calendar, Period};
use crate::{
    config::{NasConfig, QuotaAction, QuotaConfig, QuotaDirection},
    radius::coa::{self, Kind},
    sessions::OpenSession,
    usage::UsageRow,
};

/// One quota, ready to count.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    /// `None`: everyone.
    users: Option<HashSet<String>>,
    /// Destination classes whose traffic counts; `None`: all traffic.
    classes: Option<HashSet<String>>,
    pub calendar: Calendar,
    pub bytes: u64,
    pub direction: QuotaDirection,
    pub kind: Kind,
    /// A CoA's attributes (type, value); empty for a Disconnect.
    pub changes: Vec<(u8, Vec<u8>)>,
    /// The CoA that lifts `changes` in a later period; empty: none.
    pub restore: Vec<(u8, Vec<u8>)>,
    /// Ascending fractions of `bytes`, ending with the quota itself (1.0).
    thresholds: Vec<f64>,
}

/// Attributes by name, as validated.
fn changes(named: &BTreeMap<String, String>) -> Vec<(u8, Vec<u8>)> {
    named
        .iter()
        .filter_map(|(name, value)| coa::change(name, value).ok())
        .collect()
}

impl Rule {
    /// From a validated configuration.
    pub fn new(config: &QuotaConfig) -> Self {
        let mut thresholds = config.notify_at.clone();
        thresholds.push(1.0);
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        Self {
            name: config.name.clone(),
            users: (!config.users.everyone())
                .then(|| config.users.names().iter().cloned().collect()),
            classes: (config.classes != ["*"]).then(|| config.classes.iter().cloned().collect()),
            calendar: Calendar {
                kind: config.period,
                offset: config.timezone,
            },
            bytes: config.bytes,
            direction: config.direction,
            kind: match config.action {
                QuotaAction::Disconnect => Kind::Disconnect,
                QuotaAction::Coa => Kind::Coa,
            },
            changes: changes(&config.coa_attributes),
            restore: changes(&config.restore_attributes),
            thresholds,
        }
    }

    pub fn applies_to(&self, user: &str) -> bool {
        self.users.as_ref().is_none_or(|users| users.contains(user))
    }

    /// Whether traffic in `direction` to a peer of `class` counts.
    pub fn counts(&self, direction: Direction, class: Option<&str>) -> bool {
        let class_counts = match (&self.classes, class) {
            (None, _) => true,
            (Some(classes), Some(class)) => classes.contains(class),
            (Some(_), None) => false,
        };
        class_counts
            && matches!(
                (self.direction, direction),
                (QuotaDirection::Both, Direction::Up | Direction::Down)
                    | (QuotaDirection::Up, Direction::Up)
                    | (QuotaDirection::Down, Direction::Down)
            )
    }

    /// The byte counts at which each threshold is crossed, ascending.
    pub fn threshold_bytes(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.thresholds
            .iter()
            .map(|&f| (f, (self.bytes as f64 * f).ceil() as u64))
    }

    /// Thresholds `bytes` has reached.
    fn reached(&self, bytes: u64) -> usize {
        self.threshold_bytes()
            .filter(|&(_, at)| bytes >= at)
            .count()
    }
}

/// A user's usage in a quota's period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    period_start_ms: u64,
    bytes: u64,
    /// Thresholds already announced.
    announced: usize,
}

/// A threshold crossed: logged and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    pub quota: String,
    pub user: String,
    /// The fraction of the quota; 1.0 is the quota itself.
    pub threshold: f64,
    pub bytes: u64,
    pub limit: u64,
}

/// A request to send: one session, one quota, one period.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub quota: String,
    pub kind: Kind,
    pub changes: Vec<(u8, Vec<u8>)>,
    pub period: Period,
    pub session: OpenSession,
    /// The user's usage when decided.
    pub bytes: u64,
    /// A CoA lifting an earlier one (`restore_attributes`).
    pub restore: bool,
}

impl Action {
    /// `disconnect`, `coa` or `restore`: metric label and `enforcement.action`.
    pub const fn name(&self) -> &'static str {
        if self.restore {
            "restore"
        } else {
            self.kind.as_str()
        }
    }
}

/// Every quota's tallies and the sessions acted on.
#[derive(Debug, Default)]
pub struct Quotas {
    rules: Vec<Rule>,
    /// (rule, user) → usage in the latest period seen.
    tallies: HashMap<(usize, String), Tally>,
    /// (rule, session row id, period start) acted on.
    acted: HashSet<(usize, u64, u64)>,
    /// Sessions changed by a rule with a restoring CoA, not yet restored:
    /// (rule, session row id) → (user, period of the change).
    changed: HashMap<(usize, u64), (String, u64)>,
}

impl Quotas {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    pub fn from_config(quotas: &[QuotaConfig]) -> Self {
        Self::new(quotas.iter().map(Rule::new).collect())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Restores `bytes` of `user`'s usage in `direction` within the period
    /// of rule `rule` starting at `period_start_ms` (what SQLite holds):
    /// counted, and the thresholds it reaches are taken as announced.
    pub fn restore_usage(
        &mut self,
        rule: usize,
        period_start_ms: u64,
        user: &str,
        direction: Direction,
        class: Option<&str>,
        bytes: u64,
    ) {
        let Some(r) = self.rules.get(rule) else {
            return;
        };
        if !r.applies_to(user) || !r.counts(direction, class) {
            return;
        }
        let tally = self.tallies.entry((rule, user.to_owned())).or_default();
        if tally.period_start_ms != period_start_ms {
            *tally = Tally {
                period_start_ms,
                ..Tally::default()
            };
        }
        tally.bytes += bytes;
        tally.announced = r.reached(tally.bytes);
    }

    /// Restores an action taken before (the `enforcement` table, in order):
    /// `action` is what [`Action::name`] said.
    pub fn restore_action(
        &mut self,
        quota: &str,
        action: &str,
        session: u64,
        user: &str,
        period_start_ms: u64,
    ) {
        let Some(rule) = self.rules.iter().position(|r| r.name == quota) else {
            return;
        };
        if action == "restore" {
            self.changed.remove(&(rule, session));
            return;
        }
        self.acted.insert((rule, session, period_start_ms));
        if !self.rules[rule].restore.is_empty() && action == "coa" {
            self.changed
                .insert((rule, session), (user.to_owned(), period_start_ms));
        }
    }

    /// Users with sessions to restore at `now_ms`: the caller passes their
    /// open sessions to [`Quotas::actions`] too.
    pub fn to_restore(&self, now_ms: u64) -> HashSet<String> {
        let current = self.current(now_ms);
        self.changed
            .iter()
            .filter(|((rule, _), (_, period))| *period < current[*rule])
            .map(|(_, (user, _))| user.clone())
            .collect()
    }

    /// Counts the rows a flush wrote.
    pub fn observe(&mut self, rows: &[UsageRow]) {
        for row in rows {
            if let Some(user) = &row.user_name {
                self.add(
                    user,
                    row.direction,
                    row.class.as_deref(),
                    row.bucket_start_ms,
                    row.bytes,
                );
            }
        }
    }

    fn add(
        &mut self,
        user: &str,
        direction: Direction,
        class: Option<&str>,
        at_ms: u64,
        bytes: u64,
    ) {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies_to(user) || !rule.counts(direction, class) {
                continue;
            }
            let start = rule.calendar.period(at_ms).start_ms;
            let tally = self.tallies.entry((i, user.to_owned())).or_default();
            if start > tally.period_start_ms {
                *tally = Tally {
                    period_start_ms: start,
                    ..Tally::default()
                };
            }
            if start == tally.period_start_ms {
                tally.bytes += bytes;
            }
        }
    }

    /// Thresholds crossed since the last call, in the current periods.
    pub fn crossings(&mut self, now_ms: u64) -> Vec<Crossing> {
        let current = self.current(now_ms);
        let mut out = Vec::new();
        for ((rule, user), tally) in &mut self.tallies {
            let r = &self.rules[*rule];
            if tally.period_start_ms != current[*rule] {
                continue;
            }
            let reached = r.reached(tally.bytes);
            for (threshold, _) in r.threshold_bytes().take(reached).skip(tally.announced) {
                out.push(Crossing {
                    quota: r.name.clone(),
                    user: user.clone(),
                    threshold,
                    bytes: tally.bytes,
                    limit: r.bytes,
                });
            }
            tally.announced = tally.announced.max(reached);
        }
        out.sort_by(|a, b| (&a.quota, &a.user).cmp(&(&b.quota, &b.user)));
        out
    }

    /// Users over some quota in its current period.
    pub fn over(&self, now_ms: u64) -> HashSet<String> {
        let current = self.current(now_ms);
        self.tallies
            .iter()
            .filter(|((rule, _), tally)| self.is_over(*rule, tally, &current))
            .map(|((_, user), _)| user.clone())
            .collect()
    }

    /// Where each rule's current period starts.
    fn current(&self, now_ms: u64) -> Vec<u64> {
        self.rules
            .iter()
            .map(|rule| rule.calendar.period(now_ms).start_ms)
            .collect()
    }

    fn is_over(&self, rule: usize, tally: &Tally, current: &[u64]) -> bool {
        tally.period_start_ms == current[rule] && tally.bytes >= self.rules[rule].bytes
    }

    /// The actions due for `sessions`, the open sessions of the users
    /// [`Quotas::over`] and [`Quotas::to_restore`] named: one per session,
    /// quota and period, ever; then the restoring CoAs due (a session to
    /// restore that is not among them has closed, and is forgotten).
    pub fn actions(&mut self, now_ms: u64, sessions: &[OpenSession]) -> Vec<Action> {
        let current = self.current(now_ms);
        let mut out = Vec::new();
        for session in sessions {
            for (i, rule) in self.rules.iter().enumerate() {
                let Some(tally) = self.tallies.get(&(i, session.user_name.clone())) else {
                    continue;
                };
                if !self.is_over(i, tally, &current)
                    || !self.acted.insert((i, session.id, tally.period_start_ms))
                {
                    continue;
                }
                if !rule.restore.is_empty() {
                    self.changed.insert(
                        (i, session.id),
                        (session.user_name.clone(), tally.period_start_ms),
                    );
                }
                out.push(Action {
                    quota: rule.name.clone(),
                    kind: rule.kind,
                    changes: rule.changes.clone(),
                    period: rule.calendar.period(now_ms),
                    session: session.clone(),
                    bytes: tally.bytes,
                    restore: false,
                });
            }
        }
        let due: Vec<(usize, u64)> = self
            .changed
            .iter()
            .filter(|((rule, _), (_, period))| *period < current[*rule])
            .map(|(key, _)| *key)
            .collect();
        for (rule, id) in due {
            self.changed.remove(&(rule, id));
            let Some(session) = sessions.iter().find(|s| s.id == id) else {
                continue;
            };
            let r = &self.rules[rule];
            let period = r.calendar.period(now_ms);
            let bytes = self
                .tallies
                .get(&(rule, session.user_name.clone()))
                .filter(|t| t.period_start_ms == period.start_ms)
                .map_or(0, |t| t.bytes);
            out.push(Action {
                quota: r.name.clone(),
                kind: Kind::Coa,
                changes: r.restore.clone(),
                period,
                session: session.clone(),
                bytes,
                restore: true,
            });
        }
        out
    }
}

/// The NAS a session's requests go to: the entry whose address is the
/// session's NAS (NAS-IP-Address, NAS-IPv6-Address or the accounting
/// source), else whose identifier is (NAS-Identifier).
pub fn owner<'a>(nas: &'a [NasConfig], session_nas: &str) -> Option<&'a NasConfig> {
    let address = session_nas.parse::<IpAddr>().ok();
    nas.iter().find(|n| Some(n.address) == address).or_else(|| {
        nas.iter()
            .find(|n| n.identifier.as_deref() == Some(session_nas))
    })
}

/// How long each transmission of a request waits for its answer: `first`,
/// then twice as long each retransmission (RFC 5080 §2.2.1's doubling).
pub fn waits(first: Duration, retries: u32) -> impl Iterator<Item = Duration> {
    (0..=retries).map(move |n| first.saturating_mul(1 << n.min(16)))
}

#[cfg(test)]
mod tests;
