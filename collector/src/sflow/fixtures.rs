//! Datagrams of every shape the decoder and the XDP program support, built
//! with the encoder: for unit tests, the XDP parity and hostile-input tests,
//! fuzz seeds, benchmarks and load generation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowtally_common::sflow::{HEADER_ETHERNET, HEADER_IPV4, HEADER_IPV6};

use super::wire::{
    CounterData, Datagram, FlowData, FlowFields, Interface, InterfaceCounters, Sample, Source,
};

pub const AGENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const AGENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const SUBSCRIBER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const SUBSCRIBER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// One sampled packet: what its headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: u16,
}

impl Packet {
    pub fn v4(up: bool, protocol: u8, ip_len: u16) -> Self {
        let (src, dst) = if up {
            (SUBSCRIBER_V4, PEER_V4)
        } else {
            (PEER_V4, SUBSCRIBER_V4)
        };
        Self {
            src: src.into(),
            dst: dst.into(),
            protocol,
            src_port: if up { 40_000 } else { 443 },
            dst_port: if up { 443 } else { 40_000 },
            ip_len,
        }
    }

    pub fn v6(up: bool, protocol: u8, ip_len: u16) -> Self {
        let (src, dst) = if up {
            (SUBSCRIBER_V6, PEER_V6)
        } else {
            (PEER_V6, SUBSCRIBER_V6)
        };
        Self {
            src: src.into(),
            dst: dst.into(),
            ..Self::v4(up, protocol, ip_len)
        }
    }

    /// The IP header and the first 8 bytes of transport header (a sampled
    /// header of 128 bytes holds no more of a packet's start than this
    /// matters to us).
    pub fn ip_header(&self) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(8);
        l4.extend_from_slice(&self.src_port.to_be_bytes());
        l4.extend_from_slice(&self.dst_port.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 0]);
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&self.ip_len.to_be_bytes());
                ip.extend_from_slice(&[0, 1, 0x40, 0, 64, self.protocol, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(&l4);
                ip
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&self.ip_len.saturating_sub(40).to_be_bytes());
                ip.extend_from_slice(&[self.protocol, 64]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(&l4);
                ip
            }
            _ => panic!("one address family per packet"),
        }
    }

    /// The packet in Ethernet with `tags` (TPIDs) before its ethertype.
    pub fn frame(&self, tags: &[u16]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for tag in tags {
            frame.extend_from_slice(&tag.to_be_bytes());
            frame.extend_from_slice(&[0, 100]);
        }
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&self.ip_header());
        frame
    }

    /// A raw packet header record of this packet in Ethernet with `tags`.
    pub fn raw_ethernet<'a>(&self, tags: &[u16], header: &'a mut Vec<u8>) -> FlowData<'a> {
        *header = self.frame(tags);
        raw(HEADER_ETHERNET, self.ip_len, header)
    }

    /// A raw packet header record of the bare IP header.
    pub fn raw_ip<'a>(&self, header: &'a mut Vec<u8>) -> FlowData<'a> {
        *header = self.ip_header();
        let protocol = if self.src.is_ipv4() {
            HEADER_IPV4
        } else {
            HEADER_IPV6
        };
        raw(protocol, self.ip_len, header)
    }

    /// A sampled IPv4 or IPv6 record.
    pub fn sampled(&self) -> FlowData<'static> {
        let (length, protocol) = (u32::from(self.ip_len), u32::from(self.protocol));
        let (src_port, dst_port) = (u32::from(self.src_port), u32::from(self.dst_port));
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => FlowData::Ipv4 {
                length,
                protocol,
                src,
                dst,
                src_port,
                dst_port,
                tcp_flags: 0x18,
                tos: 0,
            },
            (IpAddr::V6(src), IpAddr::V6(dst)) => FlowData::Ipv6 {
                length,
                protocol,
                src,
                dst,
                src_port,
                dst_port,
                tcp_flags: 0x18,
                priority: 0,
            },
            _ => panic!("one address family per packet"),
        }
    }
}

fn raw(protocol: u32, ip_len: u16, header: &[u8]) -> FlowData<'_> {
    FlowData::RawHeader {
        protocol,
        frame_length: u32::from(ip_len) + 18,
        stripped: 4,
        header,
    }
}

/// A flow sample of source ifIndex `index`, sampling 1 in `rate`.
pub fn flow_sample<'a>(
    expanded: bool,
    sequence: u32,
    index: u32,
    rate: u32,
    records: Vec<FlowData<'a>>,
) -> Sample<'a> {
    Sample::Flow {
        expanded,
        fields: FlowFields {
            sequence,
            source: Source { kind: 0, index },
            sampling_rate: rate,
            sample_pool: sequence.wrapping_mul(rate),
            drops: 0,
            input: Interface {
                format: 0,
                value: index,
            },
            output: Interface {
                format: 0,
                value: 2,
            },
        },
        records,
    }
}

/// A counter sample with generic interface counters of ifIndex `index`.
pub fn counter_sample(
    expanded: bool,
    sequence: u32,
    index: u32,
    in_octets: u64,
    out_octets: u64,
) -> Sample<'static> {
    Sample::Counters {
        expanded,
        sequence,
        source: Source { kind: 0, index },
        records: vec![CounterData::Interface(InterfaceCounters {
            if_index: index,
            if_type: 6,
            speed: 10_000_000_000,
            direction: 1,
            status: 3,
            in_octets,
            out_octets,
            ..InterfaceCounters::default()
        })],
    }
}

pub fn datagram(agent: IpAddr, sequence: u32, samples: Vec<Sample<'_>>) -> Datagram<'_> {
    Datagram {
        agent,
        sub_agent: 0,
        sequence,
        uptime_ms: 3_600_000,
        samples,
    }
}

/// An opaque record the decoder skips (extended switch data, 1001).
pub const EXTENDED_SWITCH: FlowData<'static> = FlowData::Other {
    format: 1001,
    data: &[0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0],
};

/// One encoded datagram of every supported shape, named: IPv4 and IPv6
/// agents; compact and expanded flow samples; raw headers in Ethernet with
/// no, one and two VLAN tags and bare, sampled IPv4/IPv6 records; records
/// and samples of other formats to skip; counter samples (which the kernel
/// passes up). Sampling 1 in 1 and 1 in 512.
pub fn every_shape() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let agents: [IpAddr; 2] = [AGENT_V4.into(), AGENT_V6.into()];
    let packets = [
        Packet::v4(true, 6, 1500),
        Packet::v4(false, 17, 28),
        Packet::v6(true, 17, 1280),
        Packet::v6(false, 6, 60),
    ];
    for (a, &agent) in agents.iter().enumerate() {
        for expanded in [false, true] {
            for (t, tags) in [&[][..], &[TPID_8021Q], &[TPID_8021AD, TPID_8021Q]]
                .into_iter()
                .enumerate()
            {
                let mut headers: Vec<Vec<u8>> = vec![Vec::new(); packets.len()];
                let samples = packets
                    .iter()
                    .zip(&mut headers)
                    .enumerate()
                    .map(|(i, (p, h))| {
                        let record = p.raw_ethernet(tags, h);
                        flow_sample(
                            expanded,
                            100 + i as u32,
                            3,
                            512,
                            vec![EXTENDED_SWITCH, record],
                        )
                    })
                    .collect();
                let name = format!("agent{a}-expanded{}-ethernet-{t}tags", u8::from(expanded));
                out.push((name, datagram(agent, 1, samples).encode()));
            }
            let mut headers: Vec<Vec<u8>> = vec![Vec::new(); packets.len()];
            let mut samples: Vec<Sample<'_>> = packets
                .iter()
                .zip(&mut headers)
                .enumerate()
                .map(|(i, (p, h))| flow_sample(expanded, 200 + i as u32, 4, 1, vec![p.raw_ip(h)]))
                .collect();
            samples.extend(
                packets
                    .iter()
                    .enumerate()
                    .map(|(i, p)| flow_sample(expanded, 300 + i as u32, 5, 1, vec![p.sampled()])),
            );
            samples.push(Sample::Other {
                format: 7 << 12 | 1,
                data: &[1, 2, 3, 4],
            });
            let name = format!("agent{a}-expanded{}-bare-and-sampled", u8::from(expanded));
            out.push((name, datagram(agent, 2, samples).encode()));
            let counters = vec![
                counter_sample(expanded, 1, 3, 1 << 40, 5_000_000),
                flow_sample(expanded, 400, 3, 1, vec![packets[0].sampled()]),
            ];
            let name = format!("agent{a}-expanded{}-counters", u8::from(expanded));
            out.push((name, datagram(agent, 3, counters).encode()));
        }
    }
    out
}
