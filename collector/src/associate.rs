//! Attribution: each usage row goes to the user whose session held its
//! subscriber address at the row's time (its latest record). Sans-IO: the
//! caller passes the history and `now_ms`.
//!
//! - A session keeps what its address does for `grace` after its Stop, for
//!   flows the router exports late — unless another session has taken the
//!   address by then, which then gets them.
//! - A row nobody owns yet waits up to `late_window` (a Start can arrive
//!   after the flows: Acct-Delay-Time, retransmissions) and is retried at
//!   every flush; then it is written unattributed. Rows are never dropped.
//! - The backlog changes of each pass ([`Associator::take_changes`]) are
//!   persisted with the flush, so a killed daemon's successor resumes it
//!   ([`Associator::restore`]) instead of losing up to `late_window` of rows.

use std::net::IpAddr;

use flowtally_common::agg::Direction;

use crate::{
    sessions::{History, Owner},
    usage::UsageRow,
};

#[derive(Debug)]
pub struct Associator {
    grace_ms: u64,
    late_window_ms: u64,
    /// Rows waiting for an owner.
    backlog: Vec<Waiting>,
    next_id: u64,
    changes: BacklogChanges,
}

/// A row waiting for an owner until `give_up_ms`; `id` names it while it
/// waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: u64,
    pub give_up_ms: u64,
    pub row: UsageRow,
}

/// How the backlog changed since the last [`Associator::take_changes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BacklogChanges {
    pub entered: Vec<Waiting>,
    /// Ids of rows that left it (attributed, or given up and written).
    pub left: Vec<u64>,
}

/// What one pass decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributed {
    pub rows: usize,
    pub attributed_bytes: u64,
    pub unattributed_bytes: u64,
}

impl Associator {
    pub fn new(grace_ms: u64, late_window_ms: u64) -> Self {
        Self {
            grace_ms,
            late_window_ms,
            backlog: Vec::new(),
            next_id: 1,
            changes: BacklogChanges::default(),
        }
    }

    /// Resumes a persisted backlog (after a restart).
    pub fn restore(&mut self, waiting: Vec<Waiting>) {
        self.next_id = waiting.iter().map(|w| w.id + 1).max().unwrap_or(1);
        self.backlog = waiting;
    }

    pub fn take_changes(&mut self) -> BacklogChanges {
        std::mem::take(&mut self.changes)
    }

    /// Attributes the backlog and `rows` at `now_ms`; returns the rows to
    /// write now. With `last`, nothing waits (the daemon is stopping).
    pub fn associate(
        &mut self,
        rows: Vec<UsageRow>,
        history: &History,
        now_ms: u64,
        last: bool,
    ) -> (Vec<UsageRow>, Attributed) {
        let deadline = now_ms + self.late_window_ms;
        let waiting = std::mem::take(&mut self.backlog);
        let candidates = waiting
            .into_iter()
            .map(|w| (Some(w.id), w.give_up_ms, w.row))
            .chain(rows.into_iter().map(|row| (None, deadline, row)));
        let mut ready = Vec::new();
        let mut summary = Attributed::default();
        for (id, give_up, mut row) in candidates {
            // Transit rows have no subscriber to attribute to.
            let owner = match row.direction {
                Direction::Transit => None,
                _ => self.owner(history, row.subscriber_ip, row.last_ms),
            };
            match owner {
                Some(owner) => {
                    row.user_name = Some(owner.user_name);
                    row.session_id = Some(owner.session_id);
                    summary.attributed_bytes += row.bytes;
                }
                None if row.direction != Direction::Transit && !last && now_ms < give_up => {
                    let waiting = Waiting {
                        id: id.unwrap_or_else(|| {
                            self.next_id += 1;
                            self.next_id - 1
                        }),
                        give_up_ms: give_up,
                        row,
                    };
                    if id.is_none() {
                        self.changes.entered.push(waiting.clone());
                    }
                    self.backlog.push(waiting);
                    continue;
                }
                None => summary.unattributed_bytes += row.bytes,
            }
            self.changes.left.extend(id);
            ready.push(row);
        }
        summary.rows = ready.len();
        (ready, summary)
    }

    /// Rows waiting for an owner.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// The owner at `at_ms`, or the session that released the address
    /// less than `grace` before (nobody has taken it since, or `whois` at
    /// `at_ms` would have found them).
    fn owner(&self, history: &History, ip: IpAddr, at_ms: u64) -> Option<Owner> {
        if let Some(owner) = history.whois(ip, at_ms) {
            return Some(owner);
        }
        let before = history.whois(ip, at_ms.checked_sub(self.grace_ms)?)?;
        match before.to_ms {
            Some(stop) if stop <= at_ms => Some(before),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::sessions::{Event, EventKind};

    const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);

    fn event(kind: EventKind, user: &str, session: &str, at: u64) -> Event {
        Event {
            user_name: Some(user.into()),
            framed_ip: Some(IP),
            ..Event::new(kind, "198.18.0.1", session, at)
        }
    }

    fn row(direction: Direction, at: u64, bytes: u64) -> UsageRow {
        UsageRow::bare(at, IP.into(), direction, bytes)
    }

    fn users(rows: &[UsageRow]) -> Vec<Option<&str>> {
        rows.iter().map(|r| r.user_name.as_deref()).collect()
    }

    /// alice holds the address [10 000, 20 000), bob from 21 000.
    fn history() -> History {
        let mut history = History::new();
        history.apply(&event(EventKind::Start, "alice", "a1", 10_000));
        history.apply(&event(EventKind::Stop, "alice", "a1", 20_000));
        history.apply(&event(EventKind::Start, "bob", "b1", 21_000));
        history
    }

    #[test]
    fn rows_go_to_the_session_holding_the_address_then() {
        let mut associator = Associator::new(5_000, 30_000);
        let rows = vec![
            row(Direction::Up, 15_000, 100),
            row(Direction::Down, 25_000, 7),
        ];
        let (ready, summary) = associator.associate(rows, &history(), 100_000, false);
        assert_eq!(users(&ready), [Some("alice"), Some("bob")]);
        assert_eq!(ready[0].session_id.as_deref(), Some("a1"));
        assert_eq!(summary.attributed_bytes, 107);
    }

    #[test]
    fn a_stopped_session_keeps_late_flows_for_the_grace_period_unless_reused() {
        let mut associator = Associator::new(5_000, 0);
        let rows = vec![row(Direction::Up, 20_500, 1), row(Direction::Up, 21_500, 2)];
        let (ready, _) = associator.associate(rows, &history(), 100_000, false);
        assert_eq!(
            users(&ready),
            [Some("alice"), Some("bob")],
            "bob took it at 21 000"
        );
        let mut alone = History::new();
        alone.apply(&event(EventKind::Start, "alice", "a1", 10_000));
        alone.apply(&event(EventKind::Stop, "alice", "a1", 20_000));
        let rows = vec![row(Direction::Up, 24_999, 1), row(Direction::Up, 25_000, 2)];
        let (ready, summary) = associator.associate(rows, &alone, 100_000, false);
        assert_eq!(
            users(&ready),
            [Some("alice"), None],
            "grace ends at stop + 5 s"
        );
        assert_eq!(summary.unattributed_bytes, 2);
    }

    #[test]
    fn an_unowned_row_waits_for_a_late_start_then_gives_up() {
        let mut associator = Associator::new(0, 30_000);
        let mut history = History::new();
        let (ready, _) =
            associator.associate(vec![row(Direction::Up, 50_000, 9)], &history, 60_000, false);
        assert!(ready.is_empty());
        assert_eq!(associator.backlog(), 1);
        history.apply(&event(EventKind::Start, "carol", "c1", 49_000));
        let (ready, _) = associator.associate(Vec::new(), &history, 70_000, false);
        assert_eq!(
            users(&ready),
            [Some("carol")],
            "the late Start arrived in time"
        );

        let (ready, _) = associator.associate(
            vec![row(Direction::Up, 10, 3)],
            &History::new(),
            60_000,
            false,
        );
        assert!(ready.is_empty());
        let (ready, _) = associator.associate(Vec::new(), &History::new(), 89_999, false);
        assert!(ready.is_empty(), "still within the late window");
        let (ready, summary) = associator.associate(Vec::new(), &History::new(), 90_000, false);
        assert_eq!(users(&ready), [None], "written unattributed, never dropped");
        assert_eq!(summary.unattributed_bytes, 3);
    }

    #[test]
    fn backlog_changes_name_what_entered_and_left_and_a_restored_backlog_resumes() {
        let mut associator = Associator::new(0, 30_000);
        let rows = vec![
            row(Direction::Up, 50_000, 9),
            row(Direction::Down, 50_000, 4),
        ];
        associator.associate(rows, &History::new(), 60_000, false);
        let changes = associator.take_changes();
        assert_eq!(
            changes.entered.iter().map(|w| w.id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(changes.left.is_empty());
        assert_eq!(associator.take_changes(), BacklogChanges::default());

        // A successor restores the persisted backlog and carries on.
        let mut successor = Associator::new(0, 30_000);
        successor.restore(changes.entered);
        let mut history = History::new();
        history.apply(&event(EventKind::Start, "carol", "c1", 49_000));
        let (ready, _) = successor.associate(
            vec![
                row(Direction::Transit, 50_000, 1),
                row(Direction::Up, 10, 2),
            ],
            &history,
            70_000,
            false,
        );
        assert_eq!(users(&ready), [Some("carol"), Some("carol"), None]);
        let changes = successor.take_changes();
        assert_eq!(changes.left, [1, 2]);
        assert_eq!(
            changes.entered.iter().map(|w| w.id).collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn transit_rows_and_the_last_flush_never_wait() {
        let mut associator = Associator::new(0, 30_000);
        let (ready, _) =
            associator.associate(vec![row(Direction::Transit, 5, 1)], &history(), 6, false);
        assert_eq!(users(&ready), [None]);
        associator.associate(vec![row(Direction::Up, 5, 1)], &History::new(), 6, false);
        let (ready, _) = associator.associate(Vec::new(), &History::new(), 7, true);
        assert_eq!(ready.len(), 1);
        assert_eq!(associator.backlog(), 0);
    }
}
