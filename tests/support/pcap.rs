//! Synthetic subscriber traffic as a classic pcap file, and what a flow
//! exporter must report for it.
//!
//! The generator is deterministic (a fixed-seed PRNG): a handful of
//! subscribers in 198.18.100.0/24 talk UDP and TCP with a few peers in
//! 198.19.0.0/24, in both directions, with packet sizes from empty to full
//! MTU, spread over [`SPAN_US`] of capture time; two peers also exchange
//! some transit traffic and two subscribers talk to each other. The
//! [`Mix::DualStack`] capture adds the same kinds of IPv6 traffic:
//! subscribers in 2001:db8:100::/64, peers in 2001:db8:200::/64
//! (documentation prefixes: these frames only ever cross veths inside test
//! namespaces). [`Mix::Ipv4`] is exactly the IPv4-only capture the NetFlow
//! v5 tests were written against; v5 cannot carry IPv6 at all.
//!
//! # What softflowd counts
//!
//! softflowd (1.1.0, Debian 12) puts in dOctets the captured frame's length
//! minus its datalink header (`phdr->len - 14` for untagged Ethernet), not
//! the IPv4 total length: Ethernet padding is counted. Verified by replaying
//! on a veth and decoding the v5 export: three UDP packets of IP total
//! length 28 in 60-byte (padded) frames were exported as 3 packets, 138
//! octets (46 each); two of IP length 500 in 514-byte frames as 1000. The
//! two agree for every frame of at least 60 bytes. This generator pads short
//! frames to 60 bytes as a capture on a receiving host shows them (pure TCP
//! ACKs, tiny UDP), so the difference is exercised: see [`exported_octets`].
//! The same rule holds for IPv6 (v9 and IPFIX exports: 4 UDP packets of
//! IPv6 payload length 208 were exported as 992 octets, 40 + 208 each), but
//! no IPv6 frame is short enough to be padded (40 + 8 + 14 > 60).
#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const ETH_HLEN: usize = 14;
/// Frames shorter than this (without FCS) are padded on the wire.
pub const ETH_MIN_FRAME: usize = 60;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPV6_HLEN: usize = 40;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Capture time of the first packet, in Unix µs (only differences matter
/// to a real-clock replay).
pub const START_US: u64 = 1_700_000_000_000_000;
/// Capture time from the first packet to the last: what a real-clock replay
/// takes.
pub const SPAN_US: u64 = 1_500_000;

/// Which traffic a synthetic capture holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// IPv4 only: what a NetFlow v5 exporter can report.
    Ipv4,
    /// The IPv4 conversations and as many packets again spread over IPv6
    /// ones.
    DualStack,
}

impl Mix {
    /// Number of packets generated.
    pub const fn packets(self) -> usize {
        match self {
            Self::Ipv4 => 360,
            Self::DualStack => 480,
        }
    }

    /// The prefixes whose addresses are subscribers.
    pub fn subscriber_nets(self) -> Vec<Net> {
        match self {
            Self::Ipv4 => vec![SUBSCRIBER_NET],
            Self::DualStack => vec![SUBSCRIBER_NET, SUBSCRIBER_NET6],
        }
    }
}

pub const SUBSCRIBER_NET: Net = Net {
    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 0)),
    len: 24,
};
pub const SUBSCRIBERS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(198, 18, 100, 10),
    Ipv4Addr::new(198, 18, 100, 11),
    Ipv4Addr::new(198, 18, 100, 12),
    Ipv4Addr::new(198, 18, 100, 13),
    Ipv4Addr::new(198, 18, 100, 14),
    Ipv4Addr::new(198, 18, 100, 15),
];
pub const PEERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 19, 0, 1),
    Ipv4Addr::new(198, 19, 0, 2),
    Ipv4Addr::new(198, 19, 0, 3),
];

pub const SUBSCRIBER_NET6: Net = Net {
    addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0)),
    len: 64,
};
pub const SUBSCRIBERS6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x12),
];
pub const PEERS6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 2),
];

/// Destination and source MAC of every generated frame: locally
/// administered, so that they match no interface and the receiving stack
/// drops the frames (only a promiscuous capture sees them).
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// An IPv4 or IPv6 prefix; displayed as flowtally's `--subscriber-net`
/// takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time, Unix µs.
    pub ts_us: u64,
    /// The whole Ethernet frame, without FCS.
    pub frame: Vec<u8>,
}

/// Writes `packets` as a classic (libpcap 2.4) file: little-endian,
/// microsecond timestamps, LINKTYPE_ETHERNET.
pub fn write_pcap(path: &Path, packets: &[Packet]) -> io::Result<()> {
    let mut out =
        Vec::with_capacity(24 + packets.iter().map(|p| 16 + p.frame.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2_u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4_u16.to_le_bytes());
    out.extend_from_slice(&0_i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0_u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65_535_u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for packet in packets {
        let len = u32::try_from(packet.frame.len()).expect("frame length");
        let secs = u32::try_from(packet.ts_us / 1_000_000).expect("timestamp");
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&((packet.ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes()); // captured
        out.extend_from_slice(&len.to_le_bytes()); // on the wire
        out.extend_from_slice(&packet.frame);
    }
    fs::write(path, out)
}

/// Reads a file [`write_pcap`] wrote (little-endian, µs, Ethernet only).
pub fn read_pcap(path: &Path) -> io::Result<Vec<Packet>> {
    let data = fs::read(path)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let u32_at = |at: usize| -> io::Result<u32> {
        let bytes = data.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
        Ok(u32::from_le_bytes(bytes.try_into().unwrap()))
    };
    if u32_at(0)? != 0xa1b2_c3d4 {
        return Err(bad("not a little-endian microsecond pcap"));
    }
    if u32_at(20)? != LINKTYPE_ETHERNET {
        return Err(bad("not LINKTYPE_ETHERNET"));
    }
    let mut packets = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let (secs, usecs) = (u32_at(at)?, u32_at(at + 4)?);
        let (caplen, len) = (u32_at(at + 8)? as usize, u32_at(at + 12)? as usize);
        if caplen != len {
            return Err(bad("truncated capture"));
        }
        let frame = data
            .get(at + 16..at + 16 + caplen)
            .ok_or_else(|| bad("truncated record"))?;
        packets.push(Packet {
            ts_us: u64::from(secs) * 1_000_000 + u64::from(usecs),
            frame: frame.to_vec(),
        });
        at += 16 + caplen;
    }
    Ok(packets)
}

/// One direction of a flow, as a NetFlow record identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Octets and packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Totals {
    pub bytes: u64,
    pub packets: u64,
}

impl Totals {
    pub fn add(&mut self, bytes: u64, packets: u64) {
        self.bytes += bytes;
        self.packets += packets;
    }
}

/// The flow key of an untagged Ethernet/IPv4 or IPv6 (no extension
/// headers) frame.
pub fn flow_key(frame: &[u8]) -> Option<FlowKey> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = &frame[ETH_HLEN..];
    let (src, dst, protocol, l4_at) = match ethertype {
        ETHERTYPE_IPV4 if ip.len() >= 20 => {
            let octets = |at: usize| <[u8; 4]>::try_from(&ip[at..at + 4]).unwrap();
            (
                IpAddr::from(octets(12)),
                IpAddr::from(octets(16)),
                ip[9],
                usize::from(ip[0] & 0x0f) * 4,
            )
        }
        ETHERTYPE_IPV6 if ip.len() >= IPV6_HLEN => {
            let octets = |at: usize| <[u8; 16]>::try_from(&ip[at..at + 16]).unwrap();
            (
                IpAddr::from(octets(8)),
                IpAddr::from(octets(24)),
                ip[6],
                IPV6_HLEN,
            )
        }
        _ => return None,
    };
    let l4 = ip.get(l4_at..l4_at + 4)?;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (src_port, dst_port) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => (port(0), port(2)),
        _ => (0, 0),
    };
    Some(FlowKey {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
    })
}

/// The IP packet's length as its header gives it (IPv4 total length, IPv6
/// header plus payload length).
pub fn ip_len(frame: &[u8]) -> usize {
    let at = |i: usize| usize::from(u16::from_be_bytes([frame[i], frame[i + 1]]));
    match at(12) as u16 {
        ETHERTYPE_IPV6 => IPV6_HLEN + at(ETH_HLEN + 4),
        _ => at(ETH_HLEN + 2),
    }
}

/// The octets softflowd reports for this frame: the frame's length less the
/// Ethernet header, padding included (see the module documentation). Equal
/// to [`ip_len`] unless the frame was padded.
pub fn exported_octets(frame: &[u8]) -> u64 {
    (frame.len() - ETH_HLEN) as u64
}

/// Per-flow totals an exporter must report for `packets`.
pub fn flows(packets: &[Packet]) -> BTreeMap<FlowKey, Totals> {
    let mut flows = BTreeMap::<FlowKey, Totals>::new();
    for packet in packets {
        let key = flow_key(&packet.frame).expect("generated frames are IP");
        flows
            .entry(key)
            .or_default()
            .add(exported_octets(&packet.frame), 1);
    }
    flows
}

/// `up`, `down` or `transit`, as flowtally's `usage.direction` spells it.
pub type Direction = &'static str;

/// Per-(subscriber, direction) totals of `flows`, attributed the way
/// flowtally does: a record counts `up` for its source if that is a
/// subscriber, `down` for its destination if that is one (both, between
/// two subscribers), and `transit` for its source if neither is.
pub fn usage(
    flows: &BTreeMap<FlowKey, Totals>,
    subscribers: &[Net],
) -> BTreeMap<(IpAddr, Direction), Totals> {
    let subscriber = |ip| subscribers.iter().any(|net| net.contains(ip));
    let mut usage = BTreeMap::<(IpAddr, Direction), Totals>::new();
    for (key, totals) in flows {
        let (src_in, dst_in) = (subscriber(key.src), subscriber(key.dst));
        let mut add = |ip, dir| {
            usage
                .entry((ip, dir))
                .or_default()
                .add(totals.bytes, totals.packets)
        };
        if src_in {
            add(key.src, "up");
        }
        if dst_in {
            add(key.dst, "down");
        }
        if !src_in && !dst_in {
            add(key.src, "transit");
        }
    }
    usage
}

/// Sum of all flows' totals.
pub fn total(flows: &BTreeMap<FlowKey, Totals>) -> Totals {
    let mut sum = Totals::default();
    for totals in flows.values() {
        sum.add(totals.bytes, totals.packets);
    }
    sum
}

use flowtally::rng::Rng;

#[derive(Clone, Copy)]
enum Kind {
    Udp,
    /// TCP with sequence numbers per side; no handshake (a flow exporter
    /// tracks any segment).
    Tcp,
}

/// A bidirectional conversation between `a` (the initiator) and `b`.
struct Conversation {
    kind: Kind,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
    /// How many of 10 packets go from `b` to `a`.
    b_share: u64,
    seq: [u32; 2],
}

fn conversations(mix: Mix) -> Vec<Conversation> {
    let mut all = Vec::new();
    let conv = |kind, a: (IpAddr, u16), b: (IpAddr, u16), b_share| Conversation {
        kind,
        a,
        b,
        b_share,
        seq: [0x1000_0000, 0x2000_0000],
    };
    let v4 = |ip: Ipv4Addr, port| (IpAddr::V4(ip), port);
    for (i, &sub) in SUBSCRIBERS.iter().enumerate() {
        let i16 = i as u16;
        all.push(conv(
            Kind::Tcp,
            v4(sub, 50_000 + i16),
            v4(PEERS[(i + 1) % PEERS.len()], 443),
            7,
        ));
        all.push(conv(
            Kind::Udp,
            v4(sub, 40_000 + i16),
            v4(PEERS[i % PEERS.len()], [53, 123, 4500][i % 3]),
            5,
        ));
    }
    // A second TCP flow from one subscriber to the same peer and port: only
    // the source port tells them apart.
    all.push(conv(
        Kind::Tcp,
        v4(SUBSCRIBERS[0], 50_100),
        v4(PEERS[1], 443),
        6,
    ));
    // An upload.
    all.push(conv(
        Kind::Tcp,
        v4(SUBSCRIBERS[3], 51_000),
        v4(PEERS[2], 22),
        2,
    ));
    // Between two subscribers: up for one, down for the other.
    all.push(conv(
        Kind::Udp,
        v4(SUBSCRIBERS[1], 6_000),
        v4(SUBSCRIBERS[2], 6_001),
        5,
    ));
    // Transit between two peers.
    all.push(conv(Kind::Udp, v4(PEERS[0], 7_000), v4(PEERS[2], 7_001), 4));
    if mix == Mix::DualStack {
        let v6 = |ip: Ipv6Addr, port| (IpAddr::V6(ip), port);
        for (i, &sub) in SUBSCRIBERS6.iter().enumerate() {
            let i16 = i as u16;
            all.push(conv(
                Kind::Tcp,
                v6(sub, 52_000 + i16),
                v6(PEERS6[i % PEERS6.len()], 443),
                7,
            ));
            all.push(conv(
                Kind::Udp,
                v6(sub, 42_000 + i16),
                v6(PEERS6[(i + 1) % PEERS6.len()], [53, 443, 4500][i % 3]),
                5,
            ));
        }
        all.push(conv(
            Kind::Udp,
            v6(SUBSCRIBERS6[0], 6_000),
            v6(SUBSCRIBERS6[2], 6_001),
            5,
        ));
        all.push(conv(
            Kind::Udp,
            v6(PEERS6[0], 7_000),
            v6(PEERS6[1], 7_001),
            4,
        ));
    }
    all
}

/// The deterministic synthetic capture: [`Mix::packets`] frames over
/// [`SPAN_US`].
pub fn synthetic_traffic(mix: Mix) -> Vec<Packet> {
    let packets = mix.packets();
    let mut rng = Rng(0x5eed_f10e_7a11_0001);
    let mut convs = conversations(mix);
    let mut ip_id: u16 = 1;
    let step = SPAN_US / (packets as u64 - 1);
    (0..packets)
        .map(|n| {
            // Evenly spread, jittered, strictly increasing, last one at SPAN_US.
            let jitter = if n == 0 || n == packets - 1 {
                0
            } else {
                rng.below(step / 2)
            };
            let ts_us = START_US + n as u64 * SPAN_US / (packets as u64 - 1) + jitter;
            let c = rng.below(convs.len() as u64) as usize;
            let conv = &mut convs[c];
            let reverse = rng.below(10) < conv.b_share;
            let (from, to) = if reverse {
                (conv.b, conv.a)
            } else {
                (conv.a, conv.b)
            };
            let side = usize::from(reverse);
            // Payload that fills a 1500-byte MTU.
            let (max_udp, mss) = match from.0 {
                IpAddr::V4(_) => (1472, 1460),
                IpAddr::V6(_) => (1452, 1440),
            };
            let l4 = match conv.kind {
                Kind::Udp => {
                    // Mostly small, sometimes empty, sometimes full size.
                    let len = match rng.below(8) {
                        0 => 0,
                        1 => max_udp,
                        _ => rng.below(600) as usize,
                    };
                    udp(from.1, to.1, &payload(&mut rng, len))
                }
                Kind::Tcp => {
                    // The receiving side of a bulk transfer mostly ACKs.
                    let bulk = reverse == (conv.b_share >= 5);
                    let len = match (bulk, rng.below(4)) {
                        (true, 0) => rng.below(mss as u64) as usize + 1,
                        (true, _) => mss,
                        (false, 0) => rng.below(300) as usize + 1,
                        (false, _) => 0,
                    };
                    let data = payload(&mut rng, len);
                    let seg = tcp(from.1, to.1, conv.seq[side], conv.seq[1 - side], &data);
                    conv.seq[side] = conv.seq[side].wrapping_add(len as u32);
                    seg
                }
            };
            let protocol = match conv.kind {
                Kind::Udp => IPPROTO_UDP,
                Kind::Tcp => IPPROTO_TCP,
            };
            ip_id = ip_id.wrapping_add(1);
            let frame = match (from.0, to.0) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    ethernet(ETHERTYPE_IPV4, &ipv4(src, dst, protocol, ip_id, l4))
                }
                (IpAddr::V6(src), IpAddr::V6(dst)) => {
                    ethernet(ETHERTYPE_IPV6, &ipv6(src, dst, protocol, l4))
                }
                _ => unreachable!("conversations stay in one address family"),
            };
            Packet { ts_us, frame }
        })
        .collect()
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn ethernet(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_MIN_FRAME.max(ETH_HLEN + ip.len()));
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(ip);
    frame.resize(frame.len().max(ETH_MIN_FRAME), 0);
    frame
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, id: u16, mut l4: Vec<u8>) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).expect("fits an IPv4 packet");
    let mut ip = Vec::with_capacity(usize::from(total));
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&0x4000_u16.to_be_bytes()); // DF
    ip.extend_from_slice(&[64, protocol, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    transport_checksum(&pseudo, protocol, &mut l4);
    ip.extend_from_slice(&l4);
    ip
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let payload_len = u16::try_from(l4.len()).expect("fits an IPv6 packet");
    let mut ip = Vec::with_capacity(IPV6_HLEN + l4.len());
    ip.extend_from_slice(&0x6000_0000_u32.to_be_bytes()); // version, class, label
    ip.extend_from_slice(&payload_len.to_be_bytes());
    ip.extend_from_slice(&[protocol, 64]); // next header, hop limit
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(payload_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, protocol]);
    transport_checksum(&pseudo, protocol, &mut l4);
    ip.extend_from_slice(&l4);
    ip
}

/// Fills in the TCP or UDP checksum of `l4` over `pseudo` (the address
/// family's pseudo-header).
fn transport_checksum(pseudo: &[u8], protocol: u8, l4: &mut [u8]) {
    let at = match protocol {
        IPPROTO_TCP => 16,
        _ => 6,
    };
    let mut sum = checksum(&[pseudo, l4]);
    if protocol == IPPROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

fn udp(from: u16, to: u16, data: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend_from_slice(&from.to_be_bytes());
    udp.extend_from_slice(&to.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    udp
}

fn tcp(from: u16, to: u16, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    let flags = if data.is_empty() { ACK } else { ACK | PSH };
    let mut tcp = Vec::with_capacity(20 + data.len());
    tcp.extend_from_slice(&from.to_be_bytes());
    tcp.extend_from_slice(&to.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags]);
    tcp.extend_from_slice(&64_240_u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(data);
    tcp
}

/// The Internet checksum of the concatenated parts (each of even length but
/// the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXES: [Mix; 2] = [Mix::Ipv4, Mix::DualStack];

    #[test]
    fn the_synthetic_captures_are_deterministic_and_survive_a_round_trip() {
        for mix in MIXES {
            let packets = synthetic_traffic(mix);
            assert_eq!(packets, synthetic_traffic(mix));
            assert_eq!(packets.len(), mix.packets());
            let dir = std::env::temp_dir().join(format!("pcap-roundtrip-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let file = dir.join("t.pcap");
            write_pcap(&file, &packets).unwrap();
            let read = read_pcap(&file);
            let _ = fs::remove_dir_all(&dir);
            assert_eq!(read.unwrap(), packets);
        }
    }

    #[test]
    fn the_ipv4_capture_has_only_ipv4_and_the_dual_stack_one_both() {
        let family_counts = |mix| {
            let packets = synthetic_traffic(mix);
            let v6 = packets
                .iter()
                .filter(|p| flow_key(&p.frame).unwrap().src.is_ipv6())
                .count();
            (packets.len() - v6, v6)
        };
        assert_eq!(family_counts(Mix::Ipv4), (360, 0));
        let (v4, v6) = family_counts(Mix::DualStack);
        assert!(v4 >= 300 && v6 >= 100, "{v4} IPv4, {v6} IPv6 packets");
    }

    #[test]
    fn the_synthetic_captures_are_shaped_as_documented() {
        for mix in MIXES {
            let packets = synthetic_traffic(mix);
            assert!(packets.windows(2).all(|w| w[0].ts_us < w[1].ts_us));
            assert_eq!(packets.last().unwrap().ts_us - packets[0].ts_us, SPAN_US);
            let flows = flows(&packets);
            // Both directions of (nearly) every conversation occur.
            assert!(
                flows.len() >= 2 * conversations(mix).len() - 2,
                "{flows:#?}"
            );
            for packet in &packets {
                let frame = &packet.frame;
                assert!(frame.len() >= ETH_MIN_FRAME && frame.len() <= 1514);
                if frame[12..14] == ETHERTYPE_IPV4.to_be_bytes() {
                    assert_eq!(checksum(&[&frame[ETH_HLEN..ETH_HLEN + 20]]), 0);
                }
                // Padding is the only difference between what softflowd
                // counts and the IP packet's length.
                let ip_len = ip_len(frame);
                if ETH_HLEN + ip_len >= ETH_MIN_FRAME {
                    assert_eq!(exported_octets(frame), ip_len as u64);
                } else {
                    assert_eq!(exported_octets(frame), (ETH_MIN_FRAME - ETH_HLEN) as u64);
                }
            }
            let padded = packets.iter().filter(|p| ip_len(&p.frame) < 46).count();
            assert!(padded >= 20, "padded frames are exercised: {padded}");
            let nets = mix.subscriber_nets();
            let subscriber = |ip| nets.iter().any(|net: &Net| net.contains(ip));
            let usage = usage(&flows, &nets);
            let directions: std::collections::BTreeSet<_> = usage.keys().map(|k| k.1).collect();
            assert_eq!(directions, ["down", "transit", "up"].into());
            let mut subscribers: Vec<IpAddr> = SUBSCRIBERS.map(IpAddr::V4).into();
            if mix == Mix::DualStack {
                subscribers.extend(SUBSCRIBERS6.map(IpAddr::V6));
                assert!(usage.contains_key(&(IpAddr::V6(PEERS6[0]), "transit")));
            }
            for sub in subscribers {
                assert!(
                    usage.contains_key(&(sub, "up")) && usage.contains_key(&(sub, "down")),
                    "{sub}"
                );
            }
            // Every byte lands exactly once, but subscriber-to-subscriber
            // bytes land twice (up for one, down for the other).
            let between_subscribers: u64 = flows
                .iter()
                .filter(|(k, _)| subscriber(k.src) && subscriber(k.dst))
                .map(|(_, t)| t.bytes)
                .sum();
            assert!(between_subscribers > 0);
            let attributed: u64 = usage.values().map(|t| t.bytes).sum();
            assert_eq!(attributed, total(&flows).bytes + between_subscribers);
        }
    }

    #[test]
    fn ipv6_transport_checksums_verify() {
        for packet in synthetic_traffic(Mix::DualStack) {
            let frame = &packet.frame;
            if frame[12..14] != ETHERTYPE_IPV6.to_be_bytes() {
                continue;
            }
            let ip = &frame[ETH_HLEN..];
            let l4 = &ip[IPV6_HLEN..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[8..40]);
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, ip[6]]);
            assert_eq!(checksum(&[&pseudo, l4]), 0);
        }
    }

    #[test]
    fn prefixes_contain_what_they_should() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert!(SUBSCRIBER_NET.contains(v4(198, 18, 100, 255)));
        assert!(!SUBSCRIBER_NET.contains(v4(198, 18, 101, 0)));
        assert!(!SUBSCRIBER_NET.contains(IpAddr::V4(PEERS[0])));
        assert!(SUBSCRIBER_NET6.contains(IpAddr::V6(SUBSCRIBERS6[2])));
        assert!(!SUBSCRIBER_NET6.contains(IpAddr::V6(PEERS6[0])));
        assert!(!SUBSCRIBER_NET6.contains(v4(198, 18, 100, 10)));
        assert!(!SUBSCRIBER_NET.contains(IpAddr::V6(SUBSCRIBERS6[0])));
        let all = Net {
            addr: v4(0, 0, 0, 0),
            len: 0,
        };
        assert!(all.contains(IpAddr::V4(PEERS[0])));
        assert_eq!(SUBSCRIBER_NET.to_string(), "198.18.100.0/24");
        assert_eq!(SUBSCRIBER_NET6.to_string(), "2001:db8:100::/64");
    }
}
