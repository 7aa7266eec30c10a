//! Dynamic Authorization (RFC 5176), the client's side: a Disconnect-Request
//! or CoA-Request naming one session, and the NAS's ACK or NAK to it.
//!
//! - A request names its session by User-Name, Acct-Session-Id and the
//!   framed address the session holds (RFC 5176 §3: a NAS matches on all it
//!   is given), carries Event-Timestamp (replay protection, §4.1) and a
//!   Message-Authenticator, first as RFC 3579 §3.2 advises against forged
//!   responses (BlastRADIUS); both authenticators are computed with a zero
//!   Request Authenticator (§3.3), as an Accounting-Request's.
//! - A response counts only if it answers this request: the matching ACK
//!   or NAK code, the same identifier, a Response Authenticator (and any
//!   Message-Authenticator) made with the request's authenticator and the
//!   secret. Anything else is an error the caller counts and ignores.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv6Net;

use super::{
    accounting::prefix_value,
    attributes::{
        ACCT_INTERIM_INTERVAL, ACCT_SESSION_ID, CLASS, ERROR_CAUSE, EVENT_TIMESTAMP, FILTER_ID,
        FRAMED_IP_ADDRESS, FRAMED_IPV6_PREFIX, IDLE_TIMEOUT, MESSAGE_AUTHENTICATOR, NAS_IP_ADDRESS,
        NAS_IPV6_ADDRESS, REPLY_MESSAGE, SESSION_TIMEOUT, USER_NAME,
    },
    auth::AuthError,
    codec::{AUTHENTICATOR_LEN, Code, DecodeError, EncodeError, Packet},
};

/// What the NAS is asked to do with the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// End it (RFC 5176 §3.1).
    Disconnect,
    /// Change its authorisations, e.g. a Filter-Id (RFC 5176 §3.2).
    Coa,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::Coa => "coa",
        }
    }

    const fn request(self) -> Code {
        match self {
            Self::Disconnect => Code::DisconnectRequest,
            Self::Coa => Code::CoaRequest,
        }
    }

    const fn ack(self) -> Code {
        match self {
            Self::Disconnect => Code::DisconnectAck,
            Self::Coa => Code::CoaAck,
        }
    }

    const fn nak(self) -> Code {
        match self {
            Self::Disconnect => Code::DisconnectNak,
            Self::Coa => Code::CoaNak,
        }
    }
}

/// One request for one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub user_name: String,
    pub session_id: String,
    /// NAS-IP-Address or NAS-IPv6-Address, when the session reported one.
    pub nas_ip: Option<IpAddr>,
    pub framed_ip: Option<Ipv4Addr>,
    pub framed_prefix: Option<Ipv6Net>,
    /// Unix seconds.
    pub event_timestamp: u32,
    /// What a CoA changes (type, value), after the identification.
    pub changes: Vec<(u8, Vec<u8>)>,
}

/// A request as sent: its bytes, and the authenticator its response is
/// checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub bytes: Vec<u8>,
    pub authenticator: [u8; AUTHENTICATOR_LEN],
}

impl Request {
    pub fn encode(&self, identifier: u8, secret: &[u8]) -> Result<Sent, EncodeError> {
        let mut packet = Packet::new(self.kind.request(), identifier);
        packet.push(MESSAGE_AUTHENTICATOR, vec![0; AUTHENTICATOR_LEN])?;
        match self.nas_ip {
            Some(IpAddr::V4(ip)) => packet.push(NAS_IP_ADDRESS, ip.octets().to_vec())?,
            Some(IpAddr::V6(ip)) => packet.push(NAS_IPV6_ADDRESS, ip.octets().to_vec())?,
            None => {}
        }
        packet.push(USER_NAME, self.user_name.as_bytes())?;
        packet.push(ACCT_SESSION_ID, self.session_id.as_bytes())?;
        if let Some(ip) = self.framed_ip {
            packet.push(FRAMED_IP_ADDRESS, ip.octets().to_vec())?;
        }
        if let Some(prefix) = self.framed_prefix {
            packet.push(FRAMED_IPV6_PREFIX, prefix_value(prefix))?;
        }
        packet.push(EVENT_TIMESTAMP, self.event_timestamp.to_be_bytes().to_vec())?;
        for (kind, value) in &self.changes {
            packet.push(*kind, &value[..])?;
        }
        packet.sign_request(secret);
        Ok(Sent {
            bytes: packet.encode(),
            authenticator: packet.authenticator,
        })
    }
}

/// The NAS's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    /// Refused, with the Error-Cause when the NAK has one.
    Nak {
        error_cause: Option<u32>,
    },
}

/// Why a datagram is not the answer to a request; it is ignored (and
/// counted): the request is still waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("identifier {got}, the request's is {expected}")]
    Identifier { expected: u8, got: u8 },
    #[error("{0:?} does not answer this request")]
    Code(Code),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Error-Cause of {0} bytes, not 4")]
    ErrorCauseLength(usize),
}

impl ResponseError {
    /// Metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Decode(err) => err.as_str(),
            Self::Identifier { .. } => "coa_identifier",
            Self::Code(_) => "coa_code",
            Self::Auth(err) => err.as_str(),
            Self::ErrorCauseLength(_) => "coa_error_cause_length",
        }
    }
}

/// Reads `datagram` as the answer to the `kind` request `identifier` whose
/// authenticator was `sent`.
pub fn read_response(
    datagram: &[u8],
    kind: Kind,
    identifier: u8,
    sent: &[u8; AUTHENTICATOR_LEN],
    secret: &[u8],
) -> Result<Outcome, ResponseError> {
    let packet = Packet::decode(datagram)?;
    if packet.identifier != identifier {
        return Err(ResponseError::Identifier {
            expected: identifier,
            got: packet.identifier,
        });
    }
    if packet.code != kind.ack() && packet.code != kind.nak() {
        return Err(ResponseError::Code(packet.code));
    }
    packet.verify_response(sent, secret)?;
    if packet.code == kind.ack() {
        return Ok(Outcome::Ack);
    }
    let error_cause = match packet.attributes().iter().find(|a| a.kind == ERROR_CAUSE) {
        None => None,
        Some(a) => {
            Some(u32::from_be_bytes(a.value().try_into().map_err(|_| {
                ResponseError::ErrorCauseLength(a.value().len())
            })?))
        }
    };
    Ok(Outcome::Nak { error_cause })
}

/// The name RFC 5176 §3.5 gives an Error-Cause value.
pub fn error_cause_name(cause: u32) -> &'static str {
    match cause {
        201 => "Residual Session Context Removed",
        202 => "Invalid EAP Packet (Ignored)",
        401 => "Unsupported Attribute",
        402 => "Missing Attribute",
        403 => "NAS Identification Mismatch",
        404 => "Invalid Request",
        405 => "Unsupported Service",
        406 => "Unsupported Extension",
        407 => "Invalid Attribute Value",
        501 => "Administratively Prohibited",
        502 => "Request Not Routable (Proxy)",
        503 => "Session Context Not Found",
        504 => "Session Context Not Removable",
        505 => "Other Proxy Processing Error",
        506 => "Resources Unavailable",
        507 => "Request Initiated",
        508 => "Multiple Session Selection Unsupported",
        _ => "unknown",
    }
}

/// The attributes a CoA may set, by their dictionary names.
const CHANGES: [(&str, u8, Syntax); 6] = [
    ("Filter-Id", FILTER_ID, Syntax::Text),
    ("Reply-Message", REPLY_MESSAGE, Syntax::Text),
    ("Class", CLASS, Syntax::Text),
    ("Session-Timeout", SESSION_TIMEOUT, Syntax::Integer),
    ("Idle-Timeout", IDLE_TIMEOUT, Syntax::Integer),
    (
        "Acct-Interim-Interval",
        ACCT_INTERIM_INTERVAL,
        Syntax::Integer,
    ),
];

#[derive(Clone, Copy)]
enum Syntax {
    Text,
    Integer,
}

/// `name = "value"` of a CoA as an attribute, or why not.
pub fn change(name: &str, value: &str) -> Result<(u8, Vec<u8>), String> {
    let Some(&(_, kind, syntax)) = CHANGES.iter().find(|(n, ..)| *n == name) else {
        let known: Vec<&str> = CHANGES.iter().map(|(n, ..)| *n).collect();
        return Err(format!(
            "{name:?} is not an attribute a CoA can set here (one of {})",
            known.join(", ")
        ));
    };
    let value = match syntax {
        Syntax::Text => value.as_bytes().to_vec(),
        Syntax::Integer => value
            .parse::<u32>()
            .map_err(|_| format!("{name}: {value:?} is not an integer"))?
            .to_be_bytes()
            .to_vec(),
    };
    if value.is_empty() || value.len() > super::codec::MAX_VALUE_LEN {
        return Err(format!("{name}: the value must be 1 to 253 bytes"));
    }
    Ok((kind, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// pyrad 2.6 (`CoAPacket`, `add_message_authenticator`, `RequestPacket`),
    /// secret testing123, identifier 7.
    const PYRAD_DISCONNECT: &str = "280700408664bfde9e62c627c9ab0b880bb4f3955012f8f6d6b33400d240\
        bbc382ddc91ddd2f0107712d626f622c07626f622d310806c612640737066b01b1f0";
    /// pyrad's Disconnect-NAK to it: Error-Cause 503, Message-Authenticator.
    const PYRAD_NAK: &str = "2a07002c45a3e9dd605bb01f133c59abab5663975012145b8a3148452e3889c7\
        a5826c7320cf6506000001f7";
    /// pyrad's Disconnect-ACK to it, without attributes.
    const PYRAD_ACK: &str = "29070014707df3a6cdc771741a64c66f63699bdb";
    /// pyrad, secret s3cret, identifier 200, Filter-Id "throttled".
    const PYRAD_COA: &str = "2bc80045662e3652ceb32d061462a1ddb3aaa46e5012227b8be21b0b0dd8809e\
        d3475ca01e600107712d626f622c07626f622d3137066b01b1f00b0b7468726f74746c6564";

    fn bob(kind: Kind) -> Request {
        Request {
            kind,
            user_name: "q-bob".into(),
            session_id: "bob-1".into(),
            nas_ip: None,
            framed_ip: Some(Ipv4Addr::new(198, 18, 100, 7)),
            framed_prefix: None,
            event_timestamp: 1_795_273_200,
            changes: Vec::new(),
        }
    }

    #[test]
    fn a_disconnect_request_is_byte_for_byte_what_pyrad_sends() {
        let sent = bob(Kind::Disconnect).encode(7, SECRET).unwrap();
        assert_eq!(sent.bytes, hex(PYRAD_DISCONNECT));
        assert_eq!(sent.authenticator[..], sent.bytes[4..20]);
    }

    #[test]
    fn a_coa_request_carries_its_changes_after_the_identification() {
        let request = Request {
            framed_ip: None,
            changes: vec![change("Filter-Id", "throttled").unwrap()],
            ..bob(Kind::Coa)
        };
        assert_eq!(
            request.encode(200, b"s3cret").unwrap().bytes,
            hex(PYRAD_COA)
        );
    }

    #[test]
    fn the_nas_ack_and_nak_with_its_error_cause_are_read() {
        let sent = bob(Kind::Disconnect).encode(7, SECRET).unwrap();
        let read = |bytes: &[u8], secret: &[u8]| {
            read_response(bytes, Kind::Disconnect, 7, &sent.authenticator, secret)
        };
        assert_eq!(read(&hex(PYRAD_ACK), SECRET), Ok(Outcome::Ack));
        assert_eq!(
            read(&hex(PYRAD_NAK), SECRET),
            Ok(Outcome::Nak {
                error_cause: Some(503)
            })
        );
        assert_eq!(error_cause_name(503), "Session Context Not Found");
        assert_eq!(
            read(&hex(PYRAD_ACK), b"wrong"),
            Err(ResponseError::Auth(AuthError::BadAuthenticator))
        );
    }

    #[test]
    fn only_the_answer_to_this_request_counts() {
        let sent = bob(Kind::Disconnect).encode(7, SECRET).unwrap();
        let ack = hex(PYRAD_ACK);
        assert_eq!(
            read_response(&ack, Kind::Disconnect, 8, &sent.authenticator, SECRET),
            Err(ResponseError::Identifier {
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            read_response(&ack, Kind::Coa, 7, &sent.authenticator, SECRET),
            Err(ResponseError::Code(Code::DisconnectAck))
        );
        let other = bob(Kind::Disconnect).encode(9, SECRET).unwrap();
        assert_eq!(
            read_response(&ack, Kind::Disconnect, 7, &other.authenticator, SECRET),
            Err(ResponseError::Auth(AuthError::BadAuthenticator)),
            "an answer to another request"
        );
        let mut forged = hex(PYRAD_NAK);
        forged[43] = 0xf8; // Error-Cause 504: the Message-Authenticator no longer matches
        assert!(read_response(&forged, Kind::Disconnect, 7, &sent.authenticator, SECRET).is_err());
        assert_eq!(
            read_response(&ack[..10], Kind::Disconnect, 7, &sent.authenticator, SECRET),
            Err(ResponseError::Decode(DecodeError::Short(10)))
        );
    }

    #[test]
    fn the_framed_prefix_and_nas_address_identify_the_session_too() {
        let request = Request {
            nas_ip: Some("192.0.2.1".parse().unwrap()),
            framed_prefix: Some("2001:db8:7::/48".parse().unwrap()),
            ..bob(Kind::Disconnect)
        };
        let sent = request.encode(1, SECRET).unwrap();
        let packet = Packet::decode(&sent.bytes).unwrap();
        let kinds: Vec<u8> = packet.attributes().iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                MESSAGE_AUTHENTICATOR,
                NAS_IP_ADDRESS,
                USER_NAME,
                ACCT_SESSION_ID,
                FRAMED_IP_ADDRESS,
                FRAMED_IPV6_PREFIX,
                EVENT_TIMESTAMP
            ]
        );
        assert_eq!(
            packet.attributes()[5].value(),
            [0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 7]
        );
        // What a NAS checks: the Request Authenticator over zeros.
        let mut zeroed = sent.bytes.clone();
        zeroed[4..20].fill(0);
        zeroed.extend_from_slice(SECRET);
        use md5::{Digest, Md5};
        assert_eq!(Md5::digest(&zeroed)[..], sent.authenticator[..]);
    }

    #[test]
    fn coa_changes_are_named_as_in_the_dictionary() {
        assert_eq!(
            change("Filter-Id", "throttled"),
            Ok((FILTER_ID, b"throttled".to_vec()))
        );
        assert_eq!(
            change("Session-Timeout", "60"),
            Ok((SESSION_TIMEOUT, vec![0, 0, 0, 60]))
        );
        assert!(
            change("Session-Timeout", "soon")
                .unwrap_err()
                .contains("integer")
        );
        assert!(change("Filter-ID", "x").unwrap_err().contains("Filter-Id"));
        assert!(change("Filter-Id", "").is_err());
    }
}
