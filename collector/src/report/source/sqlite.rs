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

/// Slices a long read is made of, each a stretch of bucket start times:
/// the steps of its progress.
const SLICES: u64 = 50;

pub fn read(
    db: &Path,
    from_ms: u64,
    to_ms: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> rusqlite::Result<Read> {
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
    let usage = read_usage_sliced(&conn, from_ms, to_ms, progress)?;
    let (sessions, addresses) = session_store::read(&conn)?;
    Ok(Read {
        rows: (usage, sessions, addresses),
        warnings,
    })
}

/// [`read_usage`] in up to [`SLICES`] stretches of the buckets present,
/// telling `progress` after each. Rows are summed per bucket, so no sum
/// crosses a slice: the slices together are the whole read.
fn read_usage_sliced(
    conn: &Connection,
    from_ms: u64,
    to_ms: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> rusqlite::Result<Vec<Usage>> {
    let (first, last): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT min(bucket_start_ms), max(bucket_start_ms) FROM usage
         WHERE bucket_start_ms >= ?1 AND bucket_start_ms < ?2",
        params![from_ms as i64, to_ms as i64],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (Some(first), Some(last)) = (first, last) else {
        progress(1, 1);
        return Ok(Vec::new());
    };
    let (first, end) = (first as u64, last as u64 + 1);
    let step = (end - first).div_ceil(SLICES).max(1);
    let slices = (end - first).div_ceil(step);
    let mut usage = Vec::new();
    for slice in 0..slices {
        let from = first + slice * step;
        usage.extend(read_usage(conn, from, (from + step).min(end))?);
        progress(slice + 1, slices);
    }
    Ok(usage)
}

/// The usage rows whose bucket starts in `[from_ms, to_ms)`, summed in
/// SQLite over peers, ports, protocols and exporters: the detail profile
/// writes a row for each, which a report never shows.
fn read_usage(conn: &Connection, from_ms: u64, to_ms: u64) -> rusqlite::Result<Vec<Usage>> {
    // A database no flowtally with classes has opened yet (the report
    // opens read-only) has no class column: all its usage is unclassified.
    let has_class: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('usage') WHERE name = 'class'",
        [],
        |row| row.get(0),
    )?;
    let class = if has_class { "class" } else { "NULL" };
    conn.prepare(&format!(
        "SELECT bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction, SUM(bytes), SUM(packets), SUM(flows), {class}
         FROM usage WHERE bucket_start_ms >= ?1 AND bucket_start_ms < ?2
         GROUP BY bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction, {class}",
    ))?
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
            class: row.get(9)?,
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
