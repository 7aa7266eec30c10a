//! The aggregate table and maps, and the overflow ring for what does not fit.
//!
//! Userspace drains one generation while this program writes the other
//! (see `collector/src/xdp/drain.rs`): the program reads `ACTIVE` once per
//! packet, so every record of an export lands in the same generation. Keys
//! whose addresses are all IPv4 take the 32-byte form (`AggKeyV4`) and go
//! to this program's IPv4 table (`flowtally_common::table`: one cache line
//! per aggregate, no helper call), through a short backlog so that the
//! loads of several slots overlap; those that find no slot go through the
//! overflow ring. Keys with an IPv6 address go to the IPv6 table, and those
//! that find no slot there to a pair of kernel hash maps, which grow as
//! keys arrive: the IPv6 table is smaller by default, as most networks send
//! far fewer IPv6 aggregates.

use core::marker::PhantomData;

use aya_ebpf::{
    Global,
    bindings::{BPF_NOEXIST, BPF_RB_RING_SIZE},
    cty::c_void,
    helpers::generated::{bpf_get_smp_processor_id, bpf_loop},
    macros::map,
    maps::{Array, PerCpuHashMap, RingBuf},
};
use flowtally_common::{
    Counter, DEFAULT_AGGREGATE_ENTRIES, DEFAULT_OVERFLOW_RING_BYTES, RecordStat,
    agg::{AggKey, AggKeyV4, AggValue, Overflow},
    table::{self, Slot, TableKey},
};

use crate::wakeup;

type FullMap = PerCpuHashMap<AggKey, AggValue>;

/// The maps allocate elements as keys arrive: they take the IPv6 keys the
/// (smaller, preallocated) IPv6 table has no room for, on networks that
/// send more IPv6 than it was sized for.
const BPF_F_NO_PREALLOC: u32 = 1;
/// The tables are read by userspace through `mmap`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Sized by userspace at load (`table::entries`).
#[map(name = "TABLE_V4")]
static TABLE_V4: Array<Slot<AggKeyV4>> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "TABLE_V6")]
static TABLE_V6: Array<Slot<AggKey>> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// log2 of the slots per partition of each table, and partitions per
/// generation; set by userspace at load.
#[unsafe(no_mangle)]
static TABLE_SHIFT: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TABLE_V6_SHIFT: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TABLE_CPUS: Global<u32> = Global::new(1);

/// One of the program's tables, by the keys it holds.
pub trait OwnTable {
    type Key: TableKey + 'static;
    fn slots() -> &'static Array<Slot<Self::Key>>;
    fn shift() -> u32;
}

pub struct V4;
pub struct V6;

impl OwnTable for V4 {
    type Key = AggKeyV4;

    #[inline(always)]
    fn slots() -> &'static Array<Slot<AggKeyV4>> {
        &TABLE_V4
    }

    #[inline(always)]
    fn shift() -> u32 {
        TABLE_SHIFT.load()
    }
}

impl OwnTable for V6 {
    type Key = AggKey;

    #[inline(always)]
    fn slots() -> &'static Array<Slot<AggKey>> {
        &TABLE_V6
    }

    #[inline(always)]
    fn shift() -> u32 {
        TABLE_V6_SHIFT.load()
    }
}

#[map(name = "AGGREGATE_0")]
static AGGREGATE_0: FullMap =
    FullMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "AGGREGATE_1")]
static AGGREGATE_1: FullMap =
    FullMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "ACTIVE")]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "OVERFLOW")]
static OVERFLOW: RingBuf = RingBuf::with_byte_size(DEFAULT_OVERFLOW_RING_BYTES, 0);

const EEXIST: i32 = 17;

/// Which generation userspace is not draining.
#[inline(always)]
pub fn active_index() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

/// This CPU's partition of table `T` in generation `active`. A program
/// run stays on one CPU, so one export's records share it.
#[repr(C)]
pub struct Partition<T> {
    base: u32,
    mask: u32,
    table: PhantomData<T>,
}

impl<T: OwnTable> Partition<T> {
    #[inline(always)]
    pub fn of_this_cpu(active: u32) -> Self {
        let shift = T::shift();
        // SAFETY: no arguments, no side effects (and inlined by the verifier).
        let cpu = unsafe { bpf_get_smp_processor_id() };
        Self {
            base: table::partition_base(active, TABLE_CPUS.load(), cpu, shift),
            mask: 1u32.wrapping_shl(shift).wrapping_sub(1),
            table: PhantomData,
        }
    }

    /// The slot at `offset` (wrapped) into this partition.
    #[inline(always)]
    fn slot(&self, offset: u32) -> Option<*mut Slot<T::Key>> {
        T::slots().get_ptr_mut(self.base | (offset & self.mask))
    }

    /// Starts loading the cache line of the slot at `offset`, without
    /// waiting for it.
    #[inline(always)]
    fn touch(&self, offset: u32) {
        if let Some(slot) = self.slot(offset) {
            // SAFETY: a valid slot; a racy read of a counter nobody uses.
            unsafe { core::ptr::read_volatile(&raw const (*slot).flows) };
        }
    }
}

/// Aggregates of one export that wait for their slots ([`Backlog`]): a
/// NetFlow v5 export's (30 records, up to two aggregates each) all fit. A
/// power of two, for the index mask.
const BACKLOG_SLOTS: u32 = 64;

/// An IPv4 aggregate on its way into the table.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    key: AggKeyV4,
    value: AggValue,
    runs: [u32; 2],
}

/// The IPv4 aggregates of one export, placed together when the export
/// ends ([`Backlog::flush`]) after their slots were loaded in one go. A
/// table far larger than the caches costs a miss per aggregate (on this
/// virtual machine ~250 ns, with a nested page walk); placed one by one,
/// each would wait for its own. A load holds up the CPU only once it is
/// the oldest instruction not yet done, so loads issued back to back
/// overlap where loads spread between other work do not. (BPF has no
/// prefetch instruction.)
#[repr(C)]
pub struct Backlog {
    ring: [Pending; BACKLOG_SLOTS as usize],
    /// Pushes and placements so far; the ring holds `pushed - placed`.
    pushed: u32,
    placed: u32,
}

impl Backlog {
    #[inline(always)]
    pub fn clear(&mut self) {
        self.pushed = 0;
        self.placed = 0;
    }

    /// Where the next aggregate's key is to be built, before [`Backlog::push`].
    #[inline(always)]
    pub fn next_key(&mut self) -> &mut AggKeyV4 {
        &mut self.ring[(self.pushed & (BACKLOG_SLOTS - 1)) as usize].key
    }

    /// Queues `value` for the key built at [`Backlog::next_key`]. When the
    /// ring is full (an export of more aggregates than it holds), the
    /// oldest is placed now, without the overlap.
    #[inline(always)]
    pub fn push(&mut self, partition: &Partition<V4>, value: &AggValue, tally: &mut Tally) {
        let entry = &mut self.ring[(self.pushed & (BACKLOG_SLOTS - 1)) as usize];
        entry.value = *value;
        entry.runs = AggKeyV4::runs(&entry.key.words());
        self.pushed = self.pushed.wrapping_add(1);
        if self.pushed.wrapping_sub(self.placed) >= BACKLOG_SLOTS {
            self.place_oldest(partition, tally);
        }
    }

    /// Starts loading the first slot of every waiting aggregate, back to
    /// back.
    #[inline(always)]
    fn touch_waiting(&self, partition: &Partition<V4>) {
        let waiting = self.pushed.wrapping_sub(self.placed).min(BACKLOG_SLOTS);
        let mut i = 0;
        while i < waiting {
            let at = self.placed.wrapping_add(i);
            partition.touch(self.ring[(at & (BACKLOG_SLOTS - 1)) as usize].runs[0]);
            i += 1;
        }
    }

    /// Places every aggregate still waiting.
    #[inline(always)]
    pub fn flush(&mut self, partition: &Partition<V4>, tally: &mut Tally) {
        let mut flush = Flush {
            backlog: &raw mut *self,
            partition: &raw const *partition,
            tally: &raw mut *tally,
        };
        let waiting = self.pushed.wrapping_sub(self.placed);
        // SAFETY: `place_next` has the signature bpf_loop expects; `flush`
        // outlives the loop.
        unsafe {
            bpf_loop(
                waiting,
                place_next as *mut c_void,
                (&raw mut flush).cast(),
                0,
            )
        };
    }

    /// Adds the oldest waiting aggregate to its slot, or sends it through
    /// the overflow ring when neither of its runs has room; counts which
    /// happened in `tally`. (Counted here rather than returned: every
    /// outcome then leaves the same verifier state behind, which keeps the
    /// program within the verifier's budget.)
    #[inline(always)]
    fn place_oldest(&mut self, partition: &Partition<V4>, tally: &mut Tally) {
        let entry = &self.ring[(self.placed & (BACKLOG_SLOTS - 1)) as usize];
        self.placed = self.placed.wrapping_add(1);
        if place(partition, &entry.key, entry.runs, &entry.value) {
            return tally.add(RecordStat::Aggregated, entry.value.bytes);
        }
        overflow(&entry.value, tally, |slot| *slot = entry.key.unpack());
    }
}

#[repr(C)]
struct Flush {
    backlog: *mut Backlog,
    partition: *const Partition<V4>,
    tally: *mut Tally,
}

/// The bpf_loop callback of [`Backlog::flush`]: verified once, however
/// many aggregates wait.
extern "C" fn place_next(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `flush` passes a `Flush` of live, exclusive references.
    let (backlog, partition, tally) = unsafe {
        let flush = &*ctx.cast::<Flush>();
        (&mut *flush.backlog, &*flush.partition, &mut *flush.tally)
    };
    if index == 0 {
        // Here rather than before the loop: here the verifier walks it once.
        backlog.touch_waiting(partition);
    }
    backlog.place_oldest(partition, tally);
    0
}

/// Whether `value` went into `key`'s slot, found or claimed along its two
/// `runs`. Slots are freed only by the drain, a whole generation at once,
/// so the first free slot on the way means the key is not in the table.
#[inline(always)]
fn place<T: OwnTable>(
    partition: &Partition<T>,
    key: &T::Key,
    runs: [u32; 2],
    value: &AggValue,
) -> bool {
    let words = key.words();
    for start in runs {
        let mut probe = 0;
        while probe < table::RUN {
            if let Some(placed) =
                probe_slot(partition, key, &words, start.wrapping_add(probe), value)
            {
                return placed;
            }
            probe += 1;
        }
    }
    false
}

/// One probe of [`place`], at `offset`: `Some(whether value went in)` when
/// the slot there is `key`'s or free, `None` to go on.
#[inline(always)]
fn probe_slot<T: OwnTable>(
    partition: &Partition<T>,
    key: &T::Key,
    words: &<T::Key as TableKey>::Words,
    offset: u32,
    value: &AggValue,
) -> Option<bool> {
    let Some(slot) = partition.slot(offset) else {
        return Some(false);
    };
    // SAFETY: a slot of this CPU's partition: no other writer.
    let slot = unsafe { &mut *slot };
    if slot.flows == 0 {
        return Some(slot.claim(key, value));
    }
    if slot.key.is(words) {
        return Some(slot.add(value));
    }
    None
}

/// [`place`] for the IPv6 table, each probe a `bpf_loop` iteration
/// ([`probe_v6`]): the verifier walks a probe once instead of sixteen times
/// at every place a record is aggregated.
#[inline(always)]
fn place_v6(partition: &Partition<V6>, key: &AggKey, value: &AggValue) -> bool {
    let mut probe = ProbeV6 {
        partition: &raw const *partition,
        key: &raw const *key,
        value: &raw const *value,
        runs: AggKey::runs(&key.words()),
        placed: 0,
    };
    // SAFETY: `probe_v6` has the signature bpf_loop expects; `probe`
    // outlives the loop.
    unsafe {
        bpf_loop(
            2 * table::RUN,
            probe_v6 as *mut c_void,
            (&raw mut probe).cast(),
            0,
        )
    };
    probe.placed != 0
}

#[repr(C)]
struct ProbeV6 {
    partition: *const Partition<V6>,
    key: *const AggKey,
    value: *const AggValue,
    runs: [u32; 2],
    placed: u64,
}

extern "C" fn probe_v6(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `place_v6` passes a `ProbeV6` of live references.
    let (probe, partition, key, value) = unsafe {
        let probe = &mut *ctx.cast::<ProbeV6>();
        let (partition, key, value) = (&*probe.partition, &*probe.key, &*probe.value);
        (probe, partition, key, value)
    };
    let index = index as u32;
    let start = if index < table::RUN {
        probe.runs[0]
    } else {
        probe.runs[1]
    };
    let offset = start.wrapping_add(index % table::RUN);
    match probe_slot(partition, key, &key.words(), offset, value) {
        Some(placed) => {
            probe.placed = u64::from(placed);
            1
        }
        None => 0,
    }
}

/// Adds `value` to a key with an IPv6 address (or too wide for the IPv4
/// table): in the IPv6 table's `partition`, else in the kernel hash map of
/// generation `active`.
#[inline(always)]
pub fn add(
    partition: &Partition<V6>,
    active: u32,
    key: &AggKey,
    value: &AggValue,
    tally: &mut Tally,
) {
    let map = if active == 1 {
        &AGGREGATE_1
    } else {
        &AGGREGATE_0
    };
    if place_v6(partition, key, value) || merge_or_insert(map, key, value) {
        return tally.add(RecordStat::Aggregated, value.bytes);
    }
    overflow(value, tally, |slot| *slot = *key);
}

/// Record outcomes of one export, by `RecordStat`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Tally(pub [Counter; RecordStat::COUNT as usize]);

impl Tally {
    #[inline(always)]
    pub fn add(&mut self, stat: RecordStat, bytes: u64) {
        if let Some(counter) = self.0.get_mut(stat as usize) {
            counter.count += 1;
            // Saturating: an export's parsed bytes are its export bytes
            // (`Flow::finish`), which saturate rather than wrap.
            counter.bytes = counter.bytes.saturating_add(bytes);
        }
    }
}

/// Whether `value` went into `map` under `key`, merged or as a new key.
#[inline(always)]
fn merge_or_insert(map: &FullMap, key: &AggKey, value: &AggValue) -> bool {
    if merge_into(map, key, value) {
        return true;
    }
    match map.insert(key, value, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU created the key since our lookup: add to our slot.
        Err(err) => err == -EEXIST && merge_into(map, key, value),
    }
}

/// Sends an aggregate that found no room through the ring, its key
/// written in full by `write_key`.
#[inline(always)]
fn overflow(value: &AggValue, tally: &mut Tally, write_key: impl FnOnce(&mut AggKey)) {
    // Written in place in the ring: no 104-byte copy on the stack.
    match OVERFLOW.reserve::<Overflow>(0) {
        Some(mut entry) => {
            let slot = entry.as_mut_ptr();
            // SAFETY: a reserved, exclusively ours, `Overflow`-sized entry;
            // fields are written in place, never staged on the stack.
            unsafe {
                write_key(&mut (*slot).key);
                (*slot).value = *value;
            }
            // Sized by userspace at load.
            let size = OVERFLOW.query(u64::from(BPF_RB_RING_SIZE));
            entry.submit(wakeup::flags::<Overflow>(&OVERFLOW, size));
            tally.add(RecordStat::Overflowed, value.bytes);
        }
        None => tally.add(RecordStat::Dropped, value.bytes),
    }
}

#[inline(always)]
fn merge_into(map: &FullMap, key: &AggKey, value: &AggValue) -> bool {
    match map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        Some(slot) => {
            unsafe { (*slot).merge(value) };
            true
        }
        None => false,
    }
}
