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
//! - A pass can go in steps ([`Associator::begin`], [`Associator::step`]),
//!   so that the caller can let go of the history between them: RADIUS
//!   requests wait for it, and a flush of a million rows takes a second.
//! - Through carrier-grade NAT: a row whose subscriber address is in a
//!   CGNAT pool is the public side of someone's traffic. Its port and
//!   protocol find the NAT binding (VRF 0) that held them at the row's
//!   time, and the binding's inside address the session, with the same
//!   grace after a binding's end as after a Stop, and before its start
//!   (export times of whole seconds, clocks that differ), as long as no
//!   other binding held the port. A row without port or
//!   protocol (the aggregation profile dropped them) cannot be attributed
//!   and is written at once; one without a binding or an inside session
//!   waits like any other. Why pool rows stay unattributed is counted
//!   ([`NatSummary`]).

use std::net::IpAddr;

use flowtally_common::agg::Direction;
use ipnet::IpNet;

use crate::{
    nat::{Binding, Bindings},
    sessions::{History, Owner},
    usage::{Unattributed, UsageRow},
};

#[derive(Debug)]
pub struct Associator {
    grace_ms: u64,
    late_window_ms: u64,
    /// Rows waiting for an owner.
    backlog: Vec<Waiting>,
    next_id: u64,
    changes: BacklogChanges,
    /// CGNAT pools: their rows are attributed through NAT bindings.
    pools: Vec<IpNet>,
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

/// A pass under way: the backlog and a flush's rows, each tried once.
#[derive(Debug)]
pub struct Pass {
    /// `(id while waiting, give up at, row)`, the backlog first.
    candidates: std::vec::IntoIter<(Option<u64>, u64, UsageRow)>,
    now_ms: u64,
    last: bool,
    ready: Vec<UsageRow>,
    summary: Attributed,
}

impl Pass {
    pub fn is_done(&self) -> bool {
        self.candidates.len() == 0
    }

    /// The rows to write now, and what the pass decided.
    pub fn finish(mut self) -> (Vec<UsageRow>, Attributed) {
        self.summary.rows = self.ready.len();
        (self.ready, self.summary)
    }
}

/// What one pass decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributed {
    pub rows: usize,
    pub attributed_bytes: u64,
    pub unattributed_bytes: u64,
    /// Of those, the rows of CGNAT pools.
    pub nat: NatSummary,
}

/// What became of the CGNAT pools' rows written in one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSummary {
    pub attributed_bytes: u64,
    /// Unattributed: the row has no port or protocol.
    pub no_port_bytes: u64,
    /// Unattributed: no binding held the port then.
    pub no_binding_bytes: u64,
    /// Unattributed: the binding's inside address had no session.
    pub no_session_bytes: u64,
    /// Rows written unattributed for want of a binding.
    pub lookups_without_binding: u64,
}

impl NatSummary {
    /// Unattributed bytes by reason (metric label).
    pub fn unattributed(&self) -> [(&'static str, u64); 3] {
        [
            ("no_port", self.no_port_bytes),
            ("no_binding", self.no_binding_bytes),
            ("no_session", self.no_session_bytes),
        ]
    }
}

impl Associator {
    pub fn new(grace_ms: u64, late_window_ms: u64) -> Self {
        Self {
            grace_ms,
            late_window_ms,
            backlog: Vec::new(),
            next_id: 1,
            changes: BacklogChanges::default(),
            pools: Vec::new(),
        }
    }

    /// Attributes the rows of these CGNAT pools through NAT bindings.
    pub fn with_nat_pools(mut self, pools: Vec<IpNet>) -> Self {
        self.pools = pools;
        self
    }

    /// Resumes a persisted backlog (after a restart).
    pub fn restore(&mut self, waiting: Vec<Waiting>) {
        self.next_id = waiting.iter().map(|w| w.id + 1).max().unwrap_or(1);
        self.backlog = waiting;
    }

    pub fn take_changes(&mut self) -> BacklogChanges {
        std::mem::take(&mut self.changes)
    }

    /// Attributes the backlog and `rows` at `now_ms`, through `bindings`
    /// for the pools' rows; returns the rows to write now. With `last`,
    /// nothing waits (the daemon is stopping).
    pub fn associate(
        &mut self,
        rows: Vec<UsageRow>,
        history: &History,
        bindings: &Bindings,
        now_ms: u64,
        last: bool,
    ) -> (Vec<UsageRow>, Attributed) {
        let mut pass = self.begin(rows, now_ms, last);
        self.step(&mut pass, history, bindings, usize::MAX);
        pass.finish()
    }

    /// [`Self::associate`] in steps: the pass over the backlog and `rows`.
    pub fn begin(&mut self, rows: Vec<UsageRow>, now_ms: u64, last: bool) -> Pass {
        let deadline = now_ms + self.late_window_ms;
        let waiting = std::mem::take(&mut self.backlog);
        let candidates: Vec<_> = waiting
            .into_iter()
            .map(|w| (Some(w.id), w.give_up_ms, w.row))
            .chain(rows.into_iter().map(|row| (None, deadline, row)))
            .collect();
        Pass {
            candidates: candidates.into_iter(),
            now_ms,
            last,
            ready: Vec::new(),
            summary: Attributed::default(),
        }
    }

    /// Tries the next `max` rows of `pass`.
    pub fn step(&mut self, pass: &mut Pass, history: &History, bindings: &Bindings, max: usize) {
        let (now_ms, last) = (pass.now_ms, pass.last);
        let summary = &mut pass.summary;
        for (id, give_up, mut row) in pass.candidates.by_ref().take(max) {
            let pooled = self.in_pool(row.subscriber_ip);
            match self.find(history, bindings, &row, pooled) {
                Ok(owner) => {
                    row.user_name = Some(owner.user_name);
                    row.session_id = Some(owner.session_id);
                    summary.attributed_bytes += row.bytes;
                    if pooled {
                        summary.nat.attributed_bytes += row.bytes;
                    }
                }
                Err(
                    Unattributed::NoSession
                    | Unattributed::NatNoBinding
                    | Unattributed::NatNoSession,
                ) if !last && now_ms < give_up => {
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
                Err(miss) => {
                    row.unattributed = Some(miss);
                    summary.unattributed_bytes += row.bytes;
                    let nat = &mut summary.nat;
                    match miss {
                        Unattributed::NatNoPort => nat.no_port_bytes += row.bytes,
                        Unattributed::NatNoBinding => {
                            nat.no_binding_bytes += row.bytes;
                            nat.lookups_without_binding += 1;
                        }
                        Unattributed::NatNoSession => nat.no_session_bytes += row.bytes,
                        Unattributed::Transit | Unattributed::NoSession => {}
                    }
                }
            }
            self.changes.left.extend(id);
            pass.ready.push(row);
        }
    }

    /// Who owns `row` now, or why nobody does.
    fn find(
        &self,
        history: &History,
        bindings: &Bindings,
        row: &UsageRow,
        pooled: bool,
    ) -> Result<Owner, Unattributed> {
        // Transit rows have no subscriber to attribute to.
        if row.direction == Direction::Transit {
            return Err(Unattributed::Transit);
        }
        let at = row.last_ms;
        if !pooled {
            return self
                .owner(history, row.subscriber_ip, at)
                .ok_or(Unattributed::NoSession);
        }
        let (Some(port), Some(protocol)) = (row.subscriber_port, row.protocol) else {
            return Err(Unattributed::NatNoPort);
        };
        let binding = self
            .binding(bindings, row.subscriber_ip, protocol, port, at)
            .ok_or(Unattributed::NatNoBinding)?;
        self.owner(history, binding.inside_ip, at)
            .ok_or(Unattributed::NatNoSession)
    }

    fn in_pool(&self, ip: IpAddr) -> bool {
        self.pools.iter().any(|pool| pool.contains(&ip))
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

    /// The binding of the public `port` at `at_ms`; else one that ended
    /// less than `grace` before (nobody has taken the port since); else the
    /// first to start after it, within `grace` (nobody held the port then:
    /// v9 record times come out up to a second early, their header having
    /// whole seconds, and the NAT's clock is not the router's).
    fn binding(
        &self,
        bindings: &Bindings,
        ip: IpAddr,
        protocol: u8,
        port: u16,
        at_ms: u64,
    ) -> Option<Binding> {
        if let Some(binding) = bindings.lookup(0, ip, protocol, port, at_ms) {
            return Some(binding);
        }
        let late = at_ms
            .checked_sub(self.grace_ms)
            .and_then(|before| bindings.lookup(0, ip, protocol, port, before))
            .filter(|before| before.to_ms <= at_ms);
        late.or_else(|| {
            bindings.next_start(
                0,
                ip,
                protocol,
                port,
                at_ms,
                at_ms.saturating_add(self.grace_ms),
            )
        })
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

    fn no_nat() -> Bindings {
        Bindings::new(crate::nat::Limits {
            max_lifetime_ms: 1_000_000,
            memory_retention_ms: 1_000_000,
            max_bindings: 100,
        })
    }

    fn users(rows: &[UsageRow]) -> Vec<Option<&str>> {
        rows.iter().map(|r| r.user_name.as_deref()).collect()
    }

    fn reasons(rows: &[UsageRow]) -> Vec<Option<Unattributed>> {
        rows.iter().map(|r| r.unattributed).collect()
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
        let (ready, summary) = associator.associate(rows, &history(), &no_nat(), 100_000, false);
        assert_eq!(users(&ready), [Some("alice"), Some("bob")]);
        assert_eq!(ready[0].session_id.as_deref(), Some("a1"));
        assert_eq!(summary.attributed_bytes, 107);
    }

    #[test]
    fn a_pass_in_steps_decides_as_one_pass_does_and_sees_sessions_started_between_steps() {
        let rows = || {
            vec![
                row(Direction::Up, 15_000, 100),
                row(Direction::Down, 25_000, 7),
                row(Direction::Up, 30_000, 3),
                row(Direction::Transit, 15_000, 1),
            ]
        };
        let mut whole = Associator::new(5_000, 30_000);
        let expected = whole.associate(rows(), &history(), &no_nat(), 100_000, false);
        let mut stepped = Associator::new(5_000, 30_000);
        let mut pass = stepped.begin(rows(), 100_000, false);
        let mut steps = 0;
        while !pass.is_done() {
            stepped.step(&mut pass, &history(), &no_nat(), 1);
            steps += 1;
        }
        assert_eq!(steps, 4);
        assert_eq!(pass.finish(), expected);
        assert_eq!(stepped.take_changes(), whole.take_changes());

        // carol starts between the steps: the rows after see her.
        let mut history = History::new();
        let mut associator = Associator::new(0, 0);
        let mut pass = associator.begin(rows()[..3].to_vec(), 100_000, true);
        associator.step(&mut pass, &history, &no_nat(), 1);
        history.apply(&event(EventKind::Start, "carol", "c1", 20_000));
        associator.step(&mut pass, &history, &no_nat(), 2);
        let (ready, _) = pass.finish();
        assert_eq!(users(&ready), [None, Some("carol"), Some("carol")]);
    }

    #[test]
    fn a_stopped_session_keeps_late_flows_for_the_grace_period_unless_reused() {
        let mut associator = Associator::new(5_000, 0);
        let rows = vec![row(Direction::Up, 20_500, 1), row(Direction::Up, 21_500, 2)];
        let (ready, _) = associator.associate(rows, &history(), &no_nat(), 100_000, false);
        assert_eq!(
            users(&ready),
            [Some("alice"), Some("bob")],
            "bob took it at 21 000"
        );
        let mut alone = History::new();
        alone.apply(&event(EventKind::Start, "alice", "a1", 10_000));
        alone.apply(&event(EventKind::Stop, "alice", "a1", 20_000));
        let rows = vec![row(Direction::Up, 24_999, 1), row(Direction::Up, 25_000, 2)];
        let (ready, summary) = associator.associate(rows, &alone, &no_nat(), 100_000, false);
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
        let (ready, _) = associator.associate(
            vec![row(Direction::Up, 50_000, 9)],
            &history,
            &no_nat(),
            60_000,
            false,
        );
        assert!(ready.is_empty());
        assert_eq!(associator.backlog(), 1);
        history.apply(&event(EventKind::Start, "carol", "c1", 49_000));
        let (ready, _) = associator.associate(Vec::new(), &history, &no_nat(), 70_000, false);
        assert_eq!(
            users(&ready),
            [Some("carol")],
            "the late Start arrived in time"
        );

        let (ready, _) = associator.associate(
            vec![row(Direction::Up, 10, 3)],
            &History::new(),
            &no_nat(),
            60_000,
            false,
        );
        assert!(ready.is_empty());
        let (ready, _) =
            associator.associate(Vec::new(), &History::new(), &no_nat(), 89_999, false);
        assert!(ready.is_empty(), "still within the late window");
        let (ready, summary) =
            associator.associate(Vec::new(), &History::new(), &no_nat(), 90_000, false);
        assert_eq!(users(&ready), [None], "written unattributed, never dropped");
        assert_eq!(reasons(&ready), [Some(Unattributed::NoSession)]);
        assert_eq!(summary.unattributed_bytes, 3);
    }

    #[test]
    fn backlog_changes_name_what_entered_and_left_and_a_restored_backlog_resumes() {
        let mut associator = Associator::new(0, 30_000);
        let rows = vec![
            row(Direction::Up, 50_000, 9),
            row(Direction::Down, 50_000, 4),
        ];
        associator.associate(rows, &History::new(), &no_nat(), 60_000, false);
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
            &no_nat(),
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
        let (ready, _) = associator.associate(
            vec![row(Direction::Transit, 5, 1)],
            &history(),
            &no_nat(),
            6,
            false,
        );
        assert_eq!(users(&ready), [None]);
        assert_eq!(reasons(&ready), [Some(Unattributed::Transit)]);
        associator.associate(
            vec![row(Direction::Up, 5, 1)],
            &History::new(),
            &no_nat(),
            6,
            false,
        );
        let (ready, _) = associator.associate(Vec::new(), &History::new(), &no_nat(), 7, true);
        assert_eq!(ready.len(), 1);
        assert_eq!(associator.backlog(), 0);
    }

    #[test]
    fn pool_rows_go_through_the_binding_to_the_session_of_its_inside_address() {
        use crate::netflow::nat::{NatEvent, PortRange, event};
        let public: IpAddr = "198.51.100.1".parse().unwrap();
        let mut bindings = no_nat();
        let nat = |kind, at| NatEvent {
            event: kind,
            time_ms: at,
            started_ms: None,
            protocol: 6,
            inside: Some(IP.into()),
            inside_port: Some(40_000),
            inside_vrf: 0,
            outside: Some(public),
            outside_ports: PortRange::one(1024),
            outside_vrf: 0,
        };
        let nat_ip: IpAddr = "198.18.0.1".parse().unwrap();
        bindings.apply(nat_ip, &nat(event::NAT44_SESSION_CREATE, 9_000));
        bindings.apply(nat_ip, &nat(event::NAT44_SESSION_DELETE, 30_000));
        let pooled = |at, port: Option<u16>, bytes| UsageRow {
            subscriber_ip: public,
            subscriber_port: port,
            protocol: Some(6),
            ..row(Direction::Up, at, bytes)
        };
        let pools = vec!["198.51.100.0/24".parse().unwrap()];
        let mut early = Associator::new(1_000, 0).with_nat_pools(pools.clone());
        let mut online = History::new();
        online.apply(&event(EventKind::Start, "alice", "a1", 1_000));
        let (ready, _) = early.associate(
            vec![pooled(8_001, Some(1024), 1), pooled(7_999, Some(1024), 1)],
            &online,
            &bindings,
            40_000,
            false,
        );
        assert_eq!(
            users(&ready),
            [Some("alice"), None],
            "up to the grace before the create, when nobody held the port"
        );
        bindings.apply(
            nat_ip,
            &NatEvent {
                inside: Some("198.18.100.8".parse().unwrap()),
                ..nat(event::NAT44_SESSION_CREATE, 8_500)
            },
        );
        let (ready, _) = early.associate(
            vec![pooled(8_001, Some(1024), 1)],
            &online,
            &bindings,
            40_000,
            false,
        );
        assert_eq!(
            users(&ready),
            [None],
            "the first binding to start after the row is another's"
        );
        let mut associator = Associator::new(0, 30_000).with_nat_pools(pools);
        let rows = vec![
            pooled(15_000, Some(1024), 1),
            pooled(25_000, Some(1024), 2),
            pooled(15_000, None, 4),
            pooled(15_000, Some(1025), 8),
            pooled(35_000, Some(1024), 16),
        ];
        let (ready, summary) = associator.associate(rows, &history(), &bindings, 40_000, false);
        assert_eq!(
            users(&ready),
            [Some("alice"), Some("bob"), None],
            "1024 was bound to the inside address alice, then bob, held; a row without port \
             is written at once"
        );
        assert_eq!(
            ready[1].subscriber_ip, public,
            "rows keep the public address"
        );
        assert_eq!(summary.nat.attributed_bytes, 3);
        assert_eq!(summary.nat.no_port_bytes, 4);
        assert_eq!(
            reasons(&ready),
            [None, None, Some(Unattributed::NatNoPort)],
            "the reason is written with the row"
        );
        assert_eq!(associator.backlog(), 2, "no binding yet: they wait");
        let (ready, summary) =
            associator.associate(Vec::new(), &history(), &bindings, 80_000, false);
        assert_eq!(users(&ready), [None, None]);
        assert_eq!(reasons(&ready), [Some(Unattributed::NatNoBinding); 2]);
        assert_eq!(
            (
                summary.nat.no_binding_bytes,
                summary.nat.lookups_without_binding
            ),
            (24, 2)
        );
        assert_eq!(summary.unattributed_bytes, 24);
    }
}
