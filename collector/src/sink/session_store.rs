//! Session history in SQLite: `sessions` (one row per session) and
//! `session_addresses` (one row per address a session held, and when).

use std::net::Ipv4Addr;

use ipnet::Ipv6Net;
use rusqlite::{Connection, Row, params};

use crate::sessions::{AddressRow, Change, History, SessionRow};

/// Writes `changes` in one transaction; RADIUS answers only after it commits.
/// Each written row gets the next `changed` number of its table, which the
/// ClickHouse sink delivers in order (one writer, so numbers commit in
/// order too).
pub fn write(conn: &mut Connection, changes: &[Change]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut session = tx.prepare_cached(
            "INSERT OR REPLACE INTO sessions (id, user_name, nas, session_id, framed_ip,
                framed_prefix, start_ms, stop_ms, last_update_ms, nas_port_id,
                calling_station_id, class, input_octets, output_octets, terminate_cause,
                interim_interval_s, changed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                (SELECT coalesce(max(changed), 0) + 1 FROM sessions))",
        )?;
        let mut address = tx.prepare_cached(
            "INSERT OR REPLACE INTO session_addresses (session, net, from_ms, to_ms, changed)
             VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(changed), 0) + 1 FROM session_addresses))",
        )?;
        for change in changes {
            match change {
                Change::Session(s) => {
                    session.execute(params![
                        s.id as i64,
                        s.user_name,
                        s.nas,
                        s.session_id,
                        s.framed_ip.map(|ip| ip.to_string()),
                        s.framed_prefix.map(|net| net.to_string()),
                        s.start_ms as i64,
                        s.stop_ms.map(|ms| ms as i64),
                        s.last_update_ms as i64,
                        s.nas_port_id,
                        s.calling_station_id,
                        s.class,
                        s.input_octets.map(|n| n as i64),
                        s.output_octets.map(|n| n as i64),
                        s.terminate_cause,
                        s.interim_interval_s,
                    ])?;
                }
                Change::Address(a) => {
                    address.execute(params![
                        a.session as i64,
                        a.net.to_string(),
                        a.from_ms as i64,
                        a.to_ms.map(|ms| ms as i64),
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

/// The columns [`session_row`] reads, in its order.
pub(crate) const SESSION_COLUMNS: &str = "id, user_name, nas, session_id, framed_ip, \
    framed_prefix, start_ms, stop_ms, last_update_ms, nas_port_id, calling_station_id, class, \
    input_octets, output_octets, terminate_cause, interim_interval_s";

/// What the in-memory history needs: sessions open, or stopped at or after
/// `since_ms`, with their addresses; and the highest session id stored.
pub fn read_since(
    conn: &Connection,
    since_ms: u64,
) -> rusqlite::Result<(Vec<SessionRow>, Vec<AddressRow>, u64)> {
    let recent = "stop_ms IS NULL OR stop_ms >= ?1";
    let sessions = conn
        .prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {recent}"
        ))?
        .query_map([since_ms as i64], session_row)?
        .collect::<Result<_, _>>()?;
    let addresses = conn
        .prepare(&format!(
            "SELECT session, net, from_ms, to_ms FROM session_addresses
             WHERE session IN (SELECT id FROM sessions WHERE {recent})"
        ))?
        .query_map([since_ms as i64], address_row)?
        .collect::<Result<_, _>>()?;
    let last_id: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM sessions", [], |row| {
        row.get(0)
    })?;
    Ok((sessions, addresses, last_id as u64))
}

/// The in-memory history at `now_ms`: sessions open or stopped within
/// `retention_ms`, new ids above every stored one.
pub fn load_history(
    conn: &Connection,
    retention_ms: u64,
    now_ms: u64,
) -> rusqlite::Result<History> {
    let (sessions, addresses, last_id) = read_since(conn, now_ms.saturating_sub(retention_ms))?;
    let mut history = History::from_rows(sessions, addresses);
    history.reserve_ids(last_id);
    Ok(history)
}

/// Everything persisted, to rebuild the in-memory history.
pub fn read(conn: &Connection) -> rusqlite::Result<(Vec<SessionRow>, Vec<AddressRow>)> {
    let sessions = conn
        .prepare(&format!("SELECT {SESSION_COLUMNS} FROM sessions"))?
        .query_map([], session_row)?
        .collect::<Result<_, _>>()?;
    let addresses = conn
        .prepare("SELECT session, net, from_ms, to_ms FROM session_addresses")?
        .query_map([], address_row)?
        .collect::<Result<_, _>>()?;
    Ok((sessions, addresses))
}

fn address_row(row: &Row<'_>) -> rusqlite::Result<AddressRow> {
    Ok(AddressRow {
        session: row.get::<_, i64>(0)? as u64,
        net: parse(row, 1)?,
        from_ms: row.get::<_, i64>(2)? as u64,
        to_ms: row.get::<_, Option<i64>>(3)?.map(|ms| ms as u64),
    })
}

pub(crate) fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    let ms = |i| row.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
    Ok(SessionRow {
        id: row.get::<_, i64>(0)? as u64,
        user_name: row.get(1)?,
        nas: row.get(2)?,
        session_id: row.get(3)?,
        framed_ip: parse_opt::<Ipv4Addr>(row, 4)?,
        framed_prefix: parse_opt::<Ipv6Net>(row, 5)?,
        start_ms: row.get::<_, i64>(6)? as u64,
        stop_ms: ms(7)?,
        last_update_ms: row.get::<_, i64>(8)? as u64,
        nas_port_id: row.get(9)?,
        calling_station_id: row.get(10)?,
        class: row.get(11)?,
        input_octets: ms(12)?,
        output_octets: ms(13)?,
        terminate_cause: row.get(14)?,
        interim_interval_s: row.get(15)?,
    })
}

fn parse<T: std::str::FromStr>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not an address: {text:?}").into(),
        )
    })
}

fn parse_opt<T: std::str::FromStr>(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => parse(row, i).map(Some),
    }
}
