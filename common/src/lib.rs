//! Plain data and pure logic shared by the XDP program and userspace: map
//! names and layouts, the bounds the verifier needs, and the aggregation
//! rules both data paths apply, so that their results cannot drift apart.
#![no_std]

pub mod agg;
pub mod class_table;
pub mod interfaces;
pub mod members;
pub mod sequence;
pub mod sflow;
pub mod stats;
pub mod table;
pub mod template;
pub mod templated;
pub mod v5;

pub use stats::{Counter, RecordStat, Verdict, XdpStat};

/// Per-CPU frame counters (`PerCpuArray<Counter>`), indexed by [`XdpStat`].
pub const STATS_MAP: &str = "STATS";
/// Per-CPU flow record counters (`PerCpuArray<Counter>`), indexed by [`RecordStat`].
pub const RECORD_STATS_MAP: &str = "RECORD_STATS";

/// UDP destination ports (host byte order) that carry flow exports to us
/// (`HashMap<u16, u8>`). Userspace fills it from the bound `--netflow`
/// sockets before attaching.
pub const COLLECTOR_PORTS_MAP: &str = "COLLECTOR_PORTS";
/// Upper bound of distinct collector ports; sizes `COLLECTOR_PORTS`.
pub const MAX_COLLECTOR_PORTS: u32 = 64;

/// Exporters allowed to send to us (`HashMap<[u8; 16], u8>`, addresses as
/// in [`agg::ip_from_v4`]), consulted only when [`agg::FLAG_EXPORTER_ALLOWLIST`] is set.
pub const EXPORTERS_MAP: &str = "EXPORTERS";
pub const MAX_EXPORTERS: u32 = 4096;

/// The billing scope (`HashMap<agg::ScopeKey, u8>`), consulted only when
/// [`agg::FLAG_BILLING_SCOPE`] is set.
pub const BILLING_SCOPE_MAP: &str = "BILLING_SCOPE";
pub const MAX_SCOPE_ENTRIES: u32 = 4096;

/// Subscriber networks (`LpmTrie<[u8; 16], u8>`, IPv4 as IPv4-mapped IPv6).
pub const SUBSCRIBER_NETS_MAP: &str = "SUBSCRIBER_NETS";
pub const MAX_SUBSCRIBER_NETS: u32 = 16_384;

/// Destination class networks (`LpmTrie<[u8; 16], u8>`, IPv4 as
/// IPv4-mapped IPv6, the value a class number from 1): the longest prefix
/// holding a record's peer names its class (see `agg::peer`).
pub const CLASS_NETS_MAP: &str = "CLASS_NETS";
pub const MAX_CLASS_NETS: u32 = 262_144;
/// Classes at most (numbered 1 to this; 0 is no class).
pub const MAX_CLASSES: usize = 250;

/// The XDP program alternates between two generations of aggregates;
/// `ACTIVE` (`Array<u32>`, one entry) says which one it writes. Keys whose
/// addresses are all IPv4 go to that generation's half of the program's
/// own table (`table::TABLE_V4_MAP`), all others to the generation's map
/// here (`PerCpuHashMap<AggKey, AggValue>`, allocated as keys arrive, so
/// that a network without IPv6 pays no memory for it). Each holds
/// `maps.aggregate_entries` keys (per CPU partition, for the table).
pub const AGGREGATE_MAPS: [&str; 2] = ["AGGREGATE_0", "AGGREGATE_1"];
pub const ACTIVE_MAP: &str = "ACTIVE";
/// Default keys per aggregate map; `maps.aggregate_entries` overrides it.
pub const DEFAULT_AGGREGATE_ENTRIES: u32 = 65_536;
/// Default keys per CPU of the IPv6 table; `maps.aggregate_entries_v6`
/// overrides it. A quarter of the IPv4 default: most networks send far
/// fewer IPv6 aggregates, and those beyond it go to the IPv6 map.
pub const DEFAULT_AGGREGATE_ENTRIES_V6: u32 = 16_384;

/// Ring buffer of [`agg::Overflow`] records that did not fit an aggregate map.
pub const OVERFLOW_RING: &str = "OVERFLOW";
/// Default ring size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_OVERFLOW_RING_BYTES: u32 = 1 << 22;

/// Globals set at load time (`EbpfLoader::override_global`).
pub const GLOBAL_BUCKET_MS: &str = "BUCKET_MS";
pub const GLOBAL_KEEP_FIELDS: &str = "KEEP_FIELDS";
pub const GLOBAL_FLAGS: &str = "FLAGS";
