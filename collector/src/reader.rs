//! Bounded reading for every wire codec, in the manner of rustls's `codec::Reader`: every read is
//! checked against the slice, and [`Reader::sub`] hands out a reader that
//! ends where a length field says, so nothing read through it can reach
//! past that length.

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// The next `n` bytes, or `None` (and nothing consumed) if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array().map(|[byte]| byte)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// A reader over the next `n` bytes, which this one skips.
    pub(crate) fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        self.take(n).map(Reader::new)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        self.at = self.buf.len();
        rest
    }

    /// Bytes not yet consumed.
    pub(crate) const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    /// Bytes consumed so far.
    pub(crate) const fn used(&self) -> usize {
        self.at
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.used(), 2);
        assert_eq!(r.rest(), [3]);
        assert!(r.is_empty());
        assert_eq!(r.rest(), [] as [u8; 0]);
    }

    #[test]
    fn a_sub_reader_ends_at_its_length() {
        let mut r = Reader::new(&[1, 2, 3, 4]);
        let mut sub = r.sub(2).unwrap();
        assert_eq!(sub.u8(), Some(1));
        assert_eq!(sub.u16(), None, "byte 3 is past the sub-reader's end");
        assert_eq!(sub.rest(), [2]);
        assert_eq!(r.u16(), Some(0x0304));
        assert!(r.sub(1).is_none());
        assert!(r.take(usize::MAX).is_none());
    }
}
