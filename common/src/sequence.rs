//! Export sequence numbers, for the completeness of what an exporter sent.
//! The kernel consumes the exports it aggregates, so it hands userspace
//! what sequence tracking needs, once per export: an [`ExportSeen`] in the
//! `EXPORTS` ring, written before the export's records are aggregated, and
//! the octets they carried added to `EXPORT_BYTES` after. The socket path
//! builds the same from what it decodes; both feed one tracker
//! (`collector/src/integrity/sequence.rs`).

use crate::agg::Ip;

/// Ring buffer of [`ExportSeen`], one per export the kernel aggregated.
/// When it is full the kernel passes the export up whole instead
/// (`XdpStat::PassExportRingFull`), so the socket path sees it: nothing is
/// aggregated without its sequence number being seen.
pub const EXPORTS_RING: &str = "EXPORTS";
/// Default ring size in bytes (a power of two, a multiple of the page size):
/// 64 K exports, a second of a heavy exporter fleet between reads.
pub const DEFAULT_EXPORTS_RING_BYTES: u32 = 1 << 22;

/// One export's identity and sequence number, and what it carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSeen {
    pub exporter: Ip,
    /// v9 source id, IPFIX observation domain, v5 [`v5_domain`].
    pub domain: u32,
    /// The header's sequence number.
    pub sequence: u32,
    /// What tells a restart: v5/v9 the header's sysUptime (ms), IPFIX its
    /// export time (Unix seconds).
    pub clock: u32,
    /// Data records in the export (biflow records count once).
    pub records: u32,
    /// 5, 9 or 10.
    pub version: u16,
    pub _pad: [u8; 6],
}

/// Octets the flow records of each exporter domain carried, sampling-scaled
/// per the flags (`PerCpuHashMap<ExportKey, u64>`, cumulative): added once
/// per export after its records are aggregated. (A ring entry cannot wait
/// for them: a reservation held across the record loop makes the
/// verifier's states unprunable.)
pub const EXPORT_BYTES_MAP: &str = "EXPORT_BYTES";
/// Exporter domains counted; beyond it, bytes of new ones are not.
pub const MAX_EXPORT_DOMAINS: u32 = 4096;

/// An exporter domain, as in [`ExportSeen`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportKey {
    pub exporter: Ip,
    pub domain: u32,
    pub version: u16,
    pub _pad: u16,
}

/// A v5 exporter's sequence is per engine (type and id).
#[inline(always)]
pub const fn v5_domain(engine_type: u8, engine_id: u8) -> u32 {
    (engine_type as u32) << 8 | engine_id as u32
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::ExportSeen {}
    unsafe impl aya::Pod for super::ExportKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ExportSeen>(), 16 + 4 * 4 + 2 + 6);
        assert_eq!(core::mem::size_of::<ExportKey>(), 16 + 4 + 2 + 2);
    }
}
