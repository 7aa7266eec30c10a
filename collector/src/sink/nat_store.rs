//! NAT binding history in SQLite: `nat_bindings`, one row per binding
//! (per session, or per port block), written with each flush.

use std::net::IpAddr;

use rusqlite::{Connection, Row, params};

use crate::{
    nat::{Binding, Bindings, Change, Limits},
    netflow::nat::PortRange,
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nat_bindings (
    id           INTEGER PRIMARY KEY,
    exporter     TEXT NOT NULL,
    vrf          INTEGER NOT NULL,
    public_ip    TEXT NOT NULL,
    port_start   INTEGER NOT NULL,
    port_end     INTEGER NOT NULL,
    port_step    INTEGER NOT NULL,
    protocol     INTEGER NOT NULL,
    inside_ip    TEXT NOT NULL,
    inside_port  INTEGER,
    inside_vrf   INTEGER NOT NULL,
    from_ms      INTEGER NOT NULL,
    to_ms        INTEGER NOT NULL,
    start_seen   INTEGER NOT NULL,
    deleted      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nat_bindings_by_public ON nat_bindings (public_ip, port_start);
CREATE INDEX IF NOT EXISTS nat_bindings_by_end ON nat_bindings (to_ms);
";

const COLUMNS: &str = "id, vrf, public_ip, port_start, port_end, port_step, protocol, \
    inside_ip, inside_port, inside_vrf, from_ms, to_ms, start_seen, deleted";

/// Writes `changes` in one transaction.
pub fn write(conn: &mut Connection, changes: &[Change]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO nat_bindings (exporter, {COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?;
        let mut update = tx.prepare_cached(
            "UPDATE nat_bindings SET from_ms = ?2, to_ms = ?3, start_seen = ?4, deleted = ?5
             WHERE id = ?1",
        )?;
        for change in changes {
            match change {
                Change::Insert(row) => {
                    let b = &row.binding;
                    insert.execute(params![
                        row.exporter.to_string(),
                        b.id as i64,
                        b.vrf,
                        b.public_ip.to_string(),
                        b.ports.start,
                        b.ports.end,
                        b.ports.step,
                        b.protocol,
                        b.inside_ip.to_string(),
                        b.inside_port,
                        b.inside_vrf,
                        b.from_ms as i64,
                        b.to_ms as i64,
                        b.start_seen,
                        b.deleted,
                    ])?;
                }
                Change::Update(b) => {
                    update.execute(params![
                        b.id as i64,
                        b.from_ms as i64,
                        b.to_ms as i64,
                        b.start_seen,
                        b.deleted,
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

/// The in-memory history at `now_ms`: bindings ended within the memory
/// retention, the latest-ending first when there are more than it keeps.
pub fn load(conn: &Connection, limits: Limits, now_ms: u64) -> rusqlite::Result<Bindings> {
    let since = now_ms.saturating_sub(limits.memory_retention_ms);
    let rows: Vec<Binding> = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM nat_bindings WHERE to_ms >= ?1 ORDER BY to_ms DESC LIMIT ?2"
        ))?
        .query_map(params![since as i64, limits.max_bindings as i64], binding)?
        .collect::<Result<_, _>>()?;
    let last_id: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM nat_bindings", [], |row| {
            row.get(0)
        })?;
    Ok(Bindings::from_rows(limits, rows, last_id as u64))
}

/// Every binding of `ip` (any VRF) whose ports span `port`, to answer
/// `whois IP:PORT`.
pub fn spanning(conn: &Connection, ip: IpAddr, port: u16) -> rusqlite::Result<Vec<Binding>> {
    conn.prepare(&format!(
        "SELECT {COLUMNS} FROM nat_bindings
         WHERE public_ip = ?1 AND port_start <= ?2 AND port_end >= ?2"
    ))?
    .query_map(params![ip.to_string(), port], binding)?
    .collect()
}

/// Deletes the bindings that ended before `cutoff_ms`; returns how many.
pub fn delete_ended_before(conn: &Connection, cutoff_ms: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM nat_bindings WHERE to_ms < ?1",
        [cutoff_ms as i64],
    )
}

fn binding(row: &Row<'_>) -> rusqlite::Result<Binding> {
    let ms = |i| row.get::<_, i64>(i).map(|v| v as u64);
    Ok(Binding {
        id: ms(0)?,
        vrf: row.get(1)?,
        public_ip: address(row, 2)?,
        ports: PortRange {
            start: row.get(3)?,
            end: row.get(4)?,
            step: row.get::<_, u16>(5)?.max(1),
        },
        protocol: row.get(6)?,
        inside_ip: address(row, 7)?,
        inside_port: row.get(8)?,
        inside_vrf: row.get(9)?,
        from_ms: ms(10)?,
        to_ms: ms(11)?,
        start_seen: row.get(12)?,
        deleted: row.get(13)?,
    })
}

fn address(row: &Row<'_>, i: usize) -> rusqlite::Result<IpAddr> {
    let text: String = row.get(i)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not an address: {text:?}").into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{nat::BindingRow, sink::sqlite};

    #[test]
    fn bindings_round_trip_and_the_retention_deletes_what_ended_before_it() {
        let dir = std::env::temp_dir().join(format!("flowtally-nat-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = sqlite::open(&dir.join("ft.db")).unwrap();
        let b = Binding {
            id: 7,
            vrf: 2,
            public_ip: "2001:db8:1::1".parse().unwrap(),
            ports: PortRange {
                start: 1024,
                end: 1087,
                step: 1,
            },
            protocol: 0,
            inside_ip: "100.64.0.7".parse().unwrap(),
            inside_port: None,
            inside_vrf: 3,
            from_ms: 10_000,
            to_ms: 20_000,
            start_seen: false,
            deleted: true,
        };
        let exporter = "198.18.0.1".parse().unwrap();
        let open = Binding {
            id: 8,
            inside_port: Some(5),
            to_ms: 90_000,
            deleted: false,
            ..b
        };
        write(
            &mut conn,
            &[
                Change::Insert(BindingRow {
                    exporter,
                    binding: b,
                }),
                Change::Insert(BindingRow {
                    exporter,
                    binding: open,
                }),
            ],
        )
        .unwrap();
        let seen = Binding {
            from_ms: 12_000,
            start_seen: true,
            ..b
        };
        write(&mut conn, &[Change::Update(seen)]).unwrap();
        let mut got = spanning(&conn, b.public_ip, 1087).unwrap();
        got.sort_by_key(|b| b.id);
        assert_eq!(got, [seen, open]);
        assert!(spanning(&conn, b.public_ip, 1088).unwrap().is_empty());
        assert_eq!(delete_ended_before(&conn, 20_001).unwrap(), 1);
        assert_eq!(spanning(&conn, b.public_ip, 1024).unwrap(), [open]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
