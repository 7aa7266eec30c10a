//! sFlow metrics: samples by kind on the socket path (the kernel's are read
//! from its map at scrape time), and per data source what its flow
//! samples say about completeness (see `sflow::sources`).

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{ip::to_addr, sflow::SourceHealth};

type SourceLabels = [(&'static str, String); 2];

#[derive(Clone, Debug, Default)]
pub struct SflowMetrics {
    /// Socket-path samples by `flowtally_common::sflow::SampleStat`.
    pub socket_samples: [Counter; 4],
    samples: Family<SourceLabels, Counter>,
    lost: Family<SourceLabels, Counter>,
    sample_pool: Family<SourceLabels, Counter>,
    drops: Family<SourceLabels, Counter>,
    restarts: Family<SourceLabels, Counter>,
}

impl SflowMetrics {
    /// Adds one interval's figures.
    pub fn observe(&self, healths: &[SourceHealth]) {
        for h in healths {
            let labels = [
                ("agent", to_addr(&h.key.agent).to_string()),
                (
                    "source",
                    format!(
                        "{}:{}",
                        h.key.source_id >> 24,
                        h.key.source_id & 0x00ff_ffff
                    ),
                ),
            ];
            self.samples.get_or_create(&labels).inc_by(h.samples);
            self.lost.get_or_create(&labels).inc_by(h.lost);
            self.sample_pool
                .get_or_create(&labels)
                .inc_by(h.sample_pool);
            self.drops.get_or_create(&labels).inc_by(h.drops);
            self.restarts
                .get_or_create(&labels)
                .inc_by(u64::from(h.restarted));
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "sflow_source_samples",
            "sFlow flow samples received per agent and data source (type:index), both paths",
            self.samples.clone(),
        );
        r.register(
            "sflow_source_lost_samples",
            "sFlow flow samples the agent sent that never arrived (sequence advance less \
             samples received): lost datagrams",
            self.lost.clone(),
        );
        r.register(
            "sflow_source_sample_pool",
            "Packets the data source could have sampled (advance of its sample pool)",
            self.sample_pool.clone(),
        );
        r.register(
            "sflow_source_drops",
            "Samples the agent itself dropped for lack of resources (its drops counter)",
            self.drops.clone(),
        );
        r.register(
            "sflow_source_restarts",
            "Times the data source's sequence number started again (agent restart)",
            self.restarts.clone(),
        );
    }
}
