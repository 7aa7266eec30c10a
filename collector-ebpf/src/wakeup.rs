//! When a ring entry wakes its reader. By default every entry submitted to
//! an empty ring wakes it, through an inter-processor interrupt (on a
//! virtual machine an exit to the hypervisor): with a reader that keeps
//! up, that is one per export, ~3 µs each on this machine (BENCHMARKS.md).
//! So entries wake the reader only once a quarter of the ring waits; the
//! reader also reads on a timer (`collector/src/xdp/mod.rs`).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    maps::RingBuf,
};

/// Submit flags for an entry of `ring`, which holds `size` bytes.
#[inline(always)]
pub fn flags(ring: &RingBuf, size: u64) -> u64 {
    if ring.query(u64::from(BPF_RB_AVAIL_DATA)) >= size / 4 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
