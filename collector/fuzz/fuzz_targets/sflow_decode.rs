//! `cargo xtask fuzz sflow_decode`: the sFlow v5 decoder and encoder; every
//! invariant it checks is an assertion (`flowtally::sflow::fuzz::decode_round_trip`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::sflow::fuzz::decode_round_trip(data));
