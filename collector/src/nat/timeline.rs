//! The bindings of one public port (or port block), sorted by start. Most
//! have one binding at a time, kept inline: no allocation per port.

use std::net::IpAddr;

use super::{Address, Applied, Binding};
use crate::netflow::nat::PortRange;

/// One binding, without the public side its timeline's key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub inside_ip: IpAddr,
    pub inside_port: Option<u16>,
    pub inside_vrf: u32,
    pub start_seen: bool,
    pub deleted: bool,
}

impl Entry {
    pub fn of(b: &Binding) -> Self {
        Self {
            id: b.id,
            from_ms: b.from_ms,
            to_ms: b.to_ms,
            inside_ip: b.inside_ip,
            inside_port: b.inside_port,
            inside_vrf: b.inside_vrf,
            start_seen: b.start_seen,
            deleted: b.deleted,
        }
    }

    pub fn binding(&self, address: &Address, ports: PortRange) -> Binding {
        Binding {
            id: self.id,
            vrf: address.vrf,
            public_ip: address.ip,
            ports,
            protocol: address.protocol,
            inside_ip: self.inside_ip,
            inside_port: self.inside_port,
            inside_vrf: self.inside_vrf,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            start_seen: self.start_seen,
            deleted: self.deleted,
        }
    }

    fn key(&self) -> (u64, u64) {
        (self.from_ms, self.id)
    }
}

#[derive(Debug)]
pub(super) enum Timeline {
    One(Entry),
    /// Sorted by (start, id).
    Many(Vec<Entry>),
}

impl Timeline {
    pub fn as_slice(&self) -> &[Entry] {
        match self {
            Self::One(only) => std::slice::from_ref(only),
            Self::Many(entries) => entries,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Entry] {
        match self {
            Self::One(only) => std::slice::from_mut(only),
            Self::Many(entries) => entries,
        }
    }

    pub fn insert(&mut self, entry: Entry) {
        match self {
            Self::One(only) => {
                let mut both = vec![*only, entry];
                both.sort_unstable_by_key(Entry::key);
                *self = Self::Many(both);
            }
            Self::Many(entries) => {
                let at = entries.partition_point(|e| e.key() < entry.key());
                entries.insert(at, entry);
            }
        }
    }

    /// Keeps what `keep` accepts; returns how many are left (at 0 the
    /// caller drops the timeline).
    pub fn retain(&mut self, keep: impl Fn(&Entry) -> bool) -> usize {
        match self {
            Self::One(only) => usize::from(keep(only)),
            Self::Many(entries) => {
                entries.retain(|e| keep(e));
                let left = entries.len();
                if let [only] = entries[..] {
                    *self = Self::One(only);
                }
                left
            }
        }
    }

    /// The binding that held the port at `at_ms`, and whether its start
    /// was seen (see the module documentation of `nat`).
    pub fn find(&self, at_ms: u64) -> Option<(&Entry, bool)> {
        let entries = self.as_slice();
        let started = entries.partition_point(|e| e.from_ms <= at_ms);
        let entries = &entries[..started];
        if let Some(seen) = entries.iter().rev().find(|e| e.start_seen)
            && at_ms < seen.to_ms
        {
            return Some((seen, true));
        }
        entries
            .iter()
            .filter(|e| !e.start_seen && at_ms < e.to_ms)
            .min_by_key(|e| e.to_ms)
            .map(|e| (e, false))
    }

    /// The first binding whose start was seen after `at_ms`.
    pub fn next_start(&self, at_ms: u64) -> Option<&Entry> {
        let entries = self.as_slice();
        let started = entries.partition_point(|e| e.from_ms <= at_ms);
        entries[started..].iter().find(|e| e.start_seen)
    }

    /// A create at `t` for a binding known only from its delete (the same
    /// identity, start guessed, ending after `t`): it gets its start.
    pub fn create(&mut self, t: u64, same: impl Fn(&Entry) -> bool) -> Option<(Applied, Entry)> {
        let entry = self
            .as_mut_slice()
            .iter_mut()
            .filter(|e| same(e) && !e.start_seen && e.to_ms > t)
            .min_by_key(|e| e.to_ms)?;
        entry.from_ms = t;
        entry.start_seen = true;
        let done = *entry;
        if let Self::Many(entries) = self {
            entries.sort_unstable_by_key(Entry::key);
        }
        Some((Applied::Completed, done))
    }

    /// Whether the latest binding of the identity started by `t` still
    /// holds at `t`: a create then repeats it.
    pub fn covers_same(&self, t: u64, same: impl Fn(&Entry) -> bool) -> bool {
        self.latest_same(t, same).is_some_and(|e| t < e.to_ms)
    }

    /// A delete at `t` ends the latest binding of the identity started by
    /// `t`, if no delete ended it yet.
    pub fn delete(&mut self, t: u64, same: impl Fn(&Entry) -> bool) -> Option<(Applied, Entry)> {
        let entries = self.as_mut_slice();
        let started = entries.partition_point(|e| e.from_ms <= t);
        let entry = entries[..started].iter_mut().rev().find(|e| same(e))?;
        if entry.deleted {
            return None;
        }
        entry.to_ms = t;
        entry.deleted = true;
        Some((Applied::Closed, *entry))
    }

    /// Whether a delete at or after `t` already ended the latest binding
    /// of the identity started by `t`: a delete at `t` then repeats it.
    pub fn deleted_after(&self, t: u64, same: impl Fn(&Entry) -> bool) -> bool {
        self.latest_same(t, same)
            .is_some_and(|e| e.deleted && e.to_ms >= t)
    }

    fn latest_same(&self, t: u64, same: impl Fn(&Entry) -> bool) -> Option<&Entry> {
        let entries = self.as_slice();
        let started = entries.partition_point(|e| e.from_ms <= t);
        entries[..started].iter().rev().find(|e| same(e))
    }
}
