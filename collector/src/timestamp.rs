//! Times as people write them, on the command line and in the HTTP API:
//! RFC 3339 (`2026-11-21T15:00:00Z`, any UTC offset, fractional seconds),
//! Unix seconds, `now`, or a time before now (`-1h`, `-30m`, `-1h30m`,
//! `-7d`, also written `now-1h`). Relative times are resolved against a
//! `now` the caller passes in ([`TimeArg::at`]): parsing reads no clock.

use std::{fmt, str::FromStr, time::UNIX_EPOCH};

/// The last moment RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const MAX_MS: u64 = 253_402_300_799_999;

/// A moment as Unix milliseconds, at most [`MAX_MS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

/// A time as written: a moment, or a distance before now (0 for `now`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    At(Timestamp),
    /// Milliseconds before now.
    Ago(u64),
}

impl TimeArg {
    /// The moment this names when it is `now`; a relative time before the
    /// epoch is the epoch.
    pub fn at(self, now: Timestamp) -> Timestamp {
        match self {
            Self::At(moment) => moment,
            Self::Ago(ms) => Timestamp(now.0.saturating_sub(ms)),
        }
    }
}

impl FromStr for TimeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "now" {
            return Ok(Self::Ago(0));
        }
        let Some(distance) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) else {
            return s.parse().map(Self::At);
        };
        // humantime reads `1h30m`, `90s`, `7d`, `2weeks`; a sign or a
        // second minus is no distance.
        let bad = || {
            format!(
                "{s:?} is neither RFC 3339 (2026-11-21T15:00:00Z), Unix seconds, `now`, nor a \
                 time before now such as -1h or -30m"
            )
        };
        if !distance.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad());
        }
        let distance = humantime::parse_duration(distance).map_err(|_| bad())?;
        u64::try_from(distance.as_millis())
            .ok()
            .filter(|&ms| ms <= MAX_MS)
            .map(Self::Ago)
            .ok_or_else(bad)
    }
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is neither RFC 3339 (2026-11-21T15:00:00Z), Unix seconds, `now`, nor a \
                 time before now such as -1h or -30m"
            )
        };
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = s.parse().map_err(|_| bad())?;
            return secs
                .checked_mul(1000)
                .filter(|&ms| ms <= MAX_MS)
                .map(Timestamp)
                .ok_or_else(bad);
        }
        // humantime reads UTC only: apply a numeric offset ourselves.
        let (local, offset_s) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
            Some((local, tz))
                if matches!(tz.as_bytes()[0], b'+' | b'-') && tz.as_bytes()[3] == b':' =>
            {
                let hours: i64 = tz[1..3].parse().map_err(|_| bad())?;
                let minutes: i64 = tz[4..6].parse().map_err(|_| bad())?;
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                (local, sign * (hours * 3600 + minutes * 60))
            }
            _ => (
                s.strip_suffix('Z')
                    .or_else(|| s.strip_suffix('z'))
                    .ok_or_else(bad)?,
                0,
            ),
        };
        let utc = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
        let ms = utc
            .duration_since(UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_millis() as i64;
        u64::try_from(ms - offset_s * 1000)
            .map(Timestamp)
            .map_err(|_| bad())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc_or_with_an_offset_and_unix_seconds_agree() {
        let utc: Timestamp = "2026-11-21T15:00:00Z".parse().unwrap();
        assert_eq!(utc.0, 1_795_273_200_000);
        assert_eq!(
            "2026-11-21T16:30:00+01:30".parse::<Timestamp>().unwrap(),
            utc
        );
        assert_eq!(
            "2026-11-21T10:00:00-05:00".parse::<Timestamp>().unwrap(),
            utc
        );
        assert_eq!("1795273200".parse::<Timestamp>().unwrap(), utc);
        assert_eq!(
            "2026-11-21T15:00:00.250Z".parse::<Timestamp>().unwrap().0,
            utc.0 + 250
        );
        assert_eq!(utc.to_string(), "2026-11-21T15:00:00.000Z");
    }

    #[test]
    fn now_and_times_before_it_resolve_against_the_given_now() {
        let now = Timestamp(1_795_273_200_000);
        let at = |s: &str| s.parse::<TimeArg>().unwrap().at(now);
        assert_eq!(at("now"), now);
        assert_eq!(at("-1h"), Timestamp(now.0 - 3_600_000));
        assert_eq!(at("now-30m"), Timestamp(now.0 - 1_800_000));
        assert_eq!(at("-1h30m"), Timestamp(now.0 - 5_400_000));
        assert_eq!(at("-7d"), Timestamp(now.0 - 7 * 86_400_000));
        assert_eq!(at("-500ms"), Timestamp(now.0 - 500));
        assert_eq!(at("1795273200"), now, "absolute times ignore now");
        assert_eq!(at("2026-11-21T15:00:00Z"), now);
        assert_eq!(
            "-100000d".parse::<TimeArg>().unwrap().at(Timestamp(5)),
            Timestamp(0),
            "before the epoch is the epoch"
        );
    }

    #[test]
    fn a_relative_time_needs_a_distance() {
        for bad in ["-", "now-", "--1h", "-1x", "now+1h", "-h", "- 1h", "Now"] {
            let err = bad.parse::<TimeArg>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("-30m"), "{err}");
        }
    }

    #[test]
    fn anything_else_is_an_error_that_quotes_it() {
        for bad in [
            "",
            "yesterday",
            "2026-11-21",
            "2026-11-21T15:00:00",
            "-5",
            "253402300800",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
