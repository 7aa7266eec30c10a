//! NetFlow v9 and IPFIX through the real XDP program (BPF_PROG_TEST_RUN)
//! and through the socket path's template cache: for every template shape
//! the suite generates — field orders and sizes, IPv4 and IPv6, every time
//! encoding, sampling from options — the kernel aggregates exactly what the
//! socket path does, whether it answers IPv6 membership from its short list
//! or its trie, and keeps IPv6 keys in its IPv6 table or its map.

mod support;

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    ip::to_ip,
    netflow::{
        Limits, TemplateCache, TemplateChange,
        encode::{OptionsTemplate, Set, Template, export},
        layouts,
        sets::{FieldSpec, Header, IPFIX, V9},
    },
    subscribers::SubscriberNets,
    xdp::DataPlane,
};
use flowtally_common::{
    DEFAULT_AGGREGATE_ENTRIES_V6, XdpStat,
    agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START, KEEP_ALL},
    members::MAX_LISTED_V6,
    template::ie,
};
use support::{frames::udp_v4_frame, kernel_config, require_root, v5gen::Rng};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const EXPORTER: [u8; 4] = [198, 18, 0, 1];
const UNIX_SECS: u32 = 1_700_000_000;
const SYS_UPTIME_MS: u32 = 3_600_000;
/// Seconds from the NTP era to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

struct Shape {
    name: &'static str,
    version: u16,
    fields: &'static [(u16, u16)],
    /// Options data sent with the template: (IE, value) pairs.
    options: &'static [(u16, u64)],
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "v9, IPv4, uptime times (softflowd's layout)",
        version: V9,
        fields: layouts::SOFTFLOWD_V9,
        options: &[],
    },
    Shape {
        name: "v9, IPv4, 8-byte counters reordered, sampled 1 in 100",
        version: V9,
        fields: layouts::V4_WIDE_COUNTERS_FIRST,
        options: &[(ie::SAMPLING_INTERVAL, 100)],
    },
    Shape {
        name: "IPFIX, IPv4, millisecond times",
        version: IPFIX,
        fields: layouts::V4_MILLISECONDS,
        options: &[],
    },
    Shape {
        name: "IPFIX, IPv6, second times",
        version: IPFIX,
        fields: &[
            (27, 16),
            (28, 16),
            (7, 2),
            (11, 2),
            (4, 1),
            (1, 4),
            (2, 4),
            (150, 4),
            (151, 4),
        ],
        options: &[],
    },
    Shape {
        name: "IPFIX, IPv6, NTP microseconds, odd counter sizes, extra fields",
        version: IPFIX,
        fields: &[
            (10, 4),
            (28, 16),
            (5, 1),
            (27, 16),
            (1, 3),
            (2, 2),
            (14, 4),
            (154, 8),
            (155, 8),
            (4, 1),
        ],
        options: &[],
    },
    Shape {
        name: "IPFIX, IPv4, uptime times with systemInitTimeMilliseconds, sampled 1 in 8",
        version: IPFIX,
        fields: &[
            (8, 4),
            (12, 4),
            (1, 4),
            (2, 4),
            (22, 4),
            (21, 4),
            (7, 2),
            (11, 2),
            (4, 1),
        ],
        options: &[
            (ie::SYSTEM_INIT_TIME_MILLISECONDS, 1_699_990_000_000),
            (ie::SAMPLING_PACKET_INTERVAL, 1),
            (ie::SAMPLING_PACKET_SPACE, 7),
        ],
    },
];

const TEMPLATE_ID: u16 = 300;
const OPTIONS_ID: u16 = 301;

fn header(version: u16, sequence: u32) -> Header {
    Header {
        version,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: SYS_UPTIME_MS,
        sequence,
        domain: 7,
    }
}

/// The datagram that teaches the template (and options state).
fn template_export(shape: &Shape) -> Vec<u8> {
    let fields = shape
        .fields
        .iter()
        .map(|&(ie, len)| FieldSpec::iana(ie, len))
        .collect();
    let mut sets = vec![Set::Templates(vec![Template {
        id: TEMPLATE_ID,
        fields,
    }])];
    if !shape.options.is_empty() {
        // v9 scope type 1 is "system"; IPFIX scopes by observation domain.
        let scope = if shape.version == V9 {
            FieldSpec::iana(1, 4)
        } else {
            FieldSpec::iana(149, 4)
        };
        let options = shape
            .options
            .iter()
            .map(|&(ie, _)| FieldSpec::iana(ie, option_len(ie)))
            .collect();
        sets.push(Set::OptionsTemplates(vec![OptionsTemplate {
            id: OPTIONS_ID,
            scope: vec![scope],
            options,
        }]));
        let mut record = 7u32.to_be_bytes().to_vec();
        for &(ie, value) in shape.options {
            let len = usize::from(option_len(ie));
            record.extend_from_slice(&value.to_be_bytes()[8 - len..]);
        }
        sets.push(Set::Data {
            id: OPTIONS_ID,
            records: vec![record],
        });
    }
    export(&header(shape.version, 0), &sets, true)
}

fn option_len(ie: u16) -> u16 {
    if ie == ie::SYSTEM_INIT_TIME_MILLISECONDS {
        8
    } else {
        4
    }
}

/// A data-only export of `n` random records of `shape`.
fn data_export(shape: &Shape, n: usize, sequence: u32, rng: &mut Rng) -> Vec<u8> {
    let records = (0..n)
        .map(|_| {
            let inside = rng.below(3) != 2;
            let peer = rng.below(10) as u8 + 1;
            let subscriber = rng.below(20) as u8 + 1;
            let end_ms = u64::from(UNIX_SECS) * 1000 - rng.below(180_000);
            let start_ms = end_ms - rng.below(30_000);
            let mut record = Vec::new();
            for &(ie, len) in shape.fields {
                let value: Vec<u8> = match ie {
                    8 | 27 | 12 | 28 => {
                        let src = matches!(ie, 8 | 27);
                        // Up or down for a subscriber, or transit.
                        let host = if inside && src { subscriber } else { peer };
                        let sub = inside && src;
                        address(len, sub, host)
                    }
                    21 | 22 => {
                        let ms = if ie == 21 { end_ms } else { start_ms };
                        let age = u64::from(UNIX_SECS) * 1000 - ms;
                        let uptime = if shape.version == V9 {
                            u64::from(SYS_UPTIME_MS) - age
                        } else {
                            ms - 1_699_990_000_000
                        };
                        (uptime as u32).to_be_bytes().to_vec()
                    }
                    150 | 151 => ((if ie == 151 { end_ms } else { start_ms } / 1000) as u32)
                        .to_be_bytes()
                        .to_vec(),
                    152 | 153 => (if ie == 153 { end_ms } else { start_ms })
                        .to_be_bytes()
                        .to_vec(),
                    154 | 155 => {
                        let ms = if ie == 155 { end_ms } else { start_ms };
                        let secs = ms / 1000 + NTP_UNIX_OFFSET;
                        let frac = ((ms % 1000) << 32) / 1000 + 1;
                        ((secs << 32) | frac).to_be_bytes().to_vec()
                    }
                    _ => {
                        let value = rng.next_u64();
                        value.to_be_bytes()[8 - usize::from(len)..].to_vec()
                    }
                };
                assert_eq!(value.len(), usize::from(len), "field {ie}");
                record.extend_from_slice(&value);
            }
            record
        })
        .collect();
    export(
        &header(shape.version, sequence),
        &[Set::Data {
            id: TEMPLATE_ID,
            records,
        }],
        true,
    )
}

fn address(len: u16, subscriber: bool, host: u8) -> Vec<u8> {
    match (len, subscriber) {
        (4, true) => vec![198, 18, 100, host],
        (4, false) => vec![198, 19, 0, host],
        (_, true) => [&[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00][..], &[0; 9], &[host]].concat(),
        (_, false) => [&[0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00][..], &[0; 9], &[host]].concat(),
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_and_socket_paths_agree_for_every_template_shape() {
    require_root();
    let exporter = to_ip(EXPORTER.into());
    let nets = ["198.18.100.0/24", "2001:db8:100::/48"];
    // More IPv6 subscriber networks than the program lists (the trie
    // answers for IPv6 then), with the IPv6 table at its smallest (most
    // IPv6 keys go to the map).
    let more: Vec<String> = (1..=MAX_LISTED_V6)
        .map(|i| format!("2001:db8:f{i:03x}::/48"))
        .collect();
    let many: Vec<&str> = nets
        .into_iter()
        .chain(more.iter().map(String::as_str))
        .collect();
    let variants = [
        (FLAG_SCALE_SAMPLING, &nets[..], DEFAULT_AGGREGATE_ENTRIES_V6),
        (
            FLAG_TIME_FROM_START,
            &nets[..],
            DEFAULT_AGGREGATE_ENTRIES_V6,
        ),
        (FLAG_SCALE_SAMPLING, &many[..], 1),
    ];
    for shape in SHAPES {
        for (flags, nets, entries_v6) in variants {
            let mut config = kernel_config(&[2055], nets);
            config.profile.keep = KEEP_ALL;
            config.flags = flags;
            config.aggregate_entries_v6 = entries_v6;
            let mut plane = DataPlane::start(&[], &config).expect("the program loads");
            let mut kernel = plane.take_templates().unwrap();
            let mut cache = TemplateCache::new(Limits::default());
            let mut records = Vec::new();
            let now_ms = u64::from(UNIX_SECS) * 1000;

            let teach = template_export(shape);
            let frame = udp_v4_frame(EXPORTER, 2055, &teach);
            assert_eq!(
                plane.run_frame(&frame).unwrap(),
                XDP_PASS,
                "{}: templates go up",
                shape.name
            );
            cache
                .decode(&exporter, &teach, now_ms, flags, &mut records)
                .unwrap();
            let changes = cache.take_changes();
            assert!(
                changes
                    .iter()
                    .any(|c| matches!(c, TemplateChange::Install(..))),
                "{}: compiles",
                shape.name
            );
            for change in changes {
                if let TemplateChange::Install(key, template) = change {
                    kernel.install(&key, &template).unwrap();
                }
            }
            // As the daemon does once the changes are in: lift the hold the
            // template export put on the domain.
            let domain = flowtally_common::template::TemplateKey {
                exporter,
                domain: 7,
                template_id: 0,
                version: shape.version,
            };
            kernel.release(&domain).unwrap();

            let mut aggregator = Aggregator::new(
                config.profile,
                flags,
                SubscriberNets::new(&config.subscriber_networks),
            );
            let mut rng = Rng(0x9e37_79b9 ^ u64::from(shape.version));
            // The last export holds as many records as a test frame takes:
            // for the shorter layouts, more IPv4 aggregates than the
            // program's per-export backlog holds (64).
            let record_len: usize = shape.fields.iter().map(|&(_, len)| usize::from(len)).sum();
            for sequence in 1..=20 {
                let n = if sequence == 20 {
                    (2_900 / record_len).min(100)
                } else {
                    1 + rng.below(40) as usize
                };
                let data = data_export(shape, n, sequence, &mut rng);
                let frame = udp_v4_frame(EXPORTER, 2055, &data);
                assert_eq!(plane.run_frame(&frame).unwrap(), XDP_DROP, "{}", shape.name);
                records.clear();
                let report = cache
                    .decode(&exporter, &data, now_ms, flags, &mut records)
                    .unwrap();
                assert_eq!(report.records, n as u64, "{}", shape.name);
                for record in &records {
                    aggregator.add(&exporter, record);
                }
            }

            let stats = plane.take_stats().unwrap();
            assert_eq!(stats.frames(XdpStat::DropTemplatedAggregated).count, 20);
            let mut xdp = Table::new();
            plane
                .take_drainer()
                .unwrap()
                .drain(|key, value| merge(&mut xdp, key, value))
                .unwrap();
            let socket = aggregator.take();
            assert!(!xdp.is_empty());
            let what = format!("{} flags {flags:#x}, {} networks", shape.name, nets.len());
            assert_eq!(xdp.len(), socket.len(), "{what}");
            assert!(xdp == socket, "{what}: tables differ");
        }
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn data_without_a_compiled_template_and_malformed_exports_go_up_whole() {
    require_root();
    let config = kernel_config(&[2055], &["198.18.100.0/24"]);
    let plane = DataPlane::start(&[], &config).expect("the program loads");
    let shape = &SHAPES[0];
    let mut rng = Rng(1);
    let data = data_export(shape, 5, 1, &mut rng);
    let mut cases = vec![
        (
            "unknown template",
            data.clone(),
            XdpStat::PassTemplatedToUser,
        ),
        (
            "header cut short",
            data[..12].to_vec(),
            XdpStat::PassTemplatedInvalid,
        ),
    ];
    let mut lying = data.clone();
    lying[22..24].copy_from_slice(&60_000u16.to_be_bytes()); // set length past the end
    cases.push(("set past the end", lying, XdpStat::PassTemplatedInvalid));
    let mut ipfix = data_export(&SHAPES[2], 3, 1, &mut rng);
    ipfix[2..4].copy_from_slice(&999u16.to_be_bytes()); // message length mismatch
    cases.push((
        "IPFIX length mismatch",
        ipfix,
        XdpStat::PassTemplatedInvalid,
    ));
    // Last: it holds the domain's data back until userspace has seen it.
    let teach = template_export(shape);
    cases.push(("template set", teach, XdpStat::PassTemplatedToUser));
    let mut stats = plane;
    let counters = stats.take_stats().unwrap();
    for (name, payload, expected) in cases {
        let before = counters.frames(expected).count;
        let frame = udp_v4_frame(EXPORTER, 2055, &payload);
        assert_eq!(stats.run_frame(&frame).unwrap(), XDP_PASS, "{name}");
        assert_eq!(counters.frames(expected).count, before + 1, "{name}");
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_template_export_holds_its_domain_back_until_userspace_has_applied_it() {
    require_root();
    let config = kernel_config(&[2055], &["198.18.100.0/24"]);
    let mut plane = DataPlane::start(&[], &config).expect("the program loads");
    let mut kernel = plane.take_templates().unwrap();
    let shape = &SHAPES[0];
    let exporter = to_ip(EXPORTER.into());
    let mut cache = TemplateCache::new(Limits::default());
    let teach = template_export(shape);
    cache
        .decode(&exporter, &teach, 0, 0, &mut Vec::new())
        .unwrap();
    for change in cache.take_changes() {
        if let TemplateChange::Install(key, template) = change {
            kernel.install(&key, &template).unwrap();
        }
    }
    let data = udp_v4_frame(EXPORTER, 2055, &data_export(shape, 3, 1, &mut Rng(5)));
    let teach = udp_v4_frame(EXPORTER, 2055, &teach);
    let domain = flowtally_common::template::TemplateKey {
        exporter,
        domain: 7,
        template_id: 0,
        version: shape.version,
    };
    assert_eq!(plane.run_frame(&data).unwrap(), XDP_DROP, "compiled");

    assert_eq!(plane.run_frame(&teach).unwrap(), XDP_PASS);
    assert_eq!(
        plane.run_frame(&data).unwrap(),
        XDP_PASS,
        "held: the template may change"
    );
    kernel.release(&domain).unwrap();
    assert_eq!(plane.run_frame(&data).unwrap(), XDP_DROP, "released");

    assert_eq!(plane.run_frame(&teach).unwrap(), XDP_PASS);
    kernel.release_stale(1_000).unwrap();
    kernel.release_stale(4_000).unwrap();
    assert_eq!(
        plane.run_frame(&data).unwrap(),
        XDP_PASS,
        "still held after 3 s"
    );
    kernel.release_stale(7_000).unwrap();
    assert_eq!(
        plane.run_frame(&data).unwrap(),
        XDP_DROP,
        "a lost export's hold lapses"
    );
    kernel.release(&domain).unwrap();
    assert_eq!(plane.run_frame(&teach).unwrap(), XDP_PASS);
    assert_eq!(
        plane.run_frame(&data).unwrap(),
        XDP_PASS,
        "a late release never runs ahead of what the kernel saw"
    );
}
