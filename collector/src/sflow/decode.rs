//! sFlow datagrams into flow records on the socket path, by the rules of
//! `flowtally_common::sflow` (which the XDP program applies too).

use flowtally_common::{
    agg::{FLAG_SFLOW_RENORMALIZE, FlowRecord, Ip},
    sflow::{
        FlowSample, HEADER_WINDOW, RECORD_IPV4, RECORD_IPV6, RECORD_RAW_HEADER, SampleStat,
        SourceKey, finish, interface_expanded, packet_into,
    },
};

use super::wire::{
    CounterData, Datagram, FlowData, FlowFields, Interface, InterfaceCounters, Invalid, Sample,
};
use crate::ip::to_ip;

/// What one datagram yields. Reused between datagrams: [`decode`] clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The agent: the exporter of every record.
    pub agent: Ip,
    pub records: Vec<FlowRecord>,
    /// Every flow sample, whether or not it became a record.
    pub flow_samples: Vec<(SourceKey, FlowSample)>,
    pub counters: Vec<InterfaceCounters>,
    /// Samples by [`SampleStat`].
    pub samples: [u64; SampleStat::COUNT as usize],
}

/// Decodes `bytes` into `out`, all or nothing. Records are timed at
/// `time_ms` (their arrival); with [`FLAG_SFLOW_RENORMALIZE`] in `flags`,
/// `rate` gives a source's renormalised sampling rate where one is known.
pub fn decode(
    bytes: &[u8],
    flags: u32,
    time_ms: u64,
    rate: impl Fn(&SourceKey) -> Option<u32>,
    out: &mut Decoded,
) -> Result<(), Invalid> {
    out.records.clear();
    out.flow_samples.clear();
    out.counters.clear();
    out.samples = [0; SampleStat::COUNT as usize];
    let datagram = Datagram::parse(bytes)?;
    out.agent = to_ip(datagram.agent);
    for sample in &datagram.samples {
        let stat = match sample {
            Sample::Flow {
                fields, records, ..
            } => {
                let sample = flow_sample(fields);
                let key = SourceKey {
                    agent: out.agent,
                    sub_agent: datagram.sub_agent,
                    source_id: sample.source_id,
                };
                out.flow_samples.push((key, sample));
                let mut record = FlowRecord::default();
                if packet(records, &mut record) {
                    let renormalised = (flags & FLAG_SFLOW_RENORMALIZE != 0)
                        .then(|| rate(&key))
                        .flatten();
                    let rate = renormalised.unwrap_or(sample.sampling_rate);
                    finish(&mut record, &sample, rate, flags, time_ms);
                    out.records.push(record);
                    SampleStat::Flow
                } else {
                    SampleStat::NoIpPacket
                }
            }
            Sample::Counters { records, .. } => {
                out.counters.extend(records.iter().filter_map(|r| match r {
                    CounterData::Interface(c) => Some(*c),
                    CounterData::Other { .. } => None,
                }));
                SampleStat::Counters
            }
            Sample::Other { .. } => SampleStat::Skipped,
        };
        out.samples[stat as usize] += 1;
    }
    Ok(())
}

/// A sample's fields as both paths use them.
/// (The compact form's source and interface words are already split.)
pub fn flow_sample(fields: &FlowFields) -> FlowSample {
    let interface = |i: Interface| interface_expanded(i.format, i.value);
    FlowSample {
        sequence: fields.sequence,
        source_id: fields.source.id(),
        sampling_rate: fields.sampling_rate,
        sample_pool: fields.sample_pool,
        drops: fields.drops,
        input_if: interface(fields.input),
        output_if: interface(fields.output),
    }
}

/// Reads the sample's first packet record (raw header, sampled IPv4 or
/// IPv6) into `out`; false if there is none or it holds no IP packet.
fn packet(records: &[FlowData<'_>], out: &mut FlowRecord) -> bool {
    let Some(record) = records
        .iter()
        .find(|r| matches!(r.format(), RECORD_RAW_HEADER | RECORD_IPV4 | RECORD_IPV6))
    else {
        return false;
    };
    // The window the kernel reads through, zero past the record.
    let mut window = [0u8; HEADER_WINDOW];
    let (kind, protocol, len) = match record {
        FlowData::RawHeader {
            protocol, header, ..
        } => {
            let len = header.len().min(HEADER_WINDOW);
            window[..len].copy_from_slice(&header[..len]);
            (RECORD_RAW_HEADER, *protocol, len)
        }
        FlowData::Ipv4 { .. } | FlowData::Ipv6 { .. } => {
            let len = sampled_bytes(record, &mut window);
            (record.format(), 0, len)
        }
        FlowData::Other { .. } => return false,
    };
    packet_into(kind, protocol, &window, len, out)
}

/// Writes a sampled IPv4/IPv6 record's bytes as on the wire into
/// `window`; returns their length.
fn sampled_bytes(record: &FlowData<'_>, window: &mut [u8; HEADER_WINDOW]) -> usize {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        window[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let (length, protocol, src, dst, rest): (u32, u32, &[u8], &[u8], [u32; 4]) = match record {
        FlowData::Ipv4 {
            length,
            protocol,
            src,
            dst,
            src_port,
            dst_port,
            tcp_flags,
            tos,
        } => (
            *length,
            *protocol,
            &src.octets(),
            &dst.octets(),
            [*src_port, *dst_port, *tcp_flags, *tos],
        ),
        FlowData::Ipv6 {
            length,
            protocol,
            src,
            dst,
            src_port,
            dst_port,
            tcp_flags,
            priority,
        } => (
            *length,
            *protocol,
            &src.octets(),
            &dst.octets(),
            [*src_port, *dst_port, *tcp_flags, *priority],
        ),
        _ => return 0,
    };
    put(&length.to_be_bytes());
    put(&protocol.to_be_bytes());
    put(src);
    put(dst);
    for word in rest {
        put(&word.to_be_bytes());
    }
    at
}
