//! Synthetic subscriber traffic as a classic pcap file, and what a flow
//! exporter must report for it.
//!
//! The generator is deterministic (a fixed-seed PRNG): a handful of
//! subscribers in 198.18.100.0/24 talk UDP and TCP with a few peers in
//! 198.19.0.0/24, in both directions, with packet sizes from empty to full
//! MTU, spread over [`SPAN_US`] of capture time; two peers also exchange
//! some transit traffic and two subscribers talk to each other.
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
#![allow(dead_code)] // each test binary uses a different part

use std::{collections::BTreeMap, fs, io, net::Ipv4Addr, path::Path};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const ETH_HLEN: usize = 14;
/// Frames shorter than this (without FCS) are padded on the wire.
pub const ETH_MIN_FRAME: usize = 60;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Capture time of the first packet, in Unix µs (only differences matter
/// to a real-clock replay).
pub const START_US: u64 = 1_700_000_000_000_000;
/// Capture time from the first packet to the last: what a real-clock replay
/// takes.
pub const SPAN_US: u64 = 1_500_000;
/// Number of packets generated.
pub const PACKETS: usize = 360;

pub const SUBSCRIBER_NET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(198, 18, 100, 0),
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

/// Destination and source MAC of every generated frame: locally
/// administered, so that they match no interface and the receiving stack
/// drops the frames (only a promiscuous capture sees them).
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
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

/// One direction of a flow, as a NetFlow v5 record identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
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

/// The flow key of an untagged Ethernet/IPv4 TCP or UDP frame.
pub fn flow_key(frame: &[u8]) -> Option<FlowKey> {
    if frame.len() < ETH_HLEN + 20 || frame[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    let ip = &frame[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let protocol = ip[9];
    let l4 = ip.get(ihl..ihl + 4)?;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (src_port, dst_port) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => (port(0), port(2)),
        _ => (0, 0),
    };
    Some(FlowKey {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        protocol,
        src_port,
        dst_port,
    })
}

/// The octets softflowd reports for this frame: the frame's length less the
/// Ethernet header, padding included (see the module documentation). Equal
/// to the IPv4 total length unless the frame was padded.
pub fn exported_octets(frame: &[u8]) -> u64 {
    (frame.len() - ETH_HLEN) as u64
}

/// Per-flow totals an exporter must report for `packets`.
pub fn flows(packets: &[Packet]) -> BTreeMap<FlowKey, Totals> {
    let mut flows = BTreeMap::<FlowKey, Totals>::new();
    for packet in packets {
        let key = flow_key(&packet.frame).expect("generated frames are IPv4");
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
    subscribers: Ipv4Net,
) -> BTreeMap<(Ipv4Addr, Direction), Totals> {
    let mut usage = BTreeMap::<(Ipv4Addr, Direction), Totals>::new();
    for (key, totals) in flows {
        let (src_in, dst_in) = (subscribers.contains(key.src), subscribers.contains(key.dst));
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

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (bias irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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
    a: (Ipv4Addr, u16),
    b: (Ipv4Addr, u16),
    /// How many of 10 packets go from `b` to `a`.
    b_share: u64,
    seq: [u32; 2],
}

fn conversations() -> Vec<Conversation> {
    let mut all = Vec::new();
    let conv = |kind, a, b, b_share| Conversation {
        kind,
        a,
        b,
        b_share,
        seq: [0x1000_0000, 0x2000_0000],
    };
    for (i, &sub) in SUBSCRIBERS.iter().enumerate() {
        let i16 = i as u16;
        all.push(conv(
            Kind::Tcp,
            (sub, 50_000 + i16),
            (PEERS[(i + 1) % PEERS.len()], 443),
            7,
        ));
        all.push(conv(
            Kind::Udp,
            (sub, 40_000 + i16),
            (PEERS[i % PEERS.len()], [53, 123, 4500][i % 3]),
            5,
        ));
    }
    // A second TCP flow from one subscriber to the same peer and port: only
    // the source port tells them apart.
    all.push(conv(
        Kind::Tcp,
        (SUBSCRIBERS[0], 50_100),
        (PEERS[1], 443),
        6,
    ));
    // An upload.
    all.push(conv(Kind::Tcp, (SUBSCRIBERS[3], 51_000), (PEERS[2], 22), 2));
    // Between two subscribers: up for one, down for the other.
    all.push(conv(
        Kind::Udp,
        (SUBSCRIBERS[1], 6_000),
        (SUBSCRIBERS[2], 6_001),
        5,
    ));
    // Transit between two peers.
    all.push(conv(Kind::Udp, (PEERS[0], 7_000), (PEERS[2], 7_001), 4));
    all
}

/// The deterministic synthetic capture: [`PACKETS`] frames over
/// [`SPAN_US`].
pub fn synthetic_traffic() -> Vec<Packet> {
    let mut rng = Rng(0x5eed_f10e_7a11_0001);
    let mut convs = conversations();
    let mut ip_id: u16 = 1;
    let step = SPAN_US / (PACKETS as u64 - 1);
    (0..PACKETS)
        .map(|n| {
            // Evenly spread, jittered, strictly increasing, last one at SPAN_US.
            let jitter = if n == 0 || n == PACKETS - 1 {
                0
            } else {
                rng.below(step / 2)
            };
            let ts_us = START_US + n as u64 * SPAN_US / (PACKETS as u64 - 1) + jitter;
            let c = rng.below(convs.len() as u64) as usize;
            let conv = &mut convs[c];
            let reverse = rng.below(10) < conv.b_share;
            let (from, to) = if reverse {
                (conv.b, conv.a)
            } else {
                (conv.a, conv.b)
            };
            let side = usize::from(reverse);
            let l4 = match conv.kind {
                Kind::Udp => {
                    // Mostly small, sometimes empty, sometimes full size.
                    let len = match rng.below(8) {
                        0 => 0,
                        1 => 1472,
                        _ => rng.below(600) as usize,
                    };
                    udp(from, to, &payload(&mut rng, len))
                }
                Kind::Tcp => {
                    // The receiving side of a bulk transfer mostly ACKs.
                    let bulk = reverse == (conv.b_share >= 5);
                    let len = match (bulk, rng.below(4)) {
                        (true, 0) => rng.below(1460) as usize + 1,
                        (true, _) => 1460,
                        (false, 0) => rng.below(300) as usize + 1,
                        (false, _) => 0,
                    };
                    let data = payload(&mut rng, len);
                    let seg = tcp(from, to, conv.seq[side], conv.seq[1 - side], &data);
                    conv.seq[side] = conv.seq[side].wrapping_add(len as u32);
                    seg
                }
            };
            let protocol = match conv.kind {
                Kind::Udp => IPPROTO_UDP,
                Kind::Tcp => IPPROTO_TCP,
            };
            ip_id = ip_id.wrapping_add(1);
            Packet {
                ts_us,
                frame: ethernet(&ipv4(from.0, to.0, protocol, ip_id, &l4)),
            }
        })
        .collect()
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_MIN_FRAME.max(ETH_HLEN + ip.len()));
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(ip);
    frame.resize(frame.len().max(ETH_MIN_FRAME), 0);
    frame
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, id: u16, l4: &[u8]) -> Vec<u8> {
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
    let l4_start = ip.len();
    ip.extend_from_slice(l4);
    // Transport checksum over the pseudo-header.
    let at = match protocol {
        IPPROTO_TCP => l4_start + 16,
        _ => l4_start + 6,
    };
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let mut sum = checksum(&[&pseudo, l4]);
    if protocol == IPPROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    ip[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn udp(from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), data: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend_from_slice(&from.1.to_be_bytes());
    udp.extend_from_slice(&to.1.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    udp
}

fn tcp(from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    let flags = if data.is_empty() { ACK } else { ACK | PSH };
    let mut tcp = Vec::with_capacity(20 + data.len());
    tcp.extend_from_slice(&from.1.to_be_bytes());
    tcp.extend_from_slice(&to.1.to_be_bytes());
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

    #[test]
    fn the_synthetic_capture_is_deterministic_and_survives_a_round_trip() {
        let packets = synthetic_traffic();
        assert_eq!(packets, synthetic_traffic());
        assert_eq!(packets.len(), PACKETS);
        let dir = std::env::temp_dir().join(format!("pcap-roundtrip-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.pcap");
        write_pcap(&file, &packets).unwrap();
        let read = read_pcap(&file);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(read.unwrap(), packets);
    }

    #[test]
    fn the_synthetic_capture_is_shaped_as_documented() {
        let packets = synthetic_traffic();
        assert!(packets.windows(2).all(|w| w[0].ts_us < w[1].ts_us));
        assert_eq!(packets.last().unwrap().ts_us - packets[0].ts_us, SPAN_US);
        let flows = flows(&packets);
        // Both directions of (nearly) every conversation occur.
        assert!(flows.len() >= 2 * conversations().len() - 2, "{flows:#?}");
        for packet in &packets {
            let frame = &packet.frame;
            assert!(frame.len() >= ETH_MIN_FRAME && frame.len() <= 1514);
            let ip_len = u16::from_be_bytes([frame[16], frame[17]]) as usize;
            assert_eq!(checksum(&[&frame[ETH_HLEN..ETH_HLEN + 20]]), 0);
            // Padding is the only difference between what softflowd counts
            // and the IPv4 total length.
            if ETH_HLEN + ip_len >= ETH_MIN_FRAME {
                assert_eq!(exported_octets(frame), ip_len as u64);
            } else {
                assert_eq!(exported_octets(frame), (ETH_MIN_FRAME - ETH_HLEN) as u64);
            }
        }
        let padded = packets
            .iter()
            .filter(|p| u16::from_be_bytes([p.frame[16], p.frame[17]]) < 46)
            .count();
        assert!(padded >= 20, "padded frames are exercised: {padded}");
        let usage = usage(&flows, SUBSCRIBER_NET);
        let directions: std::collections::BTreeSet<_> = usage.keys().map(|k| k.1).collect();
        assert_eq!(directions, ["down", "transit", "up"].into());
        for sub in SUBSCRIBERS {
            assert!(usage.contains_key(&(sub, "up")) && usage.contains_key(&(sub, "down")));
        }
        // Every byte lands exactly once, but subscriber-to-subscriber bytes
        // land twice (up for one, down for the other).
        let between_subscribers: u64 = flows
            .iter()
            .filter(|(k, _)| SUBSCRIBER_NET.contains(k.src) && SUBSCRIBER_NET.contains(k.dst))
            .map(|(_, t)| t.bytes)
            .sum();
        assert!(between_subscribers > 0);
        let attributed: u64 = usage.values().map(|t| t.bytes).sum();
        assert_eq!(attributed, total(&flows).bytes + between_subscribers);
    }

    #[test]
    fn prefixes_contain_what_they_should() {
        assert!(SUBSCRIBER_NET.contains(Ipv4Addr::new(198, 18, 100, 255)));
        assert!(!SUBSCRIBER_NET.contains(Ipv4Addr::new(198, 18, 101, 0)));
        assert!(!SUBSCRIBER_NET.contains(PEERS[0]));
        let all = Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0,
        };
        assert!(all.contains(PEERS[0]));
    }
}
