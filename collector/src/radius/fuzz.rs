//! The fuzzing entry point (`collector/fuzz`, `cargo fuzz run
//! radius_codec`), also driven by a deterministic unit test.

use super::{
    AccountingRequest, AuthError, Code, Packet,
    coa::{Kind, read_response},
};

const SECRET: &[u8] = b"testing123";

/// Runs what a server does with a datagram on arbitrary bytes and checks
/// what holds whatever they are; panics when something does not.
///
/// - What decodes encodes back to its bytes up to Length, and decodes to
///   itself.
/// - Signing a request that verifies changes nothing; a signed request
///   verifies unless its Message-Authenticators cannot be signed.
/// - The response to anything verifies against it.
/// - A typed request rebuilds into a request that verifies and reads back
///   the same.
/// - Read as a NAS's answer to a Disconnect- or CoA-Request, it is an
///   outcome or an error, never a panic.
pub fn fuzz_decode(data: &[u8]) {
    let identifier = data.get(1).copied().unwrap_or(0);
    for kind in [Kind::Disconnect, Kind::Coa] {
        let _ = read_response(data, kind, identifier, &[0; 16], SECRET);
    }
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    let bytes = packet.encode();
    assert_eq!(Some(&bytes[..]), data.get(..packet.length()));
    assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&packet));

    let verified = packet.verify_accounting_request(SECRET);
    let mut signed = packet.clone();
    signed.sign_request(SECRET);
    if verified.is_ok() {
        assert_eq!(signed, packet);
    }
    match signed.verify_accounting_request(SECRET) {
        Ok(())
        | Err(
            AuthError::NotAccountingRequest(_)
            | AuthError::DuplicateMessageAuthenticator
            | AuthError::MessageAuthenticatorLength { .. },
        ) => {}
        Err(err) => panic!("a signed request fails with {err}"),
    }

    let response = packet.accounting_response(SECRET);
    let response = Packet::decode(&response).expect("a response decodes");
    assert_eq!(response.code, Code::AccountingResponse);
    assert_eq!(
        response.verify_response(&packet.authenticator, SECRET),
        Ok(())
    );

    if let Ok(request) = AccountingRequest::from_packet(&packet) {
        let rebuilt = request
            .encode(packet.identifier, SECRET)
            .expect("a decoded request re-encodes");
        let rebuilt = Packet::decode(&rebuilt).expect("a rebuilt request decodes");
        assert_eq!(rebuilt.verify_accounting_request(SECRET), Ok(()));
        assert_eq!(AccountingRequest::from_packet(&rebuilt), Ok(request));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{
        radius::{
            accounting::tests::full_request, attributes::*, radclient_tests::radclient_requests,
        },
        rng::Rng,
    };

    fn seeds() -> Vec<Vec<u8>> {
        let mut seeds = radclient_requests();
        let request = full_request();
        seeds.push(request.encode(1, SECRET).unwrap());
        let mut packet = request.to_packet(2).unwrap();
        packet.push(PROXY_STATE, &b"proxy-1"[..]).unwrap();
        packet
            .push(MESSAGE_AUTHENTICATOR, [0; 16].to_vec())
            .unwrap();
        packet.sign_request(SECRET);
        seeds.push(packet.encode());
        seeds
    }

    /// The committed seed corpus of `radius_codec` is [`seeds`];
    /// `FLOWTALLY_WRITE_SEEDS=1` rewrites it after a deliberate change.
    #[test]
    fn committed_seeds_are_the_ones_built_here() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/radius_codec");
        let write = std::env::var_os("FLOWTALLY_WRITE_SEEDS").is_some();
        for (i, seed) in seeds().iter().enumerate() {
            let path = dir.join(format!("seed-{i:02}"));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, seed).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).ok().as_ref(),
                Some(seed),
                "{}",
                path.display()
            );
            fuzz_decode(seed);
        }
    }

    /// Lengths and values that sit on the decoder's edges.
    const EDGES: [u8; 10] = [0, 1, 2, 3, 4, 6, 18, 20, 128, 255];

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..=rng.index(3) {
            let at = rng.index(bytes.len().max(1));
            match rng.index(6) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.index(8),
                1 if !bytes.is_empty() => bytes[at] = rng.byte(),
                2 if !bytes.is_empty() => bytes[at] = EDGES[rng.index(EDGES.len())],
                3 => bytes.truncate(at),
                4 => {
                    let insert: Vec<u8> = (0..rng.index(8)).map(|_| rng.byte()).collect();
                    bytes.splice(at.min(bytes.len())..at.min(bytes.len()), insert);
                }
                _ => {
                    let from = rng.index(bytes.len().max(1));
                    let piece = bytes[from.min(bytes.len())..].to_vec();
                    bytes.extend(piece.iter().take(rng.index(64)));
                }
            }
        }
        // Mostly keep the Length field right, so that what breaks is deeper.
        if bytes.len() >= 4 && rng.index(4) != 0 {
            let length = bytes.len().min(4096) as u16;
            bytes[2..4].copy_from_slice(&length.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn fifty_thousand_mutated_packets_hold_every_invariant() {
        let seeds = seeds();
        let mut rng = Rng(0x5eed_f10e_7a11_0001);
        let mut outcomes = BTreeSet::new();
        for _ in 0..50_000 {
            let seed = &seeds[rng.index(seeds.len())];
            let bytes = mutate(&mut rng, seed);
            fuzz_decode(&bytes);
            let outcome = match Packet::decode(&bytes) {
                Err(err) => err.as_str(),
                Ok(packet) => match AccountingRequest::from_packet(&packet) {
                    Err(err) => err.as_str(),
                    Ok(_) => match packet.verify_accounting_request(SECRET) {
                        Err(err) => err.as_str(),
                        Ok(()) => "ok",
                    },
                },
            };
            outcomes.insert(outcome);
        }
        let reached: Vec<_> = outcomes.into_iter().collect();
        assert_eq!(
            reached,
            [
                "ok",
                "radius_attribute_length",
                "radius_attribute_truncated",
                "radius_bad_attribute",
                "radius_bad_authenticator",
                "radius_bad_length",
                "radius_bad_prefix",
                "radius_duplicate_attribute",
                "radius_missing_status_type",
                "radius_not_accounting_request",
                "radius_not_utf8",
                "radius_short",
                "radius_truncated",
            ],
            "the mutations reach every outcome"
        );
    }
}
