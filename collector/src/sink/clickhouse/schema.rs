//! The ClickHouse tables, created when missing. Only syntax and types that
//! Debian's 18.16 knows: no DateTime64, IPv6 or LowCardinality types, and
//! no nullable column in a sorting key (`ifNull` instead).

use clickhouse::Client;

/// Monthly partitions; the key serves per-user time-range queries.
const USAGE: &str = "
CREATE TABLE IF NOT EXISTS {db}.usage (
    bucket_start_ms  Int64,
    bucket_width_ms  Int64,
    user_name        Nullable(String),
    session_id       Nullable(String),
    subscriber_ip    String,
    direction        Enum8('up' = 1, 'down' = 2, 'transit' = 3),
    peer_ip          Nullable(String),
    protocol         Nullable(UInt8),
    subscriber_port  Nullable(UInt16),
    peer_port        Nullable(UInt16),
    exporter         Nullable(String),
    bytes            UInt64,
    packets          UInt64,
    flows            UInt64,
    first_ms         Int64,
    last_ms          Int64,
    writer           String,
    local_id         Int64,
    class            Nullable(String),
    unattributed     Nullable(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(bucket_start_ms, 1000)))
ORDER BY (ifNull(user_name, ''), bucket_start_ms, subscriber_ip, writer, local_id)";

const SESSIONS: &str = "
CREATE TABLE IF NOT EXISTS {db}.sessions (
    user_name           String,
    nas                 String,
    session_id          String,
    framed_ip           Nullable(String),
    framed_prefix       Nullable(String),
    start_ms            Int64,
    stop_ms             Nullable(Int64),
    last_update_ms      Int64,
    nas_port_id         Nullable(String),
    calling_station_id  Nullable(String),
    class               Nullable(String),
    input_octets        Nullable(UInt64),
    output_octets       Nullable(UInt64),
    terminate_cause     Nullable(String),
    interim_interval_s  Nullable(UInt32),
    version             UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(start_ms, 1000)))
ORDER BY (user_name, start_ms, nas, session_id)";

const SESSION_ADDRESSES: &str = "
CREATE TABLE IF NOT EXISTS {db}.session_addresses (
    nas         String,
    session_id  String,
    start_ms    Int64,
    net         String,
    from_ms     Int64,
    to_ms       Nullable(Int64),
    version     UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(start_ms, 1000)))
ORDER BY (net, from_ms, nas, session_id, start_ms)";

/// `usage` columns newer than the first tables, in the order they came.
const ADDED_USAGE_COLUMNS: [&str; 2] = ["class", "unattributed"];

/// Creates `database` and its tables where missing.
pub async fn create(client: &Client, database: &str) -> clickhouse::error::Result<()> {
    // `database` may not exist yet: talk to `default`, name it in the DDL.
    let client = client.clone().with_database("default");
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await?;
    for ddl in [USAGE, SESSIONS, SESSION_ADDRESSES] {
        client
            .query(&ddl.replace("{db}", database))
            .execute()
            .await?;
    }
    // Tables from before destination classes or unattributed reasons: 18.16
    // has no `ADD COLUMN IF NOT EXISTS` (19.1 has), so ask whether each
    // column is there.
    for column in ADDED_USAGE_COLUMNS {
        let has: u64 = client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = 'usage' \
                 AND name = ?",
            )
            .bind(database)
            .bind(column)
            .fetch_one()
            .await?;
        if has == 0 {
            client
                .query(&format!(
                    "ALTER TABLE {database}.usage ADD COLUMN {column} Nullable(String)"
                ))
                .execute()
                .await?;
        }
    }
    Ok(())
}
