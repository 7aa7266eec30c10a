//! NAT event records (RFC 8158, Cisco NEL): any v9/IPFIX data record whose
//! template carries `natEvent` (IE 230) says that a carrier-grade NAT bound
//! or released a public address and port (or port block) for an inside
//! address. They are not traffic: the template cache hands them out beside
//! the flow records, the kernel never compiles their templates
//! (`Layout::new`), and the binding history (`crate::nat`) takes them in.
//!
//! What a record is read as:
//! - Inside: pre-NAT source address (IE 8, else 27 for NAT64) and port (7),
//!   ingress VRF (234). Outside: post-NAT source address (225, else 281)
//!   and port (227), egress VRF (235). Protocol (4); 0 when absent, which
//!   for a port block means every protocol.
//! - Port blocks (natEvent 16/17): portRangeStart..End (361/362), every
//!   portRangeStepSize-th port (363, default 1); without an end,
//!   portRangeNumPorts (364) ports from the start. A session or BIB event
//!   binds its one post-NAT port; one without a post-NAT port binds the
//!   whole address.
//! - Time: observationTime (323 ms, 322 s, 324/325 NTP), else the export
//!   header's time. A start (flowStart 152, 150, 154, 156) on a delete says
//!   when the binding began, should its create be missing.
//! - Unsigned fields may be sent shorter than their type (RFC 7011 §6.2);
//!   a field of a length its element cannot have reads as absent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowtally_common::template::ExportTime;

use super::sets::FieldSpec;

/// Information elements of NAT event records (IANA IPFIX registry).
pub mod ie {
    pub const PROTOCOL: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const FLOW_START_SECONDS: u16 = 150;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_START_MICROSECONDS: u16 = 154;
    pub const FLOW_START_NANOSECONDS: u16 = 156;
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    pub const NAT_EVENT: u16 = 230;
    pub const INGRESS_VRF_ID: u16 = 234;
    pub const EGRESS_VRF_ID: u16 = 235;
    pub const POST_NAT_SOURCE_IPV6_ADDRESS: u16 = 281;
    pub const OBSERVATION_TIME_SECONDS: u16 = 322;
    pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
    pub const OBSERVATION_TIME_MICROSECONDS: u16 = 324;
    pub const OBSERVATION_TIME_NANOSECONDS: u16 = 325;
    pub const PORT_RANGE_START: u16 = 361;
    pub const PORT_RANGE_END: u16 = 362;
    pub const PORT_RANGE_STEP_SIZE: u16 = 363;
    pub const PORT_RANGE_NUM_PORTS: u16 = 364;
}

/// natEvent values (IANA "NAT Event Type" registry, RFC 8158).
pub mod event {
    /// Cisco NEL's create and delete (registered as historic).
    pub const TRANSLATION_CREATE: u8 = 1;
    pub const TRANSLATION_DELETE: u8 = 2;
    pub const ADDRESSES_EXHAUSTED: u8 = 3;
    pub const NAT44_SESSION_CREATE: u8 = 4;
    pub const NAT44_SESSION_DELETE: u8 = 5;
    pub const NAT64_SESSION_CREATE: u8 = 6;
    pub const NAT64_SESSION_DELETE: u8 = 7;
    pub const NAT44_BIB_CREATE: u8 = 8;
    pub const NAT44_BIB_DELETE: u8 = 9;
    pub const NAT64_BIB_CREATE: u8 = 10;
    pub const NAT64_BIB_DELETE: u8 = 11;
    pub const PORTS_EXHAUSTED: u8 = 12;
    pub const QUOTA_EXCEEDED: u8 = 13;
    pub const ADDRESS_BINDING_CREATE: u8 = 14;
    pub const ADDRESS_BINDING_DELETE: u8 = 15;
    pub const PORT_BLOCK_ALLOCATION: u8 = 16;
    pub const PORT_BLOCK_DEALLOCATION: u8 = 17;
    pub const THRESHOLD_REACHED: u8 = 18;
}

/// The ports of the outside side of a binding: `start..=end`, every
/// `step`-th. One port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
    /// At least 1.
    pub step: u16,
}

impl PortRange {
    pub const ALL: Self = Self {
        start: 0,
        end: u16::MAX,
        step: 1,
    };

    pub const fn one(port: u16) -> Self {
        Self {
            start: port,
            end: port,
            step: 1,
        }
    }

    pub const fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end && (port - self.start).is_multiple_of(self.step)
    }

    pub const fn is_one(&self) -> bool {
        self.start == self.end
    }
}

/// What a NAT event asks of the binding history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Delete,
    /// Exhaustion, quota, thresholds, address bindings, unknown values:
    /// counted only.
    Count,
}

/// One NAT event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatEvent {
    /// The natEvent value.
    pub event: u8,
    /// Unix ms.
    pub time_ms: u64,
    /// When the binding began, if the record says (a delete may).
    pub started_ms: Option<u64>,
    /// 0: not given (a port block: every protocol).
    pub protocol: u8,
    pub inside: Option<IpAddr>,
    pub inside_port: Option<u16>,
    pub inside_vrf: u32,
    pub outside: Option<IpAddr>,
    pub outside_ports: PortRange,
    pub outside_vrf: u32,
}

impl NatEvent {
    pub const fn op(&self) -> Op {
        use event::*;
        match self.event {
            TRANSLATION_CREATE
            | NAT44_SESSION_CREATE
            | NAT64_SESSION_CREATE
            | NAT44_BIB_CREATE
            | NAT64_BIB_CREATE
            | PORT_BLOCK_ALLOCATION => Op::Create,
            TRANSLATION_DELETE
            | NAT44_SESSION_DELETE
            | NAT64_SESSION_DELETE
            | NAT44_BIB_DELETE
            | NAT64_BIB_DELETE
            | PORT_BLOCK_DEALLOCATION => Op::Delete,
            _ => Op::Count,
        }
    }

    /// Metric label of the event type.
    pub const fn type_label(&self) -> &'static str {
        use event::*;
        match self.event {
            TRANSLATION_CREATE => "translation_create",
            TRANSLATION_DELETE => "translation_delete",
            ADDRESSES_EXHAUSTED => "addresses_exhausted",
            NAT44_SESSION_CREATE => "nat44_session_create",
            NAT44_SESSION_DELETE => "nat44_session_delete",
            NAT64_SESSION_CREATE => "nat64_session_create",
            NAT64_SESSION_DELETE => "nat64_session_delete",
            NAT44_BIB_CREATE => "nat44_bib_create",
            NAT44_BIB_DELETE => "nat44_bib_delete",
            NAT64_BIB_CREATE => "nat64_bib_create",
            NAT64_BIB_DELETE => "nat64_bib_delete",
            PORTS_EXHAUSTED => "ports_exhausted",
            QUOTA_EXCEEDED => "quota_exceeded",
            ADDRESS_BINDING_CREATE => "address_binding_create",
            ADDRESS_BINDING_DELETE => "address_binding_delete",
            PORT_BLOCK_ALLOCATION => "port_block_allocation",
            PORT_BLOCK_DEALLOCATION => "port_block_deallocation",
            THRESHOLD_REACHED => "threshold_reached",
            _ => "unknown",
        }
    }

    /// Reads record `rec` of `fields` at `extents`; `None` unless it
    /// carries a natEvent.
    pub fn read(
        rec: &[u8],
        fields: &[FieldSpec],
        extents: &[(usize, usize)],
        time: &ExportTime,
    ) -> Option<Self> {
        let mut f = Fields::default();
        for (field, &(offset, len)) in fields.iter().zip(extents) {
            let Some(id) = field.iana_ie() else { continue };
            let Some(value) = rec.get(offset..offset + len) else {
                continue;
            };
            f.take(id, value);
        }
        let event = u8::try_from(f.nat_event?).unwrap_or(u8::MAX);
        let block = matches!(
            event,
            event::PORT_BLOCK_ALLOCATION | event::PORT_BLOCK_DEALLOCATION
        );
        let port = |p: Option<u64>| p.and_then(|p| u16::try_from(p).ok());
        let outside_ports = match (block, port(f.range_start)) {
            (true, Some(start)) => {
                let step = port(f.range_step).filter(|&s| s > 0).unwrap_or(1);
                let end = port(f.range_end).or_else(|| {
                    let count = port(f.range_count).filter(|&n| n > 0)?;
                    let span = u32::from(count - 1) * u32::from(step);
                    Some(u16::try_from(u32::from(start) + span).unwrap_or(u16::MAX))
                });
                match end {
                    Some(end) if end >= start => PortRange { start, end, step },
                    _ => PortRange::one(start),
                }
            }
            _ => port(f.outside_port).map_or(PortRange::ALL, PortRange::one),
        };
        let export_ms = u64::from(time.unix_secs) * 1000;
        Some(Self {
            event,
            time_ms: f.time_ms.unwrap_or(export_ms),
            started_ms: f.started_ms,
            protocol: f.protocol.and_then(|p| u8::try_from(p).ok()).unwrap_or(0),
            inside: f.inside4.or(f.inside6),
            inside_port: port(f.inside_port),
            inside_vrf: f
                .inside_vrf
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            outside: f.outside4.or(f.outside6),
            outside_ports,
            outside_vrf: f
                .outside_vrf
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
        })
    }
}

/// The first occurrence of each element read.
#[derive(Default)]
struct Fields {
    nat_event: Option<u64>,
    protocol: Option<u64>,
    inside4: Option<IpAddr>,
    inside6: Option<IpAddr>,
    inside_port: Option<u64>,
    inside_vrf: Option<u64>,
    outside4: Option<IpAddr>,
    outside6: Option<IpAddr>,
    outside_port: Option<u64>,
    outside_vrf: Option<u64>,
    range_start: Option<u64>,
    range_end: Option<u64>,
    range_step: Option<u64>,
    range_count: Option<u64>,
    time_ms: Option<u64>,
    started_ms: Option<u64>,
}

impl Fields {
    fn take(&mut self, id: u16, value: &[u8]) {
        let uint = || uint(value);
        match id {
            ie::NAT_EVENT => first(&mut self.nat_event, uint()),
            ie::PROTOCOL => first(&mut self.protocol, uint()),
            ie::SOURCE_IPV4_ADDRESS => first(&mut self.inside4, v4(value)),
            ie::SOURCE_IPV6_ADDRESS => first(&mut self.inside6, v6(value)),
            ie::SOURCE_TRANSPORT_PORT => first(&mut self.inside_port, uint()),
            ie::INGRESS_VRF_ID => first(&mut self.inside_vrf, uint()),
            ie::POST_NAT_SOURCE_IPV4_ADDRESS => first(&mut self.outside4, v4(value)),
            ie::POST_NAT_SOURCE_IPV6_ADDRESS => first(&mut self.outside6, v6(value)),
            ie::POST_NAPT_SOURCE_TRANSPORT_PORT => first(&mut self.outside_port, uint()),
            ie::EGRESS_VRF_ID => first(&mut self.outside_vrf, uint()),
            ie::PORT_RANGE_START => first(&mut self.range_start, uint()),
            ie::PORT_RANGE_END => first(&mut self.range_end, uint()),
            ie::PORT_RANGE_STEP_SIZE => first(&mut self.range_step, uint()),
            ie::PORT_RANGE_NUM_PORTS => first(&mut self.range_count, uint()),
            ie::OBSERVATION_TIME_MILLISECONDS => first(&mut self.time_ms, uint()),
            ie::OBSERVATION_TIME_SECONDS => {
                first(&mut self.time_ms, uint().map(|s| s.saturating_mul(1000)))
            }
            ie::OBSERVATION_TIME_MICROSECONDS | ie::OBSERVATION_TIME_NANOSECONDS => {
                first(&mut self.time_ms, ntp_ms(value))
            }
            ie::FLOW_START_MILLISECONDS => first(&mut self.started_ms, uint()),
            ie::FLOW_START_SECONDS => {
                first(&mut self.started_ms, uint().map(|s| s.saturating_mul(1000)))
            }
            ie::FLOW_START_MICROSECONDS | ie::FLOW_START_NANOSECONDS => {
                first(&mut self.started_ms, ntp_ms(value))
            }
            _ => {}
        }
    }
}

fn first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// An unsigned integer of 1 to 8 bytes, big-endian.
fn uint(value: &[u8]) -> Option<u64> {
    (1..=8)
        .contains(&value.len())
        .then(|| value.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
}

fn v4(value: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 4] = value.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn v6(value: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 16] = value.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An NTP timestamp (32.32 fixed point since 1900) in Unix ms.
fn ntp_ms(value: &[u8]) -> Option<u64> {
    let n = u64::from_be_bytes(value.try_into().ok()?);
    let secs = (n >> 32).checked_sub(NTP_UNIX_OFFSET)?;
    Some(secs * 1000 + (((n & 0xffff_ffff) * 1000) >> 32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netflow::sets::{V9, fixed_extents};

    fn read(fields: &[(u16, u16)], rec: &[u8]) -> Option<NatEvent> {
        let fields: Vec<_> = fields
            .iter()
            .map(|&(id, len)| FieldSpec::iana(id, len))
            .collect();
        let time = ExportTime {
            unix_secs: 1_700_000_000,
            sys_uptime_ms: 0,
            version: V9,
        };
        NatEvent::read(rec, &fields, &fixed_extents(&fields), &time)
    }

    #[test]
    fn a_nel_create_reads_both_sides_and_its_time() {
        let fields = [
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
            (ie::PROTOCOL, 1),
            (ie::NAT_EVENT, 1),
            (ie::INGRESS_VRF_ID, 4),
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
        ];
        let mut rec = vec![100, 64, 0, 7, 0x9c, 0x40, 198, 51, 100, 1, 4, 0, 6, 1];
        rec.extend_from_slice(&3u32.to_be_bytes());
        rec.extend_from_slice(&1_700_000_000_123u64.to_be_bytes());
        let event = read(&fields, &rec).unwrap();
        assert_eq!(event.op(), Op::Create);
        assert_eq!(event.type_label(), "translation_create");
        assert_eq!(event.inside, Some("100.64.0.7".parse().unwrap()));
        assert_eq!(event.inside_port, Some(40_000));
        assert_eq!(event.outside, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(event.outside_ports, PortRange::one(1024));
        assert_eq!((event.protocol, event.inside_vrf), (6, 3));
        assert_eq!(event.time_ms, 1_700_000_000_123);
    }

    #[test]
    fn port_blocks_come_from_start_and_end_or_a_count_of_steps() {
        let fields = [
            (ie::NAT_EVENT, 1),
            (ie::PORT_RANGE_START, 2),
            (ie::PORT_RANGE_STEP_SIZE, 2),
            (ie::PORT_RANGE_NUM_PORTS, 2),
        ];
        // 16 ports from 2000, every 4th: 2000, 2004, ..., 2060.
        let event = read(&fields, &[16, 7, 208, 0, 4, 0, 16]).unwrap();
        let block = PortRange {
            start: 2000,
            end: 2060,
            step: 4,
        };
        assert_eq!(event.outside_ports, block);
        assert!(block.contains(2060) && !block.contains(2061) && !block.contains(2064));
        assert_eq!(event.op(), Op::Create);
        assert_eq!(event.time_ms, 1_700_000_000_000, "the export's time");
        let with_end = [
            (ie::NAT_EVENT, 1),
            (ie::PORT_RANGE_START, 2),
            (ie::PORT_RANGE_END, 2),
        ];
        let event = read(&with_end, &[17, 0x10, 0, 0x10, 0x3f]).unwrap();
        assert_eq!(event.op(), Op::Delete);
        assert_eq!(
            (event.outside_ports.start, event.outside_ports.end),
            (4096, 4159)
        );
    }

    #[test]
    fn nat64_reads_the_ipv6_inside_and_ntp_times() {
        let fields = [
            (ie::NAT_EVENT, 1),
            (ie::SOURCE_IPV6_ADDRESS, 16),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::OBSERVATION_TIME_MICROSECONDS, 8),
        ];
        let mut rec = vec![6];
        rec.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        rec.extend_from_slice(&[198, 51, 100, 1]);
        // 1 700 000 000.5 s, as NTP.
        let ntp = (1_700_000_000 + NTP_UNIX_OFFSET) << 32 | 1 << 31;
        rec.extend_from_slice(&ntp.to_be_bytes());
        let event = read(&fields, &rec).unwrap();
        assert_eq!(event.type_label(), "nat64_session_create");
        assert_eq!(event.inside, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(event.outside_ports, PortRange::ALL, "no post-NAT port");
        assert_eq!(event.time_ms, 1_700_000_000_500);
    }

    #[test]
    fn records_without_nat_event_or_with_odd_sizes() {
        assert_eq!(read(&[(ie::SOURCE_IPV4_ADDRESS, 4)], &[1, 2, 3, 4]), None);
        // A 3-byte address reads as absent; a 2-byte natEvent is reduced-size.
        let event = read(
            &[(ie::NAT_EVENT, 2), (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 3)],
            &[0, 13, 1, 2, 3],
        )
        .unwrap();
        assert_eq!(
            (event.type_label(), event.op()),
            ("quota_exceeded", Op::Count)
        );
        assert_eq!(event.outside, None);
        let odd = read(&[(ie::NAT_EVENT, 2)], &[1, 0]).unwrap();
        assert_eq!(odd.type_label(), "unknown", "256 is no natEvent");
    }
}
