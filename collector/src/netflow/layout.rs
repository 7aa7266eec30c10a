//! Where the fields aggregation reads sit in a record. One mapping from a
//! template's fields to [`Slot`]s serves both the kernel's compiled
//! templates and the socket path's per-record templates, so that both read
//! records with the same `CompiledTemplate::record_into`.

use flowtally_common::{
    agg::{Ip, ip_from_v4},
    template::{CompiledTemplate, MAX_RECORD_LEN, Slot, TimeKind, ie, read_ip, read_uint},
};

use super::{
    nat::ie::NAT_EVENT,
    options::DomainState,
    sets::{FieldSpec, IPFIX},
};

/// The fields of one template (or, for variable-length templates, of one
/// record) that aggregation reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Slots of the fields found with a supported size; sampling and uptime
    /// base unset.
    pub slots: CompiledTemplate,
    pub record_len: usize,
    /// Some field's length is given per record.
    pub varlen: bool,
    /// A sampler id (IE 48 or 302): its interval is looked up per record.
    pub sampler: Slot,
    /// The IPv6 addresses of a template that declares both families; a
    /// record whose IPv4 addresses are unset uses them.
    pub v6: Option<(Slot, Slot)>,
    /// Declares source and destination addresses of one family and an
    /// octet count, and no natEvent: a flow record.
    pub flow: bool,
    /// Some field has a size its element does not allow; it reads as absent.
    pub bad_field: bool,
    /// A time slot counts exporter uptime.
    pub uptime: bool,
}

/// First occurrence of each element aggregation reads: (offset, length).
#[derive(Default)]
struct Found {
    src4: Option<(usize, usize)>,
    dst4: Option<(usize, usize)>,
    src6: Option<(usize, usize)>,
    dst6: Option<(usize, usize)>,
    src_port: Option<(usize, usize)>,
    dst_port: Option<(usize, usize)>,
    protocol: Option<(usize, usize)>,
    octets: Option<(usize, usize)>,
    packets: Option<(usize, usize)>,
    input_if: Option<(usize, usize)>,
    output_if: Option<(usize, usize)>,
    sampler: Option<(usize, usize)>,
    rev_octets: Option<(usize, usize)>,
    rev_packets: Option<(usize, usize)>,
    start: Option<(usize, usize, TimeKind)>,
    end: Option<(usize, usize, TimeKind)>,
}

/// Start or end, and how the element encodes time.
fn time_element(id: u16) -> Option<(bool, TimeKind)> {
    Some(match id {
        ie::FLOW_START_SYS_UP_TIME => (true, TimeKind::UptimeMs),
        ie::FLOW_END_SYS_UP_TIME => (false, TimeKind::UptimeMs),
        ie::FLOW_START_SECONDS => (true, TimeKind::Seconds),
        ie::FLOW_END_SECONDS => (false, TimeKind::Seconds),
        ie::FLOW_START_MILLISECONDS => (true, TimeKind::Millis),
        ie::FLOW_END_MILLISECONDS => (false, TimeKind::Millis),
        ie::FLOW_START_MICROSECONDS | ie::FLOW_START_NANOSECONDS => (true, TimeKind::Ntp),
        ie::FLOW_END_MICROSECONDS | ie::FLOW_END_NANOSECONDS => (false, TimeKind::Ntp),
        _ => return None,
    })
}

/// The slot of a field at `at` whose length `allowed` accepts; otherwise
/// absent, and `bad` set if the field was there.
fn slot(
    at: Option<(usize, usize)>,
    allowed: impl Fn(usize) -> bool,
    kind: TimeKind,
    bad: &mut bool,
) -> Slot {
    let Some((offset, len)) = at else {
        return Slot::default();
    };
    match (u16::try_from(offset), u8::try_from(len)) {
        (Ok(offset), Ok(size)) if allowed(len) => Slot {
            offset,
            size,
            kind: kind as u8,
        },
        _ => {
            *bad = true;
            Slot::default()
        }
    }
}

const fn time_size(kind: TimeKind) -> usize {
    match kind {
        TimeKind::UptimeMs | TimeKind::Seconds => 4,
        TimeKind::Millis | TimeKind::Ntp => 8,
        TimeKind::Absent => 0,
    }
}

impl Layout {
    /// Maps `fields`, at `extents` (offset, length) in a record, to slots.
    /// The first field carrying an element wins; vendor fields are skipped.
    pub fn new(fields: &[FieldSpec], extents: &[(usize, usize)], varlen: bool) -> Self {
        let mut found = Found::default();
        let mut nat_event = false;
        for (field, &(offset, len)) in fields.iter().zip(extents) {
            if field.enterprise == Some(ie::REVERSE_PEN) {
                let target = match field.ie {
                    ie::OCTET_DELTA_COUNT => &mut found.rev_octets,
                    ie::PACKET_DELTA_COUNT => &mut found.rev_packets,
                    _ => continue,
                };
                target.get_or_insert((offset, len));
                continue;
            }
            let Some(id) = field.iana_ie() else { continue };
            nat_event |= id == NAT_EVENT;
            let target = match id {
                ie::SOURCE_IPV4_ADDRESS => &mut found.src4,
                ie::DESTINATION_IPV4_ADDRESS => &mut found.dst4,
                ie::SOURCE_IPV6_ADDRESS => &mut found.src6,
                ie::DESTINATION_IPV6_ADDRESS => &mut found.dst6,
                ie::SOURCE_TRANSPORT_PORT => &mut found.src_port,
                ie::DESTINATION_TRANSPORT_PORT => &mut found.dst_port,
                ie::PROTOCOL => &mut found.protocol,
                ie::OCTET_DELTA_COUNT => &mut found.octets,
                ie::PACKET_DELTA_COUNT => &mut found.packets,
                ie::INGRESS_INTERFACE => &mut found.input_if,
                ie::EGRESS_INTERFACE => &mut found.output_if,
                ie::SAMPLER_ID | ie::SELECTOR_ID => &mut found.sampler,
                _ => {
                    if let Some((start, kind)) = time_element(id) {
                        let time = if start {
                            &mut found.start
                        } else {
                            &mut found.end
                        };
                        time.get_or_insert((offset, len, kind));
                    }
                    continue;
                }
            };
            target.get_or_insert((offset, len));
        }

        let mut bad = false;
        let counter = |len| (1..=8).contains(&len);
        let interface = |len| (1..=4).contains(&len);
        let v4 = found.src4.is_some() && found.dst4.is_some();
        let v6 = found.src6.is_some() && found.dst6.is_some();
        let (src, dst, address_len) = if v4 {
            (found.src4, found.dst4, 4)
        } else {
            (found.src6, found.dst6, 16)
        };
        let src = slot(src, |len| len == address_len, TimeKind::Absent, &mut bad);
        let dst = slot(dst, |len| len == address_len, TimeKind::Absent, &mut bad);
        let v6_slots = (v4 && v6).then(|| {
            (
                slot(found.src6, |len| len == 16, TimeKind::Absent, &mut bad),
                slot(found.dst6, |len| len == 16, TimeKind::Absent, &mut bad),
            )
        });
        let mut time = |at: Option<(usize, usize, TimeKind)>| match at {
            Some((offset, len, kind)) => slot(
                Some((offset, len)),
                |len| len == time_size(kind),
                kind,
                &mut bad,
            ),
            None => Slot::default(),
        };
        let (start, end) = (time(found.start), time(found.end));
        let record_len = extents.last().map_or(0, |&(offset, len)| offset + len);
        let slots = CompiledTemplate {
            record_len: u16::try_from(record_len).unwrap_or(u16::MAX),
            src,
            dst,
            src_port: slot(found.src_port, |len| len == 2, TimeKind::Absent, &mut bad),
            dst_port: slot(found.dst_port, |len| len == 2, TimeKind::Absent, &mut bad),
            protocol: slot(found.protocol, |len| len == 1, TimeKind::Absent, &mut bad),
            octets: slot(found.octets, counter, TimeKind::Absent, &mut bad),
            packets: slot(found.packets, counter, TimeKind::Absent, &mut bad),
            start,
            end,
            input_if: slot(found.input_if, interface, TimeKind::Absent, &mut bad),
            output_if: slot(found.output_if, interface, TimeKind::Absent, &mut bad),
            rev_octets: slot(found.rev_octets, counter, TimeKind::Absent, &mut bad),
            rev_packets: slot(found.rev_packets, counter, TimeKind::Absent, &mut bad),
            ..CompiledTemplate::default()
        };
        let sampler = slot(found.sampler, counter, TimeKind::Absent, &mut bad);
        let uptime = [start, end]
            .iter()
            .any(|s| s.kind == TimeKind::UptimeMs as u8);
        Self {
            slots,
            record_len,
            varlen,
            sampler,
            v6: v6_slots,
            // NAT event records name addresses too, and some carry octets:
            // they are never traffic (and never compiled for the kernel).
            flow: (v4 || v6) && found.octets.is_some() && !nat_event,
            bad_field: bad,
            uptime,
        }
    }

    /// The kernel's template for these records, if the kernel can read them
    /// alone: fixed length within [`MAX_RECORD_LEN`], a flow record of one
    /// address family, every field a supported size, no per-record sampler,
    /// and for IPFIX uptime times a known system init time.
    pub fn compile(&self, version: u16, domain: Option<&DomainState>) -> Option<CompiledTemplate> {
        let init = domain.and_then(|d| d.system_init_ms);
        let needs_init = version == IPFIX && self.uptime;
        let readable = self.flow
            && !self.varlen
            && !self.bad_field
            && self.v6.is_none()
            && !self.sampler.present()
            && self.record_len <= MAX_RECORD_LEN
            && (!needs_init || init.is_some());
        readable.then(|| CompiledTemplate {
            sampling: domain.and_then(|d| d.sampling).unwrap_or(1),
            uptime_base_ms: if needs_init { init.unwrap_or(0) } else { 0 },
            ..self.slots
        })
    }

    /// The socket path's template for record `rec` (zero-padded to a power
    /// of two, as `record_into` wants it) when the kernel cannot read it:
    /// sampler interval and address family per record; IPFIX uptime times
    /// without a system init time are dropped (the record is timed at
    /// export). Notes what it had to make do with.
    pub fn for_record(
        &self,
        rec: &[u8],
        version: u16,
        domain: Option<&DomainState>,
    ) -> (CompiledTemplate, MadeDo) {
        let mut made_do = MadeDo::default();
        let mut t = CompiledTemplate {
            sampling: domain.and_then(|d| d.sampling).unwrap_or(1),
            ..self.slots
        };
        if let Some((src, dst)) = self.v6
            && unset(&read_ip(rec, &t.src))
            && unset(&read_ip(rec, &t.dst))
        {
            t.src = src;
            t.dst = dst;
        }
        if self.sampler.present() {
            let id = read_uint(rec, &self.sampler);
            t.sampling = match domain.and_then(|d| d.samplers.get(&id)) {
                Some(&interval) => interval,
                None => {
                    made_do.unknown_sampler = true;
                    1
                }
            };
        }
        if version == IPFIX && self.uptime {
            match domain.and_then(|d| d.system_init_ms) {
                Some(init) => t.uptime_base_ms = init,
                None => {
                    made_do.no_system_init_time = true;
                    for time in [&mut t.start, &mut t.end] {
                        if time.kind == TimeKind::UptimeMs as u8 {
                            *time = Slot::default();
                        }
                    }
                }
            }
        }
        made_do.bad_field = self.bad_field;
        (t, made_do)
    }
}

/// What [`Layout::for_record`] had to make do with, for the decode report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MadeDo {
    /// The record's sampler id has no interval yet: taken as unsampled.
    pub unknown_sampler: bool,
    /// IPFIX uptime times without the system init time: timed at export.
    pub no_system_init_time: bool,
    /// A field of a size unsupported for its element, read as absent.
    pub bad_field: bool,
}

fn unset(ip: &Ip) -> bool {
    *ip == [0; 16] || *ip == ip_from_v4([0; 4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netflow::sets::{V9, fixed_extents};

    fn fixed(fields: &[(u16, u16)]) -> Layout {
        let fields: Vec<_> = fields
            .iter()
            .map(|&(id, len)| FieldSpec::iana(id, len))
            .collect();
        let extents = fixed_extents(&fields);
        Layout::new(&fields, &extents, false)
    }

    const V4_FLOW: [(u16, u16); 3] = [(8, 4), (12, 4), (1, 4)];

    #[test]
    fn a_minimal_ipv4_flow_template_compiles() {
        let t = fixed(&V4_FLOW).compile(V9, None).unwrap();
        assert_eq!(t.record_len, 12);
        assert_eq!((t.src.offset, t.dst.offset, t.octets.offset), (0, 4, 8));
        assert_eq!(t.sampling, 1, "unsampled until options data says otherwise");
        assert!(!t.packets.present() && !t.end.present());
    }

    #[test]
    fn optional_fields_land_where_the_template_puts_them() {
        let t = fixed(&[
            (22, 4),
            (4, 1),
            (27, 16),
            (7, 2),
            (28, 16),
            (11, 2),
            (2, 8),
            (1, 8),
            (21, 4),
        ])
        .compile(V9, None)
        .unwrap();
        assert_eq!((t.src.offset, t.src.size), (5, 16));
        assert_eq!((t.dst.offset, t.dst.size), (23, 16));
        assert_eq!((t.src_port.offset, t.dst_port.offset), (21, 39));
        assert_eq!(
            (t.protocol.offset, t.packets.offset, t.octets.offset),
            (4, 41, 49)
        );
        assert_eq!((t.start.offset, t.end.offset), (0, 57));
        assert_eq!(t.end.kind, TimeKind::UptimeMs as u8);
    }

    #[test]
    fn templates_without_addresses_or_octets_are_not_flows() {
        assert!(!fixed(&[(8, 4), (1, 4)]).flow, "no destination");
        assert!(!fixed(&[(8, 4), (28, 16), (1, 4)]).flow, "families mixed");
        assert!(!fixed(&[(8, 4), (12, 4), (2, 4)]).flow, "no octets");
        assert_eq!(fixed(&[(10, 4), (14, 4)]).compile(V9, None), None);
    }

    #[test]
    fn nat_event_templates_never_compile_even_with_octets() {
        let nat = fixed(&[(8, 4), (12, 4), (1, 4), (NAT_EVENT, 1)]);
        assert!(!nat.flow);
        assert_eq!(nat.compile(V9, None), None, "the kernel passes them up");
    }

    #[test]
    fn unsupported_sizes_read_as_absent_and_block_compiling() {
        let three_byte_address = fixed(&[(8, 3), (12, 4), (1, 4)]);
        assert!(three_byte_address.flow && three_byte_address.bad_field);
        assert!(!three_byte_address.slots.src.present());
        assert_eq!(three_byte_address.compile(V9, None), None);
        for bad in [(1, 9), (7, 4), (4, 2), (21, 8), (152, 4)] {
            let mut fields = vec![(8, 4), (12, 4), bad];
            if bad.0 != 1 {
                fields.push((1, 4));
            }
            assert!(fixed(&fields).bad_field, "{bad:?}");
        }
    }

    #[test]
    fn sampler_ids_long_records_and_both_families_stay_on_the_socket_path() {
        assert!(
            fixed(&[(8, 4), (12, 4), (1, 4), (48, 1)])
                .compile(V9, None)
                .is_none()
        );
        assert!(
            fixed(&[(8, 4), (12, 4), (1, 4), (302, 4)])
                .compile(V9, None)
                .is_none()
        );
        assert!(
            fixed(&[(8, 4), (12, 4), (1, 4), (100, 501)])
                .compile(V9, None)
                .is_none()
        );
        assert!(
            fixed(&[(8, 4), (12, 4), (1, 4), (100, 500)])
                .compile(V9, None)
                .is_some()
        );
        let both = fixed(&[(8, 4), (12, 4), (27, 16), (28, 16), (1, 4)]);
        assert!(both.flow && both.compile(V9, None).is_none());
    }

    #[test]
    fn a_record_of_both_families_uses_the_one_that_is_set() {
        let both = fixed(&[(8, 4), (12, 4), (27, 16), (28, 16), (1, 4)]);
        let mut rec = vec![0; 64];
        rec[8] = 0x20; // 2000:: as the IPv6 source
        let (t, _) = both.for_record(&rec, V9, None);
        assert_eq!((t.src.offset, t.src.size), (8, 16));
        rec[0] = 10; // 10.0.0.0 as the IPv4 source
        let (t, _) = both.for_record(&rec, V9, None);
        assert_eq!((t.src.offset, t.src.size), (0, 4));
    }

    #[test]
    fn ipfix_uptime_times_need_the_system_init_time() {
        let layout = fixed(&[(8, 4), (12, 4), (1, 4), (21, 4)]);
        assert!(
            layout.compile(V9, None).is_some(),
            "v9 uptimes use the header"
        );
        assert_eq!(layout.compile(IPFIX, None), None);
        let domain = DomainState {
            system_init_ms: Some(1_600_000_000_000),
            ..DomainState::default()
        };
        let t = layout.compile(IPFIX, Some(&domain)).unwrap();
        assert_eq!(t.uptime_base_ms, 1_600_000_000_000);
        let (t, made_do) = layout.for_record(&[0; 16], IPFIX, None);
        assert!(!t.end.present(), "timed at export instead");
        assert!(made_do.no_system_init_time);
    }
}
