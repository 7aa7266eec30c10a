//! `[[quotas]]` and the `[[radius.nas]]` they are enforced at (RFC 5176).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Secret, Span};
use crate::report::periods::Offset;

/// A NAS that accepts Disconnect- and CoA-Requests for its sessions.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NasConfig {
    /// The NAS-IP-Address (or NAS-IPv6-Address) its sessions report, or
    /// the address their accounting comes from.
    pub address: IpAddr,
    /// The NAS-Identifier its sessions report, for a NAS that sends no
    /// address attribute.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Where requests go, when not to `address`.
    #[serde(default)]
    pub coa_address: Option<IpAddr>,
    #[serde(default = "NasConfig::default_port")]
    pub coa_port: u16,
    /// Shared for Disconnect/CoA; or from a file (`secret_file`) or an
    /// environment variable (`secret_env`): one of the three is required.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// How long the first try waits for an answer; each retransmission
    /// waits twice as long as the one before.
    #[serde(default = "NasConfig::default_timeout")]
    pub timeout: Span,
    /// Retransmissions after the first try before giving up (`timeout`).
    #[serde(default = "NasConfig::default_retries")]
    pub retries: u32,
    /// New requests after a NAK (each recorded), `timeout` apart.
    #[serde(default)]
    pub nak_retries: u32,
}

impl NasConfig {
    fn default_port() -> u16 {
        3799
    }

    fn default_timeout() -> Span {
        Span(Duration::from_secs(2))
    }

    fn default_retries() -> u32 {
        3
    }
}

/// One quota: a byte budget per user and calendar period.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub name: String,
    /// User names, or `"*"` for everyone.
    pub users: Users,
    pub period: PeriodKind,
    /// Of the calendar the periods follow (the tariff's: a fixed offset).
    #[serde(default)]
    pub timezone: Offset,
    pub bytes: u64,
    #[serde(default)]
    pub direction: QuotaDirection,
    /// Destination classes that count; only `["*"]` (all) for now.
    #[serde(default = "QuotaConfig::all_classes")]
    pub classes: Vec<String>,
    #[serde(default)]
    pub action: QuotaAction,
    /// What a `coa` action sets, by dictionary name.
    #[serde(default)]
    pub coa_attributes: BTreeMap<String, String>,
    /// What a CoA sets, in the next period, on sessions a `coa` action
    /// changed and that are still open (none: nothing is lifted).
    #[serde(default)]
    pub restore_attributes: BTreeMap<String, String>,
    /// Fractions of `bytes` that are logged and counted when crossed.
    #[serde(default)]
    pub notify_at: Vec<f64>,
}

impl QuotaConfig {
    fn all_classes() -> Vec<String> {
        vec!["*".to_owned()]
    }
}

/// `"*"` or a list of user names (`["*"]` is everyone too).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Users {
    One(String),
    List(Vec<String>),
}

impl Users {
    pub fn names(&self) -> &[String] {
        match self {
            Self::One(name) => std::slice::from_ref(name),
            Self::List(names) => names,
        }
    }

    pub fn everyone(&self) -> bool {
        self.names().iter().any(|name| name == "*")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    Day,
    /// Monday to Sunday.
    Week,
    Month,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaDirection {
    Up,
    Down,
    #[default]
    Both,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaAction {
    #[default]
    Disconnect,
    Coa,
}
