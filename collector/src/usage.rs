//! Usage rows: aggregates in the shape of the `usage` table, with masked
//! key fields as NULL rather than zero.

use std::net::IpAddr;

use flowtally_common::agg::{
    AggKey, AggValue, Direction, KEEP_EXPORTER, KEEP_PEER_IP, KEEP_PEER_PORT, KEEP_PROTOCOL,
    KEEP_SUBSCRIBER_PORT, Profile,
};

use crate::{classes::Classes, ip::to_addr};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageRow {
    pub bucket_start_ms: u64,
    pub bucket_width_ms: u64,
    pub subscriber_ip: IpAddr,
    pub direction: Direction,
    /// Who held `subscriber_ip` then (see `associate`); `None` while nobody
    /// is known to.
    pub user_name: Option<String>,
    /// That session's Acct-Session-Id.
    pub session_id: Option<String>,
    pub peer_ip: Option<IpAddr>,
    pub protocol: Option<u8>,
    pub subscriber_port: Option<u16>,
    pub peer_port: Option<u16>,
    pub exporter: Option<IpAddr>,
    /// The destination class of the peer (see `classes`); `None` for a
    /// peer in no class, or when no classes are configured.
    pub class: Option<String>,
    /// Why nobody owns a written row (see `associate`); `None` while it
    /// waits or once it is attributed.
    pub unattributed: Option<Unattributed>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

impl UsageRow {
    /// `None` for a key whose direction byte is corrupt (never written by
    /// either data path). A class number `classes` does not know (never
    /// written either) is no class.
    pub fn new(
        key: &AggKey,
        value: &AggValue,
        profile: &Profile,
        classes: &Classes,
    ) -> Option<Self> {
        let kept = |bit| profile.keep & bit != 0;
        Some(Self {
            bucket_start_ms: key.bucket_start_ms,
            bucket_width_ms: profile.bucket_ms,
            subscriber_ip: to_addr(&key.subscriber),
            direction: Direction::from_u8(key.direction)?,
            user_name: None,
            session_id: None,
            peer_ip: kept(KEEP_PEER_IP).then(|| to_addr(&key.peer)),
            protocol: kept(KEEP_PROTOCOL).then_some(key.protocol),
            subscriber_port: kept(KEEP_SUBSCRIBER_PORT).then_some(key.subscriber_port),
            peer_port: kept(KEEP_PEER_PORT).then_some(key.peer_port),
            exporter: kept(KEEP_EXPORTER).then(|| to_addr(&key.exporter)),
            class: classes.name(key.class).map(str::to_owned),
            unattributed: None,
            bytes: value.bytes,
            packets: value.packets,
            flows: value.flows,
            first_ms: value.first_ms,
            last_ms: value.last_ms,
        })
    }

    /// One record of `bytes` at `at_ms`, in its one-minute bucket, with no
    /// user and no key detail: what tests and benchmarks build rows from
    /// (setting the fields they are about).
    pub fn bare(at_ms: u64, subscriber_ip: IpAddr, direction: Direction, bytes: u64) -> Self {
        Self {
            bucket_start_ms: at_ms - at_ms % 60_000,
            bucket_width_ms: 60_000,
            subscriber_ip,
            direction,
            user_name: None,
            session_id: None,
            peer_ip: None,
            protocol: None,
            subscriber_port: None,
            peer_port: None,
            exporter: None,
            class: None,
            unattributed: None,
            bytes,
            packets: 1,
            flows: 1,
            first_ms: at_ms,
            last_ms: at_ms,
        }
    }
}

/// Why a usage row was written without a user: the `usage.unattributed`
/// column, so that billing and abuse desks can tell a NAT pool's missing
/// binding from a subscriber nobody logged in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unattributed {
    /// Neither side is a subscriber.
    Transit,
    /// No session held the subscriber address then.
    NoSession,
    /// A CGNAT pool row without port or protocol (the aggregation profile
    /// dropped them): no binding can be looked up.
    NatNoPort,
    /// A CGNAT pool row whose public port no binding held then.
    NatNoBinding,
    /// A binding, but no session held its inside address then.
    NatNoSession,
}

impl Unattributed {
    pub const ALL: [Self; 5] = [
        Self::Transit,
        Self::NoSession,
        Self::NatNoPort,
        Self::NatNoBinding,
        Self::NatNoSession,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transit => "transit",
            Self::NoSession => "no_session",
            Self::NatNoPort => "nat_no_port",
            Self::NatNoBinding => "nat_no_binding",
            Self::NatNoSession => "nat_no_session",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}
