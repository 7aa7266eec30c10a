//! Per-NAS bounds on the session history, so that one misbehaving NAS (a
//! Start flood, a fresh Acct-Session-Id with every update, Stops that never
//! come) cannot exhaust memory. Sans-IO: the server asks, before applying
//! a request that would begin a session, whether that NAS may have it.
//!
//! The rules:
//! - The NAS is the one the session history records (NAS-IP-Address, else
//!   NAS-IPv6-Address, else NAS-Identifier, else the source address).
//! - Only requests that would begin a session are judged; updates and
//!   Stops of known sessions always pass (a Stop is what brings a NAS
//!   back under its bound).
//! - Open sessions: a request that would leave the NAS with more than
//!   `max_open` open sessions is refused.
//! - Churn: new sessions (open or not: each one stays in memory for the
//!   history's retention) come from a token bucket per NAS refilled at
//!   `per_minute`, holding at most `max_open` (so a NAS that reboots can
//!   start all its subscribers again at once).
//! - A refused request is neither recorded nor answered (the NAS
//!   retransmits, and a retransmission is judged anew): an answer would
//!   tell the NAS that accounting we do not hold is safe.
//! - An incident is the run of refusals of one NAS for one bound, up to
//!   its next admitted new session: its first refusal and its end are
//!   reported once each, for the log; every refusal is counted.

use std::collections::HashMap;

use crate::sessions::NewSession;

/// Why a NAS's request was refused; the metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    OpenSessions,
    SessionChurn,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenSessions => "open_sessions",
            Self::SessionChurn => "session_churn",
        }
    }

    /// The configuration key that sets the bound.
    pub fn key(self) -> &'static str {
        match self {
            Self::OpenSessions => "radius.nas_max_open_sessions",
            Self::SessionChurn => "radius.nas_new_sessions_per_minute",
        }
    }
}

/// The verdict on one request that would begin a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It may go on; `cleared` ends the NAS's incident, if one was running.
    Admitted { cleared: Option<Cleared> },
    /// Not recorded, not answered. `first` opens an incident.
    Refused { reason: Reason, first: bool },
}

/// The end of an incident: how many requests it refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cleared {
    pub reason: Reason,
    pub refused: u64,
}

#[derive(Debug)]
pub struct NasBounds {
    max_open: usize,
    per_minute: u64,
    nas: HashMap<Box<str>, NasState>,
}

/// Tokens are counted in 1/60000 of a session: a NAS earns `per_minute`
/// of them each millisecond, a session costs [`SESSION`].
const SESSION: u64 = 60_000;

#[derive(Debug)]
struct NasState {
    tokens: u64,
    at_ms: u64,
    incident: Option<Cleared>,
}

impl NasBounds {
    pub fn new(max_open: usize, per_minute: u32) -> Self {
        Self {
            max_open,
            per_minute: u64::from(per_minute),
            nas: HashMap::new(),
        }
    }

    /// Judges a request of `nas` (with `open` sessions open now) that
    /// would begin `new` at `now_ms`; an admitted one is charged.
    pub fn admit(&mut self, nas: &str, new: NewSession, open: usize, now_ms: u64) -> Admission {
        let capacity = (self.max_open as u64).saturating_mul(SESSION);
        let state = match self.nas.get_mut(nas) {
            Some(state) => state,
            None => self.nas.entry(nas.into()).or_insert(NasState {
                tokens: capacity,
                at_ms: now_ms,
                incident: None,
            }),
        };
        let earned = now_ms
            .saturating_sub(state.at_ms)
            .saturating_mul(self.per_minute);
        state.tokens = state.tokens.saturating_add(earned).min(capacity);
        state.at_ms = state.at_ms.max(now_ms);
        let reason = if new.adds_open && open >= self.max_open {
            Some(Reason::OpenSessions)
        } else if state.tokens < SESSION {
            Some(Reason::SessionChurn)
        } else {
            None
        };
        match (reason, &mut state.incident) {
            (None, incident) => {
                state.tokens -= SESSION;
                Admission::Admitted {
                    cleared: incident.take(),
                }
            }
            (Some(reason), Some(incident)) if incident.reason == reason => {
                incident.refused += 1;
                Admission::Refused {
                    reason,
                    first: false,
                }
            }
            // A refusal for another bound starts an incident of its own.
            (Some(reason), incident) => {
                *incident = Some(Cleared { reason, refused: 1 });
                Admission::Refused {
                    reason,
                    first: true,
                }
            }
        }
    }

    /// The bound `reason` names.
    pub fn limit(&self, reason: Reason) -> u64 {
        match reason {
            Reason::OpenSessions => self.max_open as u64,
            Reason::SessionChurn => self.per_minute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENS: NewSession = NewSession { adds_open: true };
    const CLOSED: NewSession = NewSession { adds_open: false };

    fn refused(reason: Reason, first: bool) -> Admission {
        Admission::Refused { reason, first }
    }

    const ADMITTED: Admission = Admission::Admitted { cleared: None };

    #[test]
    fn a_nas_at_its_open_bound_is_refused_until_one_closes_in_one_incident() {
        // 60 000 a minute: one a millisecond, at most 2 at once.
        let mut bounds = NasBounds::new(2, 60_000);
        assert_eq!(bounds.admit("a", OPENS, 0, 0), ADMITTED);
        assert_eq!(bounds.admit("a", OPENS, 1, 0), ADMITTED);
        assert_eq!(
            bounds.admit("a", OPENS, 2, 0),
            refused(Reason::OpenSessions, true)
        );
        assert_eq!(
            bounds.admit("a", OPENS, 2, 1),
            refused(Reason::OpenSessions, false)
        );
        assert_eq!(bounds.admit("b", OPENS, 0, 1), ADMITTED, "per NAS");
        assert_eq!(
            bounds.admit("a", CLOSED, 2, 2),
            Admission::Admitted {
                cleared: Some(Cleared {
                    reason: Reason::OpenSessions,
                    refused: 2
                })
            },
            "a Stop without Start leaves none open"
        );
        assert_eq!(bounds.admit("a", OPENS, 1, 3), ADMITTED, "one closed");
        assert_eq!(
            bounds.admit("a", OPENS, 2, 4),
            refused(Reason::OpenSessions, true)
        );
    }

    #[test]
    fn new_sessions_come_at_the_rate_after_a_burst_of_the_open_bound() {
        // 60 a minute: one a second; at most 3 at once.
        let mut bounds = NasBounds::new(3, 60);
        for _ in 0..3 {
            assert_eq!(bounds.admit("a", CLOSED, 0, 0), ADMITTED);
        }
        assert_eq!(
            bounds.admit("a", CLOSED, 0, 999),
            refused(Reason::SessionChurn, true)
        );
        assert_eq!(
            bounds.admit("a", CLOSED, 0, 1000),
            Admission::Admitted {
                cleared: Some(Cleared {
                    reason: Reason::SessionChurn,
                    refused: 1
                })
            }
        );
        assert_eq!(
            bounds.admit("a", CLOSED, 0, 1500),
            refused(Reason::SessionChurn, true)
        );
        // A long pause refills only up to the burst.
        for _ in 0..3 {
            assert!(matches!(
                bounds.admit("a", CLOSED, 0, 3_600_000),
                Admission::Admitted { .. }
            ));
        }
        assert_eq!(
            bounds.admit("a", CLOSED, 0, 3_600_000),
            refused(Reason::SessionChurn, true)
        );
        assert_eq!(
            bounds.admit("a", OPENS, 3, 3_600_000),
            refused(Reason::OpenSessions, true),
            "another bound, another incident"
        );
        assert_eq!(bounds.limit(Reason::SessionChurn), 60);
    }
}
