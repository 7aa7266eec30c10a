//! Bounds-checked header walking: Ethernet (up to two VLAN tags), IPv4 or
//! IPv6, then UDP. Every read checks `data_end` first, which is also what
//! the verifier demands.

use aya_ebpf::programs::XdpContext;
use flowtally_common::agg::{Ip, ip_from_v4};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPV6_HLEN: usize = 40;
const IPV6_NEXT_FRAGMENT: u8 = 44;
const UDP_HLEN: usize = 8;
/// More-fragments flag and fragment offset of the IPv4 header.
const IPV4_FRAG_MASK: u16 = 0x3fff;

/// What the frame carries at the transport layer, as far as we care.
pub enum Transport {
    Udp {
        src: Ip,
        dst_port: u16,
        /// Offset and length of the UDP payload, both inside the frame.
        payload: usize,
        len: usize,
    },
    Fragment,
    /// A header runs past the end of the frame.
    Truncated,
    Other,
}

pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn transport(&self) -> Transport {
        let Some((ethertype, l3)) = self.ethertype() else {
            return Transport::Truncated;
        };
        match ethertype {
            ETH_P_IPV4 => self.ipv4(l3),
            ETH_P_IPV6 => self.ipv6(l3),
            _ => Transport::Other,
        }
    }

    /// The ethertype after at most two VLAN tags, and where L3 starts.
    fn ethertype(&self) -> Option<(u16, usize)> {
        let mut offset = ETH_HLEN;
        let mut ethertype = self.u16_at(offset - 2)?;
        for _ in 0..2 {
            if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
                break;
            }
            offset += VLAN_HLEN;
            ethertype = self.u16_at(offset - 2)?;
        }
        Some((ethertype, offset))
    }

    // Each field is checked on its own: LLVM folds a tuple of `Option`s into
    // bitwise ORs over packet pointers, which the verifier rejects.
    fn ipv4(&self, l3: usize) -> Transport {
        let Some(version_ihl) = self.u8_at(l3) else {
            return Transport::Truncated;
        };
        let Some(total_len) = self.u16_at(l3 + 2) else {
            return Transport::Truncated;
        };
        let Some(frag) = self.u16_at(l3 + 6) else {
            return Transport::Truncated;
        };
        let Some(protocol) = self.u8_at(l3 + 9) else {
            return Transport::Truncated;
        };
        let Some(src) = self.array::<4>(l3 + 12) else {
            return Transport::Truncated;
        };
        let ihl = usize::from(version_ihl & 0x0f) * 4;
        let total_len = usize::from(total_len);
        // What the stack's ip_rcv refuses, the socket path never sees.
        if version_ihl >> 4 != 4 || ihl < 20 || total_len < ihl || self.len() < l3 + total_len {
            return Transport::Truncated;
        }
        if frag & IPV4_FRAG_MASK != 0 {
            return Transport::Fragment;
        }
        if protocol != IPPROTO_UDP {
            return Transport::Other;
        }
        self.udp(l3 + ihl, l3 + total_len, ip_from_v4(src))
    }

    /// Extension headers other than a fragment header are not walked: such
    /// datagrams reach the socket path as `Other`.
    fn ipv6(&self, l3: usize) -> Transport {
        let Some(payload_len) = self.u16_at(l3 + 4) else {
            return Transport::Truncated;
        };
        let Some(next_header) = self.u8_at(l3 + 6) else {
            return Transport::Truncated;
        };
        let Some(src) = self.array::<16>(l3 + 8) else {
            return Transport::Truncated;
        };
        match next_header {
            IPV6_NEXT_FRAGMENT => Transport::Fragment,
            IPPROTO_UDP => {
                let end = l3 + IPV6_HLEN + usize::from(payload_len);
                if self.len() < end {
                    return Transport::Truncated;
                }
                self.udp(l3 + IPV6_HLEN, end, src)
            }
            _ => Transport::Other,
        }
    }

    /// The UDP datagram at `l4`, which must end by `ip_end` (the end of the
    /// IP packet by its length field, itself inside the frame).
    fn udp(&self, l4: usize, ip_end: usize, src: Ip) -> Transport {
        let Some(dst_port) = self.u16_at(l4 + 2) else {
            return Transport::Truncated;
        };
        let Some(udp_len) = self.u16_at(l4 + 4) else {
            return Transport::Truncated;
        };
        let udp_len = usize::from(udp_len);
        // The length fields, not the frame, bound the payload: frames may
        // carry Ethernet padding after it.
        if udp_len < UDP_HLEN || l4 + udp_len > ip_end || self.start + l4 + udp_len > self.end {
            return Transport::Truncated;
        }
        Transport::Udp {
            src,
            dst_port,
            payload: l4 + UDP_HLEN,
            len: udp_len - UDP_HLEN,
        }
    }

    /// `N` bytes at `offset`, copied out of the frame.
    #[inline(always)]
    pub fn array<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let ptr = self.start + offset;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: all `N` bytes are within [data, data_end), checked above.
        Some(unsafe { *(ptr as *const [u8; N]) })
    }

    #[inline(always)]
    fn u8_at(&self, offset: usize) -> Option<u8> {
        let ptr = self.start + offset;
        if ptr + 1 > self.end {
            return None;
        }
        // SAFETY: `ptr` is within [data, data_end), checked above.
        Some(unsafe { *(ptr as *const u8) })
    }

    #[inline(always)]
    fn u16_at(&self, offset: usize) -> Option<u16> {
        let ptr = self.start + offset;
        if ptr + 2 > self.end {
            return None;
        }
        // SAFETY: both bytes are within [data, data_end), checked above.
        Some(u16::from_be_bytes(unsafe { *(ptr as *const [u8; 2]) }))
    }
}
