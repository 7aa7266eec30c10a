//! Completeness metrics: exports lost on the way, exporter restarts, and
//! the interface counter polls they are checked against.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{integrity::sequence::Health, ip::to_addr};

type ExporterLabels = [(&'static str, String); 1];
type LostLabels = [(&'static str, String); 2];

#[derive(Clone, Debug, Default)]
pub struct IntegrityMetrics {
    /// Estimated lost units by exporter and unit (`records`, `exports`).
    lost: Family<LostLabels, Counter>,
    duplicates: Family<LostLabels, Counter>,
    restarts: Family<ExporterLabels, Counter>,
    /// Exports of exporter domains beyond the tracker's bound.
    pub untracked: Counter,
    /// SNMP interface counter polls by agent and result (`ok`, `error`).
    snmp_polls: Family<[(&'static str, String); 2], Counter>,
    /// The same losses and restarts per exporter since start, for the API.
    totals: Arc<Mutex<BTreeMap<IpAddr, LossTotals>>>,
}

/// An exporter's estimated losses and restarts since this run started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LossTotals {
    /// Records lost (v5, IPFIX).
    pub records: u64,
    /// Export packets lost (v9, which counts packets).
    pub exports: u64,
    pub restarts: u64,
}

impl IntegrityMetrics {
    /// Adds one flush's figures.
    pub fn observe(&self, healths: &[Health]) {
        let mut totals = self.totals.lock().expect("loss totals lock poisoned");
        for h in healths {
            let addr = to_addr(&h.key.exporter);
            let total = totals.entry(addr).or_default();
            match h.unit {
                "exports" => total.exports += h.figures.lost,
                _ => total.records += h.figures.lost,
            }
            total.restarts += h.figures.restarts;
            let exporter = addr.to_string();
            let unit =
                |exporter: &str| [("exporter", exporter.to_owned()), ("unit", h.unit.into())];
            let f = &h.figures;
            // Families create a series on first use: only for what happened.
            if f.lost > 0 {
                self.lost.get_or_create(&unit(&exporter)).inc_by(f.lost);
            }
            if f.duplicates > 0 {
                self.duplicates
                    .get_or_create(&unit(&exporter))
                    .inc_by(f.duplicates);
            }
            if f.restarts > 0 {
                self.restarts
                    .get_or_create(&[("exporter", exporter.clone())])
                    .inc_by(f.restarts);
            }
        }
    }

    /// Every exporter's losses and restarts since start.
    pub fn totals(&self) -> BTreeMap<IpAddr, LossTotals> {
        self.totals
            .lock()
            .expect("loss totals lock poisoned")
            .clone()
    }

    pub fn polled(&self, agent: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.snmp_polls
            .get_or_create(&[("agent", agent.to_owned()), ("result", result.to_owned())])
            .inc();
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "export_lost",
            "Estimated flow data lost before it reached flowtally, from export sequence \
             numbers, by exporter and unit (records for v5/IPFIX, exports for v9)",
            self.lost.clone(),
        );
        r.register(
            "export_duplicates",
            "Units of exports received more than once, by exporter and unit",
            self.duplicates.clone(),
        );
        r.register(
            "exporter_restarts",
            "Exporter restarts seen in their sequence numbers and uptime",
            self.restarts.clone(),
        );
        r.register(
            "export_untracked",
            "Exports of exporter domains beyond the sequence tracker's bound (4096), not checked",
            self.untracked.clone(),
        );
        r.register(
            "snmp_polls",
            "SNMP interface counter polls by agent and result",
            self.snmp_polls.clone(),
        );
    }
}
