//! Fuzzing entry points for the flow codecs (`collector/fuzz`, `cargo
//! xtask fuzz`): each runs a codec on arbitrary bytes and panics when an
//! invariant does not hold. Unit tests run the committed seed corpora
//! through them, and `tests/fuzz_xdp.rs` runs the template compiler's seeds
//! through the real XDP program.
//!
//! Inputs holding several datagrams frame each with a 2-byte big-endian
//! length; a frame cut short is the last datagram.

use std::{collections::BTreeMap, net::IpAddr};

use crate::integrity::sequence::{Seen, Sequences};

use flowtally_common::{
    agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START, FlowRecord, Ip, ip_from_v4, scale},
    template::{
        CompiledTemplate, ExportTime, MAX_EXPORT_LEN, MAX_EXPORT_RECORDS, MAX_RECORD_LEN, MAX_SETS,
        MIN_RECORD_LEN, TemplateKey, TimeKind,
    },
    v5::{HEADER_LEN, MAX_RECORDS, RECORD_LEN},
};

use crate::nat::{Bindings, Limits as NatLimits};

use super::{
    Limits, TemplateCache, TemplateChange,
    encode::{self, OptionsTemplate, Set as EncodedSet, Template},
    sets::{
        Definition, FieldSpec, Header, IPFIX, IPFIX_HEADER_LEN, Message, SetKind, TemplateRecord,
        TemplateRecords, V9, V9_HEADER_LEN,
    },
    v5::{self as nf5, Export},
};

/// The exporter every fuzzed datagram comes from.
pub const EXPORTER: [u8; 4] = [198, 18, 0, 1];
/// Wall clock of the fuzzed cache: late 2023, like the seeds' headers.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Small enough that inputs of a few KiB reach every limit.
pub const LIMITS: Limits = Limits {
    max_templates_per_exporter: 16,
    max_fields_per_template: 32,
    max_template_bytes: 600,
    template_timeout_ms: 10_000,
    max_pending_bytes_per_exporter: 2048,
    pending_timeout_ms: 3_000,
    max_samplers_per_domain: 4,
};

/// Small enough that inputs of a few KiB reach the binding history's limits.
const NAT_LIMITS: NatLimits = NatLimits {
    max_lifetime_ms: 5_000,
    memory_retention_ms: 2_000,
    max_bindings: 16,
};

/// Splits a fuzz input into datagrams (see the module docs).
pub fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

/// Frames datagrams as [`datagrams`] splits them, for writing seeds.
pub fn frame(datagrams: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// NetFlow v5: the decoder accepts exactly what the format allows, reads
/// every field where the format puts it, and the encoder rebuilds the
/// datagram byte for byte from what was read.
pub fn v5(data: &[u8]) {
    let count = data.get(2..4).map_or(0, |c| usize::from(be16(c, 0)));
    let well_formed = data.len() >= HEADER_LEN
        && be16(data, 0) == 5
        && (1..=MAX_RECORDS).contains(&count)
        && data.len() == HEADER_LEN + count * RECORD_LEN;
    let export = match Export::decode(data) {
        Ok(export) => export,
        Err(err) => {
            assert!(!well_formed, "a well-formed export rejected: {err:?}");
            return;
        }
    };
    assert!(well_formed, "a malformed export accepted");
    let header = export.header;
    let mut rebuilt = Vec::new();
    for (i, raw) in export.records().enumerate() {
        let r = &data[HEADER_LEN + i * RECORD_LEN..][..RECORD_LEN];
        rebuilt.push(nf5::Record {
            src: [r[0], r[1], r[2], r[3]],
            dst: [r[4], r[5], r[6], r[7]],
            next_hop: [r[8], r[9], r[10], r[11]],
            input: be16(r, 12),
            output: be16(r, 14),
            packets: be32(r, 16),
            octets: be32(r, 20),
            first: be32(r, 24),
            last: be32(r, 28),
            src_port: be16(r, 32),
            dst_port: be16(r, 34),
            tcp_flags: r[37],
            protocol: r[38],
            tos: r[39],
            src_as: be16(r, 40),
            dst_as: be16(r, 42),
            src_mask: r[44],
            dst_mask: r[45],
        });
        let want = &rebuilt[i];
        let interval = header.sampling_interval();
        for flags in [0, FLAG_SCALE_SAMPLING | FLAG_TIME_FROM_START] {
            let got = header.record(&raw, flags);
            let (interval, time) = if flags == 0 {
                (1, want.last)
            } else {
                (interval, want.first)
            };
            assert_eq!(got.src, ip_from_v4(want.src));
            assert_eq!(got.dst, ip_from_v4(want.dst));
            assert_eq!((got.src_port, got.dst_port), (want.src_port, want.dst_port));
            assert_eq!(got.protocol, want.protocol);
            assert_eq!(got.bytes, scale(want.octets.into(), interval));
            assert_eq!(got.packets, scale(want.packets.into(), interval));
            assert_eq!(
                (got.input_if, got.output_if),
                (want.input.into(), want.output.into())
            );
            assert_eq!(got.time_ms, header.unix_ms(time));
        }
    }
    // Bytes 36 and 46..48 are padding; the encoder writes zeros there.
    let mut padded = data.to_vec();
    for i in 0..count {
        let r = HEADER_LEN + i * RECORD_LEN;
        padded[r + 36] = 0;
        padded[r + 46..r + 48].fill(0);
    }
    assert_eq!(nf5::encode(&header, &rebuilt), padded);
}

/// Checks a template the kernel is told to install against what the XDP
/// program relies on: a record it can window, and every field inside the
/// record (the kernel's window runs on into the next record, the socket
/// path's is zero-padded, so a field past the record would read
/// differently).
fn assert_kernel_readable(key: &TemplateKey, t: &CompiledTemplate) {
    let len = usize::from(t.record_len);
    assert!(len <= MAX_RECORD_LEN, "{key:?}: record of {len} bytes");
    let slots = [
        t.src,
        t.dst,
        t.src_port,
        t.dst_port,
        t.protocol,
        t.octets,
        t.packets,
        t.start,
        t.end,
        t.input_if,
        t.output_if,
    ];
    for slot in slots.iter().filter(|s| s.present()) {
        let end = usize::from(slot.offset) + usize::from(slot.size);
        assert!(end <= len, "{key:?}: {slot:?} past a {len}-byte record");
    }
    assert!(
        t.src.size == t.dst.size && matches!(t.src.size, 4 | 16),
        "{key:?}: addresses"
    );
    assert!((1..=8).contains(&t.octets.size), "{key:?}: octets");
    for time in [t.start, t.end].iter().filter(|s| s.present()) {
        let size = match time.kind {
            k if k == TimeKind::UptimeMs as u8 || k == TimeKind::Seconds as u8 => 4,
            k if k == TimeKind::Millis as u8 || k == TimeKind::Ntp as u8 => 8,
            k => panic!("{key:?}: time kind {k}"),
        };
        assert_eq!(time.size, size, "{key:?}: {time:?}");
    }
    assert!(t.sampling >= 1, "{key:?}: sampling {}", t.sampling);
}

/// The kernel's copy of `TEMPLATES`, kept as the daemon keeps it: by
/// applying every change the cache reports.
fn apply(kernel: &mut BTreeMap<TemplateKey, CompiledTemplate>, changes: Vec<TemplateChange>) {
    for change in changes {
        match change {
            TemplateChange::Install(key, t) => {
                assert_kernel_readable(&key, &t);
                kernel.insert(key, t);
            }
            TemplateChange::Remove(key) => {
                kernel.remove(&key);
            }
        }
    }
}

/// NetFlow v9 / IPFIX on the socket path, over a sequence of datagrams
/// with time moving on: nothing panics; a datagram is rejected only when
/// its structure is unsound, and then yields nothing; reports add up; NAT
/// events feed a binding history that stays within its limits; the
/// kernel's map, kept from reported changes, always equals what the cache
/// has compiled, and holds only what the kernel can read; a saved cache
/// restores to the same compiled templates. The sequence tracker, fed
/// every decoded datagram's header as the socket path feeds it, counts each
/// one once, whatever their sequence numbers and clocks do.
pub fn templates(data: &[u8]) {
    let exporter = ip_from_v4(EXPORTER);
    let mut cache = TemplateCache::new(LIMITS);
    let mut kernel = BTreeMap::new();
    let mut sequences = Sequences::default();
    let mut decoded = 0;
    let mut bindings = Bindings::new(NAT_LIMITS);
    let mut now_ms = NOW_MS;
    for (i, datagram) in datagrams(data).into_iter().enumerate() {
        let flags = if i % 2 == 0 { FLAG_SCALE_SAMPLING } else { 0 };
        let (mut out, mut nat) = (Vec::new(), Vec::new());
        match cache.decode_with_nat(&exporter, datagram, now_ms, flags, &mut out, &mut nat) {
            Ok(report) => {
                assert_eq!(report.records, out.len() as u64);
                let bytes = out.iter().fold(0u64, |sum, r| sum.saturating_add(r.bytes));
                assert_eq!(report.bytes, bytes);
                let seen = Seen::templated(&exporter, &report);
                sequences.observe(&seen, now_ms);
                decoded += 1;
                assert_eq!(report.nat_records, nat.len() as u64);
                for event in &nat {
                    bindings.apply(IpAddr::from(EXPORTER), event);
                    if let (Some(ip), 0) = (event.outside, i % 3) {
                        let port = event.outside_ports.start;
                        bindings.lookup(0, ip, event.protocol, port, event.time_ms);
                    }
                }
                let kept = bindings.take_changes().len();
                assert!(kept <= nat.len(), "one row change per event at most");
            }
            Err(err) => {
                assert_eq!(Message::parse(datagram).err(), Some(err));
                assert!(out.is_empty(), "{err}: records from a rejected datagram");
                assert!(nat.is_empty(), "{err}: NAT events from a rejected datagram");
            }
        }
        let pruned = bindings.prune(now_ms);
        assert!(pruned.kept <= NAT_LIMITS.max_bindings && pruned.open <= pruned.kept);
        apply(&mut kernel, cache.take_changes());
        let compiled: BTreeMap<_, _> = cache.compiled().collect();
        assert_eq!(kernel, compiled, "the kernel's map drifted from the cache");
        // Varying steps, so that both templates and pending data expire.
        now_ms += 250 << (i % 6);
    }
    let healths = sequences.close(now_ms, 2_000, true);
    let exports: u64 = healths.iter().map(|h| h.figures.exports).sum();
    assert_eq!(exports, decoded, "every decoded export counted once");
    for h in &healths {
        let f = &h.figures;
        assert!(f.restarts <= f.exports, "{h:?}");
    }
    // Restoring leaves out what has expired by then: so must the cache.
    cache.expire(now_ms);
    apply(&mut kernel, cache.take_changes());
    let compiled: BTreeMap<_, _> = cache.compiled().collect();
    assert_eq!(kernel, compiled, "the kernel's map drifted from the cache");
    let restored =
        TemplateCache::restore(&cache.save(), LIMITS, now_ms).expect("a saved cache restores");
    assert_eq!(
        restored.compiled().collect::<Vec<_>>(),
        cache.compiled().collect::<Vec<_>>()
    );
}

/// What the XDP program does with a v9/IPFIX export (collector-ebpf
/// `templated.rs`), restated for userspace over a copy of `TEMPLATES`.
#[derive(Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// Parsed and aggregated in the kernel: these records, in this order.
    Aggregated(Vec<FlowRecord>),
    /// Data of a template the kernel lacks: passed up.
    ToUser,
    /// Carries a template set: passed up (and the domain held).
    TemplatesToUser,
    /// Malformed or beyond the kernel's bounds: passed up.
    Invalid,
}

/// The XDP program's walk over `export` from `exporter`, with templates
/// from `lookup` and records read through the same `record_into`. Bytes
/// after the export in the kernel's buffer are whatever an earlier packet
/// left there: `stale` fills them here. `None` for other versions.
pub fn kernel_walk(
    lookup: impl Fn(&TemplateKey) -> Option<CompiledTemplate>,
    exporter: &Ip,
    export: &[u8],
    flags: u32,
    stale: u8,
) -> Option<KernelVerdict> {
    let version = u16::from_be_bytes([*export.first()?, *export.get(1)?]);
    let header_len = match version {
        V9 => V9_HEADER_LEN,
        IPFIX => IPFIX_HEADER_LEN,
        _ => return None,
    };
    let len = export.len();
    if len < header_len || len > MAX_EXPORT_LEN {
        return Some(KernelVerdict::Invalid);
    }
    let mut buf = vec![stale; MAX_EXPORT_LEN + 2 * MAX_RECORD_LEN];
    buf[..len].copy_from_slice(export);
    let (time, domain) = if version == V9 {
        let time = ExportTime {
            unix_secs: be32(&buf, 8),
            sys_uptime_ms: be32(&buf, 4),
            version,
        };
        (time, be32(&buf, 16))
    } else {
        if usize::from(be16(&buf, 2)) != len {
            return Some(KernelVerdict::Invalid);
        }
        let time = ExportTime {
            unix_secs: be32(&buf, 4),
            sys_uptime_ms: 0,
            version,
        };
        (time, be32(&buf, 12))
    };
    let mut sets = Vec::new();
    let (mut cursor, mut records) = (header_len, 0);
    while cursor < len {
        if sets.len() >= MAX_SETS || cursor + 4 > len {
            return Some(KernelVerdict::Invalid);
        }
        let (id, set_len) = (be16(&buf, cursor), usize::from(be16(&buf, cursor + 2)));
        if set_len < 4 || cursor + set_len > len {
            return Some(KernelVerdict::Invalid);
        }
        if id < 256 {
            return Some(KernelVerdict::TemplatesToUser);
        }
        let key = TemplateKey {
            exporter: *exporter,
            domain,
            template_id: id,
            version,
        };
        let Some(template) = lookup(&key) else {
            return Some(KernelVerdict::ToUser);
        };
        let record_len = usize::from(template.record_len);
        if record_len < usize::from(MIN_RECORD_LEN) || record_len > MAX_RECORD_LEN {
            return Some(KernelVerdict::ToUser);
        }
        let n = (set_len - 4) / record_len;
        records += n;
        if records > MAX_EXPORT_RECORDS as usize {
            return Some(KernelVerdict::Invalid);
        }
        sets.push((cursor + 4, n, template));
        cursor += set_len;
    }
    if sets.is_empty() {
        return Some(KernelVerdict::Invalid);
    }
    let mut out = Vec::with_capacity(records);
    for (start, n, template) in sets {
        let record_len = usize::from(template.record_len);
        for i in 0..n {
            let at = start + i * record_len;
            let rec = &buf[at..at + MAX_RECORD_LEN];
            let mut record = FlowRecord::default();
            template.record_into(rec, &time, flags, &mut record);
            out.push(record);
            // A biflow record's reverse direction, in a step of its own.
            if template.reverse_into(rec, flags, &mut record) {
                out.push(record);
            }
        }
    }
    Some(KernelVerdict::Aggregated(out))
}

/// The template compiler against the socket decoder: the first byte picks
/// the record flags, then every datagram but the last teaches the cache;
/// whatever it compiled, when the kernel would aggregate the last datagram
/// with those templates, the socket path decodes exactly the same records
/// from it.
pub fn compiled_parity(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let flags = parity_flags(selector);
    let exporter = ip_from_v4(EXPORTER);
    let Some((export, teach)) = datagrams(rest).split_last().map(|(l, t)| (*l, t.to_vec())) else {
        return;
    };
    let mut cache = TemplateCache::new(LIMITS);
    for datagram in teach {
        let _ = cache.decode(&exporter, datagram, NOW_MS, flags, &mut Vec::new());
    }
    let mut kernel = BTreeMap::new();
    apply(&mut kernel, cache.take_changes());
    let Some(KernelVerdict::Aggregated(in_kernel)) = kernel_walk(
        |key| kernel.get(key).copied(),
        &exporter,
        export,
        flags,
        selector,
    ) else {
        return;
    };
    let mut on_socket = Vec::new();
    let report = cache
        .decode(&exporter, export, NOW_MS, flags, &mut on_socket)
        .expect("what the kernel aggregates, the socket path decodes");
    assert_eq!(report.records, on_socket.len() as u64);
    assert_eq!(
        in_kernel, on_socket,
        "the kernel and the socket path disagree"
    );
}

/// The record flags a [`compiled_parity`] input's first byte selects.
pub fn parity_flags(selector: u8) -> u32 {
    [
        0,
        FLAG_SCALE_SAMPLING,
        FLAG_TIME_FROM_START,
        FLAG_SCALE_SAMPLING | FLAG_TIME_FROM_START,
    ][usize::from(selector & 3)]
}

/// Reads fuzz bytes as choices; zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }

    fn below(&mut self, n: u8) -> usize {
        usize::from(self.u8() % n)
    }

    fn field(&mut self, ipfix: bool) -> FieldSpec {
        let (ie, len) = (self.u16() & 0x7fff, self.u16());
        if ipfix && self.u8() & 1 == 1 {
            FieldSpec::enterprise(ie, len, self.u32())
        } else {
            FieldSpec::iana(ie, len)
        }
    }

    fn fields(&mut self, ipfix: bool, min: usize) -> Vec<FieldSpec> {
        let n = min + self.below(6);
        (0..n).map(|_| self.field(ipfix)).collect()
    }

    fn template_id(&mut self) -> u16 {
        256 + self.u16() % 0xff00
    }
}

/// The v9/IPFIX encoder and decoder round trip: an export built from
/// arbitrary sets (templates, options templates, data) parses back to the
/// same header, the same sets in order, the same template records, and the
/// data records' bytes; the full decoder accepts it.
pub fn encode_round_trip(data: &[u8]) {
    let mut c = Choices(data);
    let ipfix = c.u8() & 1 == 1;
    let pad = c.u8() & 1 == 1;
    let version = if ipfix { IPFIX } else { V9 };
    let header = Header {
        version,
        unix_secs: c.u32(),
        sys_uptime_ms: if ipfix { 0 } else { c.u32() },
        sequence: c.u32(),
        domain: c.u32(),
    };
    let mut sets = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..c.below(6) {
        let (set, records) = match c.below(3) {
            0 => {
                let templates: Vec<Template> = (0..1 + c.below(3))
                    .map(|_| Template {
                        id: c.template_id(),
                        fields: c.fields(ipfix, 1),
                    })
                    .collect();
                let records: Vec<_> = templates
                    .iter()
                    .map(|t| definition(t.id, None, t.fields.clone()))
                    .collect();
                (EncodedSet::Templates(templates), Ok(records))
            }
            1 => {
                let templates: Vec<OptionsTemplate> = (0..1 + c.below(3))
                    .map(|_| OptionsTemplate {
                        id: c.template_id(),
                        scope: c.fields(ipfix, 1),
                        options: c.fields(ipfix, 0),
                    })
                    .collect();
                let records: Vec<_> = templates
                    .iter()
                    .map(|t| {
                        let fields = [&t.scope[..], &t.options[..]].concat();
                        definition(t.id, Some(t.scope.len() as u16), fields)
                    })
                    .collect();
                (EncodedSet::OptionsTemplates(templates), Ok(records))
            }
            _ => {
                let records: Vec<Vec<u8>> = (0..c.below(4))
                    .map(|_| (0..c.below(40)).map(|_| c.u8()).collect())
                    .collect();
                let body = records.concat();
                (
                    EncodedSet::Data {
                        id: c.template_id(),
                        records,
                    },
                    Err(body),
                )
            }
        };
        sets.push(set);
        expected.push(records);
    }
    let bytes = encode::export(&header, &sets, pad);
    let message = Message::parse(&bytes).expect("an encoded export parses");
    assert_eq!(message.header, header);
    assert_eq!(message.sets.len(), sets.len());
    for ((set, parsed), expected) in sets.iter().zip(&message.sets).zip(expected) {
        match (set, expected) {
            (EncodedSet::Data { id, .. }, Err(body)) => {
                assert_eq!(parsed.kind, SetKind::Data(*id));
                let padding = &parsed.body[body.len()..];
                assert_eq!(&parsed.body[..body.len()], &body[..]);
                assert!(padding.len() < 4 && padding.iter().all(|&b| b == 0));
                assert!(pad || padding.is_empty());
            }
            (set, Ok(records)) => {
                let options = matches!(set, EncodedSet::OptionsTemplates(_));
                let kind = if options {
                    SetKind::OptionsTemplates
                } else {
                    SetKind::Templates
                };
                assert_eq!(parsed.kind, kind);
                let decoded: Vec<_> = TemplateRecords::new(parsed.body, version, options)
                    .map(|r| r.expect("an encoded template record parses"))
                    .collect();
                assert_eq!(decoded, records);
            }
            _ => unreachable!("expectations follow the sets"),
        }
    }
    let mut cache = TemplateCache::new(LIMITS);
    cache
        .decode(&ip_from_v4(EXPORTER), &bytes, NOW_MS, 0, &mut Vec::new())
        .expect("the full decoder accepts an encoded export");
}

fn definition(id: u16, scope_fields: Option<u16>, fields: Vec<FieldSpec>) -> TemplateRecord {
    TemplateRecord::Define(
        id,
        Definition {
            scope_fields,
            fields,
        },
    )
}

#[cfg(test)]
mod tests;
