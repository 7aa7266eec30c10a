//! Narrowing a report to one user or to the addresses of a network, before
//! it is computed: the rows a report of everyone would count, less those
//! that are about someone or somewhere else.
//!
//! - `user`: usage rows attributed to that user, and that user's sessions
//!   and addresses (unattributed usage has no user, so it is left out).
//! - `net`: usage rows whose subscriber address is in the network, and the
//!   sessions that held an address overlapping it, with those addresses.
//!
//! Transit rows have no subscriber and pass only a filter-free report.

use std::collections::HashSet;

use flowtally_common::agg::Direction;
use ipnet::IpNet;

use super::{Usage, source::Rows};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub user: Option<String>,
    pub net: Option<IpNet>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.net.is_none()
    }

    /// The rows this filter keeps.
    pub fn apply(&self, (usage, sessions, addresses): Rows) -> Rows {
        if self.is_empty() {
            return (usage, sessions, addresses);
        }
        let addresses: Vec<_> = addresses
            .into_iter()
            .filter(|a| self.net.is_none_or(|net| overlap(net, a.net)))
            .collect();
        let held: HashSet<u64> = addresses.iter().map(|a| a.session).collect();
        let sessions: Vec<_> = sessions
            .into_iter()
            .filter(|s| self.user.as_ref().is_none_or(|user| &s.user_name == user))
            .filter(|s| self.net.is_none() || held.contains(&s.id))
            .collect();
        let kept: HashSet<u64> = sessions.iter().map(|s| s.id).collect();
        let addresses = addresses
            .into_iter()
            .filter(|a| kept.contains(&a.session))
            .collect();
        let usage = usage.into_iter().filter(|row| self.keeps(row)).collect();
        (usage, sessions, addresses)
    }

    fn keeps(&self, row: &Usage) -> bool {
        row.direction != Direction::Transit
            && self
                .user
                .as_ref()
                .is_none_or(|user| row.user_name.as_ref() == Some(user))
            && self.net.is_none_or(|net| net.contains(&row.subscriber_ip))
    }
}

fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{AddressRow, SessionRow};

    fn usage(user: Option<&str>, ip: &str, direction: Direction) -> Usage {
        Usage {
            bucket_start_ms: 0,
            bucket_width_ms: 60_000,
            user_name: user.map(str::to_owned),
            session_id: user.map(|u| format!("{u}-1")),
            subscriber_ip: ip.parse().unwrap(),
            direction,
            class: None,
            bytes: 1,
            packets: 1,
            flows: 1,
        }
    }

    fn session(id: u64, user: &str) -> SessionRow {
        SessionRow {
            id,
            user_name: user.into(),
            nas: "198.18.0.1".into(),
            session_id: format!("{user}-1"),
            framed_ip: None,
            framed_prefix: None,
            start_ms: 0,
            stop_ms: None,
            last_update_ms: 0,
            interim_interval_s: None,
            nas_port_id: None,
            calling_station_id: None,
            class: None,
            input_octets: None,
            output_octets: None,
            terminate_cause: None,
        }
    }

    fn address(session: u64, net: &str) -> AddressRow {
        AddressRow {
            session,
            net: net.parse().unwrap(),
            from_ms: 0,
            to_ms: None,
        }
    }

    fn rows() -> Rows {
        (
            vec![
                usage(Some("alice"), "100.64.0.1", Direction::Up),
                usage(Some("bob"), "100.64.0.2", Direction::Down),
                usage(None, "100.64.0.3", Direction::Down),
                usage(None, "198.51.100.1", Direction::Transit),
            ],
            vec![session(1, "alice"), session(2, "bob")],
            vec![address(1, "100.64.0.1/32"), address(2, "100.64.0.2/32")],
        )
    }

    #[test]
    fn no_filter_keeps_everything() {
        assert_eq!(Filter::default().apply(rows()), rows());
    }

    #[test]
    fn a_user_keeps_their_usage_sessions_and_addresses() {
        let filter = Filter {
            user: Some("alice".into()),
            net: None,
        };
        let (usage, sessions, addresses) = filter.apply(rows());
        assert_eq!(usage, vec![rows().0[0].clone()]);
        assert_eq!(sessions, vec![session(1, "alice")]);
        assert_eq!(addresses, vec![address(1, "100.64.0.1/32")]);
    }

    #[test]
    fn a_network_keeps_what_its_addresses_did_attributed_or_not() {
        let filter = Filter {
            user: None,
            net: Some("100.64.0.2/31".parse().unwrap()),
        };
        let (usage, sessions, addresses) = filter.apply(rows());
        assert_eq!(usage, vec![rows().0[1].clone(), rows().0[2].clone()]);
        assert_eq!(sessions, vec![session(2, "bob")]);
        assert_eq!(addresses, vec![address(2, "100.64.0.2/32")]);
    }

    #[test]
    fn user_and_network_must_both_match() {
        let filter = Filter {
            user: Some("alice".into()),
            net: Some("100.64.0.2/32".parse().unwrap()),
        };
        let (usage, sessions, addresses) = filter.apply(rows());
        assert!(usage.is_empty() && sessions.is_empty() && addresses.is_empty());
    }
}
