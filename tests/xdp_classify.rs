//! Frame fixtures through the real XDP program in the kernel
//! (BPF_PROG_TEST_RUN): each frame's verdict and the exact counter it moves.

mod support;

use std::collections::BTreeSet;

use flowtally::xdp::DataPlane;
use flowtally_common::XdpStat;
use support::require_root;

const XDP_PASS: u32 = 2;
const COLLECTOR_PORTS: [u16; 2] = [2055, 4739];

fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for &tpid in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x64]); // VLAN 100
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header with `options_words` 32-bit words of options.
fn ipv4(protocol: u8, frag: u16, options_words: u8, payload: &[u8]) -> Vec<u8> {
    let ihl = 5 + options_words;
    let total = u16::from(ihl) * 4 + payload.len() as u16;
    let mut packet = vec![0x40 | ihl, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet.extend_from_slice(&frag.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    packet.extend(std::iter::repeat_n(1, usize::from(options_words) * 4)); // NOPs
    packet.extend_from_slice(payload);
    packet
}

fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]);
    packet.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(8)); // source + destination
    packet.extend_from_slice(payload);
    packet
}

fn udp(dst_port: u16) -> Vec<u8> {
    let mut datagram = vec![0x30, 0x39];
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&[0, 12, 0, 0, 0, 5, 0, 1]);
    datagram
}

const V4: u16 = 0x0800;
const V6: u16 = 0x86dd;
const UDP: u8 = 17;

fn fixtures() -> Vec<(&'static str, Vec<u8>, XdpStat)> {
    use XdpStat::*;
    vec![
        (
            "v4 udp to 2055",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassFlowExport,
        ),
        (
            "v4 udp to 53",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp(53))),
            PassOther,
        ),
        (
            "v4 with options",
            ethernet(&[], V4, &ipv4(UDP, 0, 3, &udp(4739))),
            PassFlowExport,
        ),
        (
            "v4 don't-fragment",
            ethernet(&[], V4, &ipv4(UDP, 0x4000, 0, &udp(2055))),
            PassFlowExport,
        ),
        (
            "802.1Q",
            ethernet(&[0x8100], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassFlowExport,
        ),
        (
            "QinQ",
            ethernet(&[0x88a8, 0x8100], V4, &ipv4(UDP, 0, 0, &udp(2055))),
            PassFlowExport,
        ),
        (
            "v6 udp to 4739",
            ethernet(&[], V6, &ipv6(UDP, &udp(4739))),
            PassFlowExport,
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
    ]
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn every_fixture_gets_its_verdict_and_moves_exactly_its_counter() {
    require_root();
    let ports: BTreeSet<u16> = COLLECTOR_PORTS.into();
    let mut plane = DataPlane::start(&[], &ports).expect("the program loads");
    let stats = plane.stats_collector().unwrap();
    for (name, frame, expected) in fixtures() {
        let before = stats.totals();
        assert_eq!(plane.run_frame(&frame).unwrap(), XDP_PASS, "{name}");
        let after = stats.totals();
        for ((stat, was), (_, now)) in before.iter().zip(&after) {
            let (packets, bytes) = if *stat == expected {
                (1, frame.len() as u64)
            } else {
                (0, 0)
            };
            assert_eq!(
                now.packets - was.packets,
                packets,
                "{name}: {stat:?} packets"
            );
            assert_eq!(now.bytes - was.bytes, bytes, "{name}: {stat:?} bytes");
        }
    }
}
