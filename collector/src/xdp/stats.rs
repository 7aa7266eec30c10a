//! The XDP program's per-CPU counters, summed over CPUs when read.

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use flowtally_common::{Counter, RecordStat, XdpStat, sflow::SampleStat};

pub struct KernelStats {
    frames: PerCpuArray<MapData, Counter>,
    records: PerCpuArray<MapData, Counter>,
    sflow_samples: PerCpuArray<MapData, Counter>,
}

impl std::fmt::Debug for KernelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStats").finish_non_exhaustive()
    }
}

impl KernelStats {
    pub fn new(frames: Map, records: Map, sflow_samples: Map) -> Result<Self, MapError> {
        Ok(Self {
            frames: frames.try_into()?,
            records: records.try_into()?,
            sflow_samples: sflow_samples.try_into()?,
        })
    }

    pub fn frames(&self, stat: XdpStat) -> Counter {
        sum(&self.frames, stat as u32)
    }

    pub fn records(&self, stat: RecordStat) -> Counter {
        sum(&self.records, stat as u32)
    }

    pub fn sflow_samples(&self, stat: SampleStat) -> Counter {
        sum(&self.sflow_samples, stat as u32)
    }
}

/// The total over CPUs; a failed read counts as zero (it cannot fail for an
/// index below the array's length).
fn sum(array: &PerCpuArray<MapData, Counter>, index: u32) -> Counter {
    array
        .get(&index, 0)
        .map(|per_cpu| per_cpu.iter().fold(Counter::default(), |a, &b| a + b))
        .unwrap_or_default()
}
