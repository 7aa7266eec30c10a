//! Query parameters of the API, parsed the way the command line parses
//! the same values (times as `TimeArg`, networks as `parse_net`), with
//! errors that name the parameter. Unknown and repeated parameters are
//! errors too: a typo must not silently widen a query.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr, time::Duration};

use ipnet::IpNet;

use super::error::ApiError;
use crate::{
    cli::parse_net,
    timestamp::{TimeArg, Timestamp},
};

#[derive(Debug)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// `pairs` as decoded from the query string; `allowed` names every
    /// parameter the endpoint reads.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&'static str]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            let Some(&known) = allowed.iter().find(|a| **a == name) else {
                return Err(ApiError::parameter(
                    &name,
                    format!(
                        "unknown parameter; this endpoint takes {}",
                        allowed.join(", ")
                    ),
                ));
            };
            if values.insert(name, value).is_some() {
                return Err(ApiError::parameter(known, "given more than once"));
            }
        }
        Ok(Self { values })
    }

    /// The value, if given and not empty (an empty value is no value, as
    /// the console's empty form fields send).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn parsed<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|v| parse(v).map_err(|message| ApiError::parameter(name, message)))
            .transpose()
    }

    /// A time as the CLI takes it, resolved at `now`.
    pub fn time(&self, name: &'static str, now: Timestamp) -> Result<Option<Timestamp>, ApiError> {
        self.parsed(name, |v| v.parse::<TimeArg>().map(|t| t.at(now)))
    }

    /// An address or a network (`100.64.0.0/24`).
    pub fn net(&self, name: &'static str) -> Result<Option<IpNet>, ApiError> {
        self.parsed(name, parse_net)
    }

    /// A plain address.
    pub fn ip(&self, name: &'static str) -> Result<Option<IpAddr>, ApiError> {
        self.parsed(name, |v| {
            v.parse().map_err(|_| format!("{v:?} is not an IP address"))
        })
    }

    /// A duration like `5m`, `90s`, `1h`.
    pub fn duration(&self, name: &'static str) -> Result<Option<Duration>, ApiError> {
        self.parsed(name, |v| {
            humantime::parse_duration(v).map_err(|_| format!("{v:?} is not a duration like 5m"))
        })
    }

    /// A whole number in `range`.
    pub fn number<T>(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, ApiError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.parsed(name, |v| {
            v.parse::<T>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "{v:?} is not a whole number from {} to {}",
                        range.start(),
                        range.end()
                    )
                })
        })
    }

    /// One of `choices`, by name.
    pub fn choice<T: Copy>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ApiError> {
        self.parsed(name, |v| {
            choices
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                    format!("{v:?} is not one of {}", names.join(", "))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)], allowed: &[&'static str]) -> Result<Params, ApiError> {
        Params::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            allowed,
        )
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let err = params(&[("form", "x")], &["from", "to"]).unwrap_err();
        assert_eq!(err.parameter.as_deref(), Some("form"));
        assert!(err.message.contains("from, to"), "{}", err.message);
        let err = params(&[("to", "1"), ("to", "2")], &["to"]).unwrap_err();
        assert_eq!(err.parameter.as_deref(), Some("to"));
    }

    #[test]
    fn values_parse_as_on_the_command_line_and_errors_name_the_parameter() {
        let now = Timestamp(10_000_000);
        let p = params(
            &[
                ("from", "-1h"),
                ("to", "now"),
                ("ip", "100.64.0.0/24"),
                ("window", "5m"),
                ("limit", "0"),
                ("user", ""),
            ],
            &["from", "to", "ip", "window", "limit", "user"],
        )
        .unwrap();
        assert_eq!(
            p.time("from", now).unwrap(),
            Some(Timestamp(10_000_000 - 3_600_000))
        );
        assert_eq!(p.time("to", now).unwrap(), Some(now));
        assert_eq!(p.net("ip").unwrap(), Some("100.64.0.0/24".parse().unwrap()));
        assert_eq!(
            p.duration("window").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(p.text("user"), None, "empty is absent");
        let err = p.number("limit", 1..=10u32).unwrap_err();
        assert_eq!(err.parameter.as_deref(), Some("limit"));
        let err = p.ip("ip").unwrap_err();
        assert_eq!(err.parameter.as_deref(), Some("ip"));
        let p = params(&[("by", "class")], &["by"]).unwrap();
        let err = p.choice("by", &[("user", 1), ("org", 2)]).unwrap_err();
        assert_eq!(err.parameter.as_deref(), Some("by"));
        assert!(err.message.contains("user, org"), "{}", err.message);
    }
}
