//! The real XDP program (BPF_PROG_TEST_RUN) against malformed and
//! adversarial frames: every length field lying, maximal counts, template
//! floods, IPv4 options, fragments, VLAN tags. Each case states its verdict
//! and exactly which counters move — the frame counter of its class, and
//! the record counters (count and bytes) of what it aggregates — and every
//! other counter must stay put.

mod support;

use flowtally::{
    ip::to_ip,
    netflow::{
        Limits, TemplateCache, TemplateChange,
        encode::{Set, Template, export},
        layouts,
        sets::{FieldSpec, Header, IPFIX, V9},
        v5::{Record, encode},
    },
    xdp::{DataPlane, KernelStats},
};
use flowtally_common::{Counter, RecordStat, XdpStat, v5};
use support::{
    frames::{V4, V6, ethernet, ipv4, ipv4_from, ipv6, udp_with},
    kernel_config, require_root, xdp_action,
};

const UDP: u8 = 17;
/// `frames::ipv4`'s source: the exporter of every export here.
const EXPORTER: [u8; 4] = [198, 18, 0, 1];
const UNIX_SECS: u32 = 1_700_000_000;
/// Domains: 7 has compiled templates; 99 is where template sets go, since
/// they hold their domain's data back.
const DOMAIN: u32 = 7;
const FLOOD_DOMAIN: u32 = 99;
/// v9: softflowd's 29-byte layout; IPFIX: 24 bytes; v9 again: the
/// shortest flow record, 9 bytes, for maximal record counts.
const V9_ID: u16 = 300;
const IPFIX_ID: u16 = 301;
const TINY_ID: u16 = 302;
const V9_FIELDS: layouts::Fields = layouts::SOFTFLOWD_V9;
const IPFIX_FIELDS: [(u16, u16); 4] = [(8, 4), (12, 4), (1, 8), (152, 8)];
const TINY_FIELDS: [(u16, u16); 3] = [(8, 4), (12, 4), (1, 1)];

/// What a case must do: its verdict's frame counter, and the records it
/// parses (each from a subscriber to a peer: one direction, aggregated
/// once) with the bytes they carry.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    stat: XdpStat,
    records: u64,
    bytes: u64,
}

fn case(name: &'static str, frame: Vec<u8>, stat: XdpStat) -> Case {
    Case {
        name,
        frame,
        stat,
        records: 0,
        bytes: 0,
    }
}

fn aggregated(name: &'static str, frame: Vec<u8>, stat: XdpStat, records: u64, bytes: u64) -> Case {
    Case {
        name,
        frame,
        stat,
        records,
        bytes,
    }
}

fn v4_frame(payload: &[u8]) -> Vec<u8> {
    ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp_with(2055, payload)))
}

/// A v5 export of `n` 100-byte records from a subscriber, its count field
/// set to `count`.
fn v5_export(n: usize, count: u16, sampling: u16) -> Vec<u8> {
    let header = v5::Header {
        version: 5,
        sys_uptime: 5_000,
        unix_secs: UNIX_SECS,
        sampling,
        ..v5::Header::default()
    };
    let record = Record {
        src: [198, 18, 100, 1],
        dst: [198, 19, 0, 1],
        packets: 1,
        octets: 100,
        last: 4_000,
        ..Record::default()
    };
    let mut export = encode(&header, &vec![record; n]);
    export[2..4].copy_from_slice(&count.to_be_bytes());
    export
}

fn header(version: u16, domain: u32) -> Header {
    Header {
        version,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: 3_600_000,
        sequence: 1,
        domain,
    }
}

fn template(id: u16, fields: &[(u16, u16)]) -> Template {
    Template {
        id,
        fields: fields
            .iter()
            .map(|&(ie, len)| FieldSpec::iana(ie, len))
            .collect(),
    }
}

/// `n` records of `fields`, each from 198.18.100.1 to 198.19.0.1 carrying
/// `octets` bytes, everything else zero (times: at export).
fn records(fields: &[(u16, u16)], n: usize, octets: u8) -> Vec<Vec<u8>> {
    let record: Vec<u8> = fields
        .iter()
        .flat_map(|&(ie, len)| {
            let mut value = vec![0; usize::from(len)];
            match ie {
                8 => value.copy_from_slice(&[198, 18, 100, 1]),
                12 => value.copy_from_slice(&[198, 19, 0, 1]),
                1 => *value.last_mut().unwrap() = octets,
                _ => {}
            }
            value
        })
        .collect();
    vec![record; n]
}

/// A data set: template id, its fields, how many records.
type DataSet<'a> = (u16, &'a [(u16, u16)], usize);

/// An export of data sets.
fn data(version: u16, sets: &[DataSet]) -> Vec<u8> {
    let sets: Vec<Set> = sets
        .iter()
        .map(|&(id, fields, n)| Set::Data {
            id,
            records: records(fields, n, 50),
        })
        .collect();
    export(&header(version, DOMAIN), &sets, false)
}

fn v9(n: usize) -> Vec<u8> {
    data(V9, &[(V9_ID, V9_FIELDS, n)])
}

fn ipfix(n: usize) -> Vec<u8> {
    data(IPFIX, &[(IPFIX_ID, &IPFIX_FIELDS, n)])
}

fn with(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes
}

/// Compiles the three templates as the daemon would and installs them.
fn install_templates(plane: &mut DataPlane) {
    let teach_v9 = export(
        &header(V9, DOMAIN),
        &[Set::Templates(vec![
            template(V9_ID, V9_FIELDS),
            template(TINY_ID, &TINY_FIELDS),
        ])],
        false,
    );
    let teach_ipfix = export(
        &header(IPFIX, DOMAIN),
        &[Set::Templates(vec![template(IPFIX_ID, &IPFIX_FIELDS)])],
        false,
    );
    let exporter = to_ip(EXPORTER.into());
    let mut cache = TemplateCache::new(Limits::default());
    for teach in [teach_v9, teach_ipfix] {
        cache
            .decode(&exporter, &teach, 0, 0, &mut Vec::new())
            .unwrap();
    }
    let mut kernel = plane.take_templates().unwrap();
    let changes = cache.take_changes();
    assert_eq!(changes.len(), 3, "all three compile");
    for change in changes {
        let TemplateChange::Install(key, template) = change else {
            panic!("{change:?}")
        };
        kernel.install(&key, &template).unwrap();
    }
}

fn cases() -> Vec<Case> {
    use XdpStat::*;
    let v5_frame = |payload: &[u8]| v4_frame(payload);
    let one = v5_export(1, 1, 0);
    vec![
        // Link layer.
        // (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.)
        case(
            "ethertype and nothing",
            ethernet(&[], V4, &[]),
            PassMalformed,
        ),
        case(
            "three VLAN tags: the third ethertype is not IP",
            ethernet(
                &[0x88a8, 0x8100, 0x8100],
                V4,
                &ipv4(UDP, 0, 0, &udp_with(2055, &one)),
            ),
            PassOther,
        ),
        case(
            "VLAN tag cut in half",
            ethernet(&[], 0x8100, &[0, 100]),
            PassMalformed,
        ),
        aggregated(
            "QinQ, v5",
            ethernet(
                &[0x88a8, 0x8100],
                V4,
                &ipv4(UDP, 0, 0, &udp_with(2055, &one)),
            ),
            DropV5Aggregated,
            1,
            100,
        ),
        aggregated(
            "VLAN, IPv6, v5",
            ethernet(&[0x8100], V6, &ipv6(UDP, &udp_with(2055, &one))),
            DropV5Aggregated,
            1,
            100,
        ),
        // IPv4.
        aggregated(
            "IPv4 with 40 bytes of options (IHL 15), v5",
            ethernet(&[], V4, &ipv4(UDP, 0, 10, &udp_with(2055, &one))),
            DropV5Aggregated,
            1,
            100,
        ),
        aggregated(
            "IPv4 with options, IPFIX",
            ethernet(&[], V4, &ipv4(UDP, 0, 3, &udp_with(4739, &ipfix(3)))),
            DropTemplatedAggregated,
            3,
            150,
        ),
        case(
            "IHL 4",
            v4_frame(&one)
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 14 { 0x44 } else { b })
                .collect(),
            PassMalformed,
        ),
        case(
            "IHL 15 but the frame ends inside the options",
            ethernet(&[], V4, &ipv4(UDP, 0, 10, &[])[..40]),
            PassMalformed,
        ),
        // Lengths and versions the stack would refuse: the socket path never
        // sees such a datagram, so the kernel must not count it either.
        case(
            "IPv4 total length 1 past the frame",
            with(
                v4_frame(&one),
                16,
                &(20 + 8 + one.len() as u16 + 1).to_be_bytes(),
            ),
            PassMalformed,
        ),
        case(
            "IPv4 total length 1 short of the UDP datagram",
            with(
                v4_frame(&one),
                16,
                &(20 + 8 + one.len() as u16 - 1).to_be_bytes(),
            ),
            PassMalformed,
        ),
        case(
            "IPv4 total length below the header",
            with(v4_frame(&one), 16, &[0, 19]),
            PassMalformed,
        ),
        case(
            "IPv4 version 6 under the IPv4 ethertype",
            with(v4_frame(&one), 14, &[0x65]),
            PassMalformed,
        ),
        aggregated(
            "IPv4 total length short of Ethernet padding",
            [v4_frame(&one), vec![0; 6]].concat(),
            DropV5Aggregated,
            1,
            100,
        ),
        case(
            "IPv6 payload length 1 past the frame",
            with(
                ethernet(&[], V6, &ipv6(UDP, &udp_with(2055, &one))),
                18,
                &(8 + one.len() as u16 + 1).to_be_bytes(),
            ),
            PassMalformed,
        ),
        case(
            "IPv6 payload length 1 short of the UDP datagram",
            with(
                ethernet(&[], V6, &ipv6(UDP, &udp_with(2055, &one))),
                18,
                &(8 + one.len() as u16 - 1).to_be_bytes(),
            ),
            PassMalformed,
        ),
        case(
            "more fragments, offset 0",
            ethernet(&[], V4, &ipv4(UDP, 0x2000, 0, &udp_with(2055, &one))),
            PassFragment,
        ),
        case(
            "last fragment, offset 185",
            ethernet(&[], V4, &ipv4(UDP, 0x00b9, 0, &one[..40])),
            PassFragment,
        ),
        aggregated(
            "don't-fragment only",
            ethernet(&[], V4, &ipv4(UDP, 0x4000, 0, &udp_with(2055, &one))),
            DropV5Aggregated,
            1,
            100,
        ),
        case(
            "TCP to the collector port",
            ethernet(&[], V4, &ipv4(6, 0, 0, &udp_with(2055, &one))),
            PassOther,
        ),
        // IPv6.
        case(
            "IPv6 fragment header",
            ethernet(&[], V6, &ipv6(44, &[17, 0, 0, 1, 0, 0, 0, 1])),
            PassFragment,
        ),
        case(
            "IPv6 hop-by-hop header before UDP: not walked",
            ethernet(&[], V6, &ipv6(0, &[17, 0, 1, 4, 0, 0, 0, 0])),
            PassOther,
        ),
        case(
            "IPv6 header cut short",
            ethernet(&[], V6, &ipv6(UDP, &[])[..30]),
            PassMalformed,
        ),
        // UDP.
        case(
            "UDP length 7",
            v4_frame(&one)
                .into_iter()
                .enumerate()
                .map(|(i, b)| match i {
                    38 => 0,
                    39 => 7,
                    _ => b,
                })
                .collect(),
            PassMalformed,
        ),
        case(
            "UDP length 1 past the frame",
            {
                let mut frame = v4_frame(&one);
                frame.pop();
                frame
            },
            PassMalformed,
        ),
        aggregated(
            "Ethernet padding after the UDP datagram",
            [v4_frame(&one), vec![0; 18]].concat(),
            DropV5Aggregated,
            1,
            100,
        ),
        case(
            "UDP length 1 short of the v5 export",
            with(
                v4_frame(&one),
                38,
                &(8 + one.len() as u16 - 1).to_be_bytes(),
            ),
            PassV5Invalid,
        ),
        case(
            "UDP to a port that is no collector's",
            ethernet(&[], V4, &ipv4(UDP, 0, 0, &udp_with(2056, &one))),
            PassOther,
        ),
        case("empty UDP payload", v4_frame(&[]), PassUnknownVersion),
        case("1-byte UDP payload", v4_frame(&[0]), PassUnknownVersion),
        case(
            "version 7",
            v4_frame(&with(one.clone(), 0, &[0, 7])),
            PassUnknownVersion,
        ),
        case(
            "version 0xffff",
            v4_frame(&with(one.clone(), 0, &[0xff, 0xff])),
            PassUnknownVersion,
        ),
        // NetFlow v5.
        aggregated(
            "v5, 30 records",
            v5_frame(&v5_export(30, 30, 0)),
            DropV5Aggregated,
            30,
            3000,
        ),
        aggregated(
            "v5 sampled 1 in 16383 (the largest interval)",
            v5_frame(&v5_export(2, 2, 0x4000 | 0x3fff)),
            DropV5Aggregated,
            2,
            2 * 100 * 16383,
        ),
        case("v5 count 0", v5_frame(&v5_export(0, 0, 0)), PassV5Invalid),
        case(
            "v5 count 31",
            v5_frame(&v5_export(31, 31, 0)),
            PassV5Invalid,
        ),
        case(
            "v5 count 65535, 1 record",
            v5_frame(&v5_export(1, 65535, 0)),
            PassV5Invalid,
        ),
        case(
            "v5 count 30, 29 records",
            v5_frame(&v5_export(29, 30, 0)),
            PassV5Invalid,
        ),
        case(
            "v5 count 1, 2 records",
            v5_frame(&v5_export(2, 1, 0)),
            PassV5Invalid,
        ),
        case("v5 header only", v5_frame(&one[..24]), PassV5Invalid),
        case("v5 header cut short", v5_frame(&one[..23]), PassV5Invalid),
        case(
            "v5 and 1 trailing byte",
            v5_frame(&[one.clone(), vec![0]].concat()),
            PassV5Invalid,
        ),
        // NetFlow v9.
        aggregated(
            "v9, 3 records",
            v4_frame(&v9(3)),
            DropTemplatedAggregated,
            3,
            150,
        ),
        aggregated(
            "v9, 3 records and 28 bytes of set padding",
            v4_frame(&{
                let mut export = v9(3);
                export.extend_from_slice(&[0; 28]);
                let set_len = (4 + 3 * 29 + 28) as u16;
                with(export, 22, &set_len.to_be_bytes())
            }),
            DropTemplatedAggregated,
            3,
            150,
        ),
        aggregated(
            "v9, 16 sets (the most the kernel walks)",
            v4_frame(&data(V9, &[(V9_ID, V9_FIELDS, 1); 16])),
            DropTemplatedAggregated,
            16,
            16 * 50,
        ),
        case(
            "v9, 17 sets",
            v4_frame(&data(V9, &[(V9_ID, V9_FIELDS, 1); 17])),
            PassTemplatedInvalid,
        ),
        aggregated(
            "v9, 300 9-byte records",
            v4_frame(&data(V9, &[(TINY_ID, &TINY_FIELDS, 300)])),
            DropTemplatedAggregated,
            300,
            300 * 50,
        ),
        case(
            "v9 header only",
            v4_frame(&v9(0)[..20]),
            PassTemplatedInvalid,
        ),
        case(
            "v9 header cut short",
            v4_frame(&v9(1)[..19]),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set length 0",
            v4_frame(&with(v9(1), 22, &[0, 0])),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set length 3",
            v4_frame(&with(v9(1), 22, &[0, 3])),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set length 1 past the end",
            v4_frame(&with(v9(1), 22, &[0, 34])),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set length 65535",
            v4_frame(&with(v9(1), 22, &[0xff, 0xff])),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set length 1 short, then 1 stray byte",
            v4_frame(&with(v9(1), 22, &[0, 32])),
            PassTemplatedInvalid,
        ),
        case(
            "v9 set header cut short",
            v4_frame(&[v9(1), vec![1, 44]].concat()),
            PassTemplatedInvalid,
        ),
        case(
            "v9 data of an unknown template",
            v4_frame(&with(v9(1), 20, &[1, 55])),
            PassTemplatedToUser,
        ),
        case(
            "v9 data of another domain",
            v4_frame(&with(v9(1), 16, &[0, 0, 0, 8])),
            PassTemplatedToUser,
        ),
        case(
            "v9 compiled data, then data of an unknown template",
            v4_frame(&data(V9, &[(V9_ID, V9_FIELDS, 1), (555, V9_FIELDS, 1)])),
            PassTemplatedToUser,
        ),
        case(
            "v9 compiled data, then a set running past the end",
            v4_frame(&{
                let export = data(V9, &[(V9_ID, V9_FIELDS, 1), (V9_ID, V9_FIELDS, 1)]);
                with(export, 20 + 33 + 2, &[0, 34])
            }),
            PassTemplatedInvalid,
        ),
        // IPFIX.
        aggregated(
            "IPFIX, 3 records",
            v4_frame(&ipfix(3)),
            DropTemplatedAggregated,
            3,
            150,
        ),
        case(
            "IPFIX length 1 too long",
            v4_frame(&with(ipfix(1), 2, &(16 + 28 + 1u16).to_be_bytes())),
            PassTemplatedInvalid,
        ),
        case(
            "IPFIX length 1 too short",
            v4_frame(&with(ipfix(1), 2, &(16 + 28 - 1u16).to_be_bytes())),
            PassTemplatedInvalid,
        ),
        case(
            "IPFIX length 0",
            v4_frame(&with(ipfix(1), 2, &[0, 0])),
            PassTemplatedInvalid,
        ),
        case(
            "IPFIX header cut short",
            v4_frame(&ipfix(1)[..15]),
            PassTemplatedInvalid,
        ),
        // Template sets: passed up whole, and their domain held back.
        case(
            "v9 template flood: 200 templates in one export",
            v4_frame(&export(
                &header(V9, FLOOD_DOMAIN),
                &[Set::Templates(
                    (0..200).map(|i| template(400 + i, &TINY_FIELDS)).collect(),
                )],
                false,
            )),
            PassTemplatedToUser,
        ),
        case(
            "IPFIX empty template set",
            v4_frame(&export(
                &header(IPFIX, FLOOD_DOMAIN),
                &[Set::Templates(vec![])],
                false,
            )),
            PassTemplatedToUser,
        ),
        // Last: the template set holds domain 7 back from here on.
        case(
            "compiled v9 data, then an empty template set",
            v4_frame(&[v9(2), vec![0, 0, 0, 4]].concat()),
            PassTemplatedToUser,
        ),
        case(
            "compiled v9 data while its domain is held",
            v4_frame(&v9(2)),
            PassTemplatedToUser,
        ),
    ]
}

fn totals(stats: &KernelStats) -> (Vec<Counter>, Vec<Counter>) {
    (
        XdpStat::ALL.iter().map(|&s| stats.frames(s)).collect(),
        RecordStat::ALL.iter().map(|&s| stats.records(s)).collect(),
    )
}

fn delta(now: &[Counter], was: &[Counter]) -> Vec<(u64, u64)> {
    now.iter()
        .zip(was)
        .map(|(n, w)| (n.count - w.count, n.bytes - w.bytes))
        .collect()
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn every_hostile_frame_gets_its_verdict_and_moves_exactly_its_counters() {
    require_root();
    let config = kernel_config(&[2055, 4739], &["198.18.100.0/24"]);
    let mut plane = DataPlane::start(&[], &config).expect("the program loads");
    install_templates(&mut plane);
    let stats = plane.take_stats().unwrap();
    let cases = cases();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for c in cases {
        let (frames_before, records_before) = totals(&stats);
        let verdict = xdp_action(c.stat.verdict());
        let ran = plane.run_frame(&c.frame);
        assert_eq!(
            ran.unwrap_or_else(|e| panic!("{}: {e}", c.name)),
            verdict,
            "{}",
            c.name
        );
        let (frames, records) = totals(&stats);
        let expected: Vec<_> = XdpStat::ALL
            .iter()
            .map(|&s| {
                if s == c.stat {
                    (1, c.frame.len() as u64)
                } else {
                    (0, 0)
                }
            })
            .collect();
        assert_eq!(
            delta(&frames, &frames_before),
            expected,
            "{}: frames",
            c.name
        );
        let expected: Vec<_> = RecordStat::ALL
            .iter()
            .map(|&s| match s {
                RecordStat::Parsed | RecordStat::Aggregated => (c.records, c.bytes),
                _ => (0, 0),
            })
            .collect();
        assert_eq!(
            delta(&records, &records_before),
            expected,
            "{}: records",
            c.name
        );
    }
}

/// With an exporter allow-list, a stranger's exports are dropped before
/// any parsing; its other traffic is not touched.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_strangers_exports_are_dropped_and_nothing_else_of_it() {
    require_root();
    let mut config = kernel_config(&[2055], &["198.18.100.0/24"]);
    config.exporters = vec!["198.18.0.1".parse().unwrap()];
    let mut plane = DataPlane::start(&[], &config).expect("the program loads");
    let stats = plane.take_stats().unwrap();
    let one = v5_export(1, 1, 0);
    let stranger = [198, 18, 0, 9];
    let cases = [
        (
            ipv4_from(EXPORTER, UDP, 0, 0, &udp_with(2055, &one)),
            XdpStat::DropV5Aggregated,
        ),
        (
            ipv4_from(stranger, UDP, 0, 0, &udp_with(2055, &one)),
            XdpStat::DropUnknownExporter,
        ),
        (
            ipv4_from(stranger, UDP, 0, 0, &udp_with(2055, &v5_export(31, 31, 0))),
            XdpStat::DropUnknownExporter,
        ),
        (
            ipv4_from(stranger, UDP, 0, 0, &udp_with(53, &one)),
            XdpStat::PassOther,
        ),
        (
            ipv4_from(stranger, UDP, 0x2000, 0, &udp_with(2055, &one)),
            XdpStat::PassFragment,
        ),
    ];
    for (i, (packet, stat)) in cases.into_iter().enumerate() {
        let frame = ethernet(&[], V4, &packet);
        let before = stats.frames(stat).count;
        let parsed = stats.records(RecordStat::Parsed).count;
        let verdict = xdp_action(stat.verdict());
        assert_eq!(plane.run_frame(&frame).unwrap(), verdict, "case {i}");
        assert_eq!(stats.frames(stat).count, before + 1, "case {i}");
        let records = u64::from(stat == XdpStat::DropV5Aggregated);
        assert_eq!(
            stats.records(RecordStat::Parsed).count,
            parsed + records,
            "case {i}"
        );
    }
}
