//! The aggregate maps, and the overflow ring for what does not fit.
//!
//! Userspace drains one pair of maps while this program writes the other
//! (see `collector/src/xdp/drain.rs`): the program reads `ACTIVE` once per
//! packet, so every record of an export lands in the same pair. Keys whose
//! addresses are all IPv4 take the 32-byte form (`AggKeyV4`): the kernel
//! hashes and compares every key byte on each lookup, and that was a third
//! of the cost of a record with the 64-byte form.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, PerCpuHashMap, RingBuf},
};
use flowtally_common::{
    Counter, DEFAULT_AGGREGATE_ENTRIES, DEFAULT_OVERFLOW_RING_BYTES, RecordStat,
    agg::{AggKey, AggKeyV4, AggValue, Overflow},
};

type V4Map = PerCpuHashMap<AggKeyV4, AggValue>;
type FullMap = PerCpuHashMap<AggKey, AggValue>;

/// Maps of full keys allocate elements as keys arrive: most networks send
/// few IPv6 records, and a preallocated twin of the IPv4 map would double
/// the kernel memory.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "AGGREGATE_V4_0")]
static AGGREGATE_V4_0: V4Map = V4Map::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);
#[map(name = "AGGREGATE_V4_1")]
static AGGREGATE_V4_1: V4Map = V4Map::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);
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

/// Which pair of maps userspace is not draining.
#[inline(always)]
pub fn active_index() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

/// Adds `value` to the IPv4 aggregate `key` in pair `active`, or sends both
/// through the overflow ring when the map is full; counts which happened
/// in `tally`. (Counted here rather than returned: every outcome then
/// leaves the same verifier state behind, which keeps the program within
/// the verifier's budget.)
#[inline(always)]
pub fn add_v4(active: u32, key: &AggKeyV4, value: &AggValue, tally: &mut Tally) {
    let map = if active == 1 {
        &AGGREGATE_V4_1
    } else {
        &AGGREGATE_V4_0
    };
    if merge_or_insert(map, key, value) {
        return tally.add(RecordStat::Aggregated, value.bytes);
    }
    overflow(value, tally, |slot| *slot = key.unpack());
}

/// [`add_v4`] for any other key.
#[inline(always)]
pub fn add(active: u32, key: &AggKey, value: &AggValue, tally: &mut Tally) {
    let map = if active == 1 {
        &AGGREGATE_1
    } else {
        &AGGREGATE_0
    };
    if merge_or_insert(map, key, value) {
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
            counter.bytes += bytes;
        }
    }
}

/// Whether `value` went into `map` under `key`, merged or as a new key.
#[inline(always)]
fn merge_or_insert<K>(map: &PerCpuHashMap<K, AggValue>, key: &K, value: &AggValue) -> bool {
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
            entry.submit(0);
            tally.add(RecordStat::Overflowed, value.bytes);
        }
        None => tally.add(RecordStat::Dropped, value.bytes),
    }
}

#[inline(always)]
fn merge_into<K>(map: &PerCpuHashMap<K, AggValue>, key: &K, value: &AggValue) -> bool {
    match map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        Some(slot) => {
            unsafe { (*slot).merge(value) };
            true
        }
        None => false,
    }
}
