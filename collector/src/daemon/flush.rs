//! One flush: write the NAT binding changes since the last one, swap and
//! drain the kernel maps, take the socket path's aggregates, attribute
//! them, and write them all as `usage` rows in one transaction; then
//! expire and save templates, and now and then prune the bindings.
//!
//! When SQLite refuses the write (full disk, read-only filesystem, a lock
//! held elsewhere), the rows are held in memory up to `max_held_rows` and
//! written first by the next flush that succeeds ([`crate::outage`]); the
//! flush goes on every interval meanwhile, so intake never waits.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowtally_common::agg::Profile;
use rusqlite::Connection;
use tokio::sync::Notify;

use super::{clock, enforce::Enforcer, flow_socket::SocketPath, templates_file};
use crate::{
    aggregate::{Table, merge},
    associate::{Associator, BacklogChanges},
    classes::Classes,
    integrity::sequence::StreamKey,
    metrics::Metrics,
    nat::{self, Bindings},
    outage::{self, Dropped, Held, Outage},
    sessions::History,
    sink::{self, integrity, nat_store, runs, sflow_health, sqlite},
    usage::UsageRow,
    xdp::{Drainer, KernelIntegrity, KernelSflow},
};

/// How often the bindings are pruned and counted, at most.
const PRUNE_EVERY_MS: u64 = 10_000;
/// This writer's `writer` label in the storage metrics.
const WRITER: &str = "usage";
/// Rows associated per hold of the session history's lock: a millisecond
/// or two (a few on a busy machine), what a RADIUS request waits for at
/// most.
const ASSOCIATE_STEP: usize = 1_000;

/// Metrics of rows that SQLite took.
fn count_written(metrics: &Metrics, rows: &[UsageRow]) {
    for row in rows {
        metrics
            .usage_bytes
            .get_or_create(&[("direction", row.direction.as_str())])
            .inc_by(row.bytes);
    }
    metrics.usage_rows.inc_by(rows.len() as u64);
}

pub struct Flusher {
    parts: FlushParts,
    /// Binding changes a failed write left behind.
    pending_nat: Vec<nat::Change>,
    last_prune_ms: u64,
    /// Rows a failed write left behind; retried first next time.
    held: Held,
    /// Backlog changes a failed write left behind.
    pending_changes: BacklogChanges,
    outage: Outage,
}

/// Everything a flush reads from and writes to.
pub struct FlushParts {
    /// The kernel's maps, with XDP.
    pub drainer: Option<Drainer>,
    pub history: Arc<Mutex<History>>,
    /// NAT bindings, fed by the socket path.
    pub bindings: Arc<Mutex<Bindings>>,
    /// Bindings ended longer ago are deleted from SQLite; `None`: kept.
    pub nat_retention_ms: Option<u64>,
    pub associator: Associator,
    /// Where the template cache is saved after each flush.
    pub templates_file: PathBuf,
    pub socket: Arc<SocketPath>,
    pub db: Connection,
    /// Taken around every write, shared with the RADIUS commits.
    pub gate: sink::WriteGate,
    pub metrics: Metrics,
    pub profile: Profile,
    /// Names of the destination classes keys carry.
    pub classes: Classes,
    /// This run's row in `runs`, where each flush is recorded.
    pub run: i64,
    /// Told when rows were written, to deliver them onwards (ClickHouse).
    pub written: Option<Arc<Notify>>,
    /// The kernel's sFlow state, with XDP.
    pub kernel_sflow: Option<KernelSflow>,
    /// The kernel's exports ring and interface counters, with XDP.
    pub integrity: Option<KernelIntegrity>,
    /// How long a sequence gap may wait for a late export.
    pub hold_ms: u64,
    /// When the interval the next flush closes began.
    pub since_ms: u64,
    /// Usage rows held in memory at most while SQLite refuses writes.
    pub max_held_rows: usize,
    /// Quotas, when configured: told the rows of each flush.
    pub enforcer: Option<Enforcer>,
}

/// What a flush took in and wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flushed {
    /// Aggregates drained from the kernel and the socket path.
    pub aggregates: usize,
    /// Usage rows written (some of them may have waited for a late session).
    pub rows: usize,
    pub bytes: u64,
    pub attributed_bytes: u64,
    /// Aggregates that found the kernel map full and came through the ring.
    pub overflow_records: u64,
    /// Rows still waiting for a late session.
    pub backlog: usize,
    /// Rows held in memory because SQLite refused them.
    pub held: usize,
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
            "{} new aggregates ({} through the overflow ring); {} usage rows, {} bytes, \
             {share:.1}% attributed, {} bytes unattributed, {} rows waiting for a late session",
            self.aggregates,
            self.overflow_records,
            self.rows,
            self.bytes,
            self.bytes.saturating_sub(self.attributed_bytes),
            self.backlog
        )
    }
}

impl Flusher {
    pub fn new(parts: FlushParts) -> Self {
        parts.metrics.storage.set_ok(WRITER, true);
        Self {
            held: Held::new(parts.max_held_rows),
            parts,
            pending_nat: Vec::new(),
            last_prune_ms: 0,
            pending_changes: BacklogChanges::default(),
            outage: Outage::default(),
        }
    }

    /// One flush at `now_ms`. With `last`, rows waiting for a late session
    /// are written too, and rows SQLite refuses are an error: they are lost.
    pub fn flush(&mut self, now_ms: u64, last: bool) -> anyhow::Result<Flushed> {
        let started = Instant::now();
        let bindings_written = self.write_bindings();
        let FlushParts {
            drainer,
            history,
            bindings,
            associator,
            socket,
            db,
            gate,
            metrics,
            profile,
            classes,
            enforcer,
            ..
        } = &mut self.parts;
        // The kernel first: the overflow ring's continuous reader adds to the
        // socket path's table while it holds the ring, so once the drain has
        // had the ring, that table holds all it read.
        let mut table = Table::new();
        let mut overflow_records = 0;
        if let Some(drainer) = drainer {
            let drained = drainer.drain(|key, value| merge(&mut table, key, value))?;
            overflow_records = drained.overflow_records;
            metrics
                .aggregate_map_entries
                .set(drained.map_entries as i64);
            metrics.overflow_records.inc_by(drained.overflow_records);
        }
        let socket_table = socket
            .aggregator
            .lock()
            .expect("aggregator lock poisoned")
            .take();
        for (key, value) in socket_table {
            merge(&mut table, key, &value);
        }
        let aggregates = table.len();
        let fresh = table
            .iter()
            .filter_map(|(key, value)| UsageRow::new(key, value, profile, classes))
            .collect();
        // In steps, letting go of the history between them: RADIUS
        // requests wait for it.
        let mut pass = associator.begin(fresh, now_ms, last);
        while !pass.is_done() {
            let history = history.lock().expect("history lock poisoned");
            let bindings = bindings.lock().expect("bindings lock poisoned");
            associator.step(&mut pass, &history, &bindings, ASSOCIATE_STEP);
        }
        let (attributed, summary) = pass.finish();
        metrics.nat.attributed(&summary.nat);
        metrics.attributed_bytes.inc_by(summary.attributed_bytes);
        metrics
            .unattributed_bytes
            .inc_by(summary.unattributed_bytes);
        metrics.association_backlog.set(associator.backlog() as i64);
        metrics.users.observe(&attributed);
        metrics.talkers.observe(&attributed, now_ms);
        metrics.exporters.flushed(&attributed, now_ms);
        let mut rows = self.held.take();
        rows.extend(attributed);
        let mut changes = std::mem::take(&mut self.pending_changes);
        let fresh = associator.take_changes();
        changes.entered.extend(fresh.entered);
        changes.left.extend(fresh.left);
        let backlog = associator.backlog();
        let result = bindings_written
            .map_err(|err| (0, err))
            .and_then(|()| sqlite::write_flush_in_steps(db, gate, &rows, &changes, sqlite::STEP));
        // Not in the last flush: its requests could not be sent before the
        // exit, yet would count as sent; the next run decides from SQLite.
        let mut tell_quotas = |rows: &[UsageRow]| {
            if let Some(enforcer) = enforcer.as_mut()
                && !last
            {
                let _turn = gate.lock();
                enforcer.flushed(rows, now_ms, history, db);
            }
        };
        if let Err((written, err)) = result {
            count_written(metrics, &rows[..written]);
            tell_quotas(&rows[..written]);
            rows.drain(..written);
            if written > 0 {
                changes = BacklogChanges::default();
            }
            let failed = Flushed {
                aggregates,
                overflow_records,
                backlog,
                rows: written,
                ..Flushed::default()
            };
            return self.hold(now_ms, last, rows, changes, &err, started, failed);
        }
        count_written(metrics, &rows);
        tell_quotas(&rows);
        self.recovered(rows.len());
        let FlushParts {
            templates_file,
            socket,
            db,
            gate,
            run,
            written,
            ..
        } = &mut self.parts;
        let flushed = Flushed {
            aggregates,
            rows: rows.len(),
            bytes: rows.iter().map(|row| row.bytes).sum(),
            attributed_bytes: summary.attributed_bytes,
            overflow_records,
            backlog,
            held: 0,
        };
        let record = if last { runs::stopped } else { runs::flushed };
        if let Err(err) = {
            let _turn = gate.lock();
            record(db, *run, now_ms)
        } {
            tracing::warn!("recording the flush in `runs`: {err}");
        }
        if let Err(err) = sink::checkpoint(db) {
            tracing::warn!("checkpointing the SQLite WAL: {err}");
        }
        if let Some(written) = written {
            written.notify_one();
        }
        let saved = socket.maintain(now_ms);
        if let Err(err) = templates_file::save(templates_file, &saved) {
            tracing::warn!("saving templates to {}: {err}", templates_file.display());
        }
        if last || now_ms.abs_diff(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now_ms;
            self.prune_bindings(now_ms);
        }
        self.close_sflow_interval(now_ms);
        self.close_integrity(now_ms, last);
        self.parts
            .metrics
            .drain_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(flushed)
    }

    /// After a failed write: holds what it would have written, counts what
    /// the bound gives up, and tells the log once per outage. The rest of
    /// the flush (templates, audit figures) waits for SQLite too: what it
    /// would write accumulates until then.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        now_ms: u64,
        last: bool,
        rows: Vec<UsageRow>,
        changes: BacklogChanges,
        err: &rusqlite::Error,
        started: Instant,
        mut failed: Flushed,
    ) -> anyhow::Result<Flushed> {
        let storage = &self.parts.metrics.storage;
        let cause = sink::failure_cause(&self.parts.db, err);
        storage.failed(WRITER, cause);
        let starts = self.outage.failed(now_ms, cause);
        if last {
            let lost = Dropped {
                rows: rows.len() as u64,
                bytes: rows.iter().map(|row| row.bytes).sum(),
            };
            anyhow::bail!(
                "SQLite refuses writes ({cause}): {} usage rows ({} bytes) held in memory are \
                 lost: {err}",
                lost.rows,
                lost.bytes
            );
        }
        let dropped = self.held.keep(rows);
        self.pending_changes = changes;
        storage.held_rows.set(self.held.len() as i64);
        storage.dropped_rows.inc_by(dropped.rows);
        storage.dropped_bytes.inc_by(dropped.bytes);
        if starts {
            tracing::error!(
                "SQLite refuses writes ({cause}): holding {} usage rows ({} bytes) in memory, \
                 up to max_held_rows = {}, and retrying every flush; no RADIUS request is \
                 answered until its session is stored: {err}",
                self.held.len(),
                self.held.bytes(),
                self.parts.max_held_rows
            );
        }
        if self.outage.dropped(dropped) {
            tracing::error!(
                "max_held_rows = {} reached while SQLite refuses writes: newer usage rows are \
                 dropped, counted in flowtally_storage_dropped_bytes_total ({} rows, {} bytes \
                 in this flush)",
                self.parts.max_held_rows,
                dropped.rows,
                dropped.bytes
            );
        }
        self.parts
            .metrics
            .drain_duration
            .observe(started.elapsed().as_secs_f64());
        failed.held = self.held.len();
        Ok(failed)
    }

    /// After a successful write of `rows` rows: the end of an outage, if
    /// one was going on, told to the log.
    fn recovered(&mut self, rows: usize) {
        let storage = &self.parts.metrics.storage;
        storage.set_ok(WRITER, true);
        storage.held_rows.set(0);
        let Some(incident) = self.outage.succeeded() else {
            return;
        };
        let lasted = Duration::from_millis(clock::unix_ms().saturating_sub(incident.since_ms));
        let line = format!(
            "SQLite accepts writes again after {} ({} failed attempts, {}): wrote {rows} usage \
             rows, those held included; {} rows ({} bytes) were dropped in the outage",
            humantime::format_duration(Duration::from_secs(lasted.as_secs())),
            incident.attempts,
            incident.cause,
            incident.dropped.rows,
            incident.dropped.bytes,
        );
        if incident.dropped.rows > 0 {
            tracing::error!("{line}");
        } else {
            tracing::warn!("{line}");
        }
    }

    /// Makes the binding changes since the last flush durable; a failure
    /// keeps them for the next.
    fn write_bindings(&mut self) -> rusqlite::Result<()> {
        let mut changes = std::mem::take(&mut self.pending_nat);
        changes.extend(
            self.parts
                .bindings
                .lock()
                .expect("bindings lock poisoned")
                .take_changes(),
        );
        if changes.is_empty() {
            return Ok(());
        }
        let _turn = self.parts.gate.lock();
        nat_store::write(&mut self.parts.db, &changes).inspect_err(|_| {
            let max = self.parts.max_held_rows;
            let over = outage::keep_at_most(&mut changes, max) as u64;
            self.parts.metrics.storage.dropped_nat_changes.inc_by(over);
            if self.outage.dropped_nat_changes(over) {
                tracing::error!(
                    "SQLite refuses writes: NAT binding changes beyond max_held_rows ({max}) are \
                     dropped, counted in flowtally_storage_dropped_nat_changes_total ({over} so \
                     far)"
                );
            }
            self.pending_nat = changes;
        })
    }

    /// Bindings past the memory retention leave memory; past
    /// `cgnat.retention`, SQLite.
    fn prune_bindings(&mut self, now_ms: u64) {
        let FlushParts {
            bindings,
            nat_retention_ms,
            db,
            gate,
            metrics,
            ..
        } = &mut self.parts;
        let pruned = bindings
            .lock()
            .expect("bindings lock poisoned")
            .prune(now_ms);
        metrics.nat.bindings_open.set(pruned.open as i64);
        metrics.nat.bindings_in_memory.set(pruned.kept as i64);
        metrics.nat.bindings_evicted.inc_by(pruned.evicted as u64);
        if let Some(retention) = nat_retention_ms {
            let _turn = gate.lock();
            match nat_store::delete_ended_before(db, now_ms.saturating_sub(*retention)) {
                Ok(deleted) => {
                    metrics.nat.bindings_deleted.inc_by(deleted as u64);
                }
                Err(err) => tracing::warn!("deleting NAT bindings past the retention: {err}"),
            }
        }
    }

    /// sFlow's per-source figures and interface counters of this interval
    /// to metrics and SQLite; renormalised rates and the clock offset to
    /// the kernel. Failures here lose audit figures, never usage: logged.
    fn close_sflow_interval(&mut self, now_ms: u64) {
        let parts = &mut self.parts;
        let kernel = parts
            .kernel_sflow
            .as_ref()
            .map(KernelSflow::sources)
            .unwrap_or_default();
        let interval = parts.socket.sflow_interval(kernel);
        parts.metrics.sflow.observe(&interval.healths);
        if let Some(kernel) = &mut parts.kernel_sflow
            && let Err(err) = kernel
                .set_rates(&interval.rates)
                .and_then(|()| kernel.set_clock())
        {
            tracing::warn!("kernel sFlow maps: {err}");
        }
        let _turn = parts.gate.lock();
        if let Err(err) =
            sflow_health::write(&mut parts.db, now_ms, &interval.healths, &interval.counters)
        {
            tracing::warn!("writing sFlow source figures and interface counters: {err}");
        }
    }

    /// Sequence figures and per-interface flow bytes of this interval to
    /// metrics and SQLite. A failure here loses audit figures, never
    /// usage: logged.
    fn close_integrity(&mut self, now_ms: u64, last: bool) {
        let p = &mut self.parts;
        let mut flows = p
            .socket
            .aggregator
            .lock()
            .expect("aggregator lock poisoned")
            .take_interfaces();
        // The ring before the tracker, as its reader task locks them.
        p.socket.read_kernel_exports(now_ms);
        let mut sequences = p.socket.sequences.lock().expect("sequences lock poisoned");
        if let Some(kernel) = &mut p.integrity {
            match kernel.export_bytes() {
                Ok(bytes) => {
                    for (key, bytes) in bytes {
                        let stream = StreamKey {
                            exporter: key.exporter,
                            version: key.version,
                            domain: key.domain,
                        };
                        sequences.add_bytes(&stream, bytes);
                    }
                }
                Err(err) => tracing::warn!("kernel export bytes: {err}"),
            }
            match kernel.interface_flows() {
                Ok(kernel_flows) => {
                    for (key, counter) in kernel_flows {
                        let sum = flows.entry(key).or_default();
                        *sum = *sum + counter;
                    }
                }
                Err(err) => tracing::warn!("kernel interface counters: {err}"),
            }
        }
        let healths = sequences.close(now_ms, p.hold_ms, last);
        p.metrics
            .integrity
            .untracked
            .inc_by(std::mem::take(&mut sequences.untracked));
        drop(sequences);
        p.metrics.integrity.observe(&healths);
        let _turn = p.gate.lock();
        if let Err(err) = integrity::write_interval(&mut p.db, p.since_ms, now_ms, &healths, &flows)
        {
            tracing::warn!("writing export health and interface flows: {err}");
        }
        p.since_ms = now_ms;
    }
}
