//! What the kernel tells about completeness: the `EXPORTS` ring (one entry
//! per export it aggregated, for sequence tracking), the octets of those
//! exports per domain (`EXPORT_BYTES`), and the per-interface flow counters
//! of `INTERFACE_FLOWS`.

use std::{
    collections::HashMap,
    os::fd::AsFd as _,
    sync::{Arc, Mutex},
};

use aya::{
    Pod,
    maps::{MapData, MapError, PerCpuHashMap, RingBuf},
};
use flowtally_common::{
    Counter,
    agg::ScopeKey,
    interfaces::InterfaceFlows,
    sequence::{ExportKey, ExportSeen},
};

/// The `EXPORTS` ring.
pub struct ExportRing(RingBuf<MapData>);

impl ExportRing {
    /// Hands every entry the kernel has written to `sink`.
    pub fn read(&mut self, mut sink: impl FnMut(&ExportSeen)) -> u64 {
        let mut read = 0;
        while let Some(item) = self.0.next() {
            if item.len() >= std::mem::size_of::<ExportSeen>() {
                // SAFETY: length checked; `ExportSeen` is plain data valid
                // for any bytes, read unaligned (the ring aligns to 8 only).
                let seen = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ExportSeen>()) };
                sink(&seen);
                read += 1;
            }
        }
        read
    }
}

/// The kernel's completeness maps.
pub struct KernelIntegrity {
    pub ring: Arc<Mutex<ExportRing>>,
    export_bytes: Cumulative<ExportKey, u64>,
    interfaces: Cumulative<ScopeKey, InterfaceFlows>,
}

impl KernelIntegrity {
    pub(super) fn new(
        ring: RingBuf<MapData>,
        export_bytes: PerCpuHashMap<MapData, ExportKey, u64>,
        interfaces: PerCpuHashMap<MapData, ScopeKey, InterfaceFlows>,
    ) -> Self {
        Self {
            ring: Arc::new(Mutex::new(ExportRing(ring))),
            export_bytes: Cumulative::new(export_bytes),
            interfaces: Cumulative::new(interfaces),
        }
    }

    /// Octets per exporter domain since the last call.
    pub fn export_bytes(&mut self) -> Result<HashMap<ExportKey, u64>, MapError> {
        self.export_bytes.deltas(|now, last| now.wrapping_sub(last))
    }

    /// Flows per listed interface since the last call.
    pub fn interface_flows(&mut self) -> Result<HashMap<ScopeKey, InterfaceFlows>, MapError> {
        let minus = |now: Counter, last: Counter| Counter {
            count: now.count.wrapping_sub(last.count),
            bytes: now.bytes.wrapping_sub(last.bytes),
        };
        self.interfaces.deltas(|now, last| InterfaceFlows {
            input: minus(now.input, last.input),
            output: minus(now.output, last.output),
        })
    }
}

/// A per-CPU map of cumulative counters, read as what changed since the
/// last read (summed over CPUs).
struct Cumulative<K: Pod, V: Pod> {
    map: PerCpuHashMap<MapData, K, V>,
    last: HashMap<K, V>,
}

impl<K: Pod + Eq + std::hash::Hash, V: Pod + Default + std::ops::Add<Output = V>> Cumulative<K, V> {
    fn new(map: PerCpuHashMap<MapData, K, V>) -> Self {
        Self {
            map,
            last: HashMap::new(),
        }
    }

    fn deltas(&mut self, minus: impl Fn(V, V) -> V) -> Result<HashMap<K, V>, MapError> {
        let mut deltas = HashMap::new();
        for entry in self.map.iter() {
            let (key, per_cpu) = entry?;
            let now = per_cpu.iter().fold(V::default(), |sum, v| sum + *v);
            let last = self.last.insert(key, now).unwrap_or_default();
            deltas.insert(key, minus(now, last));
        }
        Ok(deltas)
    }
}

/// Calls `read` as the kernel adds to the `EXPORTS` ring, until dropped.
/// The flush reads what is left.
pub fn read_exports<F: FnMut()>(
    ring: &Mutex<ExportRing>,
    read: F,
) -> impl Future<Output = ()> + use<F> {
    let fd = ring
        .lock()
        .expect("exports ring lock poisoned")
        .0
        .as_fd()
        .try_clone_to_owned();
    super::read_ring(fd, "exports ring", read)
}
