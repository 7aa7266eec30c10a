//! Metrics of the SQLite store's health, per writer (`usage`: the flush;
//! `radius`: the session history's commits).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

type Writer = [(&'static str, &'static str); 1];
type WriterCause = [(&'static str, &'static str); 2];

#[derive(Clone, Debug, Default)]
pub struct StorageMetrics {
    ok: Family<Writer, Gauge>,
    failures: Family<WriterCause, Counter>,
    /// Usage rows held in memory while SQLite refuses them.
    pub held_rows: Gauge,
    /// Usage rows (and their bytes) given up past `max_held_rows`.
    pub dropped_rows: Counter,
    pub dropped_bytes: Counter,
    /// NAT binding changes given up past `max_held_rows`.
    pub dropped_nat_changes: Counter,
}

impl StorageMetrics {
    /// 1 when `writer`'s last write succeeded (or none failed yet).
    pub fn set_ok(&self, writer: &'static str, ok: bool) {
        self.ok.get_or_create(&[("writer", writer)]).set(ok.into());
    }

    pub fn failed(&self, writer: &'static str, cause: &'static str) {
        self.set_ok(writer, false);
        self.failures
            .get_or_create(&[("writer", writer), ("cause", cause)])
            .inc();
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "storage_ok",
            "1 when the writer's last SQLite write succeeded, 0 during an outage (writer: usage \
             for the flush, radius for session changes)",
            self.ok.clone(),
        );
        r.register(
            "storage_write_failures",
            "SQLite writes that failed, by writer and cause (disk_full, read_only, locked, io, \
             other)",
            self.failures.clone(),
        );
        r.register(
            "storage_held_rows",
            "Usage rows held in memory because SQLite refused them, written first once it \
             accepts writes again",
            self.held_rows.clone(),
        );
        r.register(
            "storage_dropped_rows",
            "Usage rows given up during an outage because max_held_rows were already held",
            self.dropped_rows.clone(),
        );
        r.register_with_unit(
            "storage_dropped",
            "Bytes of those usage rows",
            Unit::Bytes,
            self.dropped_bytes.clone(),
        );
        r.register(
            "storage_dropped_nat_changes",
            "NAT binding changes given up during an outage because max_held_rows were already \
             held (whois cannot answer for those bindings)",
            self.dropped_nat_changes.clone(),
        );
    }
}
