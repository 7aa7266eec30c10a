//! Quota enforcement's I/O: after each flush, the rows it wrote go to the
//! quota core, whose crossings are logged and counted and whose actions
//! are recorded in `enforcement` (before anything is sent: a restart never
//! repeats one) and handed to the sender task. That task sends each
//! request to the NAS that owns the session, from a socket of its own,
//! retransmits the same datagram on timeout with doubling waits, and
//! records how it ended; after a NAK it may try anew (`nak_retries`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
};

use rusqlite::Connection;
use tokio::{
    net::UdpSocket,
    sync::{
        Semaphore,
        mpsc::{UnboundedReceiver, UnboundedSender},
    },
    task::block_in_place,
    time::{Instant, sleep, sleep_until, timeout_at},
};

use super::clock;
use crate::{
    config::NasConfig,
    metrics::QuotaMetrics,
    quota::{self, Action, Quotas},
    radius::coa::{self, Outcome as Answer, error_cause_name},
    sessions::History,
    sink::{
        WriteGate,
        quota_store::{self, Outcome},
    },
    usage::UsageRow,
};

/// Requests under way at once, each with a socket: a month's first flush
/// may find thousands of users over a quota.
const MAX_IN_FLIGHT: usize = 64;

/// A request to send, and its `enforcement` row (`None`: not recorded).
#[derive(Debug)]
pub struct Job {
    pub row: Option<i64>,
    pub action: Action,
}

/// The flush's side: the core, and where its actions go.
pub struct Enforcer {
    pub quotas: Quotas,
    pub jobs: UnboundedSender<Job>,
    pub metrics: QuotaMetrics,
}

impl Enforcer {
    /// Counts the rows a flush wrote, announces crossings and records and
    /// hands over the actions due at `now_ms`.
    pub fn flushed(
        &mut self,
        rows: &[UsageRow],
        now_ms: u64,
        history: &Mutex<History>,
        db: &Connection,
    ) {
        self.quotas.observe(rows);
        for crossing in self.quotas.crossings(now_ms) {
            self.metrics.crossed(&crossing);
            let share = 100.0 * crossing.threshold;
            if crossing.threshold >= 1.0 {
                tracing::warn!(
                    "quota {}: {} is over it ({} of {} bytes this period)",
                    crossing.quota,
                    crossing.user,
                    crossing.bytes,
                    crossing.limit
                );
            } else {
                tracing::info!(
                    "quota {}: {} has used {share}% ({} of {} bytes this period)",
                    crossing.quota,
                    crossing.user,
                    crossing.bytes,
                    crossing.limit
                );
            }
        }
        let over = self.quotas.over(now_ms);
        self.metrics.users_over.set(over.len() as i64);
        let to_restore = self.quotas.to_restore(now_ms);
        if over.is_empty() && to_restore.is_empty() {
            return;
        }
        let sessions = history
            .lock()
            .expect("history lock poisoned")
            .open_sessions_of(|user| over.contains(user) || to_restore.contains(user));
        for action in self.quotas.actions(now_ms, &sessions) {
            self.metrics.decided(&action.quota, action.name());
            let row = match quota_store::insert(db, &action, 1, now_ms) {
                Ok(row) => Some(row),
                Err(err) => {
                    // Sent unrecorded: a restart may send it again, which a
                    // NAS answers with a NAK (no such session) at worst.
                    tracing::error!(
                        "recording the {} of {}'s session {} in `enforcement`: {err}",
                        action.name(),
                        action.session.user_name,
                        action.session.session_id
                    );
                    None
                }
            };
            if self.jobs.send(Job { row, action }).is_err() {
                tracing::error!("the enforcement task is gone; request not sent");
            }
        }
    }
}

/// The sender task: one request at a time per job, all jobs at once.
pub async fn serve(
    nas: Vec<NasConfig>,
    db: Connection,
    gate: WriteGate,
    mut jobs: UnboundedReceiver<Job>,
    metrics: QuotaMetrics,
) {
    let shared = Arc::new(Shared {
        nas,
        db: Mutex::new(db),
        gate,
        metrics,
        identifier: AtomicU8::new(0),
        in_flight: Semaphore::new(MAX_IN_FLIGHT),
    });
    while let Some(job) = jobs.recv().await {
        tokio::spawn(Arc::clone(&shared).enforce(job));
    }
}

struct Shared {
    nas: Vec<NasConfig>,
    db: Mutex<Connection>,
    /// Taken for each write, as every writer of the database does.
    gate: WriteGate,
    metrics: QuotaMetrics,
    /// Each request has a socket of its own; identifiers only have to
    /// differ between a request and its successor after a NAK.
    identifier: AtomicU8,
    in_flight: Semaphore,
}

impl Shared {
    async fn enforce(self: Arc<Self>, mut job: Job) {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return;
        };
        let action = &job.action;
        let kind = action.name();
        let session = &action.session;
        let Some(nas) = quota::owner(&self.nas, &session.nas) else {
            tracing::warn!(
                "quota {}: no radius.nas entry for NAS {:?} of {}'s session {}: nothing sent",
                action.quota,
                session.nas,
                session.user_name,
                session.session_id
            );
            self.metrics.request(kind, "no_nas");
            self.finish(job.row, outcome(None, 0, "no_nas", None));
            return;
        };
        for attempt in 1..=1 + nas.nak_retries {
            if attempt > 1 {
                sleep(nas.timeout.0).await;
                let inserted = {
                    let db = self.db.lock().expect("db lock poisoned");
                    block_in_place(|| {
                        let _turn = self.gate.lock();
                        quota_store::insert(&db, action, attempt, clock::unix_ms())
                    })
                };
                job.row = inserted
                    .inspect_err(|err| {
                        tracing::error!("recording a request in `enforcement`: {err}")
                    })
                    .ok();
            }
            let done = self.exchange(nas, action).await;
            self.metrics.request(kind, done.result);
            let cause = done
                .error_cause
                .map(|c| format!(", Error-Cause {c} ({})", error_cause_name(c)))
                .unwrap_or_default();
            let what = format!(
                "quota {}: {kind} of {}'s session {} at {}",
                action.quota,
                session.user_name,
                session.session_id,
                done.sent_to.as_deref().unwrap_or("?")
            );
            match done.result {
                "ack" => tracing::info!("{what}: acknowledged"),
                "timeout" => tracing::warn!(
                    "{what}: no valid answer after {} transmissions (NAS down, or another secret)",
                    done.transmissions
                ),
                result => tracing::warn!("{what}: {result}{cause}"),
            }
            let nak = done.result == "nak";
            self.finish(job.row, done);
            if !nak {
                return;
            }
        }
    }

    /// One request: sent, retransmitted on timeout, until answered.
    async fn exchange(&self, nas: &NasConfig, action: &Action) -> Outcome {
        let target = SocketAddr::new(nas.coa_address.unwrap_or(nas.address), nas.coa_port);
        let sent_to = Some(target.to_string());
        let identifier = self.identifier.fetch_add(1, Ordering::Relaxed);
        let request = coa::Request {
            kind: action.kind,
            user_name: action.session.user_name.clone(),
            session_id: action.session.session_id.clone(),
            nas_ip: action.session.nas.parse().ok(),
            framed_ip: action.session.framed_ip,
            framed_prefix: action.session.framed_prefix,
            event_timestamp: (clock::unix_ms() / 1000) as u32,
            changes: action.changes.clone(),
        };
        // Loading the configuration gave every NAS its secret.
        let secret = nas
            .secret
            .as_ref()
            .map_or(&b""[..], |s| s.expose().as_bytes());
        let sent = match request.encode(identifier, secret) {
            Ok(sent) => sent,
            Err(err) => {
                tracing::error!("encoding the request: {err}");
                return outcome(sent_to, 0, "error", None);
            }
        };
        let socket = match connect(target).await {
            Ok(socket) => socket,
            Err(err) => {
                tracing::error!("socket to {target}: {err}");
                return outcome(sent_to, 0, "error", None);
            }
        };
        let mut buf = [0; crate::radius::codec::MAX_LEN];
        let mut transmissions = 0;
        for wait in quota::waits(nas.timeout.0, nas.retries) {
            if transmissions > 0 {
                self.metrics.retransmissions.inc();
            }
            if let Err(err) = socket.send(&sent.bytes).await {
                tracing::debug!("sending to {target}: {err}");
            }
            transmissions += 1;
            let deadline = Instant::now() + wait;
            loop {
                let received = match timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(received) => received,
                };
                let n = match received {
                    Ok(n) => n,
                    // ICMP port unreachable, reported on a connected socket:
                    // nobody there yet; wait out this try.
                    Err(err) => {
                        tracing::debug!("from {target}: {err}");
                        sleep_until(deadline).await;
                        break;
                    }
                };
                match coa::read_response(
                    &buf[..n],
                    action.kind,
                    identifier,
                    &sent.authenticator,
                    secret,
                ) {
                    Ok(Answer::Ack) => return outcome(sent_to, transmissions, "ack", None),
                    Ok(Answer::Nak { error_cause }) => {
                        return outcome(sent_to, transmissions, "nak", error_cause);
                    }
                    Err(err) => {
                        self.metrics.bad_response(err.as_str());
                        tracing::warn!(
                            "a datagram from {target} does not answer the request ({err}): \
                             ignored"
                        );
                    }
                }
            }
        }
        outcome(sent_to, transmissions, "timeout", None)
    }

    fn finish(&self, row: Option<i64>, outcome: Outcome) {
        let Some(row) = row else {
            return;
        };
        let db = self.db.lock().expect("db lock poisoned");
        let finished = block_in_place(|| {
            let _turn = self.gate.lock();
            quota_store::finish(&db, row, &outcome)
        });
        if let Err(err) = finished {
            tracing::error!("recording the outcome in `enforcement`: {err}");
        }
    }
}

fn outcome(
    sent_to: Option<String>,
    transmissions: u32,
    result: &'static str,
    error_cause: Option<u32>,
) -> Outcome {
    Outcome {
        sent_to,
        transmissions,
        result,
        error_cause,
        done_ms: clock::unix_ms(),
    }
}

/// A socket of the target's family on any port, connected to it: only its
/// datagrams come in.
async fn connect(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await?;
    socket.connect(target).await?;
    Ok(socket)
}
