//! Metrics of the v9/IPFIX template cache, fed from its per-datagram
//! reports.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::netflow::{Expired, Report};

type Labels = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Default)]
pub struct TemplateMetrics {
    /// By `kind` (template, options) and `event` (learned, changed,
    /// refreshed, withdrawn, expired).
    events: Family<[(&'static str, &'static str); 2], Counter>,
    rejections: Family<Labels, Counter>,
    pending_sets: Family<Labels, Counter>,
    pending_bytes: Family<Labels, Counter>,
    anomalies: Family<Labels, Counter>,
    /// Templates compiled for the kernel.
    pub compiled: Gauge,
}

impl TemplateMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "template_events",
            "v9/IPFIX (options) templates learned, changed, refreshed, withdrawn, expired",
            self.events.clone(),
        );
        r.register(
            "template_rejections",
            "Template records refused, by reason (limits, malformed)",
            self.rejections.clone(),
        );
        r.register(
            "pending_sets",
            "Data sets that arrived before their template: buffered, replayed, dropped",
            self.pending_sets.clone(),
        );
        r.register(
            "pending_bytes",
            "Bytes of such sets: buffered, dropped (pending buffer full or expired)",
            self.pending_bytes.clone(),
        );
        r.register(
            "record_anomalies",
            "Records decoded with a caveat: unknown_sampler (taken as unsampled), \
             no_system_init_time (timed at export), bad_field (a field read as absent), \
             non_flow (ignored), short_record (trailing bytes)",
            self.anomalies.clone(),
        );
        r.register(
            "templates_compiled",
            "Templates compiled for the XDP program",
            self.compiled.clone(),
        );
    }

    pub fn observe(&self, report: &Report) {
        for (kind, counts) in [
            ("template", &report.templates),
            ("options", &report.options_templates),
        ] {
            for (event, n) in [
                ("learned", counts.learned),
                ("changed", counts.changed),
                ("refreshed", counts.refreshed),
                ("withdrawn", counts.withdrawn),
            ] {
                self.event(kind, event, n);
            }
        }
        let r = &report.rejected;
        for (reason, n) in [
            ("too_many_templates", r.too_many_templates),
            ("too_many_fields", r.too_many_fields),
            ("template_too_long", r.template_too_long),
            ("malformed", r.malformed),
            ("too_many_samplers", report.samplers_rejected),
        ] {
            add(&self.rejections, ("reason", reason), n);
        }
        let p = &report.pending;
        add(&self.pending_sets, ("outcome", "buffered"), p.buffered_sets);
        add(&self.pending_sets, ("outcome", "replayed"), p.replayed_sets);
        add(&self.pending_sets, ("outcome", "dropped"), p.overflow_sets);
        add(
            &self.pending_bytes,
            ("outcome", "buffered"),
            p.buffered_bytes,
        );
        add(
            &self.pending_bytes,
            ("outcome", "dropped"),
            p.overflow_bytes,
        );
        for (reason, n) in [
            ("unknown_sampler", report.unknown_sampler),
            ("no_system_init_time", report.no_system_init_time),
            ("bad_field", report.bad_field_records),
            ("non_flow", report.non_flow_records),
            ("short_record", report.short_records),
        ] {
            add(&self.anomalies, ("reason", reason), n);
        }
        self.expired(&report.expired);
    }

    pub fn expired(&self, expired: &Expired) {
        self.event("template", "expired", expired.templates);
        self.event("options", "expired", expired.domains);
        add(
            &self.pending_sets,
            ("outcome", "dropped"),
            expired.pending_sets,
        );
        add(
            &self.pending_bytes,
            ("outcome", "dropped"),
            expired.pending_bytes,
        );
    }

    fn event(&self, kind: &'static str, event: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&[("kind", kind), ("event", event)])
                .inc_by(n);
        }
    }
}

fn add(family: &Family<Labels, Counter>, (key, value): (&'static str, &'static str), n: u64) {
    if n > 0 {
        family.get_or_create(&[(key, value)]).inc_by(n);
    }
}
