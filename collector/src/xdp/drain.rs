//! Draining the kernel's aggregates without losing concurrent updates.
//!
//! The XDP program writes the generation `ACTIVE` names (its half of the
//! IPv4 and IPv6 tables and its map of other keys) and reads `ACTIVE` once per
//! packet. To drain, userspace points `ACTIVE` at the other generation,
//! then waits for an RCU grace period ([`RcuBarrier`]): after it, no
//! program run can still be writing the old one, so reading and emptying
//! it races with nothing. Aggregates that found no room arrive through the
//! overflow ring ([`OverflowReader`], read continuously by the daemon and
//! once more at every drain).
//!
//! The tables are read in place through their mappings ([`MappedTable`]);
//! one key may come once per CPU partition, and the sink merges. The maps are
//! read and emptied in batches (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`, see
//! `batch.rs`), their per-CPU partials merged here; on kernels without
//! batch operations, key by key, with one log line.

use std::{
    os::fd::AsFd as _,
    sync::{Arc, Mutex},
};

use aya::maps::{Array, IterableMap, MapData, PerCpuHashMap, RingBuf};
use flowtally_common::agg::{AggKey, AggKeyV4, AggValue, Overflow};

use super::{
    batch::{BatchError, Batcher},
    rcu_barrier::RcuBarrier,
    table::MappedTable,
};

/// A generation's map of the keys with an IPv6 address that found no slot
/// in the IPv6 table.
pub type FullMap = PerCpuHashMap<MapData, AggKey, AggValue>;

/// The program's two tables, mapped.
pub struct Tables {
    pub v4: MappedTable<AggKeyV4>,
    pub v6: MappedTable<AggKey>,
}

pub struct Drainer {
    tables: Tables,
    maps: [FullMap; 2],
    active: Array<MapData, u32>,
    current: u32,
    barrier: RcuBarrier,
    /// Shared with the daemon's continuous reader (`overflow_reader`).
    overflow: Arc<Mutex<OverflowReader>>,
    /// `None` once batches proved unsupported.
    batcher: Option<Batcher>,
    cpus: usize,
}

/// Keys per batch call: 1 MiB of per-CPU values on a 2-CPU machine.
const BATCH_KEYS: usize = 16_384;

/// What one drain found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Aggregates in the generation that was drained: the tables' slots
    /// in use (a key once per CPU that wrote it) and the map's keys.
    pub map_entries: u64,
    pub overflow_records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("{0}")]
    Batch(BatchError),
    #[error("RCU barrier: {0}")]
    Barrier(#[from] std::io::Error),
    #[error("cannot count CPUs: {0}")]
    Cpus(String),
}

impl Drainer {
    pub fn new(
        tables: Tables,
        maps: [FullMap; 2],
        mut active: Array<MapData, u32>,
        barrier: RcuBarrier,
        overflow: RingBuf<MapData>,
    ) -> Result<Self, DrainError> {
        active.set(0, 0, 0)?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(file, err)| DrainError::Cpus(format!("{file}: {err}")))?;
        Ok(Self {
            tables,
            maps,
            active,
            current: 0,
            barrier,
            overflow: Arc::new(Mutex::new(OverflowReader {
                ring: overflow,
                unreported: 0,
            })),
            batcher: Some(Batcher::new(BATCH_KEYS, cpus)),
            cpus,
        })
    }

    /// Behaves as on a kernel without batch operations: the first drain
    /// finds the batch command refused, says so once, and goes on key by
    /// key. For tests and benchmarks of that fallback.
    pub fn without_batch_ops(mut self) -> Self {
        self.batcher = self.batcher.map(Batcher::unsupported);
        self
    }

    /// Batches of `keys` keys per call; for tests of partial batches.
    pub fn batch_size(mut self, keys: usize) -> Self {
        if self.batcher.is_some() {
            self.batcher = Some(Batcher::new(keys, self.cpus));
        }
        self
    }

    /// Whether drains still use batch operations.
    pub fn batched(&self) -> bool {
        self.batcher.is_some()
    }

    /// Swaps the generations, then hands every aggregate of the old one
    /// and every overflowed aggregate to `sink`.
    pub fn drain(
        &mut self,
        mut sink: impl FnMut(AggKey, &AggValue),
    ) -> Result<Drained, DrainError> {
        let old = self.current;
        self.current ^= 1;
        self.active.set(0, self.current, 0)?;
        self.barrier.wait()?;

        let mut map_entries = self.tables.v4.drain(old, &mut sink);
        map_entries += self.tables.v6.drain(old, &mut sink);
        map_entries += drain_map(
            &mut self.batcher,
            &mut self.maps[old as usize],
            |key, value| {
                sink(*key, value);
            },
        )?;
        let mut overflow = self.overflow.lock().expect("overflow lock poisoned");
        overflow.read(&mut sink);
        let overflow_records = std::mem::take(&mut overflow.unreported);
        Ok(Drained {
            map_entries,
            overflow_records,
        })
    }

    /// The overflow ring, to read as records arrive between drains (so
    /// that it need not hold a whole flush interval of overflow). What is
    /// read there counts in the next drain's `overflow_records`.
    pub fn overflow_reader(&self) -> Arc<Mutex<OverflowReader>> {
        Arc::clone(&self.overflow)
    }
}

/// Reads and empties one map, in batches while the kernel allows.
fn drain_map(
    batcher: &mut Option<Batcher>,
    map: &mut FullMap,
    mut sink: impl FnMut(&AggKey, &AggValue),
) -> Result<u64, DrainError> {
    let mut merged = |key: &AggKey, partials: &[AggValue]| {
        let mut total = AggValue::default();
        for partial in partials {
            total.merge(partial);
        }
        sink(key, &total);
    };
    if let Some(batch) = batcher {
        match batch.drain(map.map().fd().as_fd(), &mut merged) {
            Ok(keys) => return Ok(keys),
            Err(BatchError::Unsupported(err)) => {
                tracing::warn!(
                    "draining the kernel maps key by key, three syscalls per key: \
                     batch operations unsupported ({err})"
                );
                *batcher = None;
            }
            Err(err) => return Err(DrainError::Batch(err)),
        }
    }
    let keys: Vec<AggKey> = map.keys().collect::<Result<_, _>>()?;
    for key in &keys {
        merged(key, &map.get(key, 0)?);
        map.remove(key)?;
    }
    Ok(keys.len() as u64)
}

/// The overflow ring: aggregates that found their map full.
pub struct OverflowReader {
    ring: RingBuf<MapData>,
    /// Records read since the last drain reported them.
    unreported: u64,
}

impl OverflowReader {
    /// Hands everything in the ring to `sink`.
    pub fn read(&mut self, mut sink: impl FnMut(AggKey, &AggValue)) {
        while let Some(item) = self.ring.next() {
            if let Some(record) = read_overflow(&item) {
                sink(record.key, &record.value);
                self.unreported += 1;
            }
        }
    }
}

impl std::os::fd::AsFd for OverflowReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.as_fd()
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
