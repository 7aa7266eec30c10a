//! A tariff's week: which period each minute of the week belongs to, at the
//! tariff's fixed UTC offset, and how a span of time splits at period
//! boundaries. There is no time-zone database and so no daylight saving
//! time: a period's clock times mean the same UTC times all year.

use std::fmt;

use serde::{Deserialize, Serialize};

const MINUTE_MS: u64 = 60_000;
const DAY_MINUTES: u32 = 24 * 60;
const WEEK_MINUTES: u32 = 7 * DAY_MINUTES;
const WEEK_MS: u64 = WEEK_MINUTES as u64 * MINUTE_MS;
/// Unix time began on a Thursday, 3 days after a Monday 00:00.
const EPOCH_AFTER_MONDAY_MS: i64 = 3 * DAY_MINUTES as i64 * MINUTE_MS as i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A clock time, 00:00 to 24:00, as minutes after midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Clock(pub u32);

impl Clock {
    pub const MIDNIGHT: Self = Self(0);
    pub const END_OF_DAY: Self = Self(DAY_MINUTES);
}

impl TryFrom<String> for Clock {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        hh_mm(&s)
            .filter(|&minutes| minutes <= DAY_MINUTES)
            .map(Clock)
            .ok_or_else(|| format!("{s:?} is not a clock time from 00:00 to 24:00 (HH:MM)"))
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A fixed offset from UTC, `+HH:MM` or `-HH:MM` (or `Z`), as minutes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Offset(pub i32);

impl From<Offset> for String {
    fn from(offset: Offset) -> Self {
        offset.to_string()
    }
}

impl TryFrom<String> for Offset {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s == "Z" {
            return Ok(Self(0));
        }
        let sign = match s.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => 0,
        };
        s.get(1..)
            .and_then(hh_mm)
            .filter(|&minutes| sign != 0 && minutes < DAY_MINUTES)
            .map(|minutes| Self(sign * minutes as i32))
            .ok_or_else(|| format!("{s:?} is not a UTC offset like \"+01:00\" or \"-05:30\""))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let minutes = self.0.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

/// `HH:MM`, exactly two digits each, minutes below 60.
fn hh_mm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let two_digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60).then_some(h * 60 + m)
}

/// When a period applies: on each of `days`, from `from` until `to`, which
/// is on the next day when it is not after `from` (22:00 to 06:00; equal
/// times are 24 hours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub days: Vec<Day>,
    /// Before 24:00.
    pub from: Clock,
    pub to: Clock,
}

impl Rule {
    /// The minutes of the week it covers, each as minutes after Monday
    /// 00:00, ascending per day but not reduced modulo the week: Sunday
    /// 22:00 to 06:00 runs on to minute 10440, Monday 06:00 of the next.
    fn minutes(&self) -> impl Iterator<Item = u32> + '_ {
        let length = (self.to.0 + DAY_MINUTES - self.from.0 - 1) % DAY_MINUTES + 1;
        self.days.iter().flat_map(move |&day| {
            let start = day as u32 * DAY_MINUTES + self.from.0;
            start..start + length
        })
    }
}

/// A stretch of the week, in minutes after Monday 00:00, `end` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stretch {
    start: u32,
    end: u32,
}

impl fmt::Display for Stretch {
    /// `tue 19:00–20:00`, `mon 20:00–24:00`, `fri 22:00–sat 06:00`: an end
    /// at midnight is 24:00 of the day before.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = |day: u32| DAY_NAMES[(day % 7) as usize];
        let (start_day, end_day) = (self.start / DAY_MINUTES, (self.end - 1) / DAY_MINUTES);
        let start = Clock(self.start - start_day * DAY_MINUTES);
        let end = Clock(self.end - end_day * DAY_MINUTES);
        write!(f, "{} {start}–", day(start_day))?;
        if end_day != start_day {
            write!(f, "{} ", day(end_day))?;
        }
        write!(f, "{end}")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeekError {
    #[error(
        "periods {0:?} and {1:?} both have no days, from or to: only one period can be the default"
    )]
    TwoDefaults(String, String),
    #[error("periods {first:?} and {second:?} overlap on {at}")]
    Overlap {
        first: String,
        second: String,
        at: Stretch,
    },
    #[error(
        "no period covers {}: add a default period (one without days, from or to) or extend the others",
        list(.0)
    )]
    Gaps(Vec<Stretch>),
}

fn list(stretches: &[Stretch]) -> String {
    let all: Vec<String> = stretches.iter().map(Stretch::to_string).collect();
    all.join(", ")
}

/// Which period holds each moment of a week, at a fixed UTC offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Week {
    offset_ms: i64,
    /// Where each run of one period starts, as ms after Monday 00:00 local
    /// time, ascending from 0; a run lasts until the next one starts or the
    /// week ends.
    runs: Vec<(u64, usize)>,
}

impl Week {
    /// Lays out periods, given by name and rule in the tariff's order; a
    /// period without a rule is the default, which takes every minute the
    /// others leave. Periods must not overlap, and without a default they
    /// must cover the whole week.
    pub fn new(periods: &[(&str, Option<&Rule>)], offset: Offset) -> Result<Self, WeekError> {
        let mut owner: Vec<Option<usize>> = vec![None; WEEK_MINUTES as usize];
        let mut default = None;
        for (index, (name, rule)) in periods.iter().enumerate() {
            let Some(rule) = rule else {
                if let Some(first) = default.replace(index) {
                    return Err(WeekError::TwoDefaults(
                        periods[first].0.to_owned(),
                        (*name).to_owned(),
                    ));
                }
                continue;
            };
            let mut overlap: Option<(usize, Stretch)> = None;
            for minute in rule.minutes() {
                let slot = &mut owner[(minute % WEEK_MINUTES) as usize];
                match (*slot, &mut overlap) {
                    (Some(other), Some((first, at)))
                        if other == *first && at.end == minute && other != index =>
                    {
                        at.end += 1;
                    }
                    (Some(other), None) if other != index => {
                        overlap = Some((
                            other,
                            Stretch {
                                start: minute,
                                end: minute + 1,
                            },
                        ));
                    }
                    (Some(_), _) => {}
                    (None, _) => *slot = Some(index),
                }
            }
            if let Some((first, at)) = overlap {
                return Err(WeekError::Overlap {
                    first: periods[first].0.to_owned(),
                    second: (*name).to_owned(),
                    at,
                });
            }
        }
        let owner: Vec<usize> = match default {
            Some(default) => owner.iter().map(|o| o.unwrap_or(default)).collect(),
            None => owner
                .iter()
                .copied()
                .collect::<Option<_>>()
                .ok_or_else(|| WeekError::Gaps(gaps(&owner)))?,
        };
        let mut runs: Vec<(u64, usize)> = Vec::new();
        for (minute, &period) in owner.iter().enumerate() {
            if runs.last().is_none_or(|&(_, last)| last != period) {
                runs.push((minute as u64 * MINUTE_MS, period));
            }
        }
        Ok(Self {
            offset_ms: i64::from(offset.0) * MINUTE_MS as i64,
            runs,
        })
    }

    /// Splits `[start_ms, end_ms)` (Unix ms) at period boundaries: the
    /// period and length of each piece, in time order.
    pub fn split(&self, start_ms: u64, end_ms: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut runs = self.runs_between(start_ms, end_ms).peekable();
        // A period's last run of the week and its first of the next are one.
        std::iter::from_fn(move || {
            let (period, mut ms) = runs.next()?;
            while let Some((_, more)) = runs.next_if(|&(next, _)| next == period) {
                ms += more;
            }
            Some((period, ms))
        })
    }

    fn runs_between(&self, start_ms: u64, end_ms: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut at = start_ms;
        std::iter::from_fn(move || {
            if at >= end_ms {
                return None;
            }
            let into_week = (at as i64 + self.offset_ms + EPOCH_AFTER_MONDAY_MS)
                .rem_euclid(WEEK_MS as i64) as u64;
            let run = self.runs.partition_point(|&(start, _)| start <= into_week) - 1;
            let run_end = self.runs.get(run + 1).map_or(WEEK_MS, |&(start, _)| start);
            let until = end_ms.min(at + (run_end - into_week));
            let piece = (self.runs[run].1, until - at);
            at = until;
            Some(piece)
        })
    }
}

/// The stretches no period covers.
fn gaps(owner: &[Option<usize>]) -> Vec<Stretch> {
    let mut gaps: Vec<Stretch> = Vec::new();
    for (minute, _) in owner.iter().enumerate().filter(|(_, o)| o.is_none()) {
        let minute = minute as u32;
        match gaps.last_mut() {
            Some(gap) if gap.end == minute => gap.end += 1,
            _ => gaps.push(Stretch {
                start: minute,
                end: minute + 1,
            }),
        }
    }
    gaps
}

/// Splits `amount` over `pieces` (period, duration) in proportion to their
/// durations, in whole units that add up to `amount`: each piece gets the
/// growth of the floored running share, so none is a whole unit off its
/// exact share.
pub fn prorate(amount: u64, pieces: &[(usize, u64)]) -> impl Iterator<Item = (usize, u64)> + '_ {
    let whole: u128 = pieces.iter().map(|&(_, ms)| u128::from(ms)).sum();
    let share = move |elapsed: u128| (u128::from(amount) * elapsed / whole) as u64;
    let mut elapsed = 0;
    pieces.iter().map(move |&(period, ms)| {
        let before = share(elapsed);
        elapsed += u128::from(ms);
        (period, share(elapsed) - before)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    const HOUR: u64 = 3_600_000;

    fn at(rfc3339: &str) -> u64 {
        rfc3339.parse::<Timestamp>().unwrap().0
    }

    fn clock(s: &str) -> Clock {
        Clock::try_from(s.to_owned()).unwrap()
    }

    fn rule(days: &[Day], from: &str, to: &str) -> Rule {
        Rule {
            days: days.to_vec(),
            from: clock(from),
            to: clock(to),
        }
    }

    const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];
    const PEAK: usize = 0;
    const OFF_PEAK: usize = 1;

    /// Peak on weekdays 08:00–20:00, off-peak the rest.
    fn peak_week(offset: i32) -> Week {
        let peak = rule(&WEEKDAYS, "08:00", "20:00");
        Week::new(&[("peak", Some(&peak)), ("off-peak", None)], Offset(offset)).unwrap()
    }

    fn split(week: &Week, from: &str, to: &str) -> Vec<(usize, u64)> {
        week.split(at(from), at(to)).collect()
    }

    #[test]
    fn a_span_across_a_boundary_splits_exactly_there() {
        // 2026-11-23 is a Monday.
        let week = peak_week(0);
        assert_eq!(
            split(&week, "2026-11-23T07:59:30Z", "2026-11-23T08:00:45Z"),
            [(OFF_PEAK, 30_000), (PEAK, 45_000)]
        );
        assert_eq!(
            split(&week, "2026-11-23T19:00:00Z", "2026-11-24T09:00:00Z"),
            [(PEAK, HOUR), (OFF_PEAK, 12 * HOUR), (PEAK, HOUR)]
        );
        assert_eq!(
            split(&week, "2026-11-23T08:00:00Z", "2026-11-23T08:00:00.001Z"),
            [(PEAK, 1)]
        );
    }

    #[test]
    fn weekends_are_off_peak_all_day() {
        let week = peak_week(0);
        assert_eq!(
            split(&week, "2026-11-27T19:00:00Z", "2026-11-30T09:00:00Z"),
            [(PEAK, HOUR), (OFF_PEAK, (4 + 48 + 8) * HOUR), (PEAK, HOUR)]
        );
    }

    #[test]
    fn a_whole_week_has_each_period_for_its_share() {
        let week = peak_week(0);
        let mut totals = [0; 2];
        for (period, ms) in week.split(at("2026-11-25T13:17:00Z"), at("2026-12-02T13:17:00Z")) {
            totals[period] += ms;
        }
        assert_eq!(totals, [60 * HOUR, 108 * HOUR]);
    }

    #[test]
    fn clock_times_are_at_the_tariff_offset() {
        // 07:30Z is 08:30 at +01:00 and 02:30 at -05:00.
        assert_eq!(
            split(
                &peak_week(60),
                "2026-11-23T06:30:00Z",
                "2026-11-23T07:30:00Z"
            ),
            [(OFF_PEAK, HOUR / 2), (PEAK, HOUR / 2)]
        );
        assert_eq!(
            split(
                &peak_week(-300),
                "2026-11-23T12:30:00Z",
                "2026-11-23T13:30:00Z"
            ),
            [(OFF_PEAK, HOUR / 2), (PEAK, HOUR / 2)]
        );
        // Friday 19:30Z is Saturday 00:30 at +05:00: off-peak.
        assert_eq!(
            split(
                &peak_week(300),
                "2026-11-27T19:30:00Z",
                "2026-11-27T19:31:00Z"
            ),
            [(OFF_PEAK, 60_000)]
        );
    }

    #[test]
    fn there_is_no_daylight_saving_time() {
        // Peak starts at 07:00Z at +01:00 in January and in July alike.
        let week = peak_week(60);
        for monday in ["2026-01-05", "2026-07-06"] {
            assert_eq!(
                split(
                    &week,
                    &format!("{monday}T06:59:00Z"),
                    &format!("{monday}T07:01:00Z")
                ),
                [(OFF_PEAK, 60_000), (PEAK, 60_000)],
                "{monday}"
            );
        }
    }

    #[test]
    fn a_period_past_midnight_belongs_to_the_day_it_starts() {
        let night = rule(&[Day::Fri, Day::Sun], "22:00", "06:00");
        let week = Week::new(&[("night", Some(&night)), ("day", None)], Offset(0)).unwrap();
        // Friday night runs into Saturday; no Saturday night.
        assert_eq!(
            split(&week, "2026-11-27T21:00:00Z", "2026-11-29T07:00:00Z"),
            [(1, HOUR), (0, 8 * HOUR), (1, 25 * HOUR)]
        );
        // Sunday night wraps the week into Monday morning.
        assert_eq!(
            split(&week, "2026-11-29T23:00:00Z", "2026-11-30T07:00:00Z"),
            [(0, 7 * HOUR), (1, HOUR)]
        );
    }

    #[test]
    fn times_before_the_unix_epoch_in_local_time_still_fall_in_the_week() {
        // Thursday 1970-01-01 00:30Z is Wednesday 19:30 at -05:00: peak.
        assert_eq!(
            split(
                &peak_week(-300),
                "1970-01-01T00:30:00Z",
                "1970-01-01T00:31:00Z"
            ),
            [(PEAK, 60_000)]
        );
    }

    #[test]
    fn periods_may_cover_the_week_without_a_default() {
        let day = rule(&WEEKDAYS, "06:00", "22:00");
        let night = rule(&WEEKDAYS, "22:00", "06:00");
        let weekend = rule(&[Day::Sat, Day::Sun], "00:00", "24:00");
        // Friday night runs into Saturday morning, which the weekend also
        // claims.
        let err = Week::new(
            &[
                ("day", Some(&day)),
                ("night", Some(&night)),
                ("weekend", Some(&weekend)),
            ],
            Offset(0),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "periods \"night\" and \"weekend\" overlap on sat 00:00–06:00"
        );
        let weekend = rule(&[Day::Sat], "06:00", "06:00");
        let week = Week::new(
            &[
                ("day", Some(&day)),
                ("night", Some(&night)),
                ("weekend", Some(&weekend)),
            ],
            Offset(0),
        );
        assert!(week.is_err(), "Sunday night to Monday morning is a gap");
        let weekend = Rule {
            days: vec![Day::Sat, Day::Sun],
            from: clock("06:00"),
            to: clock("06:00"),
        };
        let week = Week::new(
            &[
                ("day", Some(&day)),
                ("night", Some(&night)),
                ("weekend", Some(&weekend)),
            ],
            Offset(0),
        )
        .unwrap();
        assert_eq!(
            split(&week, "2026-11-30T05:00:00Z", "2026-11-30T07:00:00Z"),
            [(2, HOUR), (0, HOUR)],
            "the weekend ends Monday 06:00"
        );
    }

    #[test]
    fn gaps_are_named_by_day_and_time() {
        let day = rule(&WEEKDAYS, "08:00", "20:00");
        let err = Week::new(&[("peak", Some(&day))], Offset(0)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(
                "no period covers mon 00:00–08:00, mon 20:00–tue 08:00, tue 20:00–wed 08:00"
            ),
            "{message}"
        );
        assert!(message.contains("fri 20:00–sun 24:00"), "{message}");
    }

    #[test]
    fn overlaps_name_both_periods_and_the_time() {
        let peak = rule(&WEEKDAYS, "08:00", "20:00");
        let evening = rule(&[Day::Tue], "19:00", "23:00");
        let err = Week::new(
            &[
                ("peak", Some(&peak)),
                ("evening", Some(&evening)),
                ("rest", None),
            ],
            Offset(0),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "periods \"peak\" and \"evening\" overlap on tue 19:00–20:00"
        );
    }

    #[test]
    fn only_one_period_can_be_the_default() {
        let err = Week::new(&[("a", None), ("b", None)], Offset(0)).unwrap_err();
        assert_eq!(err, WeekError::TwoDefaults("a".into(), "b".into()));
    }

    #[test]
    fn clock_times_and_offsets_are_strict() {
        assert_eq!(clock("00:00"), Clock::MIDNIGHT);
        assert_eq!(clock("24:00"), Clock::END_OF_DAY);
        assert_eq!(clock("08:30").to_string(), "08:30");
        for bad in ["8:00", "24:01", "12:60", "12:00:00", "noon", "", "+1:00"] {
            let err = Clock::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let offset = |s: &str| Offset::try_from(s.to_owned());
        assert_eq!(offset("+01:00"), Ok(Offset(60)));
        assert_eq!(offset("-05:30"), Ok(Offset(-330)));
        assert_eq!(offset("Z"), Ok(Offset(0)));
        assert_eq!(Offset(-330).to_string(), "-05:30");
        for bad in ["01:00", "+1", "+24:00", "UTC", ""] {
            assert!(offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prorating_gives_whole_units_that_add_up() {
        let shares = |amount, pieces: &[(usize, u64)]| prorate(amount, pieces).collect::<Vec<_>>();
        assert_eq!(shares(1000, &[(0, 30), (1, 45)]), [(0, 400), (1, 600)]);
        assert_eq!(
            shares(10, &[(0, 1), (1, 1), (0, 1)]),
            [(0, 3), (1, 3), (0, 4)]
        );
        assert_eq!(shares(1, &[(0, 1), (1, 1)]), [(0, 0), (1, 1)]);
        assert_eq!(shares(u64::MAX, &[(0, 1)]), [(0, u64::MAX)]);
    }
}
