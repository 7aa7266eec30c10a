//! What sFlow tells about completeness, kept for the integrity audit:
//! `sflow_sources` (per flush and data source: samples received and lost,
//! sample-pool and drops advances, restarts) and `interface_counters`
//! (interface octet counters as devices report them; sFlow counter
//! samples fill it, SNMP polling can fill it too).

use rusqlite::{Connection, params};

use crate::{
    ip::to_addr,
    sflow::{AgentCounters, SourceHealth},
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sflow_sources (
    time_ms        INTEGER NOT NULL, -- the flush that closed the interval
    agent          TEXT NOT NULL,
    sub_agent      INTEGER NOT NULL,
    source_type    INTEGER NOT NULL, -- 0 ifIndex, 1 VLAN, 2 entPhysicalEntry
    source_index   INTEGER NOT NULL,
    sampling_rate  INTEGER NOT NULL, -- of the latest sample
    samples        INTEGER NOT NULL, -- flow samples received
    lost_samples   INTEGER NOT NULL, -- sent by the agent, never received
    sample_pool    INTEGER NOT NULL, -- packets the source could have sampled
    drops          INTEGER NOT NULL, -- samples the agent dropped itself
    restarted      INTEGER NOT NULL  -- 1: the sequence started again
);
CREATE INDEX IF NOT EXISTS sflow_sources_by_time ON sflow_sources (time_ms);
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

/// Writes one interval's figures in one transaction.
pub fn write(
    conn: &mut Connection,
    time_ms: u64,
    healths: &[SourceHealth],
    counters: &[AgentCounters],
) -> rusqlite::Result<()> {
    if healths.is_empty() && counters.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO sflow_sources (time_ms, agent, sub_agent, source_type, source_index,
                sampling_rate, samples, lost_samples, sample_pool, drops, restarted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        // SQLite integers are i64; counters beyond 2^63 are not real.
        let int = |n: u64| n as i64;
        for h in healths {
            insert.execute(params![
                int(time_ms),
                to_addr(&h.key.agent).to_string(),
                h.key.sub_agent,
                h.key.source_id >> 24,
                h.key.source_id & 0x00ff_ffff,
                h.sampling_rate,
                int(h.samples),
                int(h.lost),
                int(h.sample_pool),
                int(h.drops),
                h.restarted,
            ])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO interface_counters
                (exporter, if_index, time_ms, in_octets, out_octets, source)
             VALUES (?1, ?2, ?3, ?4, ?5, 'sflow')",
        )?;
        for c in counters {
            insert.execute(params![
                to_addr(&c.agent).to_string(),
                c.counters.if_index,
                int(c.time_ms),
                int(c.counters.in_octets),
                int(c.counters.out_octets),
            ])?;
        }
    }
    tx.commit()
}
