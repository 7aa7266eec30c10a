//! What a report's rows are about: users, sessions, subnets or
//! organisations, and which usage and time online goes to which.

use ipnet::IpNet;

use super::{Usage, orgs::Orgs};
use crate::sessions::{AddressRow, SessionRow};

/// The `--by` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    User,
    Session,
    Subnet,
    Org,
    /// The destination class of the peer.
    Class,
}

/// How usage and time online map to groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    User,
    /// User and Acct-Session-Id.
    Session,
    /// The subscriber address's network of these prefix lengths.
    Subnet {
        v4: u8,
        v6: u8,
    },
    Org(Orgs),
    /// `usage.class`.
    Class,
}

/// A name, or none: usage nobody held the address for, an address in no
/// organisation's network. None sorts last.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    Known(String),
    Unknown,
}

impl From<Option<&str>> for Name {
    fn from(name: Option<&str>) -> Self {
        name.map_or(Self::Unknown, |name| Self::Known(name.to_owned()))
    }
}

/// One group of a report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    User(Name),
    /// The session id is empty when the user is unknown.
    Session(Name, String),
    Subnet(IpNet),
    Org(Name),
    Class(Name),
}

/// Shown for [`Name::Unknown`]: in parentheses, like every name flowtally
/// makes up.
const UNATTRIBUTED: &str = "(unattributed)";
const NO_ORG: &str = "(none)";
const NO_CLASS: &str = "(unclassified)";

impl Key {
    /// The key's columns, as [`Grouping::columns`] names them.
    pub fn cells(&self) -> Vec<String> {
        let name = |name: &Name, unknown: &str| match name {
            Name::Known(name) => name.clone(),
            Name::Unknown => unknown.to_owned(),
        };
        match self {
            Self::User(user) => vec![name(user, UNATTRIBUTED)],
            Self::Session(user, session) => vec![name(user, UNATTRIBUTED), session.clone()],
            Self::Subnet(net) => vec![net.to_string()],
            Self::Org(org) => vec![name(org, NO_ORG)],
            Self::Class(class) => vec![name(class, NO_CLASS)],
        }
    }
}

/// One stretch of time online for a group, `[from_ms, to_ms)`.
pub struct Online {
    pub key: Key,
    pub from_ms: u64,
    pub to_ms: u64,
}

impl Grouping {
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            Self::User => &["user"],
            Self::Session => &["user", "session"],
            Self::Subnet { .. } => &["subnet"],
            Self::Org(_) => &["org"],
            Self::Class => &["class"],
        }
    }

    /// The group of a usage row that is not transit.
    pub fn usage_key(&self, row: &Usage) -> Key {
        let user = || Name::from(row.user_name.as_deref());
        match self {
            Self::User => Key::User(user()),
            Self::Session => Key::Session(user(), row.session_id.clone().unwrap_or_default()),
            Self::Subnet { v4, v6 } => Key::Subnet(
                subnet(IpNet::from(row.subscriber_ip), *v4, *v6)
                    .expect("an address is as long as any prefix"),
            ),
            Self::Org(orgs) => Key::Org(orgs.find(IpNet::from(row.subscriber_ip)).into()),
            Self::Class => Key::Class(Name::from(row.class.as_deref())),
        }
    }

    /// Whether a group's time online is the union of its stretches (several
    /// subscribers at once are online once) rather than their sum (each
    /// session of a user counts).
    pub fn unites_online(&self) -> bool {
        matches!(self, Self::Subnet { .. } | Self::Org(_))
    }

    /// Time online: per session for users and sessions, from its start to
    /// its stop; per address held for subnets and organisations, from its
    /// `session_addresses` row. Whatever is still open ends at `now_ms`.
    pub fn online(
        &self,
        sessions: &[SessionRow],
        addresses: &[AddressRow],
        now_ms: u64,
    ) -> Vec<Online> {
        let per_session = |key: &dyn Fn(&SessionRow) -> Key| {
            sessions
                .iter()
                .map(|s| Online {
                    key: key(s),
                    from_ms: s.start_ms,
                    to_ms: s.stop_ms.unwrap_or(now_ms),
                })
                .collect()
        };
        let per_address = |key: &dyn Fn(IpNet) -> Option<Key>| {
            addresses
                .iter()
                .filter_map(|a| {
                    Some(Online {
                        key: key(a.net)?,
                        from_ms: a.from_ms,
                        to_ms: a.to_ms.unwrap_or(now_ms),
                    })
                })
                .collect()
        };
        let user = |s: &SessionRow| Name::Known(s.user_name.clone());
        match self {
            Self::User => per_session(&|s| Key::User(user(s))),
            Self::Session => per_session(&|s| Key::Session(user(s), s.session_id.clone())),
            Self::Subnet { v4, v6 } => per_address(&|net| subnet(net, *v4, *v6).map(Key::Subnet)),
            Self::Org(orgs) => per_address(&|net| Some(Key::Org(orgs.find(net).into()))),
            // Sessions have no destination: time online is no class's.
            Self::Class => Vec::new(),
        }
    }
}

/// The subnet, `v4` or `v6` bits long, that holds all of `net`; none when
/// `net` is wider (a delegated /56 is in no /64).
fn subnet(net: IpNet, v4: u8, v6: u8) -> Option<IpNet> {
    let len = match net {
        IpNet::V4(_) => v4,
        IpNet::V6(_) => v6,
    };
    if len > net.prefix_len() {
        return None;
    }
    IpNet::new(net.addr(), len).ok().map(|net| net.trunc())
}
