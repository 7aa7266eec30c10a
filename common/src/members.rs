//! Subscriber membership without walking the LPM trie (`SUBSCRIBER_NETS`)
//! for most addresses: a directly indexed table for IPv4, a short list for
//! IPv6, the trie only as the fallback.
//!
//! The table has two bits per IPv4 /24: [`OUTSIDE`] (no subscriber network
//! touches it), [`INSIDE`] (a subscriber network of /24 or shorter covers
//! it) or [`ASK_TRIE`] (only longer prefixes touch it, so the answer
//! depends on the last octet). An address then costs one array read (which
//! the verifier inlines) instead of a trie walk; IPv6 addresses and the
//! rare split /24s still ask the trie. Userspace builds the table from the
//! same networks it puts in the trie ([`mark_v4`]), and the tests check the
//! table and trie together against the plain prefix match of the socket path.
//!
//! IPv6: a network usually has a handful of IPv6 subscriber prefixes (a /32
//! or a few /48s), so the program compares an address with each of them
//! ([`NetsV6`], up to [`MAX_LISTED_V6`]), two masked words per prefix,
//! instead of walking the trie twice per record. With more prefixes than
//! that, IPv6 addresses ask the trie.

use crate::agg::Ip;

/// The table (`Array<u64>`, [`V4_TABLE_WORDS`] entries).
pub const SUBSCRIBER_V4_MAP: &str = "SUBSCRIBER_V4";
/// /24s per table word, two bits each.
pub const SLOTS_PER_WORD: u32 = 32;
/// Words covering all 2^24 IPv4 /24s: 4 MiB.
pub const V4_TABLE_WORDS: u32 = (1 << 24) / SLOTS_PER_WORD;
/// The longest prefix the table answers for on its own.
pub const TABLE_PREFIX_LEN: u8 = 24;

/// The IPv6 list (`Array<NetsV6>`, one entry).
pub const SUBSCRIBER_V6_MAP: &str = "SUBSCRIBER_V6";
/// IPv6 subscriber networks the list holds.
pub const MAX_LISTED_V6: usize = 8;

pub const OUTSIDE: u64 = 0;
pub const INSIDE: u64 = 1;
pub const ASK_TRIE: u64 = 2;

/// The IPv4 address in an IPv4-mapped `ip` (`::ffff:a.b.c.d`), as an integer.
#[inline(always)]
pub fn v4_of(ip: &Ip) -> Option<u32> {
    let head = u64::from_ne_bytes([ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7]]);
    let mid = u32::from_ne_bytes([ip[8], ip[9], ip[10], ip[11]]);
    if head != 0 || mid != u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        return None;
    }
    Some(u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]))
}

/// The IPv6 subscriber networks, when there are few: each as its address
/// and mask, both as two words of the address's bytes in memory order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetsV6 {
    /// Networks listed; more than [`MAX_LISTED_V6`]: ask the trie.
    pub count: u32,
    pub _pad: u32,
    pub nets: [[u64; 4]; MAX_LISTED_V6],
}

impl NetsV6 {
    /// The list of these IPv6 `(network, prefix length)`s.
    pub fn new(nets: &[(Ip, u8)]) -> Self {
        let mut list = Self {
            count: u32::try_from(nets.len()).unwrap_or(u32::MAX),
            ..Self::default()
        };
        for (slot, (addr, len)) in list.nets.iter_mut().zip(nets) {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            let [mask_high, mask_low] = words(&mask.to_be_bytes());
            let [high, low] = words(addr);
            *slot = [high & mask_high, low & mask_low, mask_high, mask_low];
        }
        list
    }

    /// Whether a listed network holds `ip`; `None`: not listed, ask the
    /// trie. For addresses that are not IPv4-mapped: IPv4 networks are
    /// not in the list.
    #[inline(always)]
    pub fn contains(&self, ip: &Ip) -> Option<bool> {
        let count = self.count as usize;
        if count > MAX_LISTED_V6 {
            return None;
        }
        let [high, low] = words(ip);
        for [net_high, net_low, mask_high, mask_low] in self.nets.iter().take(count) {
            // Without branches: one per network, not two.
            if ((high & mask_high) ^ net_high) | ((low & mask_low) ^ net_low) == 0 {
                return Some(true);
            }
        }
        Some(false)
    }
}

/// An address's 16 bytes as two words, in memory order.
#[inline(always)]
fn words(ip: &Ip) -> [u64; 2] {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *ip;
    [
        u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        u64::from_ne_bytes([i, j, k, l, m, n, o, p]),
    ]
}

/// Where the state of `addr`'s /24 lives: word index and bit shift.
#[inline(always)]
pub const fn slot(addr: u32) -> (u32, u32) {
    let net24 = addr >> 8;
    (net24 / SLOTS_PER_WORD, (net24 % SLOTS_PER_WORD) * 2)
}

/// The state of the /24 at `shift` in `word`.
#[inline(always)]
pub const fn state(word: u64, shift: u32) -> u64 {
    (word >> shift) & 3
}

/// Marks the /24s an IPv4 network `addr/len` touches: [`INSIDE`] for the
/// ones it covers whole, [`ASK_TRIE`] for the one a longer prefix splits.
/// `words` is the whole table; order of calls does not matter (a covered
/// /24 stays [`INSIDE`]).
pub fn mark_v4(words: &mut [u64], addr: u32, len: u8) {
    let len = len.min(32);
    if len > TABLE_PREFIX_LEN {
        let (word, shift) = slot(addr);
        if let Some(w) = words.get_mut(word as usize)
            && state(*w, shift) == OUTSIDE
        {
            *w |= ASK_TRIE << shift;
        }
        return;
    }
    let span = 1u32 << (TABLE_PREFIX_LEN - len);
    let first = (addr >> 8) & !(span - 1);
    for net24 in first..first + span {
        let (word, shift) = slot(net24 << 8);
        if let Some(w) = words.get_mut(word as usize) {
            *w = (*w & !(3 << shift)) | (INSIDE << shift);
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` of integers with an explicit padding field, so no
    // implicit padding, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::NetsV6 {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::agg::ip_from_v4;

    #[test]
    fn only_mapped_addresses_are_v4() {
        assert_eq!(v4_of(&ip_from_v4([198, 18, 0, 7])), Some(0xc612_0007));
        let mut compat = ip_from_v4([198, 18, 0, 7]);
        compat[10] = 0;
        compat[11] = 0;
        assert_eq!(v4_of(&compat), None, "::a.b.c.d is not IPv4-mapped");
        assert_eq!(v4_of(&[0; 16]), None);
    }

    #[test]
    fn the_ipv6_list_matches_its_prefixes_and_defers_when_too_long() {
        let net = |s: &str, len| {
            let addr: std::net::Ipv6Addr = s.parse().unwrap();
            (addr.octets(), len)
        };
        let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let list = NetsV6::new(&[net("2001:db8::", 32), net("2a00:1:2:3:4::", 80)]);
        assert_eq!(list.contains(&ip("2001:db8:ffff::1")), Some(true));
        assert_eq!(list.contains(&ip("2001:db9::1")), Some(false));
        assert_eq!(list.contains(&ip("2a00:1:2:3:4:ff::")), Some(true));
        assert_eq!(list.contains(&ip("2a00:1:2:3:5::")), Some(false));
        let all = NetsV6::new(&[net("::", 0)]);
        assert_eq!(all.contains(&ip("fe80::1")), Some(true));
        assert_eq!(NetsV6::new(&[]).contains(&ip("2001:db8::1")), Some(false));
        let many = [net("2001:db8::", 48); MAX_LISTED_V6 + 1];
        assert_eq!(NetsV6::new(&many).contains(&ip("2001:db8::1")), None);
    }

    #[test]
    fn short_prefixes_cover_and_long_ones_defer_to_the_trie() {
        let mut words = [0u64; 8];
        // In the first 256 /24s (8 words): 0.0.4.0/22 and 0.0.9.128/25.
        mark_v4(&mut words, 0x0000_0400, 22);
        mark_v4(&mut words, 0x0000_0980, 25);
        let at = |words: &[u64], addr: u32| {
            let (w, s) = slot(addr);
            state(words[w as usize], s)
        };
        assert_eq!(at(&words, 0x0000_03ff), OUTSIDE);
        assert_eq!(at(&words, 0x0000_0400), INSIDE);
        assert_eq!(at(&words, 0x0000_07ff), INSIDE);
        assert_eq!(at(&words, 0x0000_0800), OUTSIDE);
        assert_eq!(at(&words, 0x0000_0901), ASK_TRIE);
        // A /24 covered whole stays inside, whichever comes first.
        mark_v4(&mut words, 0x0000_0581, 32);
        assert_eq!(at(&words, 0x0000_0581), INSIDE);
        mark_v4(&mut words, 0x0000_0900, 24);
        assert_eq!(at(&words, 0x0000_0901), INSIDE);
    }
}
