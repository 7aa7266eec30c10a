//! The `runs` table: when each `flowtally run` started, last flushed and
//! stopped. A run that never recorded its stop was killed (or crashed)
//! before its final flush; what its memory and kernel maps held since its
//! last flush is lost, and the next start records that as a gap, so the loss
//! is visible instead of silent.

use rusqlite::{Connection, OptionalExtension as _, params};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY,
    started_ms     INTEGER NOT NULL,
    last_flush_ms  INTEGER,
    stopped_ms     INTEGER,
    -- For a run that did not stop cleanly: from its last flush (or its
    -- start) to the next run's start.
    gap_from_ms    INTEGER,
    gap_to_ms      INTEGER
);";

/// Usage from this span may be missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// Records a new run starting at `now_ms`; returns its id and the gap the
/// previous run left if it did not stop cleanly.
pub fn begin(conn: &Connection, now_ms: u64) -> rusqlite::Result<(i64, Option<Gap>)> {
    let unclean: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, coalesce(last_flush_ms, started_ms) FROM runs
             WHERE stopped_ms IS NULL AND gap_to_ms IS NULL ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let gap = match unclean {
        Some((id, from_ms)) => {
            conn.execute(
                "UPDATE runs SET gap_from_ms = ?2, gap_to_ms = ?3 WHERE id = ?1",
                params![id, from_ms, now_ms as i64],
            )?;
            Some(Gap {
                from_ms: from_ms as u64,
                to_ms: now_ms,
            })
        }
        None => None,
    };
    conn.execute("INSERT INTO runs (started_ms) VALUES (?1)", [now_ms as i64])?;
    Ok((conn.last_insert_rowid(), gap))
}

pub fn flushed(conn: &Connection, run: i64, now_ms: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET last_flush_ms = ?2 WHERE id = ?1",
        params![run, now_ms as i64],
    )?;
    Ok(())
}

/// Called after the final flush.
pub fn stopped(conn: &Connection, run: i64, now_ms: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET stopped_ms = ?2 WHERE id = ?1",
        params![run, now_ms as i64],
    )?;
    Ok(())
}

/// Gaps overlapping `[from_ms, to_ms)`.
pub fn gaps(conn: &Connection, from_ms: u64, to_ms: u64) -> rusqlite::Result<Vec<Gap>> {
    conn.prepare(
        "SELECT gap_from_ms, gap_to_ms FROM runs
         WHERE gap_to_ms IS NOT NULL AND gap_to_ms > ?1 AND gap_from_ms < ?2 ORDER BY id",
    )?
    .query_map(params![from_ms as i64, to_ms as i64], |row| {
        Ok(Gap {
            from_ms: row.get::<_, i64>(0)? as u64,
            to_ms: row.get::<_, i64>(1)? as u64,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    #[test]
    fn a_clean_stop_leaves_no_gap() {
        let conn = db();
        let (run, gap) = begin(&conn, 1_000).unwrap();
        assert_eq!(gap, None);
        flushed(&conn, run, 2_000).unwrap();
        stopped(&conn, run, 2_100).unwrap();
        assert_eq!(begin(&conn, 5_000).unwrap().1, None);
        assert!(gaps(&conn, 0, u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_killed_run_leaves_a_gap_from_its_last_flush_to_the_next_start() {
        let conn = db();
        let (run, _) = begin(&conn, 1_000).unwrap();
        flushed(&conn, run, 2_000).unwrap();
        let (next, gap) = begin(&conn, 9_000).unwrap();
        let expected = Gap {
            from_ms: 2_000,
            to_ms: 9_000,
        };
        assert_eq!(gap, Some(expected));
        // Recorded once, not again at the start after.
        stopped(&conn, next, 9_500).unwrap();
        assert_eq!(begin(&conn, 10_000).unwrap().1, None);
        assert_eq!(gaps(&conn, 0, 5_000).unwrap(), [expected]);
        assert!(gaps(&conn, 9_000, 20_000).unwrap().is_empty());
    }

    #[test]
    fn a_run_killed_before_any_flush_leaves_a_gap_from_its_start() {
        let conn = db();
        begin(&conn, 1_000).unwrap();
        let gap = begin(&conn, 3_000).unwrap().1.unwrap();
        assert_eq!((gap.from_ms, gap.to_ms), (1_000, 3_000));
    }
}
