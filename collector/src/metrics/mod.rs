//! Prometheus metrics, all prefixed `flowtally_`.

pub mod exporters;
mod integrity;
mod nat;
mod quota;
mod sflow;
mod storage;
pub mod talkers;
mod templates;
mod users;

pub use exporters::Exporters;
pub use integrity::IntegrityMetrics;
pub use nat::NatMetrics;
pub use quota::QuotaMetrics;
pub use sflow::SflowMetrics;
pub use storage::StorageMetrics;
pub use talkers::Talkers;
pub use templates::TemplateMetrics;
pub use users::UserMetrics;

use std::sync::Arc;

use flowtally_common::{Counter as KernelCounter, RecordStat, XdpStat, sflow::SampleStat};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{sink::clickhouse::ClickHouseMetrics, xdp::KernelStats};

pub type ReasonLabels = [(&'static str, &'static str); 1];

/// Metrics updated by the daemon's tasks. Cheap to clone: every metric is
/// an `Arc` inside.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The socket path's counters; the XDP path's live in kernel maps.
    pub socket: PathCounters,
    /// Datagrams rejected whole by the socket path, by reason.
    pub rejected_packets: Family<ReasonLabels, Counter>,
    /// 1 per interface the XDP program is attached to, labelled with the mode.
    pub xdp_attached: Family<[(&'static str, String); 2], Gauge>,
    /// Entries found in the aggregate map at the last drain, and its size.
    pub aggregate_map_entries: Gauge,
    pub aggregate_map_capacity: Gauge,
    /// Aggregates received through the overflow ring.
    pub overflow_records: Counter,
    pub drain_duration: Histogram,
    pub usage_rows: Counter,
    /// Bytes written to usage rows, by direction.
    pub usage_bytes: Family<[(&'static str, &'static str); 1], Counter>,
    pub templates: TemplateMetrics,
    pub sflow: SflowMetrics,
    pub radius: RadiusMetrics,
    pub nat: NatMetrics,
    pub quota: QuotaMetrics,
    /// Bytes of usage rows written with and without a user.
    pub attributed_bytes: Counter,
    pub unattributed_bytes: Counter,
    /// Rows waiting for a late session.
    pub association_backlog: Gauge,
    /// Off unless `user_metrics.top` is set.
    pub users: UserMetrics,
    /// For the HTTP API, not exported: per exporter, and the top talkers of
    /// the latest flushes.
    pub exporters: Exporters,
    pub talkers: Talkers,
    /// Only with a ClickHouse sink.
    pub clickhouse: Option<ClickHouseMetrics>,
    /// Found at start: the previous run ended without its final flush.
    pub unclean_stops: Counter,
    pub last_gap_seconds: Gauge,
    /// Export loss, restarts, interface counter polls.
    pub integrity: IntegrityMetrics,
    /// Whether SQLite accepts writes, and what is held meanwhile.
    pub storage: StorageMetrics,
}

/// RADIUS accounting requests and the sessions they keep open.
#[derive(Clone, Debug)]
pub struct RadiusMetrics {
    /// By `status` (start, stop, interim_update, accounting_on,
    /// accounting_off, other; unknown before the request is trusted) and
    /// `result`.
    requests: Family<[(&'static str, &'static str); 2], Counter>,
    pub sessions_open: Gauge,
    /// Open, and closed within `radius.history_retention`.
    pub sessions_in_memory: Gauge,
    /// Requests refused by a NAS's bounds, by `nas` and `reason`.
    nas_refused: Family<[(&'static str, String); 2], Counter>,
    /// From a request's arrival to its answer's departure.
    pub response_seconds: Histogram,
}

impl Default for RadiusMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            sessions_open: Gauge::default(),
            sessions_in_memory: Gauge::default(),
            nas_refused: Family::default(),
            // 0.5 ms to ~16 s: a NAS retransmits after a few seconds.
            response_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

impl RadiusMetrics {
    pub fn count(&self, status: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&[("status", status), ("result", result)])
            .inc();
    }

    /// One request of `nas` refused by its bound `reason`.
    pub fn nas_refused(&self, nas: &str, reason: &'static str) {
        self.nas_refused
            .get_or_create(&[("nas", nas.to_owned()), ("reason", reason.to_owned())])
            .inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "radius_nas_refused",
            "RADIUS requests that would begin a session beyond their NAS's bound \
             (reason open_sessions or session_churn): not recorded, not answered",
            self.nas_refused.clone(),
        );
        r.register(
            "radius_requests",
            "RADIUS accounting requests by status type and result (accepted, duplicate, \
             bad_authenticator, unknown_client, malformed, rate_limited, unsupported_code, \
             store_failed, nas_bound)",
            self.requests.clone(),
        );
        r.register_with_unit(
            "radius_response",
            "Time from an Accounting-Request's arrival to its Accounting-Response's departure \
             (the commit that makes it durable included)",
            Unit::Seconds,
            self.response_seconds.clone(),
        );
        r.register(
            "sessions_open",
            "Sessions open in the history",
            self.sessions_open.clone(),
        );
        r.register(
            "sessions_in_memory",
            "Sessions in the in-memory history: open, or stopped within radius.history_retention",
            self.sessions_in_memory.clone(),
        );
    }
}

/// Packets, records and record bytes of one data path.
#[derive(Clone, Debug, Default)]
pub struct PathCounters {
    pub packets: Counter,
    pub records: Counter,
    pub record_bytes: Counter,
    /// Records outside the billing scope, not aggregated.
    pub out_of_scope_records: Counter,
    pub out_of_scope_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            socket: PathCounters::default(),
            rejected_packets: Family::default(),
            xdp_attached: Family::default(),
            aggregate_map_entries: Gauge::default(),
            aggregate_map_capacity: Gauge::default(),
            overflow_records: Counter::default(),
            // 100 µs to ~6.5 s.
            drain_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
            usage_rows: Counter::default(),
            usage_bytes: Family::default(),
            templates: TemplateMetrics::default(),
            sflow: SflowMetrics::default(),
            radius: RadiusMetrics::default(),
            nat: NatMetrics::default(),
            quota: QuotaMetrics::default(),
            attributed_bytes: Counter::default(),
            unattributed_bytes: Counter::default(),
            association_backlog: Gauge::default(),
            users: UserMetrics::default(),
            exporters: Exporters::default(),
            talkers: Talkers::default(),
            clickhouse: None,
            unclean_stops: Counter::default(),
            last_gap_seconds: Gauge::default(),
            integrity: IntegrityMetrics::default(),
            storage: StorageMetrics::default(),
        }
    }
}

impl Metrics {
    /// A registry holding these metrics plus the kernel's counters, read at
    /// scrape time.
    pub fn registry(&self, kernel: Option<KernelStats>) -> Registry {
        let mut r = Registry::with_prefix("flowtally");
        r.register(
            "rejected_packets",
            "Flow export datagrams rejected whole by the socket path, by reason",
            self.rejected_packets.clone(),
        );
        r.register(
            "xdp_attached",
            "1 for each interface the XDP program is attached to, by mode (native or generic)",
            self.xdp_attached.clone(),
        );
        r.register(
            "aggregate_map_entries",
            "Aggregates in the kernel's IPv4 and IPv6 tables (slots in use, a key once per CPU) and map of IPv6 keys at the last drain",
            self.aggregate_map_entries.clone(),
        );
        r.register(
            "aggregate_map_capacity",
            "Keys the kernel's IPv4 table holds per CPU, and its map of IPv6 keys in all (maps.aggregate_entries)",
            self.aggregate_map_capacity.clone(),
        );
        r.register(
            "overflow_records",
            "Aggregates that found the kernel map full and came through the overflow ring",
            self.overflow_records.clone(),
        );
        r.register_with_unit(
            "drain_duration",
            "Time to swap and drain the kernel maps and write one flush",
            Unit::Seconds,
            self.drain_duration.clone(),
        );
        r.register(
            "usage_rows",
            "Rows written to `usage`",
            self.usage_rows.clone(),
        );
        r.register_with_unit(
            "usage",
            "Bytes written to `usage` rows, by direction",
            Unit::Bytes,
            self.usage_bytes.clone(),
        );
        self.templates.register(&mut r);
        self.sflow.register(&mut r);
        self.radius.register(&mut r);
        self.integrity.register(&mut r);
        self.nat.register(&mut r);
        self.storage.register(&mut r);
        self.quota.register(&mut r);
        r.register(
            "unclean_stops",
            "Previous runs found at start to have ended without their final flush (killed or \
             crashed); their gaps are in the `runs` table",
            self.unclean_stops.clone(),
        );
        r.register_with_unit(
            "last_gap",
            "Length of the gap the previous run left (0: it stopped cleanly)",
            Unit::Seconds,
            self.last_gap_seconds.clone(),
        );
        if let Some(clickhouse) = &self.clickhouse {
            clickhouse.register(&mut r);
        }
        self.users.register(&mut r);
        r.register_with_unit(
            "attributed",
            "Bytes of usage rows attributed to a user's session",
            Unit::Bytes,
            self.attributed_bytes.clone(),
        );
        r.register_with_unit(
            "unattributed",
            "Bytes of usage rows nobody held the address for (written with no user)",
            Unit::Bytes,
            self.unattributed_bytes.clone(),
        );
        r.register(
            "association_backlog",
            "Usage rows waiting (up to the late window) for a session to own them",
            self.association_backlog.clone(),
        );
        r.register_collector(Box::new(FlowStats {
            socket: self.socket.clone(),
            sflow_samples: self.sflow.socket_samples.clone(),
            kernel: kernel.map(Arc::new),
        }));
        r
    }
}

/// Encodes the per-path and kernel counters at scrape time: the socket
/// path's from its counters, the XDP path's from the kernel maps, in one
/// family each.
#[derive(Debug)]
struct FlowStats {
    socket: PathCounters,
    /// Socket-path sFlow samples by `SampleStat`.
    sflow_samples: [Counter; 4],
    kernel: Option<Arc<KernelStats>>,
}

type Sample = (Vec<(&'static str, &'static str)>, u64);

impl FlowStats {
    fn path_samples(&self, socket: &Counter, xdp: impl Fn(&KernelStats) -> u64) -> Vec<Sample> {
        let mut samples = vec![(vec![("path", "socket")], socket.get())];
        if let Some(kernel) = &self.kernel {
            samples.push((vec![("path", "xdp")], xdp(kernel)));
        }
        samples
    }

    fn families(&self) -> Vec<(&'static str, &'static str, Vec<Sample>)> {
        let mut families = vec![
            (
                "packets",
                "Flow export datagrams whose records were counted, by data path",
                self.path_samples(&self.socket.packets, |k| {
                    // Every export the kernel aggregated (and consumed).
                    [
                        XdpStat::DropV5Aggregated,
                        XdpStat::DropTemplatedAggregated,
                        XdpStat::DropSflowAggregated,
                    ]
                    .into_iter()
                    .map(|stat| k.frames(stat).count)
                    .sum()
                }),
            ),
            (
                "records",
                "Flow records parsed from valid exports, by data path",
                self.path_samples(&self.socket.records, |k| {
                    k.records(RecordStat::Parsed).count
                }),
            ),
            (
                "record_bytes",
                "Bytes (sampling-scaled) carried by those records, by data path",
                self.path_samples(&self.socket.record_bytes, |k| {
                    k.records(RecordStat::Parsed).bytes
                }),
            ),
        ];
        families.push((
            "out_of_scope_records",
            "Records outside the billing scope (another router bills them), by data path",
            self.path_samples(&self.socket.out_of_scope_records, |k| {
                k.records(RecordStat::OutOfScope).count
            }),
        ));
        families.push((
            "out_of_scope_bytes",
            "Bytes of those records, by data path",
            self.path_samples(&self.socket.out_of_scope_bytes, |k| {
                k.records(RecordStat::OutOfScope).bytes
            }),
        ));
        let mut samples = Vec::new();
        for stat in SampleStat::ALL {
            let kind = stat.as_str();
            samples.push((
                vec![("path", "socket"), ("kind", kind)],
                self.sflow_samples[stat as usize].get(),
            ));
            if let Some(kernel) = &self.kernel {
                samples.push((
                    vec![("path", "xdp"), ("kind", kind)],
                    kernel.sflow_samples(stat).count,
                ));
            }
        }
        families.push((
            "sflow_samples",
            "sFlow samples by data path and kind: flow (became a record), no_ip_packet (a flow \
             sample without an IPv4/IPv6 packet record), skipped (other formats), counters",
            samples,
        ));
        let Some(kernel) = &self.kernel else {
            return families;
        };
        let ring_full = kernel.records(RecordStat::Dropped);
        families.push((
            "dropped_records",
            "Aggregate contributions lost, by reason (ring_full: map and overflow ring both full)",
            vec![(vec![("reason", "ring_full")], ring_full.count)],
        ));
        families.push((
            "dropped_bytes",
            "Bytes of those lost contributions, by reason",
            vec![(vec![("reason", "ring_full")], ring_full.bytes)],
        ));
        let frames = |f: fn(KernelCounter) -> u64| {
            XdpStat::ALL
                .iter()
                .map(|&stat| {
                    let labels = vec![
                        ("verdict", stat.verdict().as_str()),
                        ("class", stat.class()),
                    ];
                    (labels, f(kernel.frames(stat)))
                })
                .collect()
        };
        families.push((
            "xdp_frames",
            "Frames seen by the XDP program, by verdict and class",
            frames(|c| c.count),
        ));
        families.push((
            "xdp_frame_bytes",
            "Bytes of frames seen by the XDP program, by verdict and class",
            frames(|c| c.bytes),
        ));
        families
    }
}

impl Collector for FlowStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, samples) in self.families() {
            let metric_type = ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for (labels, value) in samples {
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
