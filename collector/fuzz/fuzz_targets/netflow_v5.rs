//! `cargo xtask fuzz netflow_v5`: NetFlow v5: decoder against the format,
//! encoder round trip; every invariant it checks is an assertion
//! (`flowtally::netflow::fuzz::v5`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::netflow::fuzz::v5(data));
