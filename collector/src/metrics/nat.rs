//! Metrics of NAT events, the binding history and attribution through it.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{associate::NatSummary, nat::Applied, netflow::nat::NatEvent};

type Labels = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Default)]
pub struct NatMetrics {
    /// By natEvent `type`.
    events: Family<Labels, Counter>,
    /// By what the binding history did with them.
    applied: Family<Labels, Counter>,
    /// Neither deleted nor past their lifetime, at the last prune.
    pub bindings_open: Gauge,
    pub bindings_in_memory: Gauge,
    /// Left memory early for `cgnat.max_bindings`.
    pub bindings_evicted: Counter,
    /// Deleted from SQLite past `cgnat.retention`.
    pub bindings_deleted: Counter,
    lookups_without_binding: Counter,
    attributed_bytes: Counter,
    /// Pool traffic written unattributed, by reason.
    unattributed_bytes: Family<Labels, Counter>,
}

impl NatMetrics {
    pub fn event(&self, event: &NatEvent, applied: Applied) {
        self.events
            .get_or_create(&[("type", event.type_label())])
            .inc();
        self.applied
            .get_or_create(&[("result", applied.as_str())])
            .inc();
    }

    pub fn attributed(&self, summary: &NatSummary) {
        self.attributed_bytes.inc_by(summary.attributed_bytes);
        self.lookups_without_binding
            .inc_by(summary.lookups_without_binding);
        for (reason, bytes) in summary.unattributed() {
            if bytes > 0 {
                self.unattributed_bytes
                    .get_or_create(&[("reason", reason)])
                    .inc_by(bytes);
            }
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "nat_events",
            "NAT event records received, by natEvent type",
            self.events.clone(),
        );
        r.register(
            "nat_events_applied",
            "NAT events by what the binding history did: opened, closed, completed (a create \
             after its delete), delete_without_create, duplicate, incomplete, refused (memory \
             full: persisted only), counted (not about a binding)",
            self.applied.clone(),
        );
        r.register(
            "nat_bindings_open",
            "NAT bindings neither deleted nor past cgnat.max_lifetime",
            self.bindings_open.clone(),
        );
        r.register(
            "nat_bindings_in_memory",
            "NAT bindings held in memory (ended within cgnat.memory_retention, or open)",
            self.bindings_in_memory.clone(),
        );
        r.register(
            "nat_bindings_evicted",
            "NAT bindings that left memory early for cgnat.max_bindings (they stay in SQLite)",
            self.bindings_evicted.clone(),
        );
        r.register(
            "nat_bindings_deleted",
            "NAT bindings deleted from SQLite past cgnat.retention",
            self.bindings_deleted.clone(),
        );
        r.register(
            "nat_lookups_without_binding",
            "Usage rows of a CGNAT pool written unattributed because no binding held their port",
            self.lookups_without_binding.clone(),
        );
        r.register_with_unit(
            "nat_attributed",
            "Bytes of CGNAT pool usage attributed through a binding",
            Unit::Bytes,
            self.attributed_bytes.clone(),
        );
        r.register_with_unit(
            "nat_unattributed",
            "Bytes of CGNAT pool usage written unattributed, by reason: no_port (the row has no \
             port or protocol), no_binding, no_session (the inside address had no session)",
            Unit::Bytes,
            self.unattributed_bytes.clone(),
        );
    }
}
