//! Which addresses are subscribers: the userspace twin of the kernel's
//! `SUBSCRIBER_NETS` trie, matching on the same 16-byte form so that both
//! data paths classify every address alike.

use flowtally_common::agg::Ip;
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
}
