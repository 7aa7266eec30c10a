//! The accounting server's decisions, sans-IO: `(now, peer, datagram)` in,
//! what to make durable and what to answer out. The daemon's RADIUS socket
//! loop (`daemon/radius_socket.rs`) owns the socket, SQLite and the clock,
//! and tells the server which answers went out.
//!
//! The rules, in the order they are applied:
//! 1. A datagram from an address with no secret, one that does not decode,
//!    or one that is not an Accounting-Request is discarded and counted.
//! 2. A bad Request Authenticator is discarded silently (RFC 5080 §2.2.1:
//!    no hint for a guesser).
//! 3. Only then the per-client rate limit, so forged requests cannot spend
//!    a NAS's budget.
//! 4. A retransmission (same source, identifier and authenticator within
//!    the window, RFC 5080 §2.2.2) gets the original's answer again once
//!    that is durable, and is never recorded twice.
//! 5. A request that would begin a session passes its NAS's bounds
//!    (`nas_bounds`: open sessions, new sessions per minute) or is refused:
//!    not recorded, not answered, and forgotten, so its retransmission is
//!    judged anew.
//! 6. A new request is applied to the session history; its changes must be
//!    durable before its answer goes out (RFC 2866 §2). If storing fails,
//!    the request is forgotten, so the NAS's retransmission is processed
//!    anew.

use std::net::SocketAddr;

use super::{
    AccountingRequest, Code, Packet, StatusType,
    clients::Clients,
    dedup::{self, Dedup, Seen},
    limiter::Limiter,
    nas_bounds::{Admission, Cleared, NasBounds, Reason},
};
use crate::sessions::{Change, Event, EventKind, History};

pub struct Server {
    clients: Clients,
    limiter: Limiter,
    bounds: NasBounds,
    dedup: Dedup,
    /// Sessions silent for this many interim intervals are closed.
    silence_multiple: u32,
    /// The interim interval of sessions whose NAS announced none.
    default_interim_s: u32,
}

/// What became of one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Not answered. `reason` is the metric's `result` label.
    Discarded { reason: &'static str },
    /// A retransmission of a request whose answer already went out: send it
    /// again.
    Resend { answer: Vec<u8> },
    /// A retransmission of a request not yet durable: its answer goes out
    /// when it is.
    Pending,
    /// A new request: make `changes` durable, then send `answer` and call
    /// [`Server::answered`] (or [`Server::failed`] when storing failed).
    Accepted(Accepted),
    /// Beyond its NAS's bounds: not recorded, not answered.
    Refused(Refused),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusType,
    pub nas: String,
    pub reason: Reason,
    /// The bound, for the log.
    pub limit: u64,
    /// The first refusal of an incident: log it.
    pub first: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub key: dedup::Key,
    pub status: StatusType,
    pub changes: Vec<Change>,
    pub answer: Vec<u8>,
    /// Its NAS's refusals that this request ends, with the NAS.
    pub cleared: Option<(String, Cleared)>,
}

impl Server {
    pub fn new(
        clients: Clients,
        limiter: Limiter,
        silence_multiple: u32,
        default_interim_s: u32,
    ) -> Self {
        Self {
            clients,
            limiter,
            bounds: NasBounds::new(usize::MAX, u32::MAX),
            dedup: Dedup::default(),
            silence_multiple,
            default_interim_s,
        }
    }

    /// Bounds every NAS's sessions (unbounded without).
    pub fn with_nas_bounds(mut self, bounds: NasBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Judges one datagram from `peer` received at `now_ms`, applying what
    /// it says to `history`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        datagram: &[u8],
        history: &mut History,
    ) -> Handled {
        let discarded = |reason| Handled::Discarded { reason };
        let Some(secret) = self.clients.secret(peer.ip()) else {
            return discarded("unknown_client");
        };
        let Ok(packet) = Packet::decode(datagram) else {
            return discarded("malformed");
        };
        if packet.code != Code::AccountingRequest {
            return discarded("unsupported_code");
        }
        if packet.verify_accounting_request(secret).is_err() {
            return discarded("bad_authenticator");
        }
        if !self.limiter.allow(peer.ip(), now_ms) {
            return discarded("rate_limited");
        }
        let key = dedup::Key {
            peer,
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        };
        match self.dedup.check(key, now_ms) {
            Seen::New => {}
            Seen::Pending => return Handled::Pending,
            Seen::Answered(answer) => {
                return Handled::Resend {
                    answer: answer.to_vec(),
                };
            }
        }
        let Ok(request) = AccountingRequest::from_packet(&packet) else {
            self.dedup.forget(&key);
            return discarded("malformed");
        };
        let event = event(&request, peer, now_ms);
        let mut cleared = None;
        if let Some(event) = &event
            && let Some(new) = history.would_begin(event)
        {
            let open = history.open_sessions_on(&event.nas);
            match self.bounds.admit(&event.nas, new, open, now_ms) {
                Admission::Admitted { cleared: None } => {}
                Admission::Admitted {
                    cleared: Some(incident),
                } => cleared = Some((event.nas.clone(), incident)),
                Admission::Refused { reason, first } => {
                    self.dedup.forget(&key);
                    return Handled::Refused(Refused {
                        status: request.status,
                        nas: event.nas.clone(),
                        reason,
                        limit: self.bounds.limit(reason),
                        first,
                    });
                }
            }
        }
        let changes = event.map(|event| history.apply(&event)).unwrap_or_default();
        Handled::Accepted(Accepted {
            key,
            status: request.status,
            changes,
            answer: packet.accounting_response(secret),
            cleared,
        })
    }

    /// The request's changes are durable and `answer` went out: a
    /// retransmission gets the same answer.
    pub fn answered(&mut self, key: &dedup::Key, answer: Vec<u8>) {
        self.dedup.answered(key, answer);
    }

    /// Storing the request's changes failed and no answer went out: its
    /// retransmission is processed anew.
    pub fn failed(&mut self, key: &dedup::Key) {
        self.dedup.forget(key);
    }

    /// Closes the sessions of `history` silent for too long at `now_ms`.
    pub fn close_silent(&self, now_ms: u64, history: &mut History) -> Vec<Change> {
        history.close_silent(now_ms, self.silence_multiple, self.default_interim_s)
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

/// Metric label of a status type.
pub fn status_label(status: StatusType) -> &'static str {
    match status {
        StatusType::Start => "start",
        StatusType::Stop => "stop",
        StatusType::InterimUpdate => "interim_update",
        StatusType::AccountingOn => "accounting_on",
        StatusType::AccountingOff => "accounting_off",
        StatusType::Other(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        config::{RadiusClient, RadiusConfig, Secret},
        radius::accounting::tests::full_request,
    };

    const SECRET: &[u8] = b"testing123";
    const T0: u64 = 1_700_000_000_000;

    fn nas() -> SocketAddr {
        "198.18.0.1:40000".parse().unwrap()
    }

    /// Trusts `nas()` only, 10 requests per second, interim 60 s by default.
    fn server() -> Server {
        let config = RadiusConfig {
            clients: vec![RadiusClient {
                address: nas().ip().into(),
                secret: Some(Secret::new(String::from_utf8(SECRET.to_vec()).unwrap())),
                secret_file: None,
                secret_env: None,
            }],
            ..RadiusConfig::default()
        };
        Server::new(Clients::new(&config), Limiter::new(10), 3, 60)
    }

    fn start(session: &str, identifier: u8) -> Vec<u8> {
        let request = AccountingRequest {
            status: StatusType::Start,
            user_name: Some("alice".into()),
            session_id: Some(session.into()),
            framed_ip: Some(Ipv4Addr::new(100, 64, 0, 7)),
            ..AccountingRequest::new(StatusType::Start)
        };
        request.encode(identifier, SECRET).unwrap()
    }

    fn accepted(handled: Handled) -> Accepted {
        match handled {
            Handled::Accepted(accepted) => accepted,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn a_new_request_changes_the_history_and_is_answered_once_durable() {
        let (mut server, mut history) = (server(), History::new());
        let a = accepted(server.handle(T0, nas(), &start("s1", 1), &mut history));
        assert_eq!(a.status, StatusType::Start);
        assert!(!a.changes.is_empty(), "a Start records a session");
        assert_eq!(history.open_sessions(), 1);
        let answer = Packet::decode(&a.answer).unwrap();
        assert_eq!(answer.code, Code::AccountingResponse);
        assert_eq!(answer.identifier, 1);
    }

    #[test]
    fn a_retransmission_waits_for_the_original_then_gets_its_answer_and_records_nothing() {
        let (mut server, mut history) = (server(), History::new());
        let datagram = start("s1", 1);
        let a = accepted(server.handle(T0, nas(), &datagram, &mut history));
        assert_eq!(
            server.handle(T0 + 1, nas(), &datagram, &mut history),
            Handled::Pending
        );
        server.answered(&a.key, a.answer.clone());
        assert_eq!(
            server.handle(T0 + 2_000, nas(), &datagram, &mut history),
            Handled::Resend { answer: a.answer }
        );
        assert_eq!(history.len(), 1);
    }

    #[test]
    fn after_a_failed_store_the_retransmission_is_processed_anew() {
        let (mut server, mut history) = (server(), History::new());
        let datagram = start("s1", 1);
        let a = accepted(server.handle(T0, nas(), &datagram, &mut history));
        server.failed(&a.key);
        let again = accepted(server.handle(T0 + 3_000, nas(), &datagram, &mut history));
        assert_eq!(again.key, a.key);
    }

    #[test]
    fn the_same_identifier_with_another_authenticator_is_a_new_request() {
        let (mut server, mut history) = (server(), History::new());
        let a = accepted(server.handle(T0, nas(), &start("s1", 7), &mut history));
        server.answered(&a.key, a.answer);
        accepted(server.handle(T0 + 1, nas(), &start("s2", 7), &mut history));
        assert_eq!(history.open_sessions(), 2);
    }

    #[test]
    fn untrusted_garbled_forged_and_other_packets_are_discarded_by_reason() {
        let (mut server, mut history) = (server(), History::new());
        let stranger: SocketAddr = "198.18.9.9:1813".parse().unwrap();
        let mut forged = start("s1", 1);
        forged[4] ^= 1;
        let request = full_request();
        let mut access_request = request.to_packet(1).unwrap();
        access_request.code = Code::AccessRequest;
        let cases = [
            (stranger, start("s1", 1), "unknown_client"),
            (nas(), vec![4, 1, 0], "malformed"),
            (nas(), access_request.encode(), "unsupported_code"),
            (nas(), forged, "bad_authenticator"),
        ];
        for (peer, datagram, reason) in cases {
            assert_eq!(
                server.handle(T0, peer, &datagram, &mut history),
                Handled::Discarded { reason },
                "{reason}"
            );
        }
        assert!(history.is_empty(), "nothing discarded reached the history");
    }

    #[test]
    fn a_flooding_client_is_limited_after_its_burst_and_refilled_in_time() {
        let (mut server, mut history) = (server(), History::new());
        // Burst of twice the rate, then refused until a second passes.
        for n in 0..20 {
            accepted(server.handle(T0, nas(), &start(&format!("s{n}"), n), &mut history));
        }
        assert_eq!(
            server.handle(T0, nas(), &start("s20", 20), &mut history),
            Handled::Discarded {
                reason: "rate_limited"
            }
        );
        accepted(server.handle(T0 + 1_000, nas(), &start("s21", 21), &mut history));
    }

    #[test]
    fn sessions_silent_for_the_multiple_of_their_interval_are_closed() {
        let (mut server, mut history) = (server(), History::new());
        accepted(server.handle(T0, nas(), &start("s1", 1), &mut history));
        assert!(server.close_silent(T0 + 179_000, &mut history).is_empty());
        assert!(!server.close_silent(T0 + 181_000, &mut history).is_empty());
        assert_eq!(history.open_sessions(), 0);
    }

    #[test]
    fn events_take_the_nas_time_else_arrival_minus_the_reported_delay() {
        let peer = nas();
        let mut request = full_request();
        let stamped = event(&request, peer, T0).unwrap();
        assert_eq!(stamped.time_ms, 1_700_000_000_000);
        assert_eq!(stamped.nas, "198.18.0.1", "NAS-IP-Address first");
        request.event_timestamp = None;
        request.delay_time = Some(4);
        assert_eq!(event(&request, peer, T0).unwrap().time_ms, T0 - 4_000);
        request.status = StatusType::Other(15);
        assert_eq!(event(&request, peer, T0), None);
    }

    #[test]
    fn beyond_its_bounds_a_nas_is_refused_unanswered_and_its_retransmission_judged_anew() {
        let mut server = server().with_nas_bounds(NasBounds::new(1, 60_000));
        let mut history = History::new();
        accepted(server.handle(T0, nas(), &start("s1", 1), &mut history));
        let second = start("s2", 2);
        let refusal = server.handle(T0 + 1, nas(), &second, &mut history);
        assert_eq!(
            refusal,
            Handled::Refused(Refused {
                status: StatusType::Start,
                nas: "198.18.0.1".into(),
                reason: Reason::OpenSessions,
                limit: 1,
                first: true,
            })
        );
        assert_eq!(history.open_sessions(), 1, "nothing recorded");
        let Handled::Refused(again) = server.handle(T0 + 2, nas(), &second, &mut history) else {
            panic!("the retransmission is refused too")
        };
        assert!(!again.first, "one incident");
        let stop = AccountingRequest {
            session_id: Some("s1".into()),
            ..AccountingRequest::new(StatusType::Stop)
        };
        let stop = accepted(server.handle(
            T0 + 3,
            nas(),
            &stop.encode(3, SECRET).unwrap(),
            &mut history,
        ));
        assert_eq!(
            stop.cleared, None,
            "a Stop of a known session is not judged"
        );
        let admitted = accepted(server.handle(T0 + 4, nas(), &second, &mut history));
        assert_eq!(
            admitted.cleared,
            Some((
                "198.18.0.1".to_owned(),
                Cleared {
                    reason: Reason::OpenSessions,
                    refused: 2
                }
            ))
        );
        assert_eq!(history.open_sessions(), 1);
    }
}
