//! Interoperability: Accounting-Requests sent by FreeRADIUS's `radclient`
//! (3.2.1, Debian's freeradius-utils) to a UDP socket on loopback, secret
//! `testing123`, and a response of this codec that radclient accepted:
//!
//! ```sh
//! echo "User-Name = alice, Acct-Status-Type = Start, Acct-Session-Id = s1, \
//!   Framed-IP-Address = 198.18.100.7" | radclient -x 127.0.0.1:18130 acct testing123
//! ```

use std::net::Ipv4Addr;

use super::{AccountingRequest, Packet, StatusType, VendorSpecific, attributes::*};

const SECRET: &[u8] = b"testing123";

/// The Start above.
const START: &[&str] = &[
    "04e5002b",                         // Accounting-Request, id 229, Length 43
    "419a2433e2530eab45256cba4eb3c036", // Request Authenticator
    "0107616c696365",                   // User-Name
    "280600000001",                     // Acct-Status-Type
    "2c047331",                         // Acct-Session-Id
    "0806c6126407",                     // Framed-IP-Address
];

/// A Stop with every attribute the view reads, IPv6 prefixes with all 16
/// bytes (as FreeRADIUS sends them) and `Message-Authenticator = 0x00`,
/// which radclient computes.
const STOP: &[&str] = &[
    "043b0133",                                           // id 59, Length 307
    "9f4a4f1d115c154248febdfc5b45bc5b",                   // Request Authenticator
    "280600000002",                                       // Acct-Status-Type
    "0111626f62406973702e6578616d706c65",                 // User-Name
    "2c1330413042304330442d3030303030303432",             // Acct-Session-Id
    "0406c6120001",                                       // NAS-IP-Address
    "2008627261732d31",                                   // NAS-Identifier
    "050600001092",                                       // NAS-Port
    "570e657468302e3130303a323030",                       // NAS-Port-Id
    "1f1330302d31312d32322d33332d34342d3535",             // Calling-Station-Id
    "080664400309",                                       // Framed-IP-Address
    "6114004020010db8000500010000000000000000",           // Framed-IPv6-Prefix
    "7b14003820010db8120034000000000000000000",           // Delegated-IPv6-Prefix
    "a81220010db8000500010000000000000007",               // Framed-IPv6-Address
    "5f1220010db8000000000000000000000001",               // NAS-IPv6-Address
    "1909636c6173732d61",                                 // Class
    "19040102",                                           // Class
    "2a06000004d2",                                       // Acct-Input-Octets
    "340600000002",                                       // Acct-Input-Gigawords
    "2b06ffffffff",                                       // Acct-Output-Octets
    "350600000000",                                       // Acct-Output-Gigawords
    "2e0600000e10",                                       // Acct-Session-Time
    "310600000001",                                       // Acct-Terminate-Cause
    "290600000005",                                       // Acct-Delay-Time
    "37066553f100",                                       // Event-Timestamp
    "55060000012c",                                       // Acct-Interim-Interval
    "1a1900000009011369703a616464722d706f6f6c3d6d61696e", // Cisco-AVPair
    "5012ce63e9597862e47ddbdafd52c151f47c",               // Message-Authenticator
];

/// An Interim-Update with two Proxy-States and a Message-Authenticator...
const INTERIM: &[&str] = &[
    "0482003f",                             // id 130, Length 63
    "ef3fcbe40a9d86d0c0ecf612c06392b1",     // Request Authenticator
    "01076361726f6c",                       // User-Name
    "280600000003",                         // Acct-Status-Type
    "2c047339",                             // Acct-Session-Id
    "2105616263",                           // Proxy-State
    "210301",                               // Proxy-State
    "501279626cd32a365adc11855a23df34784f", // Message-Authenticator
];

/// ... and the response this codec made to it, which radclient took
/// ("Received Accounting-Response", the Proxy-States listed); to a wrong
/// Response Authenticator it says "Reply verification failed".
const INTERIM_RESPONSE: &[&str] = &[
    "0582001c",                         // Accounting-Response, id 130, Length 28
    "b36e8f9d5d946f14d9715e7f33077425", // Response Authenticator
    "2105616263",                       // Proxy-State
    "210301",                           // Proxy-State
];

fn bytes(hex: &[&str]) -> Vec<u8> {
    let hex = hex.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Every captured request, for other tests to start from.
pub(super) fn radclient_requests() -> Vec<Vec<u8>> {
    vec![bytes(START), bytes(STOP), bytes(INTERIM)]
}

#[test]
fn radclients_start_decodes_and_verifies() {
    let datagram = bytes(START);
    let packet = Packet::decode(&datagram).unwrap();
    assert_eq!(packet.identifier, 229);
    assert_eq!(packet.verify_accounting_request(SECRET), Ok(()));
    assert_eq!(
        AccountingRequest::from_packet(&packet),
        Ok(AccountingRequest {
            user_name: Some("alice".into()),
            session_id: Some("s1".into()),
            framed_ip: Some(Ipv4Addr::new(198, 18, 100, 7)),
            ..AccountingRequest::new(StatusType::Start)
        })
    );
    assert_eq!(packet.encode(), datagram);
}

#[test]
fn radclients_stop_decodes_and_verifies_with_its_message_authenticator() {
    let datagram = bytes(STOP);
    let packet = Packet::decode(&datagram).unwrap();
    assert_eq!(packet.verify_accounting_request(SECRET), Ok(()));
    assert!(
        packet
            .attributes()
            .iter()
            .any(|a| a.kind == MESSAGE_AUTHENTICATOR)
    );
    let request = AccountingRequest::from_packet(&packet).unwrap();
    assert_eq!(
        request,
        AccountingRequest {
            user_name: Some("bob@isp.example".into()),
            session_id: Some("0A0B0C0D-00000042".into()),
            nas_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
            nas_identifier: Some("bras-1".into()),
            nas_port: Some(4242),
            nas_port_id: Some("eth0.100:200".into()),
            calling_station_id: Some("00-11-22-33-44-55".into()),
            framed_ip: Some(Ipv4Addr::new(100, 64, 3, 9)),
            framed_ipv6_prefix: Some("2001:db8:5:1::/64".parse().unwrap()),
            delegated_ipv6_prefix: Some("2001:db8:1200:3400::/56".parse().unwrap()),
            framed_ipv6_address: Some("2001:db8:5:1::7".parse().unwrap()),
            nas_ipv6: Some("2001:db8::1".parse().unwrap()),
            class: vec![b"class-a".to_vec(), vec![1, 2]],
            input_octets: Some(2 << 32 | 1234),
            output_octets: Some(0xffff_ffff),
            session_time: Some(3600),
            terminate_cause: Some(1),
            delay_time: Some(5),
            event_timestamp: Some(1_700_000_000),
            interim_interval: Some(300),
            vendor_specific: vec![VendorSpecific {
                vendor_id: 9,
                data: b"\x01\x13ip:addr-pool=main".to_vec(),
            }],
            ..AccountingRequest::new(StatusType::Stop)
        }
    );
}

#[test]
fn radclients_requests_fail_with_another_secret() {
    for datagram in radclient_requests() {
        let packet = Packet::decode(&datagram).unwrap();
        assert!(packet.verify_accounting_request(b"testing124").is_err());
    }
}

#[test]
fn the_response_radclient_accepted_is_what_the_codec_makes() {
    let datagram = bytes(INTERIM);
    let request = Packet::decode(&datagram).unwrap();
    assert_eq!(request.verify_accounting_request(SECRET), Ok(()));
    let response = request.accounting_response(SECRET);
    assert_eq!(response, bytes(INTERIM_RESPONSE));
    let response = Packet::decode(&response).unwrap();
    assert_eq!(
        response.verify_response(&request.authenticator, SECRET),
        Ok(())
    );
}
