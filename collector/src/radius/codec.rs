//! The RADIUS packet (RFC 2865 §3): code, identifier, length, a 16-byte
//! authenticator, then type-length-value attributes. Structure only: what
//! attributes mean is `accounting.rs`'s business, authenticators `auth.rs`'s.

use std::borrow::Cow;

use crate::reader::Reader;

pub const HEADER_LEN: usize = 20;
/// The largest Length a packet may have (RFC 2865 §3).
pub const MAX_LEN: usize = 4096;
pub const AUTHENTICATOR_LEN: usize = 16;
/// An attribute's Length octet counts its 2-byte header.
pub const MAX_VALUE_LEN: usize = 255 - 2;
/// More than any NAS sends; bounds the work and memory of one packet.
pub const MAX_ATTRIBUTES: usize = 255;

/// Why a datagram is not a RADIUS packet; nothing of it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: shorter than the 20-byte header")]
    Short(usize),
    #[error("Length {length} is outside 20..=4096")]
    BadLength { length: u16 },
    #[error("Length {length} is past the {datagram}-byte datagram")]
    Truncated { length: u16, datagram: usize },
    #[error("attribute at byte {offset}: its header is cut off by the packet's end")]
    AttributeTruncated { offset: usize },
    #[error("attribute at byte {offset}: length {length} is below 2 or runs past the packet")]
    AttributeLength { offset: usize, length: u8 },
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
}

impl DecodeError {
    /// Metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Short(_) => "radius_short",
            Self::BadLength { .. } => "radius_bad_length",
            Self::Truncated { .. } => "radius_truncated",
            Self::AttributeTruncated { .. } => "radius_attribute_truncated",
            Self::AttributeLength { .. } => "radius_attribute_length",
            Self::TooManyAttributes => "radius_too_many_attributes",
        }
    }
}

/// Why an attribute cannot be added: the packet would not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("attribute {kind}: a {length}-byte value is longer than {MAX_VALUE_LEN}")]
    ValueTooLong { kind: u8, length: usize },
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("Length {length} would be over {MAX_LEN}")]
    TooLong { length: usize },
}

/// The packet codes of RFC 2865 §3, RFC 2866 §3 and RFC 5176 §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccountingRequest,
    AccountingResponse,
    AccessChallenge,
    StatusServer,
    StatusClient,
    /// RFC 5176 §2: sent by us to a NAS, answered by an ACK or a NAK.
    DisconnectRequest,
    DisconnectAck,
    DisconnectNak,
    CoaRequest,
    CoaAck,
    CoaNak,
    /// Any code not named above (decoding never puts a named one here).
    Other(u8),
}

impl From<u8> for Code {
    fn from(code: u8) -> Self {
        match code {
            1 => Self::AccessRequest,
            2 => Self::AccessAccept,
            3 => Self::AccessReject,
            4 => Self::AccountingRequest,
            5 => Self::AccountingResponse,
            11 => Self::AccessChallenge,
            12 => Self::StatusServer,
            13 => Self::StatusClient,
            40 => Self::DisconnectRequest,
            41 => Self::DisconnectAck,
            42 => Self::DisconnectNak,
            43 => Self::CoaRequest,
            44 => Self::CoaAck,
            45 => Self::CoaNak,
            other => Self::Other(other),
        }
    }
}

impl From<Code> for u8 {
    fn from(code: Code) -> Self {
        match code {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::StatusClient => 13,
            Code::DisconnectRequest => 40,
            Code::DisconnectAck => 41,
            Code::DisconnectNak => 42,
            Code::CoaRequest => 43,
            Code::CoaAck => 44,
            Code::CoaNak => 45,
            Code::Other(other) => other,
        }
    }
}

/// One attribute. Its value is at most [`MAX_VALUE_LEN`] bytes: only
/// [`Packet::decode`] and [`Packet::push`] make attributes, and both check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u8,
    value: Cow<'a, [u8]>,
}

impl Attribute<'_> {
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The attribute's Length octet.
    pub(super) fn length(&self) -> u8 {
        // At most MAX_VALUE_LEN + 2 = 255, checked where attributes are made.
        (self.value.len() + 2) as u8
    }
}

/// A packet whose structure is sound: it encodes to at most [`MAX_LEN`]
/// bytes in at most [`MAX_ATTRIBUTES`] attributes, exactly the packets
/// [`Packet::decode`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; AUTHENTICATOR_LEN],
    attributes: Vec<Attribute<'a>>,
}

impl<'a> Packet<'a> {
    /// A packet without attributes and with a zero authenticator.
    pub fn new(code: Code, identifier: u8) -> Self {
        Self {
            code,
            identifier,
            authenticator: [0; AUTHENTICATOR_LEN],
            attributes: Vec::new(),
        }
    }

    /// Reads a datagram. Bytes past the Length field are padding and
    /// ignored; a datagram shorter than its Length is rejected (RFC 2865
    /// §3), and so is any attribute whose length is below 2 or runs past
    /// Length: the attributes must tile the packet exactly.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut header = Reader::new(datagram);
        let (Some(code), Some(identifier), Some(length), Some(authenticator)) =
            (header.u8(), header.u8(), header.u16(), header.array())
        else {
            return Err(DecodeError::Short(datagram.len()));
        };
        if !(HEADER_LEN..=MAX_LEN).contains(&usize::from(length)) {
            return Err(DecodeError::BadLength { length });
        }
        let truncated = DecodeError::Truncated {
            length,
            datagram: datagram.len(),
        };
        let mut body = header
            .sub(usize::from(length) - HEADER_LEN)
            .ok_or(truncated)?;
        let mut packet = Self {
            code: Code::from(code),
            identifier,
            authenticator,
            attributes: Vec::new(),
        };
        while !body.is_empty() {
            let offset = HEADER_LEN + body.used();
            let (Some(kind), Some(length)) = (body.u8(), body.u8()) else {
                return Err(DecodeError::AttributeTruncated { offset });
            };
            let value = usize::from(length)
                .checked_sub(2)
                .and_then(|n| body.take(n))
                .ok_or(DecodeError::AttributeLength { offset, length })?;
            if packet.attributes.len() == MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            packet.attributes.push(Attribute {
                kind,
                value: Cow::Borrowed(value),
            });
        }
        Ok(packet)
    }

    /// Appends an attribute, unless the packet would then not decode.
    pub fn push(&mut self, kind: u8, value: impl Into<Cow<'a, [u8]>>) -> Result<(), EncodeError> {
        let value = value.into();
        if value.len() > MAX_VALUE_LEN {
            return Err(EncodeError::ValueTooLong {
                kind,
                length: value.len(),
            });
        }
        if self.attributes.len() == MAX_ATTRIBUTES {
            return Err(EncodeError::TooManyAttributes);
        }
        let length = self.length() + 2 + value.len();
        if length > MAX_LEN {
            return Err(EncodeError::TooLong { length });
        }
        self.attributes.push(Attribute { kind, value });
        Ok(())
    }

    pub fn attributes(&self) -> &[Attribute<'a>] {
        &self.attributes
    }

    /// Keeps only the attributes `keep` says: a packet with fewer
    /// attributes than a sound one is sound.
    pub(super) fn retain(&mut self, keep: impl FnMut(&Attribute<'a>) -> bool) {
        self.attributes.retain(keep);
    }

    /// Replaces the value of attribute `index` by one of the same length.
    pub(super) fn fill(&mut self, index: usize, value: [u8; AUTHENTICATOR_LEN]) {
        if let Some(attribute) = self.attributes.get_mut(index)
            && attribute.value.len() == value.len()
        {
            attribute.value = Cow::Owned(value.to_vec());
        }
    }

    /// The Length field: header and attributes, at most [`MAX_LEN`].
    pub fn length(&self) -> usize {
        HEADER_LEN
            + self
                .attributes
                .iter()
                .map(|a| usize::from(a.length()))
                .sum::<usize>()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.length());
        self.write(&self.authenticator, None, |bytes| {
            out.extend_from_slice(bytes)
        });
        out
    }

    /// Writes the packet's encoding to `out` in pieces, with `authenticator`
    /// in the Authenticator field and, if `zeroed` names an attribute, zeros
    /// in place of its value: the input of every RADIUS checksum. The one
    /// place that knows the wire format, so what is hashed is what is sent
    /// (and, for a decoded packet, exactly what was received up to Length).
    pub(super) fn write(
        &self,
        authenticator: &[u8; AUTHENTICATOR_LEN],
        zeroed: Option<usize>,
        mut out: impl FnMut(&[u8]),
    ) {
        // At most MAX_LEN, which fits.
        let length = self.length() as u16;
        out(&[u8::from(self.code), self.identifier]);
        out(&length.to_be_bytes());
        out(authenticator);
        for (i, attribute) in self.attributes.iter().enumerate() {
            out(&[attribute.kind, attribute.length()]);
            if zeroed == Some(i) {
                // Values are at most MAX_VALUE_LEN.
                out(&[0; MAX_VALUE_LEN][..attribute.value.len()]);
            } else {
                out(&attribute.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accounting-Request, id 7, User-Name "alice", Acct-Status-Type Start.
    const REQUEST: [u8; 33] = [
        4, 7, 0, 33, // code, identifier, Length
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, // authenticator
        1, 7, b'a', b'l', b'i', b'c', b'e', // User-Name
        40, 6, 0, 0, 0, 1, // Acct-Status-Type
    ];

    fn with(at: usize, byte: u8) -> Vec<u8> {
        let mut bytes = REQUEST.to_vec();
        bytes[at] = byte;
        bytes
    }

    #[test]
    fn a_packet_decodes_to_its_fields_and_encodes_back_to_its_bytes() {
        let packet = Packet::decode(&REQUEST).unwrap();
        assert_eq!(packet.code, Code::AccountingRequest);
        assert_eq!(packet.identifier, 7);
        assert_eq!(packet.authenticator[0], 1);
        assert_eq!(packet.authenticator[15], 16);
        let attributes: Vec<_> = packet
            .attributes()
            .iter()
            .map(|a| (a.kind, a.value()))
            .collect();
        assert_eq!(attributes, [(1, &b"alice"[..]), (40, &[0, 0, 0, 1][..])]);
        assert_eq!(packet.length(), 33);
        assert_eq!(packet.encode(), REQUEST);
    }

    #[test]
    fn built_packets_decode_to_themselves() {
        let mut packet = Packet::new(Code::Other(250), 9);
        packet.authenticator = [0xaa; 16];
        packet.push(1, &b"bob"[..]).unwrap();
        packet.push(26, vec![0; MAX_VALUE_LEN]).unwrap();
        packet.push(80, &[][..]).unwrap();
        let bytes = packet.encode();
        assert_eq!(bytes.len(), 20 + 5 + 255 + 2);
        assert_eq!(Packet::decode(&bytes).unwrap(), packet);
    }

    #[test]
    fn bytes_past_length_are_padding() {
        let mut padded = REQUEST.to_vec();
        padded.extend_from_slice(&[0xff; 7]);
        assert_eq!(
            Packet::decode(&padded).unwrap(),
            Packet::decode(&REQUEST).unwrap()
        );
        // A Length of 27 leaves Acct-Status-Type outside the packet.
        let short = with(3, 27);
        assert_eq!(Packet::decode(&short).unwrap().attributes().len(), 1);
    }

    #[test]
    fn a_datagram_shorter_than_the_header_is_rejected() {
        for len in [0, 1, 4, 19] {
            assert_eq!(
                Packet::decode(&REQUEST[..len]),
                Err(DecodeError::Short(len))
            );
        }
    }

    #[test]
    fn length_must_be_20_to_4096_and_within_the_datagram() {
        for length in [0u16, 19, 4097, u16::MAX] {
            let mut bytes = REQUEST.to_vec();
            bytes[2..4].copy_from_slice(&length.to_be_bytes());
            assert_eq!(
                Packet::decode(&bytes),
                Err(DecodeError::BadLength { length })
            );
        }
        assert_eq!(
            Packet::decode(&with(3, 34)),
            Err(DecodeError::Truncated {
                length: 34,
                datagram: 33
            })
        );
        assert_eq!(
            Packet::decode(&REQUEST[..32]),
            Err(DecodeError::Truncated {
                length: 33,
                datagram: 32
            })
        );
    }

    #[test]
    fn a_header_only_packet_has_no_attributes() {
        let bytes = with(3, 20);
        let packet = Packet::decode(&bytes).unwrap();
        assert!(packet.attributes().is_empty());
        assert_eq!(packet.length(), HEADER_LEN);
    }

    #[test]
    fn attribute_lengths_below_2_are_malformed() {
        for length in [0, 1] {
            assert_eq!(
                Packet::decode(&with(21, length)),
                Err(DecodeError::AttributeLength { offset: 20, length })
            );
        }
    }

    #[test]
    fn an_attribute_past_the_packet_is_malformed() {
        // Acct-Status-Type claims 7 bytes where 6 are left.
        assert_eq!(
            Packet::decode(&with(28, 7)),
            Err(DecodeError::AttributeLength {
                offset: 27,
                length: 7
            })
        );
        // ... even when the datagram has the byte, as padding.
        let mut padded = with(28, 7);
        padded.push(0);
        assert_eq!(
            Packet::decode(&padded),
            Err(DecodeError::AttributeLength {
                offset: 27,
                length: 7
            })
        );
        // One byte left over: no room for an attribute header.
        let mut odd = REQUEST.to_vec();
        odd.push(1);
        odd[3] = 34;
        assert_eq!(
            Packet::decode(&odd),
            Err(DecodeError::AttributeTruncated { offset: 33 })
        );
    }

    #[test]
    fn more_than_255_attributes_are_too_many() {
        let mut packet = Packet::new(Code::AccountingRequest, 1);
        for _ in 0..MAX_ATTRIBUTES {
            packet.push(33, &[][..]).unwrap();
        }
        let full = packet.encode();
        assert_eq!(Packet::decode(&full).unwrap().attributes().len(), 255);
        assert_eq!(
            packet.push(33, &[][..]),
            Err(EncodeError::TooManyAttributes)
        );
        let mut over = full;
        over.extend_from_slice(&[33, 2]);
        let length = over.len() as u16;
        over[2..4].copy_from_slice(&length.to_be_bytes());
        assert_eq!(Packet::decode(&over), Err(DecodeError::TooManyAttributes));
    }

    #[test]
    fn unknown_codes_are_kept_for_counting() {
        let bytes = with(0, 99);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, Code::Other(99));
        assert_eq!(packet.encode(), bytes);
        for code in 0..=255u8 {
            assert_eq!(u8::from(Code::from(code)), code);
        }
    }

    #[test]
    fn push_refuses_what_would_not_decode() {
        let mut packet = Packet::new(Code::AccountingRequest, 1);
        assert_eq!(
            packet.push(1, vec![0; 254]),
            Err(EncodeError::ValueTooLong {
                kind: 1,
                length: 254
            })
        );
        for _ in 0..15 {
            packet.push(25, vec![0; MAX_VALUE_LEN]).unwrap();
        }
        assert_eq!(packet.length(), 20 + 15 * 255);
        assert_eq!(
            packet.push(25, vec![0; 250]),
            Err(EncodeError::TooLong { length: 4097 })
        );
        packet.push(25, vec![0; 249]).unwrap();
        assert_eq!(packet.length(), MAX_LEN);
        assert_eq!(Packet::decode(&packet.encode()).unwrap(), packet);
    }
}
