//! `cargo xtask fuzz sflow_kernel`: the XDP program's sFlow walk (its model,
//! `flowtally::sflow::kernel_model`) against the socket decoder; every
//! invariant it checks is an assertion (`flowtally::sflow::fuzz::kernel_parity`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowtally::sflow::fuzz::kernel_parity(data));
