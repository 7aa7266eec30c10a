//! NetFlow v9 / IPFIX templates compiled for the XDP program: where in a
//! fixed-length data record each field that aggregation needs sits. Userspace
//! learns templates (`collector/src/netflow/template.rs`) and compiles those
//! whose needed fields are all at fixed offsets; the kernel and the socket
//! path then read records through the same [`CompiledTemplate::record_into`],
//! so they cannot disagree.

use crate::agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START, FlowRecord, Ip, ip_from_v4, scale};

/// Compiled templates (`HashMap<TemplateKey, CompiledTemplate>`).
pub const TEMPLATES_MAP: &str = "TEMPLATES";
/// Compiled templates the kernel holds at most; beyond it exports of further
/// templates take the socket path.
pub const MAX_COMPILED_TEMPLATES: u32 = 8192;
/// Exports with template sets the XDP program has passed up, per exporter
/// and domain (`HashMap<TemplateKey, u64>`, `template_id` 0; the kernel adds
/// atomically), and how many of them userspace has processed
/// (`HashMap<TemplateKey, u64>`, written by userspace only). While the first
/// exceeds the second, a template change may still be on its way into
/// `TEMPLATES`, so the kernel passes that exporter's data up rather than read
/// it through a template that may be stale.
pub const TEMPLATE_SETS_SEEN_MAP: &str = "TEMPLATE_SETS_SEEN";
pub const TEMPLATE_SETS_DONE_MAP: &str = "TEMPLATE_SETS_DONE";
/// Exporter domains tracked by the two maps above.
pub const MAX_TEMPLATE_DOMAINS: u32 = 4096;

/// Longest data record the kernel parses (a power of two: the kernel masks
/// with `MAX_RECORD_LEN - 1`).
pub const MAX_RECORD_LEN: usize = 512;
/// Longest v9/IPFIX export the kernel parses (a power of two, as above);
/// longer ones take the socket path.
pub const MAX_EXPORT_LEN: usize = 8192;
/// Most sets per export the kernel parses.
pub const MAX_SETS: usize = 16;
/// Most data records per export the kernel parses.
pub const MAX_EXPORT_RECORDS: u32 = 1024;
/// Shortest data record the kernel parses: shorter templates take the
/// socket path (bounding records per export).
pub const MIN_RECORD_LEN: u16 = 8;

/// Information element ids (RFC 3954 field types, which IPFIX shares for ids
/// below 128, and the IANA IPFIX registry above).
pub mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL: u16 = 4;
    pub const IP_CLASS_OF_SERVICE: u16 = 5;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const EGRESS_INTERFACE: u16 = 14;
    /// v9 LAST_SWITCHED.
    pub const FLOW_END_SYS_UP_TIME: u16 = 21;
    /// v9 FIRST_SWITCHED.
    pub const FLOW_START_SYS_UP_TIME: u16 = 22;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    /// v9 SAMPLING_INTERVAL (options).
    pub const SAMPLING_INTERVAL: u16 = 34;
    pub const SAMPLING_ALGORITHM: u16 = 35;
    /// v9 FLOW_SAMPLER_ID.
    pub const SAMPLER_ID: u16 = 48;
    pub const SAMPLER_MODE: u16 = 49;
    pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
    pub const FLOW_START_SECONDS: u16 = 150;
    pub const FLOW_END_SECONDS: u16 = 151;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const FLOW_START_MICROSECONDS: u16 = 154;
    pub const FLOW_END_MICROSECONDS: u16 = 155;
    pub const FLOW_START_NANOSECONDS: u16 = 156;
    pub const FLOW_END_NANOSECONDS: u16 = 157;
    pub const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
    pub const SELECTOR_ID: u16 = 302;
    pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
    pub const SAMPLING_PACKET_SPACE: u16 = 306;
    /// RFC 5103: reverse information elements are the forward ones under
    /// this private enterprise number (reverseOctetDeltaCount is
    /// 29305/1, reversePacketDeltaCount 29305/2).
    pub const REVERSE_PEN: u32 = 29_305;
}

/// How a time field is encoded.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeKind {
    #[default]
    Absent = 0,
    /// Milliseconds of exporter uptime (IEs 21/22), 4 bytes.
    UptimeMs = 1,
    /// Seconds since the Unix epoch (IEs 150/151), 4 bytes.
    Seconds = 2,
    /// Milliseconds since the Unix epoch (IEs 152/153), 8 bytes.
    Millis = 3,
    /// NTP timestamp, 32.32 fixed point since 1900 (IEs 154–157), 8 bytes.
    Ntp = 4,
}

/// One field's place in a record; `size == 0` means the template lacks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub offset: u16,
    pub size: u8,
    /// A [`TimeKind`] for time slots; 0 otherwise.
    pub kind: u8,
}

impl Slot {
    pub const fn present(&self) -> bool {
        self.size != 0
    }
}

/// Identifies a template: exporter, source id (v9) or observation domain
/// (IPFIX), template id and protocol version (RFC 3954 §5, RFC 7011 §8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateKey {
    pub exporter: Ip,
    pub domain: u32,
    pub template_id: u16,
    /// 9 or 10.
    pub version: u16,
}

/// A template reduced to what aggregation reads, with every field at a
/// fixed offset inside a `record_len`-byte record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompiledTemplate {
    pub record_len: u16,
    pub _pad: u16,
    /// Sampling interval (1 in N) that applies to every record; 0 or 1 for
    /// unsampled.
    pub sampling: u32,
    /// Unix ms at which exporter uptime was 0, for IPFIX uptime times; 0 when
    /// unknown or not needed.
    pub uptime_base_ms: u64,
    /// Source and destination address: 4 bytes (IPv4) or 16 (IPv6).
    pub src: Slot,
    pub dst: Slot,
    pub src_port: Slot,
    pub dst_port: Slot,
    pub protocol: Slot,
    /// 1 to 8 bytes each.
    pub octets: Slot,
    pub packets: Slot,
    pub start: Slot,
    pub end: Slot,
    /// Ingress and egress interface (IEs 10 and 14), 1 to 4 bytes.
    pub input_if: Slot,
    pub output_if: Slot,
    /// RFC 5103 biflows: the reverse direction's octets and packets (1 to
    /// 8 bytes each); absent for one-way templates.
    pub rev_octets: Slot,
    pub rev_packets: Slot,
    pub _pad2: u32,
}

/// Times from the export's header that record times are relative to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportTime {
    /// Export time, Unix seconds (v9 and IPFIX headers).
    pub unix_secs: u32,
    /// v9: exporter uptime (ms) at export; IPFIX: unused.
    pub sys_uptime_ms: u32,
    pub version: u16,
}

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl CompiledTemplate {
    /// Reads a record into `out`. `rec` starts at the record and its length
    /// is a power of two at least `record_len`: offsets are masked with it,
    /// which is what lets the verifier bound every read. A field the template
    /// lacks reads as zero; a record without a time is timed at export.
    #[inline(always)]
    pub fn record_into(&self, rec: &[u8], time: &ExportTime, flags: u32, out: &mut FlowRecord) {
        out.src = read_ip(rec, &self.src);
        out.dst = read_ip(rec, &self.dst);
        out.src_port = read_uint(rec, &self.src_port) as u16;
        out.dst_port = read_uint(rec, &self.dst_port) as u16;
        out.protocol = read_uint(rec, &self.protocol) as u8;
        let interval = if flags & FLAG_SCALE_SAMPLING != 0 {
            self.sampling
        } else {
            1
        };
        out.bytes = scale(read_uint(rec, &self.octets), interval);
        out.packets = scale(read_uint(rec, &self.packets), interval);
        let (first, second) = if flags & FLAG_TIME_FROM_START != 0 {
            (&self.start, &self.end)
        } else {
            (&self.end, &self.start)
        };
        let slot = if first.present() { first } else { second };
        out.time_ms = self.time_ms(rec, slot, time);
        out.input_if = read_uint(rec, &self.input_if) as u32;
        out.output_if = read_uint(rec, &self.output_if) as u32;
    }

    /// Turns `out`, read from `rec` by [`Self::record_into`], into the
    /// reverse direction of its biflow (RFC 5103): destination to source,
    /// ports and interfaces swapped, the reverse counters, the same time.
    /// False (and `out` untouched) when the template has no reverse
    /// octets or the record's reverse direction carried nothing.
    #[inline(always)]
    pub fn reverse_into(&self, rec: &[u8], flags: u32, out: &mut FlowRecord) -> bool {
        if !self.rev_octets.present() {
            return false;
        }
        let octets = read_uint(rec, &self.rev_octets);
        let packets = read_uint(rec, &self.rev_packets);
        if octets == 0 && packets == 0 {
            return false;
        }
        let interval = if flags & FLAG_SCALE_SAMPLING != 0 {
            self.sampling
        } else {
            1
        };
        core::mem::swap(&mut out.src, &mut out.dst);
        core::mem::swap(&mut out.src_port, &mut out.dst_port);
        core::mem::swap(&mut out.input_if, &mut out.output_if);
        out.bytes = scale(octets, interval);
        out.packets = scale(packets, interval);
        true
    }

    #[inline(always)]
    fn time_ms(&self, rec: &[u8], slot: &Slot, time: &ExportTime) -> u64 {
        let export_ms = time.unix_secs as u64 * 1000;
        let value = read_uint(rec, slot);
        match slot.kind {
            k if k == TimeKind::UptimeMs as u8 => {
                if time.version == 9 {
                    // Signed and modulo 2^32, as in v5.
                    let age = time.sys_uptime_ms.wrapping_sub(value as u32) as i32 as i64;
                    let ms = export_ms as i64 - age;
                    if ms < 0 { 0 } else { ms as u64 }
                } else {
                    // The base comes from the exporter's options data: any
                    // u64 (found by fuzzing).
                    self.uptime_base_ms.saturating_add(value)
                }
            }
            k if k == TimeKind::Seconds as u8 => value * 1000,
            k if k == TimeKind::Millis as u8 => value,
            k if k == TimeKind::Ntp as u8 => {
                let secs = (value >> 32).saturating_sub(NTP_UNIX_OFFSET);
                secs * 1000 + (((value & 0xffff_ffff) * 1000) >> 32)
            }
            _ => export_ms,
        }
    }
}

/// An unsigned big-endian integer of `slot.size` (1 to 8) bytes; 0 if absent
/// or out of `rec` (whose length is a power of two, see `record_into`).
#[inline(always)]
pub fn read_uint(rec: &[u8], slot: &Slot) -> u64 {
    let mask = rec.len().wrapping_sub(1);
    let start = slot.offset as usize;
    if start + slot.size as usize > rec.len() {
        return 0;
    }
    let mut value = 0u64;
    let mut i = 0;
    while i < 8 {
        if i >= slot.size as usize {
            break;
        }
        match rec.get((start + i) & mask) {
            Some(&b) => value = value << 8 | b as u64,
            None => return 0,
        }
        i += 1;
    }
    value
}

/// A 4-byte address IPv4-mapped, a 16-byte one as is; zeros otherwise.
#[inline(always)]
pub fn read_ip(rec: &[u8], slot: &Slot) -> Ip {
    let start = slot.offset as usize & rec.len().wrapping_sub(1);
    match slot.size {
        4 => match rec.get(start..start + 4) {
            Some(b) => ip_from_v4([b[0], b[1], b[2], b[3]]),
            None => [0; 16],
        },
        16 => match rec.get(start..start + 16) {
            Some(b) => {
                let mut ip = [0; 16];
                ip.copy_from_slice(b);
                ip
            }
            None => [0; 16],
        },
        _ => [0; 16],
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::TemplateKey {}
    unsafe impl aya::Pod for super::CompiledTemplate {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(offset: u16, size: u8) -> Slot {
        Slot {
            offset,
            size,
            kind: 0,
        }
    }

    #[test]
    fn uints_of_every_size_read_big_endian() {
        let rec = [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(read_uint(&rec, &slot(0, 1)), 1);
        assert_eq!(read_uint(&rec, &slot(1, 3)), 0x02_03_04);
        assert_eq!(read_uint(&rec, &slot(1, 8)), 0x0203_0405_0607_0809);
        assert_eq!(read_uint(&rec, &slot(12, 8)), 0, "past the record");
        assert_eq!(read_uint(&rec, &slot(0, 0)), 0, "absent");
    }

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<TemplateKey>(), 16 + 4 + 2 + 2);
        assert_eq!(
            core::mem::size_of::<CompiledTemplate>(),
            2 + 2 + 4 + 8 + 13 * 4 + 4
        );
    }

    #[test]
    fn a_biflow_record_turns_into_its_reverse_direction() {
        let t = CompiledTemplate {
            record_len: 20,
            sampling: 10,
            src: slot(0, 4),
            dst: slot(4, 4),
            octets: slot(8, 4),
            rev_octets: slot(12, 4),
            rev_packets: slot(16, 2),
            ..CompiledTemplate::default()
        };
        let mut rec = [0u8; 32];
        rec[..8].copy_from_slice(&[198, 18, 100, 1, 198, 19, 0, 1]);
        rec[8..12].copy_from_slice(&100u32.to_be_bytes());
        rec[12..16].copy_from_slice(&7000u32.to_be_bytes());
        rec[16..18].copy_from_slice(&5u16.to_be_bytes());
        let time = ExportTime::default();
        let mut r = FlowRecord::default();
        t.record_into(&rec, &time, FLAG_SCALE_SAMPLING, &mut r);
        r.src_port = 50_000;
        r.dst_port = 443;
        r.input_if = 1;
        r.output_if = 2;
        let forward = r;
        assert!(t.reverse_into(&rec, FLAG_SCALE_SAMPLING, &mut r));
        assert_eq!((r.src, r.dst), (forward.dst, forward.src));
        assert_eq!((r.src_port, r.dst_port), (443, 50_000));
        assert_eq!((r.input_if, r.output_if), (2, 1));
        assert_eq!(
            (r.bytes, r.packets),
            (70_000, 50),
            "scaled like the forward"
        );
        assert_eq!(r.time_ms, forward.time_ms);

        rec[12..18].fill(0);
        let mut r = forward;
        assert!(!t.reverse_into(&rec, 0, &mut r), "nothing came back");
        assert_eq!(r, forward);
        let one_way = CompiledTemplate {
            rev_octets: Slot::default(),
            ..t
        };
        assert!(!one_way.reverse_into(&rec, 0, &mut r));
    }

    #[test]
    fn times_convert_from_every_encoding() {
        let t = CompiledTemplate::default();
        let v9 = ExportTime {
            unix_secs: 1_700_000_000,
            sys_uptime_ms: 10_000,
            version: 9,
        };
        let up = |v: u32| v.to_be_bytes();
        let up = |v: u32| {
            let mut rec = [0; 8];
            rec[..4].copy_from_slice(&up(v));
            rec
        };
        let s = Slot {
            offset: 0,
            size: 4,
            kind: TimeKind::UptimeMs as u8,
        };
        assert_eq!(t.time_ms(&up(9_000), &s, &v9), 1_700_000_000_000 - 1_000);
        let ipfix = ExportTime { version: 10, ..v9 };
        let based = CompiledTemplate {
            uptime_base_ms: 1_600_000_000_000,
            ..t
        };
        assert_eq!(based.time_ms(&up(9_000), &s, &ipfix), 1_600_000_009_000);
        let absurd = CompiledTemplate {
            uptime_base_ms: u64::MAX - 1,
            ..t
        };
        assert_eq!(
            absurd.time_ms(&up(9_000), &s, &ipfix),
            u64::MAX,
            "saturates"
        );
        let s = Slot {
            offset: 0,
            size: 4,
            kind: TimeKind::Seconds as u8,
        };
        assert_eq!(t.time_ms(&up(1_700_000_123), &s, &v9), 1_700_000_123_000);
        let s = Slot {
            offset: 0,
            size: 8,
            kind: TimeKind::Millis as u8,
        };
        assert_eq!(
            t.time_ms(&1_700_000_123_456u64.to_be_bytes(), &s, &v9),
            1_700_000_123_456
        );
        let ntp = ((1_700_000_000u64 + NTP_UNIX_OFFSET) << 32) | (1u64 << 31); // +0.5 s
        let s = Slot {
            offset: 0,
            size: 8,
            kind: TimeKind::Ntp as u8,
        };
        assert_eq!(t.time_ms(&ntp.to_be_bytes(), &s, &v9), 1_700_000_000_500);
        let absent = Slot::default();
        assert_eq!(
            t.time_ms(&[], &absent, &v9),
            1_700_000_000_000,
            "export time"
        );
    }
}
