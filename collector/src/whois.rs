//! `flowtally whois IP|IP:PORT --at TIME --db PATH`: who held an address at
//! a moment, from the session history in the database; for a public port
//! of a carrier-grade NAT, which inside address its NAT binding led to, and
//! who held that. [`lookup`] gives the typed [`Answer`] (serialisable, for
//! the HTTP API); its `Display` is the text for people.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::Path,
    str::FromStr,
};

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::{
    nat::{Binding, Bindings, Limits},
    sessions::{History, Owner},
    sink::{nat_store, session_store},
    timestamp::Timestamp,
};

/// What is asked about: an address, or a public address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Address(IpAddr),
    /// `IP:PORT` or `[IPv6]:PORT`.
    Port(SocketAddr),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Address(ip));
        }
        s.parse::<SocketAddr>().map(Self::Port).map_err(|_| {
            format!(
                "{s:?} is not an address (192.0.2.1, 2001:db8::1) or IP:PORT ([2001:db8::1]:443)"
            )
        })
    }
}

/// Which NAT bindings a port lookup considers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortQuery {
    /// Egress VRF of the public side.
    pub vrf: u32,
    /// `None`: every protocol with a binding on the port.
    pub protocol: Option<u8>,
}

/// The answer to a whois.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// Who held an address.
    Address {
        ip: IpAddr,
        at_ms: u64,
        holder: Option<Owner>,
    },
    /// The NAT bindings of a public port (one per protocol at most), each
    /// with who held its inside address. Empty: no binding.
    Port {
        public: SocketAddr,
        vrf: u32,
        at_ms: u64,
        bindings: Vec<Bound>,
    },
}

/// A NAT binding, and the session that held its inside address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bound {
    pub binding: Binding,
    pub holder: Option<Owner>,
}

/// Answers `target` at `at` from the database at `db`.
pub fn lookup(
    db: &Path,
    target: Target,
    query: PortQuery,
    at: Timestamp,
) -> anyhow::Result<Answer> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open database {}", db.display()))?;
    let (sessions, addresses) = session_store::read(&conn)
        .with_context(|| format!("cannot read the session history of {}", db.display()))?;
    let history = History::from_rows(sessions, addresses);
    let public = match target {
        Target::Address(ip) => {
            return Ok(Answer::Address {
                ip,
                at_ms: at.0,
                holder: history.whois(ip, at.0),
            });
        }
        Target::Port(public) => public,
    };
    let rows = nat_store::spanning(&conn, public.ip(), public.port())
        .with_context(|| format!("cannot read the NAT bindings of {}", db.display()))?;
    // The rows carry their ends: the limits only bound memory here.
    let limits = Limits {
        max_lifetime_ms: 0,
        memory_retention_ms: u64::MAX,
        max_bindings: usize::MAX,
    };
    let bindings = Bindings::from_rows(limits, rows, 0);
    let (ip, port) = (public.ip(), public.port());
    let protocols = match query.protocol {
        Some(protocol) => vec![protocol],
        None => bindings.protocols(query.vrf, ip, port),
    };
    let mut found: Vec<Bound> = Vec::new();
    for protocol in protocols {
        let Some(binding) = bindings.lookup(query.vrf, ip, protocol, port, at.0) else {
            continue;
        };
        if found.iter().any(|b| b.binding.id == binding.id) {
            continue;
        }
        found.push(Bound {
            holder: history.whois(binding.inside_ip, at.0),
            binding,
        });
    }
    Ok(Answer::Port {
        public,
        vrf: query.vrf,
        at_ms: at.0,
        bindings: found,
    })
}

/// The answer, as lines for people.
pub fn whois(db: &Path, target: Target, query: PortQuery, at: Timestamp) -> anyhow::Result<String> {
    Ok(lookup(db, target, query, at)?.to_string())
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { ip, at_ms, holder } => {
                write!(f, "{ip} at {}: ", Timestamp(*at_ms))?;
                holder_text(f, holder.as_ref())
            }
            Self::Port {
                public,
                vrf,
                at_ms,
                bindings,
            } => {
                let vrf = match vrf {
                    0 => String::new(),
                    vrf => format!(" (VRF {vrf})"),
                };
                if bindings.is_empty() {
                    return write!(
                        f,
                        "{public}{vrf} at {}: no NAT binding of this port",
                        Timestamp(*at_ms)
                    );
                }
                for (i, bound) in bindings.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{public}{vrf} at {}: ", Timestamp(*at_ms))?;
                    binding_text(f, &bound.binding)?;
                    write!(f, "; {} then: ", bound.binding.inside_ip)?;
                    holder_text(f, bound.holder.as_ref())?;
                }
                Ok(())
            }
        }
    }
}

fn holder_text(f: &mut fmt::Formatter<'_>, holder: Option<&Owner>) -> fmt::Result {
    let Some(owner) = holder else {
        return write!(f, "nobody held this address");
    };
    write!(
        f,
        "{} (session {} on NAS {}), held from {} to {}",
        owner.user_name,
        owner.session_id,
        owner.nas,
        Timestamp(owner.from_ms),
        owner
            .to_ms
            .map_or("now (still open)".to_owned(), |ms| Timestamp(ms)
                .to_string()),
    )
}

fn binding_text(f: &mut fmt::Formatter<'_>, b: &Binding) -> fmt::Result {
    let protocol = match b.protocol {
        0 => "any protocol".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        n => format!("protocol {n}"),
    };
    let ports = if b.ports.is_one() {
        format!("port {}", b.ports.start)
    } else if b.ports.step == 1 {
        format!("port block {}-{}", b.ports.start, b.ports.end)
    } else {
        format!(
            "port block {}-{} step {}",
            b.ports.start, b.ports.end, b.ports.step
        )
    };
    let inside = match b.inside_port {
        Some(port) => SocketAddr::new(b.inside_ip, port).to_string(),
        None => b.inside_ip.to_string(),
    };
    let from = if b.start_seen {
        Timestamp(b.from_ms).to_string()
    } else {
        format!("{} at the earliest (create not seen)", Timestamp(b.from_ms))
    };
    let to = if b.deleted {
        Timestamp(b.to_ms).to_string()
    } else {
        format!("{} (no delete seen: max lifetime)", Timestamp(b.to_ms))
    };
    write!(
        f,
        "{protocol} {ports} bound to {inside} from {from} to {to}"
    )?;
    if b.inside_vrf != 0 {
        write!(f, " (inside VRF {})", b.inside_vrf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_addresses_or_ports_of_either_family() {
        assert_eq!(
            "198.51.100.1".parse(),
            Ok(Target::Address("198.51.100.1".parse().unwrap()))
        );
        assert_eq!(
            "198.51.100.1:1024".parse(),
            Ok(Target::Port("198.51.100.1:1024".parse().unwrap()))
        );
        assert_eq!(
            "[2001:db8::1]:443".parse(),
            Ok(Target::Port("[2001:db8::1]:443".parse().unwrap()))
        );
        assert_eq!(
            "2001:db8::1".parse(),
            Ok(Target::Address("2001:db8::1".parse().unwrap()))
        );
        let err = "198.51.100.1:http".parse::<Target>().unwrap_err();
        assert!(err.contains("IP:PORT"), "{err}");
    }
}
