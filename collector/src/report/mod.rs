//! `flowtally report`: usage, time online and cost per user, session,
//! subnet or organisation over a time range, split by tariff period.
//! Sans-IO: [`compute`] takes the rows, [`command`] reads them and renders.
//!
//! How the figures are made:
//! - Range `[from, to)`: a usage row counts when its bucket *starts* in it.
//!   Rows are not prorated at the range's ends, so figures are made of
//!   whole rows and consecutive reports neither share nor lose one.
//! - Transit rows (neither end a subscriber) belong to no group: they are
//!   counted on a line of their own, outside the total.
//! - Time online, clipped to the range: for users and sessions, each
//!   session from its start to its stop (or now), summed — a user's two
//!   concurrent sessions count twice; for subnets and organisations, the
//!   time at least one of their addresses was held by a session
//!   (`session_addresses`), united.
//! - Periods: a usage row covers `[bucket start, bucket start + width)`.
//!   When a period boundary falls inside, its bytes are split in proportion
//!   to the time in each period, in whole bytes that add up to the row's.
//!   Time online is split at the boundaries to the millisecond.
//! - Cost, per group and period: GB (10^9 bytes, up and down) times
//!   price_per_gb plus hours online times price_per_hour, computed exactly
//!   in integers and rounded half up to 0.0001 once. Every total is a sum
//!   of those rounded parts, so totals add up as printed.

pub mod command;
pub mod filter;
pub mod group;
pub mod orgs;
pub mod percentile;
pub mod periods;
pub mod render;
pub mod series;
pub mod source;
pub mod tariff;

use std::{collections::BTreeMap, net::IpAddr};

use flowtally_common::agg::Direction;

use self::{
    group::{Grouping, Key},
    periods::prorate,
    tariff::{Cost, Tariff},
};
use crate::sessions::{AddressRow, SessionRow};

/// Usage rows summed over what a report does not show (peers, ports,
/// protocols, exporters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub bucket_start_ms: u64,
    pub bucket_width_ms: u64,
    pub user_name: Option<String>,
    pub session_id: Option<String>,
    pub subscriber_ip: IpAddr,
    pub direction: Direction,
    /// The peer's destination class.
    pub class: Option<String>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

pub struct Query<'a> {
    pub from_ms: u64,
    /// Exclusive.
    pub to_ms: u64,
    /// Where sessions and addresses still held end.
    pub now_ms: u64,
    pub grouping: &'a Grouping,
    pub tariff: Option<&'a Tariff>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Names of the key columns.
    pub columns: &'static [&'static str],
    pub tariff: Option<Tariff>,
    /// Sorted by key.
    pub groups: Vec<(Key, Line)>,
    /// The sum of the groups.
    pub total: Line,
    pub transit: Traffic,
    /// With `--percentile`: the groups' bursts (see [`percentile`]).
    pub percentiles: Option<percentile::Percentiles>,
}

/// One group's figures, or their total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub packets: u64,
    pub flows: u64,
    pub online_ms: u64,
    /// Per tariff period, in the tariff's order; empty without a tariff.
    pub periods: Vec<PeriodLine>,
}

/// What of a line falls into one tariff period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodLine {
    pub bytes: u64,
    pub online_ms: u64,
    pub cost: Cost,
}

impl Line {
    fn empty(periods: usize) -> Self {
        Self {
            periods: vec![PeriodLine::default(); periods],
            ..Self::default()
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }

    pub fn cost(&self) -> Cost {
        self.periods.iter().map(|p| p.cost).sum()
    }

    fn add(&mut self, other: &Line) {
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.packets += other.packets;
        self.flows += other.flows;
        self.online_ms += other.online_ms;
        for (mine, theirs) in self.periods.iter_mut().zip(&other.periods) {
            mine.bytes += theirs.bytes;
            mine.online_ms += theirs.online_ms;
            mine.cost = mine.cost + theirs.cost;
        }
    }
}

/// Traffic no subscriber sent or received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

/// A group while its rows come in.
struct Group {
    line: Line,
    online: Vec<(u64, u64)>,
    /// Bytes per period and tariff price slot (`Tariff::price_slot`).
    priced: Vec<Vec<u64>>,
}

/// The report for `query` of usage rows and the session history (sessions
/// for users and sessions, their addresses for subnets and organisations).
pub fn compute(
    query: &Query<'_>,
    usage: &[Usage],
    sessions: &[SessionRow],
    addresses: &[AddressRow],
) -> Report {
    let periods = query.tariff.map_or(0, |t| t.periods.len());
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    let mut transit = Traffic::default();
    let in_range = |row: &&Usage| (query.from_ms..query.to_ms).contains(&row.bucket_start_ms);
    for row in usage.iter().filter(in_range) {
        if row.direction == Direction::Transit {
            transit.bytes += row.bytes;
            transit.packets += row.packets;
            transit.flows += row.flows;
            continue;
        }
        groups
            .entry(query.grouping.usage_key(row))
            .or_insert_with(|| Group::new(query.tariff))
            .add_usage(row, query.tariff);
    }
    for online in query.grouping.online(sessions, addresses, query.now_ms) {
        let from = online.from_ms.max(query.from_ms);
        let to = online.to_ms.min(query.to_ms);
        if from < to {
            groups
                .entry(online.key)
                .or_insert_with(|| Group::new(query.tariff))
                .online
                .push((from, to));
        }
    }
    let unite = query.grouping.unites_online();
    let groups: Vec<(Key, Line)> = groups
        .into_iter()
        .map(|(key, group)| (key, group.finish(unite, query.tariff)))
        .collect();
    let mut total = Line::empty(periods);
    for (_, line) in &groups {
        total.add(line);
    }
    Report {
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        columns: query.grouping.columns(),
        tariff: query.tariff.cloned(),
        groups,
        total,
        transit,
        percentiles: None,
    }
}

impl Group {
    fn new(tariff: Option<&Tariff>) -> Self {
        let periods = tariff.map_or(0, |t| t.periods.len());
        let slots = tariff.map_or(0, |t| t.classes.len() + 1);
        Self {
            line: Line::empty(periods),
            online: Vec::new(),
            priced: vec![vec![0; slots]; periods],
        }
    }

    fn add_usage(&mut self, row: &Usage, tariff: Option<&Tariff>) {
        let line = &mut self.line;
        if row.direction == Direction::Up {
            line.bytes_up += row.bytes;
        } else {
            line.bytes_down += row.bytes;
        }
        line.packets += row.packets;
        line.flows += row.flows;
        if let Some(tariff) = tariff {
            // A zero width would lose the bytes: a bucket is at least 1 ms.
            let end = row.bucket_start_ms + row.bucket_width_ms.max(1);
            let pieces: Vec<_> = tariff.week.split(row.bucket_start_ms, end).collect();
            let slot = tariff.price_slot(row.class.as_deref());
            for (period, bytes) in prorate(row.bytes, &pieces) {
                line.periods[period].bytes += bytes;
                self.priced[period][slot] += bytes;
            }
        }
    }

    /// Adds the time online and prices what is in each period.
    fn finish(mut self, unite: bool, tariff: Option<&Tariff>) -> Line {
        if unite {
            self.online = union(self.online);
        }
        let mut line = self.line;
        for &(from, to) in &self.online {
            line.online_ms += to - from;
            if let Some(tariff) = tariff {
                for (period, ms) in tariff.week.split(from, to) {
                    line.periods[period].online_ms += ms;
                }
            }
        }
        if let Some(tariff) = tariff {
            for (index, period) in line.periods.iter_mut().enumerate() {
                period.cost = tariff.cost_by_class(index, &self.priced[index], period.online_ms);
            }
        }
        line
    }
}

/// The same time as `stretches`, without overlaps.
fn union(mut stretches: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    stretches.sort_unstable();
    let mut united: Vec<(u64, u64)> = Vec::with_capacity(stretches.len());
    for (from, to) in stretches {
        match united.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => united.push((from, to)),
        }
    }
    united
}

#[cfg(test)]
mod tests;
