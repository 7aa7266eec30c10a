//! flowtally: per-user network usage from flow exports parsed in XDP and
//! RADIUS accounting.
//!
//! The data path, stage by stage (ARCHITECTURE.md has the picture):
//! 1. **Kernel** (`collector-ebpf`, loaded and drained by [`xdp`]): the XDP
//!    program parses NetFlow v5 and compiled v9/IPFIX exports, aggregates
//!    their records in per-CPU maps by the rules in `flowtally_common`, and
//!    passes everything else up.
//! 2. **Socket path** ([`daemon::flow_socket`]): what XDP passes up (or
//!    everything, without XDP) is decoded by the sans-IO codecs in
//!    [`netflow`] and aggregated by [`aggregate`] with the same rules.
//! 3. **Sessions** ([`radius`], [`sessions`]): the RADIUS server core
//!    decides on each Accounting-Request; the session history records who
//!    held which address when; [`daemon::radius_socket`] makes it durable
//!    before answering.
//! 4. **Flush** ([`daemon::flush`]): every interval the kernel maps are
//!    swapped and drained, the socket path's table taken, and the
//!    aggregates turned into [`usage`] rows, attributed by [`associate`].
//! 5. **Sinks** ([`sink`]): SQLite (always), then ClickHouse from the SQLite
//!    spool; [`metrics`] for Prometheus.
//! 6. **Readers**: [`report`] and [`whois`] over what the sinks hold.
//!
//! Only [`daemon`], [`xdp`], [`sink`], the HTTP part of [`metrics`] and the
//! command front ends ([`report::command`], [`report::source`], [`whois`])
//! do I/O; the other modules are sans-IO cores: bytes, rows and `now` in,
//! values out.

pub mod aggregate;
pub mod associate;
pub mod classes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod http;
pub mod integrity;
pub mod ip;
pub mod metrics;
pub mod nat;
pub mod netflow;
pub mod outage;
pub mod progress;
pub mod quota;
pub mod radius;
mod reader;
pub mod report;
pub mod rng;
pub mod sessions;
pub mod sflow;
pub mod sink;
pub mod subscribers;
pub mod timestamp;
pub mod usage;
pub mod whois;
pub mod xdp;
