//! Command-line interface. The key settings of the config file have flags
//! that override it (the README's configuration reference lists which).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::{
    config::{Config, ConfigError, Mode, Overrides, Secret, SecretOverride, Span},
    report::{
        command::Request,
        filter::Filter,
        group::By,
        percentile::Percentile,
        render::{Format, Units},
        source::{ClickHouseSource, Source},
    },
    timestamp::{TimeArg, Timestamp},
    whois::{PortQuery, Target},
};

#[derive(Debug, Parser)]
#[command(name = "flowtally", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Validate the configuration and print it with all flags applied.
    CheckConfig(RunArgs),
    /// Who held an address at a moment, from the session history; for a
    /// CGNAT public IP:PORT, through the NAT binding of the port.
    Whois(WhoisArgs),
    /// Usage, time online and cost per user, session, subnet, organisation
    /// or destination class.
    Report(ReportArgs),
    /// How complete the flow data of a range is: export loss and restarts
    /// per exporter, flow bytes against interface counters.
    Audit(AuditArgs),
    /// Each quota's usage this period per user, its state and the last
    /// Disconnect- or CoA-Request sent.
    Quota(QuotaArgs),
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The configuration whose `quotas` are shown.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/flowtally/flowtally.toml"
    )]
    pub config: PathBuf,
    /// The SQLite database `flowtally run` writes (default: the
    /// configuration's `db`).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Only this user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The periods holding this moment: RFC 3339, Unix seconds, `now` or a
    /// time before now like -1d.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        default_value = "now"
    )]
    pub at: TimeArg,
    /// `table` for people; `csv` and `json` with raw numbers.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

impl QuotaArgs {
    pub fn request(self, now: Timestamp) -> crate::quota::command::Request {
        crate::quota::command::Request {
            config: self.config,
            db: self.db,
            user: self.user,
            at: self.at.at(now),
            format: self.format,
        }
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The SQLite database `flowtally run` writes.
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// Flushes after this: RFC 3339 or Unix seconds (default: all).
    #[arg(long, value_name = "TIME")]
    pub from: Option<Timestamp>,
    /// Flushes up to this (default: now).
    #[arg(long, value_name = "TIME")]
    pub to: Option<Timestamp>,
    /// Link-layer bytes per packet that interface counters include and
    /// flows do not (Ethernet header: 14; with one VLAN tag: 18).
    #[arg(long, value_name = "BYTES", default_value_t = 14)]
    pub link_overhead: u64,
    /// How far flow bytes may be from interface octets (as a fraction)
    /// and still be `ok`.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.02)]
    pub tolerance: f64,
    /// `table` for people; `csv` and `json` with raw numbers.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

impl AuditArgs {
    pub fn request(self) -> crate::integrity::command::Request {
        crate::integrity::command::Request {
            db: self.db,
            from: self.from,
            to: self.to,
            judgement: crate::integrity::audit::Judgement {
                link_overhead: self.link_overhead,
                tolerance: self.tolerance,
            },
            format: self.format,
        }
    }
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["db", "clickhouse"]))]
pub struct ReportArgs {
    /// The SQLite database `flowtally run` writes.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Read from ClickHouse instead (all instances' rows): its HTTP URL.
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// The ClickHouse database flowtally writes to.
    #[arg(long, value_name = "NAME", default_value = "flowtally")]
    pub clickhouse_database: String,
    /// ClickHouse user; the password comes from $FLOWTALLY_CLICKHOUSE_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub clickhouse_user: Option<String>,
    /// PEM CA certificates to verify an https:// ClickHouse with, instead
    /// of the system's.
    #[arg(long, value_name = "FILE", requires = "clickhouse")]
    pub clickhouse_ca_file: Option<PathBuf>,
    /// Usage whose bucket starts at or after this: RFC 3339, Unix seconds,
    /// `now` or a time before now like -1h, -30m, -7d (default: all).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from: Option<TimeArg>,
    /// Usage whose bucket starts before this (default: now).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub to: Option<TimeArg>,
    /// One row per user, session, subscriber subnet, organisation or
    /// destination class of the peer.
    #[arg(long, value_enum, default_value = "user")]
    pub by: By,
    /// TOML tariff: prices per period of the week (no costs without it).
    #[arg(long, value_name = "FILE")]
    pub tariff: Option<PathBuf>,
    /// TOML map of networks to organisations, for `--by org`.
    #[arg(long, value_name = "FILE", required_if_eq("by", "org"))]
    pub orgs: Option<PathBuf>,
    /// Prefix length of an IPv4 subnet for `--by subnet`.
    #[arg(long, value_name = "BITS", default_value_t = 24,
        value_parser = clap::value_parser!(u8).range(0..=32))]
    pub subnet_prefix_v4: u8,
    /// Prefix length of an IPv6 subnet for `--by subnet`.
    #[arg(long, value_name = "BITS", default_value_t = 64,
        value_parser = clap::value_parser!(u8).range(0..=128))]
    pub subnet_prefix_v6: u8,
    /// Only this user's usage, sessions and time online.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Only usage of subscriber addresses in this address or network, and
    /// the sessions that held them.
    #[arg(long, value_name = "IP|CIDR", value_parser = parse_net)]
    pub ip: Option<IpNet>,
    /// `table` for people; `csv` and `json` with raw numbers.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Volumes in the table: auto (each in its own unit), B, KB, MB or GB
    /// (default: auto on a terminal, GB otherwise; CSV and JSON are in bytes).
    #[arg(long, value_enum, ignore_case = true)]
    pub units: Option<Units>,
    /// Adds each group's percentile (e.g. 95) of its 5-minute rates, in,
    /// out and the greater; needs --from.
    #[arg(long, value_name = "P")]
    pub percentile: Option<Percentile>,
}

/// An address is its own network: /32 or /128.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a network like 100.64.0.0/24"))
}

#[derive(Debug, Args)]
pub struct WhoisArgs {
    /// An IPv4 or IPv6 address, or a public IP:PORT ([IPv6]:PORT) of a
    /// carrier-grade NAT.
    #[arg(value_name = "IP[:PORT]")]
    pub target: Target,
    /// IP:PORT only: the egress VRF of the public side.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub vrf: u32,
    /// IP:PORT only: tcp, udp, icmp or a protocol number (default: every
    /// protocol with a binding on the port).
    #[arg(long, value_name = "PROTOCOL", value_parser = protocol)]
    pub protocol: Option<u8>,
    /// The moment: RFC 3339 (2026-11-21T15:00:00Z), Unix seconds, `now`, or
    /// a time before now like -1h.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: TimeArg,
    /// The SQLite database `flowtally run` writes.
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to attach the XDP program to (repeatable).
    #[arg(long = "iface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// UDP address receiving NetFlow/IPFIX (repeatable; port 0 = any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub netflow: Vec<SocketAddr>,
    /// UDP address receiving sFlow (repeatable; port 0 = any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub sflow: Vec<SocketAddr>,
    /// UDP address of the RADIUS accounting server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub radius: Option<SocketAddr>,
    /// One RADIUS secret for any client. Every local user sees it in `ps`:
    /// prefer --radius-secret-file or $FLOWTALLY_RADIUS_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub radius_secret: Option<String>,
    /// A file holding one RADIUS secret for any client (one line).
    #[arg(long, value_name = "FILE", conflicts_with = "radius_secret")]
    pub radius_secret_file: Option<PathBuf>,
    /// SQLite database file (the default sink).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// ClickHouse URL (http://host:8123, https://host:8443): usage and
    /// sessions go there too.
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// Address of the HTTP listener: /metrics, the JSON API under /api/v1/
    /// and the console at / (--metrics is its old name).
    #[arg(long, visible_alias = "metrics", value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// auto: XDP where it loads, else sockets; xdp: XDP or fail; socket: no eBPF.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Subscriber network (repeatable; replaces the configured list).
    #[arg(long = "subscriber-net", value_name = "CIDR")]
    pub subscriber_networks: Vec<IpNet>,
    /// Exporter allowed to send flows (repeatable; default: any).
    #[arg(long = "exporter", value_name = "IP")]
    pub exporters: Vec<std::net::IpAddr>,
    /// How often aggregates are drained and written, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    pub flush_interval: Option<Span>,
    /// How long an aggregate without an owner waits for a late session, e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    pub late_window: Option<Span>,
}

fn protocol(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        n => n
            .parse()
            .map_err(|_| format!("{s:?} is not tcp, udp, icmp or a protocol number (0-255)")),
    }
}

impl WhoisArgs {
    pub fn query(&self) -> PortQuery {
        PortQuery {
            vrf: self.vrf,
            protocol: self.protocol,
        }
    }
}

impl ReportArgs {
    /// The report these arguments ask for, times resolved at `now`; a table
    /// for a terminal is in auto units. The ClickHouse password comes from
    /// the environment, never from the command line (`ps` shows it).
    pub fn request(self, now: Timestamp, terminal: bool) -> Request {
        let source = match (self.clickhouse, self.db) {
            (Some(url), _) => Source::ClickHouse(ClickHouseSource {
                url,
                database: self.clickhouse_database,
                user: self.clickhouse_user,
                password: env_secret(CLICKHOUSE_PASSWORD_ENV),
                ca_file: self.clickhouse_ca_file,
            }),
            (None, Some(db)) => Source::Sqlite(db),
            (None, None) => unreachable!("clap requires --db or --clickhouse"),
        };
        Request {
            source,
            from: self.from.map(|t| t.at(now)),
            to: self.to.map(|t| t.at(now)),
            by: self.by,
            tariff: self.tariff,
            orgs: self.orgs,
            subnet_prefix_v4: self.subnet_prefix_v4,
            subnet_prefix_v6: self.subnet_prefix_v6,
            filter: Filter {
                user: self.user,
                net: self.ip,
            },
            format: self.format,
            units: self
                .units
                .unwrap_or(if terminal { Units::Auto } else { Units::Gb }),
            percentile: self.percentile,
        }
    }
}

/// Replaces the shared RADIUS secret (below the flags, above the file).
pub const RADIUS_SECRET_ENV: &str = "FLOWTALLY_RADIUS_SECRET";
/// Replaces `clickhouse.password`; the report's password too.
pub const CLICKHOUSE_PASSWORD_ENV: &str = "FLOWTALLY_CLICKHOUSE_PASSWORD";

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name).ok().map(Secret::new)
}

impl RunArgs {
    /// The configuration file with the flags and the `FLOWTALLY_*`
    /// secrets of the environment applied.
    pub fn load(self) -> Result<Config, ConfigError> {
        let radius_secret = match (self.radius_secret, self.radius_secret_file) {
            (Some(secret), _) => Some(SecretOverride::Argv(Secret::new(secret))),
            (None, Some(path)) => Some(SecretOverride::File(path)),
            (None, None) => env_secret(RADIUS_SECRET_ENV).map(SecretOverride::Env),
        };
        let overrides = Overrides {
            interfaces: self.interfaces,
            mode: self.mode,
            netflow: self.netflow,
            sflow: self.sflow,
            http: self.http,
            db: self.db,
            clickhouse: self.clickhouse,
            flush_interval: self.flush_interval,
            late_window: self.late_window,
            subscriber_networks: self.subscriber_networks,
            exporters: self.exporters,
            radius: self.radius,
            radius_secret,
            clickhouse_password: env_secret(CLICKHOUSE_PASSWORD_ENV),
        };
        Config::load(self.config.as_deref(), overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeatable_flags_collect_in_order() {
        let cli = Cli::try_parse_from([
            "flowtally",
            "run",
            "--iface",
            "lo",
            "--iface",
            "eth0",
            "--netflow",
            "127.0.0.1:0",
            "--flush-interval",
            "2s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed {cli:?}")
        };
        let config = args.load().unwrap();
        assert_eq!(config.interfaces, ["lo", "eth0"]);
        assert_eq!(config.netflow, ["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(config.flush_interval.to_string(), "2s");
    }

    #[test]
    fn a_bad_flag_value_is_a_usage_error_naming_the_flag() {
        let err = Cli::try_parse_from(["flowtally", "run", "--late-window", "later"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--late-window"), "{err}");
    }
}
