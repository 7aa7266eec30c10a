//! When a ring entry wakes its reader. By default every entry submitted to
//! an empty ring wakes it, through an inter-processor interrupt (on a
//! virtual machine an exit to the hypervisor): with a reader that keeps
//! up, that is one per export, ~3 µs each on this machine (BENCHMARKS.md).
//! So only the entry that fills a quarter of the ring wakes the reader;
//! the reader also reads on a timer (`collector/src/xdp/mod.rs`).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    maps::RingBuf,
};

/// Submit flags for a reserved `T` in `ring`, which holds `size` bytes.
/// Only the entry that crosses the mark wakes: past it, a reader that does
/// not keep up would otherwise be woken by every entry.
#[inline(always)]
pub fn flags<T>(ring: &RingBuf, size: u64) -> u64 {
    // What the entry takes: an 8-byte header, then `T` rounded up to 8.
    let taken = (8 + size_of::<T>() as u64 + 7) & !7;
    let mark = size / 4;
    // Counts reserved entries, this one included.
    let waiting = ring.query(u64::from(BPF_RB_AVAIL_DATA));
    if waiting >= mark && waiting < mark + taken {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
