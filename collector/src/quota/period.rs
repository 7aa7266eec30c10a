//! Calendar periods (day, week from Monday, month) at a fixed UTC offset,
//! as a tariff's clock: no time-zone database, no daylight saving time.

use crate::{config::PeriodKind, report::periods::Offset};

const DAY_MS: i64 = 86_400_000;

/// Which calendar a quota counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calendar {
    pub kind: PeriodKind,
    pub offset: Offset,
}

/// `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Calendar {
    /// The period holding `at_ms`.
    pub fn period(&self, at_ms: u64) -> Period {
        let offset_ms = i64::from(self.offset.0) * 60_000;
        let day = (at_ms as i64 + offset_ms).div_euclid(DAY_MS);
        let (first, next) = match self.kind {
            PeriodKind::Day => (day, day + 1),
            PeriodKind::Week => {
                // 1970-01-01 was a Thursday, three days after a Monday.
                let monday = day - (day + 3).rem_euclid(7);
                (monday, monday + 7)
            }
            PeriodKind::Month => {
                let (year, month, _) = civil_from_days(day);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    days_from_civil(year, month, 1),
                    days_from_civil(next_year, next_month, 1),
                )
            }
        };
        let ms = |day: i64| (day * DAY_MS - offset_ms).max(0) as u64;
        Period {
            start_ms: ms(first),
            end_ms: ms(next),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().0
    }

    fn period(kind: PeriodKind, offset: &str, at: &str) -> (u64, u64) {
        let offset = Offset::try_from(offset.to_owned()).unwrap();
        let p = Calendar { kind, offset }.period(ms(at));
        (p.start_ms, p.end_ms)
    }

    #[test]
    fn a_day_runs_from_local_midnight_to_midnight() {
        assert_eq!(
            period(PeriodKind::Day, "+00:00", "2026-12-06T17:30:00Z"),
            (ms("2026-12-06T00:00:00Z"), ms("2026-12-07T00:00:00Z"))
        );
        // 23:30 UTC is already the 7th at +01:00.
        assert_eq!(
            period(PeriodKind::Day, "+01:00", "2026-12-06T23:30:00Z"),
            (
                ms("2026-12-07T00:00:00+01:00"),
                ms("2026-12-08T00:00:00+01:00")
            )
        );
        assert_eq!(
            period(PeriodKind::Day, "-05:30", "2026-12-06T03:00:00Z"),
            (
                ms("2026-12-05T00:00:00-05:30"),
                ms("2026-12-06T00:00:00-05:30")
            )
        );
    }

    #[test]
    fn a_week_runs_from_monday() {
        // 2026-12-06 is a Sunday.
        assert_eq!(
            period(PeriodKind::Week, "+00:00", "2026-12-06T17:30:00Z"),
            (ms("2026-11-30T00:00:00Z"), ms("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            period(PeriodKind::Week, "+02:00", "2026-12-06T22:30:00Z"),
            (
                ms("2026-12-07T00:00:00+02:00"),
                ms("2026-12-14T00:00:00+02:00")
            )
        );
    }

    #[test]
    fn a_month_runs_from_the_first_across_years_and_leap_days() {
        assert_eq!(
            period(PeriodKind::Month, "+00:00", "2026-12-06T17:30:00Z"),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            period(PeriodKind::Month, "+00:00", "2028-02-29T23:59:59Z"),
            (ms("2028-02-01T00:00:00Z"), ms("2028-03-01T00:00:00Z"))
        );
        assert_eq!(
            period(PeriodKind::Month, "+01:00", "2026-12-31T23:30:00Z"),
            (
                ms("2027-01-01T00:00:00+01:00"),
                ms("2027-02-01T00:00:00+01:00")
            )
        );
        for days in [-1, 0, 59, 365 * 400, 20_000, 738_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
