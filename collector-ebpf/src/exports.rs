//! One [`ExportSeen`] per aggregated export, for userspace's sequence
//! tracking: the kernel consumes these exports, so their sequence numbers
//! would be lost otherwise. Written before any record is aggregated; when
//! the ring is full the export goes up to the socket path instead. The
//! octets its records carried are added to `EXPORT_BYTES` after.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuHashMap, RingBuf},
};
use flowtally_common::sequence::{
    DEFAULT_EXPORTS_RING_BYTES, ExportKey, ExportSeen, MAX_EXPORT_DOMAINS,
};

use crate::wakeup;

#[map(name = "EXPORTS")]
static EXPORTS: RingBuf = RingBuf::with_byte_size(DEFAULT_EXPORTS_RING_BYTES, 0);

#[map(name = "EXPORT_BYTES")]
static EXPORT_BYTES: PerCpuHashMap<ExportKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_EXPORT_DOMAINS, 0);

/// Notes an export; false when the ring is full.
#[inline(always)]
pub fn note(key: &ExportKey, sequence: u32, clock: u32, records: u32) -> bool {
    let Some(mut entry) = EXPORTS.reserve::<ExportSeen>(0) else {
        return false;
    };
    let seen = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively ours, `ExportSeen`-sized entry,
    // written field by field in place (no copy staged on the stack).
    unsafe {
        (*seen).exporter = key.exporter;
        (*seen).domain = key.domain;
        (*seen).sequence = sequence;
        (*seen).clock = clock;
        (*seen).records = records;
        (*seen).version = key.version;
        // Volatile: a plain store becomes a byte-by-byte `memset` call.
        core::ptr::write_volatile(&raw mut (*seen)._pad, [0; 6]);
    }
    entry.submit(wakeup::flags::<ExportSeen>(
        &EXPORTS,
        u64::from(DEFAULT_EXPORTS_RING_BYTES),
    ));
    true
}

/// Adds the octets an export's records carried.
#[inline(always)]
pub fn add_bytes(key: &ExportKey, bytes: u64) {
    if let Some(sum) = EXPORT_BYTES.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        unsafe { *sum += bytes };
    } else {
        // Full map: those bytes go uncounted (the records are aggregated).
        let _ = EXPORT_BYTES.insert(key, &bytes, u64::from(BPF_NOEXIST));
    }
}
