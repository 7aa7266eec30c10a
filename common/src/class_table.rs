//! Destination classes of IPv4 addresses through a directly indexed table,
//! with the LPM trie (`CLASS_NETS`) only as the fallback, as
//! [`crate::members`] does for subscriber membership.
//!
//! The table has one byte per IPv4 /24: the class of every address in it
//! (`agg::NO_CLASS` when no class network touches it) when class networks
//! of /24 or shorter decide it alone, or [`ASK_TRIE`] when a longer prefix
//! splits it. A peer then costs one array read instead of a trie walk; IPv6
//! peers and split /24s still ask the trie. Userspace builds the table from
//! the networks it puts in the trie ([`mark_v4`]); the tests check table
//! and trie together against the socket path's longest-prefix match.

/// The table (`Array<u64>`, [`V4_TABLE_WORDS`] entries; one entry when no
/// classes are configured).
pub const CLASS_V4_MAP: &str = "CLASS_V4";
/// /24s per table word, a byte each.
pub const SLOTS_PER_WORD: u32 = 8;
/// Words covering all 2^24 IPv4 /24s: 16 MiB.
pub const V4_TABLE_WORDS: u32 = (1 << 24) / SLOTS_PER_WORD;
/// A /24 a longer class prefix splits: the trie decides.
pub const ASK_TRIE: u8 = u8::MAX;

/// Where the class of `addr`'s /24 lives: word index and bit shift.
#[inline(always)]
pub const fn slot(addr: u32) -> (u32, u32) {
    let net24 = addr >> 8;
    (net24 / SLOTS_PER_WORD, (net24 % SLOTS_PER_WORD) * 8)
}

/// The byte at `shift` in `word`.
#[inline(always)]
pub const fn state(word: u64, shift: u32) -> u8 {
    (word >> shift) as u8
}

/// Marks the /24s the IPv4 network `addr/len` of `class` touches. `words`
/// is the whole table; networks must come shortest prefix first (a longer
/// one then overrides the /24s it covers, and one longer than /24 makes
/// its /24 [`ASK_TRIE`] whatever came before).
pub fn mark_v4(words: &mut [u64], addr: u32, len: u8, class: u8) {
    let len = len.min(32);
    let set = |words: &mut [u64], net24: u32, value: u8| {
        let (word, shift) = slot(net24 << 8);
        if let Some(w) = words.get_mut(word as usize) {
            *w = (*w & !(0xff << shift)) | (u64::from(value) << shift);
        }
    };
    if len > 24 {
        return set(words, addr >> 8, ASK_TRIE);
    }
    let span = 1u32 << (24 - len);
    let first = (addr >> 8) & !(span - 1);
    for net24 in first..first + span {
        set(words, net24, class);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_prefixes_override_and_split_24s_ask_the_trie() {
        // The first 64 /24s (8 words).
        let mut words = [0u64; 8];
        mark_v4(&mut words, 0x0000_0000, 18, 1);
        mark_v4(&mut words, 0x0000_0400, 22, 2);
        mark_v4(&mut words, 0x0000_0980, 25, 3);
        let at = |words: &[u64], addr: u32| {
            let (w, s) = slot(addr);
            state(words[w as usize], s)
        };
        assert_eq!(at(&words, 0x0000_03ff), 1);
        assert_eq!(at(&words, 0x0000_0400), 2);
        assert_eq!(at(&words, 0x0000_07ff), 2);
        assert_eq!(at(&words, 0x0000_0800), 1);
        assert_eq!(at(&words, 0x0000_0901), ASK_TRIE);
        assert_eq!(at(&words, 0x0000_3fff), 1);
        let mut words = [0u64; 8];
        mark_v4(&mut words, 0x0000_0500, 24, 7);
        assert_eq!(at(&words, 0x0000_04ff), 0);
        assert_eq!(at(&words, 0x0000_05ff), 7);
    }
}
