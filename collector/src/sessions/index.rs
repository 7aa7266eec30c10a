//! Who held which address when. Per prefix length present, per network, the
//! intervals sorted by start: "who held X at T" is, for each prefix length
//! from the longest, one hash lookup and one binary search.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// `to_ms` of an interval still open. A sentinel rather than an `Option`
/// keeps an interval at 24 bytes instead of 32.
const OPEN: u64 = u64::MAX;

/// One holder of one network, from `from_ms` (inclusive) to `to_ms`
/// (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Interval {
    pub from_ms: u64,
    to_ms: u64,
    /// The holder's slot in the history's sessions.
    pub slot: u32,
}

impl Interval {
    pub fn to_ms(self) -> Option<u64> {
        (self.to_ms != OPEN).then_some(self.to_ms)
    }

    fn key(&self) -> (u64, u32) {
        (self.from_ms, self.slot)
    }

    fn is_empty(&self) -> bool {
        self.to_ms == self.from_ms
    }
}

#[derive(Debug, Default)]
pub(super) struct Index {
    v4: Family<Ipv4Addr>,
    v6: Family<Ipv6Addr>,
}

impl Index {
    /// Inserts or replaces the interval of `slot` on `net` that starts at
    /// `from_ms`. An empty one is removed instead: it never holds anything,
    /// and as the latest start it would hide the holder before it.
    pub fn set(&mut self, net: IpNet, slot: u32, from_ms: u64, to_ms: Option<u64>) {
        let interval = Interval {
            from_ms,
            to_ms: to_ms.unwrap_or(OPEN),
            slot,
        };
        match net.trunc() {
            IpNet::V4(net) => self.v4.set(net.prefix_len(), net.network(), interval),
            IpNet::V6(net) => self.v6.set(net.prefix_len(), net.network(), interval),
        }
    }

    /// The holder of `ip` at `at_ms`: on the longest matching network that
    /// has one, the interval that started last at or before `at_ms`, unless
    /// it has ended by then. A later start ends any earlier interval still
    /// open on the same network: a NAS does not hand one address to two
    /// subscribers, so the older one's Stop was lost.
    pub fn find(&self, ip: IpAddr, at_ms: u64) -> Option<Interval> {
        match ip {
            IpAddr::V4(ip) => self
                .v4
                .find(at_ms, |len| Ipv4Net::new_assert(ip, len).network()),
            IpAddr::V6(ip) => self
                .v6
                .find(at_ms, |len| Ipv6Net::new_assert(ip, len).network()),
        }
    }
}

/// One address family: prefix length → network → its intervals.
#[derive(Debug)]
struct Family<A> {
    by_len: BTreeMap<u8, HashMap<A, Timeline>>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Self {
            by_len: BTreeMap::new(),
        }
    }
}

impl<A: Copy + Eq + Hash> Family<A> {
    fn set(&mut self, len: u8, network: A, interval: Interval) {
        let networks = self.by_len.entry(len).or_default();
        match networks.entry(network) {
            Entry::Vacant(vacant) => {
                if !interval.is_empty() {
                    vacant.insert(Timeline::One(interval));
                }
            }
            Entry::Occupied(mut timeline) => {
                if !timeline.get_mut().set(interval) {
                    timeline.remove();
                }
            }
        }
        if networks.is_empty() {
            self.by_len.remove(&len);
        }
    }

    fn find(&self, at_ms: u64, network: impl Fn(u8) -> A) -> Option<Interval> {
        self.by_len.iter().rev().find_map(|(&len, networks)| {
            let timeline = networks.get(&network(len))?.as_slice();
            let started = timeline.partition_point(|i| i.from_ms <= at_ms);
            let latest = timeline[..started].last()?;
            (latest.to_ms > at_ms).then_some(*latest)
        })
    }
}

/// The intervals of one network, sorted by (start, slot), so that of two
/// sessions starting together the later one wins. Most networks have one
/// holder at a time, kept inline: no allocation per address.
#[derive(Debug)]
enum Timeline {
    One(Interval),
    Many(Vec<Interval>),
}

impl Timeline {
    fn as_slice(&self) -> &[Interval] {
        match self {
            Timeline::One(only) => std::slice::from_ref(only),
            Timeline::Many(intervals) => intervals,
        }
    }

    /// Inserts or replaces the interval with `interval`'s start and slot, or
    /// removes it if `interval` is empty. Returns whether any is left.
    fn set(&mut self, interval: Interval) -> bool {
        let empty = interval.is_empty();
        match self {
            Timeline::One(only) if only.key() == interval.key() => {
                *only = interval;
                !empty
            }
            Timeline::One(_) if empty => true,
            Timeline::One(only) => {
                let mut both = vec![*only, interval];
                both.sort_unstable_by_key(Interval::key);
                *self = Timeline::Many(both);
                true
            }
            Timeline::Many(intervals) => {
                match intervals.binary_search_by_key(&interval.key(), Interval::key) {
                    Ok(at) if empty => {
                        intervals.remove(at);
                    }
                    Ok(at) => intervals[at] = interval,
                    Err(_) if empty => {}
                    Err(at) => intervals.insert(at, interval),
                }
                if let [only] = intervals[..] {
                    *self = Timeline::One(only);
                }
                true
            }
        }
    }
}
