//! Authenticators: the Request Authenticator of an Accounting-Request (RFC
//! 2866 §3), the Response Authenticator (RFC 2865 §3, RFC 2866 §3) and the
//! Message-Authenticator attribute (RFC 2869 §5.14, RFC 3579 §3.2).

use hmac::{
    Hmac, KeyInit, Mac,
    digest::{CtOutput, Output},
};
use md5::{Digest, Md5};

use super::{
    attributes::{MESSAGE_AUTHENTICATOR, PROXY_STATE},
    codec::{AUTHENTICATOR_LEN, Code, Packet},
};

type HmacMd5 = Hmac<Md5>;

/// An Accounting-Request's authenticator is computed with zeros in its
/// place (RFC 2866 §3), and so is its Message-Authenticator.
const ZERO: [u8; AUTHENTICATOR_LEN] = [0; AUTHENTICATOR_LEN];

/// Why a packet is not taken as coming from a client that knows the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0:?} where an Accounting-Request was expected")]
    NotAccountingRequest(Code),
    #[error("the authenticator does not match the packet and secret")]
    BadAuthenticator,
    #[error("the Message-Authenticator does not match the packet and secret")]
    BadMessageAuthenticator,
    #[error("Message-Authenticator of length {length}, not 18")]
    MessageAuthenticatorLength { length: u8 },
    #[error("more than one Message-Authenticator")]
    DuplicateMessageAuthenticator,
}

impl AuthError {
    /// Metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::NotAccountingRequest(_) => "radius_not_accounting_request",
            Self::BadAuthenticator => "radius_bad_authenticator",
            Self::BadMessageAuthenticator => "radius_bad_message_authenticator",
            Self::MessageAuthenticatorLength { .. } => "radius_message_authenticator_length",
            Self::DuplicateMessageAuthenticator => "radius_duplicate_message_authenticator",
        }
    }
}

impl Packet<'_> {
    /// Checks an Accounting-Request: its Request Authenticator, and its
    /// Message-Authenticator when it has one. Both comparisons take the
    /// same time however many bytes match.
    pub fn verify_accounting_request(&self, secret: &[u8]) -> Result<(), AuthError> {
        if self.code != Code::AccountingRequest {
            return Err(AuthError::NotAccountingRequest(self.code));
        }
        let expected = self.checksum(&ZERO, secret);
        if CtOutput::<Md5>::new(expected) != CtOutput::new(self.authenticator.into()) {
            return Err(AuthError::BadAuthenticator);
        }
        self.verify_message_authenticator(&ZERO, secret)
    }

    /// Fills in the authenticators of an Accounting-Request, CoA-Request
    /// or Disconnect-Request (RFC 5176 §3.3 computes them as RFC 2866
    /// does): first its Message-Authenticator, if it has one with a
    /// 16-byte value (zeros will do), then the Request Authenticator,
    /// which covers it.
    pub fn sign_request(&mut self, secret: &[u8]) {
        if let Some(index) = self.message_authenticator() {
            let tag = self.message_authenticator_tag(&ZERO, index, secret);
            self.fill(index, tag);
        }
        self.authenticator = self.checksum(&ZERO, secret).into();
    }

    /// The Accounting-Response to this request (RFC 2866 §4.2): no
    /// attributes but the request's Proxy-States, which a server must echo
    /// in order (RFC 2865 §5.33).
    pub fn accounting_response(&self, secret: &[u8]) -> Vec<u8> {
        let mut response = self.clone();
        response.code = Code::AccountingResponse;
        response.retain(|a| a.kind == PROXY_STATE);
        response.authenticator = response.checksum(&self.authenticator, secret).into();
        response.encode()
    }

    /// Checks a response to the request whose authenticator was
    /// `request_authenticator`: its Response Authenticator and, when it
    /// has one, its Message-Authenticator.
    pub fn verify_response(
        &self,
        request_authenticator: &[u8; AUTHENTICATOR_LEN],
        secret: &[u8],
    ) -> Result<(), AuthError> {
        let expected = self.checksum(request_authenticator, secret);
        if CtOutput::<Md5>::new(expected) != CtOutput::new(self.authenticator.into()) {
            return Err(AuthError::BadAuthenticator);
        }
        self.verify_message_authenticator(request_authenticator, secret)
    }

    /// MD5(packet with `authenticator` in place + secret): the Request
    /// Authenticator of an Accounting-Request (`authenticator` zeros) or a
    /// Response Authenticator (that of the request).
    fn checksum(&self, authenticator: &[u8; AUTHENTICATOR_LEN], secret: &[u8]) -> Output<Md5> {
        let mut md5 = Md5::new();
        self.write(authenticator, None, |bytes| md5.update(bytes));
        md5.update(secret);
        md5.finalize()
    }

    /// The index of the Message-Authenticator to sign: the first, if its
    /// value has the right length.
    fn message_authenticator(&self) -> Option<usize> {
        let (index, attribute) = self
            .attributes()
            .iter()
            .enumerate()
            .find(|(_, a)| a.kind == MESSAGE_AUTHENTICATOR)?;
        (attribute.value().len() == AUTHENTICATOR_LEN).then_some(index)
    }

    fn verify_message_authenticator(
        &self,
        authenticator: &[u8; AUTHENTICATOR_LEN],
        secret: &[u8],
    ) -> Result<(), AuthError> {
        let mut found = self
            .attributes()
            .iter()
            .enumerate()
            .filter(|(_, a)| a.kind == MESSAGE_AUTHENTICATOR);
        let Some((index, attribute)) = found.next() else {
            return Ok(());
        };
        // At most one (RFC 3579 §3.3).
        if found.next().is_some() {
            return Err(AuthError::DuplicateMessageAuthenticator);
        }
        let Ok(received) = <[u8; AUTHENTICATOR_LEN]>::try_from(attribute.value()) else {
            return Err(AuthError::MessageAuthenticatorLength {
                length: attribute.length(),
            });
        };
        let expected = self.message_authenticator_tag(authenticator, index, secret);
        if CtOutput::<Md5>::new(expected.into()) != CtOutput::new(received.into()) {
            return Err(AuthError::BadMessageAuthenticator);
        }
        Ok(())
    }

    /// HMAC-MD5 keyed by the secret over the packet with `authenticator`
    /// in place and zeros for the Message-Authenticator at `index` (RFC
    /// 3579 §3.2). An Accounting-Request's is computed before its Request
    /// Authenticator, so with zeros there too.
    fn message_authenticator_tag(
        &self,
        authenticator: &[u8; AUTHENTICATOR_LEN],
        index: usize,
        secret: &[u8],
    ) -> [u8; AUTHENTICATOR_LEN] {
        let mut hmac =
            HmacMd5::new_from_slice(secret).expect("HMAC takes keys of any length (RFC 2104 §2)");
        self.write(authenticator, Some(index), |bytes| hmac.update(bytes));
        hmac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::{
        accounting::tests::full_request,
        attributes::{ACCT_STATUS_TYPE, USER_NAME},
    };

    const SECRET: &[u8] = b"testing123";

    /// RFC 2866 §3, straight from the text: MD5(Code + Identifier + Length
    /// + 16 zero octets + request attributes + shared secret).
    fn rfc_request_authenticator(packet: &[u8], secret: &[u8]) -> [u8; 16] {
        Md5::digest([&packet[..4], &[0; 16], &packet[20..], secret].concat()).into()
    }

    fn signed(mut packet: Packet<'_>) -> Vec<u8> {
        packet.sign_request(SECRET);
        packet.encode()
    }

    fn verify(bytes: &[u8], secret: &[u8]) -> Result<(), AuthError> {
        Packet::decode(bytes)
            .unwrap()
            .verify_accounting_request(secret)
    }

    #[test]
    fn a_request_built_by_hand_from_the_rfc_verifies() {
        let mut bytes = vec![
            4, 0x2a, 0, 38, // Accounting-Request, identifier 42, Length 38
        ];
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[1, 7, b'a', b'l', b'i', b'c', b'e']); // User-Name
        bytes.extend_from_slice(&[40, 6, 0, 0, 0, 1]); // Acct-Status-Type Start
        bytes.extend_from_slice(&[44, 5, b's', b'-', b'1']); // Acct-Session-Id
        assert_eq!(bytes.len(), 38);
        let authenticator = rfc_request_authenticator(&bytes, SECRET);
        bytes[4..20].copy_from_slice(&authenticator);

        assert_eq!(verify(&bytes, SECRET), Ok(()));
        let mut packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.encode(), bytes);
        packet.authenticator = [0; 16];
        assert_eq!(signed(packet), bytes, "signing computes the same");
    }

    #[test]
    fn a_wrong_secret_or_any_changed_byte_fails_the_request_authenticator() {
        let bytes = full_request().encode(1, SECRET).unwrap();
        assert_eq!(bytes[4..20], rfc_request_authenticator(&bytes, SECRET));
        assert_eq!(verify(&bytes, SECRET), Ok(()));
        assert_eq!(
            verify(&bytes, b"testing124"),
            Err(AuthError::BadAuthenticator)
        );
        assert_eq!(verify(&bytes, b""), Err(AuthError::BadAuthenticator));
        let packet = Packet::decode(&bytes).unwrap();
        // Every byte but the attribute headers, which would not decode.
        let mut headers = vec![2, 3];
        let mut at = 20;
        for attribute in packet.attributes() {
            headers.extend([at, at + 1]);
            at += usize::from(attribute.length());
        }
        for at in (0..bytes.len()).filter(|at| !headers.contains(at)) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x01;
            let packet = Packet::decode(&flipped).unwrap();
            assert!(
                packet.verify_accounting_request(SECRET).is_err(),
                "byte {at} flipped"
            );
        }
    }

    #[test]
    fn only_accounting_requests_are_verified_as_such() {
        let mut packet = Packet::new(Code::AccessRequest, 1);
        packet.push(USER_NAME, &b"alice"[..]).unwrap();
        assert_eq!(
            packet.verify_accounting_request(SECRET),
            Err(AuthError::NotAccountingRequest(Code::AccessRequest))
        );
    }

    fn with_message_authenticator() -> Packet<'static> {
        let mut packet = Packet::new(Code::AccountingRequest, 3);
        packet.push(ACCT_STATUS_TYPE, &[0, 0, 0, 1][..]).unwrap();
        packet.push(MESSAGE_AUTHENTICATOR, &[0; 16][..]).unwrap();
        packet.push(USER_NAME, &b"alice"[..]).unwrap();
        packet
    }

    /// The packet with its Request Authenticator recomputed, as a client
    /// with the secret but a wrong Message-Authenticator would send it.
    fn reauthenticated(mut bytes: Vec<u8>) -> Vec<u8> {
        let authenticator = rfc_request_authenticator(&bytes, SECRET);
        bytes[4..20].copy_from_slice(&authenticator);
        bytes
    }

    #[test]
    fn a_message_authenticator_is_verified_when_present() {
        let bytes = signed(with_message_authenticator());
        // Attribute 2 sits after the header and the 6-byte status.
        let tag = 20 + 6 + 2;
        assert_ne!(bytes[tag..tag + 16], [0; 16]);
        assert_eq!(verify(&bytes, SECRET), Ok(()));

        let mut forged = bytes.clone();
        forged[tag + 15] ^= 0x80;
        let forged = reauthenticated(forged);
        assert_eq!(
            verify(&forged, SECRET),
            Err(AuthError::BadMessageAuthenticator)
        );
        // A client without the secret fails on the Request Authenticator first.
        assert_eq!(verify(&bytes, b"other"), Err(AuthError::BadAuthenticator));
    }

    #[test]
    fn the_message_authenticator_is_hmac_md5_with_both_authenticators_zeroed() {
        let bytes = signed(with_message_authenticator());
        let tag = 20 + 6 + 2;
        let mut zeroed = bytes.clone();
        zeroed[4..20].fill(0);
        zeroed[tag..tag + 16].fill(0);
        let mut hmac = HmacMd5::new_from_slice(SECRET).unwrap();
        hmac.update(&zeroed);
        assert_eq!(hmac.finalize().into_bytes()[..], bytes[tag..tag + 16]);
    }

    #[test]
    fn a_message_authenticator_must_be_single_and_16_bytes() {
        let mut short = Packet::new(Code::AccountingRequest, 3);
        short.push(MESSAGE_AUTHENTICATOR, &[0; 10][..]).unwrap();
        assert_eq!(
            verify(&signed(short), SECRET),
            Err(AuthError::MessageAuthenticatorLength { length: 12 })
        );
        let mut two = with_message_authenticator();
        two.push(MESSAGE_AUTHENTICATOR, &[0; 16][..]).unwrap();
        assert_eq!(
            verify(&signed(two), SECRET),
            Err(AuthError::DuplicateMessageAuthenticator)
        );
    }

    #[test]
    fn the_response_authenticator_covers_the_request_authenticator() {
        let request = full_request().encode(77, SECRET).unwrap();
        let request = Packet::decode(&request).unwrap();
        let bytes = request.accounting_response(SECRET);
        // RFC 2866 §3: MD5(Code + ID + Length + RequestAuth + Attributes + Secret).
        let header = [5, 77, 0, 20];
        let expected: [u8; 16] =
            Md5::digest([&header[..], &request.authenticator, SECRET].concat()).into();
        assert_eq!(bytes, [&header[..], &expected].concat());

        let response = Packet::decode(&bytes).unwrap();
        assert_eq!(
            response.verify_response(&request.authenticator, SECRET),
            Ok(())
        );
        assert_eq!(
            response.verify_response(&[0; 16], SECRET),
            Err(AuthError::BadAuthenticator)
        );
        assert_eq!(
            response.verify_response(&request.authenticator, b"other"),
            Err(AuthError::BadAuthenticator)
        );
    }

    #[test]
    fn a_response_echoes_the_proxy_states_in_order_and_nothing_else() {
        let mut request = with_message_authenticator();
        request.push(PROXY_STATE, &b"first"[..]).unwrap();
        request.push(PROXY_STATE, &b"second"[..]).unwrap();
        let request = signed(request);
        let request = Packet::decode(&request).unwrap();
        let bytes = request.accounting_response(SECRET);
        let response = Packet::decode(&bytes).unwrap();
        let echoed: Vec<_> = response
            .attributes()
            .iter()
            .map(|a| (a.kind, a.value()))
            .collect();
        assert_eq!(
            echoed,
            [(PROXY_STATE, &b"first"[..]), (PROXY_STATE, &b"second"[..])]
        );
        assert_eq!(
            response.verify_response(&request.authenticator, SECRET),
            Ok(())
        );
    }

    #[test]
    fn a_response_with_a_message_authenticator_is_verified_with_the_request_authenticator() {
        let request_authenticator = [9; 16];
        let mut response = Packet::new(Code::AccountingResponse, 3);
        response.push(MESSAGE_AUTHENTICATOR, &[0; 16][..]).unwrap();
        let tag = response.message_authenticator_tag(&request_authenticator, 0, SECRET);
        response.fill(0, tag);
        response.authenticator = response.checksum(&request_authenticator, SECRET).into();
        assert_eq!(
            response.verify_response(&request_authenticator, SECRET),
            Ok(())
        );
        response.fill(0, [1; 16]);
        response.authenticator = response.checksum(&request_authenticator, SECRET).into();
        assert_eq!(
            response.verify_response(&request_authenticator, SECRET),
            Err(AuthError::BadMessageAuthenticator)
        );
    }
}
