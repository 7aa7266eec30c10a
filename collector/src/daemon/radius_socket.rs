//! The RADIUS accounting server: datagrams in, the session history updated
//! and made durable in SQLite, and only then the Accounting-Response out
//! (RFC 2866 §2). Requests that queue up while one transaction commits are
//! committed together in the next (group commit), so durability costs one
//! fsync per batch, not per request.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::Connection;
use tokio::{net::UdpSocket, task::block_in_place};

use crate::radius::{
    AccountingRequest, Code, Packet, StatusType,
    clients::Clients,
    dedup::{self, Dedup, Seen},
    limiter::Limiter,
};
use crate::{
    daemon::clock::unix_ms,
    metrics::RadiusMetrics,
    sessions::{Change, Event, EventKind, History},
    sink::session_store,
};

/// RADIUS packets are at most 4096 bytes (RFC 2865 §3).
const MAX_PACKET: usize = 4096;
/// Requests committed together at most.
const BATCH: usize = 256;
/// How often silent sessions are looked for.
const SILENCE_CHECK: Duration = Duration::from_secs(10);
/// How often sessions past the retention leave memory, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Server {
    pub socket: UdpSocket,
    pub clients: Clients,
    pub history: Arc<Mutex<History>>,
    /// A connection of its own, with `synchronous = FULL`: a commit is on
    /// disk before the answer leaves.
    pub db: Connection,
    pub metrics: RadiusMetrics,
    pub limiter: Limiter,
    /// Sessions silent for this many interim intervals are closed.
    pub silence_multiple: u32,
    /// Sessions stopped longer ago leave memory (not SQLite).
    pub retention_ms: u64,
    pub default_interim_s: u32,
    pub dedup: Dedup,
}

/// One batch: what to make durable, then what to send.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    answers: Vec<(dedup::Key, Vec<u8>)>,
    /// Answers to retransmissions of requests already durable.
    resend: Vec<(SocketAddr, Vec<u8>)>,
}

impl Server {
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
                    batch.changes = history.close_silent(
                        unix_ms(),
                        self.silence_multiple,
                        self.default_interim_s,
                    );
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
    /// only writer and commits before it gets here), so SQLite holds all of
    /// it; the lock keeps readers on the old history until the swap.
    fn prune(&mut self) {
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
        let now_ms = unix_ms();
        let Some(secret) = self.clients.secret(peer.ip()) else {
            return self.metrics.count("unknown", "unknown_client");
        };
        let packet = match Packet::decode(datagram) {
            Ok(packet) => packet,
            Err(_) => return self.metrics.count("unknown", "malformed"),
        };
        if packet.code != Code::AccountingRequest {
            return self.metrics.count("unknown", "unsupported_code");
        }
        // Silently discarded, as RFC 5080 §2.2.1 asks: no hint for a guesser.
        if packet.verify_accounting_request(secret).is_err() {
            return self.metrics.count("unknown", "bad_authenticator");
        }
        // After authentication, so forged requests cannot spend a NAS's budget.
        if !self.limiter.allow(peer.ip(), now_ms) {
            return self.metrics.count("unknown", "rate_limited");
        }
        let key = dedup::Key {
            peer,
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        };
        match self.dedup.check(key, now_ms) {
            Seen::New => {}
            Seen::Pending => return self.metrics.count("unknown", "duplicate"),
            Seen::Answered(answer) => {
                batch.resend.push((peer, answer.to_vec()));
                return self.metrics.count("unknown", "duplicate");
            }
        }
        let request = match AccountingRequest::from_packet(&packet) {
            Ok(request) => request,
            Err(_) => {
                self.dedup.forget(&key);
                return self.metrics.count("unknown", "malformed");
            }
        };
        if let Some(event) = event(&request, peer, now_ms) {
            let mut history = self.history.lock().expect("history lock poisoned");
            batch.changes.extend(history.apply(&event));
        }
        batch
            .answers
            .push((key, packet.accounting_response(secret)));
        self.metrics.count(status_label(request.status), "accepted");
    }

    async fn commit(&mut self, batch: Batch) {
        if !batch.changes.is_empty()
            && let Err(err) = block_in_place(|| session_store::write(&mut self.db, &batch.changes))
        {
            // No answer: the NAS retransmits, and the retransmission is
            // processed anew.
            tracing::error!(
                "recording {} session changes failed: {err}",
                batch.changes.len()
            );
            for (key, _) in &batch.answers {
                self.dedup.forget(key);
            }
            self.metrics.count("unknown", "store_failed");
            return;
        }
        for (key, answer) in batch.answers {
            if let Err(err) = self.socket.send_to(&answer, key.peer).await {
                tracing::debug!("radius answer to {}: {err}", key.peer);
            }
            self.dedup.answered(&key, answer);
        }
        for (peer, answer) in batch.resend {
            let _ = self.socket.send_to(&answer, peer).await;
        }
        let history = self.history.lock().expect("history lock poisoned");
        self.metrics
            .sessions_open
            .set(history.open_sessions() as i64);
        self.metrics.sessions_in_memory.set(history.len() as i64);
    }
}

/// The session event an accounting request describes; `None` for status
/// types that say nothing about sessions (answered all the same).
pub fn event(request: &AccountingRequest, peer: SocketAddr, now_ms: u64) -> Option<Event> {
    let kind = match request.status {
        StatusType::Start => EventKind::Start,
        StatusType::Stop => EventKind::Stop,
        StatusType::InterimUpdate => EventKind::InterimUpdate,
        StatusType::AccountingOn => EventKind::AccountingOn,
        StatusType::AccountingOff => EventKind::AccountingOff,
        StatusType::Other(_) => return None,
    };
    // Event-Timestamp when the NAS sent one, else arrival minus the delay
    // the NAS reports (RFC 2866 §5.2).
    let time_ms = match request.event_timestamp {
        Some(secs) => u64::from(secs) * 1000,
        None => now_ms.saturating_sub(u64::from(request.delay_time.unwrap_or(0)) * 1000),
    };
    let nas = request
        .nas_ip
        .map(|ip| ip.to_string())
        .or_else(|| request.nas_ipv6.map(|ip| ip.to_string()))
        .or_else(|| request.nas_identifier.clone())
        .unwrap_or_else(|| peer.ip().to_canonical().to_string());
    Some(Event {
        kind,
        nas,
        session_id: request.session_id.clone().unwrap_or_default(),
        user_name: request.user_name.clone(),
        framed_ip: request.framed_ip,
        framed_ipv6: request.framed_ipv6_address,
        framed_prefixes: request
            .framed_ipv6_prefix
            .into_iter()
            .chain(request.delegated_ipv6_prefix)
            .collect(),
        time_ms,
        session_time_s: request.session_time,
        interim_interval_s: request.interim_interval,
        input_octets: request.input_octets,
        output_octets: request.output_octets,
        nas_port_id: request.nas_port_id.clone(),
        calling_station_id: request.calling_station_id.clone(),
        class: request.class.first().cloned(),
        terminate_cause: request.terminate_cause,
    })
}

fn status_label(status: StatusType) -> &'static str {
    match status {
        StatusType::Start => "start",
        StatusType::Stop => "stop",
        StatusType::InterimUpdate => "interim_update",
        StatusType::AccountingOn => "accounting_on",
        StatusType::AccountingOff => "accounting_off",
        StatusType::Other(_) => "other",
    }
}
