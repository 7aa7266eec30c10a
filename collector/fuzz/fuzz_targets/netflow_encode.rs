//! `cargo xtask fuzz netflow_encode`: v9/IPFIX encoder and decoder round
//! trip; every invariant it checks is an assertion
//! (`flowtally::netflow::fuzz::encode_round_trip`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::netflow::fuzz::encode_round_trip(data));
