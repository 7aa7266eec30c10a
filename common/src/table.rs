//! The aggregate tables: arrays the XDP program indexes itself, with its
//! own open addressing, instead of the kernel's hash map. One holds keys
//! whose addresses are all IPv4 (the 32-byte `AggKeyV4`, [`SlotV4`]), the
//! other keys with an IPv6 address (the 64-byte `AggKey`, [`SlotV6`]).
//!
//! Why: at a million keys the kernel's per-CPU hash map costs three cache
//! misses per record (bucket array, element, per-CPU value) and a helper
//! call whose return this kernel's SRSO mitigation taxes, and it hashes
//! its keys with jhash a byte lane at a time; draining it frees every
//! element. Here a key and its counters share one slot (one cache line for
//! IPv4, two for IPv6), the lookup is inlined array arithmetic, and
//! userspace reads the table through `mmap` (`BPF_F_MMAPABLE`) without a
//! syscall per key.
//!
//! Layout: two generations (the program writes the one `ACTIVE` names,
//! userspace drains the other), each split into one partition per possible
//! CPU, each partition `1 << shift` slots. A CPU writes only its own
//! partition, so no slot has two writers and no atomics are needed, as with
//! a per-CPU map. A key probes two runs of [`RUN`] consecutive slots, each
//! from one half of its hash (most keys are found in the first run's cache
//! lines, which the hardware prefetches together); when neither run has the
//! key or a free slot, an IPv4 aggregate goes through the overflow ring, as
//! from a full map, and an IPv6 one to the kernel hash map of its
//! generation.

use crate::agg::{AggKey, AggKeyV4, AggValue};

/// The tables (`Array<SlotV4>` and `Array<SlotV6>`, `BPF_F_MMAPABLE`,
/// [`entries`] slots each).
pub const TABLE_V4_MAP: &str = "TABLE_V4";
pub const TABLE_V6_MAP: &str = "TABLE_V6";
/// Globals: log2 of the slots per CPU partition of each table, and the
/// partitions per generation (possible CPUs).
pub const GLOBAL_TABLE_SHIFT: &str = "TABLE_SHIFT";
pub const GLOBAL_TABLE_V6_SHIFT: &str = "TABLE_V6_SHIFT";
pub const GLOBAL_TABLE_CPUS: &str = "TABLE_CPUS";

/// Consecutive slots per run. Two runs of 8 leave about one key in 10 000
/// without a slot at half load, and about 1 % at the fullest load
/// [`shift_for`] allows (0.8; see the tests); one run of 16 would leave
/// twice to three times as many.
pub const RUN: u32 = 8;

/// One aggregate: the key as the program builds it, then the counters.
/// Times are offsets from the key's bucket start, which fit 32 bits (a
/// bucket is at most a day). `flows == 0` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot<K> {
    pub key: K,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u32,
    pub first_offset_ms: u32,
    pub last_offset_ms: u32,
    pub _pad: u32,
}

/// A slot of the IPv4 table: one cache line (64 bytes).
pub type SlotV4 = Slot<AggKeyV4>;
/// A slot of the IPv6 table: 96 bytes, two cache lines.
pub type SlotV6 = Slot<AggKey>;

/// What a table needs of its keys.
pub trait TableKey: Copy {
    /// The key as plain words, hashed and compared.
    type Words: Copy;
    fn words(&self) -> Self::Words;
    /// Whether this key has these `words`.
    fn is(&self, words: &Self::Words) -> bool;
    /// Where the key's two runs start within a partition, before masking.
    fn runs(words: &Self::Words) -> [u32; 2];
    fn bucket_start_ms(&self) -> u64;
    /// The key as the drain hands it on.
    fn full(&self) -> AggKey;
}

impl TableKey for AggKeyV4 {
    type Words = [u64; 4];

    #[inline(always)]
    fn words(&self) -> [u64; 4] {
        // SAFETY: `AggKeyV4` is 32 bytes of plain integers with no implicit
        // padding (its padding is a field), so every byte is initialised.
        unsafe { core::mem::transmute::<AggKeyV4, [u64; 4]>(*self) }
    }

    #[inline(always)]
    fn is(&self, words: &[u64; 4]) -> bool {
        same_words(&self.words(), words)
    }

    #[inline(always)]
    fn runs(words: &[u64; 4]) -> [u32; 2] {
        runs(words)
    }

    #[inline(always)]
    fn bucket_start_ms(&self) -> u64 {
        self.bucket_start_ms
    }

    fn full(&self) -> AggKey {
        self.unpack()
    }
}

impl TableKey for AggKey {
    type Words = [u64; 8];

    #[inline(always)]
    fn words(&self) -> [u64; 8] {
        // SAFETY: `AggKey` is 64 bytes of plain integers with no implicit
        // padding (its padding is a field), so every byte is initialised.
        unsafe { core::mem::transmute::<AggKey, [u64; 8]>(*self) }
    }

    #[inline(always)]
    fn is(&self, words: &[u64; 8]) -> bool {
        same_words(&self.words(), words)
    }

    #[inline(always)]
    fn runs(words: &[u64; 8]) -> [u32; 2] {
        runs(words)
    }

    #[inline(always)]
    fn bucket_start_ms(&self) -> u64 {
        self.bucket_start_ms
    }

    fn full(&self) -> AggKey {
        *self
    }
}

impl<K: TableKey> Slot<K> {
    /// Takes this free slot for `key` with `value`; false (slot untouched)
    /// when `value` does not fit a slot's fields.
    #[inline(always)]
    pub fn claim(&mut self, key: &K, value: &AggValue) -> bool {
        let Some((first, last)) = offsets(key, value) else {
            return false;
        };
        if value.flows == 0 || value.flows > u64::from(u32::MAX) {
            return false;
        }
        self.key = *key;
        self.bytes = value.bytes;
        self.packets = value.packets;
        self.first_offset_ms = first;
        self.last_offset_ms = last;
        self.flows = value.flows as u32;
        true
    }

    /// Adds `value` to this slot of the same key, saturating as
    /// [`AggValue::merge`] does; false (slot untouched) when the flow
    /// count would not fit, so that the caller sends it on whole.
    #[inline(always)]
    pub fn add(&mut self, value: &AggValue) -> bool {
        let Some((first, last)) = offsets(&self.key, value) else {
            return false;
        };
        let flows = u64::from(self.flows) + value.flows;
        if flows > u64::from(u32::MAX) {
            return false;
        }
        self.flows = flows as u32;
        self.bytes = self.bytes.saturating_add(value.bytes);
        self.packets = self.packets.saturating_add(value.packets);
        if first < self.first_offset_ms {
            self.first_offset_ms = first;
        }
        if last > self.last_offset_ms {
            self.last_offset_ms = last;
        }
        true
    }

    /// The slot's aggregate, or `None` for a free slot.
    pub fn value(&self) -> Option<AggValue> {
        if self.flows == 0 {
            return None;
        }
        let start = self.key.bucket_start_ms();
        Some(AggValue {
            bytes: self.bytes,
            packets: self.packets,
            flows: u64::from(self.flows),
            first_ms: start + u64::from(self.first_offset_ms),
            last_ms: start + u64::from(self.last_offset_ms),
        })
    }
}

/// `value`'s first and last times as offsets from `key`'s bucket start,
/// if they fit.
#[inline(always)]
fn offsets<K: TableKey>(key: &K, value: &AggValue) -> Option<(u32, u32)> {
    let start = key.bucket_start_ms();
    let first = value.first_ms.checked_sub(start)?;
    let last = value.last_ms.checked_sub(start)?;
    if first > u64::from(u32::MAX) || last > u64::from(u32::MAX) {
        return None;
    }
    Some((first as u32, last as u32))
}

/// Writes `key` over `out` a word at a time. The program hashes a key's
/// words right after building it, and a word load from narrower stores
/// still on their way to the cache waits for them all (no store
/// forwarding): a fifth of a NetFlow v5 record's time in the kernel.
/// Volatile, because the compiler splits plain stores back into one per
/// field.
#[inline(always)]
pub fn store<K, const N: usize>(key: K, out: &mut K)
where
    K: TableKey<Words = [u64; N]>,
{
    let out = (&raw mut *out).cast::<u64>();
    for (i, word) in key.words().into_iter().enumerate() {
        // SAFETY: `out` is a valid, exclusive key of `N` words (`words`),
        // aligned for them.
        unsafe { out.add(i).write_volatile(word) };
    }
}

/// Whether two keys' words are equal. Without branches: `==` on arrays,
/// or a chain of word comparisons, becomes a `memcmp` call, which BPF runs
/// a byte at a time (and which cost the verifier its budget).
#[inline(always)]
fn same_words<const N: usize>(have: &[u64; N], words: &[u64; N]) -> bool {
    let mut differ = 0;
    for (have, want) in have.iter().zip(words) {
        differ |= have ^ want;
    }
    differ == 0
}

/// Where a key's two runs start within a partition, before masking:
/// multiply-xorshift over its words, then SplitMix64's finaliser so that
/// both halves are well mixed (64-bit multiplies are single BPF
/// instructions).
#[inline(always)]
fn runs<const N: usize>(words: &[u64; N]) -> [u32; 2] {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = 0u64;
    for word in words {
        h = (h ^ (h >> 29) ^ word).wrapping_mul(K);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    [h as u32, (h >> 32) as u32]
}

/// log2 of the slots per partition for `entries` keys: the next power of
/// two of 1.25 × `entries`, so that a full partition is at most 0.8 used.
pub fn shift_for(entries: u32) -> u32 {
    let slots = (u64::from(entries) + u64::from(entries) / 4).max(u64::from(2 * RUN));
    slots.next_power_of_two().trailing_zeros()
}

/// The table's slots: two generations of `cpus` partitions.
pub fn entries(shift: u32, cpus: u32) -> u64 {
    (2 * u64::from(cpus)) << shift
}

/// The first slot of `cpu`'s partition in generation `generation`.
#[inline(always)]
pub fn partition_base(generation: u32, cpus: u32, cpu: u32, shift: u32) -> u32 {
    // Wrapping: userspace sizes the table so that nothing wraps, and the
    // array lookup bounds-checks the index anyway.
    generation
        .wrapping_mul(cpus)
        .wrapping_add(cpu)
        .wrapping_shl(shift)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    fn key(subscriber: u32, peer: u32, port: u16) -> AggKeyV4 {
        AggKeyV4 {
            bucket_start_ms: 1_700_000_040_000,
            subscriber: subscriber.to_be_bytes(),
            peer: peer.to_be_bytes(),
            exporter: [198, 18, 0, 1],
            subscriber_port: port,
            peer_port: 443,
            protocol: 6,
            direction: 1,
            ..AggKeyV4::default()
        }
    }

    /// The same key with IPv6 addresses.
    fn key_v6(subscriber: u32, peer: u32, port: u16) -> AggKey {
        let v6 = |v4: u32| {
            let mut ip = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            ip[12..].copy_from_slice(&v4.to_be_bytes());
            ip
        };
        let mut full = key(subscriber, peer, port).unpack();
        full.subscriber = v6(subscriber);
        full.peer = v6(peer);
        full
    }

    #[test]
    fn an_ipv4_slot_is_one_cache_line_and_an_ipv6_slot_two() {
        assert_eq!(core::mem::size_of::<SlotV4>(), 64);
        assert_eq!(core::mem::size_of::<SlotV6>(), 96);
    }

    #[test]
    fn claimed_and_added_slots_give_back_what_merge_gives() {
        let key = key(0x6464_0001, 0x0808_0808, 5000);
        let start = key.bucket_start_ms;
        let values = [
            AggValue::one(1500, 1, start + 30_000),
            AggValue::one(40, 2, start + 10),
            AggValue::one(u64::MAX - 5, 7, start + 59_999),
        ];
        let mut slot = SlotV4::default();
        assert_eq!(slot.value(), None, "a zeroed slot is free");
        assert!(slot.claim(&key, &values[0]));
        let mut expected = values[0];
        for value in &values[1..] {
            assert!(slot.add(value));
            expected.merge(value);
        }
        assert_eq!(slot.value(), Some(expected));
        assert!(slot.key.is(&key.words()));
        let mut other = key;
        other.class = 1;
        assert!(!slot.key.is(&other.words()));

        let key = key_v6(0x6464_0001, 0x0808_0808, 5000);
        let mut slot = SlotV6::default();
        assert!(slot.claim(&key, &values[0]));
        for value in &values[1..] {
            assert!(slot.add(value));
        }
        assert_eq!(slot.value(), Some(expected));
        assert_eq!(slot.key.full(), key);
        let mut other = key;
        other.peer[15] ^= 1;
        assert!(slot.key.is(&key.words()) && !slot.key.is(&other.words()));
    }

    #[test]
    fn values_that_do_not_fit_leave_the_slot_untouched() {
        let key = key(0x6464_0001, 0x0808_0808, 5000);
        let start = key.bucket_start_ms;
        let mut slot = SlotV4::default();
        assert!(
            !slot.claim(&key, &AggValue::one(1, 1, start - 1)),
            "before the bucket"
        );
        assert!(
            !slot.claim(&key, &AggValue::one(1, 1, start + (1 << 32))),
            "past 32 bits of offset"
        );
        assert_eq!(slot, SlotV4::default());
        assert!(slot.claim(&key, &AggValue::one(1, 1, start)));
        slot.flows = u32::MAX;
        let before = slot;
        assert!(!slot.add(&AggValue::one(1, 1, start)), "flow count full");
        assert_eq!(slot, before);
    }

    /// Inserts `n` distinct keys made by `key` into one partition of
    /// `2^shift` slots as the program does; returns how many found no slot.
    fn overflowed<K>(n: u32, shift: u32, key: impl Fn(u32, u32, u16) -> K) -> u32
    where
        K: TableKey,
        K::Words: Eq + core::hash::Hash,
    {
        let mask = (1u32 << shift) - 1;
        let mut used = std::vec![false; 1 << shift];
        let mut seen = HashSet::new();
        let mut overflowed = 0;
        // Keys that differ only where real ones do: addresses and ports.
        let keys = (0..n).map(|i| key(0x6440_0000 + i / 4, 0x0808_0000 + i % 977, (i % 4) as u16));
        for key in keys {
            let words = key.words();
            assert!(seen.insert(words), "distinct keys");
            let slot = K::runs(&words)
                .into_iter()
                .flat_map(|start| (0..RUN).map(move |p| (start.wrapping_add(p) & mask) as usize))
                .find(|&i| !used[i]);
            match slot {
                Some(i) => used[i] = true,
                None => overflowed += 1,
            }
        }
        overflowed
    }

    #[test]
    fn few_keys_find_no_slot_at_half_load_and_about_one_percent_when_full() {
        let shift = shift_for(65_536);
        assert_eq!(shift, 17, "81 920 slots round up to 2^17");
        let half = overflowed(65_536, shift, key);
        assert!(half * 2_000 <= 65_536, "{half} of 65 536 keys at half load");
        // The fullest a partition gets: 0.8 of its slots.
        let full = overflowed(104_857, shift, key);
        assert!(
            full * 1_000 <= 15 * 104_857,
            "{full} of 104 857 keys at 0.8 load"
        );
        let half = overflowed(65_536, shift, key_v6);
        assert!(
            half * 2_000 <= 65_536,
            "{half} of 65 536 IPv6 keys at half load"
        );
        let full = overflowed(104_857, shift, key_v6);
        assert!(
            full * 1_000 <= 15 * 104_857,
            "{full} of 104 857 IPv6 keys at 0.8 load"
        );
    }

    #[test]
    fn partitions_do_not_overlap_and_fill_the_table() {
        let (shift, cpus) = (3, 3);
        let mut slots = HashSet::new();
        for generation in 0..2 {
            for cpu in 0..cpus {
                let base = partition_base(generation, cpus, cpu, shift);
                for slot in 0..(1 << shift) {
                    assert!(slots.insert(base | slot));
                }
            }
        }
        assert_eq!(slots.len() as u64, entries(shift, cpus));
        assert_eq!(
            slots.iter().max().copied(),
            Some(entries(shift, cpus) as u32 - 1)
        );
    }
}
