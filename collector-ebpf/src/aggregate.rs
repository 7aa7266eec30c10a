//! The two aggregate maps, and the overflow ring for what does not fit.
//!
//! Userspace drains one map while this program writes the other (see
//! `collector/src/xdp/drain.rs`): the program reads `ACTIVE` once per
//! packet, so every record of an export lands in the same map.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, PerCpuHashMap, RingBuf},
};
use flowtally_common::{
    DEFAULT_AGGREGATE_ENTRIES, DEFAULT_OVERFLOW_RING_BYTES, RecordStat,
    agg::{AggKey, AggValue, Overflow},
};

type AggregateMap = PerCpuHashMap<AggKey, AggValue>;

#[map(name = "AGGREGATE_0")]
static AGGREGATE_0: AggregateMap = AggregateMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

#[map(name = "AGGREGATE_1")]
static AGGREGATE_1: AggregateMap = AggregateMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

#[map(name = "ACTIVE")]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "OVERFLOW")]
static OVERFLOW: RingBuf = RingBuf::with_byte_size(DEFAULT_OVERFLOW_RING_BYTES, 0);

const EEXIST: i32 = 17;

/// Which map userspace is not draining.
#[inline(always)]
pub fn active_index() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

/// Adds `value` to the aggregate `key` in map `active`, or sends both
/// through the overflow ring when the map is full; reports which happened.
#[inline(always)]
pub fn add(active: u32, key: &AggKey, value: &AggValue) -> RecordStat {
    let map = if active == 1 {
        &AGGREGATE_1
    } else {
        &AGGREGATE_0
    };
    if merge_into(map, key, value) {
        return RecordStat::Aggregated;
    }
    match map.insert(key, value, u64::from(BPF_NOEXIST)) {
        Ok(()) => return RecordStat::Aggregated,
        // Another CPU created the key since our lookup: add to our slot.
        Err(err) if err == -EEXIST && merge_into(map, key, value) => {
            return RecordStat::Aggregated;
        }
        Err(_) => {}
    }
    // Written in place in the ring: no 104-byte copy on the stack.
    match OVERFLOW.reserve::<Overflow>(0) {
        Some(mut entry) => {
            let slot = entry.as_mut_ptr();
            // SAFETY: a reserved, exclusively ours, `Overflow`-sized entry;
            // fields are written in place, never staged on the stack.
            unsafe {
                (*slot).key = *key;
                (*slot).value = *value;
            }
            entry.submit(0);
            RecordStat::Overflowed
        }
        None => RecordStat::Dropped,
    }
}

#[inline(always)]
fn merge_into(map: &AggregateMap, key: &AggKey, value: &AggValue) -> bool {
    match map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        Some(slot) => {
            unsafe { (*slot).merge(value) };
            true
        }
        None => false,
    }
}
