//! Percentile ("95th percentile", burstable) billing: per group, the rate
//! of each 5-minute interval of the range, down (in, towards the
//! subscriber) and up (out), and the chosen percentile of each.
//!
//! The rules:
//! - Intervals are 5 minutes aligned to the Unix epoch; every interval
//!   that meets `[from, to)` is a sample, those without traffic as 0 (so
//!   the percentile of a month counts the quiet nights). Rows are placed by
//!   bucket start, as in the rest of the report.
//! - A usage row must lie within one interval: buckets that divide 5
//!   minutes (the default 1m, 5m, 30s, ...) always do. A row that straddles
//!   two intervals (a 10m or 7m bucket) is an error naming it: spreading it
//!   evenly would invent a flat rate where the peak is unknown.
//! - The percentile is the nearest rank: the samples sorted ascending, the
//!   one at rank ⌈p/100 × n⌉ (for 95 and a 30-day month, 8640 samples, the
//!   top 432 are discarded and the 8208th is billed). `max` is the greater
//!   of the in and out percentiles, what a carrier bills.
//! - The total is the percentile of everyone's summed traffic (the
//!   network's own burst), not the sum of the groups' percentiles.
//! - A rate is the interval's bytes × 8 ÷ 300 s, in bit/s rounded half up.

use std::{collections::BTreeMap, fmt, str::FromStr};

use flowtally_common::agg::Direction;

use super::{
    Usage,
    group::{Grouping, Key},
};
use crate::timestamp::Timestamp;

/// Width of a rate sample.
pub const INTERVAL_MS: u64 = 300_000;

/// A percentile from 0 (exclusive) to 100, in thousandths of a percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentile(u32);

impl FromStr for Percentile {
    type Err = String;

    /// `95`, `99.9`, `100`: at most 3 decimals.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a percentile above 0 and up to 100 (like 95 or 99.9)");
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || fraction.len() > 3 || !digits(whole) {
            return Err(bad());
        }
        if !digits(fraction) || (s.contains('.') && fraction.is_empty()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let fraction: u32 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
        let thousandths = whole * 1000 + fraction;
        if thousandths == 0 || thousandths > 100_000 {
            return Err(bad());
        }
        Ok(Self(thousandths))
    }
}

impl fmt::Display for Percentile {
    /// `95`, `99.9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 1000, self.0 % 1000);
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let fraction = format!("{fraction:03}");
            write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
        }
    }
}

impl Percentile {
    /// The nearest rank, 1 to `samples`, of this percentile among `samples`.
    fn rank(self, samples: u64) -> u64 {
        (u128::from(samples) * u128::from(self.0))
            .div_ceil(100_000)
            .max(1) as u64
    }
}

/// A group's percentile of the bytes per interval, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Burst {
    /// Down: towards the subscriber.
    pub in_bytes: u64,
    /// Up: from the subscriber.
    pub out_bytes: u64,
}

impl Burst {
    pub fn max_bytes(&self) -> u64 {
        self.in_bytes.max(self.out_bytes)
    }
}

/// The rate in bit/s, rounded half up, of `bytes` in one interval.
pub fn bps(bytes: u64) -> u64 {
    let twice = u128::from(bytes) * 8 * 1000 * 2 / u128::from(INTERVAL_MS);
    twice.div_ceil(2) as u64
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub percentile: Percentile,
    /// How many samples each percentile is taken among.
    pub intervals: u64,
    /// Groups with usage; others (time online only) are at 0.
    pub groups: BTreeMap<Key, Burst>,
    pub total: Burst,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PercentileError {
    #[error(
        "--percentile needs 5-minute rates, but a usage row's bucket ({width_ms} ms from {start}) \
         crosses a 5-minute boundary: the database was written with an aggregation.bucket that \
         does not divide 5 minutes (use 1m, the default, 5m, 30s...)"
    )]
    Straddles { start: Timestamp, width_ms: u64 },
}

/// Each group's traffic per interval, up and down: only the intervals
/// with traffic (the rest are 0).
#[derive(Default)]
struct Series {
    down: BTreeMap<u64, u64>,
    up: BTreeMap<u64, u64>,
}

impl Series {
    fn add(&mut self, interval: u64, direction: Direction, bytes: u64) {
        let side = match direction {
            Direction::Down => &mut self.down,
            Direction::Up => &mut self.up,
            Direction::Transit => return,
        };
        *side.entry(interval).or_default() += bytes;
    }

    fn burst(&self, percentile: Percentile, intervals: u64) -> Burst {
        Burst {
            in_bytes: nearest_rank(&self.down, percentile, intervals),
            out_bytes: nearest_rank(&self.up, percentile, intervals),
        }
    }
}

/// The percentile of `intervals` samples of which `busy` are the non-zero.
fn nearest_rank(busy: &BTreeMap<u64, u64>, percentile: Percentile, intervals: u64) -> u64 {
    let rank = percentile.rank(intervals);
    let zeros = intervals - busy.len() as u64;
    if rank <= zeros {
        return 0;
    }
    let mut values: Vec<u64> = busy.values().copied().collect();
    values.sort_unstable();
    values[(rank - zeros - 1) as usize]
}

/// The percentiles of the non-transit `usage` whose bucket starts in
/// `[from_ms, to_ms)`, grouped as `grouping` says.
pub fn compute(
    usage: &[Usage],
    grouping: &Grouping,
    from_ms: u64,
    to_ms: u64,
    percentile: Percentile,
) -> Result<Percentiles, PercentileError> {
    let first = from_ms - from_ms % INTERVAL_MS;
    let intervals = to_ms.saturating_sub(first).div_ceil(INTERVAL_MS);
    let mut groups: BTreeMap<Key, Series> = BTreeMap::new();
    let mut total = Series::default();
    let in_range = |row: &&Usage| (from_ms..to_ms).contains(&row.bucket_start_ms);
    for row in usage.iter().filter(in_range) {
        if row.direction == Direction::Transit {
            continue;
        }
        let interval = row.bucket_start_ms / INTERVAL_MS;
        let last_ms = row.bucket_start_ms + row.bucket_width_ms.max(1) - 1;
        if last_ms / INTERVAL_MS != interval {
            return Err(PercentileError::Straddles {
                start: Timestamp(row.bucket_start_ms),
                width_ms: row.bucket_width_ms,
            });
        }
        groups
            .entry(grouping.usage_key(row))
            .or_default()
            .add(interval, row.direction, row.bytes);
        total.add(interval, row.direction, row.bytes);
    }
    Ok(Percentiles {
        percentile,
        intervals,
        groups: groups
            .into_iter()
            .map(|(key, series)| (key, series.burst(percentile, intervals)))
            .collect(),
        total: total.burst(percentile, intervals),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::group::Name;

    const MINUTE: u64 = 60_000;
    /// Monday 2026-11-23 00:00 UTC.
    const DAY: u64 = 1_795_392_000_000;

    fn p(s: &str) -> Percentile {
        s.parse().unwrap()
    }

    fn row(user: &str, direction: Direction, at_ms: u64, width_ms: u64, bytes: u64) -> Usage {
        Usage {
            bucket_start_ms: at_ms,
            bucket_width_ms: width_ms,
            user_name: Some(user.into()),
            session_id: Some(format!("{user}-1")),
            subscriber_ip: "100.64.0.1".parse().unwrap(),
            direction,
            class: None,
            bytes,
            packets: 1,
            flows: 1,
        }
    }

    fn user(name: &str) -> Key {
        Key::User(Name::Known(name.into()))
    }

    #[test]
    fn percentiles_parse_with_up_to_three_decimals() {
        assert_eq!(p("95"), Percentile(95_000));
        assert_eq!(p("99.9"), Percentile(99_900));
        assert_eq!(p("100"), Percentile(100_000));
        assert_eq!(p("0.001"), Percentile(1));
        assert_eq!(p("99.9").to_string(), "99.9");
        assert_eq!(p("95.250").to_string(), "95.25");
        for bad in [
            "0", "100.001", "101", "-5", "95.", ".5", "9.1234", "x", "", "1e2",
        ] {
            assert!(bad.parse::<Percentile>().is_err(), "{bad}");
        }
    }

    /// Hand-checked: 20 five-minute intervals (100 minutes). alice's down
    /// bytes in intervals 0..20 are 1, 2, ..., 20 × 1000, written as five
    /// one-minute rows each (one fifth per minute); only interval 19 has up
    /// traffic, 9000 bytes. Nearest rank of 95 among 20
    /// is ⌈19⌉ = 19: the 19th smallest down is 19 000 bytes (the top one,
    /// 20 000, is discarded); up is 0 (19 zeros). At 100: 20 000 and 9000.
    /// At 50: rank 10 → 10 000 bytes.
    #[test]
    fn a_hand_checked_series() {
        let mut usage = Vec::new();
        for i in 0..20u64 {
            for minute in 0..5 {
                let at = DAY + i * INTERVAL_MS + minute * MINUTE;
                usage.push(row("alice", Direction::Down, at, MINUTE, (i + 1) * 200));
            }
        }
        usage.push(row(
            "alice",
            Direction::Up,
            DAY + 19 * INTERVAL_MS,
            MINUTE,
            9000,
        ));
        let from = DAY;
        let to = DAY + 20 * INTERVAL_MS;
        let at = |s| compute(&usage, &Grouping::User, from, to, p(s)).unwrap();
        let p95 = at("95");
        assert_eq!(p95.intervals, 20);
        assert_eq!(
            p95.groups[&user("alice")],
            Burst {
                in_bytes: 19_000,
                out_bytes: 0
            }
        );
        assert_eq!(p95.groups[&user("alice")].max_bytes(), 19_000);
        // 19 000 bytes in 300 s: 506.67 bit/s.
        assert_eq!(bps(19_000), 507);
        assert_eq!(
            at("100").groups[&user("alice")],
            Burst {
                in_bytes: 20_000,
                out_bytes: 9000
            }
        );
        assert_eq!(at("50").groups[&user("alice")].in_bytes, 10_000);
        // One interval fewer: rank ⌈0.95 × 19⌉ = 19 is the top one.
        let shorter = compute(&usage, &Grouping::User, from, to - INTERVAL_MS, p("95")).unwrap();
        assert_eq!(shorter.groups[&user("alice")].in_bytes, 19_000);
        let shorter = compute(&usage, &Grouping::User, from + INTERVAL_MS, to, p("95")).unwrap();
        assert_eq!(shorter.groups[&user("alice")].in_bytes, 20_000);
    }

    #[test]
    fn quiet_intervals_count_as_zero_samples() {
        // One busy interval in a day of 288: the 95th percentile is 0,
        // the 100th is the burst.
        let usage = [row("bob", Direction::Up, DAY + 600_000, 300_000, 5_000_000)];
        let at = |s| compute(&usage, &Grouping::User, DAY, DAY + 86_400_000, p(s)).unwrap();
        assert_eq!(at("95").intervals, 288);
        assert_eq!(at("95").groups[&user("bob")], Burst::default());
        assert_eq!(at("100").groups[&user("bob")].out_bytes, 5_000_000);
        // 288 × 0.996 = 286.8: rank 287 of 288 is still a zero.
        assert_eq!(at("99.6").groups[&user("bob")].out_bytes, 0);
        assert_eq!(at("99.7").groups[&user("bob")].out_bytes, 5_000_000);
    }

    #[test]
    fn the_total_is_the_percentile_of_the_sum_and_transit_is_nobodys() {
        // alice busy in interval 0, bob in 1: each one's 50th percentile
        // of 2 samples is 0; together both intervals are busy.
        let usage = [
            row("alice", Direction::Down, DAY, MINUTE, 300),
            row("bob", Direction::Down, DAY + INTERVAL_MS, MINUTE, 600),
            row("bob", Direction::Transit, DAY, MINUTE, 1_000_000),
        ];
        let r = compute(&usage, &Grouping::User, DAY, DAY + 2 * INTERVAL_MS, p("50")).unwrap();
        assert_eq!(r.groups[&user("alice")].in_bytes, 0);
        assert_eq!(r.groups[&user("bob")].in_bytes, 0);
        assert_eq!(r.total.in_bytes, 300);
        assert_eq!(r.total.out_bytes, 0);
    }

    #[test]
    fn buckets_that_divide_five_minutes_fit_and_others_are_refused() {
        for width in [MINUTE, 5 * MINUTE, 30_000, 2_500] {
            let usage = [row("a", Direction::Up, DAY + 5 * MINUTE - width, width, 1)];
            assert!(compute(&usage, &Grouping::User, DAY, DAY + 10 * MINUTE, p("95")).is_ok());
        }
        let usage = [row("a", Direction::Up, DAY, 10 * MINUTE, 1)];
        let err = compute(&usage, &Grouping::User, DAY, DAY + 10 * MINUTE, p("95")).unwrap_err();
        assert_eq!(
            err,
            PercentileError::Straddles {
                start: Timestamp(DAY),
                width_ms: 10 * MINUTE
            }
        );
        assert!(err.to_string().contains("aggregation.bucket"), "{err}");
        // A 2-minute bucket at minute 4 crosses minute 5.
        let usage = [row("a", Direction::Up, DAY + 4 * MINUTE, 2 * MINUTE, 1)];
        assert!(compute(&usage, &Grouping::User, DAY, DAY + 10 * MINUTE, p("95")).is_err());
    }

    #[test]
    fn an_unaligned_range_counts_the_intervals_it_meets() {
        let r = compute(
            &[],
            &Grouping::User,
            DAY + 1,
            DAY + INTERVAL_MS + 1,
            p("95"),
        )
        .unwrap();
        assert_eq!(r.intervals, 2);
    }
}
