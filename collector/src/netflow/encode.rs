//! Builds NetFlow v9 and IPFIX exports from sets, for tests, the XDP parity
//! tests and load generation. Lengths and the v9 record count are computed;
//! callers keep an export under 64 KiB.

use super::sets::{
    FieldSpec, Header, IPFIX, IPFIX_OPTIONS_TEMPLATE_SET, IPFIX_TEMPLATE_SET,
    V9_OPTIONS_TEMPLATE_SET, V9_TEMPLATE_SET,
};

/// A template; in IPFIX, one without fields withdraws `id` (or, with the
/// template set's id 2, every template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub id: u16,
    pub fields: Vec<FieldSpec>,
}

/// An options template; in IPFIX, one without fields is a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionsTemplate {
    pub id: u16,
    pub scope: Vec<FieldSpec>,
    pub options: Vec<FieldSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Set {
    Templates(Vec<Template>),
    OptionsTemplates(Vec<OptionsTemplate>),
    /// Records of template `id`, given as their bytes.
    Data {
        id: u16,
        records: Vec<Vec<u8>>,
    },
}

/// Encodes an export in `header.version`'s format; `pad` zero-pads each set
/// to a multiple of 4 bytes. v9 has no enterprise numbers: they are left out.
pub fn export(header: &Header, sets: &[Set], pad: bool) -> Vec<u8> {
    let ipfix = header.version == IPFIX;
    let mut out = header.version.to_be_bytes().to_vec();
    // v9 record count or IPFIX message length, filled in at the end.
    out.extend_from_slice(&[0, 0]);
    let words = if ipfix {
        vec![header.unix_secs, header.sequence, header.domain]
    } else {
        vec![
            header.sys_uptime_ms,
            header.unix_secs,
            header.sequence,
            header.domain,
        ]
    };
    for word in words {
        out.extend_from_slice(&word.to_be_bytes());
    }
    let mut count = 0;
    for set in sets {
        let start = out.len();
        let id = match (set, ipfix) {
            (Set::Templates(_), true) => IPFIX_TEMPLATE_SET,
            (Set::Templates(_), false) => V9_TEMPLATE_SET,
            (Set::OptionsTemplates(_), true) => IPFIX_OPTIONS_TEMPLATE_SET,
            (Set::OptionsTemplates(_), false) => V9_OPTIONS_TEMPLATE_SET,
            (Set::Data { id, .. }, _) => *id,
        };
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        match set {
            Set::Templates(templates) => {
                for t in templates {
                    push16(&mut out, t.id);
                    push16(&mut out, t.fields.len() as u16);
                    specs(&mut out, &t.fields, ipfix);
                }
                count += templates.len();
            }
            Set::OptionsTemplates(templates) => {
                for t in templates {
                    push16(&mut out, t.id);
                    let fields = t.scope.len() + t.options.len();
                    if !ipfix {
                        push16(&mut out, 4 * t.scope.len() as u16);
                        push16(&mut out, 4 * t.options.len() as u16);
                    } else if fields == 0 {
                        push16(&mut out, 0);
                    } else {
                        push16(&mut out, fields as u16);
                        push16(&mut out, t.scope.len() as u16);
                    }
                    specs(&mut out, &t.scope, ipfix);
                    specs(&mut out, &t.options, ipfix);
                }
                count += templates.len();
            }
            Set::Data { records, .. } => {
                for record in records {
                    out.extend_from_slice(record);
                }
                count += records.len();
            }
        }
        while pad && !(out.len() - start).is_multiple_of(4) {
            out.push(0);
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    let word = if ipfix { out.len() } else { count } as u16;
    out[2..4].copy_from_slice(&word.to_be_bytes());
    out
}

/// Appends an IPFIX variable-length field: a 1-byte length, or 255 and a
/// 2-byte length from 255 bytes on, then the value.
pub fn varlen(out: &mut Vec<u8>, value: &[u8]) {
    if value.len() < 255 {
        out.push(value.len() as u8);
    } else {
        out.push(255);
        push16(out, value.len() as u16);
    }
    out.extend_from_slice(value);
}

fn push16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn specs(out: &mut Vec<u8>, fields: &[FieldSpec], ipfix: bool) {
    for f in fields {
        match f.enterprise.filter(|_| ipfix) {
            Some(pen) => {
                push16(out, f.ie | 0x8000);
                push16(out, f.len);
                out.extend_from_slice(&pen.to_be_bytes());
            }
            None => {
                push16(out, f.ie);
                push16(out, f.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netflow::sets::V9;

    #[test]
    fn a_v9_export_counts_its_records_and_pads_its_sets() {
        let header = Header {
            version: V9,
            sys_uptime_ms: 1,
            unix_secs: 2,
            sequence: 3,
            domain: 4,
        };
        let sets = [
            Set::Templates(vec![Template {
                id: 256,
                fields: vec![FieldSpec::iana(4, 1)],
            }]),
            Set::Data {
                id: 256,
                records: vec![vec![6], vec![17]],
            },
        ];
        let bytes = export(&header, &sets, true);
        assert_eq!(
            bytes,
            [
                0, 9, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // header
                0, 0, 0, 12, 1, 0, 0, 1, 0, 4, 0, 1, // template set
                1, 0, 0, 8, 6, 17, 0, 0, // data set, 2 bytes of padding
            ]
        );
        assert_eq!(export(&header, &sets, false).len(), bytes.len() - 2);
    }

    #[test]
    fn an_ipfix_export_carries_its_length_and_enterprise_numbers() {
        let header = Header {
            version: IPFIX,
            unix_secs: 2,
            sequence: 3,
            domain: 4,
            ..Header::default()
        };
        let sets = [Set::OptionsTemplates(vec![
            OptionsTemplate {
                id: 257,
                scope: vec![FieldSpec::iana(149, 4)],
                options: vec![FieldSpec::enterprise(5, 2, 9)],
            },
            OptionsTemplate {
                id: 258,
                scope: vec![],
                options: vec![],
            },
        ])];
        assert_eq!(
            export(&header, &sets, false),
            [
                0, 10, 0, 42, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // header
                0, 3, 0, 26, // options template set
                1, 1, 0, 2, 0, 1, 0, 149, 0, 4, 0x80, 5, 0, 2, 0, 0, 0, 9, // 257
                1, 2, 0, 0, // withdrawal of 258
            ]
        );
    }

    #[test]
    fn variable_length_values_get_a_short_or_long_prefix() {
        let mut out = Vec::new();
        varlen(&mut out, b"ab");
        assert_eq!(out, [2, b'a', b'b']);
        out.clear();
        varlen(&mut out, &[7; 300]);
        assert_eq!(out[..3], [255, 1, 44]);
        assert_eq!(out.len(), 303);
    }
}
