//! One flush: swap and drain the kernel maps, take the socket path's
//! aggregates, and write them all as `usage` rows in one transaction.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use flowtally_common::agg::Profile;
use rusqlite::Connection;
use tokio::sync::Notify;

use super::{clock, flow_socket::SocketPath, templates_file};
use crate::{
    aggregate::{Table, merge},
    associate::{Associator, BacklogChanges},
    metrics::Metrics,
    sessions::History,
    sink::{runs, sqlite},
    usage::UsageRow,
    xdp::Drainer,
};

pub struct Flusher {
    pub drainer: Option<Drainer>,
    pub history: Arc<Mutex<History>>,
    pub associator: Associator,
    /// Where the template cache is saved after each flush.
    pub templates_file: PathBuf,
    pub socket: Arc<SocketPath>,
    pub db: Connection,
    pub metrics: Metrics,
    pub profile: Profile,
    /// Rows a failed write left behind; retried first next time.
    pending: Vec<UsageRow>,
    /// Told when rows were written, to deliver them onwards (ClickHouse).
    written: Option<Arc<Notify>>,
    /// Backlog changes a failed write left behind.
    pending_changes: BacklogChanges,
    /// This run's row in `runs`.
    run: Option<i64>,
}

/// What a flush wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flushed {
    pub rows: usize,
    pub bytes: u64,
    pub attributed_bytes: u64,
    /// Rows still waiting for a late session.
    pub backlog: usize,
}

impl std::fmt::Display for Flushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = if self.bytes == 0 {
            100.0
        } else {
            100.0 * self.attributed_bytes as f64 / self.bytes as f64
        };
        write!(
            f,
            "{} usage rows, {} bytes, {share:.1}% attributed, {} bytes unattributed, \
             {} rows waiting for a late session",
            self.rows,
            self.bytes,
            self.bytes - self.attributed_bytes,
            self.backlog
        )
    }
}

impl Flusher {
    #[expect(
        clippy::too_many_arguments,
        reason = "one place builds it, naming each part"
    )]
    pub fn new(
        drainer: Option<Drainer>,
        history: Arc<Mutex<History>>,
        associator: Associator,
        templates_file: PathBuf,
        socket: Arc<SocketPath>,
        db: Connection,
        metrics: Metrics,
        profile: Profile,
    ) -> Self {
        Self {
            drainer,
            history,
            associator,
            templates_file,
            socket,
            db,
            metrics,
            profile,
            pending: Vec::new(),
            written: None,
            pending_changes: BacklogChanges::default(),
            run: None,
        }
    }

    /// Records each flush, and the final one, in `runs` row `run`.
    pub fn record_run(mut self, run: i64) -> Self {
        self.run = Some(run);
        self
    }

    pub fn notify_writes(mut self, written: Arc<Notify>) -> Self {
        self.written = Some(written);
        self
    }

    /// With `last`, rows waiting for a late session are written too.
    pub fn flush(&mut self, last: bool) -> anyhow::Result<Flushed> {
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
        let fresh = table
            .iter()
            .filter_map(|(key, value)| UsageRow::new(key, value, &self.profile))
            .collect();
        let (attributed, summary) = {
            let history = self.history.lock().expect("history lock poisoned");
            self.associator
                .associate(fresh, &history, clock::unix_ms(), last)
        };
        self.metrics
            .attributed_bytes
            .inc_by(summary.attributed_bytes);
        self.metrics
            .unattributed_bytes
            .inc_by(summary.unattributed_bytes);
        self.metrics
            .association_backlog
            .set(self.associator.backlog() as i64);
        self.metrics.users.observe(&attributed);
        let now_ms = clock::unix_ms();
        self.metrics.talkers.observe(&attributed, now_ms);
        self.metrics.exporters.flushed(&attributed, now_ms);
        let mut rows = std::mem::take(&mut self.pending);
        rows.extend(attributed);
        let mut changes = std::mem::take(&mut self.pending_changes);
        let fresh = self.associator.take_changes();
        changes.entered.extend(fresh.entered);
        changes.left.extend(fresh.left);
        if let Err(err) = sqlite::write_flush(&mut self.db, &rows, &changes) {
            self.pending = rows;
            self.pending_changes = changes;
            return Err(anyhow::anyhow!(
                "writing {} usage rows failed, retrying next flush: {err}",
                self.pending.len()
            ));
        }
        let mut flushed = Flushed {
            rows: rows.len(),
            bytes: 0,
            attributed_bytes: summary.attributed_bytes,
            backlog: self.associator.backlog(),
        };
        for row in &rows {
            flushed.bytes += row.bytes;
            self.metrics
                .usage_bytes
                .get_or_create(&[("direction", row.direction.as_str())])
                .inc_by(row.bytes);
        }
        self.metrics.usage_rows.inc_by(rows.len() as u64);
        if let Some(run) = self.run {
            let record = if last { runs::stopped } else { runs::flushed };
            if let Err(err) = record(&self.db, run, clock::unix_ms()) {
                tracing::warn!("recording the flush in `runs`: {err}");
            }
        }
        if let Some(written) = &self.written {
            written.notify_one();
        }
        let saved = self.socket.maintain(clock::unix_ms());
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
