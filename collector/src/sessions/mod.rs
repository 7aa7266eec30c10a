//! Session history from RADIUS accounting: which session held which address
//! (IPv4, IPv6 or IPv6 prefix) from when to when, and who held an address
//! at a given time. Sans-IO: events and `now_ms` in, the rows to persist
//! out; [`History::from_rows`] rebuilds the same state from those rows.
//!
//! How events are read:
//! - A session is NAS + Acct-Session-Id + start: ids repeat after a NAS
//!   reboots. Only the newest session of an id takes its events.
//! - An event no later than the newest time its session has seen is a
//!   retransmission or a late arrival and changes nothing, except a Stop,
//!   which closes a session still open at its own time, however late. A
//!   Start later than that, for an id still open, supersedes the session:
//!   the NAS reused the id (it rebooted without Accounting-On), so the old
//!   one closes at the new start with cause "superseded".
//! - An Interim-Update or Stop for an unknown id, or later than its closed
//!   session, opens a session at the start its Acct-Session-Time implies
//!   (its Start was lost), then applies.
//! - Times before a session's start are taken as its start. Octet counters
//!   only grow: a late report cannot lower them.
//! - An address change replaces the session's whole address set: every
//!   address gets a new interval at the change, so a session's current
//!   intervals always start together. An event without an address of a
//!   family leaves that family's addresses as they were.
//! - A session closed for silence stays revivable while it is the newest of
//!   its id: its next Interim-Update reopens it and its intervals (the NAS,
//!   or we, were only unreachable), its Stop closes it at the Stop's time.
//! - Accounting-On/Off closes every session its NAS started before it.
//!
//! Who held an address: intervals are half-open, `[from, to)`, an open one
//! never ends; IPv6 by the longest matching prefix that has a holder. Of
//! overlapping intervals on one network, the one that started last wins,
//! and ends the earlier ones: a NAS does not hand one address to two
//! subscribers, so the earlier Stop was lost.

mod index;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ipnet::{IpNet, Ipv6Net};

use self::index::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Start,
    InterimUpdate,
    Stop,
    AccountingOn,
    AccountingOff,
}

/// One accounting request, already reduced by the server: `time_ms` is the
/// event time (Event-Timestamp if present, else arrival minus
/// Acct-Delay-Time), `nas` the NAS identity (the server picks
/// NAS-IP-Address, else NAS-IPv6-Address, else NAS-Identifier, else the
/// packet's source address, as text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub nas: String,
    /// Empty for Accounting-On/Off.
    pub session_id: String,
    pub user_name: Option<String>,
    pub framed_ip: Option<Ipv4Addr>,
    pub framed_ipv6: Option<Ipv6Addr>,
    /// Framed-IPv6-Prefix and Delegated-IPv6-Prefix.
    pub framed_prefixes: Vec<Ipv6Net>,
    pub time_ms: u64,
    pub session_time_s: Option<u32>,
    pub interim_interval_s: Option<u32>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub nas_port_id: Option<String>,
    pub calling_station_id: Option<String>,
    pub class: Option<Vec<u8>>,
    pub terminate_cause: Option<u32>,
}

impl Event {
    /// An event that says only what happened to which session, and when.
    pub fn new(
        kind: EventKind,
        nas: impl Into<String>,
        session_id: impl Into<String>,
        time_ms: u64,
    ) -> Self {
        Self {
            kind,
            nas: nas.into(),
            session_id: session_id.into(),
            user_name: None,
            framed_ip: None,
            framed_ipv6: None,
            framed_prefixes: Vec::new(),
            time_ms,
            session_time_s: None,
            interim_interval_s: None,
            input_octets: None,
            output_octets: None,
            nas_port_id: None,
            calling_station_id: None,
            class: None,
            terminate_cause: None,
        }
    }

    /// A Start of `user`'s session holding the IPv4 address `ip`.
    pub fn start_v4(
        nas: impl Into<String>,
        session_id: impl Into<String>,
        user: impl Into<String>,
        ip: Ipv4Addr,
        time_ms: u64,
    ) -> Self {
        Self {
            user_name: Some(user.into()),
            framed_ip: Some(ip),
            ..Self::new(EventKind::Start, nas, session_id, time_ms)
        }
    }
}

/// One session, as persisted (table `sessions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Assigned by [`History`]: unique, stable, ascending in creation order.
    pub id: u64,
    pub user_name: String,
    pub nas: String,
    pub session_id: String,
    pub framed_ip: Option<Ipv4Addr>,
    /// The first IPv6 prefix, else the /128 of Framed-IPv6-Address.
    pub framed_prefix: Option<Ipv6Net>,
    pub start_ms: u64,
    pub stop_ms: Option<u64>,
    pub last_update_ms: u64,
    pub interim_interval_s: Option<u32>,
    pub nas_port_id: Option<String>,
    pub calling_station_id: Option<String>,
    pub class: Option<Vec<u8>>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    /// The RADIUS name ("User-Request", "NAS-Reboot", …; the number for
    /// unknown codes), or ours: [`SILENT`], [`SUPERSEDED`],
    /// [`ACCOUNTING_ON`], [`ACCOUNTING_OFF`].
    pub terminate_cause: Option<String>,
}

/// Closed by [`History::close_silent`].
pub const SILENT: &str = "silent";
/// Closed by a new Start with the same NAS and Acct-Session-Id.
pub const SUPERSEDED: &str = "superseded";
pub const ACCOUNTING_ON: &str = "accounting-on";
pub const ACCOUNTING_OFF: &str = "accounting-off";

/// One address a session held, and when (table `session_addresses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRow {
    /// [`SessionRow::id`].
    pub session: u64,
    /// IPv4 /32, IPv6 /128 or an IPv6 prefix (host bits clear).
    pub net: IpNet,
    pub from_ms: u64,
    /// Exclusive; `None` while held.
    pub to_ms: Option<u64>,
}

/// A row to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "the persistence layer's contract; nearly every batch carries a session row anyway"
)]
pub enum Change {
    /// Insert or replace by id.
    Session(SessionRow),
    /// Insert or replace by (session, net, from_ms).
    Address(AddressRow),
}

/// Who held an address, and over which interval.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub session: u64,
    pub user_name: String,
    pub session_id: String,
    pub nas: String,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

/// An open session, with what identifies it to its NAS (RFC 5176 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSession {
    /// The `sessions` row id.
    pub id: u64,
    pub user_name: String,
    pub nas: String,
    pub session_id: String,
    pub framed_ip: Option<Ipv4Addr>,
    pub framed_prefix: Option<Ipv6Net>,
}

/// Every session known, the index of their address intervals, and per NAS
/// the newest session of each Acct-Session-Id.
///
/// Memory (measured by a test, allocator overhead aside): an open session
/// with one IPv4 address keeps about 470 bytes, 56 of them in the address
/// index; a dual-stack one with three networks and port, MAC and Class about
/// 680, 190 in the index. Most of the rest is the row that each update
/// rewrites whole. A closed session keeps only what `whois` and spotting
/// retransmissions need: about 450 bytes dual-stack, mostly its index.
#[derive(Debug, Default)]
pub struct History {
    /// By slot; slots and ids ascend together.
    sessions: Vec<Session>,
    /// NAS → Acct-Session-Id → slot of its newest session. The keys double
    /// as the sessions' shared NAS names.
    newest: HashMap<Arc<str>, HashMap<Box<str>, u32>>,
    /// User names, shared by the sessions of a user.
    users: HashSet<Arc<str>>,
    /// Mirrors the address rows, whichever way they came.
    index: Index,
    last_id: u64,
    open: usize,
    /// Open sessions per NAS (NASes with none are left out).
    open_by_nas: HashMap<Arc<str>, usize>,
}

/// What a Start, Interim-Update or Stop does, decided before doing it.
enum Step {
    /// Retransmitted, late, or outdated: nothing.
    Nothing,
    Update(u32),
    Stop(u32),
    /// A new session, after ending or settling the newest of its id.
    Begin(Option<Prior>),
}

/// The session a new one with the same id replaces.
enum Prior {
    /// Still open: the NAS reused the id, it ends as superseded.
    Open(u32),
    /// Silent: it stays as it closed.
    Silent(u32),
}

/// A new session an event would make (see [`History::would_begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSession {
    /// Whether the NAS has one more open session afterwards (not for a
    /// Stop, nor for a Start superseding an open session).
    pub adds_open: bool,
}

#[derive(Debug)]
struct Session {
    id: u64,
    user: Arc<str>,
    nas: Arc<str>,
    session_id: Box<str>,
    start_ms: u64,
    /// The latest event time seen: a late Stop does not move it back.
    last_update_ms: u64,
    state: State,
    /// Present while the session can still change (open or silent): the rest
    /// of its row and what it holds. Closed sessions keep only what `whois`
    /// needs.
    live: Option<Box<Live>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Closed by `close_silent` at its last update.
    Silent {
        stop_ms: u64,
    },
    Closed {
        stop_ms: u64,
    },
}

#[derive(Debug, Default)]
struct Live {
    /// Sorted. Their intervals all start at `held_since_ms` (and, while
    /// silent, end at the silent stop).
    held: Box<[IpNet]>,
    held_since_ms: u64,
    framed_ip: Option<Ipv4Addr>,
    framed_prefix: Option<Ipv6Net>,
    interim_interval_s: Option<u32>,
    nas_port_id: Option<Box<str>>,
    calling_station_id: Option<Box<str>>,
    class: Option<Box<[u8]>>,
    input_octets: Option<u64>,
    output_octets: Option<u64>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; returns the rows to persist (the caller makes them
    /// durable before acknowledging the request).
    pub fn apply(&mut self, event: &Event) -> Vec<Change> {
        let mut out = Vec::new();
        match event.kind {
            EventKind::AccountingOn => self.reset(event, ACCOUNTING_ON, &mut out),
            EventKind::AccountingOff => self.reset(event, ACCOUNTING_OFF, &mut out),
            EventKind::Start | EventKind::InterimUpdate | EventKind::Stop => {
                self.session_event(event, &mut out)
            }
        }
        self.index(&out);
        out
    }

    /// Closes, at their last update, the sessions silent for longer than
    /// `multiple` × their interim interval (`default_interval_s` when they
    /// announced none, or 0).
    pub fn close_silent(
        &mut self,
        now_ms: u64,
        multiple: u32,
        default_interval_s: u32,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for session in &mut self.sessions {
            let (State::Open, Some(live)) = (session.state, &session.live) else {
                continue;
            };
            let interval_s = live
                .interim_interval_s
                .filter(|&s| s > 0)
                .unwrap_or(default_interval_s);
            let limit_ms = u64::from(multiple)
                .saturating_mul(u64::from(interval_s))
                .saturating_mul(1000);
            if now_ms.saturating_sub(session.last_update_ms) <= limit_ms {
                continue;
            }
            let stop_ms = session.last_update_ms;
            session.state = State::Silent { stop_ms };
            count_closed(&mut self.open, &mut self.open_by_nas, &session.nas);
            out.push(session.row(live, Some(SILENT.to_owned())));
            out.extend(session.held_rows(live, Some(stop_ms)));
        }
        self.index(&out);
        out
    }

    /// Who held `ip` at `at_ms`: the longest matching network with a
    /// holder; on it, the interval that started last at or before `at_ms`,
    /// unless that one has ended. Intervals are half-open, `[from, to)`; an
    /// open one never ends. An older interval still open when a later one
    /// starts on the same network is taken as ended there (its Stop was
    /// lost). Cost: per prefix length present, one hash lookup and a binary
    /// search over that network's intervals.
    pub fn whois(&self, ip: IpAddr, at_ms: u64) -> Option<Owner> {
        let interval = self.index.find(ip, at_ms)?;
        let session = &self.sessions[interval.slot as usize];
        Some(Owner {
            session: session.id,
            user_name: session.user.to_string(),
            session_id: session.session_id.to_string(),
            nas: session.nas.to_string(),
            from_ms: interval.from_ms,
            to_ms: interval.to_ms(),
        })
    }

    /// Rebuilds from persisted rows (all of [`History::apply`]'s and
    /// [`History::close_silent`]'s, or those of the sessions of interest):
    /// the result answers and goes on as the history that wrote them.
    /// Address rows of sessions not given are ignored.
    pub fn from_rows(
        sessions: impl IntoIterator<Item = SessionRow>,
        addresses: impl IntoIterator<Item = AddressRow>,
    ) -> Self {
        let mut rows: Vec<SessionRow> = sessions.into_iter().collect();
        rows.sort_unstable_by_key(|row| row.id);
        let mut addresses: Vec<AddressRow> = addresses.into_iter().collect();
        addresses.sort_unstable_by_key(|a| (a.session, a.from_ms, a.net));
        let mut history = Self::default();
        for row in rows {
            let first = addresses.partition_point(|a| a.session < row.id);
            let last = addresses.partition_point(|a| a.session <= row.id);
            history.restore(row, &addresses[first..last]);
        }
        for row in &addresses {
            history.index_row(row);
        }
        history
    }

    pub fn open_sessions(&self) -> usize {
        self.open
    }

    /// Open sessions of one NAS.
    pub fn open_sessions_on(&self, nas: &str) -> usize {
        self.open_by_nas.get(nas).copied().unwrap_or(0)
    }

    /// The session `event` would begin if applied now, if any: what a
    /// bound on new sessions must judge before the event changes anything.
    pub fn would_begin(&self, event: &Event) -> Option<NewSession> {
        if !matches!(
            event.kind,
            EventKind::Start | EventKind::InterimUpdate | EventKind::Stop
        ) {
            return None;
        }
        match self.step(event) {
            Step::Begin(prior) => Some(NewSession {
                adds_open: event.kind != EventKind::Stop && !matches!(prior, Some(Prior::Open(_))),
            }),
            Step::Nothing | Step::Update(_) | Step::Stop(_) => None,
        }
    }

    /// The open sessions of the users `wanted` picks, as a NAS knows them.
    pub fn open_sessions_of(&self, mut wanted: impl FnMut(&str) -> bool) -> Vec<OpenSession> {
        self.sessions
            .iter()
            .filter(|s| s.state == State::Open && wanted(&s.user))
            .filter_map(|s| {
                let live = s.live.as_ref()?;
                Some(OpenSession {
                    id: s.id,
                    user_name: s.user.to_string(),
                    nas: s.nas.to_string(),
                    session_id: s.session_id.to_string(),
                    framed_ip: live.framed_ip,
                    framed_prefix: live.framed_prefix,
                })
            })
            .collect()
    }

    /// Sessions held in memory, open or not.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// New sessions get ids above `last_id`: rows rebuilt from a subset of
    /// the stored sessions must not reuse the id of one left out.
    pub fn reserve_ids(&mut self, last_id: u64) {
        self.last_id = self.last_id.max(last_id);
    }

    fn session_event(&mut self, e: &Event, out: &mut Vec<Change>) {
        match self.step(e) {
            Step::Nothing => {}
            Step::Update(slot) => self.update(slot, e, out),
            Step::Stop(slot) => self.stop(slot, e, out),
            Step::Begin(prior) => {
                match prior {
                    Some(Prior::Open(slot)) => {
                        self.end(slot, e.time_ms, Some(SUPERSEDED.to_owned()), out)
                    }
                    Some(Prior::Silent(slot)) => self.sessions[slot as usize].settle(),
                    None => {}
                }
                self.begin(e, out);
            }
        }
    }

    /// What a Start, Interim-Update or Stop does.
    fn step(&self, e: &Event) -> Step {
        let Some(slot) = self.newest_slot(&e.nas, &e.session_id) else {
            return Step::Begin(None);
        };
        let session = &self.sessions[slot as usize];
        let later = e.time_ms > session.seen_ms();
        match (session.state, e.kind) {
            // The id again after its session closed: a new session.
            (State::Closed { .. }, _) if later => Step::Begin(None),
            // Retransmitted or late: the session is over.
            (State::Closed { .. }, _) => Step::Nothing,
            // A Stop closes at its own time, however late.
            (_, EventKind::Stop) => Step::Stop(slot),
            // Retransmitted or late: what it says is known, or outdated.
            _ if !later => Step::Nothing,
            (_, EventKind::InterimUpdate) => Step::Update(slot),
            // A Start (Accounting-On/Off never come here) for an id still
            // open: the NAS reused it, so that session is over.
            (State::Open, _) => Step::Begin(Some(Prior::Open(slot))),
            // A Start after silence: the silent session stays as it closed.
            (State::Silent { .. }, _) => Step::Begin(Some(Prior::Silent(slot))),
        }
    }

    /// Opens a session for `e`: at its time for a Start, else at the start
    /// its session time implies; a Stop then closes it.
    fn begin(&mut self, e: &Event, out: &mut Vec<Change>) {
        let start_ms = match e.kind {
            EventKind::Start => e.time_ms,
            _ => e
                .time_ms
                .saturating_sub(u64::from(e.session_time_s.unwrap_or(0)) * 1000),
        };
        let mut live = Live::default();
        live.absorb(e);
        live.take_addresses(e);
        live.held_since_ms = start_ms;
        let slot = self.next_slot();
        // Whatever this id had before is settled by now.
        let (nas, _) = self.make_newest(&e.nas, &e.session_id, slot);
        self.last_id += 1;
        let mut session = Session {
            id: self.last_id,
            user: intern(&mut self.users, e.user_name.as_deref().unwrap_or_default()),
            nas,
            session_id: e.session_id.as_str().into(),
            start_ms,
            last_update_ms: e.time_ms,
            state: State::Open,
            live: None,
        };
        if e.kind != EventKind::Stop {
            out.push(session.row(&live, None));
            out.extend(session.held_rows(&live, None));
        }
        session.live = Some(Box::new(live));
        count_opened(&mut self.open, &mut self.open_by_nas, &session.nas);
        self.sessions.push(session);
        if e.kind == EventKind::Stop {
            self.stop(slot, e, out);
        }
    }

    /// An Interim-Update later than anything its session has seen.
    fn update(&mut self, slot: u32, e: &Event, out: &mut Vec<Change>) {
        let session = &mut self.sessions[slot as usize];
        let Some(mut live) = session.live.take() else {
            return;
        };
        if let Some(name) = &e.user_name {
            session.user = intern(&mut self.users, name);
        }
        let revived = session.state != State::Open;
        if revived {
            session.state = State::Open;
            count_opened(&mut self.open, &mut self.open_by_nas, &session.nas);
        }
        session.last_update_ms = e.time_ms;
        live.absorb(e);
        let replaced = live.take_addresses(e);
        out.push(session.row(&live, None));
        if let Some((held, since_ms)) = &replaced {
            out.extend(held.iter().map(|&net| {
                Change::Address(AddressRow {
                    session: session.id,
                    net,
                    from_ms: *since_ms,
                    to_ms: Some(e.time_ms),
                })
            }));
        }
        if replaced.is_some() || revived {
            out.extend(session.held_rows(&live, None));
        }
        session.live = Some(live);
    }

    /// A Stop for an open or silent session: closes it at the Stop's time.
    fn stop(&mut self, slot: u32, e: &Event, out: &mut Vec<Change>) {
        let session = &mut self.sessions[slot as usize];
        let Some(live) = &mut session.live else {
            return;
        };
        if let Some(name) = &e.user_name {
            session.user = intern(&mut self.users, name);
        }
        session.last_update_ms = session.last_update_ms.max(e.time_ms);
        live.absorb(e);
        let cause = e.terminate_cause.map(terminate_cause_name);
        self.end(slot, e.time_ms, cause, out);
    }

    /// Closes an open or silent session for good at `at_ms` (not before it
    /// started), with its intervals.
    fn end(&mut self, slot: u32, at_ms: u64, cause: Option<String>, out: &mut Vec<Change>) {
        let session = &mut self.sessions[slot as usize];
        let Some(live) = session.live.take() else {
            return;
        };
        let stop_ms = at_ms.max(session.start_ms);
        let was = std::mem::replace(&mut session.state, State::Closed { stop_ms });
        if was == State::Open {
            count_closed(&mut self.open, &mut self.open_by_nas, &session.nas);
        }
        out.push(session.row(&live, cause));
        // A silent session's intervals already end where it stopped.
        if was != (State::Silent { stop_ms }) {
            out.extend(session.held_rows(&live, Some(stop_ms)));
        }
    }

    /// Accounting-On/Off: the NAS (re)started or is stopping, so every
    /// session it started before then is over. Open ones close at the
    /// event's time; silent ones keep their stop but can no longer revive.
    fn reset(&mut self, e: &Event, cause: &str, out: &mut Vec<Change>) {
        let Some(ids) = self.newest.get(e.nas.as_str()) else {
            return;
        };
        let mut slots: Vec<u32> = ids
            .values()
            .copied()
            .filter(|&slot| {
                let session = &self.sessions[slot as usize];
                session.live.is_some() && session.start_ms < e.time_ms
            })
            .collect();
        slots.sort_unstable();
        for slot in slots {
            let at_ms = match self.sessions[slot as usize].state {
                State::Silent { stop_ms } => stop_ms,
                State::Open | State::Closed { .. } => e.time_ms,
            };
            self.end(slot, at_ms, Some(cause.to_owned()), out);
        }
    }

    /// Appends the session of `row`, with the live part its address rows
    /// (sorted by start) tell, if it can still change.
    fn restore(&mut self, row: SessionRow, addresses: &[AddressRow]) {
        let slot = self.next_slot();
        let (nas, older) = self.make_newest(&row.nas, &row.session_id, slot);
        if let Some(older) = older {
            self.sessions[older as usize].settle();
        }
        let state = match (row.stop_ms, row.terminate_cause.as_deref()) {
            (None, _) => State::Open,
            (Some(stop_ms), Some(SILENT)) => State::Silent { stop_ms },
            (Some(stop_ms), _) => State::Closed { stop_ms },
        };
        let live = (!matches!(state, State::Closed { .. })).then(|| {
            // The current set is the one that started last.
            let since = addresses.last().map(|a| a.from_ms);
            let mut held: Vec<IpNet> = addresses
                .iter()
                .filter(|a| Some(a.from_ms) == since)
                .map(|a| a.net)
                .collect();
            held.sort_unstable();
            held.dedup();
            Box::new(Live {
                held: held.into(),
                held_since_ms: since.unwrap_or(row.start_ms),
                framed_ip: row.framed_ip,
                framed_prefix: row.framed_prefix,
                interim_interval_s: row.interim_interval_s,
                nas_port_id: row.nas_port_id.map(Into::into),
                calling_station_id: row.calling_station_id.map(Into::into),
                class: row.class.map(Into::into),
                input_octets: row.input_octets,
                output_octets: row.output_octets,
            })
        });
        if state == State::Open {
            count_opened(&mut self.open, &mut self.open_by_nas, &nas);
        }
        self.last_id = self.last_id.max(row.id);
        self.sessions.push(Session {
            id: row.id,
            user: intern(&mut self.users, &row.user_name),
            nas,
            session_id: row.session_id.into(),
            start_ms: row.start_ms,
            last_update_ms: row.last_update_ms,
            state,
            live,
        });
    }

    fn index(&mut self, changes: &[Change]) {
        for change in changes {
            if let Change::Address(row) = change {
                self.index_row(row);
            }
        }
    }

    fn index_row(&mut self, row: &AddressRow) {
        // Slots and ids ascend together.
        if let Ok(slot) = self.sessions.binary_search_by_key(&row.session, |s| s.id) {
            self.index.set(row.net, slot as u32, row.from_ms, row.to_ms);
        }
    }

    fn newest_slot(&self, nas: &str, session_id: &str) -> Option<u32> {
        self.newest.get(nas)?.get(session_id).copied()
    }

    fn next_slot(&self) -> u32 {
        u32::try_from(self.sessions.len()).expect("fewer than 2^32 sessions in memory")
    }

    /// Makes `slot` the newest session of `session_id` on `nas`; returns the
    /// NAS's shared name and the slot that was newest before.
    fn make_newest(&mut self, nas: &str, session_id: &str, slot: u32) -> (Arc<str>, Option<u32>) {
        let name = match self.newest.get_key_value(nas) {
            Some((name, _)) => name.clone(),
            None => nas.into(),
        };
        let ids = self.newest.entry(name.clone()).or_default();
        (name, ids.insert(session_id.into(), slot))
    }
}

/// One more open session, of `nas`.
fn count_opened(open: &mut usize, by_nas: &mut HashMap<Arc<str>, usize>, nas: &Arc<str>) {
    *open += 1;
    *by_nas.entry(Arc::clone(nas)).or_default() += 1;
}

/// One open session of `nas` less.
fn count_closed(open: &mut usize, by_nas: &mut HashMap<Arc<str>, usize>, nas: &str) {
    *open -= 1;
    if let Some(count) = by_nas.get_mut(nas) {
        *count -= 1;
        if *count == 0 {
            by_nas.remove(nas);
        }
    }
}

impl Session {
    /// A silent session no longer the newest of its id gets no more events:
    /// it is closed for good (its row stays as it is) and frees its live part.
    fn settle(&mut self) {
        if let State::Silent { stop_ms } = self.state {
            self.state = State::Closed { stop_ms };
            self.live = None;
        }
    }

    /// The newest time this session has seen: its last update, or its stop
    /// if that is later.
    fn seen_ms(&self) -> u64 {
        match self.state {
            State::Open => self.last_update_ms,
            State::Silent { stop_ms } | State::Closed { stop_ms } => {
                self.last_update_ms.max(stop_ms)
            }
        }
    }

    /// The session's row, for the state it is in now.
    fn row(&self, live: &Live, terminate_cause: Option<String>) -> Change {
        Change::Session(SessionRow {
            id: self.id,
            user_name: self.user.to_string(),
            nas: self.nas.to_string(),
            session_id: self.session_id.to_string(),
            framed_ip: live.framed_ip,
            framed_prefix: live.framed_prefix,
            start_ms: self.start_ms,
            stop_ms: match self.state {
                State::Open => None,
                State::Silent { stop_ms } | State::Closed { stop_ms } => Some(stop_ms),
            },
            last_update_ms: self.last_update_ms,
            interim_interval_s: live.interim_interval_s,
            nas_port_id: live.nas_port_id.as_deref().map(Into::into),
            calling_station_id: live.calling_station_id.as_deref().map(Into::into),
            class: live.class.as_deref().map(Into::into),
            input_octets: live.input_octets,
            output_octets: live.output_octets,
            terminate_cause,
        })
    }

    /// The rows of the intervals of what the session holds, ending at
    /// `to_ms` (not before they started).
    fn held_rows(&self, live: &Live, to_ms: Option<u64>) -> impl Iterator<Item = Change> {
        let (id, from_ms) = (self.id, live.held_since_ms);
        live.held.iter().map(move |&net| {
            Change::Address(AddressRow {
                session: id,
                net,
                from_ms,
                to_ms: to_ms.map(|to| to.max(from_ms)),
            })
        })
    }
}

impl Live {
    /// Takes the attributes `e` carries; absent ones keep what earlier
    /// events said.
    fn absorb(&mut self, e: &Event) {
        if e.interim_interval_s.is_some() {
            self.interim_interval_s = e.interim_interval_s;
        }
        if let Some(port) = &e.nas_port_id {
            self.nas_port_id = Some(port.as_str().into());
        }
        if let Some(station) = &e.calling_station_id {
            self.calling_station_id = Some(station.as_str().into());
        }
        if let Some(class) = &e.class {
            self.class = Some(class.as_slice().into());
        }
        // Counters only grow: a report that arrives late cannot lower them.
        self.input_octets = self.input_octets.max(e.input_octets);
        self.output_octets = self.output_octets.max(e.output_octets);
    }

    /// Takes the addresses `e` carries, family by family, as the held set
    /// since `e.time_ms` if they differ from it; returns the set they
    /// replace, and since when it was held.
    fn take_addresses(&mut self, e: &Event) -> Option<(Box<[IpNet]>, u64)> {
        let v4: Vec<IpNet> = e
            .framed_ip
            .map(|ip| IpNet::V4(ip.into()))
            .into_iter()
            .collect();
        let v6: Vec<IpNet> = e
            .framed_prefixes
            .iter()
            .map(|p| IpNet::V6(p.trunc()))
            .chain(e.framed_ipv6.map(|ip| IpNet::V6(ip.into())))
            .collect();
        // A family the event does not mention keeps what it had.
        let keep = |family: &[IpNet], is_v4: bool| {
            if family.is_empty() {
                self.held
                    .iter()
                    .filter(|n| n.addr().is_ipv4() == is_v4)
                    .copied()
                    .collect()
            } else {
                family.to_vec()
            }
        };
        let mut held: Vec<IpNet> = [keep(&v4, true), keep(&v6, false)].concat();
        held.sort_unstable();
        held.dedup();
        if !v4.is_empty() {
            self.framed_ip = e.framed_ip;
        }
        if !v6.is_empty() {
            self.framed_prefix = e
                .framed_prefixes
                .first()
                .map(Ipv6Net::trunc)
                .or(e.framed_ipv6.map(Ipv6Net::from));
        }
        if *held == *self.held {
            return None;
        }
        let since_ms = std::mem::replace(&mut self.held_since_ms, e.time_ms);
        Some((std::mem::replace(&mut self.held, held.into()), since_ms))
    }
}

fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(name) = names.get(name) {
        return name.clone();
    }
    let name: Arc<str> = name.into();
    names.insert(name.clone());
    name
}

/// Acct-Terminate-Cause values by their dictionary names: 1–18 from RFC 2866,
/// 19–22 from RFC 3580.
const TERMINATE_CAUSES: [&str; 22] = [
    "User-Request",
    "Lost-Carrier",
    "Lost-Service",
    "Idle-Timeout",
    "Session-Timeout",
    "Admin-Reset",
    "Admin-Reboot",
    "Port-Error",
    "NAS-Error",
    "NAS-Request",
    "NAS-Reboot",
    "Port-Unneeded",
    "Port-Preempted",
    "Port-Suspended",
    "Service-Unavailable",
    "Callback",
    "User-Error",
    "Host-Request",
    "Supplicant-Restart",
    "Reauthentication-Failure",
    "Port-Reinit",
    "Port-Disabled",
];

fn terminate_cause_name(code: u32) -> String {
    code.checked_sub(1)
        .and_then(|i| TERMINATE_CAUSES.get(i as usize))
        .map_or_else(|| code.to_string(), |name| (*name).to_owned())
}

#[cfg(test)]
mod tests;
