//! The sFlow v5 datagram as typed values, parsed from bytes and encoded
//! back (sans-IO). Parsing checks the whole structure before anything is
//! used, in the manner of sflowtool: every length a multiple of 4 (XDR),
//! inside its container, and filled exactly by what it holds; samples and
//! records of other formats are kept opaque, skipped by their length.
//! Encoding is for tests, fuzzing and load generation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowtally_common::sflow::{
    ADDRESS_IPV4, ADDRESS_IPV6, COUNTERS_GENERIC_INTERFACE, GENERIC_INTERFACE_LEN, IPV4_RECORD_LEN,
    IPV6_RECORD_LEN, RECORD_IPV4, RECORD_IPV6, RECORD_RAW_HEADER, SAMPLE_COUNTERS,
    SAMPLE_COUNTERS_EXPANDED, SAMPLE_FLOW, SAMPLE_FLOW_EXPANDED, VERSION,
};

use crate::reader::Reader;

/// Why a datagram is rejected as a whole (never partly aggregated). The
/// labels are `flowtally_rejected_packets_total` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("sFlow datagram shorter than what it announces")]
    Truncated,
    #[error("not sFlow version 5")]
    BadVersion,
    #[error("agent address type neither IPv4 nor IPv6")]
    BadAgentType,
    #[error("a sample or record length that is not a multiple of 4")]
    Misaligned,
    #[error("a sample or record length past the end of what holds it")]
    LengthBeyond,
    #[error(
        "a sample or record not filled exactly by its contents, or bytes after the last sample"
    )]
    LengthMismatch,
}

impl Invalid {
    pub const ALL: [Self; 6] = [
        Self::Truncated,
        Self::BadVersion,
        Self::BadAgentType,
        Self::Misaligned,
        Self::LengthBeyond,
        Self::LengthMismatch,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "sflow_truncated",
            Self::BadVersion => "sflow_bad_version",
            Self::BadAgentType => "sflow_bad_agent_type",
            Self::Misaligned => "sflow_misaligned",
            Self::LengthBeyond => "sflow_length_beyond",
            Self::LengthMismatch => "sflow_length_mismatch",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The agent's address: the exporter of every record.
    pub agent: IpAddr,
    pub sub_agent: u32,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub samples: Vec<Sample<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sample<'a> {
    Flow {
        expanded: bool,
        fields: FlowFields,
        records: Vec<FlowData<'a>>,
    },
    Counters {
        expanded: bool,
        sequence: u32,
        source: Source,
        records: Vec<CounterData<'a>>,
    },
    /// Any other format or enterprise: `format` is the whole data-format
    /// word (`enterprise << 12 | format`).
    Other { format: u32, data: &'a [u8] },
}

/// A data source: its type (0 ifIndex, 1 smonVlanDataSource, 2
/// entPhysicalEntry) and index. The compact formats pack them into one
/// word, 8 and 24 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub kind: u32,
    pub index: u32,
}

impl Source {
    /// The compact form, which identifies a source everywhere.
    pub const fn id(self) -> u32 {
        self.kind << 24 | (self.index & 0x00ff_ffff)
    }

    const fn from_id(id: u32) -> Self {
        Self {
            kind: id >> 24,
            index: id & 0x00ff_ffff,
        }
    }
}

/// An interface as a flow sample gives it: a 2-bit format (0 one ifIndex,
/// 1 discarded, 2 several) and a value; the compact form packs them into
/// one word, 2 and 30 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub format: u32,
    pub value: u32,
}

impl Interface {
    const fn word(self) -> u32 {
        self.format << 30 | (self.value & 0x3fff_ffff)
    }

    const fn from_word(word: u32) -> Self {
        Self {
            format: word >> 30,
            value: word & 0x3fff_ffff,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFields {
    pub sequence: u32,
    pub source: Source,
    pub sampling_rate: u32,
    pub sample_pool: u32,
    pub drops: u32,
    pub input: Interface,
    pub output: Interface,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowData<'a> {
    RawHeader {
        protocol: u32,
        frame_length: u32,
        stripped: u32,
        header: &'a [u8],
    },
    Ipv4 {
        length: u32,
        protocol: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_port: u32,
        dst_port: u32,
        tcp_flags: u32,
        tos: u32,
    },
    Ipv6 {
        length: u32,
        protocol: u32,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        src_port: u32,
        dst_port: u32,
        tcp_flags: u32,
        priority: u32,
    },
    Other {
        format: u32,
        data: &'a [u8],
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterData<'a> {
    Interface(InterfaceCounters),
    Other { format: u32, data: &'a [u8] },
}

/// Generic interface counters (counter record format 1), as IF-MIB names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub if_index: u32,
    pub if_type: u32,
    pub speed: u64,
    pub direction: u32,
    pub status: u32,
    pub in_octets: u64,
    pub in_ucast: u32,
    pub in_multicast: u32,
    pub in_broadcast: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_ucast: u32,
    pub out_multicast: u32,
    pub out_broadcast: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous: u32,
}

impl<'a> Datagram<'a> {
    /// Parses and checks a whole datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Invalid> {
        let mut r = Reader::new(bytes);
        let u32 = |r: &mut Reader<'a>| r.u32().ok_or(Invalid::Truncated);
        if u32(&mut r)? != VERSION {
            return Err(Invalid::BadVersion);
        }
        let agent = match u32(&mut r)? {
            ADDRESS_IPV4 => IpAddr::from(r.array::<4>().ok_or(Invalid::Truncated)?),
            ADDRESS_IPV6 => IpAddr::from(r.array::<16>().ok_or(Invalid::Truncated)?),
            _ => return Err(Invalid::BadAgentType),
        };
        let (sub_agent, sequence, uptime_ms) = (u32(&mut r)?, u32(&mut r)?, u32(&mut r)?);
        let count = u32(&mut r)?;
        let mut samples = Vec::with_capacity(bounded(count, &r));
        for _ in 0..count {
            let (format, mut body) = element(&mut r)?;
            samples.push(Sample::parse(format, &mut body)?);
            if !body.is_empty() {
                return Err(Invalid::LengthMismatch);
            }
        }
        if !r.is_empty() {
            return Err(Invalid::LengthMismatch);
        }
        Ok(Self {
            agent,
            sub_agent,
            sequence,
            uptime_ms,
            samples,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(VERSION);
        match self.agent {
            IpAddr::V4(v4) => {
                w.u32(ADDRESS_IPV4);
                w.bytes(&v4.octets());
            }
            IpAddr::V6(v6) => {
                w.u32(ADDRESS_IPV6);
                w.bytes(&v6.octets());
            }
        }
        for word in [self.sub_agent, self.sequence, self.uptime_ms] {
            w.u32(word);
        }
        w.u32(self.samples.len() as u32);
        for sample in &self.samples {
            sample.encode(&mut w);
        }
        w.0
    }
}

/// A capacity for `count` elements that a lying count cannot inflate: each
/// takes at least 8 bytes.
fn bounded(count: u32, r: &Reader<'_>) -> usize {
    (count as usize).min(r.remaining() / 8)
}

/// A data-format word and a reader over the element's data, whose length
/// must be a multiple of 4 and inside `r`.
fn element<'a>(r: &mut Reader<'a>) -> Result<(u32, Reader<'a>), Invalid> {
    let format = r.u32().ok_or(Invalid::Truncated)?;
    let len = r.u32().ok_or(Invalid::Truncated)? as usize;
    if !len.is_multiple_of(4) {
        return Err(Invalid::Misaligned);
    }
    let body = r.sub(len).ok_or(Invalid::LengthBeyond)?;
    Ok((format, body))
}

/// Reads a fixed-size element body; it must hold exactly that.
fn words<const N: usize>(r: &mut Reader<'_>) -> Result<[u32; N], Invalid> {
    let mut out = [0; N];
    for word in &mut out {
        *word = r.u32().ok_or(Invalid::LengthMismatch)?;
    }
    Ok(out)
}

impl<'a> Sample<'a> {
    fn parse(format: u32, r: &mut Reader<'a>) -> Result<Self, Invalid> {
        let short = |r: &mut Reader<'a>| r.u32().ok_or(Invalid::LengthMismatch);
        match format {
            SAMPLE_FLOW | SAMPLE_FLOW_EXPANDED => {
                let expanded = format == SAMPLE_FLOW_EXPANDED;
                let fields = if expanded {
                    let [
                        sequence,
                        kind,
                        index,
                        rate,
                        pool,
                        drops,
                        in_f,
                        in_v,
                        out_f,
                        out_v,
                    ] = words::<10>(r)?;
                    FlowFields {
                        sequence,
                        source: Source { kind, index },
                        sampling_rate: rate,
                        sample_pool: pool,
                        drops,
                        input: Interface {
                            format: in_f,
                            value: in_v,
                        },
                        output: Interface {
                            format: out_f,
                            value: out_v,
                        },
                    }
                } else {
                    let [sequence, source, rate, pool, drops, input, output] = words::<7>(r)?;
                    FlowFields {
                        sequence,
                        source: Source::from_id(source),
                        sampling_rate: rate,
                        sample_pool: pool,
                        drops,
                        input: Interface::from_word(input),
                        output: Interface::from_word(output),
                    }
                };
                let count = short(r)?;
                let mut records = Vec::with_capacity(bounded(count, r));
                for _ in 0..count {
                    let (format, mut body) = element(r)?;
                    records.push(FlowData::parse(format, &mut body)?);
                    if !body.is_empty() {
                        return Err(Invalid::LengthMismatch);
                    }
                }
                Ok(Self::Flow {
                    expanded,
                    fields,
                    records,
                })
            }
            SAMPLE_COUNTERS | SAMPLE_COUNTERS_EXPANDED => {
                let expanded = format == SAMPLE_COUNTERS_EXPANDED;
                let sequence = short(r)?;
                let source = if expanded {
                    let [kind, index] = words::<2>(r)?;
                    Source { kind, index }
                } else {
                    Source::from_id(short(r)?)
                };
                let count = short(r)?;
                let mut records = Vec::with_capacity(bounded(count, r));
                for _ in 0..count {
                    let (format, mut body) = element(r)?;
                    records.push(CounterData::parse(format, &mut body)?);
                    if !body.is_empty() {
                        return Err(Invalid::LengthMismatch);
                    }
                }
                Ok(Self::Counters {
                    expanded,
                    sequence,
                    source,
                    records,
                })
            }
            _ => Ok(Self::Other {
                format,
                data: r.rest(),
            }),
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Flow {
                expanded,
                fields: f,
                records,
            } => w.element(
                if *expanded {
                    SAMPLE_FLOW_EXPANDED
                } else {
                    SAMPLE_FLOW
                },
                |w| {
                    w.u32(f.sequence);
                    if *expanded {
                        w.u32(f.source.kind);
                        w.u32(f.source.index);
                    } else {
                        w.u32(f.source.id());
                    }
                    for word in [f.sampling_rate, f.sample_pool, f.drops] {
                        w.u32(word);
                    }
                    if *expanded {
                        for word in [
                            f.input.format,
                            f.input.value,
                            f.output.format,
                            f.output.value,
                        ] {
                            w.u32(word);
                        }
                    } else {
                        w.u32(f.input.word());
                        w.u32(f.output.word());
                    }
                    w.u32(records.len() as u32);
                    for record in records {
                        record.encode(w);
                    }
                },
            ),
            Self::Counters {
                expanded,
                sequence,
                source,
                records,
            } => w.element(
                if *expanded {
                    SAMPLE_COUNTERS_EXPANDED
                } else {
                    SAMPLE_COUNTERS
                },
                |w| {
                    w.u32(*sequence);
                    if *expanded {
                        w.u32(source.kind);
                        w.u32(source.index);
                    } else {
                        w.u32(source.id());
                    }
                    w.u32(records.len() as u32);
                    for record in records {
                        record.encode(w);
                    }
                },
            ),
            Self::Other { format, data } => w.element(*format, |w| w.bytes(data)),
        }
    }
}

impl<'a> FlowData<'a> {
    fn parse(format: u32, r: &mut Reader<'a>) -> Result<Self, Invalid> {
        match format {
            RECORD_RAW_HEADER => {
                let [protocol, frame_length, stripped, len] = words::<4>(r)?;
                let padded = (len as usize).div_ceil(4) * 4;
                if padded != r.remaining() {
                    return Err(Invalid::LengthMismatch);
                }
                let data = r.rest();
                Ok(Self::RawHeader {
                    protocol,
                    frame_length,
                    stripped,
                    header: &data[..len as usize],
                })
            }
            RECORD_IPV4 if r.remaining() == IPV4_RECORD_LEN => {
                let [length, protocol] = words::<2>(r)?;
                let src = Ipv4Addr::from(r.array::<4>().ok_or(Invalid::LengthMismatch)?);
                let dst = Ipv4Addr::from(r.array::<4>().ok_or(Invalid::LengthMismatch)?);
                let [src_port, dst_port, tcp_flags, tos] = words::<4>(r)?;
                Ok(Self::Ipv4 {
                    length,
                    protocol,
                    src,
                    dst,
                    src_port,
                    dst_port,
                    tcp_flags,
                    tos,
                })
            }
            RECORD_IPV6 if r.remaining() == IPV6_RECORD_LEN => {
                let [length, protocol] = words::<2>(r)?;
                let src = Ipv6Addr::from(r.array::<16>().ok_or(Invalid::LengthMismatch)?);
                let dst = Ipv6Addr::from(r.array::<16>().ok_or(Invalid::LengthMismatch)?);
                let [src_port, dst_port, tcp_flags, priority] = words::<4>(r)?;
                Ok(Self::Ipv6 {
                    length,
                    protocol,
                    src,
                    dst,
                    src_port,
                    dst_port,
                    tcp_flags,
                    priority,
                })
            }
            RECORD_IPV4 | RECORD_IPV6 => Err(Invalid::LengthMismatch),
            _ => Ok(Self::Other {
                format,
                data: r.rest(),
            }),
        }
    }

    /// The record's data-format word.
    pub fn format(&self) -> u32 {
        match self {
            Self::RawHeader { .. } => RECORD_RAW_HEADER,
            Self::Ipv4 { .. } => RECORD_IPV4,
            Self::Ipv6 { .. } => RECORD_IPV6,
            Self::Other { format, .. } => *format,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.element(self.format(), |w| match self {
            Self::RawHeader {
                protocol,
                frame_length,
                stripped,
                header,
            } => {
                for word in [*protocol, *frame_length, *stripped, header.len() as u32] {
                    w.u32(word);
                }
                w.bytes(header);
                w.pad();
            }
            Self::Ipv4 {
                length,
                protocol,
                src,
                dst,
                src_port,
                dst_port,
                tcp_flags,
                tos,
            } => {
                w.u32(*length);
                w.u32(*protocol);
                w.bytes(&src.octets());
                w.bytes(&dst.octets());
                for word in [*src_port, *dst_port, *tcp_flags, *tos] {
                    w.u32(word);
                }
            }
            Self::Ipv6 {
                length,
                protocol,
                src,
                dst,
                src_port,
                dst_port,
                tcp_flags,
                priority,
            } => {
                w.u32(*length);
                w.u32(*protocol);
                w.bytes(&src.octets());
                w.bytes(&dst.octets());
                for word in [*src_port, *dst_port, *tcp_flags, *priority] {
                    w.u32(word);
                }
            }
            Self::Other { data, .. } => w.bytes(data),
        });
    }
}

impl<'a> CounterData<'a> {
    fn parse(format: u32, r: &mut Reader<'a>) -> Result<Self, Invalid> {
        if format != COUNTERS_GENERIC_INTERFACE {
            return Ok(Self::Other {
                format,
                data: r.rest(),
            });
        }
        if r.remaining() != GENERIC_INTERFACE_LEN {
            return Err(Invalid::LengthMismatch);
        }
        let u32 = |r: &mut Reader<'a>| r.u32().ok_or(Invalid::LengthMismatch);
        let u64 = |r: &mut Reader<'a>| r.u64().ok_or(Invalid::LengthMismatch);
        Ok(Self::Interface(InterfaceCounters {
            if_index: u32(r)?,
            if_type: u32(r)?,
            speed: u64(r)?,
            direction: u32(r)?,
            status: u32(r)?,
            in_octets: u64(r)?,
            in_ucast: u32(r)?,
            in_multicast: u32(r)?,
            in_broadcast: u32(r)?,
            in_discards: u32(r)?,
            in_errors: u32(r)?,
            in_unknown_protos: u32(r)?,
            out_octets: u64(r)?,
            out_ucast: u32(r)?,
            out_multicast: u32(r)?,
            out_broadcast: u32(r)?,
            out_discards: u32(r)?,
            out_errors: u32(r)?,
            promiscuous: u32(r)?,
        }))
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Interface(c) => w.element(COUNTERS_GENERIC_INTERFACE, |w| {
                w.u32(c.if_index);
                w.u32(c.if_type);
                w.u64(c.speed);
                w.u32(c.direction);
                w.u32(c.status);
                w.u64(c.in_octets);
                for word in [
                    c.in_ucast,
                    c.in_multicast,
                    c.in_broadcast,
                    c.in_discards,
                    c.in_errors,
                    c.in_unknown_protos,
                ] {
                    w.u32(word);
                }
                w.u64(c.out_octets);
                for word in [
                    c.out_ucast,
                    c.out_multicast,
                    c.out_broadcast,
                    c.out_discards,
                    c.out_errors,
                    c.promiscuous,
                ] {
                    w.u32(word);
                }
            }),
            Self::Other { format, data } => w.element(*format, |w| w.bytes(data)),
        }
    }
}

/// Big-endian XDR writing.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// Zeros up to a multiple of 4.
    fn pad(&mut self) {
        let n = self.0.len().next_multiple_of(4);
        self.0.resize(n, 0);
    }

    /// A format word, a length, and what `body` writes (padded to 4).
    fn element(&mut self, format: u32, body: impl FnOnce(&mut Self)) {
        self.u32(format);
        let at = self.0.len();
        self.u32(0);
        body(self);
        self.pad();
        let len = (self.0.len() - at - 4) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}
