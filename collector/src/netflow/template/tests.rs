use flowtally_common::{
    agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START},
    template::{MAX_RECORD_LEN, TimeKind, ie},
};

use super::*;
use crate::{
    ip::to_ip,
    netflow::{
        encode::{self, OptionsTemplate, Set, Template as Def},
        sets::{FieldSpec, Header, IPFIX, VARLEN},
    },
};
use crate::{netflow::layouts, rng::Rng};

const NOW: u64 = 1_700_000_000_000;
const UNIX_SECS: u32 = 1_700_000_000;
const UPTIME_MS: u32 = 100_000;

fn ip(s: &str) -> Ip {
    to_ip(s.parse().unwrap())
}

fn header(version: u16, domain: u32) -> Header {
    Header {
        version,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: if version == V9 { UPTIME_MS } else { 0 },
        sequence: 0,
        domain,
    }
}

fn fields(list: &[(u16, u16)]) -> Vec<FieldSpec> {
    list.iter()
        .map(|&(id, len)| FieldSpec::iana(id, len))
        .collect()
}

fn templates(list: &[(u16, &[(u16, u16)])]) -> Set {
    Set::Templates(
        list.iter()
            .map(|&(id, f)| Def {
                id,
                fields: fields(f),
            })
            .collect(),
    )
}

fn data(id: u16, records: Vec<Vec<u8>>) -> Set {
    Set::Data { id, records }
}

fn export(version: u16, domain: u32, sets: &[Set]) -> Vec<u8> {
    encode::export(&header(version, domain), sets, true)
}

/// src, dst, octets (4 bytes each).
const MINIMAL: &[(u16, u16)] = layouts::MINIMAL_V4;
/// MINIMAL with the octets first.
const OCTETS_FIRST: &[(u16, u16)] = &[(1, 4), (8, 4), (12, 4)];
/// src, dst, src port, dst port, protocol, octets, packets, last and first switched.
const V4_FLOW: &[(u16, u16)] = layouts::V4_UPTIME_LAST_FIRST;

fn minimal(src: [u8; 4], dst: [u8; 4], octets: u32) -> Vec<u8> {
    [&src[..], &dst[..], &octets.to_be_bytes()[..]].concat()
}

/// A V4_FLOW record from 10.0.0.`n` to 192.0.2.1:443/TCP.
fn v4_flow(n: u8, octets: u32, packets: u32, last: u32, first: u32) -> Vec<u8> {
    let mut rec = vec![10, 0, 0, n, 192, 0, 2, 1];
    rec.extend_from_slice(&40_000u16.to_be_bytes());
    rec.extend_from_slice(&443u16.to_be_bytes());
    rec.push(6);
    for word in [octets, packets, last, first] {
        rec.extend_from_slice(&word.to_be_bytes());
    }
    rec
}

struct Decoded {
    records: Vec<FlowRecord>,
    report: Report,
}

fn decode_at(
    cache: &mut TemplateCache,
    exporter: &str,
    datagram: &[u8],
    now_ms: u64,
    flags: u32,
) -> Decoded {
    let mut records = Vec::new();
    let report = cache
        .decode(&ip(exporter), datagram, now_ms, flags, &mut records)
        .expect("a valid datagram");
    assert_eq!(report.records, records.len() as u64);
    Decoded { records, report }
}

fn decode(cache: &mut TemplateCache, exporter: &str, datagram: &[u8]) -> Decoded {
    decode_at(cache, exporter, datagram, NOW, FLAG_SCALE_SAMPLING)
}

fn cache() -> TemplateCache {
    TemplateCache::new(Limits::default())
}

fn installed(changes: &[TemplateChange]) -> Vec<(u16, CompiledTemplate)> {
    changes
        .iter()
        .filter_map(|c| match c {
            TemplateChange::Install(key, t) => Some((key.template_id, *t)),
            TemplateChange::Remove(_) => None,
        })
        .collect()
}

fn removed(changes: &[TemplateChange]) -> Vec<u16> {
    changes
        .iter()
        .filter_map(|c| match c {
            TemplateChange::Remove(key) => Some(key.template_id),
            TemplateChange::Install(..) => None,
        })
        .collect()
}

// 1. Template keys.

#[test]
fn the_same_template_id_means_different_layouts_per_exporter_and_domain() {
    for version in [V9, IPFIX] {
        let mut cache = cache();
        decode(
            &mut cache,
            "198.18.0.1",
            &export(version, 1, &[templates(&[(256, MINIMAL)])]),
        );
        decode(
            &mut cache,
            "198.18.0.2",
            &export(version, 1, &[templates(&[(256, OCTETS_FIRST)])]),
        );
        decode(
            &mut cache,
            "198.18.0.1",
            &export(version, 2, &[templates(&[(256, OCTETS_FIRST)])]),
        );
        assert_eq!(cache.compiled().count(), 3);

        let rec = minimal([10, 0, 0, 1], [10, 0, 0, 2], 100);
        let mut one = |exporter, domain| {
            decode(
                &mut cache,
                exporter,
                &export(version, domain, &[data(256, vec![rec.clone()])]),
            )
            .records[0]
        };
        let a1 = one("198.18.0.1", 1);
        assert_eq!(
            (a1.src, a1.dst, a1.bytes),
            (ip("10.0.0.1"), ip("10.0.0.2"), 100)
        );
        for (exporter, domain) in [("198.18.0.2", 1), ("198.18.0.1", 2)] {
            let r = one(exporter, domain);
            assert_eq!(
                (r.src, r.dst, r.bytes),
                (ip("10.0.0.2"), ip("0.0.0.100"), 0x0a00_0001),
                "{exporter} domain {domain}, v{version}"
            );
        }
    }
}

#[test]
fn v9_and_ipfix_templates_of_one_exporter_and_domain_are_apart() {
    let mut cache = cache();
    decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 1, &[templates(&[(256, MINIMAL)])]),
    );
    decode(
        &mut cache,
        "198.18.0.1",
        &export(IPFIX, 1, &[templates(&[(256, OCTETS_FIRST)])]),
    );
    let versions: Vec<u16> = cache.compiled().map(|(key, _)| key.version).collect();
    assert_eq!(versions, [V9, IPFIX]);
}

// 2. Wire formats.

#[test]
fn v9_records_are_timed_from_the_export_header() {
    let mut cache = cache();
    let datagram = export(
        V9,
        0,
        &[
            templates(&[(256, V4_FLOW)]),
            data(
                256,
                vec![v4_flow(1, 1500, 3, UPTIME_MS - 1_000, UPTIME_MS - 5_000)],
            ),
        ],
    );
    let r = decode(&mut cache, "198.18.0.1", &datagram).records[0];
    assert_eq!(
        r,
        FlowRecord {
            src: ip("10.0.0.1"),
            dst: ip("192.0.2.1"),
            src_port: 40_000,
            dst_port: 443,
            protocol: 6,
            bytes: 1500,
            packets: 3,
            time_ms: NOW - 1_000,
            input_if: 0,
            output_if: 0,
        }
    );
    let by_start = decode_at(
        &mut cache,
        "198.18.0.1",
        &datagram,
        NOW,
        FLAG_TIME_FROM_START,
    );
    assert_eq!(by_start.records[0].time_ms, NOW - 5_000);
}

#[test]
fn ipfix_records_without_times_are_timed_at_export() {
    let mut cache = cache();
    let datagram = export(
        IPFIX,
        0,
        &[
            templates(&[(256, MINIMAL)]),
            data(256, vec![minimal([10, 0, 0, 1], [10, 0, 0, 2], 7)]),
        ],
    );
    assert_eq!(
        decode(&mut cache, "198.18.0.1", &datagram).records[0].time_ms,
        NOW
    );
}

#[test]
fn vendor_fields_take_their_length_but_are_not_read() {
    let mut cache = cache();
    // Enterprise element 1 is not octetDeltaCount.
    let template = Def {
        id: 256,
        fields: [FieldSpec::enterprise(1, 4, 9)]
            .into_iter()
            .chain(fields(MINIMAL))
            .collect(),
    };
    let rec = [&[0xff; 4][..], &minimal([10, 0, 0, 1], [10, 0, 0, 2], 100)].concat();
    let datagram = export(
        IPFIX,
        0,
        &[Set::Templates(vec![template]), data(256, vec![rec])],
    );
    let decoded = decode(&mut cache, "198.18.0.1", &datagram);
    assert_eq!(
        (decoded.records[0].src, decoded.records[0].bytes),
        (ip("10.0.0.1"), 100)
    );
    let (_, compiled) = installed(&cache.take_changes())[0];
    assert_eq!(
        (
            compiled.record_len,
            compiled.src.offset,
            compiled.octets.offset
        ),
        (16, 4, 12)
    );
}

#[test]
fn variable_length_records_decode_on_the_socket_path_only() {
    let mut cache = cache();
    let template = Def {
        id: 256,
        fields: fields(&[(8, 4), (12, 4), (82, VARLEN), (1, 8)]),
    };
    let record = |name: &[u8], octets: u64| {
        let mut rec = vec![10, 0, 0, 1, 10, 0, 0, 2];
        encode::varlen(&mut rec, name);
        rec.extend_from_slice(&octets.to_be_bytes());
        rec
    };
    let datagram = export(
        IPFIX,
        0,
        &[
            Set::Templates(vec![template]),
            data(
                256,
                vec![
                    record(b"eth0", 10),
                    record(&[b'x'; 300], 20),
                    record(b"", 30),
                ],
            ),
        ],
    );
    let decoded = decode(&mut cache, "198.18.0.1", &datagram);
    let bytes: Vec<u64> = decoded.records.iter().map(|r| r.bytes).collect();
    assert_eq!(bytes, [10, 20, 30]);
    assert!(
        cache.take_changes().is_empty(),
        "the kernel cannot read variable lengths"
    );
}

// 3. Template lifecycle.

#[test]
fn ipfix_withdrawals_remove_one_template_or_all_of_a_kind() {
    let mut cache = cache();
    let options = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(149, 4)]),
        options: fields(&[(34, 4)]),
    }]);
    let learn = export(
        IPFIX,
        0,
        &[
            templates(&[(256, MINIMAL), (257, OCTETS_FIRST), (258, MINIMAL)]),
            options,
        ],
    );
    decode(&mut cache, "198.18.0.1", &learn);
    assert_eq!(installed(&cache.take_changes()).len(), 3);

    let withdraw = |id| Set::Templates(vec![Def { id, fields: vec![] }]);
    let one = decode(
        &mut cache,
        "198.18.0.1",
        &export(IPFIX, 0, &[withdraw(256)]),
    );
    assert_eq!(one.report.templates.withdrawn, 1);
    assert_eq!(removed(&cache.take_changes()), [256]);

    let all = decode(&mut cache, "198.18.0.1", &export(IPFIX, 0, &[withdraw(2)]));
    assert_eq!(all.report.templates.withdrawn, 2);
    assert_eq!(removed(&cache.take_changes()), [257, 258]);
    assert_eq!(cache.templates.len(), 1, "the options template stays");

    let all_options = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 3,
        scope: vec![],
        options: vec![],
    }]);
    let all = decode(&mut cache, "198.18.0.1", &export(IPFIX, 0, &[all_options]));
    assert_eq!(all.report.options_templates.withdrawn, 1);
    assert!(cache.templates.is_empty());
}

#[test]
fn redefinitions_replace_and_refreshes_change_nothing() {
    let mut cache = cache();
    let send = |cache: &mut TemplateCache, set: Set| {
        decode(cache, "198.18.0.1", &export(IPFIX, 0, &[set])).report
    };
    send(&mut cache, templates(&[(256, MINIMAL)]));
    assert_eq!(installed(&cache.take_changes())[0].1.octets.offset, 8);

    let refresh = send(&mut cache, templates(&[(256, MINIMAL)]));
    assert_eq!(
        (refresh.templates.refreshed, refresh.templates.learned),
        (1, 0)
    );
    assert!(cache.take_changes().is_empty());

    let changed = send(&mut cache, templates(&[(256, OCTETS_FIRST)]));
    assert_eq!(changed.templates.changed, 1);
    assert_eq!(installed(&cache.take_changes())[0].1.octets.offset, 0);

    let varlen = Set::Templates(vec![Def {
        id: 256,
        fields: fields(&[(8, 4), (12, 4), (1, 4), (82, VARLEN)]),
    }]);
    send(&mut cache, varlen);
    assert_eq!(
        removed(&cache.take_changes()),
        [256],
        "no longer compilable"
    );
}

#[test]
fn templates_not_refreshed_within_the_timeout_expire() {
    let timeout = Limits::default().template_timeout_ms;
    let mut cache = cache();
    let learn = export(V9, 0, &[templates(&[(256, MINIMAL), (257, MINIMAL)])]);
    decode_at(&mut cache, "198.18.0.1", &learn, NOW, 0);
    let refresh = export(V9, 0, &[templates(&[(257, MINIMAL)])]);
    decode_at(&mut cache, "198.18.0.1", &refresh, NOW + timeout / 2, 0);
    cache.take_changes();

    assert_eq!(
        cache.expire(NOW + timeout).templates,
        0,
        "not past the timeout yet"
    );
    assert_eq!(cache.expire(NOW + timeout + 1).templates, 1);
    assert_eq!(removed(&cache.take_changes()), [256]);
    assert_eq!(cache.compiled().count(), 1);
}

#[test]
fn decode_sweeps_expired_templates_itself() {
    let timeout = Limits::default().template_timeout_ms;
    let mut cache = cache();
    decode_at(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[templates(&[(256, MINIMAL)])]),
        NOW,
        0,
    );
    let later = decode_at(
        &mut cache,
        "198.18.0.2",
        &export(V9, 0, &[]),
        NOW + timeout + 1,
        0,
    );
    assert_eq!(later.report.expired.templates, 1);
}

// 4. Compilation.

#[test]
fn a_change_of_sampling_recompiles_the_domain_templates() {
    let mut cache = cache();
    let sampling = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(1, 4)]), // v9 scope type 1: the system
        options: fields(&[(34, 4), (35, 1)]),
    }]);
    let every = |n: u32| data(300, vec![[&[0; 4][..], &n.to_be_bytes(), &[2]].concat()]);
    let rec = minimal([10, 0, 0, 1], [10, 0, 0, 2], 100);
    decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 5, &[templates(&[(256, MINIMAL)]), sampling]),
    );
    assert_eq!(
        installed(&cache.take_changes())[0].1.sampling,
        1,
        "unsampled until told"
    );

    let told = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 5, &[every(100), data(256, vec![rec.clone()])]),
    );
    assert_eq!(told.report.options_records, 1);
    assert_eq!(told.records[0].bytes, 10_000);
    assert_eq!(installed(&cache.take_changes())[0].1.sampling, 100);

    decode(&mut cache, "198.18.0.1", &export(V9, 5, &[every(100)]));
    assert!(cache.take_changes().is_empty(), "repeated, not changed");
    let raw = decode_at(
        &mut cache,
        "198.18.0.1",
        &export(V9, 5, &[data(256, vec![rec])]),
        NOW,
        0,
    );
    assert_eq!(raw.records[0].bytes, 100, "scaling off");
    let other_domain = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 6, &[templates(&[(256, MINIMAL)])]),
    );
    assert_eq!(other_domain.report.templates.learned, 1);
    assert_eq!(installed(&cache.take_changes())[0].1.sampling, 1);
}

#[test]
fn ipfix_uptime_times_wait_for_the_system_init_time() {
    let mut cache = cache();
    let template = templates(&[(256, &[(8, 4), (12, 4), (1, 4), (21, 4)])]);
    let rec = [
        minimal([10, 0, 0, 1], [10, 0, 0, 2], 100),
        60_000u32.to_be_bytes().to_vec(),
    ]
    .concat();
    let before = decode(
        &mut cache,
        "198.18.0.1",
        &export(IPFIX, 0, &[template, data(256, vec![rec.clone()])]),
    );
    assert!(cache.take_changes().is_empty());
    assert_eq!(before.records[0].time_ms, NOW, "timed at export");
    assert_eq!(before.report.no_system_init_time, 1);

    let init = NOW - 3_600_000;
    let options = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(149, 4)]),
        options: fields(&[(ie::SYSTEM_INIT_TIME_MILLISECONDS, 8)]),
    }]);
    let init_record = data(300, vec![[&[0; 4][..], &init.to_be_bytes()].concat()]);
    let after = decode(
        &mut cache,
        "198.18.0.1",
        &export(IPFIX, 0, &[options, init_record, data(256, vec![rec])]),
    );
    assert_eq!(after.records[0].time_ms, init + 60_000);
    let (_, compiled) = installed(&cache.take_changes())[0];
    assert_eq!(
        (compiled.uptime_base_ms, compiled.end.kind),
        (init, TimeKind::UptimeMs as u8)
    );
}

#[test]
fn fields_of_unsupported_size_read_as_absent_and_are_counted() {
    let mut cache = cache();
    let three_byte_source = &[(8, 3), (12, 4), (1, 4)];
    let rec = vec![10, 0, 0, 10, 0, 0, 2, 0, 0, 0, 100];
    let decoded = decode(
        &mut cache,
        "198.18.0.1",
        &export(
            V9,
            0,
            &[templates(&[(256, three_byte_source)]), data(256, vec![rec])],
        ),
    );
    assert!(cache.take_changes().is_empty());
    let r = decoded.records[0];
    assert_eq!((r.src, r.dst, r.bytes), ([0; 16], ip("10.0.0.2"), 100));
    assert_eq!(decoded.report.bad_field_records, 1);
}

#[test]
fn records_of_templates_that_are_not_flows_are_counted_and_ignored() {
    let mut cache = cache();
    let interfaces = &[(10, 4), (14, 4), (1, 4)];
    let decoded = decode(
        &mut cache,
        "198.18.0.1",
        &export(
            V9,
            0,
            &[
                templates(&[(256, interfaces)]),
                data(256, vec![vec![0; 12], vec![1; 12]]),
            ],
        ),
    );
    assert!(decoded.records.is_empty());
    assert_eq!(decoded.report.non_flow_records, 2);
}

// 5. The socket path against the kernel.

/// What the XDP program does with a compiled template: read each record
/// through a MAX_RECORD_LEN window of the export, bytes after the record
/// included.
fn as_the_kernel_would(
    compiled: &CompiledTemplate,
    body: &[u8],
    time: &ExportTime,
    flags: u32,
) -> Vec<FlowRecord> {
    let len = usize::from(compiled.record_len);
    let mut buf = body.to_vec();
    buf.resize(body.len() + MAX_RECORD_LEN, 0xee);
    (0..body.len() / len)
        .map(|i| {
            let mut out = FlowRecord::default();
            compiled.record_into(
                &buf[i * len..i * len + MAX_RECORD_LEN],
                time,
                flags,
                &mut out,
            );
            out
        })
        .collect()
}

#[test]
fn compiled_templates_decode_exactly_as_the_kernel_reads_them() {
    let layouts: [&[(u16, u16)]; 3] = [
        V4_FLOW,
        &[
            (153, 8),
            (28, 16),
            (2, 8),
            (27, 16),
            (4, 1),
            (11, 2),
            (1, 8),
            (7, 2),
        ],
        &[(156, 8), (1, 2), (12, 4), (10, 4), (8, 4), (4, 1), (2, 1)],
    ];
    let mut seed = Rng(0x9e37_79b9_7f4a_7c15);
    for (i, layout) in layouts.into_iter().enumerate() {
        let version = if i == 0 { V9 } else { IPFIX };
        let mut cache = cache();
        decode(
            &mut cache,
            "198.18.0.1",
            &export(version, 0, &[templates(&[(256, layout)])]),
        );
        let (_, compiled) = installed(&cache.take_changes())[0];
        let len = usize::from(compiled.record_len);
        let body: Vec<u8> = (0..4 * len).map(|_| seed.next_u64() as u8).collect();
        let records: Vec<Vec<u8>> = body.chunks(len).map(<[u8]>::to_vec).collect();
        for flags in [0, FLAG_SCALE_SAMPLING | FLAG_TIME_FROM_START] {
            let ours = decode_at(
                &mut cache,
                "198.18.0.1",
                &export(version, 0, &[data(256, records.clone())]),
                NOW,
                flags,
            );
            let time = header(version, 0).export_time();
            assert_eq!(
                ours.records,
                as_the_kernel_would(&compiled, &body, &time, flags),
                "layout {i}"
            );
        }
    }
}

#[test]
fn sampler_ids_look_up_their_interval_per_record() {
    let mut cache = cache();
    let samplers = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(1, 4)]),
        options: fields(&[
            (ie::SAMPLER_ID, 1),
            (ie::SAMPLER_MODE, 1),
            (ie::SAMPLER_RANDOM_INTERVAL, 4),
        ]),
    }]);
    let sampler = |id: u8, n: u32| [&[0, 0, 0, 0, id, 2][..], &n.to_be_bytes()].concat();
    let with_sampler = &[(8, 4), (12, 4), (1, 4), (48, 1)];
    let rec = |id: u8| [minimal([10, 0, 0, 1], [10, 0, 0, 2], 10), vec![id]].concat();
    let datagram = export(
        V9,
        0,
        &[
            samplers,
            data(300, vec![sampler(1, 50), sampler(2, 1000)]),
            templates(&[(256, with_sampler)]),
            data(256, vec![rec(1), rec(2), rec(3)]),
        ],
    );
    let decoded = decode(&mut cache, "198.18.0.1", &datagram);
    let bytes: Vec<u64> = decoded.records.iter().map(|r| r.bytes).collect();
    assert_eq!(bytes, [500, 10_000, 10]);
    assert_eq!(decoded.report.unknown_sampler, 1);
    assert!(
        cache.take_changes().is_empty(),
        "per-record lookups stay on the socket path"
    );
}

#[test]
fn ipfix_selector_ids_and_packet_intervals_sample_too() {
    let mut cache = cache();
    let selector = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(ie::SELECTOR_ID, 8)]),
        options: fields(&[
            (ie::SAMPLING_PACKET_INTERVAL, 4),
            (ie::SAMPLING_PACKET_SPACE, 4),
        ]),
    }]);
    // 1 taken, 9 skipped: 1 in 10.
    let selector_record = [
        &7u64.to_be_bytes()[..],
        &1u32.to_be_bytes(),
        &9u32.to_be_bytes(),
    ]
    .concat();
    let template = templates(&[(256, &[(302, 8), (8, 4), (12, 4), (1, 4)])]);
    let rec = [
        &7u64.to_be_bytes()[..],
        &minimal([10, 0, 0, 1], [10, 0, 0, 2], 3),
    ]
    .concat();
    let decoded = decode(
        &mut cache,
        "198.18.0.1",
        &export(
            IPFIX,
            0,
            &[
                selector,
                data(300, vec![selector_record]),
                template,
                data(256, vec![rec]),
            ],
        ),
    );
    assert_eq!(decoded.records[0].bytes, 30);
}

#[test]
fn a_template_with_both_families_uses_the_one_each_record_sets() {
    let mut cache = cache();
    let both = &[(8, 4), (12, 4), (27, 16), (28, 16), (1, 4)];
    let v4 = [&[10, 0, 0, 1, 10, 0, 0, 2][..], &[0; 32], &[0, 0, 0, 1]].concat();
    let mut v6 = vec![0; 44];
    v6[8] = 0x20;
    v6[24] = 0x20;
    v6[25] = 1;
    let decoded = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[templates(&[(256, both)]), data(256, vec![v4, v6])]),
    );
    assert_eq!(decoded.records[0].src, ip("10.0.0.1"));
    assert_eq!(decoded.records[1].src, ip("2000::"));
    assert_eq!(decoded.records[1].dst, ip("2001::"));
    assert!(cache.take_changes().is_empty());
}

// 6. Data before its template.

#[test]
fn data_waits_for_its_template_in_a_later_datagram() {
    let mut cache = cache();
    let rec = minimal([10, 0, 0, 1], [10, 0, 0, 2], 100);
    let early = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[data(256, vec![rec.clone(), rec])]),
    );
    assert!(early.records.is_empty());
    assert_eq!(
        (
            early.report.pending.buffered_sets,
            early.report.pending.buffered_bytes
        ),
        (1, 4 + 24)
    );

    let late = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[templates(&[(256, MINIMAL)])]),
    );
    assert_eq!(late.report.pending.replayed_sets, 1);
    assert_eq!(late.records.len(), 2);
    assert_eq!(
        late.records[0].time_ms, NOW,
        "timed by the export it came in"
    );
}

#[test]
fn buffered_sets_replay_in_arrival_order_even_within_one_datagram() {
    let mut cache = cache();
    let rec = |n| minimal([10, 0, 0, n], [10, 0, 0, 100], 100);
    let datagram = export(
        IPFIX,
        0,
        &[
            data(256, vec![rec(1)]),
            data(257, vec![rec(2)]),
            data(256, vec![rec(3)]),
            templates(&[(256, MINIMAL), (257, MINIMAL)]),
            data(257, vec![rec(4)]),
        ],
    );
    let decoded = decode(&mut cache, "198.18.0.1", &datagram);
    let order: Vec<u8> = decoded.records.iter().map(|r| r.src[15]).collect();
    assert_eq!(order, [1, 2, 3, 4]);
    assert_eq!(
        (
            decoded.report.pending.buffered_sets,
            decoded.report.pending.replayed_sets
        ),
        (3, 3)
    );
}

#[test]
fn pending_data_is_bounded_per_exporter_and_in_time() {
    let limits = Limits {
        max_pending_bytes_per_exporter: 40,
        ..Limits::default()
    };
    let mut cache = TemplateCache::new(limits);
    let set = export(
        V9,
        0,
        &[data(256, vec![minimal([10, 0, 0, 1], [10, 0, 0, 2], 1)])],
    ); // 16-byte sets
    let mut overflow = PendingCounts::default();
    for _ in 0..3 {
        let p = decode(&mut cache, "198.18.0.1", &set).report.pending;
        overflow.buffered_sets += p.buffered_sets;
        overflow.overflow_sets += p.overflow_sets;
        overflow.overflow_bytes += p.overflow_bytes;
    }
    assert_eq!(
        (
            overflow.buffered_sets,
            overflow.overflow_sets,
            overflow.overflow_bytes
        ),
        (2, 1, 16)
    );
    let other = decode(&mut cache, "198.18.0.2", &set).report.pending;
    assert_eq!(
        other.buffered_sets, 1,
        "other exporters have their own room"
    );

    let expired = cache.expire(NOW + limits.pending_timeout_ms + 1);
    assert_eq!((expired.pending_sets, expired.pending_bytes), (3, 48));
    let late = decode_at(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[templates(&[(256, MINIMAL)])]),
        NOW + 20_000,
        0,
    );
    assert_eq!(late.report.pending.replayed_sets, 0);
}

// 7. Limits.

#[test]
fn a_template_flood_is_capped_per_exporter_without_touching_others() {
    let limits = Limits {
        max_templates_per_exporter: 4,
        ..Limits::default()
    };
    let mut cache = TemplateCache::new(limits);
    let flood: Vec<(u16, &[(u16, u16)])> = (256..262).map(|id| (id, MINIMAL)).collect();
    let report = decode(
        &mut cache,
        "198.18.0.66",
        &export(IPFIX, 0, &[templates(&flood)]),
    )
    .report;
    assert_eq!(
        (report.templates.learned, report.rejected.too_many_templates),
        (4, 2)
    );
    let other_domain = decode(
        &mut cache,
        "198.18.0.66",
        &export(IPFIX, 1, &[templates(&[(256, MINIMAL)])]),
    );
    assert_eq!(
        other_domain.report.rejected.too_many_templates, 1,
        "the cap spans domains"
    );
    let redefined = decode(
        &mut cache,
        "198.18.0.66",
        &export(IPFIX, 0, &[templates(&[(256, OCTETS_FIRST)])]),
    );
    assert_eq!(
        redefined.report.templates.changed, 1,
        "known keys may still change"
    );

    let neighbour = decode(
        &mut cache,
        "198.18.0.1",
        &export(
            IPFIX,
            0,
            &[
                templates(&[(256, MINIMAL)]),
                data(256, vec![minimal([10, 0, 0, 1], [10, 0, 0, 2], 5)]),
            ],
        ),
    );
    assert_eq!(neighbour.records.len(), 1);
}

#[test]
fn absurd_templates_are_rejected_and_counted() {
    let limits = Limits {
        max_fields_per_template: 4,
        max_template_bytes: 20,
        ..Limits::default()
    };
    let mut cache = TemplateCache::new(limits);
    let report = |cache: &mut TemplateCache, set: Set| {
        decode(cache, "198.18.0.1", &export(IPFIX, 0, &[set]))
            .report
            .rejected
    };
    report(&mut cache, templates(&[(256, MINIMAL)]));
    cache.take_changes();
    let five_fields = &[(8, 4), (12, 4), (1, 4), (2, 4), (4, 1)];
    assert_eq!(
        report(&mut cache, templates(&[(256, five_fields)])).too_many_fields,
        1
    );
    assert_eq!(
        removed(&cache.take_changes()),
        [256],
        "a rejected redefinition takes the old layout with it"
    );
    let long = &[(8, 4), (12, 4), (1, 4), (100, 9)];
    assert_eq!(
        report(&mut cache, templates(&[(256, long)])).template_too_long,
        1
    );
    let long_fixed_part = Set::Templates(vec![Def {
        id: 256,
        fields: fields(&[(8, 4), (12, 4), (1, 13), (82, VARLEN)]),
    }]);
    assert_eq!(report(&mut cache, long_fixed_part).template_too_long, 1);
    let empty_records = &[(8, 0), (12, 0)];
    assert_eq!(
        report(&mut cache, templates(&[(256, empty_records)])).malformed,
        1
    );
    assert!(cache.templates.is_empty());

    // A field count past the set: the set ends there, earlier records stand.
    let mut datagram = export(IPFIX, 0, &[templates(&[(256, MINIMAL), (257, MINIMAL)])]);
    let second_count = 16 + 4 + 16 + 2;
    datagram[second_count..second_count + 2].copy_from_slice(&40u16.to_be_bytes());
    let decoded = decode(&mut cache, "198.18.0.1", &datagram);
    assert_eq!(
        (
            decoded.report.templates.learned,
            decoded.report.rejected.malformed
        ),
        (1, 1)
    );
}

// 8. Options state (v9 and IPFIX options records are read in the tests of
// 4 and 5 above).

#[test]
fn options_state_expires_with_its_templates_timeout() {
    let timeout = Limits::default().template_timeout_ms;
    let mut cache = cache();
    let options = Set::OptionsTemplates(vec![OptionsTemplate {
        id: 300,
        scope: fields(&[(149, 4)]),
        options: fields(&[(34, 4)]),
    }]);
    let ten = data(300, vec![vec![0, 0, 0, 0, 0, 0, 0, 10]]);
    decode_at(
        &mut cache,
        "198.18.0.1",
        &export(IPFIX, 0, &[options, ten]),
        NOW,
        0,
    );
    // The flow template keeps being refreshed; the sampling is not repeated.
    let template = export(IPFIX, 0, &[templates(&[(256, MINIMAL)])]);
    decode_at(&mut cache, "198.18.0.1", &template, NOW + timeout - 1, 0);
    assert_eq!(installed(&cache.take_changes())[0].1.sampling, 10);
    let expired = cache.expire(NOW + timeout + 1);
    assert_eq!(expired.domains, 1);
    assert_eq!(installed(&cache.take_changes())[0].1.sampling, 1);
}

// Malformed input.

#[test]
fn a_rejected_datagram_teaches_nothing() {
    let mut cache = cache();
    let mut datagram = export(
        IPFIX,
        0,
        &[
            templates(&[(256, MINIMAL)]),
            data(256, vec![minimal([10, 0, 0, 1], [10, 0, 0, 2], 1)]),
        ],
    );
    let data_set = 16 + 20;
    datagram[data_set + 2..data_set + 4].copy_from_slice(&100u16.to_be_bytes());
    let mut out = Vec::new();
    assert_eq!(
        cache.decode(&ip("198.18.0.1"), &datagram, NOW, 0, &mut out),
        Err(DecodeError::BadSetLength {
            offset: data_set,
            length: 100
        })
    );
    assert!(out.is_empty() && cache.templates.is_empty() && cache.take_changes().is_empty());
}

#[test]
fn every_malformed_datagram_is_an_error() {
    let mut cache = cache();
    let good = export(V9, 0, &[templates(&[(256, MINIMAL)])]);
    let mut try_decode = |bytes: &[u8]| {
        cache
            .decode(&ip("198.18.0.1"), bytes, NOW, 0, &mut Vec::new())
            .map(|_| ())
    };
    let with = |at: usize, bytes: &[u8]| {
        let mut bad = good.clone();
        bad[at..at + bytes.len()].copy_from_slice(bytes);
        bad
    };
    assert_eq!(try_decode(&good[..10]), Err(DecodeError::Truncated));
    assert_eq!(
        try_decode(&with(0, &[0, 11])),
        Err(DecodeError::BadVersion(11))
    );
    assert_eq!(
        try_decode(&with(22, &[0, 0])),
        Err(DecodeError::BadSetLength {
            offset: 20,
            length: 0
        })
    );
    assert_eq!(
        try_decode(&with(22, &[0, 3])),
        Err(DecodeError::BadSetLength {
            offset: 20,
            length: 3
        })
    );
    assert_eq!(
        try_decode(&with(22, &[1, 0])),
        Err(DecodeError::BadSetLength {
            offset: 20,
            length: 256
        })
    );
    assert_eq!(
        try_decode(&good[..good.len() - 1]),
        Err(DecodeError::BadSetLength {
            offset: 20,
            length: 20
        })
    );
    let ipfix = export(IPFIX, 0, &[templates(&[(256, MINIMAL)])]);
    assert_eq!(
        try_decode(&ipfix[..ipfix.len() - 4]),
        Err(DecodeError::BadLength)
    );
}

#[test]
fn records_shorter_than_the_template_are_counted_and_zero_padding_is_not() {
    let mut cache = cache();
    let rec = minimal([10, 0, 0, 1], [10, 0, 0, 2], 1);
    let short = vec![10, 0, 0, 1, 10];
    let decoded = decode(
        &mut cache,
        "198.18.0.1",
        &export(
            V9,
            0,
            &[
                templates(&[(256, MINIMAL)]),
                data(256, vec![rec.clone(), short]),
            ],
        ),
    );
    assert_eq!(
        (decoded.records.len(), decoded.report.short_records),
        (1, 1)
    );
    let padded = decode(
        &mut cache,
        "198.18.0.1",
        &export(V9, 0, &[data(256, vec![rec, vec![0; 3]])]),
    );
    assert_eq!((padded.records.len(), padded.report.short_records), (1, 0));
}

// Robustness.

/// Valid datagrams touching every part of the decoder.
fn corpus() -> Vec<Vec<u8>> {
    let options = |version| {
        let scope = if version == V9 { (1, 4) } else { (149, 4) };
        Set::OptionsTemplates(vec![OptionsTemplate {
            id: 300,
            scope: fields(&[scope]),
            options: fields(&[(48, 1), (34, 4), (160, 8)]),
        }])
    };
    let options_record = [
        &[0, 0, 0, 0, 1][..],
        &100u32.to_be_bytes(),
        &(NOW - 1).to_be_bytes(),
    ]
    .concat();
    let varlen = Set::Templates(vec![Def {
        id: 258,
        fields: vec![
            FieldSpec::iana(8, 4),
            FieldSpec::enterprise(7, VARLEN, 9),
            FieldSpec::iana(12, 4),
            FieldSpec::iana(1, 4),
            FieldSpec::iana(21, 4),
        ],
    }]);
    let mut varlen_record = vec![10, 0, 0, 1];
    encode::varlen(&mut varlen_record, b"abc");
    varlen_record.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 9, 0, 0, 1, 0]);
    let flows = |n| {
        (1..=n)
            .map(|i| v4_flow(i, 100, 1, UPTIME_MS, UPTIME_MS))
            .collect::<Vec<_>>()
    };
    vec![
        export(
            V9,
            1,
            &[
                templates(&[(256, V4_FLOW), (257, &[(8, 4), (12, 4), (1, 4), (48, 1)])]),
                data(256, flows(5)),
            ],
        ),
        export(
            V9,
            1,
            &[
                options(V9),
                data(300, vec![options_record.clone()]),
                data(257, vec![[minimal([1; 4], [2; 4], 3), vec![1]].concat()]),
            ],
        ),
        export(
            IPFIX,
            2,
            &[
                options(IPFIX),
                data(300, vec![options_record]),
                templates(&[(256, V4_FLOW)]),
                data(256, flows(3)),
            ],
        ),
        export(
            IPFIX,
            2,
            &[
                varlen,
                data(258, vec![varlen_record.clone(), varlen_record]),
            ],
        ),
        export(
            IPFIX,
            2,
            &[
                Set::Templates(vec![Def {
                    id: 256,
                    fields: vec![],
                }]),
                data(256, flows(1)),
            ],
        ),
    ]
}

#[test]
fn no_mutation_of_a_valid_datagram_makes_decode_panic() {
    let limits = Limits {
        max_templates_per_exporter: 16,
        max_pending_bytes_per_exporter: 4096,
        ..Limits::default()
    };
    let mut cache = TemplateCache::new(limits);
    let corpus = corpus();
    for datagram in &corpus {
        decode(&mut cache, "198.18.0.1", datagram);
    }
    let mut seed = Rng(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..40_000u64 {
        let mut bytes = corpus[(seed.next_u64() % corpus.len() as u64) as usize].clone();
        for _ in 0..1 + seed.next_u64() % 4 {
            let at = (seed.next_u64() % bytes.len() as u64) as usize;
            match seed.next_u64() % 6 {
                0 => bytes[at] ^= 1 << (seed.next_u64() % 8),
                1 => bytes[at] = 0,
                2 => bytes[at] = 0xff,
                3 => bytes[at] = seed.next_u64() as u8,
                4 => bytes.truncate(at.max(1)),
                _ => bytes.insert(at, seed.next_u64() as u8),
            }
        }
        // Keep IPFIX lengths consistent half the time, to get past the header.
        if bytes.len() >= 4 && bytes[1] == 10 && i % 2 == 0 {
            let len = bytes.len() as u16;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
        }
        let exporter = if i % 3 == 0 {
            "198.18.0.1"
        } else {
            "198.18.0.2"
        };
        let mut out = Vec::new();
        match cache.decode(
            &ip(exporter),
            &bytes,
            NOW + i,
            FLAG_SCALE_SAMPLING,
            &mut out,
        ) {
            Ok(report) => {
                accepted += 1;
                assert_eq!(report.records, out.len() as u64);
            }
            Err(_) => rejected += 1,
        }
        cache.take_changes();
    }
    assert!(
        accepted > 10_000 && rejected > 5_000,
        "{accepted} accepted, {rejected} rejected"
    );
    let saved = cache.save();
    let restored = TemplateCache::restore(&saved, limits, NOW + 40_000).unwrap();
    assert_eq!(
        restored.save(),
        saved,
        "whatever was learned survives a restart"
    );
    for _ in 0..5_000 {
        let mut bytes = saved.clone();
        let at = (seed.next_u64() % bytes.len() as u64) as usize;
        bytes[at] = seed.next_u64() as u8;
        let _ = TemplateCache::restore(&bytes, limits, NOW);
    }
}
