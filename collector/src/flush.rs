//! One flush: swap and drain the kernel maps, take the socket path's
//! aggregates, and write them all as `usage` rows in one transaction.

use std::{path::PathBuf, sync::Arc, time::Instant};

use flowtally_common::agg::Profile;
use rusqlite::Connection;

use crate::{
    aggregate::{Table, merge},
    flow_socket::SocketPath,
    metrics::Metrics,
    sink::sqlite,
    templates_file,
    usage::UsageRow,
    xdp::Drainer,
};

pub struct Flusher {
    pub drainer: Option<Drainer>,
    /// Where the template cache is saved after each flush.
    pub templates_file: PathBuf,
    pub socket: Arc<SocketPath>,
    pub db: Connection,
    pub metrics: Metrics,
    pub profile: Profile,
    /// Rows a failed write left behind; retried first next time.
    pending: Vec<UsageRow>,
}

/// What a flush wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flushed {
    pub rows: usize,
    pub bytes: u64,
}

impl Flusher {
    pub fn new(
        drainer: Option<Drainer>,
        templates_file: PathBuf,
        socket: Arc<SocketPath>,
        db: Connection,
        metrics: Metrics,
        profile: Profile,
    ) -> Self {
        Self {
            drainer,
            templates_file,
            socket,
            db,
            metrics,
            profile,
            pending: Vec::new(),
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<Flushed> {
        let started = Instant::now();
        let mut table: Table = self
            .socket
            .aggregator
            .lock()
            .expect("aggregator lock poisoned")
            .take();
        if let Some(drainer) = &mut self.drainer {
            let drained = drainer.drain(|key, value| merge(&mut table, key, value))?;
            self.metrics
                .aggregate_map_entries
                .set(drained.map_entries as i64);
            self.metrics
                .overflow_records
                .inc_by(drained.overflow_records);
        }
        let mut rows = std::mem::take(&mut self.pending);
        rows.extend(
            table
                .iter()
                .filter_map(|(key, value)| UsageRow::new(key, value, &self.profile)),
        );
        if let Err(err) = sqlite::write_usage(&mut self.db, &rows) {
            self.pending = rows;
            return Err(anyhow::anyhow!(
                "writing {} usage rows failed, retrying next flush: {err}",
                self.pending.len()
            ));
        }
        let mut flushed = Flushed {
            rows: rows.len(),
            bytes: 0,
        };
        for row in &rows {
            flushed.bytes += row.bytes;
            self.metrics
                .usage_bytes
                .get_or_create(&[("direction", row.direction.as_str())])
                .inc_by(row.bytes);
        }
        self.metrics.usage_rows.inc_by(rows.len() as u64);
        let saved = self.socket.maintain(templates_file::unix_ms());
        if let Err(err) = templates_file::save(&self.templates_file, &saved) {
            tracing::warn!(
                "saving templates to {}: {err}",
                self.templates_file.display()
            );
        }
        self.metrics
            .drain_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(flushed)
    }
}
