//! Rows as ClickHouse stores them: SQLite's columns, plus what identifies a
//! redelivered usage row (`writer`, `local_id`) or orders the states of a
//! session (`version`).

use clickhouse::Row;
use serde::{Deserialize, Serialize, Serializer};

use crate::sessions::SessionRow;

/// `Enum8('up' = 1, 'down' = 2, 'transit' = 3)`.
pub fn direction_code(direction: &str) -> Option<i8> {
    match direction {
        "up" => Some(1),
        "down" => Some(2),
        "transit" => Some(3),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UsageRecord {
    pub bucket_start_ms: i64,
    pub bucket_width_ms: i64,
    pub user_name: Option<String>,
    pub session_id: Option<String>,
    pub subscriber_ip: String,
    pub direction: i8,
    pub peer_ip: Option<String>,
    pub protocol: Option<u8>,
    pub subscriber_port: Option<u16>,
    pub peer_port: Option<u16>,
    pub exporter: Option<String>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub writer: String,
    pub local_id: i64,
    /// The peer's destination class.
    pub class: Option<String>,
    /// Why the row has no user (`crate::usage::Unattributed`).
    pub unattributed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize)]
pub struct SessionRecord {
    pub user_name: String,
    pub nas: String,
    pub session_id: String,
    pub framed_ip: Option<String>,
    pub framed_prefix: Option<String>,
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    pub last_update_ms: i64,
    pub nas_port_id: Option<String>,
    pub calling_station_id: Option<String>,
    /// The Class attribute's octets, as a ClickHouse String.
    #[serde(serialize_with = "octets")]
    pub class: Option<Vec<u8>>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub terminate_cause: Option<String>,
    pub interim_interval_s: Option<u32>,
    pub version: u64,
}

impl From<SessionRow> for SessionRecord {
    fn from(s: SessionRow) -> Self {
        // Later events move last_update or stop forward; at the same
        // instant a stopped state is newer than a running one.
        let latest = s.last_update_ms.max(s.stop_ms.unwrap_or(0));
        Self {
            version: latest * 2 + u64::from(s.stop_ms.is_some()),
            user_name: s.user_name,
            nas: s.nas,
            session_id: s.session_id,
            framed_ip: s.framed_ip.map(|ip| ip.to_string()),
            framed_prefix: s.framed_prefix.map(|net| net.to_string()),
            start_ms: s.start_ms as i64,
            stop_ms: s.stop_ms.map(|ms| ms as i64),
            last_update_ms: s.last_update_ms as i64,
            nas_port_id: s.nas_port_id,
            calling_station_id: s.calling_station_id,
            class: s.class,
            input_octets: s.input_octets,
            output_octets: s.output_octets,
            terminate_cause: s.terminate_cause,
            interim_interval_s: s.interim_interval_s,
        }
    }
}

fn octets<S: Serializer>(value: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
    struct Octets<'a>(&'a [u8]);
    impl Serialize for Octets<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }
    match value {
        Some(bytes) => serializer.serialize_some(&Octets(bytes)),
        None => serializer.serialize_none(),
    }
}

/// One address a session held; keyed by the session's natural key, since
/// SQLite's session ids are local to one instance.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize)]
pub struct AddressRecord {
    pub nas: String,
    pub session_id: String,
    pub start_ms: i64,
    pub net: String,
    pub from_ms: i64,
    pub to_ms: Option<i64>,
    pub version: u64,
}

impl AddressRecord {
    /// An address interval only ever gains its end.
    pub fn version_of(from_ms: i64, to_ms: Option<i64>) -> u64 {
        to_ms.map_or(from_ms as u64 * 2, |to| to as u64 * 2 + 1)
    }
}
