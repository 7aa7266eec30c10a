//! The daemon's configuration: a TOML file (unknown keys rejected) with
//! command-line flags layered on top. Every error names the key and flag.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod quotas;
mod secret;
mod validate;

pub use quotas::{NasConfig, PeriodKind, QuotaAction, QuotaConfig, QuotaDirection, Users};
pub use secret::{REDACTED, Secret, SecretOverride};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Names the line and its key, not the value: it may be a secret.
    #[error("config file {}, line {line} ({key}): {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
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
    /// UDP addresses that receive sFlow datagrams.
    pub sflow: Vec<SocketAddr>,
    /// Scale sFlow samples by the sampling rate renormalised from each
    /// source's sample pool (making up for lost datagrams) instead of the
    /// rate the samples carry.
    pub sflow_renormalize: bool,
    /// Receive buffer of each of those sockets, in bytes: what absorbs a
    /// burst of exports while the socket path is busy.
    pub socket_receive_buffer: usize,
    /// Receive threads per NetFlow address, each on its own SO_REUSEPORT
    /// socket; 0: one per CPU.
    pub socket_receive_threads: usize,
    /// The HTTP listener: `/metrics`, `/api/v1/`, the console.
    pub http: HttpConfig,
    /// The old name of `http.listen`, still read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// SQLite database, the default sink.
    pub db: PathBuf,
    /// A shared ClickHouse that also receives usage and sessions.
    pub clickhouse: ClickHouseConfig,
    pub flush_interval: Span,
    /// Usage rows held in memory at most while SQLite refuses writes (full
    /// disk, read-only filesystem, a lock held elsewhere); beyond, newer
    /// rows are dropped and counted.
    pub max_held_rows: usize,
    /// How often the log sums up what the flushes wrote (each flush is
    /// logged at DEBUG only).
    pub log_summary: Span,
    pub late_window: Span,
    /// Flows up to this long after a session's Stop still belong to it
    /// (routers export late), unless another session takes the address.
    pub stop_grace: Span,
    /// Per-user byte gauges for the top N users of each flush (0: off).
    pub user_metrics_top: usize,
    /// Networks whose addresses are subscribers (the billed side of a flow).
    pub subscriber_networks: Vec<IpNet>,
    /// Exporters allowed to send flows; empty means any.
    pub exporters: Vec<IpAddr>,
    /// What is billed when several routers see the same traffic; empty
    /// means everything counts.
    pub billing_scope: Vec<ScopeEntry>,
    pub aggregation: AggregationConfig,
    pub maps: MapsConfig,
    pub templates: TemplatesConfig,
    pub radius: RadiusConfig,
    /// Interface counter polling, to check flow bytes against.
    pub snmp: SnmpConfig,
    pub cgnat: CgnatConfig,
    /// Destination classes: prefix lists naming where peers are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<crate::classes::ClassConfig>,
    /// Byte budgets per user and period, enforced at `radius.nas`.
    pub quotas: Vec<QuotaConfig>,
    /// Warnings about where secrets come from, made while loading.
    #[serde(skip)]
    pub notices: Vec<String>,
}

/// Carrier-grade NAT: bindings from NAT events (recognised without any
/// configuration) and attribution of pool traffic through them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgnatConfig {
    /// Public pool networks: usage whose subscriber side is a pool address
    /// is attributed through the binding of its port. They count as
    /// subscriber networks too.
    pub pools: Vec<IpNet>,
    /// A binding whose delete never comes ends this long after its start.
    pub max_lifetime: Span,
    /// Bindings ended longer ago leave memory (not SQLite): what
    /// attribution of late rows still needs. Never less than
    /// `late_window + stop_grace`.
    pub memory_retention: Span,
    /// Bindings ended longer ago are deleted from SQLite; unset: kept.
    pub retention: Option<Span>,
    /// Bindings kept in memory at most.
    pub max_bindings: usize,
}

impl Default for CgnatConfig {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            max_lifetime: Span(Duration::from_secs(7 * 86_400)),
            memory_retention: Span(Duration::from_secs(3600)),
            retention: None,
            max_bindings: 10_000_000,
        }
    }
}

/// SNMP polling of IF-MIB ifHCInOctets/ifHCOutOctets; off without agents.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnmpConfig {
    /// How often every agent is polled.
    pub interval: Span,
    /// How long one request may take (two tries).
    pub timeout: Span,
    pub agents: Vec<SnmpAgent>,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        Self {
            interval: Span(Duration::from_secs(60)),
            timeout: Span(Duration::from_secs(2)),
            agents: Vec::new(),
        }
    }
}

/// One exporter's SNMP agent and the interfaces polled on it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpAgent {
    /// The exporter (flow source address) whose interfaces these are.
    pub exporter: IpAddr,
    /// Where its agent answers; default the exporter's address, port 161.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// `2c` or `3`.
    #[serde(default = "SnmpAgent::default_version")]
    pub version: String,
    /// SNMPv2c; or from a file or an environment variable (`_file`,
    /// `_env`), as the passwords.
    #[serde(default)]
    pub community: Option<Secret>,
    #[serde(default)]
    pub community_file: Option<PathBuf>,
    #[serde(default)]
    pub community_env: Option<String>,
    /// SNMPv3 (USM): user, authentication (md5, sha1, sha224, sha256,
    /// sha384, sha512), and optionally privacy (des, aes128, aes192, aes256).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub auth_protocol: Option<String>,
    #[serde(default)]
    pub auth_password: Option<Secret>,
    #[serde(default)]
    pub auth_password_file: Option<PathBuf>,
    #[serde(default)]
    pub auth_password_env: Option<String>,
    #[serde(default)]
    pub privacy_protocol: Option<String>,
    #[serde(default)]
    pub privacy_password: Option<Secret>,
    #[serde(default)]
    pub privacy_password_file: Option<PathBuf>,
    #[serde(default)]
    pub privacy_password_env: Option<String>,
    /// ifIndexes polled; default the exporter's `billing_scope` interfaces.
    #[serde(default)]
    pub interfaces: Vec<u32>,
}

impl SnmpAgent {
    fn default_version() -> String {
        "2c".to_owned()
    }

    /// Where to send requests.
    pub fn address(&self) -> SocketAddr {
        self.address
            .unwrap_or_else(|| SocketAddr::new(self.exporter, 161))
    }
}

impl Config {
    /// The binding history's limits: memory keeps bindings at least as
    /// long as usage rows may wait for them.
    pub fn nat_limits(&self) -> crate::nat::Limits {
        let waiting = self.late_window.0 + self.stop_grace.0;
        crate::nat::Limits {
            max_lifetime_ms: self.cgnat.max_lifetime.0.as_millis() as u64,
            memory_retention_ms: self.cgnat.memory_retention.0.max(waiting).as_millis() as u64,
            max_bindings: self.cgnat.max_bindings,
        }
    }
}

/// The ClickHouse sink; off while `url` is unset. Rows reach it from the
/// SQLite database, which is its spool (see `sink::clickhouse`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`, or with TLS
    /// `https://ch.example.net:8443`.
    pub url: Option<String>,
    /// PEM CA certificates that verify an https:// server instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Created with the tables when missing.
    pub database: String,
    pub user: Option<String>,
    /// Or from a file (`password_file`) or an environment variable
    /// (`password_env`); `$FLOWTALLY_CLICKHOUSE_PASSWORD` replaces all three.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// Whether this instance delivers `sessions` and `session_addresses`
    /// (see README, scale-out).
    pub sessions: bool,
    /// Rows per INSERT.
    pub batch_rows: usize,
    /// Undelivered rows per table beyond which the oldest are given up
    /// (counted and logged; they stay in SQLite).
    pub spool_max_rows: u64,
    /// How long the final delivery may take at shutdown; what is left is
    /// delivered after the next start.
    pub shutdown_timeout: Span,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            database: "flowtally".to_owned(),
            user: None,
            password: None,
            password_file: None,
            password_env: None,
            sessions: true,
            batch_rows: 50_000,
            spool_max_rows: 100_000_000,
            shutdown_timeout: Span(Duration::from_secs(10)),
        }
    }
}

/// The one HTTP listener. Bound anywhere but loopback, it serves its API
/// only to holders of the bearer token in `token_file`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token (surrounding whitespace ignored);
    /// required when `listen` is not a loopback address, honoured anywhere.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// A directory of tariff files: `tariff=NAME` in the API reads
    /// `NAME.toml` there.
    pub tariffs: Option<PathBuf>,
    /// The organisations file for `by=org` in the API.
    pub orgs: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9725)),
            token_file: None,
            metrics_public: false,
            tariffs: None,
            orgs: None,
        }
    }
}

/// NetFlow v9 / IPFIX template handling.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// Where learned templates persist across restarts; default: the
    /// database path with `.templates` appended.
    pub file: Option<PathBuf>,
    /// A template not refreshed for this long expires.
    pub timeout: Span,
    pub max_per_exporter: usize,
    pub max_fields: usize,
    /// Longest fixed record length a template may declare.
    pub max_record_bytes: usize,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            file: None,
            timeout: Span(Duration::from_secs(30 * 60)),
            max_per_exporter: 1024,
            max_fields: 128,
            max_record_bytes: 1024,
        }
    }
}

impl Config {
    /// Networks whose addresses are the billed side of a flow: the
    /// subscriber networks and the CGNAT pools.
    /// The destination classes, their files read.
    pub fn classes(&self) -> Result<crate::classes::Classes, ConfigError> {
        crate::classes::Classes::load(&self.classes, |path| std::fs::read_to_string(path)).map_err(
            |error| ConfigError::Invalid {
                key: "classes",
                flag: "-",
                message: error.to_string(),
            },
        )
    }

    pub fn subscriber_nets(&self) -> Vec<IpNet> {
        let mut nets = self.subscriber_networks.clone();
        for pool in &self.cgnat.pools {
            if !nets.contains(pool) {
                nets.push(*pool);
            }
        }
        nets
    }

    /// What the configuration allows but cannot do well, for
    /// `check-config` and the log.
    pub fn warnings(&self) -> Vec<String> {
        use flowtally_common::agg::{KEEP_PROTOCOL, KEEP_SUBSCRIBER_PORT};
        let keep = self.aggregation.profile.keep_bits();
        let needed = KEEP_SUBSCRIBER_PORT | KEEP_PROTOCOL;
        let mut warnings = self.notices.clone();
        if !self.cgnat.pools.is_empty() && keep & needed != needed {
            warnings.push(
                "`cgnat.pools` with an `aggregation.profile` that drops subscriber_port or \
                 protocol: pool traffic cannot be attributed through NAT bindings (a binding is \
                 per public port and protocol) and is written unattributed"
                    .to_owned(),
            );
        }
        if !self.quotas.is_empty() && self.radius.nas.is_empty() {
            warnings.push(
                "`quotas` without any `radius.nas`: crossings are logged and counted, but no \
                 session is disconnected or changed"
                    .to_owned(),
            );
        }
        warnings
    }

    /// Where templates persist.
    pub fn templates_file(&self) -> PathBuf {
        self.templates.file.clone().unwrap_or_else(|| {
            let mut path = self.db.clone().into_os_string();
            path.push(".templates");
            PathBuf::from(path)
        })
    }
}

/// Records from `exporter` count if they entered or left it by one of
/// `interfaces` (SNMP ifindex); with no interfaces, all of them count.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeEntry {
    pub exporter: IpAddr,
    #[serde(default)]
    pub interfaces: Vec<u32>,
}

impl Config {
    /// The interfaces an SNMP agent of `exporter` polls: its own list, or
    /// the exporter's billing scope interfaces.
    pub fn snmp_interfaces(&self, agent: &SnmpAgent) -> Vec<u32> {
        if !agent.interfaces.is_empty() {
            return agent.interfaces.clone();
        }
        self.billing_scope
            .iter()
            .filter(|entry| entry.exporter == agent.exporter)
            .flat_map(|entry| entry.interfaces.iter().copied())
            .collect()
    }

    /// The interfaces whose flow bytes both paths count: the billing
    /// scope's listed interfaces and those polled by SNMP.
    pub fn reconciled_interfaces(&self) -> Vec<flowtally_common::agg::ScopeKey> {
        use flowtally_common::agg::ScopeKey;
        let scope = self.billing_scope.iter().flat_map(|entry| {
            let exporter = crate::ip::to_ip(entry.exporter);
            entry
                .interfaces
                .iter()
                .map(move |&ifindex| ScopeKey { exporter, ifindex })
        });
        let polled = self.snmp.agents.iter().flat_map(|agent| {
            let exporter = crate::ip::to_ip(agent.exporter);
            self.snmp_interfaces(agent)
                .into_iter()
                .map(move |ifindex| ScopeKey { exporter, ifindex })
        });
        let mut keys: Vec<ScopeKey> = scope.chain(polled).collect();
        keys.sort_by_key(|k| (k.exporter, k.ifindex));
        keys.dedup();
        keys
    }

    /// The billing scope in the form both data paths check.
    pub fn scope_keys(&self) -> Vec<flowtally_common::agg::ScopeKey> {
        use flowtally_common::agg::{ANY_INTERFACE, ScopeKey};
        self.billing_scope
            .iter()
            .flat_map(|entry| {
                let exporter = crate::ip::to_ip(entry.exporter);
                let interfaces = if entry.interfaces.is_empty() {
                    vec![ANY_INTERFACE]
                } else {
                    entry.interfaces.clone()
                };
                interfaces
                    .into_iter()
                    .map(move |ifindex| ScopeKey { exporter, ifindex })
            })
            .collect()
    }
}

/// How flow records fold into aggregates (identical in XDP and sockets).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// `detail`, `subscriber`, or a list of the key fields to keep.
    pub profile: ProfileSpec,
    /// Width of a time bucket.
    pub bucket: Span,
    /// Which record time places a record in a bucket.
    pub time: RecordTime,
    /// Multiply bytes and packets by the exporter's sampling interval.
    pub scale_sampling: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ProfileSpec {
    Named(NamedProfile),
    Fields(Vec<KeyField>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedProfile {
    /// Every key field.
    Detail,
    /// Subscriber IP and direction only.
    Subscriber,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    PeerIp,
    SubscriberPort,
    PeerPort,
    Protocol,
    Exporter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordTime {
    /// Last-switched time (the default: when the traffic was last seen).
    End,
    /// First-switched time.
    Start,
}

/// Kernel map sizes.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MapsConfig {
    /// Keys per CPU of the IPv4 table, and of the IPv6 map in all.
    pub aggregate_entries: u32,
    /// Keys per CPU of the IPv6 table.
    pub aggregate_entries_v6: u32,
    /// Bytes of the overflow ring (a power of two, at least 4096).
    pub overflow_ring_bytes: u32,
}

impl ProfileSpec {
    /// The `agg::KEEP_*` bits of this profile.
    pub fn keep_bits(&self) -> u32 {
        use flowtally_common::agg::*;
        match self {
            Self::Named(NamedProfile::Detail) => KEEP_ALL,
            Self::Named(NamedProfile::Subscriber) => 0,
            Self::Fields(fields) => fields
                .iter()
                .map(|field| match field {
                    KeyField::PeerIp => KEEP_PEER_IP,
                    KeyField::SubscriberPort => KEEP_SUBSCRIBER_PORT,
                    KeyField::PeerPort => KEEP_PEER_PORT,
                    KeyField::Protocol => KEEP_PROTOCOL,
                    KeyField::Exporter => KEEP_EXPORTER,
                })
                .fold(0, |bits, bit| bits | bit),
        }
    }
}

impl Config {
    /// The `agg::FLAG_*` bits other than the exporter allow-list and the
    /// billing scope.
    pub fn flags(&self) -> u32 {
        let mut flags = self.aggregation.flags();
        if self.sflow_renormalize {
            flags |= flowtally_common::agg::FLAG_SFLOW_RENORMALIZE;
        }
        flags
    }
}

impl AggregationConfig {
    /// The profile as both data paths apply it.
    pub fn profile(&self) -> flowtally_common::agg::Profile {
        flowtally_common::agg::Profile {
            keep: self.profile.keep_bits(),
            bucket_ms: self.bucket.0.as_millis() as u64,
        }
    }

    /// The record flags this section sets.
    pub fn flags(&self) -> u32 {
        use flowtally_common::agg::{FLAG_SCALE_SAMPLING, FLAG_TIME_FROM_START};
        let mut flags = 0;
        if self.time == RecordTime::Start {
            flags |= FLAG_TIME_FROM_START;
        }
        if self.scale_sampling {
            flags |= FLAG_SCALE_SAMPLING;
        }
        flags
    }
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            profile: ProfileSpec::Named(NamedProfile::Detail),
            bucket: Span(Duration::from_secs(60)),
            time: RecordTime::End,
            scale_sampling: true,
        }
    }
}

impl Default for MapsConfig {
    fn default() -> Self {
        Self {
            aggregate_entries: flowtally_common::DEFAULT_AGGREGATE_ENTRIES,
            aggregate_entries_v6: flowtally_common::DEFAULT_AGGREGATE_ENTRIES_V6,
            overflow_ring_bytes: flowtally_common::DEFAULT_OVERFLOW_RING_BYTES,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusConfig {
    pub listen: SocketAddr,
    /// One secret for any client; `clients` entries take precedence. Or
    /// from a file (`secret_file`) or an environment variable (`secret_env`).
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    pub clients: Vec<RadiusClient>,
    /// Accounting requests per second accepted from one client; more are
    /// dropped (the NAS retransmits) and counted.
    pub rate_limit: u32,
    /// A session silent for this many interim intervals is closed at its
    /// last update.
    pub silence_multiple: u32,
    /// The interim interval assumed for sessions that announce none.
    pub default_interim: Span,
    /// Sessions stopped longer ago than this leave memory (they stay in
    /// SQLite): what attribution of late flows still needs.
    pub history_retention: Span,
    /// NASes that accept Disconnect- and CoA-Requests (RFC 5176).
    pub nas: Vec<NasConfig>,
    /// Open sessions one NAS may have; beyond, requests that would begin
    /// one are refused (see `radius::nas_bounds`).
    pub nas_max_open_sessions: usize,
    /// New sessions one NAS may begin per minute (bursts up to
    /// `nas_max_open_sessions`).
    pub nas_new_sessions_per_minute: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    /// NAS address or prefix.
    pub address: IpNet,
    /// One of the three is required.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
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
            sflow: vec![SocketAddr::from((
                [0, 0, 0, 0],
                flowtally_common::sflow::PORT,
            ))],
            sflow_renormalize: false,
            socket_receive_buffer: 16 << 20,
            socket_receive_threads: 0,
            http: HttpConfig::default(),
            metrics: None,
            db: PathBuf::from("flowtally.db"),
            clickhouse: ClickHouseConfig::default(),
            flush_interval: Span(Duration::from_secs(5)),
            max_held_rows: 1_000_000,
            log_summary: Span(Duration::from_secs(600)),
            late_window: Span(Duration::from_secs(30)),
            stop_grace: Span(Duration::from_secs(5)),
            user_metrics_top: 0,
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
            exporters: Vec::new(),
            billing_scope: Vec::new(),
            aggregation: AggregationConfig::default(),
            maps: MapsConfig::default(),
            templates: TemplatesConfig::default(),
            radius: RadiusConfig::default(),
            snmp: SnmpConfig::default(),
            cgnat: CgnatConfig::default(),
            classes: Vec::new(),
            quotas: Vec::new(),
            notices: Vec::new(),
        }
    }
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1813)),
            secret: None,
            secret_file: None,
            secret_env: None,
            clients: Vec::new(),
            rate_limit: 1000,
            silence_multiple: 3,
            default_interim: Span(Duration::from_secs(600)),
            history_retention: Span(Duration::from_secs(2 * 86_400)),
            nas: Vec::new(),
            nas_max_open_sessions: 200_000,
            nas_new_sessions_per_minute: 1_000,
        }
    }
}

/// Command-line overrides; `None` or empty means "keep the file's value".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    pub mode: Option<Mode>,
    pub netflow: Vec<SocketAddr>,
    pub sflow: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub db: Option<PathBuf>,
    pub clickhouse: Option<String>,
    pub flush_interval: Option<Span>,
    pub late_window: Option<Span>,
    pub subscriber_networks: Vec<IpNet>,
    pub exporters: Vec<IpAddr>,
    pub radius: Option<SocketAddr>,
    /// `--radius-secret`, `--radius-secret-file` or `$FLOWTALLY_RADIUS_SECRET`.
    pub radius_secret: Option<SecretOverride>,
    /// `$FLOWTALLY_CLICKHOUSE_PASSWORD`.
    pub clickhouse_password: Option<Secret>,
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
                Self::from_toml(&text).map_err(|error| {
                    let start = error.span().map_or(0, |span| span.start);
                    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                    let line = &text[line_start..];
                    let line = line.split('\n').next().unwrap_or_default();
                    ConfigError::Parse {
                        path: path.to_owned(),
                        line: text[..start].matches('\n').count() + 1,
                        key: line.split('=').next().unwrap_or_default().trim().to_owned(),
                        message: error.message().trim_end().to_owned(),
                    }
                })?
            }
            None => Self::default(),
        };
        if let Some(path) = path {
            let inline = config.inline_secrets();
            if !inline.is_empty()
                && let Some(warning) = secret::readable_by_others(path, &inline.join(", "))
            {
                config.notices.push(warning);
            }
        }
        config.apply(overrides);
        config.resolve_secrets()?;
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
        replace(&mut self.sflow, o.sflow);
        replace(&mut self.subscriber_networks, o.subscriber_networks);
        replace(&mut self.exporters, o.exporters);
        self.mode = o.mode.unwrap_or(self.mode);
        // The old key stands for `http.listen` unless that is set too
        // (validate refuses two different addresses).
        if let Some(old) = self.metrics
            && self.http.listen == HttpConfig::default().listen
        {
            self.http.listen = old;
            self.metrics = None;
        }
        if let Some(listen) = o.http {
            self.http.listen = listen;
            self.metrics = None;
        }
        self.db = o.db.unwrap_or(std::mem::take(&mut self.db));
        self.clickhouse.url = o.clickhouse.or(self.clickhouse.url.take());
        self.flush_interval = o.flush_interval.unwrap_or(self.flush_interval);
        self.late_window = o.late_window.unwrap_or(self.late_window);
        self.radius.listen = o.radius.unwrap_or(self.radius.listen);
        if let Some(secret) = o.radius_secret {
            let radius = &mut self.radius;
            (radius.secret, radius.secret_file, radius.secret_env) = (None, None, None);
            match secret {
                SecretOverride::Argv(secret) => {
                    self.notices.push(
                        "--radius-secret is visible to every local user (ps, /proc/PID/cmdline): \
                         give it in a file (--radius-secret-file, radius.secret_file) or in \
                         $FLOWTALLY_RADIUS_SECRET"
                            .to_owned(),
                    );
                    radius.secret = Some(secret);
                }
                SecretOverride::Env(secret) => radius.secret = Some(secret),
                SecretOverride::File(path) => radius.secret_file = Some(path),
            }
        }
        if let Some(password) = o.clickhouse_password {
            let ch = &mut self.clickhouse;
            (ch.password_file, ch.password_env) = (None, None);
            ch.password = Some(password);
        }
    }

    /// The secret keys written in the file itself, by name.
    fn inline_secrets(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.radius.secret.is_some() {
            keys.push("radius.secret");
        }
        if self.radius.clients.iter().any(|c| c.secret.is_some()) {
            keys.push("radius.clients.secret");
        }
        if self.radius.nas.iter().any(|n| n.secret.is_some()) {
            keys.push("radius.nas.secret");
        }
        if self.clickhouse.password.is_some() {
            keys.push("clickhouse.password");
        }
        if self.snmp.agents.iter().any(|a| {
            a.community.is_some() || a.auth_password.is_some() || a.privacy_password.is_some()
        }) {
            keys.push("snmp.agents credentials");
        }
        keys
    }

    /// Reads every secret given by file or environment variable into its
    /// key, so that the rest of the program sees only the value.
    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        use secret::Sources;
        let warnings = &mut self.notices;
        let radius = &mut self.radius;
        Sources {
            key: "radius.secret",
            flag: "--radius-secret-file",
            inline: &mut radius.secret,
            file: &radius.secret_file,
            env: &radius.secret_env,
            entry: None,
        }
        .resolve(warnings)?;
        for client in &mut radius.clients {
            Sources {
                key: "radius.clients.secret",
                flag: "-",
                inline: &mut client.secret,
                file: &client.secret_file,
                env: &client.secret_env,
                entry: Some(format!("client {}", client.address)),
            }
            .resolve(warnings)?;
        }
        for nas in &mut radius.nas {
            Sources {
                key: "radius.nas.secret",
                flag: "-",
                inline: &mut nas.secret,
                file: &nas.secret_file,
                env: &nas.secret_env,
                entry: Some(format!("nas {}", nas.address)),
            }
            .resolve(warnings)?;
        }
        let ch = &mut self.clickhouse;
        Sources {
            key: "clickhouse.password",
            flag: "-",
            inline: &mut ch.password,
            file: &ch.password_file,
            env: &ch.password_env,
            entry: None,
        }
        .resolve(warnings)?;
        for agent in &mut self.snmp.agents {
            let entry = Some(format!("agent {}", agent.exporter));
            for (key, inline, file, env) in [
                (
                    "snmp.agents.community",
                    &mut agent.community,
                    &agent.community_file,
                    &agent.community_env,
                ),
                (
                    "snmp.agents.auth_password",
                    &mut agent.auth_password,
                    &agent.auth_password_file,
                    &agent.auth_password_env,
                ),
                (
                    "snmp.agents.privacy_password",
                    &mut agent.privacy_password,
                    &agent.privacy_password_file,
                    &agent.privacy_password_env,
                ),
            ] {
                Sources {
                    key,
                    flag: "-",
                    inline,
                    file,
                    env,
                    entry: entry.clone(),
                }
                .resolve(warnings)?;
            }
        }
        Ok(())
    }
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
                    [radius]\nsecret_file = \"/etc/flowtally/radius-secret\"\n";
        let mut config = Config::from_toml(file).unwrap();
        config.apply(Overrides {
            interfaces: vec!["eth1".into(), "eth2".into()],
            flush_interval: Some("500ms".parse().unwrap()),
            radius_secret: Some(SecretOverride::Argv(Secret::new("from-flag"))),
            ..Overrides::default()
        });
        assert_eq!(config.interfaces, ["eth1", "eth2"]);
        assert_eq!(config.mode, Mode::Xdp);
        assert_eq!(config.flush_interval.0, Duration::from_millis(500));
        assert_eq!(config.radius.secret, Some(Secret::new("from-flag")));
        assert_eq!(
            config.radius.secret_file, None,
            "the flag replaces the file's key"
        );
        assert!(
            config.warnings()[0].contains("--radius-secret is visible"),
            "{:?}",
            config.warnings()
        );
    }

    #[test]
    fn the_old_metrics_key_stands_for_http_listen() {
        let mut config = Config::from_toml("metrics = \"127.0.0.1:9900\"\n").unwrap();
        config.apply(Overrides::default());
        config.validate().unwrap();
        assert_eq!(config.http.listen, "127.0.0.1:9900".parse().unwrap());
        assert!(
            config
                .to_toml()
                .contains("[http]\nlisten = \"127.0.0.1:9900\""),
            "written under its new name: {}",
            config.to_toml()
        );
        let mut both = Config::from_toml(
            "metrics = \"127.0.0.1:9900\"\n[http]\nlisten = \"127.0.0.1:9901\"\n",
        )
        .unwrap();
        both.apply(Overrides::default());
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("`metrics` (--metrics)"), "{err}");
        both.apply(Overrides {
            http: Some("127.0.0.1:9902".parse().unwrap()),
            ..Overrides::default()
        });
        both.validate().unwrap();
        assert_eq!(both.http.listen, "127.0.0.1:9902".parse().unwrap());
    }

    #[test]
    fn off_loopback_the_listener_needs_a_token_file() {
        let mut config = Config::from_toml("[http]\nlisten = \"0.0.0.0:9725\"\n").unwrap();
        config.apply(Overrides::default());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`http.token_file`"), "{err}");
        config.http.token_file = Some("/etc/flowtally/http-token".into());
        config.validate().unwrap();
        config.http = HttpConfig {
            listen: "[::1]:9725".parse().unwrap(),
            ..HttpConfig::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn clickhouse_is_a_table_whose_url_the_flag_sets_and_which_is_checked() {
        let file = "[clickhouse]\nurl = \"http://198.18.0.9:8123\"\ndatabase = \"billing\"\n\
                    sessions = false\n";
        let mut config = Config::from_toml(file).unwrap();
        assert_eq!(config.clickhouse.database, "billing");
        assert!(!config.clickhouse.sessions);
        config.apply(Overrides {
            clickhouse: Some("http://198.18.0.10:8123".into()),
            ..Overrides::default()
        });
        assert_eq!(
            config.clickhouse.url.as_deref(),
            Some("http://198.18.0.10:8123")
        );
        config.validate().unwrap();
        config.clickhouse.url = Some("https://ch:8443".into());
        config.validate().unwrap();
        config.clickhouse.ca_file = Some("/etc/flowtally/clickhouse-ca.pem".into());
        config.validate().unwrap();
        config.clickhouse.url = Some("http://ch:8123".into());
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("`clickhouse.ca_file`"), "{err}");
        config.clickhouse.ca_file = None;
        for (url, database, key) in [
            (
                "ftp://ch:8443",
                "flowtally",
                "`clickhouse.url` (--clickhouse)",
            ),
            ("ch:8123", "flowtally", "`clickhouse.url` (--clickhouse)"),
            ("http://ch:8123", "bill-ing", "`clickhouse.database`"),
            ("http://ch:8123", "1st", "`clickhouse.database`"),
            (
                "http://default:pa55@ch:8123",
                "flowtally",
                "must not hold credentials",
            ),
        ] {
            config.clickhouse.url = Some(url.into());
            config.clickhouse.database = database.into();
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{url} {database}: {err}");
        }
    }

    #[test]
    fn cgnat_pools_are_subscribers_and_a_portless_profile_is_warned_of() {
        let file = "[cgnat]\npools = [\"198.51.100.0/24\"]\nmax_lifetime = \"1d\"\n";
        let mut config = Config::from_toml(file).unwrap();
        config.validate().unwrap();
        assert_eq!(config.nat_limits().max_lifetime_ms, 86_400_000);
        assert!(
            config
                .subscriber_nets()
                .contains(&"198.51.100.0/24".parse().unwrap())
        );
        assert!(config.warnings().is_empty(), "detail keeps ports");
        config.aggregation.profile = ProfileSpec::Named(NamedProfile::Subscriber);
        let warnings = config.warnings();
        assert!(warnings[0].contains("cgnat.pools"), "{warnings:?}");
        config.cgnat.memory_retention = "1s".parse().unwrap();
        config.late_window = "2h".parse().unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.nat_limits().memory_retention_ms,
            7_205_000,
            "raised to late_window + stop_grace"
        );
        config.cgnat.retention = Some("1s".parse().unwrap());
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("cgnat.retention"), "{err}");
    }

    /// The contract of issue 18, as written there.
    const QUOTAS: &str = r#"
[[radius.nas]]
address = "192.0.2.1"
secret = "s3cret"
[[quotas]]
name = "daily-1mb"
users = ["q-bob"]
period = "day"
bytes = 1000000
direction = "both"
classes = ["*"]
action = "disconnect"
notify_at = [0.8]
[[quotas]]
name = "monthly-throttle"
users = "*"
period = "month"
timezone = "+01:00"
bytes = 50000000000
direction = "down"
action = "coa"
coa_attributes = { "Filter-Id" = "throttled" }
restore_attributes = { "Filter-Id" = "default" }
"#;

    #[test]
    fn quotas_and_their_nas_read_as_the_issue_writes_them() {
        let config = Config::from_toml(QUOTAS).unwrap();
        config.validate().unwrap();
        let mut printed = Config::from_toml(&config.to_toml()).unwrap();
        assert_eq!(
            printed.radius.nas[0].secret,
            Some(Secret::new(REDACTED)),
            "secrets print redacted"
        );
        printed.radius.nas[0].secret = config.radius.nas[0].secret.clone();
        assert_eq!(printed, config);
        let nas = &config.radius.nas[0];
        assert_eq!((nas.coa_port, nas.retries, nas.nak_retries), (3799, 3, 0));
        assert_eq!(nas.timeout.0, Duration::from_secs(2));
        let [daily, monthly] = &config.quotas[..] else {
            panic!("two quotas")
        };
        assert_eq!(daily.users.names(), ["q-bob"]);
        assert!(!daily.users.everyone() && monthly.users.everyone());
        assert_eq!(daily.period, PeriodKind::Day);
        assert_eq!(monthly.timezone, crate::report::periods::Offset(60));
        assert_eq!(monthly.direction, QuotaDirection::Down);
        assert_eq!(monthly.action, QuotaAction::Coa);
        assert_eq!(monthly.classes, ["*"], "all classes unless told");
        assert!(config.warnings().is_empty());
        let without_nas = Config {
            radius: RadiusConfig::default(),
            ..config
        };
        assert!(without_nas.warnings()[0].contains("radius.nas"));
    }

    #[test]
    fn quota_mistakes_name_their_key() {
        for (from, to, key) in [
            (
                "classes = [\"*\"]",
                "classes = [\"local\"]",
                "not a class defined",
            ),
            (
                "classes = [\"*\"]",
                "classes = [\"*\", \"local\"]",
                "`quotas.classes`",
            ),
            ("bytes = 1000000\n", "bytes = 0\n", "`quotas.bytes`"),
            (
                "notify_at = [0.8]",
                "notify_at = [1.5]",
                "`quotas.notify_at`",
            ),
            ("users = [\"q-bob\"]", "users = []", "`quotas.users`"),
            (
                "users = [\"q-bob\"]",
                "users = [\"*\", \"q-bob\"]",
                "`quotas.users`",
            ),
            (
                "\"Filter-Id\" = \"throttled\"",
                "\"Filter-ID\" = \"x\"",
                "coa_attributes",
            ),
            ("action = \"coa\"\n", "", "`quotas.coa_attributes`"),
            (
                "\"Filter-Id\" = \"default\"",
                "\"Idle-Timeout\" = \"x\"",
                "restore_attributes",
            ),
            (
                "name = \"monthly-throttle\"",
                "name = \"daily-1mb\"",
                "defined twice",
            ),
            (
                "secret = \"s3cret\"",
                "secret = \"\"",
                "`radius.nas.secret`",
            ),
        ] {
            let text = QUOTAS.replacen(from, to, 1);
            assert_ne!(text, QUOTAS, "{from}");
            let err = Config::from_toml(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{to}: {err}");
        }
        assert!(
            Config::from_toml(&QUOTAS.replace("period = \"day\"", "period = \"year\"")).is_err()
        );
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
    fn profiles_are_named_or_listed() {
        use flowtally_common::agg::{KEEP_ALL, KEEP_PEER_IP, KEEP_PROTOCOL};
        let config = Config::from_toml("[aggregation]\nprofile = \"subscriber\"\n").unwrap();
        assert_eq!(config.aggregation.profile.keep_bits(), 0);
        let config =
            Config::from_toml("[aggregation]\nprofile = [\"peer_ip\", \"protocol\"]\n").unwrap();
        assert_eq!(
            config.aggregation.profile.keep_bits(),
            KEEP_PEER_IP | KEEP_PROTOCOL
        );
        assert_eq!(Config::default().aggregation.profile.keep_bits(), KEEP_ALL);
        assert!(Config::from_toml("[aggregation]\nprofile = \"everything\"\n").is_err());
    }

    #[test]
    fn a_ring_that_is_not_a_power_of_two_is_invalid() {
        let mut config = Config::default();
        config.maps.overflow_ring_bytes = 5000;
        let err = config.validate().unwrap_err();
        assert!(
            err.to_string().contains("maps.overflow_ring_bytes"),
            "{err}"
        );
    }

    #[test]
    fn table_sizes_are_bounded_and_read_from_the_file() {
        let config = Config::from_toml("[maps]\naggregate_entries_v6 = 4096\n").unwrap();
        assert_eq!(config.maps.aggregate_entries_v6, 4096);
        config.validate().unwrap();
        for (entries, entries_v6, name) in [
            (0, 1, "maps.aggregate_entries"),
            (1, 0, "maps.aggregate_entries_v6"),
            (1, (1 << 24) + 1, "maps.aggregate_entries_v6"),
        ] {
            let mut config = Config::default();
            config.maps.aggregate_entries = entries;
            config.maps.aggregate_entries_v6 = entries_v6;
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn spans_parse_the_documented_forms() {
        for (text, ms) in [("500ms", 500), ("5s", 5_000), ("2m", 120_000)] {
            assert_eq!(text.parse::<Span>().unwrap().0.as_millis(), ms);
        }
        assert!("5".parse::<Span>().is_err());
    }
}
