//! When SQLite refuses writes (full disk, read-only filesystem, a lock held
//! by another program): what a writer keeps and what it tells the log.
//!
//! Rules:
//! - An outage runs from the first failed write to the next success. The
//!   log gets one line when it starts and one when it ends, never one per
//!   attempt: a full disk retried every flush would otherwise add a line
//!   every few seconds, to the journal of a machine whose disk is full.
//! - Usage rows SQLite refused are held in memory and written first by
//!   the next attempt, up to a bound of rows. Beyond it the newest rows are
//!   dropped (those already waiting keep their place), and returned as
//!   [`Dropped`] for a counter and, once per outage, a log line: a loss is
//!   never silent.

use crate::usage::UsageRow;

/// One writer's outage, if any.
#[derive(Debug, Default)]
pub struct Outage {
    current: Option<Incident>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incident {
    pub since_ms: u64,
    /// Of the first failure (`sink::failure_cause`).
    pub cause: &'static str,
    /// Failed attempts so far.
    pub attempts: u64,
    /// Rows dropped in this outage.
    pub dropped: Dropped,
    /// NAT binding changes dropped in this outage.
    pub dropped_nat_changes: u64,
}

impl Outage {
    /// A failed write at `now_ms`; true when it starts an outage.
    pub fn failed(&mut self, now_ms: u64, cause: &'static str) -> bool {
        match &mut self.current {
            Some(incident) => {
                incident.attempts += 1;
                false
            }
            None => {
                self.current = Some(Incident {
                    since_ms: now_ms,
                    cause,
                    attempts: 1,
                    dropped: Dropped::default(),
                    dropped_nat_changes: 0,
                });
                true
            }
        }
    }

    /// Rows were dropped; true the first time in this outage.
    pub fn dropped(&mut self, dropped: Dropped) -> bool {
        let Some(incident) = &mut self.current else {
            return false;
        };
        let first = incident.dropped.rows == 0;
        incident.dropped.rows += dropped.rows;
        incident.dropped.bytes += dropped.bytes;
        first && dropped.rows > 0
    }

    /// `n` NAT binding changes were dropped; true the first time in this
    /// outage (or outside one: the binding write failed before the usage
    /// write could start one).
    pub fn dropped_nat_changes(&mut self, n: u64) -> bool {
        match &mut self.current {
            Some(incident) => {
                let first = incident.dropped_nat_changes == 0;
                incident.dropped_nat_changes += n;
                first && n > 0
            }
            None => n > 0,
        }
    }

    /// A successful write: the outage it ends, if any.
    pub fn succeeded(&mut self) -> Option<Incident> {
        self.current.take()
    }

    pub fn is_down(&self) -> bool {
        self.current.is_some()
    }
}

/// Usage rows SQLite refused, for the next attempt.
#[derive(Debug)]
pub struct Held {
    rows: Vec<UsageRow>,
    max_rows: usize,
}

/// Rows given up because the bound was reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub rows: u64,
    pub bytes: u64,
}

impl Held {
    pub fn new(max_rows: usize) -> Self {
        Self {
            rows: Vec::new(),
            max_rows,
        }
    }

    /// The rows held, oldest first, to write before any newer.
    pub fn take(&mut self) -> Vec<UsageRow> {
        std::mem::take(&mut self.rows)
    }

    /// Keeps `rows` (the held ones first) after a failed write, up to the
    /// bound.
    pub fn keep(&mut self, mut rows: Vec<UsageRow>) -> Dropped {
        let over = rows.split_off(rows.len().min(self.max_rows));
        self.rows = rows;
        Dropped {
            rows: over.len() as u64,
            bytes: over.iter().map(|row| row.bytes).sum(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.rows.iter().map(|row| row.bytes).sum()
    }
}

/// Keeps the first `max` of `held` (the oldest: replayed in order once
/// SQLite accepts writes again); returns how many newer ones were dropped.
pub fn keep_at_most<T>(held: &mut Vec<T>, max: usize) -> usize {
    let over = held.len().saturating_sub(max);
    held.truncate(max);
    over
}

#[cfg(test)]
mod tests {
    use flowtally_common::agg::Direction;

    use super::*;

    fn row(bytes: u64) -> UsageRow {
        UsageRow::bare(
            60_000,
            "198.18.100.1".parse().unwrap(),
            Direction::Down,
            bytes,
        )
    }

    #[test]
    fn an_outage_starts_once_and_ends_once_however_many_attempts_fail() {
        let mut outage = Outage::default();
        assert_eq!(outage.succeeded(), None, "no outage: nothing ends");
        assert!(outage.failed(1_000, "disk_full"));
        assert!(!outage.failed(6_000, "locked"), "the same outage goes on");
        assert!(!outage.failed(11_000, "disk_full"));
        assert!(outage.is_down());
        assert_eq!(
            outage.succeeded(),
            Some(Incident {
                since_ms: 1_000,
                cause: "disk_full",
                attempts: 3,
                dropped: Dropped::default(),
                dropped_nat_changes: 0,
            })
        );
        assert!(!outage.is_down());
        assert!(outage.failed(20_000, "read_only"), "a new outage");
    }

    #[test]
    fn drops_are_announced_once_per_outage_and_summed_for_its_end() {
        let some = |rows, bytes| Dropped { rows, bytes };
        let mut outage = Outage::default();
        assert!(
            !outage.dropped(some(1, 10)),
            "no outage, nothing to announce"
        );
        outage.failed(0, "disk_full");
        assert!(!outage.dropped(Dropped::default()), "nothing dropped yet");
        assert!(outage.dropped(some(2, 20)));
        assert!(!outage.dropped(some(3, 30)));
        assert_eq!(outage.succeeded().unwrap().dropped, some(5, 50));
        outage.failed(10, "disk_full");
        assert!(
            outage.dropped(some(1, 1)),
            "announced again in the next outage"
        );
    }

    #[test]
    fn held_nat_changes_keep_the_oldest_and_their_drops_are_told_once_per_outage() {
        let mut changes: Vec<u32> = (1..=5).collect();
        assert_eq!(keep_at_most(&mut changes, 3), 2);
        assert_eq!(changes, [1, 2, 3], "the oldest, replayed in order");
        assert_eq!(keep_at_most(&mut changes, 3), 0);
        let mut outage = Outage::default();
        assert!(outage.dropped_nat_changes(2), "outside an outage: told");
        assert!(outage.failed(1_000, "disk_full"));
        assert!(!outage.dropped_nat_changes(0));
        assert!(outage.dropped_nat_changes(4), "the first in this outage");
        assert!(!outage.dropped_nat_changes(1));
        assert_eq!(outage.succeeded().unwrap().dropped_nat_changes, 5);
        assert!(outage.failed(9_000, "disk_full"));
        assert!(outage.dropped_nat_changes(1), "a new outage tells again");
    }

    #[test]
    fn held_rows_keep_their_order_and_the_newest_beyond_the_bound_are_counted() {
        let mut held = Held::new(3);
        assert_eq!(held.keep(vec![row(1), row(2)]), Dropped::default());
        let mut rows = held.take();
        assert!(held.is_empty());
        rows.extend([row(30), row(400), row(5_000)]);
        let dropped = held.keep(rows);
        assert_eq!(
            dropped,
            Dropped {
                rows: 2,
                bytes: 5_400
            }
        );
        assert_eq!((held.len(), held.bytes()), (3, 33));
        assert_eq!(
            held.take().iter().map(|r| r.bytes).collect::<Vec<_>>(),
            [1, 2, 30]
        );
    }
}
