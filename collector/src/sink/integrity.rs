//! What a bill's completeness is audited from (`flowtally audit`):
//! `export_health` (per flush and exporter stream: what arrived, what the
//! sequence numbers say was lost, restarts), `interface_flows` (per flush
//! and billed interface: flow bytes that touched it) and
//! `interface_counters` (the interfaces' own octet counters as polled over
//! SNMP; sFlow counter samples share the table).

use rusqlite::{Connection, params};

use crate::{
    aggregate::InterfaceFlows,
    integrity::{
        audit::{CounterRow, FlowRow, HealthRow, Rows},
        sequence::Health,
    },
    ip::to_addr,
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS export_health (
    time_ms     INTEGER NOT NULL, -- the flush that closed the interval
    from_ms     INTEGER NOT NULL, -- the flush before it (or the run's start)
    exporter    TEXT NOT NULL,
    version     INTEGER NOT NULL, -- 5, 9, 10
    domain      INTEGER NOT NULL, -- v9 source id, IPFIX observation domain, v5 engine
    unit        TEXT NOT NULL CHECK (unit IN ('records', 'exports')),
    exports     INTEGER NOT NULL, -- export datagrams received
    records     INTEGER NOT NULL, -- data records in them
    bytes       INTEGER NOT NULL, -- octets their flow records carried (sampling-scaled)
    received    INTEGER NOT NULL, -- units received for the first time
    lost        INTEGER NOT NULL, -- units the sequence numbers say never arrived
    duplicates  INTEGER NOT NULL, -- units received again
    restarts    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS export_health_by_time ON export_health (time_ms);
CREATE TABLE IF NOT EXISTS interface_flows (
    time_ms      INTEGER NOT NULL,
    from_ms      INTEGER NOT NULL,
    exporter     TEXT NOT NULL,
    if_index     INTEGER NOT NULL,
    in_bytes     INTEGER NOT NULL, -- of flow records that entered by it
    in_packets   INTEGER NOT NULL,
    out_bytes    INTEGER NOT NULL, -- of those that left by it (another one)
    out_packets  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS interface_flows_by_time ON interface_flows (time_ms);
-- Cumulative counters as reported: the traffic between two rows of an
-- interface is their difference (modulo 2^64).
CREATE TABLE IF NOT EXISTS interface_counters (
    exporter    TEXT NOT NULL,
    if_index    INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    in_octets   INTEGER NOT NULL,
    out_octets  INTEGER NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('sflow', 'snmp'))
);
CREATE INDEX IF NOT EXISTS interface_counters_by_interface
    ON interface_counters (exporter, if_index, time_ms);
";

/// SQLite integers are i64; counters beyond 2^63 are not real (and octet
/// counters are stored as their bit pattern, read back as u64).
fn int(n: u64) -> i64 {
    n as i64
}

/// Writes one interval's figures in one transaction.
pub fn write_interval(
    conn: &mut Connection,
    from_ms: u64,
    time_ms: u64,
    healths: &[Health],
    flows: &InterfaceFlows,
) -> rusqlite::Result<()> {
    let flows: Vec<_> = flows
        .iter()
        .filter(|(_, f)| f.input.count + f.output.count > 0)
        .collect();
    if healths.is_empty() && flows.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO export_health (time_ms, from_ms, exporter, version, domain, unit,
                exports, records, bytes, received, lost, duplicates, restarts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for h in healths {
            let f = &h.figures;
            insert.execute(params![
                int(time_ms),
                int(from_ms),
                to_addr(&h.key.exporter).to_string(),
                h.key.version,
                h.key.domain,
                h.unit,
                int(f.exports),
                int(f.records),
                int(f.bytes),
                int(f.received),
                int(f.lost),
                int(f.duplicates),
                int(f.restarts),
            ])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO interface_flows (time_ms, from_ms, exporter, if_index, in_bytes,
                in_packets, out_bytes, out_packets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (key, f) in flows {
            insert.execute(params![
                int(time_ms),
                int(from_ms),
                to_addr(&key.exporter).to_string(),
                key.ifindex,
                int(f.input.bytes),
                int(f.input.count),
                int(f.output.bytes),
                int(f.output.count),
            ])?;
        }
    }
    tx.commit()
}

/// Writes one round of counter readings.
pub fn write_counters(conn: &mut Connection, rows: &[CounterRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO interface_counters
                (exporter, if_index, time_ms, in_octets, out_octets, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in rows {
            insert.execute(params![
                r.exporter,
                r.if_index,
                int(r.time_ms),
                int(r.in_octets),
                int(r.out_octets),
                r.source,
            ])?;
        }
    }
    tx.commit()
}

/// What `flowtally audit` reads for `(from_ms, to_ms]`: export health of
/// flushes in it (and sFlow sources', when that table exists), flow bytes
/// per interface of flushes overlapping it, counter readings in it.
pub fn read_audit(conn: &Connection, from_ms: u64, to_ms: u64) -> rusqlite::Result<Rows> {
    let range = params![int(from_ms), int(to_ms)];
    let count = |row: &rusqlite::Row, i| row.get::<_, i64>(i).map(|n| n as u64);
    let mut health: Vec<HealthRow> = conn
        .prepare(
            "SELECT exporter, version, domain, unit, exports, records, bytes, received, lost,
                duplicates, restarts
             FROM export_health WHERE time_ms > ?1 AND time_ms <= ?2",
        )?
        .query_map(range, |row| {
            Ok(HealthRow {
                exporter: row.get(0)?,
                protocol: match row.get::<_, i64>(1)? {
                    5 => "v5",
                    9 => "v9",
                    _ => "ipfix",
                },
                domain: row.get(2)?,
                unit: row.get(3)?,
                exports: count(row, 4)?,
                records: count(row, 5)?,
                bytes: count(row, 6)?,
                received: count(row, 7)?,
                lost: count(row, 8)?,
                duplicates: count(row, 9)?,
                restarts: count(row, 10)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    health.extend(read_sflow_sources(conn, from_ms, to_ms).unwrap_or_default());
    let flows = conn
        .prepare(
            "SELECT exporter, if_index, from_ms, time_ms, in_bytes, in_packets, out_bytes,
                out_packets
             FROM interface_flows WHERE time_ms > ?1 AND from_ms < ?2",
        )?
        .query_map(range, |row| {
            Ok(FlowRow {
                exporter: row.get(0)?,
                if_index: row.get(1)?,
                from_ms: count(row, 2)?,
                time_ms: count(row, 3)?,
                bytes: [count(row, 4)?, count(row, 6)?],
                packets: [count(row, 5)?, count(row, 7)?],
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let counters = conn
        .prepare(
            "SELECT exporter, if_index, time_ms, in_octets, out_octets, source
             FROM interface_counters WHERE time_ms >= ?1 AND time_ms <= ?2",
        )?
        .query_map(range, |row| {
            Ok(CounterRow {
                exporter: row.get(0)?,
                if_index: row.get(1)?,
                time_ms: count(row, 2)?,
                in_octets: count(row, 3)?,
                out_octets: count(row, 4)?,
                source: row.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Rows {
        health,
        flows,
        counters,
    })
}

/// sFlow data sources' sample loss (the `sflow_sources` table of sFlow
/// intake), in the audit's terms: a sample is the unit.
fn read_sflow_sources(
    conn: &Connection,
    from_ms: u64,
    to_ms: u64,
) -> rusqlite::Result<Vec<HealthRow>> {
    conn.prepare(
        "SELECT agent, source_type * 16777216 + source_index, samples, lost_samples, restarted
         FROM sflow_sources WHERE time_ms > ?1 AND time_ms <= ?2",
    )?
    .query_map(params![int(from_ms), int(to_ms)], |row| {
        let samples = row.get::<_, i64>(2)? as u64;
        Ok(HealthRow {
            exporter: row.get(0)?,
            protocol: "sflow",
            domain: row.get::<_, i64>(1)? as u32,
            unit: "samples".to_owned(),
            exports: samples,
            records: samples,
            received: samples,
            lost: row.get::<_, i64>(3)? as u64,
            restarts: row.get::<_, i64>(4)? as u64,
            ..HealthRow::default()
        })
    })?
    .collect()
}

/// Estimated loss per exporter and unit in `(from_ms, to_ms]`, for the
/// report's warnings; empty for databases older than the table.
pub fn losses(conn: &Connection, from_ms: u64, to_ms: u64) -> Vec<(String, String, u64)> {
    let read = || -> rusqlite::Result<Vec<(String, String, u64)>> {
        conn.prepare(
            "SELECT exporter, unit, SUM(lost) FROM export_health
             WHERE time_ms > ?1 AND time_ms <= ?2 GROUP BY exporter, unit HAVING SUM(lost) > 0
             ORDER BY exporter, unit",
        )?
        .query_map(params![int(from_ms), int(to_ms)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?
        .collect()
    };
    let mut losses = read().unwrap_or_default();
    losses.extend(
        read_sflow_sources(conn, from_ms, to_ms)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.lost > 0)
            .map(|h| (h.exporter, h.unit, h.lost)),
    );
    losses
}
