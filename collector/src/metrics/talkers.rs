//! The top talkers of the latest flushes, for `/api/v1/top`: per flush,
//! the bytes of its [`KEEP_PER_FLUSH`] biggest users and subscriber
//! addresses (up and down), kept for [`MAX_WINDOW_MS`]. A window's ranking
//! sums the flushes written within it. Memory stays bounded at ISP scale
//! (a 5 s flush interval keeps 180 flushes of at most 2 × 200 entries);
//! the price is that a user outside a flush's top 200 misses that flush,
//! which the answer admits (`exact`).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use flowtally_common::agg::Direction;

use crate::usage::UsageRow;

pub const KEEP_PER_FLUSH: usize = 200;
/// 15 minutes.
pub const MAX_WINDOW_MS: u64 = 15 * 60_000;

/// Bytes up and down.
pub type UpDown = [u64; 2];

/// What to rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TalkerKey {
    User,
    Ip,
}

/// One ranked talker: a user name or a subscriber address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talker {
    pub name: String,
    pub bytes: UpDown,
}

/// A window's ranking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranking {
    pub talkers: Vec<Talker>,
    /// Flushes summed, and when the oldest of them was written.
    pub flushes: usize,
    pub since_ms: Option<u64>,
    /// False when some flush had more talkers than it kept.
    pub exact: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Talkers {
    flushes: Arc<Mutex<VecDeque<Flush>>>,
}

#[derive(Debug)]
struct Flush {
    at_ms: u64,
    users: Top<String>,
    ips: Top<IpAddr>,
}

#[derive(Debug)]
struct Top<K> {
    kept: Vec<(K, UpDown)>,
    /// Talkers the flush had beyond those kept.
    left_out: usize,
}

impl Talkers {
    /// The attributed and unattributed rows of a flush written at `now_ms`.
    pub fn observe(&self, rows: &[UsageRow], now_ms: u64) {
        let mut users: HashMap<String, UpDown> = HashMap::new();
        let mut ips: HashMap<IpAddr, UpDown> = HashMap::new();
        for row in rows {
            let i = match row.direction {
                Direction::Up => 0,
                Direction::Down => 1,
                Direction::Transit => continue,
            };
            if let Some(user) = &row.user_name {
                // Looked up before cloning: most rows add to a known user.
                match users.get_mut(user) {
                    Some(bytes) => bytes[i] += row.bytes,
                    None => {
                        let mut bytes = [0; 2];
                        bytes[i] = row.bytes;
                        users.insert(user.clone(), bytes);
                    }
                }
            }
            ips.entry(row.subscriber_ip).or_default()[i] += row.bytes;
        }
        let mut flushes = self.flushes.lock().expect("talkers lock poisoned");
        while flushes
            .front()
            .is_some_and(|f| f.at_ms + MAX_WINDOW_MS < now_ms)
        {
            flushes.pop_front();
        }
        flushes.push_back(Flush {
            at_ms: now_ms,
            users: Top::of(users),
            ips: Top::of(ips),
        });
    }

    /// The `limit` biggest talkers of the flushes written in the `window_ms`
    /// up to `now_ms` (at most [`MAX_WINDOW_MS`]), biggest first.
    pub fn top(&self, key: TalkerKey, window_ms: u64, now_ms: u64, limit: usize) -> Ranking {
        let flushes = self.flushes.lock().expect("talkers lock poisoned");
        let since = now_ms.saturating_sub(window_ms.min(MAX_WINDOW_MS));
        let recent: Vec<&Flush> = flushes.iter().filter(|f| f.at_ms >= since).collect();
        let (talkers, exact) = match key {
            TalkerKey::User => rank(recent.iter().map(|f| &f.users), limit, String::clone),
            TalkerKey::Ip => rank(recent.iter().map(|f| &f.ips), limit, IpAddr::to_string),
        };
        Ranking {
            talkers,
            flushes: recent.len(),
            since_ms: recent.first().map(|f| f.at_ms),
            exact,
        }
    }
}

impl<K: Hash + Eq + Ord> Top<K> {
    fn of(all: HashMap<K, UpDown>) -> Self {
        let mut ranked: Vec<(K, UpDown)> = all.into_iter().collect();
        let left_out = ranked.len().saturating_sub(KEEP_PER_FLUSH);
        if left_out > 0 {
            ranked.select_nth_unstable_by(KEEP_PER_FLUSH - 1, by_bytes);
            ranked.truncate(KEEP_PER_FLUSH);
        }
        Self {
            kept: ranked,
            left_out,
        }
    }
}

/// Biggest first; equal totals by name, so that rankings are stable.
fn by_bytes<K: Ord>(a: &(K, UpDown), b: &(K, UpDown)) -> std::cmp::Ordering {
    (b.1[0] + b.1[1])
        .cmp(&(a.1[0] + a.1[1]))
        .then_with(|| a.0.cmp(&b.0))
}

fn rank<'a, K: Hash + Eq + Ord + Clone + 'a>(
    tops: impl Iterator<Item = &'a Top<K>>,
    limit: usize,
    name: impl Fn(&K) -> String,
) -> (Vec<Talker>, bool) {
    let mut sums: HashMap<&K, UpDown> = HashMap::new();
    let mut exact = true;
    for top in tops {
        exact &= top.left_out == 0;
        for (key, bytes) in &top.kept {
            let sum = sums.entry(key).or_default();
            sum[0] += bytes[0];
            sum[1] += bytes[1];
        }
    }
    let mut ranked: Vec<(K, UpDown)> = sums.into_iter().map(|(k, b)| (k.clone(), b)).collect();
    ranked.sort_unstable_by(by_bytes);
    ranked.truncate(limit);
    let talkers = ranked
        .into_iter()
        .map(|(key, bytes)| Talker {
            name: name(&key),
            bytes,
        })
        .collect();
    (talkers, exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: Option<&str>, ip: &str, direction: Direction, bytes: u64) -> UsageRow {
        UsageRow {
            user_name: user.map(str::to_owned),
            ..UsageRow::bare(0, ip.parse().unwrap(), direction, bytes)
        }
    }

    fn names(ranking: &Ranking) -> Vec<(&str, UpDown)> {
        ranking
            .talkers
            .iter()
            .map(|t| (t.name.as_str(), t.bytes))
            .collect()
    }

    #[test]
    fn a_window_sums_the_flushes_written_in_it() {
        let talkers = Talkers::default();
        talkers.observe(
            &[
                row(Some("alice"), "100.64.0.1", Direction::Up, 10),
                row(Some("bob"), "100.64.0.2", Direction::Down, 30),
            ],
            60_000,
        );
        talkers.observe(
            &[
                row(Some("alice"), "100.64.0.1", Direction::Down, 25),
                row(None, "100.64.0.9", Direction::Down, 5),
                row(None, "198.51.100.1", Direction::Transit, 1000),
            ],
            120_000,
        );
        let all = talkers.top(TalkerKey::User, 300_000, 120_000, 10);
        assert_eq!(names(&all), [("alice", [10, 25]), ("bob", [0, 30])]);
        assert_eq!(
            (all.flushes, all.since_ms, all.exact),
            (2, Some(60_000), true)
        );
        let last = talkers.top(TalkerKey::User, 30_000, 120_000, 10);
        assert_eq!(names(&last), [("alice", [0, 25])]);
        let ips = talkers.top(TalkerKey::Ip, 300_000, 120_000, 2);
        assert_eq!(
            names(&ips),
            [("100.64.0.1", [10, 25]), ("100.64.0.2", [0, 30])]
        );
    }

    #[test]
    fn flushes_older_than_the_longest_window_are_forgotten() {
        let talkers = Talkers::default();
        talkers.observe(&[row(Some("alice"), "100.64.0.1", Direction::Up, 1)], 0);
        talkers.observe(&[], MAX_WINDOW_MS + 1);
        assert_eq!(talkers.flushes.lock().unwrap().len(), 1);
        let ranking = talkers.top(TalkerKey::User, u64::MAX, MAX_WINDOW_MS + 1, 10);
        assert!(ranking.talkers.is_empty());
    }

    #[test]
    fn a_flush_keeps_its_biggest_talkers_and_says_the_ranking_is_not_exact() {
        let talkers = Talkers::default();
        let rows: Vec<UsageRow> = (0..KEEP_PER_FLUSH as u64 + 50)
            .map(|i| {
                let ip = format!("100.64.{}.{}", i / 256, i % 256);
                row(Some(&format!("u{i:04}")), &ip, Direction::Down, i)
            })
            .collect();
        talkers.observe(&rows, 1);
        let ranking = talkers.top(TalkerKey::User, 60_000, 1, 3);
        assert!(!ranking.exact);
        assert_eq!(
            names(&ranking),
            [
                ("u0249", [0, 249]),
                ("u0248", [0, 248]),
                ("u0247", [0, 247])
            ]
        );
        let flushes = talkers.flushes.lock().unwrap();
        assert_eq!(flushes[0].users.kept.len(), KEEP_PER_FLUSH);
        assert_eq!(flushes[0].users.left_out, 50);
    }
}
