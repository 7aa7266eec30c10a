//! Draining the kernel's aggregates without losing concurrent updates.
//!
//! The XDP program writes the map `ACTIVE` names and reads `ACTIVE` once per
//! packet. To drain, userspace points `ACTIVE` at the other map, then waits
//! for an RCU grace period ([`RcuBarrier`]): after it, no program run can
//! still be writing the old map, so reading and emptying it races with
//! nothing. Per-CPU partials are merged here. Aggregates that found their
//! map full arrived through the overflow ring and are read here as well.

use aya::maps::{Array, MapData, PerCpuHashMap, RingBuf};
use flowtally_common::agg::{AggKey, AggValue, Overflow};

use super::rcu_barrier::RcuBarrier;

pub struct Drainer {
    maps: [PerCpuHashMap<MapData, AggKey, AggValue>; 2],
    active: Array<MapData, u32>,
    current: u32,
    barrier: RcuBarrier,
    overflow: RingBuf<MapData>,
}

/// What one drain found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Keys in the map that was drained: its occupancy.
    pub map_entries: u64,
    pub overflow_records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("RCU barrier: {0}")]
    Barrier(#[from] std::io::Error),
}

impl Drainer {
    pub fn new(
        maps: [PerCpuHashMap<MapData, AggKey, AggValue>; 2],
        mut active: Array<MapData, u32>,
        barrier: RcuBarrier,
        overflow: RingBuf<MapData>,
    ) -> Result<Self, DrainError> {
        active.set(0, 0, 0)?;
        Ok(Self {
            maps,
            active,
            current: 0,
            barrier,
            overflow,
        })
    }

    /// Swaps the maps, then hands every aggregate of the old one (per-CPU
    /// partials merged) and every overflowed aggregate to `sink`.
    pub fn drain(
        &mut self,
        mut sink: impl FnMut(AggKey, &AggValue),
    ) -> Result<Drained, DrainError> {
        let old = self.current as usize;
        self.current ^= 1;
        self.active.set(0, self.current, 0)?;
        self.barrier.wait()?;

        let map = &mut self.maps[old];
        let keys: Vec<AggKey> = map.keys().collect::<Result<_, _>>()?;
        for key in &keys {
            let mut total = AggValue::default();
            for partial in map.get(key, 0)?.iter() {
                total.merge(partial);
            }
            sink(*key, &total);
            map.remove(key)?;
        }

        let mut overflow_records = 0;
        while let Some(item) = self.overflow.next() {
            if let Some(record) = read_overflow(&item) {
                sink(record.key, &record.value);
                overflow_records += 1;
            }
        }
        Ok(Drained {
            map_entries: keys.len() as u64,
            overflow_records,
        })
    }
}

fn read_overflow(bytes: &[u8]) -> Option<Overflow> {
    if bytes.len() < std::mem::size_of::<Overflow>() {
        return None;
    }
    // SAFETY: length checked; `Overflow` is plain data valid for any bytes,
    // read unaligned since the ring guarantees only 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Overflow>()) })
}
