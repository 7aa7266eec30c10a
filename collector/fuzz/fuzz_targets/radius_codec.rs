//! `cargo fuzz run radius_codec` (from `collector/`): the RADIUS codec on
//! arbitrary datagrams; every invariant it checks is an assertion.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::radius::fuzz_decode(data));
