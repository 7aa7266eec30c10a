//! Times on the command line: RFC 3339 (`2026-11-21T15:00:00Z`, any UTC
//! offset, fractional seconds) or Unix seconds.

use std::{fmt, str::FromStr, time::UNIX_EPOCH};

/// The last moment RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const MAX_MS: u64 = 253_402_300_799_999;

/// A moment as Unix milliseconds, at most [`MAX_MS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is neither RFC 3339 (2026-11-21T15:00:00Z) nor Unix seconds");
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
