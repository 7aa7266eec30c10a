//! Binding history from NAT events: which inside address held which public
//! address and port (or port block), protocol and VRF, from when to when.
//! Sans-IO, like the session history: events and `now_ms` in, rows to
//! persist out; [`Bindings::from_rows`] rebuilds the same state from them.
//!
//! How events are read (a binding is identified by its public side —
//! VRF, address, ports, protocol — and its inside address and port):
//! - A create opens `[t, t + max_lifetime)`: a binding whose delete never
//!   comes ends by itself. A create that falls inside a binding of the
//!   same identity is a repeat and changes nothing.
//! - A delete ends the latest binding of its identity that started at or
//!   before it and has seen no delete, at the delete's time (even past its
//!   lifetime: the event is better evidence than our limit).
//! - A delete whose create was not seen (lost, or not yet arrived) records
//!   the binding as ending then, starting when its record says (a
//!   flowStart field), else at most `max_lifetime` before: a *guessed*
//!   start. A create arriving later for it gives it its real start.
//!
//! Who held a public port at T: on each binding of the address, protocol
//! (or every protocol, for port blocks exported without one) and VRF whose
//! ports include it, the binding that started last at or before T, unless
//! it has ended by then — a later start ends earlier bindings, whose delete
//! was lost. Bindings with a guessed start give way to those with a known
//! one; of several, the first to end after T held it. Intervals are
//! half-open, `[from, to)`.
//!
//! Memory: one entry per binding — per session in session mode, per block
//! in port-block mode (BENCHMARKS.md has the bytes). Entries ended more
//! than the memory retention ago leave memory at [`Bindings::prune`] (they
//! stay in SQLite); near `max_bindings` the earliest-ended leave first, and
//! at it new ones are persisted but not kept, and counted.

mod timeline;

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use self::timeline::{Entry, Timeline};
use crate::netflow::nat::{NatEvent, Op, PortRange};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A binding without a delete ends this long after its start.
    pub max_lifetime_ms: u64,
    /// Bindings ended longer ago than this leave memory.
    pub memory_retention_ms: u64,
    /// Bindings kept in memory at most.
    pub max_bindings: usize,
}

/// One binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// Assigned by [`Bindings`]: unique, ascending in creation order.
    pub id: u64,
    /// Egress VRF of the public side (0: the default table).
    pub vrf: u32,
    pub public_ip: IpAddr,
    pub ports: PortRange,
    /// 0: every protocol (port blocks exported without one).
    pub protocol: u8,
    pub inside_ip: IpAddr,
    pub inside_port: Option<u16>,
    pub inside_vrf: u32,
    pub from_ms: u64,
    /// Exclusive. Without a delete: `from_ms + max_lifetime`.
    pub to_ms: u64,
    /// The create was seen (or the delete said when it began); false: the
    /// start is a guess, at most `max_lifetime` before the delete.
    pub start_seen: bool,
    /// Ended by a delete; false: still open, or ended by the lifetime.
    pub deleted: bool,
}

/// A binding as persisted (table `nat_bindings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRow {
    /// The NAT device that exported it.
    pub exporter: IpAddr,
    pub binding: Binding,
}

/// A row to persist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Insert(BindingRow),
    /// New interval and flags of the binding with this id.
    Update(Binding),
}

/// What one event did (metric label in `as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Opened,
    Closed,
    /// A create that gave a binding known from its delete its start.
    Completed,
    /// A delete without a create: recorded with its start guessed.
    Orphan,
    /// Repeats what is known.
    Duplicate,
    /// A create or delete without inside or public address.
    Incomplete,
    /// Persisted, but not kept in memory: `max_bindings` open bindings.
    Refused,
    /// Not about a binding (exhaustion, quota, thresholds): counted only.
    Counted,
}

impl Applied {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Closed => "closed",
            Self::Completed => "completed",
            Self::Orphan => "delete_without_create",
            Self::Duplicate => "duplicate",
            Self::Incomplete => "incomplete",
            Self::Refused => "refused",
            Self::Counted => "counted",
        }
    }
}

/// A public address, protocol and VRF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Address {
    vrf: u32,
    ip: IpAddr,
    protocol: u8,
}

/// The port blocks of one [`Address`], sorted by range.
#[derive(Debug, Default)]
struct Blocks {
    /// The widest block's `end - start`: how far back a lookup looks.
    max_span: u16,
    list: Vec<(PortRange, Timeline)>,
}

/// What pruning found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Left memory past the retention.
    pub expired: usize,
    /// Left memory early, for `max_bindings`.
    pub evicted: usize,
    /// Entries in memory after pruning.
    pub kept: usize,
    /// Of those, neither deleted nor past their lifetime.
    pub open: usize,
}

#[derive(Debug)]
pub struct Bindings {
    limits: Limits,
    /// Single-port bindings: one hash lookup.
    ports: HashMap<(Address, u16), Timeline>,
    /// Port blocks and whole-address bindings.
    blocks: HashMap<Address, Blocks>,
    len: usize,
    last_id: u64,
    /// Rows to persist since the last [`Bindings::take_changes`].
    changes: Vec<Change>,
}

impl Bindings {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ports: HashMap::new(),
            blocks: HashMap::new(),
            len: 0,
            last_id: 0,
            changes: Vec::new(),
        }
    }

    /// What to persist since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Rebuilds from persisted rows; new ids go above `last_id` (and every
    /// row's). Rows beyond `max_bindings` are not kept.
    pub fn from_rows(
        limits: Limits,
        rows: impl IntoIterator<Item = Binding>,
        last_id: u64,
    ) -> Self {
        let mut bindings = Self::new(limits);
        bindings.last_id = last_id;
        for b in rows {
            bindings.last_id = bindings.last_id.max(b.id);
            if bindings.len < limits.max_bindings {
                bindings.insert(b);
            }
        }
        bindings
    }

    /// Bindings in memory.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Applies one event from `exporter`; what to persist waits for
    /// [`Bindings::take_changes`].
    pub fn apply(&mut self, exporter: IpAddr, e: &NatEvent) -> Applied {
        let op = e.op();
        if op == Op::Count {
            return Applied::Counted;
        }
        let (Some(public_ip), Some(inside_ip)) = (e.outside, e.inside) else {
            return Applied::Incomplete;
        };
        let address = Address {
            vrf: e.outside_vrf,
            ip: public_ip,
            protocol: e.protocol,
        };
        let ports = e.outside_ports;
        let t = e.time_ms;
        let same =
            |entry: &Entry| entry.inside_ip == inside_ip && entry.inside_port == e.inside_port;
        let lifetime = self.limits.max_lifetime_ms;
        if let Some(timeline) = self.timeline_mut(&address, ports) {
            let answer = match op {
                Op::Create => timeline.create(t, same),
                _ => timeline.delete(t, same),
            };
            if let Some((applied, entry)) = answer {
                self.changes
                    .push(Change::Update(entry.binding(&address, ports)));
                return applied;
            }
            if op == Op::Create && timeline.covers_same(t, same) {
                return Applied::Duplicate;
            }
            if op == Op::Delete && timeline.deleted_after(t, same) {
                return Applied::Duplicate;
            }
        }
        self.last_id += 1;
        let (from_ms, to_ms, start_seen, deleted, applied) = match op {
            Op::Create => (t, t.saturating_add(lifetime), true, false, Applied::Opened),
            _ => match e.started_ms.filter(|&s| s <= t) {
                Some(start) => (start, t, true, true, Applied::Orphan),
                None => (t.saturating_sub(lifetime), t, false, true, Applied::Orphan),
            },
        };
        let binding = Binding {
            id: self.last_id,
            vrf: address.vrf,
            public_ip,
            ports,
            protocol: address.protocol,
            inside_ip,
            inside_port: e.inside_port,
            inside_vrf: e.inside_vrf,
            from_ms,
            to_ms,
            start_seen,
            deleted,
        };
        self.changes
            .push(Change::Insert(BindingRow { exporter, binding }));
        if self.len >= self.limits.max_bindings {
            return Applied::Refused;
        }
        self.insert(binding);
        applied
    }

    /// Who held `port` of `ip` (protocol, VRF) at `at_ms` (see the module
    /// documentation).
    pub fn lookup(
        &self,
        vrf: u32,
        ip: IpAddr,
        protocol: u8,
        port: u16,
        at_ms: u64,
    ) -> Option<Binding> {
        let mut best: Option<(Binding, bool)> = None;
        self.each_timeline(vrf, ip, protocol, port, |address, ports, timeline| {
            let Some((entry, seen)) = timeline.find(at_ms) else {
                return;
            };
            let better = match &best {
                None => true,
                // Known starts first, then the latest start; of guessed
                // ones, the first to end.
                Some((b, b_seen)) => match (seen, b_seen) {
                    (true, false) => true,
                    (false, true) => false,
                    (true, true) => entry.from_ms > b.from_ms,
                    (false, false) => entry.to_ms < b.to_ms,
                },
            };
            if better {
                best = Some((entry.binding(address, ports), seen));
            }
        });
        best.map(|(binding, _)| binding)
    }

    /// The binding of `port` (as [`Bindings::lookup`] finds them) whose
    /// start is the first after `at_ms`, if it starts by `until_ms`.
    pub fn next_start(
        &self,
        vrf: u32,
        ip: IpAddr,
        protocol: u8,
        port: u16,
        at_ms: u64,
        until_ms: u64,
    ) -> Option<Binding> {
        let mut first: Option<Binding> = None;
        self.each_timeline(vrf, ip, protocol, port, |address, ports, timeline| {
            if let Some(entry) = timeline.next_start(at_ms)
                && entry.from_ms <= until_ms
                && first.is_none_or(|f| entry.from_ms < f.from_ms)
            {
                first = Some(entry.binding(address, ports));
            }
        });
        first
    }

    /// Calls `f` with every timeline whose ports include `port`, for
    /// `protocol` and (port blocks without one) every protocol.
    fn each_timeline(
        &self,
        vrf: u32,
        ip: IpAddr,
        protocol: u8,
        port: u16,
        mut f: impl FnMut(&Address, PortRange, &Timeline),
    ) {
        for protocol in [protocol, 0]
            .into_iter()
            .take(if protocol == 0 { 1 } else { 2 })
        {
            let address = Address { vrf, ip, protocol };
            if let Some(timeline) = self.ports.get(&(address, port)) {
                f(&address, PortRange::one(port), timeline);
            }
            if let Some(blocks) = self.blocks.get(&address) {
                let after = blocks.list.partition_point(|(r, _)| r.start <= port);
                for (range, timeline) in blocks.list[..after].iter().rev() {
                    if u32::from(range.start) + u32::from(blocks.max_span) < u32::from(port) {
                        break;
                    }
                    if range.contains(port) {
                        f(&address, *range, timeline);
                    }
                }
            }
        }
    }

    /// The protocols with bindings on `ip` (VRF `vrf`) whose ports include
    /// `port`, for a lookup that names no protocol.
    pub fn protocols(&self, vrf: u32, ip: IpAddr, port: u16) -> Vec<u8> {
        let mut protocols: Vec<u8> = self
            .ports
            .keys()
            .filter(|(a, p)| a.vrf == vrf && a.ip == ip && *p == port)
            .map(|(a, _)| a.protocol)
            .chain(
                self.blocks
                    .iter()
                    .filter(|(a, b)| {
                        a.vrf == vrf && a.ip == ip && b.list.iter().any(|(r, _)| r.contains(port))
                    })
                    .map(|(a, _)| a.protocol),
            )
            .collect();
        protocols.sort_unstable();
        protocols.dedup();
        protocols
    }

    /// Drops from memory what ended more than the retention before `now_ms`,
    /// then, beyond `max_bindings`, what ended earliest.
    pub fn prune(&mut self, now_ms: u64) -> Pruned {
        let cutoff = now_ms.saturating_sub(self.limits.memory_retention_ms);
        let mut pruned = Pruned {
            expired: self.retain(|e| e.to_ms >= cutoff),
            ..Pruned::default()
        };
        // Near full: make room by the earliest-ended, down to three quarters.
        if self.len * 8 > self.limits.max_bindings * 7 {
            let target = self.limits.max_bindings * 3 / 4;
            let mut ended: Vec<u64> = self
                .entries()
                .map(|e| e.to_ms)
                .filter(|&to| to <= now_ms)
                .collect();
            let excess = (self.len - target).min(ended.len());
            if excess > 0 {
                let (_, &mut last, _) = ended.select_nth_unstable(excess - 1);
                pruned.evicted = self.retain(|e| e.to_ms > last || e.to_ms > now_ms);
            }
        }
        pruned.kept = self.len;
        pruned.open = self
            .entries()
            .filter(|e| !e.deleted && e.to_ms > now_ms)
            .count();
        pruned
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.ports
            .values()
            .chain(
                self.blocks
                    .values()
                    .flat_map(|b| b.list.iter().map(|(_, t)| t)),
            )
            .flat_map(Timeline::as_slice)
    }

    /// Keeps the entries `keep` accepts; returns how many left.
    fn retain(&mut self, keep: impl Fn(&Entry) -> bool + Copy) -> usize {
        let before = self.len;
        let mut len = 0;
        self.ports.retain(|_, t| {
            let kept = t.retain(keep);
            len += kept;
            kept > 0
        });
        self.blocks.retain(|_, blocks| {
            blocks.list.retain_mut(|(_, t)| {
                let kept = t.retain(keep);
                len += kept;
                kept > 0
            });
            !blocks.list.is_empty()
        });
        self.len = len;
        before - len
    }

    fn timeline_mut(&mut self, address: &Address, ports: PortRange) -> Option<&mut Timeline> {
        if ports.is_one() {
            return self.ports.get_mut(&(*address, ports.start));
        }
        let blocks = self.blocks.get_mut(address)?;
        let at = blocks.list.binary_search_by(|(r, _)| r.cmp(&ports)).ok()?;
        Some(&mut blocks.list[at].1)
    }

    fn insert(&mut self, b: Binding) {
        let address = Address {
            vrf: b.vrf,
            ip: b.public_ip,
            protocol: b.protocol,
        };
        let entry = Entry::of(&b);
        self.len += 1;
        if b.ports.is_one() {
            match self.ports.get_mut(&(address, b.ports.start)) {
                Some(timeline) => timeline.insert(entry),
                None => {
                    self.ports
                        .insert((address, b.ports.start), Timeline::One(entry));
                }
            }
            return;
        }
        let blocks = self.blocks.entry(address).or_default();
        blocks.max_span = blocks.max_span.max(b.ports.end - b.ports.start);
        match blocks.list.binary_search_by(|(r, _)| r.cmp(&b.ports)) {
            Ok(at) => blocks.list[at].1.insert(entry),
            Err(at) => blocks.list.insert(at, (b.ports, Timeline::One(entry))),
        }
    }
}

#[cfg(test)]
mod tests;
