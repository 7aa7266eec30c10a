//! Per-user usage on `/metrics`, safe at ISP scale: opt-in, and at most the
//! top N users of each flush (by bytes) get their own series; everyone else
//! is summed into `user="other"`. A hundred thousand users make N + 1
//! series per direction, never one per user or per flow.

use std::collections::HashMap;

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::usage::UsageRow;

type Labels = [(&'static str, String); 2];

#[derive(Clone, Debug, Default)]
pub struct UserMetrics {
    /// Users with a series of their own; 0 turns the metric off.
    top: usize,
    bytes: Family<Labels, Gauge>,
}

impl UserMetrics {
    pub fn new(top: usize) -> Self {
        Self {
            top,
            bytes: Family::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        if self.top > 0 {
            r.register_with_unit(
                "user",
                "Bytes attributed to each of the top users in the last flush, by direction; \
                 user=\"other\" sums the rest",
                Unit::Bytes,
                self.bytes.clone(),
            );
        }
    }

    /// Replaces the series with this flush's top users.
    pub fn observe(&self, rows: &[UsageRow]) {
        if self.top == 0 {
            return;
        }
        let mut per_user: HashMap<&str, [u64; 2]> = HashMap::new();
        for row in rows {
            let (Some(user), Some(i)) = (row.user_name.as_deref(), direction_index(row)) else {
                continue;
            };
            per_user.entry(user).or_default()[i] += row.bytes;
        }
        let mut ranked: Vec<(&str, [u64; 2])> = per_user.into_iter().collect();
        ranked
            .sort_unstable_by(|a, b| (b.1[0] + b.1[1]).cmp(&(a.1[0] + a.1[1])).then(a.0.cmp(b.0)));
        let mut other = [0u64; 2];
        self.bytes.clear();
        for (rank, (user, bytes)) in ranked.into_iter().enumerate() {
            if rank < self.top {
                self.set(user, bytes);
            } else {
                other[0] += bytes[0];
                other[1] += bytes[1];
            }
        }
        self.set("other", other);
    }

    fn set(&self, user: &str, bytes: [u64; 2]) {
        for (direction, value) in [("up", bytes[0]), ("down", bytes[1])] {
            self.bytes
                .get_or_create(&[
                    ("user", user.to_owned()),
                    ("direction", direction.to_owned()),
                ])
                .set(value as i64);
        }
    }
}

fn direction_index(row: &UsageRow) -> Option<usize> {
    use flowtally_common::agg::Direction;
    match row.direction {
        Direction::Up => Some(0),
        Direction::Down => Some(1),
        Direction::Transit => None,
    }
}

#[cfg(test)]
mod tests {
    use flowtally_common::agg::Direction;

    use super::*;

    fn row(user: &str, direction: Direction, bytes: u64) -> UsageRow {
        UsageRow {
            user_name: Some(user.into()),
            session_id: Some("s".into()),
            ..UsageRow::bare(0, "198.18.100.1".parse().unwrap(), direction, bytes)
        }
    }

    fn exposition(metrics: &UserMetrics) -> String {
        let mut registry = Registry::with_prefix("flowtally");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_hundred_thousand_users_make_top_n_plus_other_series() {
        let metrics = UserMetrics::new(10);
        let rows: Vec<UsageRow> = (0..100_000u64)
            .map(|i| row(&format!("user{i}"), Direction::Down, i))
            .collect();
        metrics.observe(&rows);
        let text = exposition(&metrics);
        let series = text
            .lines()
            .filter(|l| l.starts_with("flowtally_user_bytes{"))
            .count();
        assert_eq!(series, (10 + 1) * 2);
        assert!(text.contains(r#"flowtally_user_bytes{user="user99999",direction="down"} 99999"#));
        let others: u64 = (0..99_990).sum();
        assert!(text.contains(&format!(
            r#"flowtally_user_bytes{{user="other",direction="down"}} {others}"#
        )));
    }

    #[test]
    fn each_flush_replaces_the_previous_top() {
        let metrics = UserMetrics::new(1);
        metrics.observe(&[row("alice", Direction::Up, 5), row("bob", Direction::Up, 1)]);
        metrics.observe(&[row("bob", Direction::Up, 9)]);
        let text = exposition(&metrics);
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains(r#"flowtally_user_bytes{user="bob",direction="up"} 9"#));
    }

    #[test]
    fn off_by_default() {
        let metrics = UserMetrics::new(0);
        metrics.observe(&[row("alice", Direction::Up, 5)]);
        assert!(!exposition(&metrics).contains("flowtally_user"));
    }
}
