//! Organisations files: which networks belong to whom, for `--by org`.
//!
//! ```toml
//! [orgs]
//! "198.18.100.0/24" = "Acme"
//! "198.18.100.128/25" = "Acme Labs"   # the longest prefix wins
//! "2001:db8:100::/48" = "Acme"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    orgs: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OrgsError {
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    #[error("orgs.{key:?}: not a network (CIDR, like \"198.18.100.0/24\") or an address")]
    NotANetwork { key: String },
    #[error("orgs.{key:?}: host bits are set; the network is {network}")]
    HostBits { key: String, network: IpNet },
    #[error("orgs.{key:?}: the same network as orgs.{other:?}")]
    Duplicate { key: String, other: String },
    #[error("orgs.{key:?}: the organisation's name must not be empty")]
    NoName { key: String },
}

/// Networks and their organisations, looked up by longest prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orgs {
    names: HashMap<IpNet, String>,
    /// The prefix lengths in `names`, per family, longest first.
    lengths_v4: Vec<u8>,
    lengths_v6: Vec<u8>,
}

impl Orgs {
    pub fn parse(text: &str) -> Result<Self, OrgsError> {
        let file: File = toml::from_str(text).map_err(|e| OrgsError::Toml(Box::new(e)))?;
        let mut names = HashMap::new();
        let mut keys: HashMap<IpNet, String> = HashMap::new();
        for (key, name) in file.orgs {
            let net: IpNet = key
                .parse()
                .or_else(|_| key.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| OrgsError::NotANetwork { key: key.clone() })?;
            if net.trunc() != net {
                return Err(OrgsError::HostBits {
                    key,
                    network: net.trunc(),
                });
            }
            if name.trim().is_empty() {
                return Err(OrgsError::NoName { key });
            }
            if let Some(other) = keys.insert(net, key.clone()) {
                return Err(OrgsError::Duplicate { key, other });
            }
            names.insert(net, name);
        }
        let lengths = |v4: bool| {
            let set: BTreeSet<u8> = names
                .keys()
                .filter(|net| matches!(net, IpNet::V4(_)) == v4)
                .map(IpNet::prefix_len)
                .collect();
            set.into_iter().rev().collect()
        };
        Ok(Self {
            lengths_v4: lengths(true),
            lengths_v6: lengths(false),
            names,
        })
    }

    /// The organisation of the longest network that holds all of `net` (an
    /// address, or a prefix a session was delegated).
    pub fn find(&self, net: IpNet) -> Option<&str> {
        let lengths = match net {
            IpNet::V4(_) => &self.lengths_v4,
            IpNet::V6(_) => &self.lengths_v6,
        };
        lengths
            .iter()
            .filter(|&&len| len <= net.prefix_len())
            .find_map(|&len| {
                let wider = IpNet::new(net.addr(), len).ok()?.trunc();
                self.names.get(&wider)
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse()
            .unwrap_or_else(|_| IpNet::from(s.parse::<std::net::IpAddr>().unwrap()))
    }

    #[test]
    fn the_longest_prefix_wins_and_the_rest_is_nobodys() {
        let orgs = Orgs::parse(
            r#"
            [orgs]
            "198.18.100.0/24" = "Acme"
            "198.18.100.128/25" = "Acme Labs"
            "198.18.101.7" = "Solo"
            "2001:db8:100::/48" = "Acme"
            "::/0" = "Everyone on IPv6"
            "#,
        )
        .unwrap();
        assert_eq!(orgs.find(net("198.18.100.7")), Some("Acme"));
        assert_eq!(orgs.find(net("198.18.100.200")), Some("Acme Labs"));
        assert_eq!(orgs.find(net("198.18.101.7")), Some("Solo"));
        assert_eq!(orgs.find(net("198.18.101.8")), None);
        assert_eq!(orgs.find(net("2001:db8:100:5::1")), Some("Acme"));
        assert_eq!(orgs.find(net("2001:db8:100:5::/64")), Some("Acme"));
        // A delegated /40 is wider than Acme's /48: only ::/0 holds it all.
        assert_eq!(orgs.find(net("2001:db8::/40")), Some("Everyone on IPv6"));
    }

    #[test]
    fn bad_entries_are_named() {
        let error = |body: &str| {
            Orgs::parse(&format!("[orgs]\n{body}\n"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("\"acme\" = \"Acme\""),
            "orgs.\"acme\": not a network (CIDR, like \"198.18.100.0/24\") or an address"
        );
        assert_eq!(
            error("\"198.18.100.7/24\" = \"Acme\""),
            "orgs.\"198.18.100.7/24\": host bits are set; the network is 198.18.100.0/24"
        );
        assert!(
            error("\"2001:db8::/32\" = \"A\"\n\"2001:0db8::/32\" = \"B\"").contains("same network")
        );
        assert!(error("\"10.0.0.0/8\" = \" \"").contains("must not be empty"));
        let unknown = Orgs::parse("[org]\n\"10.0.0.0/8\" = \"A\"\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `org`"), "{unknown}");
    }
}
