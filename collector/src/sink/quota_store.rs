//! Quotas in SQLite: the `enforcement` table (one row per RFC 5176 request
//! and its outcome), and the usage that quotas restore at start and
//! `flowtally quota` shows, read from `usage`.

use flowtally_common::agg::Direction;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::quota::{Action, Quotas};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enforcement (
    id               INTEGER PRIMARY KEY,
    quota            TEXT NOT NULL,
    period_start_ms  INTEGER NOT NULL,
    user_name        TEXT NOT NULL,
    -- sessions.id, and what identifies the session to its NAS
    session          INTEGER NOT NULL,
    session_id       TEXT NOT NULL,
    nas              TEXT NOT NULL,
    action           TEXT NOT NULL,
    usage_bytes      INTEGER NOT NULL,
    -- 1, then 2, 3, ... for new requests after a NAK (radius.nas.nak_retries)
    attempt          INTEGER NOT NULL,
    decided_ms       INTEGER NOT NULL,
    -- NULL until the request ends
    sent_to          TEXT,
    transmissions    INTEGER,
    result           TEXT,
    error_cause      INTEGER,
    done_ms          INTEGER
);
CREATE INDEX IF NOT EXISTS enforcement_by_period ON enforcement (period_start_ms);
CREATE INDEX IF NOT EXISTS enforcement_by_user ON enforcement (user_name, id);
";

/// The longest period (a month) and a day of slack for its time zone.
const PREVIOUS_PERIOD_MS: u64 = 32 * 86_400_000;

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `ADDR:PORT`; `None` when there was nowhere to send it.
    pub sent_to: Option<String>,
    pub transmissions: u32,
    /// `ack`, `nak`, `timeout`, `no_nas`, `error`.
    pub result: &'static str,
    pub error_cause: Option<u32>,
    pub done_ms: u64,
}

/// Records a request about to be sent (result NULL until it ends): once
/// this row exists, the session is acted on for this quota and period,
/// whatever happens to the daemon next.
pub fn insert(
    conn: &Connection,
    action: &Action,
    attempt: u32,
    decided_ms: u64,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO enforcement (quota, period_start_ms, user_name, session, session_id, nas,
            action, usage_bytes, attempt, decided_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            action.quota,
            action.period.start_ms as i64,
            action.session.user_name,
            action.session.id as i64,
            action.session.session_id,
            action.session.nas,
            action.name(),
            action.bytes as i64,
            attempt,
            decided_ms as i64,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn finish(conn: &Connection, id: i64, outcome: &Outcome) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE enforcement SET sent_to = ?2, transmissions = ?3, result = ?4, error_cause = ?5,
            done_ms = ?6 WHERE id = ?1",
        params![
            id,
            outcome.sent_to,
            outcome.transmissions,
            outcome.result,
            outcome.error_cause,
            outcome.done_ms as i64
        ],
    )?;
    Ok(())
}

/// One user's usage in one direction to one destination class (`None`:
/// no class).
pub type UserUsage = (String, Direction, Option<String>, u64);

/// Usage per user, direction and class of rows whose bucket starts in
/// `[from_ms, to_ms)`; only `user`'s if given.
pub fn usage(
    conn: &Connection,
    from_ms: u64,
    to_ms: u64,
    user: Option<&str>,
) -> rusqlite::Result<Vec<UserUsage>> {
    let mut query = conn.prepare_cached(
        "SELECT user_name, direction, class, SUM(bytes) FROM usage
         WHERE user_name IS NOT NULL AND bucket_start_ms >= ?1 AND bucket_start_ms < ?2
            AND (?3 IS NULL OR user_name = ?3)
         GROUP BY user_name, direction, class",
    )?;
    let rows = query.query_map(params![from_ms as i64, to_ms as i64, user], |row| {
        let direction: String = row.get(1)?;
        let direction = match direction.as_str() {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => Direction::Transit,
        };
        Ok((
            row.get(0)?,
            direction,
            row.get(2)?,
            row.get::<_, i64>(3)? as u64,
        ))
    })?;
    rows.collect()
}

/// Restores into `quotas` the usage of each quota's current period at
/// `now_ms` and the sessions already acted on in it.
pub fn restore(conn: &Connection, quotas: &mut Quotas, now_ms: u64) -> rusqlite::Result<()> {
    let periods: Vec<_> = quotas
        .rules()
        .iter()
        .map(|rule| rule.calendar.period(now_ms))
        .collect();
    for (rule, period) in periods.iter().enumerate() {
        for (user, direction, class, bytes) in usage(conn, period.start_ms, period.end_ms, None)? {
            quotas.restore_usage(
                rule,
                period.start_ms,
                &user,
                direction,
                class.as_deref(),
                bytes,
            );
        }
    }
    let Some(earliest) = periods.iter().map(|p| p.start_ms).min() else {
        return Ok(());
    };
    // The period before too (a month at most): the CoAs a restoring CoA
    // may still have to lift.
    let since = earliest.saturating_sub(PREVIOUS_PERIOD_MS);
    let mut query = conn.prepare(
        "SELECT quota, action, session, user_name, period_start_ms FROM enforcement
         WHERE period_start_ms >= ?1 ORDER BY id",
    )?;
    let acted = query.query_map([since as i64], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)? as u64,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)? as u64,
        ))
    })?;
    for row in acted {
        let (quota, action, session, user, period_start_ms) = row?;
        quotas.restore_action(&quota, &action, session, &user, period_start_ms);
    }
    Ok(())
}

/// The latest request for `user` under `quota` in the period starting at
/// `period_start_ms`, for `flowtally quota`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAction {
    pub action: String,
    pub session_id: String,
    pub decided_ms: u64,
    /// NULL while the request is under way.
    pub result: Option<String>,
    pub error_cause: Option<u32>,
}

pub fn last_action(
    conn: &Connection,
    quota: &str,
    user: &str,
    period_start_ms: u64,
) -> rusqlite::Result<Option<LastAction>> {
    conn.query_row(
        "SELECT action, session_id, decided_ms, result, error_cause FROM enforcement
         WHERE quota = ?1 AND user_name = ?2 AND period_start_ms = ?3
         ORDER BY id DESC LIMIT 1",
        params![quota, user, period_start_ms as i64],
        |row| {
            Ok(LastAction {
                action: row.get(0)?,
                session_id: row.get(1)?,
                decided_ms: row.get::<_, i64>(2)? as u64,
                result: row.get(3)?,
                error_cause: row.get(4)?,
            })
        },
    )
    .optional()
}
