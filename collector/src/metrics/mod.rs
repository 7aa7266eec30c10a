//! Prometheus metrics, all prefixed `flowtally_`.

pub mod http;

use prometheus_client::{
    collector::Collector,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels `path="xdp"|"socket"`: which data path handled a flow export.
pub type PathLabels = [(&'static str, &'static str); 1];

/// Metrics updated by the daemon's tasks. Cheap to clone: every metric is
/// an `Arc` inside.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Flow export datagrams received, by path.
    pub packets: Family<PathLabels, Counter>,
    /// UDP payload bytes of those datagrams, by path.
    pub packet_bytes: Family<PathLabels, Counter>,
    /// 1 per interface the XDP program is attached to, labelled with the mode.
    pub xdp_attached: Family<[(&'static str, String); 2], Gauge>,
}

pub const SOCKET_PATH: PathLabels = [("path", "socket")];

impl Metrics {
    /// A registry holding these metrics plus `collectors` that read their
    /// values at scrape time (e.g. from BPF maps).
    pub fn registry(&self, collectors: Vec<Box<dyn Collector>>) -> Registry {
        let mut registry = Registry::with_prefix("flowtally");
        registry.register(
            "packets",
            "Flow export datagrams received, by data path",
            self.packets.clone(),
        );
        registry.register(
            "packet_bytes",
            "UDP payload bytes of flow export datagrams received, by data path",
            self.packet_bytes.clone(),
        );
        registry.register(
            "xdp_attached",
            "1 for each interface the XDP program is attached to, by mode (native or generic)",
            self.xdp_attached.clone(),
        );
        for collector in collectors {
            registry.register_collector(collector);
        }
        registry
    }
}
