//! One flow record into its aggregate(s), whatever export format it came
//! from. The record lives in a per-CPU scratch map, not on the 512-byte
//! BPF stack, which key, record and values together would nearly fill.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, lpm_trie::Key},
};
use flowtally_common::{
    MAX_SCOPE_ENTRIES, RecordStat,
    agg::{
        AggKey, AggValue, FLAG_BILLING_SCOPE, FLAG_INTERFACE_FLOWS, FlowRecord, Ip, Profile,
        ScopeKey, directions, in_scope,
    },
};

use crate::{
    BUCKET_MS, FLAGS, KEEP_FIELDS, RECORD_STATS, SUBSCRIBER_NETS, aggregate, count, interfaces,
};

/// What every record of one export shares, and the record in hand. No map
/// pointer: the verifier forbids storing pointers in map values, so the
/// active aggregate map is an index.
#[repr(C)]
pub struct Flow {
    pub flags: u32,
    pub active: u32,
    pub profile: Profile,
    pub exporter: Ip,
    pub record: FlowRecord,
    key: AggKey,
    value: AggValue,
}

#[map(name = "BILLING_SCOPE")]
static BILLING_SCOPE: HashMap<ScopeKey, u8> = HashMap::with_max_entries(MAX_SCOPE_ENTRIES, 0);

#[map(name = "FLOW_SCRATCH")]
static SCRATCH: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch flow.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Flow> {
    // SAFETY: this CPU's slot; XDP runs do not nest on a CPU, and the
    // callbacks that use it run inside the same program run.
    SCRATCH.get_ptr_mut(0).map(|flow| unsafe { &mut *flow })
}

/// Prepares the scratch flow for the records of an export from `exporter`.
#[inline(always)]
pub fn begin(exporter: &Ip) -> Option<&'static mut Flow> {
    let flow = scratch()?;
    flow.flags = FLAGS.load();
    flow.active = aggregate::active_index();
    flow.profile = Profile {
        keep: KEEP_FIELDS.load(),
        bucket_ms: BUCKET_MS.load(),
    };
    flow.exporter = *exporter;
    Some(flow)
}

impl Flow {
    /// Aggregates `self.record` in every direction it belongs to, counting
    /// each outcome.
    #[inline(always)]
    pub fn aggregate(&mut self) {
        count(
            &RECORD_STATS,
            RecordStat::Parsed as u32,
            1,
            self.record.bytes,
        );
        if self.flags & FLAG_INTERFACE_FLOWS != 0 {
            interfaces::count(&self.exporter, &self.record);
        }
        // SAFETY: only tested for presence, never dereferenced.
        let scoped = |key: &ScopeKey| unsafe { BILLING_SCOPE.get(key) }.is_some();
        if self.flags & FLAG_BILLING_SCOPE != 0 && !in_scope(scoped, &self.exporter, &self.record) {
            count(
                &RECORD_STATS,
                RecordStat::OutOfScope as u32,
                1,
                self.record.bytes,
            );
            return;
        }
        self.value = self.record.value();
        let [first, second] = directions(
            is_subscriber(&self.record.src),
            is_subscriber(&self.record.dst),
        );
        for dir in [first, second].into_iter().flatten() {
            self.key = self.profile.key(&self.record, dir, &self.exporter);
            let outcome = aggregate::add(self.active, &self.key, &self.value);
            count(&RECORD_STATS, outcome as u32, 1, self.record.bytes);
        }
    }
}

#[inline(always)]
fn is_subscriber(ip: &Ip) -> bool {
    SUBSCRIBER_NETS.get(Key::new(128, *ip)).is_some()
}
