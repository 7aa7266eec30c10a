//! Duplicate detection (RFC 5080 §2.2.2): a request with the same source
//! address and port, identifier and authenticator within the window is a
//! retransmission. It is answered again (once the original is durable) but
//! never recorded twice.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

pub const WINDOW_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub peer: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// First time: process it.
    New,
    /// The original is not durable yet: its answer will go out then.
    Pending,
    /// Already recorded: send this answer again.
    Answered(&'a [u8]),
}

#[derive(Debug, Default)]
pub struct Dedup {
    entries: HashMap<Key, Option<Vec<u8>>>,
    /// Insertion order, for expiry.
    order: VecDeque<(u64, Key)>,
}

impl Dedup {
    /// Looks `key` up at `now_ms`, remembering it as pending when new.
    pub fn check(&mut self, key: Key, now_ms: u64) -> Seen<'_> {
        self.expire(now_ms);
        if self.entries.contains_key(&key) {
            return match &self.entries[&key] {
                Some(answer) => Seen::Answered(answer),
                None => Seen::Pending,
            };
        }
        self.entries.insert(key, None);
        self.order.push_back((now_ms, key));
        Seen::New
    }

    /// The request is durable and `answer` went out.
    pub fn answered(&mut self, key: &Key, answer: Vec<u8>) {
        if let Some(entry) = self.entries.get_mut(key) {
            *entry = Some(answer);
        }
    }

    /// Recording failed: a retransmission must be processed anew.
    pub fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, key)) = self.order.front() {
            if now_ms.saturating_sub(at) < WINDOW_MS {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, identifier: u8) -> Key {
        Key {
            peer: SocketAddr::from(([198, 18, 0, 1], port)),
            identifier,
            authenticator: [7; 16],
        }
    }

    #[test]
    fn a_retransmission_is_pending_then_answered_again_within_the_window() {
        let mut dedup = Dedup::default();
        assert_eq!(dedup.check(key(1000, 1), 0), Seen::New);
        assert_eq!(dedup.check(key(1000, 1), 10), Seen::Pending);
        dedup.answered(&key(1000, 1), vec![5, 1]);
        assert_eq!(dedup.check(key(1000, 1), 29_999), Seen::Answered(&[5, 1]));
        assert_eq!(dedup.check(key(1000, 1), 30_000), Seen::New, "window over");
    }

    #[test]
    fn another_port_identifier_or_authenticator_is_another_request() {
        let mut dedup = Dedup::default();
        assert_eq!(dedup.check(key(1000, 1), 0), Seen::New);
        assert_eq!(dedup.check(key(1001, 1), 0), Seen::New);
        assert_eq!(dedup.check(key(1000, 2), 0), Seen::New);
        let mut other = key(1000, 1);
        other.authenticator[0] = 8;
        assert_eq!(dedup.check(other, 0), Seen::New);
        assert_eq!(dedup.len(), 4);
    }

    #[test]
    fn a_forgotten_request_is_processed_anew() {
        let mut dedup = Dedup::default();
        dedup.check(key(1000, 1), 0);
        dedup.forget(&key(1000, 1));
        assert_eq!(dedup.check(key(1000, 1), 1), Seen::New);
    }
}
