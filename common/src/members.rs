//! Subscriber membership of IPv4 addresses through a directly indexed
//! table, with the LPM trie (`SUBSCRIBER_NETS`) only as the fallback.
//!
//! The table has two bits per IPv4 /24: [`OUTSIDE`] (no subscriber network
//! touches it), [`INSIDE`] (a subscriber network of /24 or shorter covers
//! it) or [`ASK_TRIE`] (only longer prefixes touch it, so the answer
//! depends on the last octet). An address then costs one array read (which
//! the verifier inlines) instead of a trie walk; IPv6 addresses and the
//! rare split /24s still ask the trie. Userspace builds the table from the
//! same networks it puts in the trie ([`mark_v4`]), and the tests check the
//! table and trie together against the plain prefix match of the socket path.

use crate::agg::Ip;

/// The table (`Array<u64>`, [`V4_TABLE_WORDS`] entries).
pub const SUBSCRIBER_V4_MAP: &str = "SUBSCRIBER_V4";
/// /24s per table word, two bits each.
pub const SLOTS_PER_WORD: u32 = 32;
/// Words covering all 2^24 IPv4 /24s: 4 MiB.
pub const V4_TABLE_WORDS: u32 = (1 << 24) / SLOTS_PER_WORD;
/// The longest prefix the table answers for on its own.
pub const TABLE_PREFIX_LEN: u8 = 24;

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

#[cfg(test)]
mod tests {
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
