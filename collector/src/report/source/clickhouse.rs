//! The report's rows from ClickHouse: the same usage sums, sessions and
//! address intervals as from SQLite, from every instance.

use std::{collections::HashMap, path::PathBuf, str::FromStr};

use anyhow::Context as _;
use clickhouse::{Client, Row};
use flowtally_common::agg::Direction;
use serde::Deserialize;

use super::Rows;
use crate::{
    config::Secret,
    report::Usage,
    sessions::{AddressRow, SessionRow},
    sink::clickhouse::{Endpoint, client},
};

#[derive(Row, Deserialize)]
struct UsageSum {
    bucket_start_ms: i64,
    bucket_width_ms: i64,
    user_name: Option<String>,
    session_id: Option<String>,
    subscriber_ip: String,
    direction: i8,
    bytes: u64,
    packets: u64,
    flows: u64,
    class: Option<String>,
}

#[derive(Row, Deserialize)]
struct Session {
    user_name: String,
    nas: String,
    session_id: String,
    framed_ip: Option<String>,
    framed_prefix: Option<String>,
    start_ms: i64,
    stop_ms: Option<i64>,
    last_update_ms: i64,
    nas_port_id: Option<String>,
    calling_station_id: Option<String>,
    input_octets: Option<u64>,
    output_octets: Option<u64>,
    terminate_cause: Option<String>,
    interim_interval_s: Option<u32>,
}

#[derive(Row, Deserialize)]
struct Address {
    nas: String,
    session_id: String,
    start_ms: i64,
    net: String,
    from_ms: i64,
    to_ms: Option<i64>,
}

// FINAL folds rows a retried delivery sent twice, and older session
// states, before they are counted.

/// Usage in `[?, ?)` by bucket start, summed like the SQLite report.
pub const USAGE_SUMS: &str = "
SELECT bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
    CAST(direction AS Int8), sum(bytes), sum(packets), sum(flows), class
FROM usage FINAL WHERE bucket_start_ms >= ? AND bucket_start_ms < ?
GROUP BY bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip, direction,
    class";

pub const SESSIONS: &str = "
SELECT user_name, nas, session_id, framed_ip, framed_prefix, start_ms, stop_ms,
    last_update_ms, nas_port_id, calling_station_id, input_octets, output_octets,
    terminate_cause, interim_interval_s
FROM sessions FINAL ORDER BY start_ms, nas, session_id";

pub const ADDRESSES: &str = "
SELECT nas, session_id, start_ms, net, from_ms, to_ms FROM session_addresses FINAL";

/// Where a shared ClickHouse is and who reads it.
#[derive(Clone, Debug)]
pub struct ClickHouseSource {
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// CAs trusted instead of the system's, for an https:// URL.
    pub ca_file: Option<PathBuf>,
}

impl ClickHouseSource {
    /// See [`read`]; a runtime of its own, for callers without one.
    pub fn read_blocking(&self, from_ms: u64, to_ms: u64) -> anyhow::Result<Rows> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.read(from_ms, to_ms))
    }

    pub async fn read(&self, from_ms: u64, to_ms: u64) -> anyhow::Result<Rows> {
        let client = client(&Endpoint {
            url: &self.url,
            database: &self.database,
            user: self.user.as_deref(),
            password: self.password.as_ref().map(Secret::expose),
            ca_file: self.ca_file.as_deref(),
        })?;
        read(&client, from_ms, to_ms).await
    }
}

/// Usage rows whose bucket starts in `[from_ms, to_ms)`, summed like the
/// SQLite report, and all sessions with their addresses (ids made here).
pub async fn read(client: &Client, from_ms: u64, to_ms: u64) -> anyhow::Result<Rows> {
    let usage = client
        .query(USAGE_SUMS)
        .bind(from_ms as i64)
        .bind(to_ms as i64)
        .fetch_all::<UsageSum>()
        .await
        .context("reading usage")?
        .into_iter()
        .map(UsageSum::into_usage)
        .collect::<anyhow::Result<_>>()?;
    let sessions = client
        .query(SESSIONS)
        .fetch_all::<Session>()
        .await
        .context("reading sessions")?;
    let addresses = client
        .query(ADDRESSES)
        .fetch_all::<Address>()
        .await
        .context("reading session_addresses")?;

    let mut ids = HashMap::new();
    let sessions = sessions
        .into_iter()
        .zip(1..)
        .map(|(s, id)| {
            ids.insert((s.nas.clone(), s.session_id.clone(), s.start_ms), id);
            s.into_row(id)
        })
        .collect::<anyhow::Result<_>>()?;
    // An address whose session is not delivered yet waits for it.
    let addresses = addresses
        .into_iter()
        .filter_map(|a| {
            let session = *ids.get(&(a.nas, a.session_id, a.start_ms))?;
            Some(parse(&a.net, "an address").map(|net| AddressRow {
                session,
                net,
                from_ms: a.from_ms as u64,
                to_ms: a.to_ms.map(|ms| ms as u64),
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((usage, sessions, addresses))
}

impl UsageSum {
    fn into_usage(self) -> anyhow::Result<Usage> {
        Ok(Usage {
            bucket_start_ms: self.bucket_start_ms as u64,
            bucket_width_ms: self.bucket_width_ms as u64,
            user_name: self.user_name,
            session_id: self.session_id,
            subscriber_ip: parse(&self.subscriber_ip, "an address")?,
            direction: match self.direction {
                1 => Direction::Up,
                2 => Direction::Down,
                3 => Direction::Transit,
                other => anyhow::bail!("usage.direction {other} is not up, down or transit"),
            },
            bytes: self.bytes,
            packets: self.packets,
            flows: self.flows,
            class: self.class,
        })
    }
}

impl Session {
    fn into_row(self, id: u64) -> anyhow::Result<SessionRow> {
        Ok(SessionRow {
            id,
            framed_ip: self
                .framed_ip
                .map(|ip| parse(&ip, "an IPv4 address"))
                .transpose()?,
            framed_prefix: self
                .framed_prefix
                .map(|net| parse(&net, "an IPv6 prefix"))
                .transpose()?,
            user_name: self.user_name,
            nas: self.nas,
            session_id: self.session_id,
            start_ms: self.start_ms as u64,
            stop_ms: self.stop_ms.map(|ms| ms as u64),
            last_update_ms: self.last_update_ms as u64,
            interim_interval_s: self.interim_interval_s,
            nas_port_id: self.nas_port_id,
            calling_station_id: self.calling_station_id,
            class: None,
            input_octets: self.input_octets,
            output_octets: self.output_octets,
            terminate_cause: self.terminate_cause,
        })
    }
}

fn parse<T: FromStr>(text: &str, what: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("not {what}: {text:?}"))
}
