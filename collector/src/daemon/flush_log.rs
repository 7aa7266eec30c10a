//! What the flush loop tells the log at INFO. Every flush is logged at
//! DEBUG; at INFO, a line per flush would repeat "nothing" every few
//! seconds on an idle daemon (17 280 lines a day at 5 s) and bury a busy
//! one's journal. So, at INFO:
//! - the first flush with flow records after start, or after an idle
//!   period, at once: flows are arriving;
//! - one summary per period (`log_summary`) of what its flushes wrote;
//! - a period in which nothing was written: one "idle" line.

use std::time::Duration;

use super::flush::Flushed;

pub struct FlushLog {
    period_ms: u64,
    period_start_ms: u64,
    /// Sums of the period's flushes.
    flushes: u64,
    aggregates: u64,
    rows: u64,
    bytes: u64,
    attributed_bytes: u64,
    overflow_records: u64,
    /// Whether activity since start or the last idle line has been logged.
    announced: bool,
}

impl FlushLog {
    pub fn new(period_ms: u64, now_ms: u64) -> Self {
        Self {
            period_ms,
            period_start_ms: now_ms,
            flushes: 0,
            aggregates: 0,
            rows: 0,
            bytes: 0,
            attributed_bytes: 0,
            overflow_records: 0,
            announced: false,
        }
    }

    /// The INFO line for a flush at `now_ms` that wrote `flushed`, if any.
    pub fn flushed(&mut self, now_ms: u64, flushed: &Flushed) -> Option<String> {
        let active = flushed.aggregates > 0 || flushed.rows > 0;
        self.flushes += 1;
        self.aggregates += flushed.aggregates as u64;
        self.rows += flushed.rows as u64;
        self.bytes += flushed.bytes;
        self.attributed_bytes += flushed.attributed_bytes;
        self.overflow_records += flushed.overflow_records;
        // Arrival first: a summary due at the same flush waits for the next.
        if active && !self.announced {
            self.announced = true;
            return Some(format!("flows arriving: first flush with usage: {flushed}"));
        }
        if now_ms.saturating_sub(self.period_start_ms) >= self.period_ms {
            return Some(self.summary(now_ms, flushed.backlog));
        }
        None
    }

    /// Closes the period at `now_ms`.
    fn summary(&mut self, now_ms: u64, backlog: usize) -> String {
        let period = humantime::format_duration(Duration::from_millis(
            now_ms.saturating_sub(self.period_start_ms) / 1000 * 1000,
        ));
        let line = if self.aggregates == 0 && self.rows == 0 {
            self.announced = false;
            format!("idle: no flow records in the last {period}")
        } else {
            self.announced = true;
            let share = 100.0 * self.attributed_bytes as f64 / self.bytes.max(1) as f64;
            format!(
                "last {period}: {} flushes, {} new aggregates ({} through the overflow ring); \
                 wrote {} usage rows, {} bytes, {share:.1}% attributed, {} bytes unattributed; \
                 {backlog} rows waiting for a late session",
                self.flushes,
                self.aggregates,
                self.overflow_records,
                self.rows,
                self.bytes,
                self.bytes - self.attributed_bytes.min(self.bytes),
            )
        };
        *self = Self {
            announced: self.announced,
            ..Self::new(self.period_ms, now_ms)
        };
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn idle() -> Flushed {
        Flushed::default()
    }

    fn wrote(rows: usize, bytes: u64, attributed_bytes: u64) -> Flushed {
        Flushed {
            aggregates: rows,
            rows,
            bytes,
            attributed_bytes,
            ..Flushed::default()
        }
    }

    /// The lines logged for flushes every 5 s from `from_ms` for `ms`.
    fn run(log: &mut FlushLog, from_ms: u64, ms: u64, flushed: &Flushed) -> Vec<String> {
        (1..=ms / 5_000)
            .filter_map(|n| log.flushed(from_ms + n * 5_000, flushed))
            .collect()
    }

    #[test]
    fn an_idle_daemon_logs_one_line_per_period_not_per_flush() {
        let mut log = FlushLog::new(10 * MINUTE, 0);
        let lines = run(&mut log, 0, 60 * MINUTE, &idle());
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("idle:")), "{lines:?}");
        assert_eq!(lines[0], "idle: no flow records in the last 10m");
    }

    #[test]
    fn the_first_usage_is_logged_at_once_then_summed_per_period() {
        let mut log = FlushLog::new(10 * MINUTE, 0);
        let lines = run(&mut log, 0, 20 * MINUTE, &wrote(3, 1_000, 750));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("flows arriving:"), "{lines:?}");
        assert_eq!(
            lines[1],
            "last 10m: 120 flushes, 360 new aggregates (0 through the overflow ring); wrote 360 \
             usage rows, 120000 bytes, 75.0% attributed, 30000 bytes unattributed; 0 rows \
             waiting for a late session"
        );
        assert!(lines[2].starts_with("last 10m: 120 flushes"), "{lines:?}");
    }

    #[test]
    fn arrival_at_the_end_of_a_period_is_announced_and_the_summary_follows() {
        let mut log = FlushLog::new(10 * MINUTE, 0);
        assert_eq!(log.flushed(5 * MINUTE, &idle()), None);
        let at_end = log.flushed(10 * MINUTE, &wrote(1, 10, 10)).unwrap();
        assert!(at_end.starts_with("flows arriving:"), "{at_end}");
        let next = log.flushed(10 * MINUTE + 5_000, &idle()).unwrap();
        assert!(next.starts_with("last 10m 5s: 3 flushes, 1 new"), "{next}");
    }

    #[test]
    fn usage_after_an_idle_period_is_announced_again() {
        let mut log = FlushLog::new(10 * MINUTE, 0);
        run(&mut log, 0, 5 * MINUTE, &wrote(1, 10, 10));
        let idle_then = run(&mut log, 5 * MINUTE, 20 * MINUTE, &idle());
        assert_eq!(idle_then.len(), 2, "a summary, then idle: {idle_then:?}");
        assert!(idle_then[1].starts_with("idle:"));
        let again = run(&mut log, 25 * MINUTE, 4 * MINUTE, &wrote(1, 10, 0));
        assert_eq!(again.len(), 1);
        assert!(again[0].starts_with("flows arriving:"), "{again:?}");
    }
}
