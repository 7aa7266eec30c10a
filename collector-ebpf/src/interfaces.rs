//! Flow bytes per listed interface (see `flowtally_common::interfaces`).

use aya_ebpf::{macros::map, maps::PerCpuHashMap};
use flowtally_common::{
    agg::{FlowRecord, Ip, ScopeKey},
    interfaces::{InterfaceFlows, MAX_INTERFACES, touched},
};

#[map(name = "INTERFACE_FLOWS")]
static INTERFACE_FLOWS: PerCpuHashMap<ScopeKey, InterfaceFlows> =
    PerCpuHashMap::with_max_entries(MAX_INTERFACES, 0);

/// Adds `record` to the interfaces it touched that userspace listed.
#[inline(always)]
pub fn count(exporter: &Ip, record: &FlowRecord) {
    for (ifindex, side) in touched(record).into_iter().flatten() {
        let key = ScopeKey {
            exporter: *exporter,
            ifindex,
        };
        if let Some(flows) = INTERFACE_FLOWS.get_ptr_mut(&key) {
            // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
            unsafe { (*flows).add(side, record) };
        }
    }
}
