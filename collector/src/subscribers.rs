//! Which addresses are subscribers: the userspace twin of the kernel's
//! `SUBSCRIBER_NETS` trie, matching on the same 16-byte form so that both
//! data paths classify every address alike.

use flowtally_common::{
    agg::Ip,
    members::{self, NetsV6},
};
use ipnet::IpNet;

use crate::ip::to_prefix;

#[derive(Clone, Debug, Default)]
pub struct SubscriberNets {
    /// (network, mask) as 128-bit integers.
    nets: Vec<(u128, u128)>,
}

impl SubscriberNets {
    pub fn new(nets: &[IpNet]) -> Self {
        let nets = nets
            .iter()
            .map(|net| {
                let (ip, len) = to_prefix(net);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                (u128::from_be_bytes(ip) & mask, mask)
            })
            .collect();
        Self { nets }
    }

    pub fn contains(&self, ip: &Ip) -> bool {
        let ip = u128::from_be_bytes(*ip);
        self.nets.iter().any(|&(net, mask)| ip & mask == net)
    }
}

/// The kernel's list of IPv6 subscriber networks (see
/// `flowtally_common::members`).
pub fn subscriber_list_v6(nets: &[IpNet]) -> NetsV6 {
    let v6: Vec<(Ip, u8)> = nets
        .iter()
        .filter(|net| matches!(net, IpNet::V6(_)))
        .map(to_prefix)
        .collect();
    NetsV6::new(&v6)
}

/// The kernel's IPv4 membership table for `nets` (see
/// `flowtally_common::members`): its non-zero words, by index.
pub fn subscriber_table(nets: &[IpNet]) -> Vec<(u32, u64)> {
    let mut words = vec![0u64; members::V4_TABLE_WORDS as usize];
    for net in nets {
        if let IpNet::V4(v4) = net {
            members::mark_v4(&mut words, v4.network().to_bits(), v4.prefix_len());
        }
    }
    (0..).zip(words).filter(|&(_, word)| word != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::to_ip;

    #[test]
    fn v4_and_v6_networks_match_their_own_addresses() {
        let nets = SubscriberNets::new(&[
            "100.64.0.0/10".parse().unwrap(),
            "fc00::/7".parse().unwrap(),
        ]);
        let has = |addr: &str| nets.contains(&to_ip(addr.parse().unwrap()));
        assert!(has("100.64.0.1") && has("100.127.255.255") && has("fd12::1"));
        assert!(!has("100.128.0.0") && !has("198.18.0.1") && !has("2001:db8::1"));
        assert!(
            !has("::100.64.0.1"),
            "an IPv4-compatible v6 address is not v4"
        );
    }

    #[test]
    fn a_zero_length_prefix_matches_everything() {
        let nets = SubscriberNets::new(&["0.0.0.0/0".parse().unwrap()]);
        assert!(nets.contains(&to_ip("203.0.113.9".parse().unwrap())));
        assert!(!nets.contains(&to_ip("2001:db8::1".parse().unwrap())));
    }

    #[test]
    fn the_kernel_ipv6_list_agrees_with_the_prefix_match() {
        let nets: Vec<IpNet> = [
            "100.64.0.0/10",
            "2001:db8::/32",
            "2a00:1450:4001::/48",
            "fd00:1:2:3::/64",
            "2a02:ff::5/128",
            "::/1",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let reference = SubscriberNets::new(&nets);
        let list = subscriber_list_v6(&nets);
        let bases: Vec<u128> = nets
            .iter()
            .map(|net| u128::from_be_bytes(to_prefix(net).0))
            .collect();
        let (mut inside, mut rng) = (0, 0x9e37_79b9_7f4a_7c15u64);
        for i in 0..100_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Near a network (a few random low bits, or random bits past
            // its first half), or anywhere; never IPv4-mapped.
            let base = bases[i as usize % bases.len()];
            let noise = u128::from(rng) << (rng % 96);
            let addr = (base ^ noise).to_be_bytes();
            if members::v4_of(&addr).is_some() {
                continue;
            }
            let expected = reference.contains(&addr);
            assert_eq!(
                list.contains(&addr),
                Some(expected),
                "{:x}",
                u128::from_be_bytes(addr)
            );
            inside += usize::from(expected);
        }
        assert!(inside > 1_000, "{inside} addresses inside");

        let many: Vec<IpNet> = (0..=members::MAX_LISTED_V6)
            .map(|i| format!("2001:db8:{i:x}::/48").parse().unwrap())
            .collect();
        let ip = to_ip("2001:db8::1".parse().unwrap());
        assert_eq!(
            subscriber_list_v6(&many).contains(&ip),
            None,
            "too many: the trie"
        );
    }

    #[test]
    fn the_kernel_table_agrees_with_the_prefix_match_wherever_it_answers() {
        let nets: Vec<IpNet> = [
            "100.64.0.0/10",
            "198.18.4.0/22",
            "198.18.9.128/25",
            "198.18.9.7/32",
            "198.18.12.0/24",
            "198.18.12.64/26",
            "2001:db8::/32",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let reference = SubscriberNets::new(&nets);
        let table: std::collections::HashMap<u32, u64> =
            subscriber_table(&nets).into_iter().collect();
        let mut asked = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Half anywhere, half near the networks' edges.
            let addr = if i % 2 == 0 {
                rng as u32
            } else {
                0xc612_0000 | (rng as u32 & 0x0fff)
            };
            let (word, shift) = members::slot(addr);
            let state = members::state(table.get(&word).copied().unwrap_or(0), shift);
            let inside = reference.contains(&to_ip(std::net::Ipv4Addr::from(addr).into()));
            match state {
                members::OUTSIDE => assert!(!inside, "{addr:#x}"),
                members::INSIDE => assert!(inside, "{addr:#x}"),
                _ => asked += 1,
            }
        }
        assert!(asked > 0, "split /24s defer to the trie");
        // Only 198.18.9.0/24 (split by the /25 and the /32) defers;
        // 198.18.12.0/24 is covered whole despite its /26.
        let split = table
            .values()
            .map(|w| {
                (0..32)
                    .filter(|s| members::state(*w, s * 2) == members::ASK_TRIE)
                    .count()
            })
            .sum::<usize>();
        assert_eq!(split, 1);
    }
}
