//! Exports the XDP program's per-CPU `STATS` map on `/metrics`, summed over
//! CPUs at scrape time.

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use flowtally_common::{Counter, XdpStat};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::counter::ConstCounter,
};

pub struct XdpStatsCollector {
    stats: PerCpuArray<MapData, Counter>,
}

impl std::fmt::Debug for XdpStatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpStatsCollector").finish_non_exhaustive()
    }
}

impl XdpStatsCollector {
    pub fn new(map: Map) -> Result<Self, MapError> {
        Ok(Self {
            stats: map.try_into()?,
        })
    }

    /// Totals per stat over all CPUs; a failed read counts as zero.
    pub fn totals(&self) -> Vec<(XdpStat, Counter)> {
        XdpStat::ALL
            .iter()
            .map(|&stat| {
                let total = self
                    .stats
                    .get(&(stat as u32), 0)
                    .map(|per_cpu| {
                        per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                            packets: sum.packets + c.packets,
                            bytes: sum.bytes + c.bytes,
                        })
                    })
                    .unwrap_or_default();
                (stat, total)
            })
            .collect()
    }
}

impl Collector for XdpStatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        for (name, help, value) in [
            (
                "xdp_frames",
                "Frames seen by the XDP program, by verdict and class",
                (|c: &Counter| c.packets) as fn(&Counter) -> u64,
            ),
            (
                "xdp_frame_bytes",
                "Bytes of frames seen by the XDP program, by verdict and class",
                |c: &Counter| c.bytes,
            ),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (stat, total) in &totals {
                let labels = [("verdict", stat.verdict()), ("class", stat.class())];
                ConstCounter::new(value(total)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
