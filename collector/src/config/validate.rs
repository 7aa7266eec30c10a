//! Checks of a loaded configuration, a function per section; each error
//! names the key and the flag that sets it ("-" when only the file does).

use std::time::Duration;

use flowtally_common::{
    MAX_EXPORTERS, MAX_SCOPE_ENTRIES, MAX_SUBSCRIBER_NETS, interfaces::MAX_INTERFACES,
};

use crate::daemon::receive::MAX_RECEIVE_THREADS;

use super::{
    AggregationConfig, CgnatConfig, ClickHouseConfig, Config, ConfigError, MapsConfig, Mode,
    NasConfig, QuotaAction, QuotaConfig, RadiusConfig, TemplatesConfig,
};

type Checked = Result<(), ConfigError>;

fn invalid(key: &'static str, flag: &'static str, message: impl Into<String>) -> Checked {
    Err(ConfigError::Invalid {
        key,
        flag,
        message: message.into(),
    })
}

impl Config {
    pub(super) fn validate(&self) -> Checked {
        self.intake()?;
        self.timing()?;
        self.accounting_scope()?;
        aggregation(&self.aggregation)?;
        maps(&self.maps)?;
        templates(&self.templates)?;
        if self.db.as_os_str().is_empty() {
            return invalid("db", "--db", "must not be empty");
        }
        self.http()?;
        clickhouse(&self.clickhouse)?;
        self.snmp()?;
        let waiting = self.late_window.0 + self.stop_grace.0;
        cgnat(&self.cgnat, waiting)?;
        self.classes()?;
        radius(&self.radius, waiting)?;
        nas(&self.radius.nas)?;
        let classes: Vec<&str> = self.classes.iter().map(|c| c.name.as_str()).collect();
        quotas(&self.quotas, &classes)
    }

    /// SNMP agents: credentials that fit the version, interfaces to poll.
    fn snmp(&self) -> Checked {
        let snmp = &self.snmp;
        if snmp.interval.0 < Duration::from_secs(1) {
            return invalid("snmp.interval", "-", "must be at least 1s");
        }
        if snmp.timeout.0.is_zero() || snmp.timeout.0 > snmp.interval.0 {
            return invalid(
                "snmp.timeout",
                "-",
                "must be above 0 and at most snmp.interval",
            );
        }
        for (i, agent) in snmp.agents.iter().enumerate() {
            let name = format!("agent {} ({})", i + 1, agent.exporter);
            match agent.version.as_str() {
                "2c" if agent.community.is_none() => {
                    return invalid(
                        "snmp.agents.community",
                        "-",
                        format!("{name}: v2c needs a community"),
                    );
                }
                "2c" => {}
                "3" => {
                    if agent.user.is_none() || agent.auth_password.is_none() {
                        return invalid(
                            "snmp.agents.user",
                            "-",
                            format!("{name}: v3 needs user and auth_password"),
                        );
                    }
                    if let Err(message) = crate::daemon::snmp_poll::security(agent) {
                        return invalid(
                            "snmp.agents.auth_protocol",
                            "-",
                            format!("{name}: {message}"),
                        );
                    }
                }
                other => {
                    return invalid(
                        "snmp.agents.version",
                        "-",
                        format!("{name}: {other:?} is neither \"2c\" nor \"3\""),
                    );
                }
            }
            if self.snmp_interfaces(agent).is_empty() {
                return invalid(
                    "snmp.agents.interfaces",
                    "-",
                    format!("{name}: no interfaces, and none in its billing_scope entry"),
                );
            }
        }
        if self.reconciled_interfaces().len() > MAX_INTERFACES as usize {
            return invalid(
                "snmp.agents.interfaces",
                "-",
                format!("at most {MAX_INTERFACES} interfaces with billing_scope"),
            );
        }
        Ok(())
    }

    /// Where and how flow exports come in.
    fn intake(&self) -> Checked {
        if self.mode == Mode::Xdp && self.interfaces.is_empty() {
            return invalid("interfaces", "--iface", "mode `xdp` needs an interface");
        }
        if let Some(name) = self.interfaces.iter().find(|name| !valid_ifname(name)) {
            return invalid(
                "interfaces",
                "--iface",
                format!("{name:?} is not an interface name"),
            );
        }
        if !(4096..=1 << 30).contains(&self.socket_receive_buffer) {
            return invalid(
                "socket_receive_buffer",
                "-",
                "must be between 4096 and 1073741824 bytes",
            );
        }
        if self.socket_receive_threads > MAX_RECEIVE_THREADS {
            return invalid(
                "socket_receive_threads",
                "-",
                format!("must be between 0 (one per CPU) and {MAX_RECEIVE_THREADS}"),
            );
        }
        if self.netflow.is_empty() {
            return invalid("netflow", "--netflow", "at least one address is needed");
        }
        if self.sflow.is_empty() {
            return invalid("sflow", "--sflow", "at least one address is needed");
        }
        if self.exporters.len() > MAX_EXPORTERS as usize {
            return invalid(
                "exporters",
                "--exporter",
                format!("at most {MAX_EXPORTERS} exporters"),
            );
        }
        Ok(())
    }

    fn timing(&self) -> Checked {
        if self.flush_interval.0 < Duration::from_millis(100) {
            return invalid(
                "flush_interval",
                "--flush-interval",
                "must be at least 100ms",
            );
        }
        if self.log_summary.0 < Duration::from_secs(1) {
            return invalid("log_summary", "-", "must be at least 1s");
        }
        Ok(())
    }

    /// The HTTP listener, under its old name too: off loopback, its API
    /// must not be open to the network.
    fn http(&self) -> Checked {
        if let Some(old) = self.metrics
            && old != self.http.listen
        {
            return invalid(
                "metrics",
                "--metrics",
                "is the old name of `http.listen`: give one of them",
            );
        }
        if !self.http.listen.ip().is_loopback() && self.http.token_file.is_none() {
            return invalid(
                "http.token_file",
                "-",
                format!(
                    "needed: the HTTP listener {} is not on loopback, and its API must not be \
                     open to the network",
                    self.http.listen
                ),
            );
        }
        Ok(())
    }

    /// Who is billed and which records count.
    fn accounting_scope(&self) -> Checked {
        if self.subscriber_nets().len() > MAX_SUBSCRIBER_NETS as usize {
            return invalid(
                "subscriber_networks",
                "--subscriber-net",
                format!("at most {MAX_SUBSCRIBER_NETS} networks, with cgnat.pools"),
            );
        }
        if self.scope_keys().len() > MAX_SCOPE_ENTRIES as usize {
            return invalid(
                "billing_scope",
                "-",
                format!("at most {MAX_SCOPE_ENTRIES} exporter/interface pairs"),
            );
        }
        if self.user_metrics_top > 1000 {
            return invalid(
                "user_metrics_top",
                "-",
                "at most 1000: per-user series must stay few",
            );
        }
        Ok(())
    }
}

fn aggregation(aggregation: &AggregationConfig) -> Checked {
    let bucket = aggregation.bucket.0;
    if bucket < Duration::from_millis(1) || bucket > Duration::from_secs(86_400) {
        return invalid("aggregation.bucket", "-", "must be between 1ms and 24h");
    }
    Ok(())
}

fn maps(maps: &MapsConfig) -> Checked {
    for (name, entries) in [
        ("maps.aggregate_entries", maps.aggregate_entries),
        ("maps.aggregate_entries_v6", maps.aggregate_entries_v6),
    ] {
        if !(1..=1 << 24).contains(&entries) {
            return invalid(name, "-", "must be between 1 and 16777216");
        }
    }
    let ring = maps.overflow_ring_bytes;
    if ring < 4096 || !ring.is_power_of_two() {
        return invalid(
            "maps.overflow_ring_bytes",
            "-",
            "must be a power of two, at least 4096",
        );
    }
    Ok(())
}

fn templates(templates: &TemplatesConfig) -> Checked {
    for (key, value) in [
        ("templates.max_per_exporter", templates.max_per_exporter),
        ("templates.max_fields", templates.max_fields),
        ("templates.max_record_bytes", templates.max_record_bytes),
    ] {
        if value == 0 {
            return invalid(key, "-", "must be at least 1");
        }
    }
    Ok(())
}

fn clickhouse(clickhouse: &ClickHouseConfig) -> Checked {
    // Credentials in the URL would be printed with it.
    if let Some(url) = &clickhouse.url
        && url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.split('/').next().unwrap_or_default().contains('@'))
    {
        return invalid(
            "clickhouse.url",
            "--clickhouse",
            "must not hold credentials: give `clickhouse.user` and `clickhouse.password_file`",
        );
    }
    if let Some(url) = &clickhouse.url
        && !url.starts_with("http://")
        && !url.starts_with("https://")
    {
        return invalid(
            "clickhouse.url",
            "--clickhouse",
            format!("{url:?} is not an http:// or https:// URL of ClickHouse's HTTP interface"),
        );
    }
    if clickhouse.ca_file.is_some()
        && !clickhouse
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    {
        return invalid(
            "clickhouse.ca_file",
            "-",
            "verifies an https:// server: `clickhouse.url` is not one",
        );
    }
    if !valid_identifier(&clickhouse.database) {
        return invalid(
            "clickhouse.database",
            "-",
            "must be letters, digits and underscores, not starting with a digit",
        );
    }
    if clickhouse.batch_rows == 0 {
        return invalid("clickhouse.batch_rows", "-", "must be at least 1");
    }
    if clickhouse.spool_max_rows == 0 {
        return invalid("clickhouse.spool_max_rows", "-", "must be at least 1");
    }
    Ok(())
}

/// `waiting` is how long usage rows may wait for their bindings (memory
/// keeps them at least that long).
fn cgnat(cgnat: &CgnatConfig, waiting: Duration) -> Checked {
    if cgnat.max_lifetime.0 < Duration::from_secs(1) {
        return invalid("cgnat.max_lifetime", "-", "must be at least 1s");
    }
    if let Some(retention) = cgnat.retention
        && retention.0 < cgnat.memory_retention.0.max(waiting)
    {
        return invalid(
            "cgnat.retention",
            "-",
            "must be at least cgnat.memory_retention and late_window + stop_grace: memory is \
             rebuilt from SQLite",
        );
    }
    if cgnat.max_bindings == 0 {
        return invalid("cgnat.max_bindings", "-", "must be at least 1");
    }
    Ok(())
}

/// `waiting` is how long usage rows may wait for their sessions
/// (late_window + stop_grace): the history must keep sessions that long.
fn radius(radius: &RadiusConfig, waiting: Duration) -> Checked {
    if radius
        .secret
        .as_ref()
        .is_some_and(|s| s.expose().is_empty())
    {
        return invalid("radius.secret", "--radius-secret", "must not be empty");
    }
    if let Some(client) = radius
        .clients
        .iter()
        .find(|c| c.secret.as_ref().is_none_or(|s| s.expose().is_empty()))
    {
        return invalid(
            "radius.clients.secret",
            "-",
            format!(
                "client {}: needs a secret (`secret`, `secret_file` or `secret_env`)",
                client.address
            ),
        );
    }
    if radius.rate_limit == 0 {
        return invalid("radius.rate_limit", "-", "must be at least 1");
    }
    if radius.nas_max_open_sessions == 0 {
        return invalid("radius.nas_max_open_sessions", "-", "must be at least 1");
    }
    if radius.nas_new_sessions_per_minute == 0 {
        return invalid(
            "radius.nas_new_sessions_per_minute",
            "-",
            "must be at least 1",
        );
    }
    if radius.silence_multiple == 0 {
        return invalid("radius.silence_multiple", "-", "must be at least 1");
    }
    if radius.history_retention.0 < waiting {
        return invalid(
            "radius.history_retention",
            "-",
            "must be at least late_window + stop_grace: rows still waiting need their sessions",
        );
    }
    if radius.default_interim.0 < Duration::from_secs(1) {
        return invalid("radius.default_interim", "-", "must be at least 1s");
    }
    Ok(())
}

/// The NASes quotas are enforced at: one entry per address, a secret each.
fn nas(entries: &[NasConfig]) -> Checked {
    for (i, nas) in entries.iter().enumerate() {
        let name = format!("nas {} ({})", i + 1, nas.address);
        if nas.secret.as_ref().is_none_or(|s| s.expose().is_empty()) {
            return invalid(
                "radius.nas.secret",
                "-",
                format!("{name}: needs a secret (`secret`, `secret_file` or `secret_env`)"),
            );
        }
        if nas.coa_port == 0 {
            return invalid("radius.nas.coa_port", "-", format!("{name}: must not be 0"));
        }
        if nas.timeout.0 < Duration::from_millis(10) || nas.timeout.0 > Duration::from_secs(60) {
            return invalid(
                "radius.nas.timeout",
                "-",
                format!("{name}: must be from 10ms to 60s"),
            );
        }
        if nas.retries > 10 || nas.nak_retries > 10 {
            return invalid(
                "radius.nas.retries",
                "-",
                format!("{name}: retries and nak_retries are at most 10"),
            );
        }
        if entries[..i]
            .iter()
            .any(|other| other.address == nas.address)
        {
            return invalid("radius.nas.address", "-", format!("{name}: listed twice"));
        }
    }
    Ok(())
}

/// Quotas: a name each, a budget, the users, what counts and what is done.
/// `classes`: the names `[[classes]]` defines.
fn quotas(quotas: &[QuotaConfig], classes: &[&str]) -> Checked {
    for (i, quota) in quotas.iter().enumerate() {
        let name = if quota.name.is_empty() {
            return invalid(
                "quotas.name",
                "-",
                format!("quota {}: must not be empty", i + 1),
            );
        } else {
            &quota.name
        };
        if quotas[..i].iter().any(|other| &other.name == name) {
            return invalid("quotas.name", "-", format!("{name:?} is defined twice"));
        }
        if quota.bytes == 0 {
            return invalid("quotas.bytes", "-", format!("{name}: must be at least 1"));
        }
        let users = quota.users.names();
        if users.is_empty() || users.iter().any(String::is_empty) {
            return invalid(
                "quotas.users",
                "-",
                format!("{name}: user names, or \"*\" for everyone"),
            );
        }
        if quota.users.everyone() && users.len() > 1 {
            return invalid(
                "quotas.users",
                "-",
                format!("{name}: \"*\" is everyone, list no names beside it"),
            );
        }
        let everything = quota.classes == ["*"];
        if !everything {
            if quota.classes.is_empty() || quota.classes.iter().any(|c| c == "*") {
                return invalid(
                    "quotas.classes",
                    "-",
                    format!("{name}: [\"*\"] for all traffic, or the classes that count"),
                );
            }
            if let Some(unknown) = quota
                .classes
                .iter()
                .find(|c| !classes.contains(&c.as_str()))
            {
                return invalid(
                    "quotas.classes",
                    "-",
                    format!("{name}: {unknown:?} is not a class defined in [[classes]]"),
                );
            }
        }
        if let Some(bad) = quota.notify_at.iter().find(|f| !(**f > 0.0 && **f < 1.0)) {
            return invalid(
                "quotas.notify_at",
                "-",
                format!("{name}: {bad} is not a fraction of the quota between 0 and 1"),
            );
        }
        match quota.action {
            QuotaAction::Coa if quota.coa_attributes.is_empty() => {
                return invalid(
                    "quotas.coa_attributes",
                    "-",
                    format!("{name}: action \"coa\" needs attributes to set, e.g. Filter-Id"),
                );
            }
            QuotaAction::Disconnect if !quota.coa_attributes.is_empty() => {
                return invalid(
                    "quotas.coa_attributes",
                    "-",
                    format!("{name}: only for action \"coa\""),
                );
            }
            _ => {}
        }
        for (attribute, value) in &quota.coa_attributes {
            if let Err(message) = crate::radius::coa::change(attribute, value) {
                return invalid("quotas.coa_attributes", "-", format!("{name}: {message}"));
            }
        }
        if quota.action != QuotaAction::Coa && !quota.restore_attributes.is_empty() {
            return invalid(
                "quotas.restore_attributes",
                "-",
                format!("{name}: only for action \"coa\" (a disconnect has nothing to lift)"),
            );
        }
        for (attribute, value) in &quota.restore_attributes {
            if let Err(message) = crate::radius::coa::change(attribute, value) {
                return invalid(
                    "quotas.restore_attributes",
                    "-",
                    format!("{name}: {message}"),
                );
            }
        }
    }
    Ok(())
}

/// A ClickHouse database name we can splice into SQL unquoted.
fn valid_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
fn valid_ifname(name: &str) -> bool {
    (1..16).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}
