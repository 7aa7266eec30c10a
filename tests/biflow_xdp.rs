//! RFC 5103 biflows: IPFIX records whose template carries reverse counters
//! (reverseOctetDeltaCount, reversePacketDeltaCount: PEN 29305, IEs 1 and
//! 2) are billed in both directions — the forward counters from source to
//! destination, the reverse ones from destination to source. Exports built
//! with the encoder in several template shapes go through the real XDP
//! program (BPF_PROG_TEST_RUN) and through the socket path's template
//! cache: both bill every direction exactly (checked against totals summed
//! from the generated records), and agree aggregate for aggregate.

mod support;

use std::collections::BTreeMap;

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    ip::to_ip,
    netflow::{
        Limits, TemplateCache, TemplateChange,
        encode::{Set, Template, export, varlen},
        sets::{FieldSpec, Header, IPFIX, VARLEN},
    },
    subscribers::SubscriberNets,
    xdp::DataPlane,
};
use flowtally_common::{
    XdpStat,
    agg::{Direction, FLAG_SCALE_SAMPLING, Ip, KEEP_ALL, ip_from_v4},
    template::{TemplateKey, ie::REVERSE_PEN},
};
use support::{frames::udp_v4_frame, kernel_config, require_root, v5gen::Rng};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const EXPORTER: [u8; 4] = [198, 18, 0, 1];
const UNIX_SECS: u32 = 1_700_000_000;
const TEMPLATE_ID: u16 = 400;

/// A field: IANA (`pen` 0) or reverse (`pen` 29305), its id and length.
type Field = (u32, u16, u16);

struct Shape {
    name: &'static str,
    fields: &'static [Field],
    /// The kernel can read it (fixed length); otherwise the socket path.
    kernel: bool,
}

const R: u32 = REVERSE_PEN;

const SHAPES: &[Shape] = &[
    Shape {
        name: "IPv4, 8-byte counters both ways, millisecond times (YAF's shape)",
        fields: &[
            (0, 152, 8),
            (0, 153, 8),
            (0, 8, 4),
            (0, 12, 4),
            (0, 7, 2),
            (0, 11, 2),
            (0, 4, 1),
            (0, 1, 8),
            (0, 2, 8),
            (R, 1, 8),
            (R, 2, 8),
        ],
        kernel: true,
    },
    Shape {
        name: "IPv6, reverse octets only, 4 bytes, second times",
        fields: &[
            (0, 27, 16),
            (0, 28, 16),
            (0, 1, 4),
            (R, 1, 4),
            (0, 2, 4),
            (0, 151, 4),
        ],
        kernel: true,
    },
    Shape {
        name: "IPv4, reverse counters first, odd sizes, interfaces (softflowd -b's order)",
        fields: &[
            (R, 2, 2),
            (R, 1, 3),
            (0, 10, 4),
            (0, 14, 4),
            (0, 8, 4),
            (0, 12, 4),
            (0, 1, 4),
            (0, 2, 4),
            (0, 153, 8),
        ],
        kernel: true,
    },
    Shape {
        name: "IPv4 with a variable-length field: socket path only",
        fields: &[
            (0, 8, 4),
            (0, 12, 4),
            (0, 1, 4),
            (R, 1, 4),
            (0, 82, VARLEN),
            (0, 153, 8),
        ],
        kernel: false,
    },
];

fn spec(&(pen, id, len): &Field) -> FieldSpec {
    if pen == 0 {
        FieldSpec::iana(id, len)
    } else {
        FieldSpec::enterprise(id, len, pen)
    }
}

fn header(sequence: u32) -> Header {
    Header {
        version: IPFIX,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: 0,
        sequence,
        domain: 3,
    }
}

fn address(len: u16, subscriber: bool, host: u8) -> Vec<u8> {
    match (len, subscriber) {
        (4, true) => vec![198, 18, 100, host],
        (4, false) => vec![198, 19, 0, host],
        (_, true) => [&[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00][..], &[0; 9], &[host]].concat(),
        (_, false) => [&[0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00][..], &[0; 9], &[host]].concat(),
    }
}

fn ip(bytes: &[u8]) -> Ip {
    match bytes.len() {
        4 => ip_from_v4([bytes[0], bytes[1], bytes[2], bytes[3]]),
        _ => bytes.try_into().unwrap(),
    }
}

/// Bytes per (subscriber, direction), as the generator meant them.
type Expected = BTreeMap<(Ip, u8), u64>;

/// A data export of `n` records of `shape`; adds what each direction of
/// each record bills to `expected`.
fn data_export(
    shape: &Shape,
    n: usize,
    sequence: u32,
    rng: &mut Rng,
    expected: &mut Expected,
) -> Vec<u8> {
    let records = (0..n)
        .map(|_| {
            // The subscriber starts the biflow, or the peer does.
            let subscriber_first = rng.below(2) == 0;
            let (sub_host, peer_host) = (rng.below(20) as u8 + 1, rng.below(10) as u8 + 1);
            let mut record = Vec::new();
            let (mut src, mut dst) = (Vec::new(), Vec::new());
            let (mut forward, mut reverse) = (0u64, 0u64);
            for field in shape.fields {
                let (pen, id, len) = *field;
                let value: Vec<u8> = match (pen, id) {
                    (0, 8 | 27) => {
                        src = address(
                            len,
                            subscriber_first,
                            if subscriber_first {
                                sub_host
                            } else {
                                peer_host
                            },
                        );
                        src.clone()
                    }
                    (0, 12 | 28) => {
                        dst = address(
                            len,
                            !subscriber_first,
                            if subscriber_first {
                                peer_host
                            } else {
                                sub_host
                            },
                        );
                        dst.clone()
                    }
                    (0, 151) => UNIX_SECS.to_be_bytes().to_vec(),
                    (0, 152 | 153) => (u64::from(UNIX_SECS) * 1000 - rng.below(60_000))
                        .to_be_bytes()
                        .to_vec(),
                    (0, 82) => {
                        let mut out = Vec::new();
                        varlen(&mut out, b"eth0");
                        out
                    }
                    _ => {
                        let max = 1u64 << (8 * u32::from(len.min(4)) - 2);
                        // A fifth of the biflows got no answer at all.
                        let value = if pen == R && rng.below(5) == 0 {
                            0
                        } else {
                            rng.below(max)
                        };
                        match (pen, id) {
                            (0, 1) => forward = value,
                            (R, 1) => reverse = value,
                            _ => {}
                        }
                        value.to_be_bytes()[8 - usize::from(len)..].to_vec()
                    }
                };
                record.extend_from_slice(&value);
            }
            let (subscriber, up_is_forward) = if subscriber_first {
                (ip(&src), true)
            } else {
                (ip(&dst), false)
            };
            let (up, down) = if up_is_forward {
                (forward, reverse)
            } else {
                (reverse, forward)
            };
            *expected
                .entry((subscriber, Direction::Up as u8))
                .or_default() += up;
            *expected
                .entry((subscriber, Direction::Down as u8))
                .or_default() += down;
            record
        })
        .collect();
    export(
        &header(sequence),
        &[Set::Data {
            id: TEMPLATE_ID,
            records,
        }],
        true,
    )
}

fn billed(table: &Table) -> Expected {
    let mut sums = Expected::new();
    for (key, value) in table {
        *sums.entry((key.subscriber, key.direction)).or_default() += value.bytes;
    }
    // A reverse direction with packets but no octets bills nothing.
    sums.retain(|_, bytes| *bytes > 0);
    sums
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn biflows_bill_both_directions_exactly_in_the_kernel_and_on_sockets() {
    require_root();
    let exporter = to_ip(EXPORTER.into());
    for shape in SHAPES {
        let mut config = kernel_config(&[4739], &["198.18.100.0/24", "2001:db8:100::/48"]);
        config.profile.keep = KEEP_ALL;
        config.flags = FLAG_SCALE_SAMPLING;
        let mut plane = DataPlane::start(&[], &config).expect("the program loads");
        let mut kernel = plane.take_templates().unwrap();
        let mut cache = TemplateCache::new(Limits::default());
        let mut records = Vec::new();
        let now_ms = u64::from(UNIX_SECS) * 1000;

        let teach = export(
            &header(0),
            &[Set::Templates(vec![Template {
                id: TEMPLATE_ID,
                fields: shape.fields.iter().map(spec).collect(),
            }])],
            true,
        );
        assert_eq!(
            plane
                .run_frame(&udp_v4_frame(EXPORTER, 4739, &teach))
                .unwrap(),
            XDP_PASS
        );
        cache
            .decode(&exporter, &teach, now_ms, config.flags, &mut records)
            .unwrap();
        let mut compiled = false;
        for change in cache.take_changes() {
            if let TemplateChange::Install(key, template) = change {
                assert!(
                    template.rev_octets.present(),
                    "{}: reverse octets found",
                    shape.name
                );
                kernel.install(&key, &template).unwrap();
                compiled = true;
            }
        }
        assert_eq!(compiled, shape.kernel, "{}", shape.name);
        kernel
            .release(&TemplateKey {
                exporter,
                domain: 3,
                template_id: 0,
                version: IPFIX,
            })
            .unwrap();

        let mut aggregator = Aggregator::new(
            config.profile,
            config.flags,
            SubscriberNets::new(&config.subscriber_networks),
        );
        let mut expected = Expected::new();
        let mut rng = Rng(0x5103 ^ shape.fields.len() as u64);
        let mut sent_records = 0;
        for sequence in 1..=12 {
            let n = 1 + rng.below(30) as usize;
            let data = data_export(shape, n, sent_records, &mut rng, &mut expected);
            sent_records += n as u32;
            let verdict = plane
                .run_frame(&udp_v4_frame(EXPORTER, 4739, &data))
                .unwrap();
            let want = if shape.kernel { XDP_DROP } else { XDP_PASS };
            assert_eq!(verdict, want, "{} export {sequence}", shape.name);
            records.clear();
            let report = cache
                .decode(&exporter, &data, now_ms, config.flags, &mut records)
                .unwrap();
            assert_eq!(
                report.data_records, n as u64,
                "a biflow record is one data record"
            );
            for record in &records {
                aggregator.add(&exporter, record);
            }
        }
        expected.retain(|_, bytes| *bytes > 0);

        let socket = aggregator.take();
        assert_eq!(
            billed(&socket),
            expected,
            "{}: socket path bills both directions",
            shape.name
        );
        let mut xdp = Table::new();
        plane
            .take_drainer()
            .unwrap()
            .drain(|key, value| merge(&mut xdp, key, value))
            .unwrap();
        if shape.kernel {
            let stats = plane.take_stats().unwrap();
            assert_eq!(stats.frames(XdpStat::DropTemplatedAggregated).count, 12);
            assert!(
                xdp == socket,
                "{}: XDP and socket tables differ",
                shape.name
            );
        } else {
            assert!(xdp.is_empty(), "{}: the kernel left it alone", shape.name);
        }
    }
}
