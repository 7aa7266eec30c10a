//! The RADIUS socket loop around [`radius::server::Server`]: datagrams in,
//! the session history's changes made durable in SQLite, and only then the
//! Accounting-Responses out (RFC 2866 §2). Requests that queue up while one
//! transaction commits are committed together in the next (group commit), so
//! durability costs one fsync per batch, not per request.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rusqlite::Connection;
use tokio::{net::UdpSocket, task::block_in_place};

use super::clock::unix_ms;
use crate::{
    metrics::{RadiusMetrics, StorageMetrics},
    outage::Outage,
    radius::{
        self,
        dedup::Key,
        server::{Handled, Refused, status_label},
    },
    sessions::{Change, History},
    sink::{self, session_store},
};

/// RADIUS packets are at most 4096 bytes (RFC 2865 §3).
const MAX_PACKET: usize = 4096;
/// Requests committed together at most.
const BATCH: usize = 256;
/// How often silent sessions are looked for.
const SILENCE_CHECK: Duration = Duration::from_secs(10);
/// How often sessions past the retention leave memory, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// This writer's `writer` label in the storage metrics.
pub const WRITER: &str = "radius";

pub struct RadiusSocket {
    pub socket: UdpSocket,
    pub server: radius::server::Server,
    pub history: Arc<Mutex<History>>,
    /// A connection of its own, with `synchronous = FULL`: a commit is on
    /// disk before the answer leaves.
    pub db: Connection,
    /// Taken around every commit, shared with the flush.
    pub gate: sink::WriteGate,
    pub metrics: RadiusMetrics,
    pub storage: StorageMetrics,
    /// Commits failing since: one log line when it starts, one when it ends.
    pub outage: Outage,
    /// Sessions stopped longer ago leave memory (not SQLite).
    pub retention_ms: u64,
    /// Changes the history holds that a failed commit did not make durable:
    /// written first by the next commit, before any answer goes out.
    pub unwritten: Vec<Change>,
}

/// One batch: what to make durable, then what to send.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    /// With when each request was read from the socket.
    answers: Vec<(Key, Vec<u8>, Instant)>,
    /// Answers to retransmissions of requests already durable.
    resend: Vec<(SocketAddr, Vec<u8>, Instant)>,
}

impl RadiusSocket {
    /// Serves until the task is dropped.
    pub async fn serve(mut self) {
        let mut buf = vec![0; MAX_PACKET];
        let mut silence = tokio::time::interval(SILENCE_CHECK);
        let prune_every = PRUNE_EVERY
            .min(Duration::from_millis(self.retention_ms / 4).max(Duration::from_secs(1)));
        let mut prune =
            tokio::time::interval_at(tokio::time::Instant::now() + prune_every, prune_every);
        loop {
            let mut batch = Batch::default();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => self.handle(&buf[..len], peer, &mut batch),
                    Err(err) => tracing::debug!("radius socket: {err}"),
                },
                _ = prune.tick() => {
                    self.prune();
                    continue;
                }
                _ = silence.tick() => {
                    let mut history = self.history.lock().expect("history lock poisoned");
                    batch.changes = self.server.close_silent(unix_ms(), &mut history);
                }
            }
            // Whatever queued meanwhile rides on the same commit.
            while batch.answers.len() < BATCH {
                match self.socket.try_recv_from(&mut buf) {
                    Ok((len, peer)) => self.handle(&buf[..len], peer, &mut batch),
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
        }
    }

    /// Rebuilds the history from SQLite without the sessions past the
    /// retention. Everything applied so far is committed (this task is the
    /// only writer and commits before it gets here; while a failed commit
    /// left changes unwritten it waits), so SQLite holds all of it; the lock
    /// keeps readers on the old history until the swap.
    fn prune(&mut self) {
        if !self.unwritten.is_empty() {
            return;
        }
        let mut history = self.history.lock().expect("history lock poisoned");
        let before = history.len();
        match block_in_place(|| session_store::load_history(&self.db, self.retention_ms, unix_ms()))
        {
            Ok(pruned) => {
                *history = pruned;
                let left = before.saturating_sub(history.len());
                if left > 0 {
                    tracing::info!(
                        "history: {left} sessions stopped before the retention left memory \
                         (they stay in SQLite), {} kept",
                        history.len()
                    );
                }
                self.metrics.sessions_in_memory.set(history.len() as i64);
            }
            Err(err) => tracing::warn!("pruning the session history: {err}"),
        }
    }

    fn handle(&mut self, datagram: &[u8], peer: SocketAddr, batch: &mut Batch) {
        let received = Instant::now();
        let handled = {
            let mut history = self.history.lock().expect("history lock poisoned");
            self.server.handle(unix_ms(), peer, datagram, &mut history)
        };
        match handled {
            Handled::Discarded { reason } => self.metrics.count("unknown", reason),
            Handled::Pending => self.metrics.count("unknown", "duplicate"),
            Handled::Resend { answer } => {
                batch.resend.push((peer, answer, received));
                self.metrics.count("unknown", "duplicate");
            }
            Handled::Refused(refused) => self.refused(&refused),
            Handled::Accepted(accepted) => {
                if let Some((nas, cleared)) = &accepted.cleared {
                    tracing::info!(
                        "NAS {nas} is within {} again: {} requests refused meanwhile",
                        cleared.reason.key(),
                        cleared.refused
                    );
                }
                batch.changes.extend(accepted.changes);
                batch
                    .answers
                    .push((accepted.key, accepted.answer, received));
                self.metrics
                    .count(status_label(accepted.status), "accepted");
            }
        }
    }

    /// Counts a refusal; logs the first of an incident.
    fn refused(&self, refused: &Refused) {
        self.metrics
            .count(status_label(refused.status), "nas_bound");
        self.metrics
            .nas_refused(&refused.nas, refused.reason.as_str());
        if refused.first {
            tracing::warn!(
                "NAS {} is beyond {} ({}): its requests that would begin a session are refused, \
                 unrecorded and unanswered (it retransmits), until it is within again; counted \
                 in flowtally_radius_nas_refused_total",
                refused.nas,
                refused.reason.key(),
                refused.limit
            );
        }
    }

    /// Makes the batch's changes durable, with any a failed commit left
    /// unwritten, then sends its answers. On failure nothing is answered:
    /// the NAS retransmits, the retransmission is processed anew (the
    /// history already holds its effect, so it changes nothing), and its
    /// answer waits for a commit that writes what the history holds.
    async fn commit(&mut self, batch: Batch) {
        let mut changes = std::mem::take(&mut self.unwritten);
        changes.extend(batch.changes);
        if !changes.is_empty() {
            let written = block_in_place(|| {
                let _turn = self.gate.lock();
                session_store::write(&mut self.db, &changes)
            });
            if let Err(err) = written {
                let cause = sink::failure_cause(&self.db, &err);
                self.storage.failed(WRITER, cause);
                if self.outage.failed(unix_ms(), cause) {
                    tracing::error!(
                        "recording {} session changes failed ({cause}): no answer is sent \
                         until they are stored; retrying with each request and every {}s: \
                         {err}",
                        changes.len(),
                        SILENCE_CHECK.as_secs()
                    );
                }
                self.unwritten = changes;
                for (key, ..) in &batch.answers {
                    self.server.failed(key);
                }
                self.metrics.count("unknown", "store_failed");
                return;
            }
            self.storage.set_ok(WRITER, true);
            if let Some(incident) = self.outage.succeeded() {
                tracing::warn!(
                    "session changes are stored again after {} ({} failed commits, {}); \
                     answering",
                    humantime::format_duration(Duration::from_secs(
                        unix_ms().saturating_sub(incident.since_ms) / 1000
                    )),
                    incident.attempts,
                    incident.cause
                );
            }
        }
        let response = &self.metrics.response_seconds;
        for (key, answer, received) in batch.answers {
            if let Err(err) = self.socket.send_to(&answer, key.peer).await {
                tracing::debug!("radius answer to {}: {err}", key.peer);
            }
            response.observe(received.elapsed().as_secs_f64());
            self.server.answered(&key, answer);
        }
        for (peer, answer, received) in batch.resend {
            let _ = self.socket.send_to(&answer, peer).await;
            response.observe(received.elapsed().as_secs_f64());
        }
        let history = self.history.lock().expect("history lock poisoned");
        self.metrics
            .sessions_open
            .set(history.open_sessions() as i64);
        self.metrics.sessions_in_memory.set(history.len() as i64);
    }
}
