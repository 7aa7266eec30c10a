//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) wire format: message headers,
//! the set structure, template records and the extents of data records.
//! Structure only; what templates mean is `template.rs`'s business.

use flowtally_common::template::ExportTime;
// Shared with the kernel's set walk.
pub use flowtally_common::templated::{
    FIRST_DATA_SET_ID, IPFIX, IPFIX_HEADER_LEN, IPFIX_OPTIONS_TEMPLATE_SET, IPFIX_TEMPLATE_SET,
    SET_HEADER_LEN, V9, V9_HEADER_LEN, V9_OPTIONS_TEMPLATE_SET, V9_TEMPLATE_SET,
};
/// An IPFIX field length meaning "variable, given in each record".
pub const VARLEN: u16 = 65_535;
/// Marks an IPFIX field specifier followed by an enterprise number.
const ENTERPRISE_BIT: u16 = 0x8000;

/// Why a datagram is rejected whole; nothing of it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than its header")]
    Truncated,
    #[error("version {0} is neither NetFlow v9 nor IPFIX")]
    BadVersion(u16),
    #[error("IPFIX message length is not the datagram's length")]
    BadLength,
    #[error("set at byte {offset}: its header is cut off")]
    TruncatedSetHeader { offset: usize },
    #[error("set at byte {offset}: length {length} is below 4 or runs past the message")]
    BadSetLength { offset: usize, length: u16 },
    #[error("set at byte {offset}: set id {id} is reserved")]
    ReservedSetId { offset: usize, id: u16 },
}

impl DecodeError {
    /// Metric label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Truncated => "flow_truncated",
            Self::BadVersion(_) => "flow_bad_version",
            Self::BadLength => "ipfix_length_mismatch",
            Self::TruncatedSetHeader { .. } => "flow_truncated_set_header",
            Self::BadSetLength { .. } => "flow_bad_set_length",
            Self::ReservedSetId { .. } => "flow_reserved_set_id",
        }
    }
}

/// A v9 or IPFIX message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// [`V9`] or [`IPFIX`].
    pub version: u16,
    /// Export time, Unix seconds.
    pub unix_secs: u32,
    /// v9 only: exporter uptime (ms) at export.
    pub sys_uptime_ms: u32,
    pub sequence: u32,
    /// v9 source id or IPFIX observation domain id.
    pub domain: u32,
}

impl Header {
    /// What record times are relative to (v9 uptimes; IPFIX ignores the uptime).
    pub fn export_time(&self) -> ExportTime {
        ExportTime {
            unix_secs: self.unix_secs,
            sys_uptime_ms: if self.version == V9 {
                self.sys_uptime_ms
            } else {
                0
            },
            version: self.version,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    Templates,
    OptionsTemplates,
    /// Records of the template with this id.
    Data(u16),
}

impl SetKind {
    fn of(version: u16, id: u16) -> Option<Self> {
        match (version, id) {
            (_, id) if id >= FIRST_DATA_SET_ID => Some(Self::Data(id)),
            (V9, V9_TEMPLATE_SET) | (IPFIX, IPFIX_TEMPLATE_SET) => Some(Self::Templates),
            (V9, V9_OPTIONS_TEMPLATE_SET) | (IPFIX, IPFIX_OPTIONS_TEMPLATE_SET) => {
                Some(Self::OptionsTemplates)
            }
            _ => None,
        }
    }
}

/// One set: its kind and the bytes after its 4-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set<'a> {
    pub kind: SetKind,
    pub body: &'a [u8],
}

/// A datagram whose header and set structure are sound.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub sets: Vec<Set<'a>>,
}

impl<'a> Message<'a> {
    /// Checks the header and that the sets tile the message exactly, before
    /// anything in them is used.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let version = be16(datagram, 0).ok_or(DecodeError::Truncated)?;
        let header_len = match version {
            V9 => V9_HEADER_LEN,
            IPFIX => IPFIX_HEADER_LEN,
            other => return Err(DecodeError::BadVersion(other)),
        };
        if datagram.len() < header_len {
            return Err(DecodeError::Truncated);
        }
        // Within the header, checked above.
        let word = |at| be32(datagram, at).unwrap_or_default();
        let header = if version == V9 {
            // The record count (bytes 2..4) goes unchecked: exporters get it
            // wrong, and the sets say what is there (RFC 3954 §5.1).
            Header {
                version,
                sys_uptime_ms: word(4),
                unix_secs: word(8),
                sequence: word(12),
                domain: word(16),
            }
        } else {
            if be16(datagram, 2).map(usize::from) != Some(datagram.len()) {
                return Err(DecodeError::BadLength);
            }
            Header {
                version,
                sys_uptime_ms: 0,
                unix_secs: word(4),
                sequence: word(8),
                domain: word(12),
            }
        };
        let mut sets = Vec::new();
        let mut at = header_len;
        while at < datagram.len() {
            let (Some(id), Some(length)) = (be16(datagram, at), be16(datagram, at + 2)) else {
                return Err(DecodeError::TruncatedSetHeader { offset: at });
            };
            let end = at + usize::from(length);
            if usize::from(length) < SET_HEADER_LEN || end > datagram.len() {
                return Err(DecodeError::BadSetLength { offset: at, length });
            }
            let kind =
                SetKind::of(version, id).ok_or(DecodeError::ReservedSetId { offset: at, id })?;
            sets.push(Set {
                kind,
                body: &datagram[at + SET_HEADER_LEN..end],
            });
            at = end;
        }
        Ok(Self { header, sets })
    }
}

/// One field specifier of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldSpec {
    /// Information element id (v9 field type), without the enterprise bit.
    pub ie: u16,
    /// Length in each record; [`VARLEN`] in IPFIX means variable.
    pub len: u16,
    /// Enterprise number of a vendor element (IPFIX); `None` for IANA ones.
    pub enterprise: Option<u32>,
}

impl FieldSpec {
    pub const fn iana(ie: u16, len: u16) -> Self {
        Self {
            ie,
            len,
            enterprise: None,
        }
    }

    pub const fn enterprise(ie: u16, len: u16, pen: u32) -> Self {
        Self {
            ie,
            len,
            enterprise: Some(pen),
        }
    }

    /// The IANA element this field carries, if it is not a vendor's.
    pub const fn iana_ie(&self) -> Option<u16> {
        match self.enterprise {
            None => Some(self.ie),
            Some(_) => None,
        }
    }
}

/// A template as its exporter defined it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// Options templates: how many leading fields are scope fields; `None`
    /// for templates of flow data.
    pub scope_fields: Option<u16>,
    pub fields: Vec<FieldSpec>,
}

impl Definition {
    /// Whether some field's length is given per record (IPFIX only).
    pub fn is_varlen(&self, version: u16) -> bool {
        version == IPFIX && self.fields.iter().any(|f| f.len == VARLEN)
    }

    /// Bytes of the fixed-length fields: a fixed-length template's record length.
    pub fn fixed_len(&self, version: u16) -> usize {
        self.fields
            .iter()
            .filter(|f| !(version == IPFIX && f.len == VARLEN))
            .map(|f| usize::from(f.len))
            .sum()
    }
}

/// A record of a template or options template set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateRecord {
    Define(u16, Definition),
    /// IPFIX: field count 0.
    Withdraw(u16),
    /// IPFIX: template id = set id, field count 0 — every template of the
    /// set's kind in the domain.
    WithdrawAll,
}

/// A template record that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Checks what every template needs, however it arrived.
pub fn define(
    id: u16,
    scope_fields: Option<u16>,
    fields: Vec<FieldSpec>,
) -> Result<TemplateRecord, Malformed> {
    let scope_ok = match scope_fields {
        Some(scope) => usize::from(scope) <= fields.len(),
        None => true,
    };
    if id < FIRST_DATA_SET_ID || fields.is_empty() || !scope_ok {
        return Err(Malformed);
    }
    Ok(TemplateRecord::Define(
        id,
        Definition {
            scope_fields,
            fields,
        },
    ))
}

/// The records of a template or options template set. A malformed record
/// is reported and skipped; after one whose fields run past the set
/// nothing more can be found.
pub struct TemplateRecords<'a> {
    body: &'a [u8],
    at: usize,
    version: u16,
    options: bool,
}

impl<'a> TemplateRecords<'a> {
    pub fn new(body: &'a [u8], version: u16, options: bool) -> Self {
        Self {
            body,
            at: 0,
            version,
            options,
        }
    }
}

/// A parsed record and its length; `None` when it runs past the set.
type Parsed = Option<(Result<TemplateRecord, Malformed>, usize)>;

impl Iterator for TemplateRecords<'_> {
    type Item = Result<TemplateRecord, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.body.get(self.at..)?;
        // Shorter than any record header: set padding.
        let min = if self.version == V9 && self.options {
            6
        } else {
            4
        };
        if rest.len() < min {
            return None;
        }
        let parsed = match (self.version, self.options) {
            (V9, false) => v9_template(rest),
            (V9, true) => v9_options_template(rest),
            (_, options) => ipfix_template(rest, options),
        };
        match parsed {
            Some((record, len)) => {
                self.at += len;
                Some(record)
            }
            None => {
                self.at = self.body.len();
                Some(Err(Malformed))
            }
        }
    }
}

fn iana_specs(specs: &[u8]) -> Vec<FieldSpec> {
    specs
        .chunks_exact(4)
        .map(|f| {
            FieldSpec::iana(
                u16::from_be_bytes([f[0], f[1]]),
                u16::from_be_bytes([f[2], f[3]]),
            )
        })
        .collect()
}

fn v9_template(rest: &[u8]) -> Parsed {
    let id = be16(rest, 0)?;
    let len = 4 + 4 * usize::from(be16(rest, 2)?);
    let fields = iana_specs(rest.get(4..len)?);
    Some((define(id, None, fields), len))
}

/// v9 gives scope and option fields as byte lengths; scope field types
/// (system, interface, …) are not information elements.
fn v9_options_template(rest: &[u8]) -> Parsed {
    let id = be16(rest, 0)?;
    let scope_len = usize::from(be16(rest, 2)?);
    let options_len = usize::from(be16(rest, 4)?);
    let len = 6 + scope_len + options_len;
    let specs = rest.get(6..len)?;
    if scope_len % 4 != 0 || options_len % 4 != 0 {
        return Some((Err(Malformed), len));
    }
    let scope = u16::try_from(scope_len / 4).ok()?;
    Some((define(id, Some(scope), iana_specs(specs)), len))
}

fn ipfix_template(rest: &[u8], options: bool) -> Parsed {
    let id = be16(rest, 0)?;
    let count = be16(rest, 2)?;
    if count == 0 {
        let set_id = if options {
            IPFIX_OPTIONS_TEMPLATE_SET
        } else {
            IPFIX_TEMPLATE_SET
        };
        let record = match id {
            id if id == set_id => Ok(TemplateRecord::WithdrawAll),
            id if id >= FIRST_DATA_SET_ID => Ok(TemplateRecord::Withdraw(id)),
            _ => Err(Malformed),
        };
        return Some((record, 4));
    }
    let (scope, mut at) = if options {
        (Some(be16(rest, 4)?), 6)
    } else {
        (None, 4)
    };
    // Each specifier takes at least 4 bytes: no larger allocation than the set.
    let mut fields = Vec::with_capacity(usize::from(count).min(rest.len() / 4));
    for _ in 0..count {
        let ie = be16(rest, at)?;
        let len = be16(rest, at + 2)?;
        if ie & ENTERPRISE_BIT != 0 {
            fields.push(FieldSpec::enterprise(
                ie & !ENTERPRISE_BIT,
                len,
                be32(rest, at + 4)?,
            ));
            at += 8;
        } else {
            fields.push(FieldSpec::iana(ie, len));
            at += 4;
        }
    }
    let record = match scope {
        Some(0) => Err(Malformed),
        _ => define(id, scope, fields),
    };
    Some((record, at))
}

/// Finds one data record of `fields` at the start of `rest`: returns its
/// length and puts each field's (offset, length) into `extents`; `None`
/// when `rest` is too short for it.
pub fn record_extents(
    rest: &[u8],
    fields: &[FieldSpec],
    version: u16,
    extents: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    extents.clear();
    let mut at = 0;
    for field in fields {
        let len = if version == IPFIX && field.len == VARLEN {
            match *rest.get(at)? {
                255 => {
                    let len = be16(rest, at + 1)?;
                    at += 3;
                    usize::from(len)
                }
                short => {
                    at += 1;
                    usize::from(short)
                }
            }
        } else {
            usize::from(field.len)
        };
        extents.push((at, len));
        at += len;
    }
    (at <= rest.len()).then_some(at)
}

/// The extents of a record of fixed-length `fields`, for tests.
#[cfg(test)]
pub fn fixed_extents(fields: &[FieldSpec]) -> Vec<(usize, usize)> {
    let len = fields.iter().map(|f| usize::from(f.len)).sum();
    let mut extents = Vec::new();
    record_extents(&vec![0; len], fields, V9, &mut extents).expect("fixed-length fields");
    extents
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netflow::encode::{self, Set as Out, Template};

    fn header(version: u16) -> Header {
        Header {
            version,
            unix_secs: 1_700_000_000,
            sys_uptime_ms: if version == V9 { 5_000 } else { 0 },
            sequence: 7,
            domain: 42,
        }
    }

    fn one_template(version: u16) -> Vec<u8> {
        let template = Template {
            id: 256,
            fields: vec![FieldSpec::iana(8, 4), FieldSpec::iana(12, 4)],
        };
        encode::export(&header(version), &[Out::Templates(vec![template])], false)
    }

    #[test]
    fn headers_of_both_versions_parse() {
        for version in [V9, IPFIX] {
            let datagram = one_template(version);
            let message = Message::parse(&datagram).unwrap();
            assert_eq!(message.header, header(version));
            assert_eq!(message.sets.len(), 1);
            assert_eq!(message.sets[0].kind, SetKind::Templates);
        }
    }

    #[test]
    fn truncated_headers_and_other_versions_are_rejected() {
        assert_eq!(Message::parse(&[]), Err(DecodeError::Truncated));
        assert_eq!(Message::parse(&[0]), Err(DecodeError::Truncated));
        let v9 = one_template(V9);
        assert_eq!(Message::parse(&v9[..19]), Err(DecodeError::Truncated));
        let ipfix = one_template(IPFIX);
        assert_eq!(Message::parse(&ipfix[..15]), Err(DecodeError::Truncated));
        assert_eq!(
            Message::parse(&[0, 5, 0, 1]),
            Err(DecodeError::BadVersion(5))
        );
    }

    #[test]
    fn ipfix_message_length_must_be_the_datagram_length() {
        let mut ipfix = one_template(IPFIX);
        ipfix.push(0);
        assert_eq!(Message::parse(&ipfix), Err(DecodeError::BadLength));
    }

    #[test]
    fn set_lengths_must_tile_the_message() {
        for version in [V9, IPFIX] {
            let good = one_template(version);
            let at = if version == V9 { 20 } else { 16 };
            let with_set_length = |length: u16| {
                let mut bad = good.clone();
                bad[at + 2..at + 4].copy_from_slice(&length.to_be_bytes());
                Message::parse(&bad).map(|_| ())
            };
            for length in [0, 3] {
                assert_eq!(
                    with_set_length(length),
                    Err(DecodeError::BadSetLength { offset: at, length }),
                    "v{version} set length {length}"
                );
            }
            let past = (good.len() - at + 1) as u16;
            assert_eq!(
                with_set_length(past),
                Err(DecodeError::BadSetLength {
                    offset: at,
                    length: past
                })
            );
        }
        let mut trailing = one_template(V9);
        trailing.extend_from_slice(&[1, 0]);
        assert_eq!(
            Message::parse(&trailing),
            Err(DecodeError::TruncatedSetHeader { offset: 20 + 16 })
        );
    }

    #[test]
    fn reserved_set_ids_are_rejected() {
        for (version, id) in [(V9, 2u16), (V9, 255), (IPFIX, 0), (IPFIX, 1), (IPFIX, 4)] {
            let mut bad = one_template(version);
            let at = if version == V9 { 20 } else { 16 };
            bad[at..at + 2].copy_from_slice(&id.to_be_bytes());
            assert_eq!(
                Message::parse(&bad),
                Err(DecodeError::ReservedSetId { offset: at, id }),
                "v{version} set id {id}"
            );
        }
    }

    fn records(body: &[u8], version: u16, options: bool) -> Vec<Result<TemplateRecord, Malformed>> {
        TemplateRecords::new(body, version, options).collect()
    }

    #[test]
    fn ipfix_enterprise_specifiers_take_eight_bytes() {
        let body = [
            1, 0, 0, 2, // template 256, two fields
            0x80, 1, 0, 4, 0, 0, 0x73, 0x79, // enterprise 29561, element 1
            0, 8, 0, 4, // sourceIPv4Address
        ];
        let expected = define(
            256,
            None,
            vec![FieldSpec::enterprise(1, 4, 29_561), FieldSpec::iana(8, 4)],
        );
        assert_eq!(records(&body, IPFIX, false), vec![expected]);
    }

    #[test]
    fn ipfix_withdrawals_have_no_fields() {
        let body = [1, 0, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0];
        assert_eq!(
            records(&body, IPFIX, false),
            vec![
                Ok(TemplateRecord::Withdraw(256)),
                Ok(TemplateRecord::WithdrawAll),
                Err(Malformed)
            ]
        );
        assert_eq!(
            records(&[0, 3, 0, 0], IPFIX, true),
            vec![Ok(TemplateRecord::WithdrawAll)]
        );
        assert_eq!(
            records(&[0, 2, 0, 0], IPFIX, true),
            vec![Err(Malformed)],
            "an options set withdraws all with id 3, not 2"
        );
    }

    #[test]
    fn a_field_count_past_the_set_ends_it() {
        let body = [1, 0, 0, 3, 0, 8, 0, 4, 0, 12, 0, 4];
        for version in [V9, IPFIX] {
            assert_eq!(records(&body, version, false), vec![Err(Malformed)]);
        }
    }

    #[test]
    fn bad_template_records_are_skipped_and_the_rest_read() {
        // v9: template id 5 (below 256), zero fields, then a good one and padding.
        let body = [
            0, 5, 0, 1, 0, 8, 0, 4, 1, 1, 0, 0, 1, 2, 0, 1, 0, 1, 0, 4, 0, 0,
        ];
        assert_eq!(
            records(&body, V9, false),
            vec![
                Err(Malformed),
                Err(Malformed),
                define(258, None, vec![FieldSpec::iana(1, 4)])
            ]
        );
    }

    #[test]
    fn options_templates_carry_their_scope() {
        // v9: scope System (4 bytes), option SAMPLING_INTERVAL; 2 bytes padding.
        let v9 = [1, 0, 0, 4, 0, 4, 0, 1, 0, 4, 0, 34, 0, 4, 0, 0];
        assert_eq!(
            records(&v9, V9, true),
            vec![define(
                256,
                Some(1),
                vec![FieldSpec::iana(1, 4), FieldSpec::iana(34, 4)]
            )]
        );
        let odd_scope = [1, 0, 0, 3, 0, 4, 0, 1, 0, 0, 0, 34, 0, 4];
        assert_eq!(records(&odd_scope, V9, true), vec![Err(Malformed)]);
        // IPFIX: scope count 0 or above the field count is malformed.
        for scope in [0, 2] {
            let ipfix = [1, 0, 0, 1, 0, scope, 0, 149, 0, 4];
            assert_eq!(records(&ipfix, IPFIX, true), vec![Err(Malformed)]);
        }
    }

    #[test]
    fn variable_length_fields_take_one_or_three_length_bytes() {
        let fields = [
            FieldSpec::iana(8, 4),
            FieldSpec::iana(82, VARLEN),
            FieldSpec::iana(83, VARLEN),
        ];
        let mut rec = vec![10, 0, 0, 1, 2, b'a', b'b', 255, 1, 0];
        rec.extend_from_slice(&[b'x'; 256]);
        let mut extents = Vec::new();
        assert_eq!(
            record_extents(&rec, &fields, IPFIX, &mut extents),
            Some(rec.len())
        );
        assert_eq!(extents, [(0, 4), (5, 2), (10, 256)]);
        assert_eq!(
            record_extents(&rec[..rec.len() - 1], &fields, IPFIX, &mut extents),
            None
        );
        assert_eq!(
            record_extents(&rec, &fields, V9, &mut extents),
            None,
            "v9 has no variable-length fields: 65535 is a length"
        );
    }
}
