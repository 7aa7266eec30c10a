//! NetFlow v5 wire format (Cisco): a 24-byte header and up to 30 records of
//! 48 bytes, all big-endian. Parsing works on fixed-size arrays, so the XDP
//! program (after its bounds checks) and the socket decoder share it.

use crate::agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START, FlowRecord, V4Record, scale};

pub const VERSION: u16 = 5;
pub const HEADER_LEN: usize = 24;
pub const RECORD_LEN: usize = 48;
/// The most records one v5 export may carry.
pub const MAX_RECORDS: usize = 30;

/// A header's bytes, 8-byte aligned so that the BPF backend reads its
/// fields with word loads instead of byte by byte (which costs registers,
/// then stack, which the kernel caps at 512 bytes).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawHeader(pub [u8; HEADER_LEN]);

/// A record's bytes as they came, in 32-bit words: the BPF backend reads
/// a field with one aligned load and a byte swap, where bytes behind a
/// slice cost a load, a shift and an OR each (issue 14: that was most of
/// a v5 record's own cost in the kernel).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawRecord(pub [u32; RECORD_LEN / 4]);

impl RawRecord {
    pub fn from_bytes(bytes: &[u8; RECORD_LEN]) -> Self {
        Self(core::array::from_fn(|i| {
            u32::from_ne_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        }))
    }

    /// The big-endian 32-bit field at byte `4 * word`.
    #[inline(always)]
    fn be32(&self, word: usize) -> u32 {
        u32::from_be(self.0[word])
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub count: u16,
    /// Exporter uptime (ms) when the export was sent.
    pub sys_uptime: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    pub flow_sequence: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Two bits of sampling mode, fourteen of interval.
    pub sampling: u16,
}

/// Why an export is rejected as a whole (never partly aggregated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Shorter than its header.
    Truncated,
    BadVersion,
    /// Zero records, or more than 30.
    BadCount,
    /// The length is not exactly header + count × record.
    LengthMismatch,
}

impl Invalid {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "v5_truncated",
            Self::BadVersion => "v5_bad_version",
            Self::BadCount => "v5_bad_count",
            Self::LengthMismatch => "v5_length_mismatch",
        }
    }
}

#[inline(always)]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    #[inline(always)]
    pub fn parse(raw: &RawHeader) -> Self {
        let b = &raw.0;
        Self {
            version: u16_at(b, 0),
            count: u16_at(b, 2),
            sys_uptime: u32_at(b, 4),
            unix_secs: u32_at(b, 8),
            unix_nsecs: u32_at(b, 12),
            flow_sequence: u32_at(b, 16),
            engine_type: b[20],
            engine_id: b[21],
            sampling: u16_at(b, 22),
        }
    }

    /// Checks an export of `len` bytes with this header before any of its
    /// records is used.
    #[inline(always)]
    pub fn validate(&self, len: usize) -> Result<(), Invalid> {
        if self.version != VERSION {
            return Err(Invalid::BadVersion);
        }
        let count = self.count as usize;
        if count == 0 || count > MAX_RECORDS {
            return Err(Invalid::BadCount);
        }
        if len != HEADER_LEN + count * RECORD_LEN {
            return Err(Invalid::LengthMismatch);
        }
        Ok(())
    }

    /// The sampling interval (1 in N); 0 and 1 both mean unsampled.
    #[inline(always)]
    pub fn sampling_interval(&self) -> u32 {
        (self.sampling & 0x3fff) as u32
    }

    /// Unix ms of a moment given in exporter uptime ms. The difference to
    /// `sys_uptime` is taken modulo 2^32 and signed, so uptime wrap-around
    /// (every 49.7 days) and slightly future times both come out right.
    #[inline(always)]
    pub fn unix_ms(&self, uptime_ms: u32) -> u64 {
        let export_ms = self.unix_secs as i64 * 1000 + (self.unix_nsecs / 1_000_000) as i64;
        let age = self.sys_uptime.wrapping_sub(uptime_ms) as i32 as i64;
        let ms = export_ms - age;
        if ms < 0 { 0 } else { ms as u64 }
    }

    /// The aggregation view of one record of this export.
    #[inline(always)]
    pub fn record(&self, raw: &RawRecord, flags: u32) -> FlowRecord {
        let mut record = FlowRecord::default();
        self.record_into(raw, flags, &mut record);
        record
    }

    /// [`Header::record`] written field by field into `out`, which lets the
    /// XDP program build it in map memory rather than on its stack.
    #[inline(always)]
    pub fn record_into(&self, raw: &RawRecord, flags: u32, out: &mut FlowRecord) {
        self.v4_record(raw, flags).widen_into(out);
    }

    /// One record of this export as it is on the wire: IPv4 addresses
    /// (byte offsets: addresses 0 and 4, interfaces 12, packets 16, octets
    /// 20, first and last switched 24 and 28, ports 32, protocol 38).
    #[inline(always)]
    pub fn v4_record(&self, raw: &RawRecord, flags: u32) -> V4Record {
        let interval = if flags & FLAG_SCALE_SAMPLING != 0 {
            self.sampling_interval()
        } else {
            1
        };
        let switched = if flags & FLAG_TIME_FROM_START != 0 {
            raw.be32(6)
        } else {
            raw.be32(7)
        };
        let (interfaces, ports) = (raw.be32(3), raw.be32(8));
        V4Record {
            src: raw.be32(0),
            dst: raw.be32(1),
            src_port: (ports >> 16) as u16,
            dst_port: ports as u16,
            protocol: (raw.be32(9) >> 8) as u8,
            bytes: scale(raw.be32(5) as u64, interval),
            packets: scale(raw.be32(4) as u64, interval),
            time_ms: self.unix_ms(switched),
            input_if: interfaces >> 16,
            output_if: interfaces & 0xffff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sys_uptime: u32, unix_secs: u32, unix_nsecs: u32) -> Header {
        Header {
            version: 5,
            count: 1,
            sys_uptime,
            unix_secs,
            unix_nsecs,
            ..Header::default()
        }
    }

    #[test]
    fn record_time_is_export_time_minus_age() {
        let h = header(10_000, 1_700_000_000, 250_000_000);
        assert_eq!(h.unix_ms(9_000), 1_700_000_000_250 - 1_000);
        assert_eq!(h.unix_ms(10_500), 1_700_000_000_250 + 500, "a little ahead");
    }

    #[test]
    fn record_time_survives_uptime_wraparound() {
        // Switched 100 ms before the uptime counter wrapped to 50.
        let h = header(50, 1_700_000_000, 0);
        assert_eq!(h.unix_ms(u32::MAX - 99), 1_700_000_000_000 - 150);
    }

    #[test]
    fn validation_rejects_whole_exports() {
        let h = |count| Header {
            count,
            ..header(0, 0, 0)
        };
        assert_eq!(h(1).validate(72), Ok(()));
        assert_eq!(h(30).validate(24 + 30 * 48), Ok(()));
        assert_eq!(h(0).validate(24), Err(Invalid::BadCount));
        assert_eq!(h(31).validate(24 + 31 * 48), Err(Invalid::BadCount));
        assert_eq!(h(2).validate(72), Err(Invalid::LengthMismatch));
        assert_eq!(h(1).validate(73), Err(Invalid::LengthMismatch));
        let v9 = Header { version: 9, ..h(1) };
        assert_eq!(v9.validate(72), Err(Invalid::BadVersion));
    }

    #[test]
    fn record_fields_come_from_their_wire_offsets() {
        let mut bytes = [0; RECORD_LEN];
        bytes[..8].copy_from_slice(&[198, 18, 100, 7, 198, 19, 0, 1]);
        bytes[12..16].copy_from_slice(&[0x12, 0x34, 0xab, 0xcd]);
        bytes[16..24].copy_from_slice(&[0, 0, 0, 3, 0, 0, 5, 0xdc]);
        bytes[24..32].copy_from_slice(&[0, 0, 0x23, 0x28, 0, 0, 0x27, 0x10]);
        bytes[32..36].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        bytes[36..40].copy_from_slice(&[0, 0x1b, 6, 0]);
        let h = header(10_000, 1_700_000_000, 0);
        let r = h.record(&RawRecord::from_bytes(&bytes), 0);
        assert_eq!(r.src, crate::agg::ip_from_v4([198, 18, 100, 7]));
        assert_eq!(r.dst, crate::agg::ip_from_v4([198, 19, 0, 1]));
        assert_eq!((r.input_if, r.output_if), (0x1234, 0xabcd));
        assert_eq!((r.packets, r.bytes), (3, 1500));
        assert_eq!((r.src_port, r.dst_port, r.protocol), (40_000, 443, 6));
        assert_eq!(r.time_ms, 1_700_000_000_000, "last switched, 10 000");
        let from_start = h.record(&RawRecord::from_bytes(&bytes), FLAG_TIME_FROM_START);
        assert_eq!(from_start.time_ms, 1_700_000_000_000 - 1_000);
    }

    #[test]
    fn sampling_scales_only_when_enabled() {
        let h = Header {
            sampling: 0x4000 | 100,
            ..header(1000, 1, 0)
        };
        let mut bytes = [0; RECORD_LEN];
        bytes[16..20].copy_from_slice(&3u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&1500u32.to_be_bytes());
        let r = RawRecord::from_bytes(&bytes);
        let scaled = h.record(&r, FLAG_SCALE_SAMPLING);
        assert_eq!((scaled.bytes, scaled.packets), (150_000, 300));
        let raw = h.record(&r, 0);
        assert_eq!((raw.bytes, raw.packets), (1500, 3));
    }
}
