//! Ethernet frames built byte by byte, for feeding the XDP program directly.

pub const V4: u16 = 0x0800;
pub const V6: u16 = 0x86dd;
/// The source address of frames built by [`ipv4`].
pub const DEFAULT_SRC: [u8; 4] = [198, 18, 0, 1];

pub fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for &tpid in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x64]); // VLAN 100
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header with `options_words` 32-bit words of options.
pub fn ipv4(protocol: u8, frag: u16, options_words: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_from(DEFAULT_SRC, protocol, frag, options_words, payload)
}

pub fn ipv4_from(
    src: [u8; 4],
    protocol: u8,
    frag: u16,
    options_words: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options_words;
    let total = u16::from(ihl) * 4 + payload.len() as u16;
    let mut packet = vec![0x40 | ihl, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet.extend_from_slice(&frag.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]);
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&[198, 18, 0, 2]);
    packet.extend(std::iter::repeat_n(1, usize::from(options_words) * 4)); // NOPs
    packet.extend_from_slice(payload);
    packet
}

pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]);
    packet.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(8)); // source + destination
    packet.extend_from_slice(payload);
    packet
}

pub fn udp_with(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0x30, 0x39];
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

/// A UDP datagram from `src` to port `dst_port`, in IPv4 in Ethernet.
pub fn udp_v4_frame(src: [u8; 4], dst_port: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(
        &[],
        V4,
        &ipv4_from(src, 17, 0, 0, &udp_with(dst_port, payload)),
    )
}

/// A UDP datagram to port `dst_port` from the IPv6 address [`ipv6`] puts
/// in every header (2001:db8:2001:db8::…), in Ethernet.
pub fn udp_v6_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(&[], V6, &ipv6(17, &udp_with(dst_port, payload)))
}
