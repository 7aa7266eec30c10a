//! The generated stream: NetFlow v5, v9 and IPFIX exports, or sFlow v5
//! datagrams, from many exporters about many subscribers, built once with
//! the collector's own encoders and then replayed. Each record carries its
//! own byte count, so the sum a collector accounts can be compared with the
//! sum sent, exactly.

use std::net::Ipv4Addr;

use flowtally::netflow::{
    encode::{Set, Template, export},
    sets::{FieldSpec, Header as SetsHeader, IPFIX, V9},
    v5::{self, Record},
};
use flowtally::rng::Rng;
use flowtally::sflow::{
    fixtures::{Packet, datagram, flow_sample},
    wire::FlowData,
};
use flowtally_common::{
    sflow::{HEADER_ETHERNET, HEADER_WINDOW},
    v5::Header as V5Header,
};

/// Subscribers are numbered from here (198.18.0.0/16, up to 65 536).
pub const SUBSCRIBER_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const SUBSCRIBER_NET: &str = "198.18.0.0/16";
/// Exporters are numbered from here (198.19.64.0/18, up to 16 384).
pub const EXPORTER_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 64, 0);
/// Internet peers (198.19.128.0/17): never subscribers.
const PEER_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 0);
pub const MAX_SUBSCRIBERS: u32 = 1 << 16;
pub const MAX_EXPORTERS: u32 = 1 << 14;
const FIRST_TEMPLATE: u16 = 256;
/// Records per export: what fits a 1500-byte MTU for each format.
const V5_RECORDS: usize = 30;
const V9_RECORDS: usize = 30;
const IPFIX_RECORDS: usize = 20;
/// Flow samples per sFlow datagram: each carries the first 128 bytes of
/// its packet, as switches send them, and 7 fill a 1400-byte datagram.
const SFLOW_SAMPLES: usize = 7;
/// sFlow sampling: 1 packet in this many.
pub const SFLOW_RATE: u32 = 1000;
/// Bytes an Ethernet frame adds to its IP packet in sFlow's
/// `frame_length`: the header and the frame check sequence.
const ETHERNET_OVERHEAD: u32 = 14 + 4;
/// The exporter's uptime at export (v5, v9), ms.
const UPTIME_MS: u32 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    V5,
    V9,
    Ipfix,
    /// sFlow v5: flow samples with raw Ethernet headers, 1 in [`SFLOW_RATE`].
    Sflow,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    pub exporters: u32,
    pub subscribers: u32,
    /// Exporter `i` speaks `formats[i % len]`.
    pub formats: Vec<Format>,
    /// Distinct data templates per v9/IPFIX exporter (same layout, own ids).
    pub templates: u16,
    /// Distinct exports per exporter, replayed in turn: with the records per
    /// export, this is how many aggregate keys the stream makes.
    pub exports_per_exporter: u32,
    pub unix_secs: u32,
}

/// One export as it goes on the wire, with what it carries.
pub struct Export {
    pub exporter: u32,
    pub payload: Vec<u8>,
    pub records: u32,
    /// IP bytes (flowtally's, and NetFlow's octets), sampling scaled.
    pub bytes: u64,
    /// sFlow: frame bytes (`frame_length`, which sfacctd and sfcapd
    /// count), sampling scaled; NetFlow: `bytes`.
    pub frame_bytes: u64,
}

pub struct Stream {
    /// Template exports, one per v9/IPFIX exporter, sent before the data.
    pub templates: Vec<Export>,
    /// Data exports, grouped by exporter.
    pub data: Vec<Vec<Export>>,
}

impl Stream {
    pub fn generate(spec: &Spec) -> Self {
        assert!(spec.exporters >= 1 && spec.exporters <= MAX_EXPORTERS);
        assert!(spec.subscribers >= 1 && spec.subscribers <= MAX_SUBSCRIBERS);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut next_subscriber = 0u32;
        let mut templates = Vec::new();
        let mut data = Vec::new();
        for exporter in 0..spec.exporters {
            let format = spec.formats[exporter as usize % spec.formats.len()];
            if format == Format::Sflow {
                let datagrams = (0..spec.exports_per_exporter)
                    .map(|n| {
                        let flows: Vec<Flow> = (0..SFLOW_SAMPLES)
                            .map(|_| {
                                let s = next_subscriber % spec.subscribers;
                                next_subscriber += 1;
                                Flow::random(&mut rng, s)
                            })
                            .collect();
                        sflow_datagram(exporter, n, &flows)
                    })
                    .collect();
                data.push(datagrams);
                continue;
            }
            if matches!(format, Format::V9 | Format::Ipfix) {
                templates.push(template_export(spec, exporter, format));
            }
            let exports = (0..spec.exports_per_exporter)
                .map(|n| {
                    let per = match format {
                        Format::V5 => V5_RECORDS,
                        Format::V9 => V9_RECORDS,
                        Format::Ipfix => IPFIX_RECORDS,
                        Format::Sflow => unreachable!("sFlow agents are generated above"),
                    };
                    let flows: Vec<Flow> = (0..per)
                        .map(|_| {
                            let s = next_subscriber % spec.subscribers;
                            next_subscriber += 1;
                            Flow::random(&mut rng, s)
                        })
                        .collect();
                    let template = FIRST_TEMPLATE + (n % u32::from(spec.templates)) as u16;
                    data_export(spec, exporter, format, n, template, &flows)
                })
                .collect();
            data.push(exports);
        }
        Self { templates, data }
    }
}

pub fn exporter_ip(exporter: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(EXPORTER_BASE) + exporter)
}

pub fn subscriber_ip(subscriber: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SUBSCRIBER_BASE) + subscriber)
}

/// One flow record, whichever format carries it.
struct Flow {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    packets: u32,
    octets: u32,
    /// Ms before the export that the flow started and ended.
    started_ago: u32,
    ended_ago: u32,
}

impl Flow {
    /// Half upload, half download: the subscriber is the source or the
    /// destination, never both, so each record makes exactly one aggregate.
    fn random(rng: &mut Rng, subscriber: u32) -> Self {
        let sub = subscriber_ip(subscriber);
        let peer = Ipv4Addr::from(u32::from(PEER_BASE) + rng.below(1 << 15) as u32);
        let (protocol, service) = match rng.below(10) {
            0..=5 => (6, 443),
            6..=7 => (17, 443),
            8 => (6, 80),
            _ => (17, 53),
        };
        let client_port = 32_768 + rng.below(28_000) as u16;
        let packets = 1 + rng.below(200) as u32;
        let octets = packets * (40 + rng.below(1460) as u32);
        let ended_ago = rng.below(5_000) as u32;
        let started_ago = ended_ago + rng.below(55_000) as u32;
        let up = rng.below(2) == 0;
        let (src, dst, src_port, dst_port) = if up {
            (sub, peer, client_port, service)
        } else {
            (peer, sub, service, client_port)
        };
        Self {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
            packets,
            octets,
            started_ago,
            ended_ago,
        }
    }
}

/// Cisco's classic v9 layout (45-byte records).
fn v9_fields() -> Vec<FieldSpec> {
    [
        (1, 4),  // IN_BYTES
        (2, 4),  // IN_PKTS
        (22, 4), // FIRST_SWITCHED
        (21, 4), // LAST_SWITCHED
        (8, 4),  // IPV4_SRC_ADDR
        (12, 4), // IPV4_DST_ADDR
        (10, 2), // INPUT_SNMP
        (14, 2), // OUTPUT_SNMP
        (7, 2),  // L4_SRC_PORT
        (11, 2), // L4_DST_PORT
        (4, 1),  // PROTOCOL
        (6, 1),  // TCP_FLAGS
        (5, 1),  // SRC_TOS
        (15, 4), // IPV4_NEXT_HOP
        (16, 2), // SRC_AS
        (17, 2), // DST_AS
        (9, 1),  // SRC_MASK
        (13, 1), // DST_MASK
    ]
    .iter()
    .map(|&(ie, len)| FieldSpec::iana(ie, len))
    .collect()
}

/// A router's IPFIX IPv4 layout: 8-byte counters, millisecond times,
/// interfaces, next hop, AS numbers and masks (69-byte records).
fn ipfix_fields() -> Vec<FieldSpec> {
    [
        (8, 4),   // sourceIPv4Address
        (12, 4),  // destinationIPv4Address
        (15, 4),  // ipNextHopIPv4Address
        (10, 4),  // ingressInterface
        (14, 4),  // egressInterface
        (2, 8),   // packetDeltaCount
        (1, 8),   // octetDeltaCount
        (152, 8), // flowStartMilliseconds
        (153, 8), // flowEndMilliseconds
        (7, 2),   // sourceTransportPort
        (11, 2),  // destinationTransportPort
        (6, 1),   // tcpControlBits
        (4, 1),   // protocolIdentifier
        (5, 1),   // ipClassOfService
        (16, 4),  // bgpSourceAsNumber
        (17, 4),  // bgpDestinationAsNumber
        (9, 1),   // sourceIPv4PrefixLength
        (13, 1),  // destinationIPv4PrefixLength
    ]
    .iter()
    .map(|&(ie, len)| FieldSpec::iana(ie, len))
    .collect()
}

fn sets_header(spec: &Spec, exporter: u32, format: Format, sequence: u32) -> SetsHeader {
    SetsHeader {
        version: if format == Format::V9 { V9 } else { IPFIX },
        unix_secs: spec.unix_secs,
        sys_uptime_ms: UPTIME_MS,
        sequence,
        // Exporter-unique, so that no two exporters share a template domain
        // even behind one address.
        domain: exporter + 1,
    }
}

fn template_export(spec: &Spec, exporter: u32, format: Format) -> Export {
    let fields = if format == Format::V9 {
        v9_fields()
    } else {
        ipfix_fields()
    };
    let templates = (0..spec.templates)
        .map(|i| Template {
            id: FIRST_TEMPLATE + i,
            fields: fields.clone(),
        })
        .collect();
    Export {
        exporter,
        payload: export(
            &sets_header(spec, exporter, format, 0),
            &[Set::Templates(templates)],
            false,
        ),
        records: 0,
        bytes: 0,
        frame_bytes: 0,
    }
}

fn data_export(
    spec: &Spec,
    exporter: u32,
    format: Format,
    n: u32,
    template: u16,
    flows: &[Flow],
) -> Export {
    let records = flows.len() as u32;
    let bytes = flows.iter().map(|f| u64::from(f.octets)).sum();
    let payload = match format {
        Format::V5 => v5_export(spec, n * records, flows),
        Format::V9 => {
            let records = flows.iter().map(v9_record).collect();
            let header = sets_header(spec, exporter, format, n);
            export(
                &header,
                &[Set::Data {
                    id: template,
                    records,
                }],
                false,
            )
        }
        Format::Sflow => unreachable!("sFlow agents are generated apart"),
        Format::Ipfix => {
            let export_ms = u64::from(spec.unix_secs) * 1000;
            let records = flows.iter().map(|f| ipfix_record(f, export_ms)).collect();
            let header = sets_header(spec, exporter, format, n * flows.len() as u32);
            export(
                &header,
                &[Set::Data {
                    id: template,
                    records,
                }],
                false,
            )
        }
    };
    Export {
        exporter,
        payload,
        records,
        bytes,
        frame_bytes: bytes,
    }
}

/// One sFlow datagram from agent `exporter`: a flow sample per flow, each
/// the flow's first packet (its size the flow's mean) sampled 1 in
/// [`SFLOW_RATE`], as a raw Ethernet header record of up to 128 bytes.
fn sflow_datagram(exporter: u32, n: u32, flows: &[Flow]) -> Export {
    let packets: Vec<Packet> = flows
        .iter()
        .map(|f| Packet {
            src: f.src.into(),
            dst: f.dst.into(),
            protocol: f.protocol,
            src_port: f.src_port,
            dst_port: f.dst_port,
            ip_len: (f.octets / f.packets) as u16,
        })
        .collect();
    let headers: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut frame = p.frame(&[]);
            let captured = (usize::from(p.ip_len) + 14).min(HEADER_WINDOW);
            frame.resize(captured, 0);
            frame
        })
        .collect();
    let samples = packets
        .iter()
        .zip(&headers)
        .enumerate()
        .map(|(i, (p, header))| {
            let record = FlowData::RawHeader {
                protocol: HEADER_ETHERNET,
                frame_length: u32::from(p.ip_len) + ETHERNET_OVERHEAD,
                stripped: 4,
                header,
            };
            let sequence = n * SFLOW_SAMPLES as u32 + i as u32;
            flow_sample(false, sequence, 1, SFLOW_RATE, vec![record])
        })
        .collect();
    let agent = exporter_ip(exporter).into();
    let rate = u64::from(SFLOW_RATE);
    Export {
        exporter,
        payload: datagram(agent, n, samples).encode(),
        records: flows.len() as u32,
        bytes: packets.iter().map(|p| u64::from(p.ip_len) * rate).sum(),
        frame_bytes: packets
            .iter()
            .map(|p| u64::from(u32::from(p.ip_len) + ETHERNET_OVERHEAD) * rate)
            .sum(),
    }
}

fn v5_export(spec: &Spec, sequence: u32, flows: &[Flow]) -> Vec<u8> {
    let header = V5Header {
        version: 5,
        sys_uptime: UPTIME_MS,
        unix_secs: spec.unix_secs,
        flow_sequence: sequence,
        ..V5Header::default()
    };
    let records: Vec<Record> = flows
        .iter()
        .map(|f| Record {
            src: f.src.octets(),
            dst: f.dst.octets(),
            next_hop: [198, 19, 0, 254],
            input: 1,
            output: 2,
            packets: f.packets,
            octets: f.octets,
            first: UPTIME_MS - f.started_ago,
            last: UPTIME_MS - f.ended_ago,
            src_port: f.src_port,
            dst_port: f.dst_port,
            tcp_flags: if f.protocol == 6 { 0x1b } else { 0 },
            protocol: f.protocol,
            src_mask: 24,
            dst_mask: 24,
            ..Record::default()
        })
        .collect();
    v5::encode(&header, &records)
}

fn v9_record(f: &Flow) -> Vec<u8> {
    let mut r = Vec::with_capacity(45);
    r.extend_from_slice(&f.octets.to_be_bytes());
    r.extend_from_slice(&f.packets.to_be_bytes());
    r.extend_from_slice(&(UPTIME_MS - f.started_ago).to_be_bytes());
    r.extend_from_slice(&(UPTIME_MS - f.ended_ago).to_be_bytes());
    r.extend_from_slice(&f.src.octets());
    r.extend_from_slice(&f.dst.octets());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&2u16.to_be_bytes());
    r.extend_from_slice(&f.src_port.to_be_bytes());
    r.extend_from_slice(&f.dst_port.to_be_bytes());
    r.extend_from_slice(&[f.protocol, 0x1b, 0]);
    r.extend_from_slice(&[198, 19, 0, 254]);
    r.extend_from_slice(&[0, 0, 0, 0, 24, 24]);
    r
}

fn ipfix_record(f: &Flow, export_ms: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(69);
    r.extend_from_slice(&f.src.octets());
    r.extend_from_slice(&f.dst.octets());
    r.extend_from_slice(&[198, 19, 0, 254]);
    r.extend_from_slice(&1u32.to_be_bytes());
    r.extend_from_slice(&2u32.to_be_bytes());
    r.extend_from_slice(&u64::from(f.packets).to_be_bytes());
    r.extend_from_slice(&u64::from(f.octets).to_be_bytes());
    r.extend_from_slice(&(export_ms - u64::from(f.started_ago)).to_be_bytes());
    r.extend_from_slice(&(export_ms - u64::from(f.ended_ago)).to_be_bytes());
    r.extend_from_slice(&f.src_port.to_be_bytes());
    r.extend_from_slice(&f.dst_port.to_be_bytes());
    r.extend_from_slice(&[0x1b, f.protocol, 0]);
    r.extend_from_slice(&[0; 8]);
    r.extend_from_slice(&[24, 24]);
    r
}

#[cfg(test)]
mod tests {
    use flowtally::{
        aggregate::Aggregator,
        ip::to_ip,
        netflow::{Limits, TemplateCache},
        subscribers::SubscriberNets,
    };
    use flowtally_common::agg::{FLAG_SCALE_SAMPLING, KEEP_ALL, Profile};

    use super::*;

    /// The collector's own decoders read back exactly what the stream says
    /// it carries: the totals the load test compares against are right.
    #[test]
    fn the_collector_decodes_every_record_and_byte_the_stream_counts() {
        let spec = Spec {
            exporters: 6,
            subscribers: 100,
            formats: vec![Format::V5, Format::V9, Format::Ipfix],
            templates: 2,
            exports_per_exporter: 3,
            unix_secs: 1_700_000_000,
        };
        let stream = Stream::generate(&spec);
        assert_eq!(stream.templates.len(), 4);
        let profile = Profile {
            keep: KEEP_ALL,
            bucket_ms: 60_000,
        };
        let nets = SubscriberNets::new(&[SUBSCRIBER_NET.parse().unwrap()]);
        let mut aggregator = Aggregator::new(profile, FLAG_SCALE_SAMPLING, nets);
        let mut cache = TemplateCache::new(Limits::default());
        let now_ms = u64::from(spec.unix_secs) * 1000;
        let mut out = Vec::new();
        for t in &stream.templates {
            let exporter = to_ip(exporter_ip(t.exporter).into());
            cache
                .decode(&exporter, &t.payload, now_ms, FLAG_SCALE_SAMPLING, &mut out)
                .unwrap();
        }
        assert!(out.is_empty(), "template exports carry no records");
        let (mut records, mut bytes) = (0, 0);
        for e in stream.data.iter().flatten() {
            let exporter = to_ip(exporter_ip(e.exporter).into());
            assert!(e.payload.len() <= 1500 - 28, "fits the MTU");
            if e.payload[1] == 5 {
                aggregator.add_v5(&exporter, &e.payload).unwrap();
            } else {
                out.clear();
                cache
                    .decode(&exporter, &e.payload, now_ms, FLAG_SCALE_SAMPLING, &mut out)
                    .unwrap();
                assert_eq!(out.len() as u32, e.records);
                for r in &out {
                    assert!(aggregator.add(&exporter, r));
                }
            }
            records += u64::from(e.records);
            bytes += e.bytes;
        }
        let table = aggregator.take();
        let summed: u64 = table.values().map(|v| v.bytes).sum();
        let flows: u64 = table.values().map(|v| v.flows).sum();
        assert_eq!(summed, bytes);
        assert_eq!(flows, records);
        assert_eq!(records, 6 * 3 * 30 - 2 * 3 * 10);
    }

    /// The same for sFlow: every sample decodes to a record of the IP
    /// bytes the stream counts, times the rate; datagrams fit the MTU.
    #[test]
    fn sflow_datagrams_decode_to_the_bytes_the_stream_counts() {
        let spec = Spec {
            exporters: 3,
            subscribers: 100,
            formats: vec![Format::Sflow],
            templates: 1,
            exports_per_exporter: 4,
            unix_secs: 1_700_000_000,
        };
        let stream = Stream::generate(&spec);
        assert!(stream.templates.is_empty());
        let mut decoded = flowtally::sflow::Decoded::default();
        let (mut samples, mut frame_bytes) = (0, 0);
        for e in stream.data.iter().flatten() {
            assert!(e.payload.len() <= 1500 - 28, "fits the MTU");
            flowtally::sflow::decode(&e.payload, FLAG_SCALE_SAMPLING, 0, |_| None, &mut decoded)
                .unwrap();
            assert_eq!(decoded.agent, to_ip(exporter_ip(e.exporter).into()));
            assert_eq!(decoded.records.len() as u32, e.records);
            let bytes: u64 = decoded.records.iter().map(|r| r.bytes).sum();
            assert_eq!(bytes, e.bytes);
            samples += e.records;
            frame_bytes += e.frame_bytes - e.bytes;
        }
        assert_eq!(samples, 3 * 4 * 7);
        assert_eq!(frame_bytes, u64::from(samples) * 18 * u64::from(SFLOW_RATE));
    }
}
