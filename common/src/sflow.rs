//! sFlow v5 (sflow.org, `sflow_version_5.txt`): what the XDP program and the
//! socket path must agree on — how a flow sample's packet record becomes a
//! [`FlowRecord`], the kernel's per-datagram bounds, and the per-source
//! state both keep for the integrity audit.
//!
//! # The rules
//!
//! - A flow sample (format 1, or expanded format 3) becomes one record, read
//!   from its first *packet record*: a raw packet header (format 1:
//!   Ethernet with up to two 802.1Q/802.1ad tags, or a bare IPv4 or IPv6
//!   header) or a sampled IPv4/IPv6 record (formats 3/4). Other records
//!   are skipped by their length. A sample without a packet record, or
//!   whose packet is not IPv4/IPv6, yields no record and is counted.
//! - Bytes are the IP packet's length: IPv4 total length, IPv6 payload
//!   length + 40 (as NetFlow counts octets), or the `length` of a sampled
//!   IPv4/IPv6 record (the IP packet's length, says the spec); packets 1;
//!   both times the sampling rate when sampling is scaled.
//! - Only the first [`HEADER_WINDOW`] bytes of a sampled header are read
//!   (enough for Ethernet, two tags, a 60-byte IPv4 header and the ports);
//!   ports are read for TCP and UDP only, and only from the first fragment.
//! - Interfaces: the ifIndex when the 2-bit format says "single interface",
//!   else 0 (unknown), as is 0x3fffffff ("no interface").
//! - The record's time is its arrival time: sFlow carries no flow times.

use crate::agg::{FLAG_SCALE_SAMPLING, FlowRecord, Ip, ip_from_v4, scale};

/// The datagram version, a 32-bit word (NetFlow's is 16 bits: the first two
/// bytes of an sFlow datagram are zero, of a NetFlow one never).
pub const VERSION: u32 = 5;
/// The IANA port.
pub const PORT: u16 = 6343;

/// Agent address types.
pub const ADDRESS_IPV4: u32 = 1;
pub const ADDRESS_IPV6: u32 = 2;

/// Sample formats (enterprise 0).
pub const SAMPLE_FLOW: u32 = 1;
pub const SAMPLE_COUNTERS: u32 = 2;
pub const SAMPLE_FLOW_EXPANDED: u32 = 3;
pub const SAMPLE_COUNTERS_EXPANDED: u32 = 4;

/// Flow record formats (enterprise 0).
pub const RECORD_RAW_HEADER: u32 = 1;
pub const RECORD_IPV4: u32 = 3;
pub const RECORD_IPV6: u32 = 4;
/// Counter record format (enterprise 0): generic interface counters.
pub const COUNTERS_GENERIC_INTERFACE: u32 = 1;

/// Fixed lengths of the records above.
pub const RAW_HEADER_FIXED_LEN: usize = 16;
pub const IPV4_RECORD_LEN: usize = 32;
pub const IPV6_RECORD_LEN: usize = 56;
pub const GENERIC_INTERFACE_LEN: usize = 88;

/// `header_protocol` values of a raw packet header record.
pub const HEADER_ETHERNET: u32 = 1;
pub const HEADER_IPV4: u32 = 11;
pub const HEADER_IPV6: u32 = 12;

/// Bytes of a sampled header that are read (a power of two: the kernel
/// masks offsets with it).
pub const HEADER_WINDOW: usize = 128;

/// Longest datagram the kernel parses (a power of two, as above); longer
/// ones take the socket path.
pub const MAX_DATAGRAM_LEN: usize = 4096;
/// Most samples per datagram the kernel parses.
pub const MAX_SAMPLES: u32 = 32;
/// Most flow records per datagram (all samples together) the kernel walks.
pub const MAX_RECORDS: u32 = 128;

/// The main XDP program tail-calls `SFLOW_PROGRAM_NAME` for sFlow datagrams,
/// through `PROGRAMS_MAP` (`ProgramArray`) at index [`PROGRAM`].
pub const PROGRAMS_MAP: &str = "PROGRAMS";
pub const SFLOW_PROGRAM_NAME: &str = "flowtally_sflow";
pub const PROGRAM: u32 = 0;

/// Per-CPU state of each sFlow source the kernel has aggregated samples of
/// (`PerCpuHashMap<SourceKey, SourceState>`), for the integrity audit.
pub const SOURCES_MAP: &str = "SFLOW_SOURCES";
pub const MAX_SOURCES: u32 = 16_384;
/// Sampling rates renormalised from the sample pool
/// (`HashMap<SourceKey, u32>`), written by userspace each flush, read by
/// the kernel when [`crate::agg::FLAG_SFLOW_RENORMALIZE`] is set.
pub const RATES_MAP: &str = "SFLOW_RATES";
/// Unix time minus `CLOCK_MONOTONIC`, in ns (`Array<u64>`, one entry),
/// written by userspace: the kernel's arrival times are wall-clock times.
pub const CLOCK_MAP: &str = "SFLOW_CLOCK";
/// Per-CPU sample counters (`PerCpuArray<Counter>`), indexed by [`SampleStat`].
pub const SAMPLE_STATS_MAP: &str = "SFLOW_SAMPLE_STATS";

/// One sFlow data source: an agent, its sub-agent, and the source id
/// (`type << 24 | index`, as the compact formats carry it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub agent: Ip,
    pub sub_agent: u32,
    pub source_id: u32,
}

/// What a path has seen of one source: its latest flow sample's counters
/// (by sequence number, modulo 2^32) and how many samples arrived.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub samples: u64,
    pub sequence: u32,
    pub sampling_rate: u32,
    pub sample_pool: u32,
    pub drops: u32,
}

/// How far (in samples) a sequence number may lag the latest and still be
/// reordering; further back is an agent restart, whose sequence restarts.
pub const REORDER_WINDOW: u32 = 4096;

/// Whether sequence number `new` supersedes `latest`: ahead of it (modulo
/// 2^32), or so far behind that the agent must have restarted.
#[inline(always)]
pub const fn supersedes(new: u32, latest: u32) -> bool {
    let ahead = new.wrapping_sub(latest);
    ahead != 0 && (ahead as i32 > 0 || latest.wrapping_sub(new) > REORDER_WINDOW)
}

impl SourceState {
    /// Counts one flow sample, keeping the counters of the latest.
    #[inline(always)]
    pub fn observe(&mut self, sample: &FlowSample) {
        if self.samples == 0 || supersedes(sample.sequence, self.sequence) {
            self.sequence = sample.sequence;
            self.sampling_rate = sample.sampling_rate;
            self.sample_pool = sample.sample_pool;
            self.drops = sample.drops;
        }
        self.samples += 1;
    }

    /// Folds another path's or CPU's state in.
    pub fn merge(&mut self, other: &Self) {
        if other.samples == 0 {
            return;
        }
        let samples = self.samples + other.samples;
        if self.samples == 0 || supersedes(other.sequence, self.sequence) {
            *self = *other;
        }
        self.samples = samples;
    }
}

/// The fixed fields of a flow sample, compact or expanded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSample {
    pub sequence: u32,
    /// `type << 24 | index`.
    pub source_id: u32,
    pub sampling_rate: u32,
    pub sample_pool: u32,
    pub drops: u32,
    /// ifIndex, or 0 (see [`interface`]).
    pub input_if: u32,
    pub output_if: u32,
}

/// Where each sample went, counted per path. The discriminant indexes
/// `SFLOW_SAMPLE_STATS`; `count` is samples, `bytes` unused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleStat {
    /// A flow sample that became a record.
    Flow = 0,
    /// A flow sample without a packet record, or whose packet is not IP.
    NoIpPacket = 1,
    /// A sample of a format or enterprise not read, skipped by its length.
    Skipped = 2,
    /// A counter sample (the kernel passes datagrams with these up).
    Counters = 3,
}

impl SampleStat {
    pub const ALL: [Self; 4] = [Self::Flow, Self::NoIpPacket, Self::Skipped, Self::Counters];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Flow => "flow",
            Self::NoIpPacket => "no_ip_packet",
            Self::Skipped => "skipped",
            Self::Counters => "counters",
        }
    }
}

/// The ifIndex a compact sample's interface word names: its top two bits
/// are a format, and only format 0 (one interface) names one; 0x3fffffff
/// is "none".
#[inline(always)]
pub const fn interface(word: u32) -> u32 {
    interface_expanded(word >> 30, word & 0x3fff_ffff)
}

/// [`interface`] for the expanded format, which spells format and value out.
#[inline(always)]
pub const fn interface_expanded(format: u32, value: u32) -> u32 {
    if format == 0 && value != 0x3fff_ffff {
        value
    } else {
        0
    }
}

/// Reads a packet record into `out`'s addresses, ports, protocol and
/// (unscaled) bytes; false, and `out` partly written, when it holds no IPv4
/// or IPv6 packet. `kind` is the record format; for a raw header,
/// `protocol` is its `header_protocol`, `window` starts at the header bytes
/// and `len` is the header length, capped at [`HEADER_WINDOW`]; for sampled
/// IPv4/IPv6, `window` starts at the record. `window` is a power of two at
/// least [`HEADER_WINDOW`] long; nothing at or past `len` is read.
#[inline(always)]
pub fn packet_into(
    kind: u32,
    protocol: u32,
    window: &[u8],
    len: usize,
    out: &mut FlowRecord,
) -> bool {
    let w = Window { bytes: window, len };
    match kind {
        RECORD_RAW_HEADER => match protocol {
            HEADER_ETHERNET => w.ethernet(out),
            HEADER_IPV4 => w.ipv4(0, out),
            HEADER_IPV6 => w.ipv6(0, out),
            _ => false,
        },
        RECORD_IPV4 => w.sampled(4, out),
        RECORD_IPV6 => w.sampled(16, out),
        _ => false,
    }
}

/// Completes a record read by [`packet_into`]: packets, sampling, the
/// sample's interfaces and the arrival time. `rate` is the sample's
/// sampling rate, or the renormalised one.
#[inline(always)]
pub fn finish(out: &mut FlowRecord, sample: &FlowSample, rate: u32, flags: u32, time_ms: u64) {
    let rate = if flags & FLAG_SCALE_SAMPLING != 0 {
        rate
    } else {
        1
    };
    out.bytes = scale(out.bytes, rate);
    out.packets = scale(1, rate);
    out.input_if = sample.input_if;
    out.output_if = sample.output_if;
    out.time_ms = time_ms;
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A record's bytes: `bytes` is a power-of-two window, of which the first
/// `len` are the record's. Reads mask offsets into the window (which bounds
/// them for the verifier) and check them against `len` (which keeps the
/// kernel, whose window runs on into later bytes, in step with the socket
/// path).
struct Window<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl Window<'_> {
    #[inline(always)]
    fn has(&self, at: usize, n: usize) -> bool {
        at + n <= self.len && at + n <= self.bytes.len()
    }

    #[inline(always)]
    fn u8(&self, at: usize) -> u8 {
        let at = at & (self.bytes.len().wrapping_sub(1));
        match self.bytes.get(at) {
            Some(&b) => b,
            None => 0,
        }
    }

    #[inline(always)]
    fn u16(&self, at: usize) -> u16 {
        (self.u8(at) as u16) << 8 | self.u8(at + 1) as u16
    }

    #[inline(always)]
    fn u32(&self, at: usize) -> u32 {
        (self.u16(at) as u32) << 16 | self.u16(at + 2) as u32
    }

    /// `N` bytes at `at` (callers check `has` first).
    #[inline(always)]
    fn ip<const N: usize>(&self, at: usize, out: &mut Ip) {
        let at = at & (self.bytes.len().wrapping_sub(1));
        match self.bytes.get(at..at + N) {
            Some(b) if N == 4 => *out = ip_from_v4([b[0], b[1], b[2], b[3]]),
            Some(b) => out.copy_from_slice(&b[..16]),
            None => *out = [0; 16],
        }
    }

    fn ethernet(&self, out: &mut FlowRecord) -> bool {
        if !self.has(0, ETH_HLEN) {
            return false;
        }
        let mut at = ETH_HLEN;
        let mut ethertype = self.u16(at - 2);
        for _ in 0..2 {
            if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
                break;
            }
            if !self.has(at, VLAN_HLEN) {
                return false;
            }
            at += VLAN_HLEN;
            ethertype = self.u16(at - 2);
        }
        match ethertype {
            ETH_P_IPV4 => self.ipv4(at, out),
            ETH_P_IPV6 => self.ipv6(at, out),
            _ => false,
        }
    }

    fn ipv4(&self, at: usize, out: &mut FlowRecord) -> bool {
        if !self.has(at, 20) {
            return false;
        }
        let version_ihl = self.u8(at);
        let ihl = (version_ihl & 0x0f) as usize * 4;
        if version_ihl >> 4 != 4 || ihl < 20 {
            return false;
        }
        let first_fragment = self.u16(at + 6) & 0x1fff == 0;
        out.bytes = self.u16(at + 2) as u64;
        out.protocol = self.u8(at + 9);
        self.ip::<4>(at + 12, &mut out.src);
        self.ip::<4>(at + 16, &mut out.dst);
        self.ports(at + ihl, first_fragment, out);
        true
    }

    fn ipv6(&self, at: usize, out: &mut FlowRecord) -> bool {
        if !self.has(at, 40) || self.u8(at) >> 4 != 6 {
            return false;
        }
        out.bytes = self.u16(at + 4) as u64 + 40;
        out.protocol = self.u8(at + 6);
        self.ip::<16>(at + 8, &mut out.src);
        self.ip::<16>(at + 24, &mut out.dst);
        self.ports(at + 40, true, out);
        true
    }

    /// TCP and UDP ports at `at`, when inside the header; else zeros.
    #[inline(always)]
    fn ports(&self, at: usize, first_fragment: bool, out: &mut FlowRecord) {
        let transport = out.protocol == IPPROTO_TCP || out.protocol == IPPROTO_UDP;
        if transport && first_fragment && self.has(at, 4) {
            out.src_port = self.u16(at);
            out.dst_port = self.u16(at + 2);
        } else {
            out.src_port = 0;
            out.dst_port = 0;
        }
    }

    /// A sampled IPv4 (`addr_len` 4) or IPv6 (16) record.
    fn sampled(&self, addr_len: usize, out: &mut FlowRecord) -> bool {
        let fixed = if addr_len == 4 {
            IPV4_RECORD_LEN
        } else {
            IPV6_RECORD_LEN
        };
        if !self.has(0, fixed) {
            return false;
        }
        out.bytes = self.u32(0) as u64;
        out.protocol = self.u32(4) as u8;
        let ports = 8 + 2 * addr_len;
        if addr_len == 4 {
            self.ip::<4>(8, &mut out.src);
            self.ip::<4>(12, &mut out.dst);
        } else {
            self.ip::<16>(8, &mut out.src);
            self.ip::<16>(24, &mut out.dst);
        }
        out.src_port = self.u32(ports) as u16;
        out.dst_port = self.u32(ports + 4) as u16;
        true
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, fields in decreasing alignment without gaps; any
    // bit pattern is valid.
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(bytes: &[u8]) -> [u8; HEADER_WINDOW] {
        let mut w = [0xee; HEADER_WINDOW];
        w[..bytes.len()].copy_from_slice(bytes);
        w
    }

    fn ipv4_packet(protocol: u8, frag: u16, total: u16) -> [u8; 24] {
        let mut p = [0; 24];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = protocol;
        p[12..16].copy_from_slice(&[198, 18, 100, 1]);
        p[16..20].copy_from_slice(&[198, 19, 0, 1]);
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]); // 40000 -> 443
        p
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SourceKey>(), 16 + 4 + 4);
        assert_eq!(core::mem::size_of::<SourceState>(), 8 + 4 * 4);
    }

    #[test]
    fn a_bare_ipv4_header_reads_addresses_ports_and_total_length() {
        let w = window(&ipv4_packet(6, 0x4000, 1500));
        let mut r = FlowRecord::default();
        assert!(packet_into(RECORD_RAW_HEADER, HEADER_IPV4, &w, 24, &mut r));
        assert_eq!(
            (r.src, r.dst),
            (ip_from_v4([198, 18, 100, 1]), ip_from_v4([198, 19, 0, 1]))
        );
        assert_eq!(
            (r.src_port, r.dst_port, r.protocol, r.bytes),
            (40_000, 443, 6, 1500)
        );
    }

    #[test]
    fn ports_come_only_from_first_fragments_of_tcp_and_udp_inside_the_header() {
        let mut r = FlowRecord::default();
        let later = window(&ipv4_packet(17, 0x0010, 100));
        assert!(packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV4,
            &later,
            24,
            &mut r
        ));
        assert_eq!((r.src_port, r.dst_port), (0, 0));
        let icmp = window(&ipv4_packet(1, 0, 100));
        assert!(packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV4,
            &icmp,
            24,
            &mut r
        ));
        assert_eq!((r.src_port, r.dst_port), (0, 0));
        let cut = window(&ipv4_packet(6, 0, 100));
        assert!(packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV4,
            &cut,
            22,
            &mut r
        ));
        assert_eq!(
            (r.src_port, r.dst_port),
            (0, 0),
            "header ends before the ports"
        );
        assert!(!packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV4,
            &cut,
            19,
            &mut r
        ));
    }

    #[test]
    fn ethernet_with_up_to_two_tags_leads_to_ip() {
        let ip = ipv4_packet(17, 0, 333);
        for tags in [&[][..], &[ETH_P_8021Q], &[ETH_P_8021AD, ETH_P_8021Q]] {
            let mut frame = [0u8; 12].to_vec();
            for tag in tags {
                frame.extend_from_slice(&tag.to_be_bytes());
                frame.extend_from_slice(&[0, 100]);
            }
            frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            frame.extend_from_slice(&ip);
            let mut r = FlowRecord::default();
            assert!(packet_into(
                RECORD_RAW_HEADER,
                HEADER_ETHERNET,
                &window(&frame),
                frame.len(),
                &mut r
            ));
            assert_eq!(r.bytes, 333, "{tags:?}");
        }
        let mut three = [0u8; 12].to_vec();
        for _ in 0..3 {
            three.extend_from_slice(&[0x81, 0x00, 0, 100]);
        }
        three.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        three.extend_from_slice(&ip);
        let mut r = FlowRecord::default();
        assert!(
            !packet_into(
                RECORD_RAW_HEADER,
                HEADER_ETHERNET,
                &window(&three),
                three.len(),
                &mut r
            ),
            "a third tag is not looked through"
        );
    }

    #[test]
    fn ipv6_bytes_are_payload_plus_header() {
        let mut p = [0u8; 44];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&1000u16.to_be_bytes());
        p[6] = 17;
        p[8] = 0x20;
        p[24] = 0x30;
        p[40..44].copy_from_slice(&[0, 53, 0x1f, 0x90]);
        let mut r = FlowRecord::default();
        assert!(packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV6,
            &window(&p),
            44,
            &mut r
        ));
        assert_eq!(
            (r.bytes, r.src[0], r.dst[0], r.src_port, r.dst_port),
            (1040, 0x20, 0x30, 53, 8080)
        );
        p[0] = 0x40;
        assert!(!packet_into(
            RECORD_RAW_HEADER,
            HEADER_IPV6,
            &window(&p),
            44,
            &mut r
        ));
    }

    #[test]
    fn sampled_records_carry_their_length_and_fields() {
        let mut rec = [0u8; IPV6_RECORD_LEN];
        rec[0..4].copy_from_slice(&1280u32.to_be_bytes());
        rec[4..8].copy_from_slice(&6u32.to_be_bytes());
        rec[8] = 0xfd;
        rec[24] = 0x20;
        rec[40..44].copy_from_slice(&443u32.to_be_bytes());
        rec[44..48].copy_from_slice(&50_000u32.to_be_bytes());
        let mut r = FlowRecord::default();
        assert!(packet_into(
            RECORD_IPV6,
            0,
            &window(&rec),
            IPV6_RECORD_LEN,
            &mut r
        ));
        assert_eq!(
            (r.bytes, r.protocol, r.src[0], r.dst[0]),
            (1280, 6, 0xfd, 0x20)
        );
        assert_eq!((r.src_port, r.dst_port), (443, 50_000));
        assert!(
            !packet_into(RECORD_IPV6, 0, &window(&rec), 40, &mut r),
            "too short"
        );
    }

    #[test]
    fn finishing_scales_by_the_rate_only_when_asked() {
        let sample = FlowSample {
            input_if: 3,
            output_if: 4,
            ..FlowSample::default()
        };
        let mut r = FlowRecord {
            bytes: 1500,
            ..FlowRecord::default()
        };
        finish(&mut r, &sample, 100, FLAG_SCALE_SAMPLING, 7);
        assert_eq!(
            (r.bytes, r.packets, r.input_if, r.output_if, r.time_ms),
            (150_000, 100, 3, 4, 7)
        );
        r.bytes = 1500;
        finish(&mut r, &sample, 100, 0, 7);
        assert_eq!((r.bytes, r.packets), (1500, 1));
    }

    #[test]
    fn interfaces_are_named_only_by_format_zero() {
        assert_eq!(interface(7), 7);
        assert_eq!(interface(0x3fff_ffff), 0);
        assert_eq!(interface(1 << 30 | 5), 0, "discarded");
        assert_eq!(interface(2 << 30 | 2), 0, "several");
        assert_eq!(interface_expanded(0, 9), 9);
        assert_eq!(interface_expanded(1, 9), 0);
    }

    #[test]
    fn source_state_keeps_the_latest_sample_across_wraparound() {
        let sample = |sequence, sample_pool| FlowSample {
            sequence,
            sample_pool,
            sampling_rate: 10,
            ..FlowSample::default()
        };
        let mut s = SourceState::default();
        s.observe(&sample(u32::MAX, 100));
        s.observe(&sample(1, 120));
        s.observe(&sample(0, 110));
        assert_eq!((s.samples, s.sequence, s.sample_pool), (3, 1, 120));
        let mut other = SourceState::default();
        other.observe(&sample(5, 200));
        s.merge(&other);
        assert_eq!((s.samples, s.sequence, s.sample_pool), (4, 5, 200));
        s.merge(&SourceState::default());
        assert_eq!(s.samples, 4);
        s.observe(&sample(1, 5));
        assert_eq!((s.sequence, s.sample_pool), (5, 200), "reordered");
        s.observe(&sample(5u32.wrapping_sub(REORDER_WINDOW + 1), 7));
        assert_eq!(s.sample_pool, 7, "restarted");
    }
}
