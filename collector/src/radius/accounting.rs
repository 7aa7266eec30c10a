//! The typed view of an Accounting-Request (RFC 2866) that session history
//! needs, and the way back: requests built from it, for tests, benchmarks
//! and load generation.
//!
//! Each attribute must have its type's length, or the request is refused
//! with an error that names it: a billing record is better lost (and
//! counted) than guessed at. Attributes not read here are ignored (RFC
//! 2865 §5 lets a server ignore types it does not know). Text that is not
//! UTF-8 is an error too (RFC 2865 §5 says text is UTF-8): a lossy
//! conversion could merge two user names or session ids into one and bill
//! one subscriber for another's traffic.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use super::{
    attributes::*,
    codec::{Attribute, Code, EncodeError, Packet},
};
use crate::reader::Reader;

/// Acct-Status-Type (RFC 2866 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusType {
    Start,
    Stop,
    InterimUpdate,
    AccountingOn,
    AccountingOff,
    /// Any value not named above (decoding never puts a named one here).
    Other(u32),
}

impl From<u32> for StatusType {
    fn from(value: u32) -> Self {
        match value {
            1 => Self::Start,
            2 => Self::Stop,
            3 => Self::InterimUpdate,
            7 => Self::AccountingOn,
            8 => Self::AccountingOff,
            other => Self::Other(other),
        }
    }
}

impl From<StatusType> for u32 {
    fn from(status: StatusType) -> Self {
        match status {
            StatusType::Start => 1,
            StatusType::Stop => 2,
            StatusType::InterimUpdate => 3,
            StatusType::AccountingOn => 7,
            StatusType::AccountingOff => 8,
            StatusType::Other(other) => other,
        }
    }
}

/// A Vendor-Specific attribute, uninterpreted (RFC 2865 §5.26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorSpecific {
    /// The vendor's SMI Network Management Private Enterprise Code.
    pub vendor_id: u32,
    /// Everything after the vendor id; never empty.
    pub data: Vec<u8>,
}

/// What an Accounting-Request says about a session. Counters combine
/// their octets and gigawords attributes; everything else is one
/// attribute, absent when the NAS did not send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountingRequest {
    pub status: StatusType,
    pub user_name: Option<String>,
    pub session_id: Option<String>,
    pub framed_ip: Option<Ipv4Addr>,
    /// Host bits are cleared.
    pub framed_ipv6_prefix: Option<Ipv6Net>,
    pub framed_ipv6_address: Option<Ipv6Addr>,
    /// Host bits are cleared.
    pub delegated_ipv6_prefix: Option<Ipv6Net>,
    /// When the event happened at the NAS, Unix seconds.
    pub event_timestamp: Option<u32>,
    /// Seconds the NAS has been trying to send this request.
    pub delay_time: Option<u32>,
    pub nas_ip: Option<Ipv4Addr>,
    pub nas_ipv6: Option<Ipv6Addr>,
    pub nas_identifier: Option<String>,
    pub nas_port: Option<u32>,
    pub nas_port_id: Option<String>,
    pub calling_station_id: Option<String>,
    /// Every Class attribute, in order.
    pub class: Vec<Vec<u8>>,
    /// Acct-Input-Octets + 2³² × Acct-Input-Gigawords.
    pub input_octets: Option<u64>,
    /// Acct-Output-Octets + 2³² × Acct-Output-Gigawords.
    pub output_octets: Option<u64>,
    /// Seconds.
    pub session_time: Option<u32>,
    pub terminate_cause: Option<u32>,
    /// Seconds between the NAS's interim updates: how long a session may
    /// stay silent before it is presumed gone.
    pub interim_interval: Option<u32>,
    /// Every Vendor-Specific attribute, in order.
    pub vendor_specific: Vec<VendorSpecific>,
}

/// Why a sound packet is not an Accounting-Request this server can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountingError {
    #[error("{0:?} where an Accounting-Request was expected")]
    NotAccountingRequest(Code),
    #[error("no Acct-Status-Type")]
    MissingStatusType,
    #[error("attribute {kind} appears more than once")]
    Duplicate { kind: u8 },
    #[error("attribute {kind}: length {length} does not fit its type")]
    BadAttribute { kind: u8, length: u8 },
    #[error("attribute {kind}: prefix length {prefix_len} is over 128 or longer than the prefix")]
    BadPrefix { kind: u8, prefix_len: u8 },
    #[error("attribute {kind}: text that is not UTF-8")]
    NotUtf8 { kind: u8 },
}

impl AccountingError {
    /// Metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::NotAccountingRequest(_) => "radius_not_accounting_request",
            Self::MissingStatusType => "radius_missing_status_type",
            Self::Duplicate { .. } => "radius_duplicate_attribute",
            Self::BadAttribute { .. } => "radius_bad_attribute",
            Self::BadPrefix { .. } => "radius_bad_prefix",
            Self::NotUtf8 { .. } => "radius_not_utf8",
        }
    }
}

impl AccountingRequest {
    /// A request that says nothing but its status.
    pub fn new(status: StatusType) -> Self {
        Self {
            status,
            user_name: None,
            session_id: None,
            framed_ip: None,
            framed_ipv6_prefix: None,
            framed_ipv6_address: None,
            delegated_ipv6_prefix: None,
            event_timestamp: None,
            delay_time: None,
            nas_ip: None,
            nas_ipv6: None,
            nas_identifier: None,
            nas_port: None,
            nas_port_id: None,
            calling_station_id: None,
            class: Vec::new(),
            input_octets: None,
            output_octets: None,
            session_time: None,
            terminate_cause: None,
            interim_interval: None,
            vendor_specific: Vec::new(),
        }
    }

    /// Reads a decoded packet. Check its authenticators first
    /// ([`Packet::verify_accounting_request`]): nothing here does.
    pub fn from_packet(packet: &Packet<'_>) -> Result<Self, AccountingError> {
        if packet.code != Code::AccountingRequest {
            return Err(AccountingError::NotAccountingRequest(packet.code));
        }
        // The status is a placeholder until the attribute is found.
        let mut request = Self::new(StatusType::Start);
        let mut status = None;
        let mut input = Counter::default();
        let mut output = Counter::default();
        for a in packet.attributes() {
            let kind = a.kind;
            match kind {
                ACCT_STATUS_TYPE => once(&mut status, kind, integer(a)?.into())?,
                USER_NAME => once(&mut request.user_name, kind, text(a)?)?,
                ACCT_SESSION_ID => once(&mut request.session_id, kind, text(a)?)?,
                FRAMED_IP_ADDRESS => once(&mut request.framed_ip, kind, fixed(a)?.into())?,
                FRAMED_IPV6_PREFIX => once(&mut request.framed_ipv6_prefix, kind, prefix(a)?)?,
                FRAMED_IPV6_ADDRESS => {
                    once(&mut request.framed_ipv6_address, kind, fixed(a)?.into())?
                }
                DELEGATED_IPV6_PREFIX => {
                    once(&mut request.delegated_ipv6_prefix, kind, prefix(a)?)?
                }
                EVENT_TIMESTAMP => once(&mut request.event_timestamp, kind, integer(a)?)?,
                ACCT_DELAY_TIME => once(&mut request.delay_time, kind, integer(a)?)?,
                NAS_IP_ADDRESS => once(&mut request.nas_ip, kind, fixed(a)?.into())?,
                NAS_IPV6_ADDRESS => once(&mut request.nas_ipv6, kind, fixed(a)?.into())?,
                NAS_IDENTIFIER => once(&mut request.nas_identifier, kind, text(a)?)?,
                NAS_PORT => once(&mut request.nas_port, kind, integer(a)?)?,
                NAS_PORT_ID => once(&mut request.nas_port_id, kind, text(a)?)?,
                CALLING_STATION_ID => once(&mut request.calling_station_id, kind, text(a)?)?,
                CLASS => request.class.push(string(a)?.to_vec()),
                ACCT_INPUT_OCTETS => once(&mut input.octets, kind, integer(a)?)?,
                ACCT_INPUT_GIGAWORDS => once(&mut input.gigawords, kind, integer(a)?)?,
                ACCT_OUTPUT_OCTETS => once(&mut output.octets, kind, integer(a)?)?,
                ACCT_OUTPUT_GIGAWORDS => once(&mut output.gigawords, kind, integer(a)?)?,
                ACCT_SESSION_TIME => once(&mut request.session_time, kind, integer(a)?)?,
                ACCT_TERMINATE_CAUSE => once(&mut request.terminate_cause, kind, integer(a)?)?,
                ACCT_INTERIM_INTERVAL => once(&mut request.interim_interval, kind, integer(a)?)?,
                VENDOR_SPECIFIC => request.vendor_specific.push(vendor_specific(a)?),
                _ => {}
            }
        }
        request.status = status.ok_or(AccountingError::MissingStatusType)?;
        request.input_octets = input.total();
        request.output_octets = output.total();
        Ok(request)
    }

    /// The request as a packet with a zero authenticator; see
    /// [`Packet::sign_request`]. Prefixes are sent with as many
    /// bytes as their length needs.
    pub fn to_packet(&self, identifier: u8) -> Result<Packet<'_>, EncodeError> {
        let mut packet = Packet::new(Code::AccountingRequest, identifier);
        let integer = |value: u32| value.to_be_bytes().to_vec();
        let fields = [
            (ACCT_STATUS_TYPE, Some(integer(self.status.into()))),
            (EVENT_TIMESTAMP, self.event_timestamp.map(integer)),
            (ACCT_DELAY_TIME, self.delay_time.map(integer)),
            (NAS_IP_ADDRESS, self.nas_ip.map(|a| a.octets().to_vec())),
            (NAS_IPV6_ADDRESS, self.nas_ipv6.map(|a| a.octets().to_vec())),
            (NAS_PORT, self.nas_port.map(integer)),
            (
                FRAMED_IP_ADDRESS,
                self.framed_ip.map(|a| a.octets().to_vec()),
            ),
            (
                FRAMED_IPV6_ADDRESS,
                self.framed_ipv6_address.map(|a| a.octets().to_vec()),
            ),
            (
                FRAMED_IPV6_PREFIX,
                self.framed_ipv6_prefix.map(prefix_value),
            ),
            (
                DELEGATED_IPV6_PREFIX,
                self.delegated_ipv6_prefix.map(prefix_value),
            ),
            (ACCT_SESSION_TIME, self.session_time.map(integer)),
            (ACCT_TERMINATE_CAUSE, self.terminate_cause.map(integer)),
            (ACCT_INTERIM_INTERVAL, self.interim_interval.map(integer)),
        ];
        for (kind, value) in fields {
            if let Some(value) = value {
                packet.push(kind, value)?;
            }
        }
        let texts = [
            (USER_NAME, &self.user_name),
            (ACCT_SESSION_ID, &self.session_id),
            (NAS_IDENTIFIER, &self.nas_identifier),
            (NAS_PORT_ID, &self.nas_port_id),
            (CALLING_STATION_ID, &self.calling_station_id),
        ];
        for (kind, text) in texts {
            if let Some(text) = text {
                packet.push(kind, text.as_bytes())?;
            }
        }
        let counters = [
            (ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS, self.input_octets),
            (
                ACCT_OUTPUT_OCTETS,
                ACCT_OUTPUT_GIGAWORDS,
                self.output_octets,
            ),
        ];
        for (octets, gigawords, total) in counters {
            let Some(total) = total else { continue };
            let (high, low) = ((total >> 32) as u32, total as u32);
            // The fewest attributes that carry the value, so that a decoded
            // request always re-encodes within the limits it came in.
            if low != 0 || high == 0 {
                packet.push(octets, integer(low))?;
            }
            if high != 0 {
                packet.push(gigawords, integer(high))?;
            }
        }
        for class in &self.class {
            packet.push(CLASS, &class[..])?;
        }
        for vsa in &self.vendor_specific {
            packet.push(
                VENDOR_SPECIFIC,
                [&vsa.vendor_id.to_be_bytes()[..], &vsa.data].concat(),
            )?;
        }
        Ok(packet)
    }

    /// The request's bytes, Request Authenticator computed.
    pub fn encode(&self, identifier: u8, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let mut packet = self.to_packet(identifier)?;
        packet.sign_request(secret);
        Ok(packet.encode())
    }
}

/// A 64-bit counter sent as two 32-bit halves (RFC 2869 §5.1, §5.2).
#[derive(Default)]
struct Counter {
    octets: Option<u32>,
    gigawords: Option<u32>,
}

impl Counter {
    /// Either half alone counts, the other taken as zero.
    fn total(&self) -> Option<u64> {
        if self.octets.is_none() && self.gigawords.is_none() {
            return None;
        }
        let high = u64::from(self.gigawords.unwrap_or(0));
        let low = u64::from(self.octets.unwrap_or(0));
        Some(high << 32 | low)
    }
}

/// Sets an attribute that may appear at most once: with two, which one
/// the NAS meant is a guess.
fn once<T>(slot: &mut Option<T>, kind: u8, value: T) -> Result<(), AccountingError> {
    if slot.is_some() {
        return Err(AccountingError::Duplicate { kind });
    }
    *slot = Some(value);
    Ok(())
}

fn bad(a: &Attribute<'_>) -> AccountingError {
    AccountingError::BadAttribute {
        kind: a.kind,
        length: a.length(),
    }
}

/// integer, ipv4addr and ipv6addr values have exactly their size.
fn fixed<const N: usize>(a: &Attribute<'_>) -> Result<[u8; N], AccountingError> {
    a.value().try_into().map_err(|_| bad(a))
}

fn integer(a: &Attribute<'_>) -> Result<u32, AccountingError> {
    fixed(a).map(u32::from_be_bytes)
}

/// Empty strings must not be sent (RFC 2865 §5): the attribute is omitted.
fn string<'v>(a: &'v Attribute<'_>) -> Result<&'v [u8], AccountingError> {
    match a.value() {
        [] => Err(bad(a)),
        value => Ok(value),
    }
}

fn text(a: &Attribute<'_>) -> Result<String, AccountingError> {
    let text =
        std::str::from_utf8(string(a)?).map_err(|_| AccountingError::NotUtf8 { kind: a.kind })?;
    Ok(text.to_owned())
}

/// Reserved byte (ignored), prefix length, then as many prefix bytes as
/// the sender chose, up to 16 (RFC 3162 §2.3, RFC 8044 §3.10); bits past
/// the prefix length are cleared.
fn prefix(a: &Attribute<'_>) -> Result<Ipv6Net, AccountingError> {
    let mut value = Reader::new(a.value());
    let (Some(_reserved), Some(prefix_len)) = (value.u8(), value.u8()) else {
        return Err(bad(a));
    };
    let bytes = value.rest();
    if bytes.len() > 16 {
        return Err(bad(a));
    }
    let bad_prefix = AccountingError::BadPrefix {
        kind: a.kind,
        prefix_len,
    };
    if usize::from(prefix_len) > 8 * bytes.len() {
        return Err(bad_prefix);
    }
    let mut octets = [0; 16];
    for (octet, byte) in octets.iter_mut().zip(bytes) {
        *octet = *byte;
    }
    Ipv6Net::new(octets.into(), prefix_len)
        .map(|net| net.trunc())
        .map_err(|_| bad_prefix)
}

/// ipv6prefix (RFC 3162 §2.3): reserved, length, the bytes it needs.
pub(super) fn prefix_value(net: Ipv6Net) -> Vec<u8> {
    let bytes = usize::from(net.prefix_len()).div_ceil(8);
    let mut value = vec![0, net.prefix_len()];
    value.extend(net.network().octets().iter().take(bytes));
    value
}

/// Vendor id, then at least one byte (RFC 2865 §5.26: Length ≥ 7).
fn vendor_specific(a: &Attribute<'_>) -> Result<VendorSpecific, AccountingError> {
    let mut value = Reader::new(a.value());
    let vendor_id = value.u32().ok_or_else(|| bad(a))?;
    let data = value.rest();
    if data.is_empty() {
        return Err(bad(a));
    }
    Ok(VendorSpecific {
        vendor_id,
        data: data.to_vec(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    /// A Stop that carries every attribute the view reads.
    pub(in crate::radius) fn full_request() -> AccountingRequest {
        AccountingRequest {
            user_name: Some("alice@isp.example".into()),
            session_id: Some("5f3a-0001".into()),
            framed_ip: Some(Ipv4Addr::new(100, 64, 0, 7)),
            framed_ipv6_prefix: Some("2001:db8:5:1::/64".parse().unwrap()),
            framed_ipv6_address: Some("2001:db8:5:1::7".parse().unwrap()),
            delegated_ipv6_prefix: Some("2001:db8:1200:3400::/56".parse().unwrap()),
            event_timestamp: Some(1_700_000_000),
            delay_time: Some(2),
            nas_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
            nas_ipv6: Some("2001:db8::1".parse().unwrap()),
            nas_identifier: Some("bras-1".into()),
            nas_port: Some(4242),
            nas_port_id: Some("eth0.100:200".into()),
            calling_station_id: Some("00-11-22-33-44-55".into()),
            class: vec![b"plan=gold".to_vec(), vec![0, 1, 2]],
            input_octets: Some(5 << 32 | 1234),
            output_octets: Some(u64::from(u32::MAX)),
            session_time: Some(3600),
            terminate_cause: Some(1),
            interim_interval: Some(300),
            vendor_specific: vec![VendorSpecific {
                vendor_id: 9,
                data: b"\x01\x13ip:addr-pool=main".to_vec(),
            }],
            ..AccountingRequest::new(StatusType::Stop)
        }
    }

    /// (type, value) pairs.
    type Attributes<'a> = &'a [(u8, &'a [u8])];

    /// A request of `attributes`, status Start unless given.
    fn request_with(attributes: Attributes<'_>) -> Vec<u8> {
        let mut packet = Packet::new(Code::AccountingRequest, 1);
        if !attributes.iter().any(|(kind, _)| *kind == ACCT_STATUS_TYPE) {
            packet.push(ACCT_STATUS_TYPE, &[0, 0, 0, 1][..]).unwrap();
        }
        for (kind, value) in attributes {
            packet.push(*kind, *value).unwrap();
        }
        packet.sign_request(SECRET);
        packet.encode()
    }

    fn read(bytes: &[u8]) -> Result<AccountingRequest, AccountingError> {
        AccountingRequest::from_packet(&Packet::decode(bytes).unwrap())
    }

    #[test]
    fn an_encoded_request_verifies_and_reads_back_the_same() {
        let request = full_request();
        let bytes = request.encode(42, SECRET).unwrap();
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.identifier, 42);
        assert_eq!(packet.verify_accounting_request(SECRET), Ok(()));
        assert_eq!(AccountingRequest::from_packet(&packet), Ok(request));
    }

    #[test]
    fn a_status_alone_is_a_request() {
        for (value, status) in [
            (1, StatusType::Start),
            (2, StatusType::Stop),
            (3, StatusType::InterimUpdate),
            (7, StatusType::AccountingOn),
            (8, StatusType::AccountingOff),
            (15, StatusType::Other(15)),
        ] {
            let bytes = request_with(&[(ACCT_STATUS_TYPE, &u32::to_be_bytes(value))]);
            assert_eq!(read(&bytes), Ok(AccountingRequest::new(status)));
            assert_eq!(u32::from(status), value);
        }
    }

    #[test]
    fn a_request_without_status_type_is_refused() {
        let mut packet = Packet::new(Code::AccountingRequest, 1);
        packet.push(USER_NAME, &b"alice"[..]).unwrap();
        assert_eq!(
            AccountingRequest::from_packet(&packet),
            Err(AccountingError::MissingStatusType)
        );
    }

    #[test]
    fn only_accounting_requests_are_read() {
        let request = full_request();
        let mut packet = request.to_packet(1).unwrap();
        packet.code = Code::AccessRequest;
        assert_eq!(
            AccountingRequest::from_packet(&packet),
            Err(AccountingError::NotAccountingRequest(Code::AccessRequest))
        );
    }

    #[test]
    fn gigawords_are_the_high_half_of_a_counter() {
        let cases: [(Attributes<'_>, Option<u64>); 4] = [
            (&[], None),
            (&[(ACCT_INPUT_OCTETS, &[0, 0, 0, 7])], Some(7)),
            (&[(ACCT_INPUT_GIGAWORDS, &[0, 0, 0, 2])], Some(2 << 32)),
            (
                &[
                    (ACCT_INPUT_GIGAWORDS, &[0, 0, 0, 3]),
                    (ACCT_INPUT_OCTETS, &[0xff, 0xff, 0xff, 0xff]),
                ],
                Some(3 << 32 | 0xffff_ffff),
            ),
        ];
        for (attributes, input) in cases {
            assert_eq!(read(&request_with(attributes)).unwrap().input_octets, input);
        }
        let output = request_with(&[
            (ACCT_OUTPUT_OCTETS, &[0, 0, 1, 0]),
            (ACCT_OUTPUT_GIGAWORDS, &[0, 0, 0, 1]),
        ]);
        assert_eq!(read(&output).unwrap().output_octets, Some(1 << 32 | 256));
    }

    #[test]
    fn counters_are_sent_as_their_nonzero_halves() {
        let attributes = |input: u64| {
            let request = AccountingRequest {
                input_octets: Some(input),
                ..AccountingRequest::new(StatusType::InterimUpdate)
            };
            let packet = request.to_packet(1).unwrap();
            packet
                .attributes()
                .iter()
                .skip(1)
                .map(|a| (a.kind, u32::from_be_bytes(a.value().try_into().unwrap())))
                .collect::<Vec<_>>()
        };
        assert_eq!(attributes(0), [(ACCT_INPUT_OCTETS, 0)]);
        assert_eq!(attributes(9), [(ACCT_INPUT_OCTETS, 9)]);
        assert_eq!(attributes(4 << 32), [(ACCT_INPUT_GIGAWORDS, 4)]);
        assert_eq!(
            attributes(4 << 32 | 9),
            [(ACCT_INPUT_OCTETS, 9), (ACCT_INPUT_GIGAWORDS, 4)]
        );
    }

    #[test]
    fn ipv6_prefixes_carry_as_many_bytes_as_the_sender_chose() {
        let slash56: Ipv6Net = "2001:db8:1200:3400::/56".parse().unwrap();
        let network = slash56.network().octets();
        for bytes in [7, 8, 16] {
            let mut value = vec![0, 56];
            value.extend_from_slice(&network[..bytes]);
            let request = read(&request_with(&[(DELEGATED_IPV6_PREFIX, &value)])).unwrap();
            assert_eq!(
                request.delegated_ipv6_prefix,
                Some(slash56),
                "{bytes} bytes"
            );
        }
        let everything = read(&request_with(&[(FRAMED_IPV6_PREFIX, &[0, 0])])).unwrap();
        assert_eq!(everything.framed_ipv6_prefix, Some(Ipv6Net::default()));
        // Sent with 7 bytes, the fewest that hold 56 bits.
        let request = AccountingRequest {
            delegated_ipv6_prefix: Some(slash56),
            ..AccountingRequest::new(StatusType::Start)
        };
        let packet = request.to_packet(1).unwrap();
        assert_eq!(
            packet.attributes()[1].value(),
            [&[0, 56], &network[..7]].concat()
        );
    }

    #[test]
    fn bits_past_the_prefix_length_are_cleared() {
        let value = [0xff, 60, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x0f, 0xff];
        let request = read(&request_with(&[(FRAMED_IPV6_PREFIX, &value)])).unwrap();
        assert_eq!(
            request.framed_ipv6_prefix,
            Some("2001:db8::/60".parse().unwrap()),
            "and the reserved byte is ignored"
        );
    }

    #[test]
    fn a_prefix_longer_than_128_or_than_its_bytes_is_refused() {
        for (value, prefix_len) in [
            (&[0, 129][..], 129),
            (&[0, 64, 0x20, 1, 0xd, 0xb8, 0, 0, 0][..], 64),
        ] {
            assert_eq!(
                read(&request_with(&[(FRAMED_IPV6_PREFIX, value)])),
                Err(AccountingError::BadPrefix {
                    kind: FRAMED_IPV6_PREFIX,
                    prefix_len
                })
            );
        }
        for value in [&[0][..], &[0; 19][..]] {
            assert_eq!(
                read(&request_with(&[(DELEGATED_IPV6_PREFIX, value)])),
                Err(AccountingError::BadAttribute {
                    kind: DELEGATED_IPV6_PREFIX,
                    length: value.len() as u8 + 2
                })
            );
        }
    }

    #[test]
    fn attributes_of_the_wrong_length_for_their_type_are_refused() {
        let cases: [(u8, &[u8]); 12] = [
            (ACCT_STATUS_TYPE, &[0, 0, 1]),
            (NAS_PORT, &[0, 0, 0, 0, 1]),
            (ACCT_INPUT_OCTETS, &[]),
            (ACCT_INTERIM_INTERVAL, &[0, 0, 1, 0x2c, 0]),
            (FRAMED_IP_ADDRESS, &[100, 64, 0]),
            (NAS_IP_ADDRESS, &[198, 18, 0, 1, 0]),
            (NAS_IPV6_ADDRESS, &[0; 15]),
            (FRAMED_IPV6_ADDRESS, &[0; 17]),
            (USER_NAME, &[]),
            (ACCT_SESSION_ID, &[]),
            (CLASS, &[]),
            (VENDOR_SPECIFIC, &[0, 0, 0, 9]),
        ];
        for (kind, value) in cases {
            assert_eq!(
                read(&request_with(&[(kind, value)])),
                Err(AccountingError::BadAttribute {
                    kind,
                    length: value.len() as u8 + 2
                }),
                "attribute {kind} with {} bytes",
                value.len()
            );
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        for kind in [
            USER_NAME,
            ACCT_SESSION_ID,
            NAS_IDENTIFIER,
            NAS_PORT_ID,
            CALLING_STATION_ID,
        ] {
            assert_eq!(
                read(&request_with(&[(kind, b"caf\xe9")])),
                Err(AccountingError::NotUtf8 { kind })
            );
        }
        let request = read(&request_with(&[(USER_NAME, "café".as_bytes())])).unwrap();
        assert_eq!(request.user_name.as_deref(), Some("café"));
    }

    #[test]
    fn a_single_valued_attribute_sent_twice_is_refused() {
        let bytes = request_with(&[(USER_NAME, b"alice"), (USER_NAME, b"bob")]);
        assert_eq!(
            read(&bytes),
            Err(AccountingError::Duplicate { kind: USER_NAME })
        );
        let bytes = request_with(&[
            (ACCT_STATUS_TYPE, &[0, 0, 0, 1]),
            (ACCT_STATUS_TYPE, &[0, 0, 0, 2]),
        ]);
        assert_eq!(
            read(&bytes),
            Err(AccountingError::Duplicate {
                kind: ACCT_STATUS_TYPE
            })
        );
    }

    #[test]
    fn class_and_vendor_specific_may_repeat_and_keep_their_order() {
        let bytes = request_with(&[
            (CLASS, b"b"),
            (VENDOR_SPECIFIC, &[0, 0, 0x0d, 0xe9, 1, 2]),
            (CLASS, b"a"),
            (VENDOR_SPECIFIC, &[0, 0, 0, 9, 3]),
        ]);
        let request = read(&bytes).unwrap();
        assert_eq!(request.class, [b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(
            request.vendor_specific,
            [
                VendorSpecific {
                    vendor_id: 3561,
                    data: vec![1, 2]
                },
                VendorSpecific {
                    vendor_id: 9,
                    data: vec![3]
                }
            ]
        );
    }

    #[test]
    fn attributes_the_view_does_not_read_are_ignored() {
        // Acct-Authentic, Service-Type, an unassigned type, and an empty one.
        let bytes = request_with(&[
            (45, &[0, 0, 0, 1]),
            (6, &[0, 0, 0, 2]),
            (250, b"x"),
            (30, b""),
        ]);
        assert_eq!(read(&bytes), Ok(AccountingRequest::new(StatusType::Start)));
    }
}
