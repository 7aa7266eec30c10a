//! The XDP programs pass the kernel's verifier with room to spare, in the
//! configuration that leaves the verifier the most code to walk: every
//! feature flag on (they are load-time constants, so a flag off removes
//! its code) and the kernel log at its most verbose. The verifier gives up
//! at 1 000 000 processed instructions; a program near that limit fails to
//! load after a small change or on another kernel.

mod support;

use flowtally::xdp::DataPlane;
use flowtally_common::agg::{
    FLAG_BILLING_SCOPE, FLAG_EXPORTER_ALLOWLIST, FLAG_INTERFACE_FLOWS, FLAG_SCALE_SAMPLING,
    FLAG_SFLOW_RENORMALIZE, FLAG_TIME_FROM_START, ScopeKey, ip_from_v4,
};
use support::{kernel_config, require_root};

/// The verifier's limit on processed instructions (BPF_COMPLEXITY_LIMIT_INSNS).
const LIMIT: u32 = 1_000_000;

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn every_program_verifies_with_every_feature_on_at_under_half_the_limit() {
    require_root();
    let scope = ScopeKey {
        exporter: ip_from_v4([198, 18, 0, 1]),
        ifindex: 3,
    };
    let configs = [
        ("defaults", kernel_config(&[2055], &["198.18.100.0/24"])),
        ("everything on", {
            let mut config = kernel_config(&[2055, 6343], &["198.18.100.0/24", "2001:db8::/32"]);
            config.flags = FLAG_TIME_FROM_START
                | FLAG_SCALE_SAMPLING
                | FLAG_SFLOW_RENORMALIZE
                | FLAG_EXPORTER_ALLOWLIST
                | FLAG_BILLING_SCOPE
                | FLAG_INTERFACE_FLOWS;
            config.exporters = vec!["198.18.0.1".parse().unwrap()];
            config.billing_scope = vec![scope];
            config.interfaces = vec![scope];
            // Classes set FLAG_CLASSES: a trie lookup per direction.
            config.classes = vec![
                ("198.19.0.0/16".parse().unwrap(), 1),
                ("2001:db8:ffff::/48".parse().unwrap(), 2),
            ];
            config.log_level = aya_log::Level::Trace as u8;
            config
        }),
    ];
    for (what, config) in configs {
        let plane = DataPlane::start(&[], &config)
            .unwrap_or_else(|err| panic!("{what}: the programs load: {err:?}"));
        for (program, count) in plane.verified_instructions() {
            let count = count.expect("Linux 5.16 or later reports verified instructions");
            eprintln!("{what}: {program}: {count} instructions verified");
            assert!(
                count < LIMIT / 2,
                "{what}: {program} took {count} verified instructions, too close to {LIMIT}"
            );
        }
    }
}
