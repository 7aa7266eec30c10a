//! The decoder against an independent one: for generated v9 and IPFIX
//! exports, every record `netflow_parser` finds agrees field by field with
//! ours.

use std::net::IpAddr;

use flowtally_common::agg::{FlowRecord, Ip};
use netflow_parser::{
    NetflowPacket, NetflowParser,
    variable_versions::{
        field_value::FieldValue,
        ipfix::{
            FlowSetBody as IpfixBody,
            lookup::{IANAIPFixField, IPFixField},
        },
        v9::FlowSetBody as V9Body,
    },
};

use super::{
    encode::{self, Set, Template},
    sets::{FieldSpec, Header, IPFIX, V9, VARLEN},
    template::{Limits, TemplateCache},
};
use crate::{ip::to_ip, netflow::layouts, rng::Rng};

/// What both decoders must agree on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Agreed {
    src: Ip,
    dst: Ip,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    octets: u64,
    packets: u64,
}

impl From<&FlowRecord> for Agreed {
    fn from(r: &FlowRecord) -> Self {
        Self {
            src: r.src,
            dst: r.dst,
            src_port: r.src_port,
            dst_port: r.dst_port,
            protocol: r.protocol,
            octets: r.bytes,
            packets: r.packets,
        }
    }
}

impl Agreed {
    /// Fills the field that information element `id` carries.
    fn set(&mut self, id: u16, value: &FieldValue) {
        let ip = |v: &FieldValue| IpAddr::try_from(v).map(to_ip).expect("an address");
        let uint = |v: &FieldValue| v.as_u64().expect("a number");
        match id {
            8 | 27 => self.src = ip(value),
            12 | 28 => self.dst = ip(value),
            7 => self.src_port = uint(value) as u16,
            11 => self.dst_port = uint(value) as u16,
            4 => self.protocol = value.as_u8().expect("a protocol"),
            1 => self.octets = uint(value),
            2 => self.packets = uint(value),
            _ => {}
        }
    }
}

/// Every data record `netflow_parser` finds in `datagram`.
fn theirs(datagram: &[u8]) -> Vec<Agreed> {
    let parsed = NetflowParser::default().parse_bytes(datagram);
    assert!(parsed.error.is_none(), "netflow_parser: {:?}", parsed.error);
    let mut out = Vec::new();
    for packet in parsed.packets {
        match packet {
            NetflowPacket::V9(v9) => {
                for set in v9.flowsets {
                    if let V9Body::Data(data) = set.body {
                        for record in data.fields {
                            let mut agreed = Agreed::default();
                            for (field, value) in &record {
                                agreed.set(u16::from(*field), value);
                            }
                            out.push(agreed);
                        }
                    }
                }
            }
            NetflowPacket::IPFix(ipfix) => {
                for set in ipfix.flowsets {
                    if let IpfixBody::Data(data) = set.body {
                        for record in data.fields {
                            let mut agreed = Agreed::default();
                            for (field, value) in &record {
                                if let IPFixField::IANA(iana) = field
                                    && let Some(id) = agreed_id(*iana)
                                {
                                    agreed.set(id, value);
                                }
                            }
                            out.push(agreed);
                        }
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

/// Elements `Agreed` holds.
const AGREED: [u16; 9] = [1, 2, 4, 7, 8, 11, 12, 27, 28];

/// The id of an element `netflow_parser` names, if `Agreed` holds it.
fn agreed_id(field: IANAIPFixField) -> Option<u16> {
    AGREED
        .into_iter()
        .find(|&id| IANAIPFixField::from(id) == field)
}

fn ours(datagram: &[u8]) -> Vec<Agreed> {
    let mut cache = TemplateCache::new(Limits::default());
    let mut records = Vec::new();
    let exporter = to_ip("198.18.0.1".parse().unwrap());
    cache
        .decode(&exporter, datagram, 1_700_000_000_000, 0, &mut records)
        .unwrap();
    records.iter().map(Agreed::from).collect()
}

/// Layouts of flow templates: IPv4 and IPv6, counters of 4 and 8 bytes,
/// fields in different orders, times and interfaces among them.
const LAYOUTS: [&[(u16, u16)]; 5] = [
    layouts::V4_UPTIME_LAST_FIRST,
    &[(1, 8), (27, 16), (4, 1), (28, 16), (2, 8), (11, 2), (7, 2)],
    &[
        (22, 4),
        (21, 4),
        (2, 4),
        (1, 4),
        (11, 2),
        (7, 2),
        (12, 4),
        (8, 4),
        (4, 1),
        (10, 4),
        (14, 4),
    ],
    &[
        (152, 8),
        (153, 8),
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (1, 8),
        (2, 8),
    ],
    &[
        (10, 4),
        (27, 16),
        (28, 16),
        (1, 4),
        (2, 4),
        (4, 1),
        (7, 2),
        (11, 2),
        (14, 4),
    ],
];

fn record(layout: &[(u16, u16)], seed: &mut Rng) -> Vec<u8> {
    let mut rec = Vec::new();
    for &(_, len) in layout {
        for _ in 0..len {
            rec.push(seed.next_u64() as u8);
        }
    }
    rec
}

#[test]
fn every_record_agrees_with_netflow_parser() {
    let mut seed = Rng(0x1234_5678_9abc_def0);
    for version in [V9, IPFIX] {
        for (i, layout) in LAYOUTS.iter().enumerate() {
            let template = Template {
                id: 256 + i as u16,
                fields: layout
                    .iter()
                    .map(|&(id, len)| FieldSpec::iana(id, len))
                    .collect(),
            };
            let records: Vec<Vec<u8>> = (0..5).map(|_| record(layout, &mut seed)).collect();
            let header = Header {
                version,
                unix_secs: 1_700_000_000,
                sys_uptime_ms: if version == V9 { 3_600_000 } else { 0 },
                sequence: 1,
                domain: 7,
            };
            let datagram = encode::export(
                &header,
                &[
                    Set::Templates(vec![template]),
                    Set::Data {
                        id: 256 + i as u16,
                        records,
                    },
                ],
                true,
            );
            let (ours, theirs) = (ours(&datagram), theirs(&datagram));
            assert_eq!(ours.len(), 5, "v{version} layout {i}");
            assert_eq!(ours, theirs, "v{version} layout {i}");
        }
    }
}

#[test]
fn ipfix_vendor_and_variable_length_fields_agree_with_netflow_parser() {
    let fields = vec![
        // A vendor element with an IANA id (not a RFC 5103 reverse one: biflows
        // are `tests/biflow_xdp.rs`'s).
        FieldSpec::enterprise(1, 4, 9),
        FieldSpec::iana(8, 4),
        FieldSpec::iana(82, VARLEN),
        FieldSpec::iana(12, 4),
        FieldSpec::enterprise(100, VARLEN, 9),
        FieldSpec::iana(1, 8),
        FieldSpec::iana(4, 1),
    ];
    let mut seed = Rng(0x0bad_cafe_dead_beef);
    // 1-byte and 3-byte length prefixes. Not 0: netflow_parser refuses
    // empty values and drops the whole set (ours takes them).
    let records: Vec<Vec<u8>> = [1, 3, 254, 255, 300]
        .into_iter()
        .map(|name_len| {
            let mut rec = Vec::new();
            for f in &fields {
                let len = if f.len == VARLEN {
                    name_len
                } else {
                    usize::from(f.len)
                };
                let value: Vec<u8> = (0..len).map(|_| seed.next_u64() as u8).collect();
                if f.len == VARLEN {
                    // interfaceName is a string to netflow_parser: keep it UTF-8.
                    let value: Vec<u8> = value.iter().map(|b| b'a' + b % 26).collect();
                    encode::varlen(&mut rec, &value);
                } else {
                    rec.extend_from_slice(&value);
                }
            }
            rec
        })
        .collect();
    let header = Header {
        version: IPFIX,
        unix_secs: 1_700_000_000,
        ..Header::default()
    };
    let datagram = encode::export(
        &header,
        &[
            Set::Templates(vec![Template { id: 300, fields }]),
            Set::Data { id: 300, records },
        ],
        false,
    );
    let (ours, theirs) = (ours(&datagram), theirs(&datagram));
    assert_eq!(ours.len(), 5);
    assert_eq!(ours, theirs);
}
