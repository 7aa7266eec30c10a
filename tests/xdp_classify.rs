//! Frame fixtures through the real XDP program in the kernel
//! (BPF_PROG_TEST_RUN): each frame's verdict and the exact counter it moves.

mod support;

use flowtally::{
    netflow::v5::{Record, encode},
    xdp::DataPlane,
};
use flowtally_common::{XdpStat, v5::Header};
use support::{
    frames::{V4, V6, ethernet, ipv4, ipv6, udp_with},
    require_root, xdp_action,
};

const COLLECTOR_PORTS: [u16; 2] = [2055, 4739];

/// A UDP datagram carrying the start of a NetFlow v7 header, a version the
/// XDP program passes up to the socket path.
fn udp(dst_port: u16) -> Vec<u8> {
    udp_with(dst_port, &[0, 7, 0, 1])
}

/// A NetFlow v5 export of `records` records, with its count field set to
/// `count` (lying when they differ).
fn v5_export(records: usize, count: u16) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 5_000,
        unix_secs: 1_700_000_000,
        ..Header::default()
    };
    let record = Record {
        src: [198, 18, 100, 1],
        dst: [198, 19, 0, 1],
        packets: 1,
        octets: 100,
        last: 4_000,
        ..Record::default()
    };
    let mut export = encode(&header, &vec![record; records]);
    export[2..4].copy_from_slice(&count.to_be_bytes());
    export
}

fn v5_frame(payload: &[u8]) -> Vec<u8> {
    ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp_with(2055, payload)))
}

const UDP: u8 = 17;

fn fixtures() -> Vec<(&'static str, Vec<u8>, XdpStat)> {
    use XdpStat::*;
    vec![
        (
            "v4 udp to 2055",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassUnknownVersion,
        ),
        (
            "v4 udp to 2055, the start of an sFlow header (too short for the kernel)",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp_with(2055, &[0, 0, 0, 5]))),
            PassSflowToUser,
        ),
        (
            "v4 udp to 53",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(53))),
            PassOther,
        ),
        (
            "v4 with options",
            ethernet(&[], V4, &ipv4(UDP, 0, 3, &udp(4739))),
            PassUnknownVersion,
        ),
        (
            "v4 don't-fragment",
            ethernet(&[], V4, &ipv4(UDP, 0x4000, 0, &udp(2055))),
            PassUnknownVersion,
        ),
        (
            "802.1Q",
            ethernet(&[0x8100], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassUnknownVersion,
        ),
        (
            "QinQ",
            ethernet(&[0x88a8, 0x8100], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassUnknownVersion,
        ),
        (
            "v6 udp to 4739",
            ethernet(&[], V6, &ipv6(UDP, &udp(4739))),
            PassUnknownVersion,
        ),
        (
            "v6 udp to 9",
            ethernet(&[], V6, &ipv6(UDP, &udp(9))),
            PassOther,
        ),
        (
            "v6 fragment",
            ethernet(&[], V6, &ipv6(44, &[17, 0, 0, 1, 0, 0, 0, 1])),
            PassFragment,
        ),
        (
            "v4 first fragment",
            ethernet(&[], V4, &ipv4(UDP, 0x2000, 0, &udp(2055))),
            PassFragment,
        ),
        (
            "v4 later fragment",
            ethernet(&[], V4, &ipv4(UDP, 0x00b9, 0, &[0; 8])),
            PassFragment,
        ),
        (
            "v4 tcp",
            ethernet(&[], V4, &ipv4(6, 0, 0, &[0; 20])),
            PassOther,
        ),
        ("arp", ethernet(&[], 0x0806, &[0; 28]), PassOther),
        (
            "v4 cut short",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(2055))[..8]),
            PassMalformed,
        ),
        (
            "udp cut short",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(2055))[..24]),
            PassMalformed,
        ),
        (
            "ihl below 5",
            {
                let mut packet = ipv4(UDP, 0, 0, &udp(2055));
                packet[0] = 0x44;
                ethernet(&[], V4, &packet)
            },
            PassMalformed,
        ),
        (
            "options past the end",
            ethernet(&[], V4, &ipv4(UDP, 0, 10, &[])),
            PassMalformed,
        ),
        (
            "vlan tag cut short",
            ethernet(&[], 0x8100, &[0x00]),
            PassMalformed,
        ),
        (
            "v5 with 2 records",
            v5_frame(&v5_export(2, 2)),
            DropV5Aggregated,
        ),
        (
            "v5 with 30 records",
            v5_frame(&v5_export(30, 30)),
            DropV5Aggregated,
        ),
        (
            "v5 on vlan",
            ethernet(
                &[0x8100],
                V4,
                &ipv4(UDP, 0, 0, &udp_with(2055, &v5_export(1, 1))),
            ),
            DropV5Aggregated,
        ),
        (
            "v5 over v6",
            ethernet(&[], V6, &ipv6(UDP, &udp_with(4739, &v5_export(3, 3)))),
            DropV5Aggregated,
        ),
        ("v5 count 0", v5_frame(&v5_export(0, 0)), PassV5Invalid),
        ("v5 count 31", v5_frame(&v5_export(31, 31)), PassV5Invalid),
        (
            "v5 count above records",
            v5_frame(&v5_export(2, 3)),
            PassV5Invalid,
        ),
        (
            "v5 count below records",
            v5_frame(&v5_export(3, 2)),
            PassV5Invalid,
        ),
        (
            "v5 header cut short",
            v5_frame(&v5_export(1, 1)[..20]),
            PassV5Invalid,
        ),
        (
            "v5 record cut short",
            v5_frame(&v5_export(2, 2)[..100]),
            PassV5Invalid,
        ),
        (
            "udp length past the frame",
            {
                let mut frame = v5_frame(&v5_export(1, 1));
                let len = frame.len();
                frame.truncate(len - 10);
                frame
            },
            PassMalformed,
        ),
    ]
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn every_fixture_gets_its_verdict_and_moves_exactly_its_counter() {
    require_root();
    let config = support::kernel_config(&COLLECTOR_PORTS, &[]);
    let mut plane = DataPlane::start(&[], &config).expect("the program loads");
    let stats = plane.take_stats().unwrap();
    let totals = || XdpStat::ALL.map(|stat| (stat, stats.frames(stat)));
    for (name, frame, expected) in fixtures() {
        let before = totals();
        let verdict = xdp_action(expected.verdict());
        assert_eq!(plane.run_frame(&frame).unwrap(), verdict, "{name}");
        for ((stat, was), (_, now)) in before.iter().zip(&totals()) {
            let (count, bytes) = if *stat == expected {
                (1, frame.len() as u64)
            } else {
                (0, 0)
            };
            assert_eq!(now.count - was.count, count, "{name}: {stat:?} frames");
            assert_eq!(now.bytes - was.bytes, bytes, "{name}: {stat:?} bytes");
        }
    }
}
