//! A small deterministic generator (xorshift64) for tests, benchmarks, fuzz
//! mutations and load generation: the same seed gives the same numbers on
//! every run and machine, with no dependency. Not for anything secret.

#[derive(Clone, Debug)]
pub struct Rng(pub u64);

/// The seed must not be 0, xorshift's one fixed point.
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0..n` (modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index into a collection of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}
