//! The report's rows from the SQLite database of one instance.

use std::{net::IpAddr, path::Path};

use flowtally_common::agg::Direction;
use rusqlite::{Connection, OpenFlags, Row, params};

use super::Read;
use crate::{
    report::Usage,
    sink::{integrity, runs, session_store},
    timestamp::Timestamp,
};

pub fn read(db: &Path, from_ms: u64, to_ms: u64) -> rusqlite::Result<Read> {
    // Read-only: a mistyped path fails instead of creating a database.
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Older databases have no `runs` table, hence no known gaps.
    let mut warnings: Vec<String> = runs::gaps(&conn, from_ms, to_ms)
        .unwrap_or_default()
        .into_iter()
        .map(|gap| {
            format!(
                "flowtally was killed or crashed between {} and {}: usage from then may be \
                 missing",
                Timestamp(gap.from_ms),
                Timestamp(gap.to_ms)
            )
        })
        .collect();
    warnings.extend(integrity::losses(&conn, from_ms, to_ms).into_iter().map(
        |(exporter, unit, lost)| {
            format!(
                "exporter {exporter}: an estimated {lost} {unit} were lost before reaching \
                 flowtally in this range: usage may be missing (see `flowtally audit`)"
            )
        },
    ));
    let usage = read_usage(&conn, from_ms, to_ms)?;
    let (sessions, addresses) = session_store::read(&conn)?;
    Ok(Read {
        rows: (usage, sessions, addresses),
        warnings,
    })
}

/// The usage rows whose bucket starts in `[from_ms, to_ms)`, summed in
/// SQLite over peers, ports, protocols and exporters: the detail profile
/// writes a row for each, which a report never shows.
fn read_usage(conn: &Connection, from_ms: u64, to_ms: u64) -> rusqlite::Result<Vec<Usage>> {
    conn.prepare(
        "SELECT bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction, SUM(bytes), SUM(packets), SUM(flows)
         FROM usage WHERE bucket_start_ms >= ?1 AND bucket_start_ms < ?2
         GROUP BY bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction",
    )?
    .query_map(params![from_ms as i64, to_ms as i64], |row| {
        let count = |i| row.get::<_, i64>(i).map(|n| n as u64);
        Ok(Usage {
            bucket_start_ms: count(0)?,
            bucket_width_ms: count(1)?,
            user_name: row.get(2)?,
            session_id: row.get(3)?,
            subscriber_ip: parse(row, 4, "an address", |s| s.parse::<IpAddr>().ok())?,
            direction: parse(row, 5, "a direction", |s| match s {
                "up" => Some(Direction::Up),
                "down" => Some(Direction::Down),
                "transit" => Some(Direction::Transit),
                _ => None,
            })?,
            bytes: count(6)?,
            packets: count(7)?,
            flows: count(8)?,
        })
    })?
    .collect()
}

fn parse<T>(
    row: &Row<'_>,
    i: usize,
    what: &str,
    from_text: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    from_text(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not {what}: {text:?}").into(),
        )
    })
}
