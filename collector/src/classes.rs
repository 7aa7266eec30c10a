//! Destination classes: named prefix lists (`local`, `ix`, `national`...)
//! that say where a record's peer is. The rules:
//!
//! - Classes are numbered from 1 in the configuration's order; 0
//!   (`agg::NO_CLASS`) is a peer in no list. The number is what the kernel
//!   and the socket path put into an aggregate's key, the name what
//!   `usage.class` holds (NULL for none), so reordering the configuration
//!   renames nothing already written.
//! - A class's networks come from `networks` (TOML) and `files` (plain
//!   CIDR lists: one network or address per line, `#` comments, blank
//!   lines), IPv4 and IPv6 alike.
//! - The longest prefix holding the peer wins, whichever class it is in
//!   (a national /8 with a local /24 inside it). One network in two
//!   classes is an error naming both.
//! - The peer is `agg::peer`: the side that is not the subscriber's.
//!
//! The kernel looks classes up in its `CLASS_NETS` trie; [`ClassNets`] is
//! its userspace twin, matching on the same 16-byte form.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use flowtally_common::{MAX_CLASS_NETS, MAX_CLASSES, agg::Ip, class_table};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ip::to_prefix;

/// One `[[classes]]` entry of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    pub name: String,
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// Plain CIDR lists.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    #[error("class {0}: `name` must not be empty")]
    NoName(usize),
    #[error("class {0:?} is defined twice")]
    Duplicate(String),
    #[error("at most {MAX_CLASSES} classes")]
    TooMany,
    #[error("at most {MAX_CLASS_NETS} class networks in all")]
    TooManyNetworks,
    #[error("cannot read {path} (class {class:?}): {error}")]
    Read {
        class: String,
        path: PathBuf,
        error: String,
    },
    #[error("{path}:{line} (class {class:?}): {text:?} is not a network or address")]
    Line {
        class: String,
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("network {net} is in class {first:?} and in class {second:?}")]
    TwoClasses {
        net: IpNet,
        first: String,
        second: String,
    },
}

/// The classes of a configuration, their files read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    /// Index `i` is class `i + 1`.
    names: Vec<String>,
    /// Each network once, with its class.
    nets: BTreeMap<IpNet, u8>,
}

impl Classes {
    /// Reads the lists of `configs` (files through `read`).
    pub fn load(
        configs: &[ClassConfig],
        read: impl Fn(&std::path::Path) -> std::io::Result<String>,
    ) -> Result<Self, ClassError> {
        if configs.len() > MAX_CLASSES {
            return Err(ClassError::TooMany);
        }
        let mut classes = Self::default();
        for (index, config) in configs.iter().enumerate() {
            if config.name.trim().is_empty() {
                return Err(ClassError::NoName(index + 1));
            }
            if classes.names.contains(&config.name) {
                return Err(ClassError::Duplicate(config.name.clone()));
            }
            classes.names.push(config.name.clone());
            let class = (index + 1) as u8;
            for net in &config.networks {
                classes.insert(*net, class)?;
            }
            for path in &config.files {
                let text = read(path).map_err(|error| ClassError::Read {
                    class: config.name.clone(),
                    path: path.clone(),
                    error: error.to_string(),
                })?;
                for (line, net) in parse_list(&text) {
                    let net = net.map_err(|text| ClassError::Line {
                        class: config.name.clone(),
                        path: path.clone(),
                        line,
                        text,
                    })?;
                    classes.insert(net, class)?;
                }
            }
        }
        Ok(classes)
    }

    fn insert(&mut self, net: IpNet, class: u8) -> Result<(), ClassError> {
        let net = net.trunc();
        match self.nets.insert(net, class) {
            Some(other) if other != class => Err(ClassError::TwoClasses {
                net,
                first: self.names[usize::from(other) - 1].clone(),
                second: self.names[usize::from(class) - 1].clone(),
            }),
            _ if self.nets.len() > MAX_CLASS_NETS as usize => Err(ClassError::TooManyNetworks),
            _ => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of class number `class`; none for 0 or an unknown number.
    pub fn name(&self, class: u8) -> Option<&str> {
        let index = usize::from(class).checked_sub(1)?;
        self.names.get(index).map(String::as_str)
    }

    /// Every network with its class number: what the kernel's trie holds.
    pub fn networks(&self) -> impl Iterator<Item = (IpNet, u8)> + '_ {
        self.nets.iter().map(|(net, class)| (*net, *class))
    }

    /// The socket path's lookup.
    pub fn lookup(&self) -> ClassNets {
        let mut by_len: BTreeMap<u8, HashMap<u128, u8>> = BTreeMap::new();
        for (net, class) in self.networks() {
            let (ip, len) = to_prefix(&net);
            by_len
                .entry(len)
                .or_default()
                .insert(u128::from_be_bytes(ip) & mask(len), class);
        }
        ClassNets {
            by_len: by_len.into_iter().rev().collect(),
        }
    }
}

/// The kernel's IPv4 class table for `networks` (see
/// `flowtally_common::class_table`): its non-zero words, by index.
pub fn class_table(networks: &[(IpNet, u8)]) -> Vec<(u32, u64)> {
    let mut v4: Vec<_> = networks
        .iter()
        .filter_map(|(net, class)| match net {
            IpNet::V4(v4) => Some((v4.prefix_len(), v4.network().to_bits(), *class)),
            IpNet::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Vec::new();
    }
    // Shortest first: longer prefixes override what they cover.
    v4.sort_unstable();
    let mut words = vec![0u64; class_table::V4_TABLE_WORDS as usize];
    for (len, addr, class) in v4 {
        class_table::mark_v4(&mut words, addr, len, class);
    }
    (0..).zip(words).filter(|&(_, word)| word != 0).collect()
}

/// Each line of a plain CIDR list that holds a network: its number (from
/// 1) and the network, or the text that is none.
fn parse_list(text: &str) -> impl Iterator<Item = (usize, Result<IpNet, String>)> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then(|| (i + 1, crate::cli::parse_net(line).map_err(|_| line.into())))
    })
}

fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Longest-prefix match of class networks, in the kernel trie's 16-byte
/// form: the prefix lengths present, longest first, each with its
/// networks.
#[derive(Clone, Debug, Default)]
pub struct ClassNets {
    by_len: Vec<(u8, HashMap<u128, u8>)>,
}

impl ClassNets {
    /// The class of `ip` (`NO_CLASS` when no network holds it).
    pub fn class_of(&self, ip: &Ip) -> u8 {
        let ip = u128::from_be_bytes(*ip);
        self.by_len
            .iter()
            .find_map(|(len, nets)| nets.get(&(ip & mask(*len))).copied())
            .unwrap_or(flowtally_common::agg::NO_CLASS)
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::to_ip;

    fn class(name: &str, networks: &[&str], files: &[&str]) -> ClassConfig {
        ClassConfig {
            name: name.into(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    fn no_files(_: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    #[test]
    fn the_longest_prefix_wins_across_classes_and_families() {
        let classes = Classes::load(
            &[
                class("national", &["198.0.0.0/8", "2001:db8::/32"], &[]),
                class("local", &["198.18.200.0/24", "2001:db8:200::/48"], &[]),
                class("ix", &["198.18.200.128/25"], &[]),
            ],
            no_files,
        )
        .unwrap();
        let nets = classes.lookup();
        let of = |addr: &str| classes.name(nets.class_of(&to_ip(addr.parse().unwrap())));
        assert_eq!(of("198.1.2.3"), Some("national"));
        assert_eq!(of("198.18.200.7"), Some("local"));
        assert_eq!(of("198.18.200.200"), Some("ix"));
        assert_eq!(of("203.0.113.1"), None);
        assert_eq!(of("2001:db8:200::9"), Some("local"));
        assert_eq!(of("2001:db8:1::9"), Some("national"));
        assert_eq!(of("2001:db9::1"), None);
        // An IPv4 /8 holds no IPv6 address, even one ending in its bytes.
        assert_eq!(of("::c612:c807"), None);
        assert_eq!(classes.name(0), None);
        assert_eq!(classes.name(4), None);
    }

    #[test]
    fn files_are_plain_cidr_lists_with_comments() {
        let read = |path: &std::path::Path| {
            assert_eq!(path, std::path::Path::new("/etc/ix.txt"));
            Ok("# DE-CIX\n198.18.64.0/22\n\n  2001:db8:64::/48  # v6\n198.18.70.1\n".to_owned())
        };
        let classes = Classes::load(&[class("ix", &[], &["/etc/ix.txt"])], read).unwrap();
        let nets: Vec<String> = classes.networks().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            nets,
            ["198.18.64.0/22", "198.18.70.1/32", "2001:db8:64::/48"]
        );
        let bad = |_: &std::path::Path| Ok("198.18.64.0/22\n198.18.64.0/33\n".to_owned());
        let err = Classes::load(&[class("ix", &[], &["/etc/ix.txt"])], bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/ix.txt:2 (class \"ix\"): \"198.18.64.0/33\" is not a network or address"
        );
        let err = Classes::load(&[class("ix", &[], &["/missing"])], no_files).unwrap_err();
        assert!(err.to_string().starts_with("cannot read /missing"), "{err}");
    }

    /// What the kernel answers: the /24 table where it knows, else the
    /// longest prefix (the trie, played here by the socket path's match,
    /// whose agreement with the kernel's trie the parity tests check).
    #[test]
    fn the_kernel_table_agrees_with_the_longest_prefix_wherever_it_answers() {
        let classes = Classes::load(
            &[
                class("national", &["198.0.0.0/8", "203.0.113.0/24"], &[]),
                class("local", &["198.18.0.0/16", "198.19.0.128/25"], &[]),
                class(
                    "ix",
                    &["198.18.7.0/24", "198.18.9.4/30", "2001:db8::/32"],
                    &[],
                ),
            ],
            no_files,
        )
        .unwrap();
        let networks: Vec<_> = classes.networks().collect();
        let table: std::collections::HashMap<u32, u64> =
            class_table(&networks).into_iter().collect();
        let nets = classes.lookup();
        let mut asked = 0;
        for addr in [
            "198.1.2.3",
            "198.18.0.1",
            "198.18.7.9",
            "198.18.9.3",
            "198.18.9.5",
            "198.19.0.1",
            "198.19.0.200",
            "203.0.113.77",
            "203.0.114.1",
            "10.0.0.1",
        ] {
            let v4: std::net::Ipv4Addr = addr.parse().unwrap();
            let (word, shift) = class_table::slot(v4.to_bits());
            let byte = class_table::state(table.get(&word).copied().unwrap_or(0), shift);
            let exact = nets.class_of(&to_ip(v4.into()));
            if byte == class_table::ASK_TRIE {
                asked += 1;
            } else {
                assert_eq!(byte, exact, "{addr}");
            }
        }
        // 198.18.9.0/24 and 198.19.0.0/24 hold longer prefixes.
        assert_eq!(asked, 4);
        assert!(class_table(&[]).is_empty());
    }

    #[test]
    fn one_network_in_two_classes_or_one_name_twice_is_refused() {
        let err = Classes::load(
            &[
                class("a", &["198.18.0.0/16"], &[]),
                class("b", &["198.18.1.2/16"], &[]),
            ],
            no_files,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "network 198.18.0.0/16 is in class \"a\" and in class \"b\""
        );
        let err = Classes::load(&[class("a", &[], &[]), class("a", &[], &[])], no_files);
        assert_eq!(err, Err(ClassError::Duplicate("a".into())));
        let err = Classes::load(&[class(" ", &[], &[])], no_files);
        assert_eq!(err, Err(ClassError::NoName(1)));
        // The same network twice in one class is harmless.
        let ok = Classes::load(
            &[class("a", &["198.18.0.0/16", "198.18.0.0/16"], &[])],
            no_files,
        );
        assert_eq!(ok.unwrap().networks().count(), 1);
    }
}
