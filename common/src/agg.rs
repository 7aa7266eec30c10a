//! Aggregation: which aggregate(s) a flow record belongs to and what it adds
//! there. Both data paths call these functions, so XDP and the socket path
//! cannot disagree about a key.

use crate::table;

/// Addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
pub type Ip = [u8; 16];

pub const fn ip_from_v4(v4: [u8; 4]) -> Ip {
    // One 16-byte value: built byte by byte, the zero prefix became a call
    // to `memset` per address in the kernel.
    ((0xffff_u128 << 32) | u32::from_be_bytes(v4) as u128).to_be_bytes()
}

/// Which side of a flow is the subscriber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The source is a subscriber: it sent these bytes.
    Up = 0,
    /// The destination is a subscriber: it received these bytes.
    Down = 1,
    /// Neither end is a subscriber; keyed by the source.
    Transit = 2,
}

impl Direction {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Up),
            1 => Some(Self::Down),
            2 => Some(Self::Transit),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Transit => "transit",
        }
    }
}

/// Key fields an aggregation profile may keep (bits of `KEEP_FIELDS`).
/// Subscriber IP, direction and time bucket are always kept.
pub const KEEP_PEER_IP: u32 = 1 << 0;
pub const KEEP_SUBSCRIBER_PORT: u32 = 1 << 1;
pub const KEEP_PEER_PORT: u32 = 1 << 2;
pub const KEEP_PROTOCOL: u32 = 1 << 3;
pub const KEEP_EXPORTER: u32 = 1 << 4;
pub const KEEP_ALL: u32 =
    KEEP_PEER_IP | KEEP_SUBSCRIBER_PORT | KEEP_PEER_PORT | KEEP_PROTOCOL | KEEP_EXPORTER;

/// Bits of `FLAGS`.
/// Time a record by its first-switched time instead of its last.
pub const FLAG_TIME_FROM_START: u32 = 1 << 0;
/// Multiply bytes and packets by the export's sampling interval.
pub const FLAG_SCALE_SAMPLING: u32 = 1 << 1;
/// Accept exports only from the `EXPORTERS` map.
pub const FLAG_EXPORTER_ALLOWLIST: u32 = 1 << 2;
/// Bill only records inside the billing scope (`BILLING_SCOPE` map).
pub const FLAG_BILLING_SCOPE: u32 = 1 << 3;
/// Scale sFlow samples by the rate renormalised from the sample pool
/// (`sflow::RATES_MAP`) where one is known.
pub const FLAG_SFLOW_RENORMALIZE: u32 = 1 << 4;
/// Count flow bytes per listed interface (`interfaces::INTERFACE_FLOWS_MAP`).
/// (Bit 4 is sFlow's.)
pub const FLAG_INTERFACE_FLOWS: u32 = 1 << 5;
/// Destination classes are configured: look up each peer's class in
/// `CLASS_NETS` (without it, every key's class is [`NO_CLASS`]).
pub const FLAG_CLASSES: u32 = 1 << 6;

/// The class of a peer no class network holds; classes configured are
/// numbered from 1 in the configuration's order.
pub const NO_CLASS: u8 = 0;

/// One entry of the billing scope: records from `exporter` that entered or
/// left it by interface `ifindex` count ([`ANY_INTERFACE`]: all of them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    pub exporter: Ip,
    pub ifindex: u32,
}

pub const ANY_INTERFACE: u32 = u32::MAX;

/// Whether `record` from `exporter` is billed, given the scope's entries
/// (`contains`). Several routers may see the same traffic; the scope picks
/// the one vantage point (exporter, and its subscriber-facing interfaces)
/// that counts, so a flow is billed once.
#[inline(always)]
pub fn in_scope(contains: impl Fn(&ScopeKey) -> bool, exporter: &Ip, record: &FlowRecord) -> bool {
    let key = |ifindex| ScopeKey {
        exporter: *exporter,
        ifindex,
    };
    contains(&key(ANY_INTERFACE))
        || contains(&key(record.input_if))
        || contains(&key(record.output_if))
}

/// One aggregate's identity. `repr(C)` with explicit padding: the kernel
/// hashes all 64 bytes, so padding must be zero, never uninitialised.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggKey {
    pub subscriber: Ip,
    pub peer: Ip,
    pub exporter: Ip,
    /// Unix ms at the start of the record's time bucket.
    pub bucket_start_ms: u64,
    pub subscriber_port: u16,
    pub peer_port: u16,
    pub protocol: u8,
    /// A [`Direction`].
    pub direction: u8,
    /// The destination class of the peer address ([`NO_CLASS`]: none).
    pub class: u8,
    pub _pad: u8,
}

/// [`AggKey`] for the common case where subscriber, peer and exporter are
/// all IPv4 (or masked out by the profile): 32 bytes instead of 64, which
/// halves what the kernel hashes and compares per record. The kernel keeps
/// these in their own maps; [`AggKeyV4::unpack`] gives back the exact
/// [`AggKey`] that [`Profile::key`] builds for the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKeyV4 {
    pub bucket_start_ms: u64,
    pub subscriber: [u8; 4],
    pub peer: [u8; 4],
    pub exporter: [u8; 4],
    pub subscriber_port: u16,
    pub peer_port: u16,
    pub protocol: u8,
    pub direction: u8,
    /// `ABSENT_*` bits: which addresses the profile masked out (all-zero in
    /// [`AggKey`], which no IPv4-mapped address is).
    pub absent: u8,
    pub class: u8,
    /// Padding as a whole field: zeroing a `[u8; 4]` became a `memset`
    /// call per record in the kernel.
    pub _pad2: u32,
}

pub const ABSENT_PEER: u8 = 1 << 0;
pub const ABSENT_EXPORTER: u8 = 1 << 1;

impl AggKeyV4 {
    pub fn unpack(&self) -> AggKey {
        let ip = |v4: [u8; 4], absent: u8| {
            if self.absent & absent != 0 {
                [0; 16]
            } else {
                ip_from_v4(v4)
            }
        };
        AggKey {
            subscriber: ip_from_v4(self.subscriber),
            peer: ip(self.peer, ABSENT_PEER),
            exporter: ip(self.exporter, ABSENT_EXPORTER),
            bucket_start_ms: self.bucket_start_ms,
            subscriber_port: self.subscriber_port,
            peer_port: self.peer_port,
            protocol: self.protocol,
            direction: self.direction,
            class: self.class,
            _pad: 0,
        }
    }
}

/// The last four bytes of an IPv4-mapped address.
#[inline(always)]
fn mapped_v4(ip: &Ip) -> Option<[u8; 4]> {
    crate::members::v4_of(ip).map(u32::to_be_bytes)
}

/// What an aggregate holds. Per-CPU partials merge with [`AggValue::merge`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    /// Earliest and latest record time (Unix ms) seen; meaningless while
    /// `flows` is 0 (an untouched per-CPU slot).
    pub first_ms: u64,
    pub last_ms: u64,
}

impl AggValue {
    /// One flow record of `bytes` and `packets` at `time_ms`.
    #[inline(always)]
    pub fn one(bytes: u64, packets: u64, time_ms: u64) -> Self {
        Self {
            bytes,
            packets,
            flows: 1,
            first_ms: time_ms,
            last_ms: time_ms,
        }
    }

    /// Adds `other` into `self`; empty values (`flows == 0`) are neutral.
    pub fn merge(&mut self, other: &Self) {
        if other.flows == 0 {
            return;
        }
        if self.flows == 0 {
            *self = *other;
            return;
        }
        // Saturating: counters come from exporters (8-byte octet counts,
        // scaled by sampling) and must not wrap round to small bills.
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets = self.packets.saturating_add(other.packets);
        self.flows = self.flows.saturating_add(other.flows);
        self.first_ms = min(self.first_ms, other.first_ms);
        self.last_ms = max(self.last_ms, other.last_ms);
    }
}

// `core::cmp::{min, max}` on u64 compile to branches the BPF backend handles;
// spelled out to keep the kernel build free of generic trait calls.
const fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}
const fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

/// An aggregate that did not fit the map, as sent through the overflow ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    pub key: AggKey,
    pub value: AggValue,
}

/// The parts of a flow record that aggregation uses, whatever its format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    pub src: Ip,
    pub dst: Ip,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// Already scaled by sampling, if that applies.
    pub bytes: u64,
    pub packets: u64,
    /// Unix ms by which the record is timed (end or start, per `FLAGS`).
    pub time_ms: u64,
    /// SNMP interface indexes the flow entered and left the exporter by
    /// (0 when the export does not say).
    pub input_if: u32,
    pub output_if: u32,
}

/// A flow record whose addresses are both IPv4, as NetFlow v5's always
/// are: what the kernel aggregates by the 32-byte key without widening its
/// addresses to 16 bytes ([`Profile::key_v4_of`]). [`V4Record::widen_into`]
/// gives the [`FlowRecord`] every other rule takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Record {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub bytes: u64,
    pub packets: u64,
    pub time_ms: u64,
    pub input_if: u32,
    pub output_if: u32,
}

impl V4Record {
    #[inline(always)]
    pub fn widen_into(&self, out: &mut FlowRecord) {
        out.src = ip_from_v4(self.src.to_be_bytes());
        out.dst = ip_from_v4(self.dst.to_be_bytes());
        out.src_port = self.src_port;
        out.dst_port = self.dst_port;
        out.protocol = self.protocol;
        out.bytes = self.bytes;
        out.packets = self.packets;
        out.time_ms = self.time_ms;
        out.input_if = self.input_if;
        out.output_if = self.output_if;
    }

    /// [`FlowRecord::value`].
    #[inline(always)]
    pub fn value(&self) -> AggValue {
        AggValue::one(self.bytes, self.packets, self.time_ms)
    }

    /// [`peer`].
    #[inline(always)]
    pub fn peer(&self, dir: Direction) -> u32 {
        if peer_is_source(dir) {
            self.src
        } else {
            self.dst
        }
    }
}

/// The time bucket of the last record: the records of one export have
/// nearly the same times, and [`Profile::bucket_start`]'s 64-bit division
/// costs the kernel tens of cycles per record, two comparisons none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketCache {
    start: u64,
    /// Exclusive; 0 while nothing is cached.
    end: u64,
}

impl BucketCache {
    /// [`Profile::bucket_start`] of `time_ms`. One cache serves one
    /// profile (the kernel starts one per export).
    #[inline(always)]
    pub fn start_of(&mut self, profile: &Profile, time_ms: u64) -> u64 {
        if self.start <= time_ms && time_ms < self.end {
            return self.start;
        }
        self.start = profile.bucket_start(time_ms);
        self.end = self.start.saturating_add(profile.bucket_width());
        self.start
    }
}

/// How aggregation folds records: which key fields survive and how wide a
/// time bucket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub keep: u32,
    pub bucket_ms: u64,
}

/// The key fields of a record seen from one side, before addresses are
/// stored in either key form.
struct Sides<'a> {
    subscriber: &'a Ip,
    /// `None`: masked out by the profile.
    peer: Option<&'a Ip>,
    exporter: Option<&'a Ip>,
    bucket_start_ms: u64,
    subscriber_port: u16,
    peer_port: u16,
    protocol: u8,
}

impl Profile {
    /// The aggregate `record` adds to when its subscriber side is `dir`,
    /// its peer (see [`peer`]) is of `class` and its time bucket starts at
    /// `bucket_start_ms` ([`Profile::bucket_start`] of its time, which the
    /// kernel takes from a [`BucketCache`]).
    #[inline(always)]
    pub fn key(
        &self,
        record: &FlowRecord,
        dir: Direction,
        exporter: &Ip,
        class: u8,
        bucket_start_ms: u64,
    ) -> AggKey {
        let s = self.sides(record, dir, exporter, bucket_start_ms);
        AggKey {
            subscriber: *s.subscriber,
            // A zero `u128`, not `[0; 16]`, which the kernel build zeroes
            // through a call to `memset`.
            peer: s.peer.map_or(0u128.to_ne_bytes(), |ip| *ip),
            exporter: s.exporter.map_or(0u128.to_ne_bytes(), |ip| *ip),
            bucket_start_ms: s.bucket_start_ms,
            subscriber_port: s.subscriber_port,
            peer_port: s.peer_port,
            protocol: s.protocol,
            direction: dir as u8,
            class,
            _pad: 0,
        }
    }

    /// Writes [`Profile::key`] in its 32-byte form into `out` (in place:
    /// the kernel has no stack to spare for a copy) when every address it
    /// keeps is IPv4; false, with `out` partly written, otherwise.
    #[inline(always)]
    pub fn key_v4_into(
        &self,
        record: &FlowRecord,
        dir: Direction,
        exporter: &Ip,
        class: u8,
        bucket_start_ms: u64,
        out: &mut AggKeyV4,
    ) -> bool {
        let s = self.sides(record, dir, exporter, bucket_start_ms);
        let Some(subscriber) = mapped_v4(s.subscriber) else {
            return false;
        };
        let mut absent = 0;
        let mut v4 = |ip: Option<&Ip>, absent_bit: u8, to: &mut [u8; 4]| match ip {
            Some(ip) => mapped_v4(ip).map(|v4| *to = v4).is_some(),
            None => {
                absent |= absent_bit;
                *to = [0; 4];
                true
            }
        };
        let (mut peer, mut exporter) = ([0; 4], [0; 4]);
        if !v4(s.peer, ABSENT_PEER, &mut peer) || !v4(s.exporter, ABSENT_EXPORTER, &mut exporter) {
            return false;
        }
        let key = AggKeyV4 {
            bucket_start_ms: s.bucket_start_ms,
            subscriber,
            peer,
            exporter,
            subscriber_port: s.subscriber_port,
            peer_port: s.peer_port,
            protocol: s.protocol,
            direction: dir as u8,
            absent,
            class,
            _pad2: 0,
        };
        table::store(key, out);
        true
    }

    /// [`Profile::key_v4_into`] for a record whose addresses are IPv4,
    /// from an exporter whose IPv4 address is `exporter` (not read when the
    /// profile drops the exporter), in the time bucket starting at
    /// `bucket_start_ms` ([`Profile::bucket_start`] of the record's time):
    /// always the 32-byte form.
    #[inline(always)]
    pub fn key_v4_of(
        &self,
        record: &V4Record,
        dir: Direction,
        exporter: u32,
        class: u8,
        bucket_start_ms: u64,
        out: &mut AggKeyV4,
    ) {
        let (subscriber, peer, subscriber_port, peer_port) = match dir {
            Direction::Up | Direction::Transit => {
                (record.src, record.dst, record.src_port, record.dst_port)
            }
            Direction::Down => (record.dst, record.src, record.dst_port, record.src_port),
        };
        let keep = |bit: u32| self.keep & bit != 0;
        let mut absent = 0;
        let mut kept = |addr: u32, bit: u32, absent_bit: u8| {
            if keep(bit) {
                addr
            } else {
                absent |= absent_bit;
                0
            }
        };
        let peer = kept(peer, KEEP_PEER_IP, ABSENT_PEER).to_be_bytes();
        let exporter = kept(exporter, KEEP_EXPORTER, ABSENT_EXPORTER).to_be_bytes();
        let key = AggKeyV4 {
            bucket_start_ms,
            subscriber: subscriber.to_be_bytes(),
            peer,
            exporter,
            subscriber_port: self.kept(KEEP_SUBSCRIBER_PORT, subscriber_port),
            peer_port: self.kept(KEEP_PEER_PORT, peer_port),
            protocol: self.kept(KEEP_PROTOCOL, record.protocol),
            direction: dir as u8,
            absent,
            class,
            _pad2: 0,
        };
        table::store(key, out);
    }

    /// The start of the time bucket holding `time_ms`.
    #[inline(always)]
    pub fn bucket_start(&self, time_ms: u64) -> u64 {
        time_ms - time_ms % self.bucket_width()
    }

    /// `value` if the profile keeps the field `bit`, else 0.
    #[inline(always)]
    fn kept<T: Default>(&self, bit: u32, value: T) -> T {
        if self.keep & bit != 0 {
            value
        } else {
            T::default()
        }
    }

    /// A zero bucket width would divide by zero; it is taken as 1 ms.
    #[inline(always)]
    fn bucket_width(&self) -> u64 {
        if self.bucket_ms == 0 {
            1
        } else {
            self.bucket_ms
        }
    }

    #[inline(always)]
    fn sides<'a>(
        &self,
        record: &'a FlowRecord,
        dir: Direction,
        exporter: &'a Ip,
        bucket_start_ms: u64,
    ) -> Sides<'a> {
        let (subscriber, peer, subscriber_port, peer_port) = match dir {
            Direction::Up | Direction::Transit => {
                (&record.src, &record.dst, record.src_port, record.dst_port)
            }
            Direction::Down => (&record.dst, &record.src, record.dst_port, record.src_port),
        };
        let keep = |bit: u32| self.keep & bit != 0;
        Sides {
            subscriber,
            peer: keep(KEEP_PEER_IP).then_some(peer),
            exporter: keep(KEEP_EXPORTER).then_some(exporter),
            bucket_start_ms,
            subscriber_port: self.kept(KEEP_SUBSCRIBER_PORT, subscriber_port),
            peer_port: self.kept(KEEP_PEER_PORT, peer_port),
            protocol: self.kept(KEEP_PROTOCOL, record.protocol),
        }
    }
}

/// The address whose destination class a record's aggregate for `dir`
/// carries: the other side than the subscriber's (for transit, keyed by
/// the source, the destination). Classes are looked up by longest prefix
/// (the kernel's `CLASS_NETS` trie, the socket path's twin of it).
#[inline(always)]
pub fn peer(record: &FlowRecord, dir: Direction) -> &Ip {
    if peer_is_source(dir) {
        &record.src
    } else {
        &record.dst
    }
}

/// Whether [`peer`] is the source of a record (else its destination).
#[inline(always)]
pub const fn peer_is_source(dir: Direction) -> bool {
    matches!(dir, Direction::Down)
}

impl FlowRecord {
    /// What this record adds to its aggregate(s).
    #[inline(always)]
    pub fn value(&self) -> AggValue {
        AggValue::one(self.bytes, self.packets, self.time_ms)
    }
}

/// The aggregates a record goes to, given whether its source and its
/// destination are subscribers: up for the source, down for the
/// destination, both for traffic between subscribers, transit otherwise.
#[inline(always)]
pub fn directions(src_inside: bool, dst_inside: bool) -> [Option<Direction>; 2] {
    match (src_inside, dst_inside) {
        (true, true) => [Some(Direction::Up), Some(Direction::Down)],
        (true, false) => [Some(Direction::Up), None],
        (false, true) => [Some(Direction::Down), None],
        (false, false) => [Some(Direction::Transit), None],
    }
}

/// Scales a counter by a sampling interval (1 in `interval`), saturating.
/// Built from 32×32-bit products: `saturating_mul`, and even `a > MAX / b`,
/// become a 128-bit multiply the BPF backend cannot lower.
#[inline(always)]
pub fn scale(value: u64, interval: u32) -> u64 {
    if interval <= 1 {
        return value;
    }
    let interval = interval as u64;
    let high = (value >> 32) * interval;
    let low = (value & 0xffff_ffff) * interval;
    if high >> 32 != 0 {
        return u64::MAX;
    }
    let high = high << 32;
    let sum = high.wrapping_add(low);
    if sum < high { u64::MAX } else { sum }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are `repr(C)` with explicit padding fields, so no
    // implicit padding, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::AggKeyV4 {}
    unsafe impl aya::Pod for super::AggValue {}
    unsafe impl aya::Pod for super::Overflow {}
    unsafe impl aya::Pod for super::ScopeKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_has_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<AggKey>(),
            16 * 3 + 8 + 2 + 2 + 1 + 1 + 1 + 1
        );
        assert_eq!(core::mem::size_of::<AggValue>(), 40);
    }

    #[test]
    fn merging_ignores_untouched_per_cpu_slots() {
        let mut sum = AggValue::default();
        let a = AggValue {
            bytes: 10,
            packets: 1,
            flows: 1,
            first_ms: 50,
            last_ms: 60,
        };
        let b = AggValue {
            bytes: 5,
            packets: 2,
            flows: 1,
            first_ms: 40,
            last_ms: 55,
        };
        for v in [AggValue::default(), a, AggValue::default(), b] {
            sum.merge(&v);
        }
        assert_eq!(
            sum,
            AggValue {
                bytes: 15,
                packets: 3,
                flows: 2,
                first_ms: 40,
                last_ms: 60
            }
        );
    }

    #[test]
    fn merging_absurd_counters_saturates_rather_than_wraps() {
        let huge = AggValue {
            bytes: u64::MAX - 1,
            packets: u64::MAX,
            flows: 1,
            first_ms: 1,
            last_ms: 2,
        };
        let mut sum = huge;
        sum.merge(&huge);
        assert_eq!((sum.bytes, sum.packets, sum.flows), (u64::MAX, u64::MAX, 2));
    }

    #[test]
    fn down_swaps_sides_and_profiles_mask_fields() {
        let record = FlowRecord {
            src: ip_from_v4([198, 19, 0, 1]),
            dst: ip_from_v4([198, 18, 100, 7]),
            src_port: 443,
            dst_port: 50_000,
            protocol: 6,
            bytes: 1500,
            packets: 1,
            time_ms: 61_234,
            input_if: 0,
            output_if: 0,
        };
        let exporter = ip_from_v4([198, 18, 0, 1]);
        let detail = Profile {
            keep: KEEP_ALL,
            bucket_ms: 60_000,
        };
        let key = detail.key(&record, Direction::Down, &exporter, 3, 60_000);
        assert_eq!(peer(&record, Direction::Down), &record.src);
        assert_eq!(peer(&record, Direction::Up), &record.dst);
        assert_eq!(key.class, 3);
        assert_eq!(key.subscriber, record.dst);
        assert_eq!(key.peer, record.src);
        assert_eq!((key.subscriber_port, key.peer_port), (50_000, 443));
        assert_eq!(key.bucket_start_ms, 60_000);
        let subscriber = Profile {
            keep: 0,
            bucket_ms: 60_000,
        };
        let key = subscriber.key(&record, Direction::Down, &exporter, 0, 60_000);
        assert_eq!(
            key,
            AggKey {
                subscriber: record.dst,
                bucket_start_ms: 60_000,
                direction: Direction::Down as u8,
                ..AggKey::default()
            }
        );
    }

    #[test]
    fn the_short_key_unpacks_to_the_full_one_and_only_exists_for_ipv4() {
        let v4 = |last| ip_from_v4([198, 18, 100, last]);
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let record = |src, dst| FlowRecord {
            src,
            dst,
            src_port: 40_000,
            dst_port: 443,
            protocol: 6,
            time_ms: 1_700_000_061_234,
            ..FlowRecord::default()
        };
        for keep in 0..=KEEP_ALL {
            let profile = Profile {
                keep,
                bucket_ms: 60_000,
            };
            for dir in [Direction::Up, Direction::Down, Direction::Transit] {
                for (r, exporter) in [
                    (record(v4(1), v4(2)), v4(9)),
                    (record(v4(1), v6), v4(9)),
                    (record(v6, v4(2)), v4(9)),
                    (record(v4(1), v4(2)), v6),
                    (record(v4(1), [0; 16]), v4(9)),
                ] {
                    let class = keep as u8 % 3;
                    let bucket = profile.bucket_start(r.time_ms);
                    let full = profile.key(&r, dir, &exporter, class, bucket);
                    let all_v4 = [Some(full.subscriber), Some(full.peer), Some(full.exporter)]
                        .iter()
                        .zip([true, keep & KEEP_PEER_IP != 0, keep & KEEP_EXPORTER != 0])
                        .all(|(ip, kept)| !kept || mapped_v4(&ip.unwrap()).is_some());
                    let mut short = AggKeyV4::default();
                    if profile.key_v4_into(&r, dir, &exporter, class, bucket, &mut short) {
                        assert!(all_v4, "{keep:#x} {dir:?}");
                        assert_eq!(short.unpack(), full, "{keep:#x} {dir:?}");
                    } else {
                        assert!(!all_v4, "{keep:#x} {dir:?} {full:?}");
                    }
                }
            }
        }
        assert_eq!(core::mem::size_of::<AggKeyV4>(), 32);
    }

    #[test]
    fn the_ipv4_record_builds_the_short_key_the_widened_record_does() {
        // A small xorshift: varied addresses, ports, times and classes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let (a, b) = (next(), next());
            let record = V4Record {
                src: a as u32,
                dst: (a >> 32) as u32,
                src_port: b as u16,
                dst_port: (b >> 16) as u16,
                protocol: (b >> 32) as u8,
                bytes: next(),
                packets: next(),
                time_ms: next() >> 20,
                input_if: (b >> 40) as u32 & 0xffff,
                output_if: (b >> 56) as u32,
            };
            let mut wide = FlowRecord::default();
            record.widen_into(&mut wide);
            assert_eq!(wide.value(), record.value());
            let exporter = next() as u32;
            let profile = Profile {
                keep: (b >> 8) as u32 & KEEP_ALL,
                bucket_ms: [0, 1, 60_000, 300_000][(b >> 60) as usize % 4],
            };
            for dir in [Direction::Up, Direction::Down, Direction::Transit] {
                let class = (a >> 56) as u8;
                let mut expected = AggKeyV4::default();
                let exporter_ip = ip_from_v4(exporter.to_be_bytes());
                let bucket = profile.bucket_start(record.time_ms);
                assert!(profile.key_v4_into(
                    &wide,
                    dir,
                    &exporter_ip,
                    class,
                    bucket,
                    &mut expected
                ));
                let mut key = AggKeyV4 {
                    _pad2: 7,
                    absent: 0xff,
                    ..AggKeyV4::default()
                };
                profile.key_v4_of(&record, dir, exporter, class, bucket, &mut key);
                assert_eq!(key, expected, "{profile:?} {dir:?}");
                assert_eq!(
                    ip_from_v4(record.peer(dir).to_be_bytes()),
                    *peer(&wide, dir)
                );
            }
        }
    }

    #[test]
    fn the_bucket_cache_answers_what_the_division_does() {
        for bucket_ms in [0, 1, 7, 60_000] {
            let profile = Profile {
                keep: KEEP_ALL,
                bucket_ms,
            };
            let mut cache = BucketCache::default();
            let times = [
                0,
                59_999,
                60_000,
                59_999,
                1_700_000_061_234,
                1_700_000_060_000,
                1_700_000_119_999,
                1_700_000_120_000,
                1_700_000_059_999,
                u64::MAX,
                u64::MAX - 1,
                0,
            ];
            for time in times {
                assert_eq!(
                    cache.start_of(&profile, time),
                    profile.bucket_start(time),
                    "{bucket_ms} {time}"
                );
            }
        }
    }

    #[test]
    fn scaling_multiplies_and_saturates() {
        assert_eq!(scale(1500, 0), 1500);
        assert_eq!(scale(1500, 1), 1500);
        assert_eq!(scale(1500, 100), 150_000);
        assert_eq!(scale(u64::MAX / 3, 3), u64::MAX / 3 * 3);
        assert_eq!(scale(u64::MAX / 3 + 1, 3), u64::MAX);
        assert_eq!(scale(1 << 40, 1 << 30), u64::MAX);
        assert_eq!(
            scale((1 << 32) - 1, u32::MAX),
            ((1u64 << 32) - 1) * u32::MAX as u64
        );
    }

    #[test]
    fn the_scope_bills_an_exporter_whole_or_by_interface() {
        let a = ip_from_v4([198, 18, 0, 1]);
        let b = ip_from_v4([198, 18, 0, 2]);
        let scope = [
            ScopeKey {
                exporter: a,
                ifindex: ANY_INTERFACE,
            },
            ScopeKey {
                exporter: b,
                ifindex: 7,
            },
        ];
        let contains = |k: &ScopeKey| scope.contains(k);
        let record = |input_if, output_if| FlowRecord {
            input_if,
            output_if,
            ..FlowRecord::default()
        };
        assert!(in_scope(contains, &a, &record(1, 2)));
        assert!(in_scope(contains, &b, &record(7, 2)));
        assert!(in_scope(contains, &b, &record(1, 7)));
        assert!(!in_scope(contains, &b, &record(1, 2)));
        assert!(!in_scope(
            contains,
            &ip_from_v4([198, 18, 0, 3]),
            &record(7, 7)
        ));
    }

    #[test]
    fn directions_follow_subscriber_membership() {
        use Direction::*;
        assert_eq!(directions(true, true), [Some(Up), Some(Down)]);
        assert_eq!(directions(true, false), [Some(Up), None]);
        assert_eq!(directions(false, true), [Some(Down), None]);
        assert_eq!(directions(false, false), [Some(Transit), None]);
    }
}
