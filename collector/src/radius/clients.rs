//! Which NAS may send accounting, and with which secret.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{RadiusConfig, Secret};

#[derive(Clone, Debug, Default)]
pub struct Clients {
    /// Most specific prefix first.
    entries: Vec<(IpNet, Secret)>,
    /// `--radius-secret`: any other client.
    default: Option<Secret>,
}

impl Clients {
    pub fn new(config: &RadiusConfig) -> Self {
        // Loading the configuration gave every client its secret.
        let mut entries: Vec<(IpNet, Secret)> = config
            .clients
            .iter()
            .filter_map(|c| Some((c.address, c.secret.clone()?)))
            .collect();
        entries.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Self {
            entries,
            default: config.secret.clone(),
        }
    }

    /// Whether any client can be accepted at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.default.is_none()
    }

    /// The secret shared with the client at `addr` (IPv4-mapped addresses
    /// of dual-stack sockets count as IPv4), by the longest matching prefix.
    pub fn secret(&self, addr: IpAddr) -> Option<&[u8]> {
        let addr = addr.to_canonical();
        self.entries
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, secret)| secret)
            .or(self.default.as_ref())
            .map(|secret| secret.expose().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RadiusClient, Secret};

    fn config(secret: Option<&str>) -> RadiusConfig {
        RadiusConfig {
            secret: secret.map(Secret::new),
            clients: vec![
                RadiusClient {
                    address: "198.18.0.0/16".parse().unwrap(),
                    secret: Some(Secret::new("wide")),
                    secret_file: None,
                    secret_env: None,
                },
                RadiusClient {
                    address: "198.18.7.0/24".parse().unwrap(),
                    secret: Some(Secret::new("narrow")),
                    secret_file: None,
                    secret_env: None,
                },
            ],
            ..RadiusConfig::default()
        }
    }

    #[test]
    fn the_longest_prefix_wins_then_the_shared_secret() {
        let clients = Clients::new(&config(Some("shared")));
        let secret = |ip: &str| clients.secret(ip.parse().unwrap());
        assert_eq!(secret("198.18.7.9"), Some(&b"narrow"[..]));
        assert_eq!(secret("::ffff:198.18.7.9"), Some(&b"narrow"[..]));
        assert_eq!(secret("198.18.9.9"), Some(&b"wide"[..]));
        assert_eq!(secret("203.0.113.1"), Some(&b"shared"[..]));
        let strict = Clients::new(&config(None));
        assert_eq!(strict.secret("203.0.113.1".parse().unwrap()), None);
    }
}
