//! The committed seed corpora (`collector/fuzz/seeds/<target>/`): built
//! here from the encoders, checked to be current, and run through every
//! entry point. `FLOWTALLY_WRITE_SEEDS=1 cargo test -p flowtally seeds`
//! rewrites them after a deliberate change.

use std::{env, fs, path::PathBuf};

use flowtally_common::template::ie;

use super::*;
use crate::netflow::encode::varlen;
use crate::netflow::layouts;

/// A template shape: version, fields and options data (IE, value).
struct Shape {
    version: u16,
    fields: &'static [(u16, u16)],
    options: &'static [(u16, u64)],
}

const SHAPES: &[Shape] = &[
    // softflowd's v9 layout, uptime times.
    Shape {
        version: V9,
        fields: layouts::SOFTFLOWD_V9,
        options: &[],
    },
    // v9, 8-byte counters first, sampled 1 in 100.
    Shape {
        version: V9,
        fields: layouts::V4_WIDE_COUNTERS_FIRST,
        options: &[(ie::SAMPLING_INTERVAL, 100)],
    },
    // IPFIX, IPv4, millisecond times.
    Shape {
        version: IPFIX,
        fields: layouts::V4_MILLISECONDS,
        options: &[],
    },
    // IPFIX, IPv6, NTP times, odd counter sizes, interfaces.
    Shape {
        version: IPFIX,
        fields: layouts::V6_MICROSECONDS_ODD_COUNTERS,
        options: &[],
    },
    // IPFIX uptimes with systemInitTimeMilliseconds.
    Shape {
        version: IPFIX,
        fields: layouts::V4_UPTIME_PROTOCOL_LAST,
        options: &[(ie::SYSTEM_INIT_TIME_MILLISECONDS, 1_699_990_000_000)],
    },
];

/// NAT event layouts: never flows, always NAT events.
const NAT_SHAPES: &[Shape] = &[
    Shape {
        version: V9,
        fields: layouts::NEL_V9,
        options: &[],
    },
    Shape {
        version: IPFIX,
        fields: layouts::PORT_BLOCK_IPFIX,
        options: &[],
    },
];

const TEMPLATE_ID: u16 = 300;
const OPTIONS_ID: u16 = 301;

fn header(version: u16) -> Header {
    Header {
        version,
        unix_secs: 1_700_000_000,
        sys_uptime_ms: if version == V9 { 3_600_000 } else { 0 },
        sequence: 1,
        domain: 7,
    }
}

fn teach(shape: &Shape) -> Vec<u8> {
    let fields = shape
        .fields
        .iter()
        .map(|&(ie, len)| FieldSpec::iana(ie, len))
        .collect();
    let mut sets = vec![EncodedSet::Templates(vec![Template {
        id: TEMPLATE_ID,
        fields,
    }])];
    if !shape.options.is_empty() {
        let scope = FieldSpec::iana(if shape.version == V9 { 1 } else { 149 }, 4);
        let len = |ie| {
            if ie == ie::SYSTEM_INIT_TIME_MILLISECONDS {
                8
            } else {
                4
            }
        };
        let options = shape
            .options
            .iter()
            .map(|&(ie, _)| FieldSpec::iana(ie, len(ie)));
        sets.push(EncodedSet::OptionsTemplates(vec![OptionsTemplate {
            id: OPTIONS_ID,
            scope: vec![scope],
            options: options.collect(),
        }]));
        let mut record = 7u32.to_be_bytes().to_vec();
        for &(ie, value) in shape.options {
            record.extend_from_slice(&value.to_be_bytes()[8 - usize::from(len(ie))..]);
        }
        sets.push(EncodedSet::Data {
            id: OPTIONS_ID,
            records: vec![record],
        });
    }
    encode::export(&header(shape.version), &sets, true)
}

/// `n` records of `shape` whose bytes count up from `seed`, with addresses
/// in 198.18.0.0/15 or 2001:db8::/32 and times near the header's.
fn data(shape: &Shape, n: u8, seed: u8) -> Vec<u8> {
    let records = (0..n)
        .map(|i| {
            let mut record = Vec::new();
            for &(ie, len) in shape.fields {
                let mut value: Vec<u8> = (0..len).map(|b| seed ^ i ^ b as u8).collect();
                match (ie, len) {
                    (8 | 12, 4) => value[..2].copy_from_slice(&[198, 18]),
                    (27 | 28, 16) => value[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]),
                    (150 | 151, 4) => value.copy_from_slice(&1_699_999_990u32.to_be_bytes()),
                    (152 | 153, 8) => value.copy_from_slice(&1_699_999_990_123u64.to_be_bytes()),
                    _ => {}
                }
                record.extend_from_slice(&value);
            }
            record
        })
        .collect();
    let sets = [EncodedSet::Data {
        id: TEMPLATE_ID,
        records,
    }];
    encode::export(&header(shape.version), &sets, true)
}

fn v5_seeds() -> Vec<Vec<u8>> {
    let header = flowtally_common::v5::Header {
        version: 5,
        sys_uptime: 3_600_000,
        unix_secs: 1_700_000_000,
        sampling: 0x4000 | 10,
        ..Default::default()
    };
    let record = |i: u8| nf5::Record {
        src: [198, 18, 100, i],
        dst: [198, 19, 0, i],
        packets: 3,
        octets: 1500 + u32::from(i),
        first: 3_500_000,
        last: 3_599_000,
        src_port: 40_000,
        dst_port: 443,
        protocol: 6,
        input: 2,
        output: 3,
        ..Default::default()
    };
    let one = nf5::encode(&header, &[record(1)]);
    let thirty = nf5::encode(&header, &(0..30).map(record).collect::<Vec<_>>());
    let mut lying = nf5::encode(&header, &[record(1), record(2)]);
    lying[2..4].copy_from_slice(&3u16.to_be_bytes());
    vec![one, thirty, lying]
}

fn templates_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = SHAPES
        .iter()
        .chain(NAT_SHAPES)
        .map(|s| frame(&[&data(s, 2, 1), &teach(s), &data(s, 3, 9)]))
        .collect();
    // IPFIX variable-length fields, then a withdrawal of every template.
    let fields = vec![
        FieldSpec::iana(8, 4),
        FieldSpec::iana(12, 4),
        FieldSpec::iana(1, 4),
        FieldSpec::iana(82, 65_535),
    ];
    let mut record = vec![198, 18, 0, 5, 198, 19, 0, 6, 0, 0, 5, 220];
    varlen(&mut record, b"eth0");
    let varlen_template = encode::export(
        &header(IPFIX),
        &[
            EncodedSet::Templates(vec![Template {
                id: TEMPLATE_ID,
                fields,
            }]),
            EncodedSet::Data {
                id: TEMPLATE_ID,
                records: vec![record],
            },
        ],
        false,
    );
    let withdraw_all = encode::export(
        &header(IPFIX),
        &[EncodedSet::Templates(vec![Template {
            id: 2,
            fields: vec![],
        }])],
        false,
    );
    seeds.push(frame(&[&varlen_template, &withdraw_all]));
    seeds
}

fn compiler_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let mut seed = vec![i as u8];
        seed.extend(frame(&[&teach(shape), &data(shape, 4, i as u8)]));
        seeds.push(seed);
    }
    // Two data sets, the second padded.
    let shape = &SHAPES[0];
    let mut two = data(shape, 2, 3);
    let set = two[V9_HEADER_LEN..].to_vec();
    two.extend_from_slice(&set);
    two.extend_from_slice(&[0, 0, 0, 0]);
    let at = two.len() - set.len() - 4 + 2;
    two[at..at + 2].copy_from_slice(&(set.len() as u16 + 4).to_be_bytes());
    seeds.push([vec![3], frame(&[&teach(shape), &two])].concat());
    // What the kernel passes up: data of an unknown template, a set that
    // runs past the export, and a template set.
    let mut unknown = data(shape, 2, 5);
    unknown[V9_HEADER_LEN..V9_HEADER_LEN + 2].copy_from_slice(&999u16.to_be_bytes());
    let mut lying = data(shape, 2, 6);
    lying[V9_HEADER_LEN + 2..V9_HEADER_LEN + 4].copy_from_slice(&200u16.to_be_bytes());
    for export in [unknown, lying, teach(shape)] {
        seeds.push([vec![0], frame(&[&teach(shape), &export])].concat());
    }
    seeds.push([vec![1], biflows()].concat());
    seeds
}

/// An IPFIX biflow template (RFC 5103 reverse octets and packets) and
/// records of it, some with nothing in reverse.
fn biflows() -> Vec<u8> {
    let reverse = |ie| FieldSpec::enterprise(ie, 4, ie::REVERSE_PEN);
    let fields = vec![
        FieldSpec::iana(ie::SOURCE_IPV4_ADDRESS, 4),
        FieldSpec::iana(ie::DESTINATION_IPV4_ADDRESS, 4),
        FieldSpec::iana(ie::OCTET_DELTA_COUNT, 4),
        reverse(ie::OCTET_DELTA_COUNT),
        reverse(ie::PACKET_DELTA_COUNT),
        FieldSpec::iana(ie::FLOW_END_MILLISECONDS, 8),
    ];
    let teach = encode::export(
        &header(IPFIX),
        &[EncodedSet::Templates(vec![Template {
            id: TEMPLATE_ID,
            fields,
        }])],
        true,
    );
    let records = (0..4u8)
        .map(|i| {
            let reverse = if i % 2 == 0 { 0 } else { 500 + u32::from(i) };
            [
                &[198, 18, 100, i][..],
                &[198, 19, 0, 1],
                &1000u32.to_be_bytes(),
                &reverse.to_be_bytes(),
                &(reverse / 100).to_be_bytes(),
                &1_699_999_990_123u64.to_be_bytes(),
            ]
            .concat()
        })
        .collect();
    let data = encode::export(
        &header(IPFIX),
        &[EncodedSet::Data {
            id: TEMPLATE_ID,
            records,
        }],
        true,
    );
    frame(&[&teach, &data])
}

fn encode_seeds() -> Vec<Vec<u8>> {
    vec![
        (0u8..64).collect(),
        (0u8..200).map(|b| b.wrapping_mul(37)).collect(),
        [
            1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 3, 2, 0, 8, 0, 4, 1,
        ]
        .into_iter()
        .chain(0..40)
        .collect(),
    ]
}

/// Every target's seeds, by target name.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("netflow_v5", v5_seeds()),
        ("netflow_templates", templates_seeds()),
        ("template_compiler", compiler_seeds()),
        ("netflow_encode", encode_seeds()),
    ]
}

fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

#[test]
fn committed_seeds_are_the_ones_built_here() {
    let write = env::var_os("FLOWTALLY_WRITE_SEEDS").is_some();
    for (target, seeds) in seeds() {
        let dir = seed_dir(target);
        for (i, seed) in seeds.iter().enumerate() {
            let path = dir.join(format!("seed-{i:02}"));
            if write {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, seed).unwrap();
            }
            let committed = fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (FLOWTALLY_WRITE_SEEDS=1)", path.display()));
            assert_eq!(&committed, seed, "{} is stale", path.display());
        }
    }
}

/// A fuzzing entry point.
type Target = fn(&[u8]);

/// Every committed input (seeds, and cases fuzzing found) through its target.
#[test]
fn committed_inputs_hold_every_invariant() {
    let targets: [(&str, Target); 4] = [
        ("netflow_v5", v5),
        ("netflow_templates", templates),
        ("template_compiler", compiled_parity),
        ("netflow_encode", encode_round_trip),
    ];
    for (target, run) in targets {
        let mut n = 0;
        for entry in fs::read_dir(seed_dir(target)).unwrap() {
            run(&fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 3, "{target}: {n} inputs");
    }
}

#[test]
fn seeds_reach_what_they_are_for() {
    for seed in v5_seeds().iter().take(2) {
        assert!(Export::decode(seed).is_ok());
    }
    let exporter = ip_from_v4(EXPORTER);
    for seed in compiler_seeds().iter().take(SHAPES.len() + 1) {
        let parts = datagrams(&seed[1..]);
        let mut cache = TemplateCache::new(LIMITS);
        cache
            .decode(&exporter, parts[0], NOW_MS, 0, &mut Vec::new())
            .unwrap();
        let kernel: BTreeMap<_, _> = cache.compiled().collect();
        let verdict = kernel_walk(|k| kernel.get(k).copied(), &exporter, parts[1], 0, 0xa5);
        assert!(
            matches!(verdict, Some(KernelVerdict::Aggregated(ref r)) if !r.is_empty()),
            "the first compiler seeds are aggregated in the kernel: {verdict:?}"
        );
    } // The NAT seeds decode NAT events, and no flow, and compile nothing.
    for seed in &templates_seeds()[SHAPES.len()..SHAPES.len() + NAT_SHAPES.len()] {
        let mut cache = TemplateCache::new(LIMITS);
        let (mut flows, mut nat) = (Vec::new(), Vec::new());
        for datagram in datagrams(seed) {
            cache
                .decode_with_nat(&exporter, datagram, NOW_MS, 0, &mut flows, &mut nat)
                .unwrap();
        }
        assert!(flows.is_empty() && nat.len() == 5, "{flows:?} {nat:?}");
        assert_eq!(cache.compiled().count(), 0);
    }
}

#[test]
fn the_biflow_seed_reaches_both_directions_in_the_kernel_model() {
    let exporter = ip_from_v4(EXPORTER);
    let seed = biflows();
    let parts = datagrams(&seed);
    let mut cache = TemplateCache::new(LIMITS);
    cache
        .decode(&exporter, parts[0], NOW_MS, 0, &mut Vec::new())
        .unwrap();
    let kernel: BTreeMap<_, _> = cache.compiled().collect();
    let verdict = kernel_walk(|k| kernel.get(k).copied(), &exporter, parts[1], 0, 0);
    let Some(KernelVerdict::Aggregated(records)) = verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(records.len(), 4 + 2, "two records had a reverse direction");
}

#[test]
fn the_kernel_walk_passes_up_what_the_kernel_passes_up() {
    let exporter = ip_from_v4(EXPORTER);
    let none = |_: &TemplateKey| None;
    let shape = &SHAPES[0];
    let walk = |export: &[u8]| kernel_walk(none, &exporter, export, 0, 0);
    assert_eq!(walk(&teach(shape)), Some(KernelVerdict::TemplatesToUser));
    assert_eq!(walk(&data(shape, 1, 0)), Some(KernelVerdict::ToUser));
    assert_eq!(walk(&data(shape, 1, 0)[..12]), Some(KernelVerdict::Invalid));
    assert_eq!(
        walk(&header_only()),
        Some(KernelVerdict::Invalid),
        "no sets"
    );
    assert_eq!(walk(&[0, 5, 0, 1]), None, "not v9 or IPFIX");
}

fn header_only() -> Vec<u8> {
    encode::export(&header(V9), &[], false)
}

/// A field past its record would read the next record in the kernel and
/// zeros on the socket path: the check on installed templates refuses it.
#[test]
#[should_panic(expected = "past a 29-byte record")]
fn a_field_past_the_record_is_not_kernel_readable() {
    let mut cache = TemplateCache::new(LIMITS);
    let exporter = ip_from_v4(EXPORTER);
    cache
        .decode(&exporter, &teach(&SHAPES[0]), NOW_MS, 0, &mut Vec::new())
        .unwrap();
    let (key, mut t) = cache.compiled().next().unwrap();
    assert_kernel_readable(&key, &t);
    t.protocol.offset = t.record_len;
    assert_kernel_readable(&key, &t);
}
