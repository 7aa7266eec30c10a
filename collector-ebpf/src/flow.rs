//! One flow record into its aggregate(s), whatever export format it came
//! from: a decoder (v5, v9/IPFIX, and later others) fills `Flow::record`
//! and calls [`Flow::aggregate`]. The record lives in a per-CPU scratch
//! map, not on the 512-byte BPF stack, which key, record and values
//! together would nearly fill.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_loop,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, lpm_trie::Key},
};
use flowtally_common::{
    Counter, MAX_SCOPE_ENTRIES, RecordStat,
    agg::{
        AggKey, AggValue, BucketCache, Direction, FLAG_BILLING_SCOPE, FLAG_CLASSES,
        FLAG_INTERFACE_FLOWS, FlowRecord, Ip, KEEP_EXPORTER, NO_CLASS, Profile, ScopeKey, V4Record,
        directions, in_scope, ip_from_v4, peer, peer_is_source,
    },
    class_table::{self, ASK_TRIE},
    members::{self, INSIDE, NetsV6, OUTSIDE, V4_TABLE_WORDS},
    table,
};

use crate::{
    BUCKET_MS, CLASS_NETS, FLAGS, KEEP_FIELDS, RECORD_STATS, SUBSCRIBER_NETS,
    aggregate::{self, Backlog, Partition, Tally, V4, V6},
    count, interfaces,
};

/// What every record of one export shares, and the record in hand. No map
/// pointer: the verifier forbids storing pointers in map values, so the
/// active generation is an index.
#[repr(C)]
pub struct Flow {
    pub flags: u32,
    pub active: u32,
    /// This CPU's partitions of the tables in generation `active`.
    partition: Partition<V4>,
    partition_v6: Partition<V6>,
    pub profile: Profile,
    pub exporter: Ip,
    pub record: FlowRecord,
    key: AggKey,
    value: AggValue,
    /// The class of the record's destination and source (by
    /// `peer_is_source`) where a direction needs it, looked up before
    /// the aggregation loop and read back from here: a value from map
    /// memory is one unknown scalar to the verifier, where a lookup inside
    /// the loop doubled the states it walks.
    classes: [u8; 2],
    /// This export's record outcomes: added to `RECORD_STATS` once per
    /// export by [`Flow::finish`], not per record.
    tally: Tally,
    /// This export's IPv4 aggregates on their way into the table.
    backlog: Backlog,
    /// The record in hand when every address is IPv4 ([`Flow::aggregate_v4`]).
    pub record_v4: V4Record,
    /// The exporter's IPv4 address, when it has one.
    exporter_v4: u32,
    /// Whether the exporter fits the 32-byte key: IPv4, or dropped by the
    /// profile.
    exporter_fits_v4: bool,
    /// The last record's time bucket (per export).
    buckets: BucketCache,
    /// An IPv4 address widened for a trie lookup, in map memory: a key
    /// built on the stack from computed values costs the verifier states.
    trie_ip: Ip,
}

#[map(name = "BILLING_SCOPE")]
static BILLING_SCOPE: HashMap<ScopeKey, u8> = HashMap::with_max_entries(MAX_SCOPE_ENTRIES, 0);

/// Two bits per IPv4 /24 (see `flowtally_common::members`).
#[map(name = "SUBSCRIBER_V4")]
static SUBSCRIBER_V4: Array<u64> = Array::with_max_entries(V4_TABLE_WORDS, 0);

/// The IPv6 subscriber networks, when few (see `flowtally_common::members`).
#[map(name = "SUBSCRIBER_V6")]
static SUBSCRIBER_V6: Array<NetsV6> = Array::with_max_entries(1, 0);

/// A byte per IPv4 /24 (see `flowtally_common::class_table`).
#[map(name = "CLASS_V4")]
static CLASS_V4: Array<u64> = Array::with_max_entries(class_table::V4_TABLE_WORDS, 0);

#[map(name = "FLOW_SCRATCH")]
static SCRATCH: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// Runs `callback` (`extern "C" fn(u64, *mut c_void) -> i64`) `count`
/// times through `bpf_loop`, handing it this CPU's `export` and `flow`
/// scratch slots ([`slots`]): a map lookup of each per record costs
/// instructions and a stall on the key it stores on the stack.
#[inline(always)]
pub fn for_each<T>(count: u32, callback: *mut c_void, export: &mut T, flow: &mut Flow) {
    let mut slots = Slots {
        export: &raw mut *export,
        flow: &raw mut *flow,
    };
    // SAFETY: `callback` is a static function with the signature bpf_loop
    // expects; `slots` outlives the loop.
    unsafe { bpf_loop(count, callback, (&raw mut slots).cast(), 0) };
}

#[repr(C)]
struct Slots<T> {
    export: *mut T,
    flow: *mut Flow,
}

/// The scratch slots a [`for_each`] callback gets as its context.
///
/// # Safety
/// `ctx` must be the context [`for_each`] passed, with `T` its export type.
#[inline(always)]
pub unsafe fn slots<'a, T>(ctx: *mut c_void) -> (&'a mut T, &'a mut Flow) {
    // SAFETY: per the contract, `Slots<T>` of this CPU's scratch slots,
    // which nothing else borrows while the loop runs.
    unsafe {
        let slots = &*ctx.cast::<Slots<T>>();
        (&mut *slots.export, &mut *slots.flow)
    }
}

/// This CPU's scratch flow.
#[inline(always)]
fn scratch() -> Option<&'static mut Flow> {
    // SAFETY: this CPU's slot; XDP runs do not nest on a CPU, and the
    // callbacks that use it run inside the same program run.
    SCRATCH.get_ptr_mut(0).map(|flow| unsafe { &mut *flow })
}

/// Prepares the scratch flow for the records of an export from `exporter`.
#[inline(always)]
pub fn begin(exporter: &Ip) -> Option<&'static mut Flow> {
    let flow = scratch()?;
    flow.flags = FLAGS.load();
    flow.active = aggregate::active_index();
    flow.partition = Partition::of_this_cpu(flow.active);
    flow.partition_v6 = Partition::of_this_cpu(flow.active);
    flow.profile = Profile {
        keep: KEEP_FIELDS.load(),
        bucket_ms: BUCKET_MS.load(),
    };
    flow.exporter = *exporter;
    (flow.exporter_v4, flow.exporter_fits_v4) = match members::v4_of(exporter) {
        Some(v4) => (v4, true),
        None => (0, flow.profile.keep & KEEP_EXPORTER == 0),
    };
    // Counter by counter, volatile: a whole `Tally` would be built on the
    // stack first, which the verifier's 512-byte limit cannot spare here,
    // and plain stores in a loop become a call to `memset`, which the BPF
    // build runs byte by byte (80 iterations per export).
    for counter in &mut flow.tally.0 {
        // SAFETY: a valid, exclusive reference.
        unsafe { core::ptr::write_volatile(counter, Counter::default()) };
    }
    flow.buckets = BucketCache::default();
    flow.backlog.clear();
    Some(flow)
}

impl Flow {
    /// Aggregates `self.record` in every direction it belongs to, counting
    /// each outcome.
    #[inline(always)]
    pub fn aggregate(&mut self) {
        let bytes = self.record.bytes;
        self.tally.add(RecordStat::Parsed, bytes);
        if !self.counted_in_scope(bytes) {
            return;
        }
        self.value = self.record.value();
        let [first, second] = directions(
            is_subscriber(&self.record.src),
            is_subscriber(&self.record.dst),
        );
        self.classes = [NO_CLASS; 2];
        if self.flags & FLAG_CLASSES != 0 {
            for dir in [first, second].into_iter().flatten() {
                self.classes[peer_is_source(dir) as usize] = class_of(peer(&self.record, dir));
            }
        }
        let bucket = self.buckets.start_of(&self.profile, self.record.time_ms);
        for dir in [first, second].into_iter().flatten() {
            let class = self.classes[peer_is_source(dir) as usize];
            if self.profile.key_v4_into(
                &self.record,
                dir,
                &self.exporter,
                class,
                bucket,
                self.backlog.next_key(),
            ) {
                self.backlog
                    .push(&self.partition, &self.value, &mut self.tally);
            } else {
                self.add_full_key(dir, class, bucket);
            }
        }
    }

    /// Counts `self.record` (of `bytes`) on the listed interfaces; false,
    /// counted, when the billing scope leaves it out.
    #[inline(always)]
    fn counted_in_scope(&mut self, bytes: u64) -> bool {
        if self.flags & FLAG_INTERFACE_FLOWS != 0 {
            interfaces::count(&self.exporter, &self.record);
        }
        // SAFETY: only tested for presence, never dereferenced.
        let scoped = |key: &ScopeKey| unsafe { BILLING_SCOPE.get(key) }.is_some();
        if self.flags & FLAG_BILLING_SCOPE != 0 && !in_scope(scoped, &self.exporter, &self.record) {
            self.tally.add(RecordStat::OutOfScope, bytes);
            return false;
        }
        true
    }

    /// Adds `self.value` to the 64-byte key of `self.record` for `dir`.
    #[inline(always)]
    fn add_full_key(&mut self, dir: Direction, class: u8, bucket: u64) {
        let key = self
            .profile
            .key(&self.record, dir, &self.exporter, class, bucket);
        table::store(key, &mut self.key);
        aggregate::add(
            &self.partition_v6,
            self.active,
            &self.key,
            &self.value,
            &mut self.tally,
        );
    }

    /// [`Flow::aggregate`] for `self.record_v4`, whose addresses are IPv4
    /// (NetFlow v5's records): the 32-byte key straight from them. They
    /// are widened to 16 bytes only for what needs that: billing scope,
    /// interface counting, an IPv6 exporter the profile keeps.
    #[inline(always)]
    pub fn aggregate_v4(&mut self) {
        let bytes = self.record_v4.bytes;
        self.tally.add(RecordStat::Parsed, bytes);
        let widen = FLAG_BILLING_SCOPE | FLAG_INTERFACE_FLOWS;
        if self.flags & widen != 0 || !self.exporter_fits_v4 {
            self.record_v4.widen_into(&mut self.record);
        }
        if !self.counted_in_scope(bytes) {
            return;
        }
        let record = &self.record_v4;
        self.value = record.value();
        let [first, second] = directions(
            is_subscriber_v4(record.src, &mut self.trie_ip),
            is_subscriber_v4(record.dst, &mut self.trie_ip),
        );
        self.classes = [NO_CLASS; 2];
        if self.flags & FLAG_CLASSES != 0 {
            for dir in [first, second].into_iter().flatten() {
                self.classes[peer_is_source(dir) as usize] =
                    class_of_v4(record.peer(dir), &mut self.trie_ip);
            }
        }
        let bucket = self.buckets.start_of(&self.profile, record.time_ms);
        for dir in [first, second].into_iter().flatten() {
            let class = self.classes[peer_is_source(dir) as usize];
            if self.exporter_fits_v4 {
                self.profile.key_v4_of(
                    &self.record_v4,
                    dir,
                    self.exporter_v4,
                    class,
                    bucket,
                    self.backlog.next_key(),
                );
                self.backlog
                    .push(&self.partition, &self.value, &mut self.tally);
            } else {
                // `add_full_key` written out: through the method, this
                // loop cost the verifier 50k more instructions.
                let key = self
                    .profile
                    .key(&self.record, dir, &self.exporter, class, bucket);
                table::store(key, &mut self.key);
                aggregate::add(
                    &self.partition_v6,
                    self.active,
                    &self.key,
                    &self.value,
                    &mut self.tally,
                );
            }
        }
    }

    /// Places the aggregates still waiting, then adds this export's record
    /// outcomes to `RECORD_STATS`; returns the octets of its records parsed
    /// (for sequence tracking's export bytes).
    #[inline(always)]
    pub fn finish(&mut self) -> u64 {
        self.backlog.flush(&self.partition, &mut self.tally);
        for stat in RecordStat::ALL {
            let tally = &self.tally.0[stat as usize];
            if tally.count != 0 {
                count(&RECORD_STATS, stat as u32, tally.count, tally.bytes);
            }
        }
        self.tally.0[RecordStat::Parsed as usize].bytes
    }
}

/// Whether `ip` is in a subscriber network: the /24 table answers for most
/// IPv4 addresses, the list of IPv6 networks for IPv6 ones when there are
/// few, the trie for the rest.
#[inline(always)]
fn is_subscriber(ip: &Ip) -> bool {
    let listed = match members::v4_of(ip) {
        Some(v4) => subscriber_table(v4),
        None => SUBSCRIBER_V6.get(0).and_then(|list| list.contains(ip)),
    };
    if let Some(inside) = listed {
        return inside;
    }
    SUBSCRIBER_NETS.get(Key::new(128, *ip)).is_some()
}

/// [`is_subscriber`] of an IPv4 address, widened in `scratch` if the trie
/// must answer.
#[inline(always)]
fn is_subscriber_v4(addr: u32, scratch: &mut Ip) -> bool {
    if let Some(inside) = subscriber_table(addr) {
        return inside;
    }
    *scratch = ip_from_v4(addr.to_be_bytes());
    SUBSCRIBER_NETS.get(Key::new(128, *scratch)).is_some()
}

/// What the /24 table says of `addr`; `None`: ask the trie.
#[inline(always)]
fn subscriber_table(addr: u32) -> Option<bool> {
    let (word, shift) = members::slot(addr);
    match members::state(*SUBSCRIBER_V4.get(word)?, shift) {
        OUTSIDE => Some(false),
        INSIDE => Some(true),
        _ => None,
    }
}

/// The destination class of `ip`: its longest prefix among the class
/// networks, which the /24 table knows for most IPv4 addresses and the
/// trie for the rest.
#[inline(always)]
fn class_of(ip: &Ip) -> u8 {
    if let Some(class) = members::v4_of(ip).and_then(class_table_of) {
        return class;
    }
    class_in_trie(ip)
}

/// [`class_of`] an IPv4 address, widened in `scratch` if the trie must
/// answer.
#[inline(always)]
fn class_of_v4(addr: u32, scratch: &mut Ip) -> u8 {
    if let Some(class) = class_table_of(addr) {
        return class;
    }
    *scratch = ip_from_v4(addr.to_be_bytes());
    class_in_trie(scratch)
}

/// What the /24 table says of `addr`'s class; `None`: ask the trie.
#[inline(always)]
fn class_table_of(addr: u32) -> Option<u8> {
    let (word, shift) = class_table::slot(addr);
    let class = class_table::state(*CLASS_V4.get(word)?, shift);
    (class != ASK_TRIE).then_some(class)
}

#[inline(always)]
fn class_in_trie(ip: &Ip) -> u8 {
    CLASS_NETS
        .get(Key::new(128, *ip))
        .copied()
        .unwrap_or(NO_CLASS)
}
