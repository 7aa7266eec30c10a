//! The SQLite side of delivery: what is not yet in ClickHouse, read in
//! delivery order, and how far delivery has got.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::rows::{AddressRecord, SessionRecord, UsageRecord, direction_code};
use crate::sink::{
    session_store::{SESSION_COLUMNS, session_row},
    sqlite,
};

/// What is delivered, each in the order of its own sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// By `rowid`: rows are only ever appended.
    Usage,
    /// By `changed`: rewritten rows get a new number.
    Sessions,
    SessionAddresses,
}

impl Source {
    pub const ALL: [Self; 3] = [Self::Usage, Self::Sessions, Self::SessionAddresses];

    /// The table's name, in SQLite and in ClickHouse.
    pub fn table(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Sessions => "sessions",
            Self::SessionAddresses => "session_addresses",
        }
    }

    fn sequence(self) -> &'static str {
        match self {
            Self::Usage => "rowid",
            Self::Sessions | Self::SessionAddresses => "changed",
        }
    }
}

pub struct Spool {
    conn: Connection,
    /// This database's id in ClickHouse `usage.writer`.
    pub writer: String,
}

impl Spool {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = sqlite::open(path)?;
        let writer = writer_id(&conn)?;
        Ok(Self { conn, writer })
    }

    /// The last sequence number delivered from `source`.
    pub fn delivered(&self, source: Source) -> rusqlite::Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT delivered FROM clickhouse_progress WHERE source = ?1",
                [source.table()],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    pub fn set_delivered(&self, source: Source, upto: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO clickhouse_progress (source, delivered) VALUES (?1, ?2)",
            params![source.table(), upto],
        )?;
        Ok(())
    }

    /// The newest sequence number written to `source`.
    pub fn newest(&self, source: Source) -> rusqlite::Result<i64> {
        let sql = format!(
            "SELECT coalesce(max({}), 0) FROM {}",
            source.sequence(),
            source.table()
        );
        self.conn.query_row(&sql, [], |row| row.get(0))
    }

    /// Rows of `source` numbered in `(after, upto]`.
    pub fn count(&self, source: Source, after: i64, upto: i64) -> rusqlite::Result<u64> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {seq} > ?1 AND {seq} <= ?2",
            source.table(),
            seq = source.sequence()
        );
        self.conn
            .query_row(&sql, [after, upto], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// Up to `limit` usage rows after `after`, oldest first, with their rowid
    /// as `local_id`.
    pub fn usage(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<UsageRecord>> {
        let mut query = self.conn.prepare_cached(
            "SELECT rowid, bucket_start_ms, bucket_width_ms, user_name, session_id,
                subscriber_ip, direction, peer_ip, protocol, subscriber_port, peer_port,
                exporter, bytes, packets, flows, first_ms, last_ms, class, unattributed
             FROM usage WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        query
            .query_map(params![after, limit as i64], |row| {
                let direction: String = row.get(6)?;
                let count = |i| row.get::<_, i64>(i).map(|n| n as u64);
                Ok(UsageRecord {
                    local_id: row.get(0)?,
                    bucket_start_ms: row.get(1)?,
                    bucket_width_ms: row.get(2)?,
                    user_name: row.get(3)?,
                    session_id: row.get(4)?,
                    subscriber_ip: row.get(5)?,
                    // The table's CHECK admits only the three directions.
                    direction: direction_code(&direction).unwrap_or(0),
                    peer_ip: row.get(7)?,
                    protocol: row.get(8)?,
                    subscriber_port: row.get(9)?,
                    peer_port: row.get(10)?,
                    exporter: row.get(11)?,
                    bytes: count(12)?,
                    packets: count(13)?,
                    flows: count(14)?,
                    first_ms: row.get(15)?,
                    last_ms: row.get(16)?,
                    class: row.get(17)?,
                    unattributed: row.get(18)?,
                    writer: self.writer.clone(),
                })
            })?
            .collect()
    }

    /// Up to `limit` sessions changed after `after`, in change order.
    pub fn sessions(
        &self,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<(i64, SessionRecord)>> {
        let mut query = self.conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS}, changed FROM sessions
             WHERE changed > ?1 ORDER BY changed LIMIT ?2"
        ))?;
        query
            .query_map(params![after, limit as i64], |row| {
                Ok((row.get(16)?, SessionRecord::from(session_row(row)?)))
            })?
            .collect()
    }

    /// Up to `limit` address intervals changed after `after`, in change order.
    pub fn addresses(
        &self,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<(i64, AddressRecord)>> {
        let mut query = self.conn.prepare_cached(
            "SELECT a.changed, s.nas, s.session_id, s.start_ms, a.net, a.from_ms, a.to_ms
             FROM session_addresses a JOIN sessions s ON s.id = a.session
             WHERE a.changed > ?1 ORDER BY a.changed LIMIT ?2",
        )?;
        query
            .query_map(params![after, limit as i64], |row| {
                let (from_ms, to_ms) = (row.get(5)?, row.get(6)?);
                Ok((
                    row.get(0)?,
                    AddressRecord {
                        nas: row.get(1)?,
                        session_id: row.get(2)?,
                        start_ms: row.get(3)?,
                        net: row.get(4)?,
                        from_ms,
                        to_ms,
                        version: AddressRecord::version_of(from_ms, to_ms),
                    },
                ))
            })?
            .collect()
    }
}

/// A random id made once per database, so that instances never take each
/// other's rows for their own when checking what already arrived.
fn writer_id(conn: &Connection) -> anyhow::Result<String> {
    let fresh = {
        let mut bytes = [0u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('writer_id', ?1)",
        [fresh],
    )?;
    Ok(conn.query_row(
        "SELECT value FROM meta WHERE key = 'writer_id'",
        [],
        |row| row.get(0),
    )?)
}
