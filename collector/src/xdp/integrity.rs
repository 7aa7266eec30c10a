//! What the kernel tells about completeness: the `EXPORTS` ring (one entry
//! per export it aggregated, for sequence tracking) and the per-interface
//! flow counters of `INTERFACE_FLOWS`.

use std::{
    collections::HashMap,
    os::fd::AsFd as _,
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, MapError, PerCpuHashMap, RingBuf};
use flowtally_common::{Counter, agg::ScopeKey, sequence::ExportSeen};
use tokio::io::{Interest, unix::AsyncFd};

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
    interfaces: PerCpuHashMap<MapData, ScopeKey, Counter>,
    /// Cumulative counts at the last read.
    last: HashMap<ScopeKey, Counter>,
}

impl KernelIntegrity {
    pub(super) fn new(ring: RingBuf<MapData>, interfaces: PerCpuHashMap<MapData, ScopeKey, Counter>) -> Self {
        Self {
            ring: Arc::new(Mutex::new(ExportRing(ring))),
            interfaces,
            last: HashMap::new(),
        }
    }

    /// Flows per listed interface since the last call (the kernel's
    /// counters are cumulative, summed over CPUs here).
    pub fn interface_flows(&mut self) -> Result<HashMap<ScopeKey, Counter>, MapError> {
        let mut deltas = HashMap::new();
        for entry in self.interfaces.iter() {
            let (key, per_cpu) = entry?;
            let now = per_cpu
                .iter()
                .fold(Counter::default(), |sum, c| sum + *c);
            let last = self.last.insert(key, now).unwrap_or_default();
            deltas.insert(
                key,
                Counter {
                    count: now.count.wrapping_sub(last.count),
                    bytes: now.bytes.wrapping_sub(last.bytes),
                },
            );
        }
        Ok(deltas)
    }
}

/// Reads the `EXPORTS` ring whenever the kernel adds to it, handing each
/// entry to `sink`, until dropped. The flush reads what is left.
pub async fn read_exports(ring: Arc<Mutex<ExportRing>>, mut sink: impl FnMut(&ExportSeen)) {
    let fd = ring
        .lock()
        .expect("exports ring lock poisoned")
        .0
        .as_fd()
        .try_clone_to_owned();
    // SAFETY: the fd is our own duplicate, open until the `AsyncFd` drops.
    let registered = fd.and_then(|fd| {
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
    });
    let ready = match registered {
        Ok(ready) => ready,
        Err(err) => {
            tracing::warn!("exports ring read only at flushes: {err}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ready.readable().await else {
            return;
        };
        guard.clear_ready();
        ring.lock()
            .expect("exports ring lock poisoned")
            .read(&mut sink);
    }
}
