//! `cargo xtask fuzz template_compiler`: compiled templates (the XDP
//! program's reading) against the socket decoder; every invariant it checks
//! is an assertion (`flowtally::netflow::fuzz::compiled_parity`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::netflow::fuzz::compiled_parity(data));
