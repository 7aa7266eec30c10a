//! `cargo xtask fuzz netflow_templates`: NetFlow v9/IPFIX template cache over
//! sequences of datagrams; every invariant it checks is an assertion
//! (`flowtally::netflow::fuzz::templates`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::netflow::fuzz::templates(data));
