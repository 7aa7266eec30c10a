//! Conversions between `std::net` addresses and the 16-byte form the kernel
//! and the aggregation keys use (IPv4 as IPv4-mapped IPv6).

use std::net::{IpAddr, Ipv6Addr};

use flowtally_common::agg::{Ip, ip_from_v4};

pub fn to_ip(addr: IpAddr) -> Ip {
    match addr {
        IpAddr::V4(v4) => ip_from_v4(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// IPv4-mapped addresses come back as IPv4.
pub fn to_addr(ip: &Ip) -> IpAddr {
    Ipv6Addr::from(*ip).to_canonical()
}

/// A network in the 16-byte form: IPv4 prefixes become IPv4-mapped /96+len.
pub fn to_prefix(net: &ipnet::IpNet) -> (Ip, u8) {
    match net {
        ipnet::IpNet::V4(v4) => (to_ip(IpAddr::V4(v4.network())), 96 + v4.prefix_len()),
        ipnet::IpNet::V6(v6) => (to_ip(IpAddr::V6(v6.network())), v6.prefix_len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_through_the_mapped_form() {
        let addr: IpAddr = "198.18.0.7".parse().unwrap();
        assert_eq!(to_addr(&to_ip(addr)), addr);
        let addr: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(to_addr(&to_ip(addr)), addr);
    }
}
