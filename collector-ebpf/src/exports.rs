//! One [`ExportSeen`] per aggregated export, for userspace's sequence
//! tracking: the kernel consumes these exports, so their sequence numbers
//! would be lost otherwise. Reserved before any record is aggregated; when
//! the ring is full the export goes up to the socket path instead.

use aya_ebpf::{
    macros::map,
    maps::{RingBuf, ring_buf::RingBufEntry},
};
use flowtally_common::{
    agg::Ip,
    sequence::{DEFAULT_EXPORTS_RING_BYTES, ExportSeen},
};

#[map(name = "EXPORTS")]
static EXPORTS: RingBuf = RingBuf::with_byte_size(DEFAULT_EXPORTS_RING_BYTES, 0);

/// A reserved entry, filled but for its bytes; `None` when the ring is full.
#[inline(always)]
pub fn reserve(
    exporter: &Ip,
    version: u16,
    domain: u32,
    sequence: u32,
    clock: u32,
    records: u32,
) -> Option<RingBufEntry<ExportSeen>> {
    let mut entry = EXPORTS.reserve::<ExportSeen>(0)?;
    let seen = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively ours, `ExportSeen`-sized entry,
    // written field by field in place (no copy staged on the stack).
    unsafe {
        (*seen).exporter = *exporter;
        (*seen).domain = domain;
        (*seen).sequence = sequence;
        (*seen).clock = clock;
        (*seen).records = records;
        (*seen).bytes = 0;
        (*seen).version = version;
        (*seen)._pad = [0; 6];
    }
    Some(entry)
}

/// Completes an entry with the octets its export's records carried.
#[inline(always)]
pub fn submit(mut entry: RingBufEntry<ExportSeen>, bytes: u64) {
    // SAFETY: as in `reserve`; the entry is still ours until submitted.
    unsafe { (*entry.as_mut_ptr()).bytes = bytes };
    entry.submit(0);
}
