//! Flow template layouts, `(information element, length)` by name, for the
//! tests, benchmarks, fuzz seeds and the load generator: each shape is
//! written once, and reads as what it is. NAT event layouts at the end.

use flowtally_common::template::ie::*;

use super::nat::ie as nat;

pub type Fields = &'static [(u16, u16)];

/// Source and destination IPv4 address, 4-byte octet count: the least a
/// flow record needs.
pub const MINIMAL_V4: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (OCTET_DELTA_COUNT, 4),
];

/// softflowd's v9 layout: IPv4 5-tuple, 4-byte counters, uptime times
/// (first switched, then last).
pub const SOFTFLOWD_V9: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_TRANSPORT_PORT, 2),
    (PROTOCOL, 1),
    (OCTET_DELTA_COUNT, 4),
    (PACKET_DELTA_COUNT, 4),
    (FLOW_START_SYS_UP_TIME, 4),
    (FLOW_END_SYS_UP_TIME, 4),
];

/// [`SOFTFLOWD_V9`] with the times the other way round.
pub const V4_UPTIME_LAST_FIRST: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_TRANSPORT_PORT, 2),
    (PROTOCOL, 1),
    (OCTET_DELTA_COUNT, 4),
    (PACKET_DELTA_COUNT, 4),
    (FLOW_END_SYS_UP_TIME, 4),
    (FLOW_START_SYS_UP_TIME, 4),
];

/// 8-byte counters first, the rest reordered, end time only.
pub const V4_WIDE_COUNTERS_FIRST: Fields = &[
    (OCTET_DELTA_COUNT, 8),
    (PACKET_DELTA_COUNT, 8),
    (DESTINATION_IPV4_ADDRESS, 4),
    (SOURCE_IPV4_ADDRESS, 4),
    (FLOW_END_SYS_UP_TIME, 4),
    (PROTOCOL, 1),
    (DESTINATION_TRANSPORT_PORT, 2),
    (SOURCE_TRANSPORT_PORT, 2),
];

/// IPv4 5-tuple, 8-byte counters, millisecond times (IPFIX).
pub const V4_MILLISECONDS: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_TRANSPORT_PORT, 2),
    (PROTOCOL, 1),
    (OCTET_DELTA_COUNT, 8),
    (PACKET_DELTA_COUNT, 8),
    (FLOW_START_MILLISECONDS, 8),
    (FLOW_END_MILLISECONDS, 8),
];

/// [`V4_MILLISECONDS`] for IPv6.
pub const V6_MILLISECONDS: Fields = &[
    (SOURCE_IPV6_ADDRESS, 16),
    (DESTINATION_IPV6_ADDRESS, 16),
    (SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_TRANSPORT_PORT, 2),
    (PROTOCOL, 1),
    (OCTET_DELTA_COUNT, 8),
    (PACKET_DELTA_COUNT, 8),
    (FLOW_START_MILLISECONDS, 8),
    (FLOW_END_MILLISECONDS, 8),
];

/// IPv6 with interfaces and class of service, odd counter sizes (3 and 2
/// bytes), NTP microsecond times (IPFIX).
pub const V6_MICROSECONDS_ODD_COUNTERS: Fields = &[
    (INGRESS_INTERFACE, 4),
    (DESTINATION_IPV6_ADDRESS, 16),
    (IP_CLASS_OF_SERVICE, 1),
    (SOURCE_IPV6_ADDRESS, 16),
    (OCTET_DELTA_COUNT, 3),
    (PACKET_DELTA_COUNT, 2),
    (EGRESS_INTERFACE, 4),
    (FLOW_START_MICROSECONDS, 8),
    (FLOW_END_MICROSECONDS, 8),
];

/// IPv4, uptime times, which IPFIX times from the exporter's
/// systemInitTimeMilliseconds (options data).
pub const V4_UPTIME_PROTOCOL_LAST: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (OCTET_DELTA_COUNT, 4),
    (PACKET_DELTA_COUNT, 4),
    (FLOW_START_SYS_UP_TIME, 4),
    (FLOW_END_SYS_UP_TIME, 4),
    (PROTOCOL, 1),
];

/// Cisco NEL's v9 NAT event layout: both sides of a session before and
/// after NAT, protocol, natEvent (1 create, 2 delete), inside VRF, event
/// time in ms.
pub const NEL_V9: Fields = &[
    (SOURCE_IPV4_ADDRESS, 4),
    (DESTINATION_IPV4_ADDRESS, 4),
    (SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_TRANSPORT_PORT, 2),
    (nat::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
    (226, 4),
    (nat::POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
    (228, 2),
    (PROTOCOL, 1),
    (nat::NAT_EVENT, 1),
    (nat::INGRESS_VRF_ID, 4),
    (nat::OBSERVATION_TIME_MILLISECONDS, 8),
];

/// IPFIX port block allocation/de-allocation (natEvent 16/17).
pub const PORT_BLOCK_IPFIX: Fields = &[
    (nat::NAT_EVENT, 1),
    (SOURCE_IPV4_ADDRESS, 4),
    (nat::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
    (nat::PORT_RANGE_START, 2),
    (nat::PORT_RANGE_END, 2),
    (nat::PORT_RANGE_STEP_SIZE, 2),
    (nat::OBSERVATION_TIME_MILLISECONDS, 8),
];
