//! The daemon's configuration: a TOML file (unknown keys rejected) with
//! command-line flags layered on top. Every error names the key and flag.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("invalid `{key}` ({flag}): {message}")]
    Invalid {
        key: &'static str,
        flag: &'static str,
        message: String,
    },
}

/// How flow exports are received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// XDP where it loads and attaches, else the socket path with a warning.
    #[default]
    Auto,
    /// XDP or fail.
    Xdp,
    /// UDP sockets only; no eBPF at all.
    Socket,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces to attach the XDP program to.
    pub interfaces: Vec<String>,
    pub mode: Mode,
    /// UDP addresses that receive NetFlow/IPFIX exports.
    pub netflow: Vec<SocketAddr>,
    pub metrics: SocketAddr,
    /// SQLite database, the default sink.
    pub db: PathBuf,
    pub clickhouse: Option<String>,
    pub flush_interval: Span,
    pub late_window: Span,
    /// Networks whose addresses are subscribers (the billed side of a flow).
    pub subscriber_networks: Vec<IpNet>,
    pub radius: RadiusConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusConfig {
    pub listen: SocketAddr,
    /// One secret for any client; `clients` entries take precedence.
    pub secret: Option<String>,
    pub clients: Vec<RadiusClient>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    /// NAS address or prefix.
    pub address: IpNet,
    pub secret: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: Mode::Auto,
            netflow: vec![
                SocketAddr::from(([0, 0, 0, 0], 2055)),
                SocketAddr::from(([0, 0, 0, 0], 4739)),
            ],
            metrics: SocketAddr::from(([127, 0, 0, 1], 9725)),
            db: PathBuf::from("flowtally.db"),
            clickhouse: None,
            flush_interval: Span(Duration::from_secs(5)),
            late_window: Span(Duration::from_secs(30)),
            // RFC 6598 shared space, RFC 1918 private space, RFC 4193 ULAs.
            subscriber_networks: [
                "100.64.0.0/10",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .iter()
            .map(|net| net.parse().expect("literal CIDR"))
            .collect(),
            radius: RadiusConfig::default(),
        }
    }
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1813)),
            secret: None,
            clients: Vec::new(),
        }
    }
}

/// Command-line overrides; `None` or empty means "keep the file's value".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    pub mode: Option<Mode>,
    pub netflow: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub db: Option<PathBuf>,
    pub clickhouse: Option<String>,
    pub flush_interval: Option<Span>,
    pub late_window: Option<Span>,
    pub subscriber_networks: Vec<IpNet>,
    pub radius: Option<SocketAddr>,
    pub radius_secret: Option<String>,
}

impl Config {
    /// Reads `path` (or starts from the defaults), applies `overrides`, and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                Self::from_toml(&text).map_err(|error| ConfigError::Parse {
                    path: path.to_owned(),
                    error: Box::new(error),
                })?
            }
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every config value has a TOML form")
    }

    fn apply(&mut self, o: Overrides) {
        fn replace<T>(list: &mut Vec<T>, with: Vec<T>) {
            if !with.is_empty() {
                *list = with;
            }
        }
        replace(&mut self.interfaces, o.interfaces);
        replace(&mut self.netflow, o.netflow);
        replace(&mut self.subscriber_networks, o.subscriber_networks);
        self.mode = o.mode.unwrap_or(self.mode);
        self.metrics = o.metrics.unwrap_or(self.metrics);
        self.db = o.db.unwrap_or(std::mem::take(&mut self.db));
        self.clickhouse = o.clickhouse.or(self.clickhouse.take());
        self.flush_interval = o.flush_interval.unwrap_or(self.flush_interval);
        self.late_window = o.late_window.unwrap_or(self.late_window);
        self.radius.listen = o.radius.unwrap_or(self.radius.listen);
        self.radius.secret = o.radius_secret.or(self.radius.secret.take());
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, flag, message: &str| {
            Err(ConfigError::Invalid {
                key,
                flag,
                message: message.to_owned(),
            })
        };
        if self.mode == Mode::Xdp && self.interfaces.is_empty() {
            return invalid("interfaces", "--iface", "mode `xdp` needs an interface");
        }
        if let Some(name) = self.interfaces.iter().find(|name| !valid_ifname(name)) {
            return invalid(
                "interfaces",
                "--iface",
                &format!("{name:?} is not an interface name"),
            );
        }
        if self.netflow.is_empty() {
            return invalid("netflow", "--netflow", "at least one address is needed");
        }
        if self.flush_interval.0 < Duration::from_millis(100) {
            return invalid(
                "flush_interval",
                "--flush-interval",
                "must be at least 100ms",
            );
        }
        if self.db.as_os_str().is_empty() {
            return invalid("db", "--db", "must not be empty");
        }
        if self.radius.secret.as_deref() == Some("") {
            return invalid("radius.secret", "--radius-secret", "must not be empty");
        }
        if self.radius.clients.iter().any(|c| c.secret.is_empty()) {
            return invalid("radius.clients.secret", "-", "must not be empty");
        }
        Ok(())
    }
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
fn valid_ifname(name: &str) -> bool {
    (1..16).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// A duration written like `500ms`, `5s`, `2m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|err| format!("{s:?} is not a duration like 500ms, 5s or 2m ({err})"))
    }
}

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Span> for String {
    fn from(span: Span) -> Self {
        span.to_string()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = Config::default();
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_toml("flush_intervall = \"5s\"\n").unwrap_err();
        assert!(err.to_string().contains("flush_intervall"), "{err}");
        let err = Config::from_toml("[radius]\nport = 1813\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_toml("late_window = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("late_window"), "{err}");
        let err = Config::from_toml("subscriber_networks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.to_string().contains("subscriber_networks"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = "interfaces = [\"eth0\"]\nmode = \"xdp\"\nflush_interval = \"1m\"\n\
                    [radius]\nsecret = \"from-file\"\n";
        let mut config = Config::from_toml(file).unwrap();
        config.apply(Overrides {
            interfaces: vec!["eth1".into(), "eth2".into()],
            flush_interval: Some("500ms".parse().unwrap()),
            radius_secret: Some("from-flag".into()),
            ..Overrides::default()
        });
        assert_eq!(config.interfaces, ["eth1", "eth2"]);
        assert_eq!(config.mode, Mode::Xdp);
        assert_eq!(config.flush_interval.0, Duration::from_millis(500));
        assert_eq!(config.radius.secret.as_deref(), Some("from-flag"));
    }

    #[test]
    fn xdp_mode_without_interface_is_invalid() {
        let config = Config {
            mode: Mode::Xdp,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("`interfaces` (--iface)"), "{err}");
    }

    #[test]
    fn spans_parse_the_documented_forms() {
        for (text, ms) in [("500ms", 500), ("5s", 5_000), ("2m", 120_000)] {
            assert_eq!(text.parse::<Span>().unwrap().0.as_millis(), ms);
        }
        assert!("5".parse::<Span>().is_err());
    }
}
