//! NetFlow v5 through the real XDP program (BPF_PROG_TEST_RUN) and through
//! the socket path: the same exports give identical aggregates, and every
//! byte ends up aggregated, overflowed or counted as dropped.

mod support;

use std::collections::BTreeMap;

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    ip::to_ip,
    subscribers::SubscriberNets,
    xdp::{DataPlane, KernelConfig},
};
use flowtally_common::{
    RecordStat, XdpStat,
    agg::{Direction, FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START, KEEP_ALL},
};
use support::{
    XDP_DROP,
    frames::{V6, ethernet, ipv6, udp_v4_frame, udp_with},
    kernel_config, require_root,
    v5gen::{Export, expected_bytes, exports},
};

const SUBSCRIBERS: &str = support::v5gen::SUBSCRIBERS;

/// What the kernel made of `exports`: the drained aggregates and its
/// record counters.
fn through_xdp(
    config: &KernelConfig,
    exports: &[Export],
) -> (Table, BTreeMap<&'static str, (u64, u64)>) {
    through_xdp_as(config, exports, |export| {
        udp_v4_frame(export.exporter, 2055, &export.bytes())
    })
}

/// [`through_xdp`] with each export in the frame `frame` makes of it.
fn through_xdp_as(
    config: &KernelConfig,
    exports: &[Export],
    frame: impl Fn(&Export) -> Vec<u8>,
) -> (Table, BTreeMap<&'static str, (u64, u64)>) {
    let mut plane = DataPlane::start(&[], config).expect("the program loads");
    for export in exports {
        let frame = frame(export);
        assert_eq!(
            plane.run_frame(&frame).unwrap(),
            XDP_DROP,
            "aggregated in the kernel"
        );
    }
    let stats = plane.take_stats().unwrap();
    let mut drainer = plane.take_drainer().unwrap();
    let mut table = Table::new();
    drainer
        .drain(|key, value| merge(&mut table, key, value))
        .unwrap();
    let records = [
        ("parsed", RecordStat::Parsed),
        ("aggregated", RecordStat::Aggregated),
        ("overflowed", RecordStat::Overflowed),
        ("dropped", RecordStat::Dropped),
        ("out_of_scope", RecordStat::OutOfScope),
    ]
    .into_iter()
    .map(|(name, stat)| {
        let c = stats.records(stat);
        (name, (c.count, c.bytes))
    })
    .collect();
    (table, records)
}

fn through_socket(config: &KernelConfig, exports: &[Export]) -> Table {
    let mut aggregator = Aggregator::new(
        config.profile,
        config.flags,
        SubscriberNets::new(&config.subscriber_networks),
    );
    for export in exports {
        aggregator
            .add_v5(&to_ip(export.exporter.into()), &export.bytes())
            .unwrap();
    }
    aggregator.take()
}

fn bytes_by_direction(table: &Table) -> BTreeMap<Direction, u64> {
    let mut bytes = BTreeMap::new();
    for (key, value) in table {
        let dir = Direction::from_u8(key.direction).expect("valid direction");
        *bytes.entry(dir).or_default() += value.bytes;
    }
    bytes
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_and_socket_paths_give_identical_aggregates_for_every_profile() {
    require_root();
    let exports = exports(200, 0x5eed);
    for (keep, flags) in [
        (KEEP_ALL, FLAG_SCALE_SAMPLING),
        (0, FLAG_SCALE_SAMPLING),
        (KEEP_ALL, FLAG_TIME_FROM_START),
        (
            KEEP_ALL & !flowtally_common::agg::KEEP_EXPORTER,
            FLAG_SCALE_SAMPLING,
        ),
    ] {
        let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
        config.profile.keep = keep;
        config.flags = flags;
        let (xdp, _) = through_xdp(&config, &exports);
        let socket = through_socket(&config, &exports);
        assert!(!xdp.is_empty());
        assert_eq!(xdp.len(), socket.len(), "keep {keep:#x} flags {flags:#x}");
        assert!(
            xdp == socket,
            "keep {keep:#x} flags {flags:#x}: tables differ"
        );
    }
}

/// v5 records are IPv4, and the kernel keys them by their IPv4 addresses
/// alone; an exporter reached over IPv6 does not fit that key when the
/// profile keeps it, and takes the full key instead.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn exports_from_an_ipv6_exporter_aggregate_alike_in_both_paths() {
    require_root();
    let exports = exports(50, 0x6e6);
    // `frames::ipv6` sends from 2001:db8:2001:db8:2001:db8:2001:db8.
    let exporter: std::net::Ipv6Addr = "2001:db8:2001:db8:2001:db8:2001:db8".parse().unwrap();
    let ipv6_frame =
        |export: &Export| ethernet(&[], V6, &ipv6(17, &udp_with(2055, &export.bytes())));
    for keep in [KEEP_ALL, KEEP_ALL & !flowtally_common::agg::KEEP_EXPORTER] {
        let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
        config.profile.keep = keep;
        let (xdp, records) = through_xdp_as(&config, &exports, ipv6_frame);
        let mut aggregator = Aggregator::new(
            config.profile,
            config.flags,
            SubscriberNets::new(&config.subscriber_networks),
        );
        for export in &exports {
            aggregator
                .add_v5(&to_ip(exporter.into()), &export.bytes())
                .unwrap();
        }
        let socket = aggregator.take();
        assert_eq!(bytes_by_direction(&xdp), expected_bytes(&exports));
        let sent: usize = exports.iter().map(|e| e.records.len()).sum();
        assert_eq!(records["parsed"].0, sent as u64);
        assert!(!xdp.is_empty());
        assert!(xdp == socket, "keep {keep:#x}: tables differ");
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn with_a_tiny_map_the_overflow_ring_keeps_every_byte() {
    require_root();
    let exports = exports(100, 0xc0ffee);
    let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
    config.aggregate_entries = 4;
    let (table, records) = through_xdp(&config, &exports);
    assert!(
        records["overflowed"].0 > 0,
        "the ring was used: {records:?}"
    );
    assert_eq!(records["dropped"], (0, 0), "{records:?}");
    assert_eq!(bytes_by_direction(&table), expected_bytes(&exports));
    let record_count: usize = exports.iter().map(|e| e.records.len()).sum();
    assert_eq!(records["parsed"].0, record_count as u64);
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn with_map_and_ring_full_every_lost_byte_is_counted() {
    require_root();
    let exports = exports(100, 0xdecaf);
    let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
    config.aggregate_entries = 4;
    config.overflow_ring_bytes = 4096;
    let (table, records) = through_xdp(&config, &exports);
    let (dropped, dropped_bytes) = records["dropped"];
    assert!(dropped > 0, "the ring filled up: {records:?}");
    let written: u64 = bytes_by_direction(&table).values().sum();
    let expected: u64 = expected_bytes(&exports).values().sum();
    assert_eq!(written + dropped_bytes, expected, "{records:?}");
    let (aggregated, overflowed) = (records["aggregated"], records["overflowed"]);
    assert_eq!(
        aggregated.1 + overflowed.1 + dropped_bytes,
        expected,
        "the kernel's own counters balance"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn exports_from_exporters_off_the_allow_list_are_dropped_and_counted() {
    require_root();
    let [allowed, other] = support::v5gen::EXPORTERS;
    let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
    config.exporters = vec![allowed.into()];
    let mut plane = DataPlane::start(&[], &config).expect("the program loads");
    let export = &exports(1, 7)[0];
    for (exporter, verdict) in [(allowed, XDP_DROP), (other, XDP_DROP), (other, XDP_DROP)] {
        let frame = udp_v4_frame(exporter, 2055, &export.bytes());
        assert_eq!(plane.run_frame(&frame).unwrap(), verdict);
    }
    let stats = plane.take_stats().unwrap();
    assert_eq!(stats.frames(XdpStat::DropV5Aggregated).count, 1);
    assert_eq!(stats.frames(XdpStat::DropUnknownExporter).count, 2);
    assert_eq!(
        stats.records(RecordStat::Parsed).count,
        export.records.len() as u64,
        "only the allowed exporter's records"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_billing_scope_counts_each_flow_once_in_both_paths() {
    require_root();
    use flowtally_common::agg::{ANY_INTERFACE, ScopeKey};
    let [billed_whole, billed_by_interface] = support::v5gen::EXPORTERS;
    let mut exports = exports(60, 0xb111);
    // Interfaces 1..=4 in and out; only interface 3 of the second exporter
    // is its subscriber side.
    for (i, export) in exports.iter_mut().enumerate() {
        for (j, record) in export.records.iter_mut().enumerate() {
            record.input = ((i + j) % 4 + 1) as u16;
            record.output = ((i * 3 + j) % 4 + 1) as u16;
        }
    }
    let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
    config.billing_scope = vec![
        ScopeKey {
            exporter: to_ip(billed_whole.into()),
            ifindex: ANY_INTERFACE,
        },
        ScopeKey {
            exporter: to_ip(billed_by_interface.into()),
            ifindex: 3,
        },
    ];
    let (xdp, records) = through_xdp(&config, &exports);
    let mut aggregator = Aggregator::new(
        config.profile,
        config.flags,
        SubscriberNets::new(&config.subscriber_networks),
    )
    .with_scope(&config.billing_scope);
    let mut out_of_scope = 0;
    for export in &exports {
        let added = aggregator
            .add_v5(&to_ip(export.exporter.into()), &export.bytes())
            .unwrap();
        out_of_scope += added.out_of_scope_records;
    }
    assert!(xdp == aggregator.take(), "both paths bill the same");
    let expected: u64 = exports
        .iter()
        .filter(|e| e.exporter == billed_by_interface)
        .flat_map(|e| &e.records)
        .filter(|r| r.input != 3 && r.output != 3)
        .count() as u64;
    assert!(expected > 0);
    assert_eq!(out_of_scope, expected);
    assert_eq!(records["out_of_scope"].0, expected, "{records:?}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn subscriber_networks_longer_than_a_24_classify_alike_in_both_paths() {
    require_root();
    let exports = exports(200, 0x5b1d);
    // /24s the kernel's table cannot answer alone: it asks the trie there.
    let nets = ["198.18.100.0/29", "198.18.100.12/30", "198.19.0.5/32"];
    let config = kernel_config(&[2055], &nets);
    let (xdp, _) = through_xdp(&config, &exports);
    let socket = through_socket(&config, &exports);
    let directions = bytes_by_direction(&xdp);
    assert!(
        directions.len() == 3,
        "up, down and transit all occur: {directions:?}"
    );
    assert!(xdp == socket, "tables differ");
}
