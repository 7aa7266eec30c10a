//! `flowtally_clickhouse_*`: delivery, spool and failures.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type TableLabel = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Default)]
pub struct ClickHouseMetrics {
    pub delivered_rows: Family<TableLabel, Counter>,
    /// Rows a retried batch found already in ClickHouse (not sent again).
    pub already_present_rows: Counter,
    pub spool_rows: Family<TableLabel, Gauge>,
    /// Rows given up because the spool exceeded `spool_max_rows`.
    pub discarded_rows: Family<TableLabel, Counter>,
    pub errors: Counter,
    pub up: Gauge,
}

impl ClickHouseMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clickhouse_delivered_rows",
            "Rows delivered to ClickHouse, by table",
            self.delivered_rows.clone(),
        );
        r.register(
            "clickhouse_already_present_rows",
            "Rows of a retried batch that ClickHouse already had, so were not sent again",
            self.already_present_rows.clone(),
        );
        r.register(
            "clickhouse_spool_rows",
            "Changes written to SQLite and not yet delivered to ClickHouse, by table",
            self.spool_rows.clone(),
        );
        r.register(
            "clickhouse_discarded_rows",
            "Rows never delivered to ClickHouse because the spool exceeded \
             clickhouse.spool_max_rows (they remain in SQLite), by table",
            self.discarded_rows.clone(),
        );
        r.register(
            "clickhouse_errors",
            "Failed ClickHouse requests (table creation, inserts, checks)",
            self.errors.clone(),
        );
        r.register(
            "clickhouse_up",
            "1 if the last ClickHouse request succeeded",
            self.up.clone(),
        );
    }
}
