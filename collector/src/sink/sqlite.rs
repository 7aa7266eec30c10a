//! The SQLite sink: one file, WAL mode, the `sessions` and `usage` tables of
//! the external interface.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use std::net::IpAddr;

use flowtally_common::agg::Direction;
use rusqlite::{Connection, Row, params_from_iter, types::Value};

use crate::{
    associate::{BacklogChanges, Waiting},
    usage::{Unattributed, UsageRow},
};

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id                 INTEGER PRIMARY KEY,
    user_name          TEXT NOT NULL,
    nas                TEXT NOT NULL,
    session_id         TEXT NOT NULL,
    framed_ip          TEXT,
    framed_prefix      TEXT,
    start_ms           INTEGER NOT NULL,
    stop_ms            INTEGER,
    last_update_ms     INTEGER NOT NULL,
    nas_port_id        TEXT,
    calling_station_id TEXT,
    class              BLOB,
    input_octets       INTEGER,
    output_octets      INTEGER,
    terminate_cause    TEXT,
    interim_interval_s INTEGER,
    changed            INTEGER,
    UNIQUE (nas, session_id, start_ms)
);
CREATE TABLE IF NOT EXISTS session_addresses (
    session  INTEGER NOT NULL REFERENCES sessions (id),
    net      TEXT NOT NULL,
    from_ms  INTEGER NOT NULL,
    to_ms    INTEGER,
    changed  INTEGER,
    PRIMARY KEY (session, net, from_ms)
);
CREATE TABLE IF NOT EXISTS usage (
    bucket_start_ms  INTEGER NOT NULL,
    bucket_width_ms  INTEGER NOT NULL,
    user_name        TEXT,
    session_id       TEXT,
    subscriber_ip    TEXT NOT NULL,
    direction        TEXT NOT NULL CHECK (direction IN ('up', 'down', 'transit')),
    peer_ip          TEXT,
    protocol         INTEGER,
    subscriber_port  INTEGER,
    peer_port        INTEGER,
    exporter         TEXT,
    bytes            INTEGER NOT NULL,
    packets          INTEGER NOT NULL,
    flows            INTEGER NOT NULL,
    first_ms         INTEGER NOT NULL,
    last_ms          INTEGER NOT NULL,
    class            TEXT,
    unattributed     TEXT
);
-- Rows waiting for a late session (associate.rs), kept with each flush so
-- that a killed daemon's successor resumes them.
CREATE TABLE IF NOT EXISTS usage_pending (
    id               INTEGER PRIMARY KEY,
    give_up_ms       INTEGER NOT NULL,
    bucket_start_ms  INTEGER NOT NULL,
    bucket_width_ms  INTEGER NOT NULL,
    user_name        TEXT,
    session_id       TEXT,
    subscriber_ip    TEXT NOT NULL,
    direction        TEXT NOT NULL,
    peer_ip          TEXT,
    protocol         INTEGER,
    subscriber_port  INTEGER,
    peer_port        INTEGER,
    exporter         TEXT,
    bytes            INTEGER NOT NULL,
    packets          INTEGER NOT NULL,
    flows            INTEGER NOT NULL,
    first_ms         INTEGER NOT NULL,
    last_ms          INTEGER NOT NULL,
    class            TEXT,
    unattributed     TEXT
);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (bucket_start_ms);
CREATE INDEX IF NOT EXISTS usage_by_user ON usage (user_name, bucket_start_ms);
CREATE INDEX IF NOT EXISTS sessions_by_change ON sessions (changed);
CREATE INDEX IF NOT EXISTS session_addresses_by_change ON session_addresses (changed);
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clickhouse_progress (
    source     TEXT PRIMARY KEY,
    delivered  INTEGER NOT NULL
);
";

/// Version 1 lacked the interim interval and the address history.
const MIGRATE_1_TO_2: &str = "ALTER TABLE sessions ADD COLUMN interim_interval_s INTEGER;";

/// Version 2 lacked the change sequence the ClickHouse sink delivers by;
/// existing rows are numbered in creation order, so all get delivered.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE sessions ADD COLUMN changed INTEGER;
UPDATE sessions SET changed = id;
";
/// `session_addresses` came with version 2.
const MIGRATE_2_TO_3_ADDRESSES: &str = "
ALTER TABLE session_addresses ADD COLUMN changed INTEGER;
UPDATE session_addresses SET changed = rowid;
";

/// Version 3 lacked destination classes, version 4 the reason a row is
/// unattributed: existing rows have none (NULL). Added where missing rather
/// than by version, since `usage_pending` came without a version of its own.
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("usage", "class"),
    ("usage_pending", "class"),
    ("usage", "unattributed"),
    ("usage_pending", "unattributed"),
];

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open SQLite database {path}: {error}")]
    Sqlite {
        path: String,
        error: rusqlite::Error,
    },
    #[error(
        "SQLite database {path} has schema version {found}, this flowtally knows {SCHEMA_VERSION}"
    )]
    NewerSchema { path: String, found: i64 },
}

/// Opens (creating if needed) the database at `path` in WAL mode.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let name = path.display().to_string();
    let sqlite = |error| OpenError::Sqlite {
        path: name.clone(),
        error,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    // WAL lets `flowtally report` read while the daemon writes.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    // The usage flusher and the RADIUS writer share the file.
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema { path: name, found });
    }
    if found == 1 {
        conn.execute_batch(MIGRATE_1_TO_2).map_err(sqlite)?;
    }
    if (1..=2).contains(&found) {
        conn.execute_batch(MIGRATE_2_TO_3).map_err(sqlite)?;
    }
    if found == 2 {
        conn.execute_batch(MIGRATE_2_TO_3_ADDRESSES)
            .map_err(sqlite)?;
    }
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    for (table, column) in ADDED_COLUMNS {
        add_column(&conn, table, column, "TEXT").map_err(sqlite)?;
    }
    conn.execute_batch(super::runs::SCHEMA).map_err(sqlite)?;
    conn.execute_batch(super::integrity::SCHEMA)
        .map_err(sqlite)?;
    conn.execute_batch(super::nat_store::SCHEMA)
        .map_err(sqlite)?;
    conn.execute_batch(super::sflow_health::SCHEMA)
        .map_err(sqlite)?;
    conn.execute_batch(super::quota_store::SCHEMA)
        .map_err(sqlite)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    Ok(conn)
}

const USAGE_COLUMNS: &str = "bucket_start_ms, bucket_width_ms, user_name, session_id, \
    subscriber_ip, direction, peer_ip, protocol, subscriber_port, peer_port, exporter, bytes, \
    packets, flows, first_ms, last_ms, class, unattributed";

/// `?1, ?2, ... ?n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `column` to `table` unless it has it.
fn add_column(conn: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        &format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |row| row.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
    }
    Ok(())
}

/// Appends `rows` in one transaction: a flush is written whole or not at all.
pub fn write_usage(conn: &mut Connection, rows: &[UsageRow]) -> rusqlite::Result<()> {
    write_flush(conn, rows, &BacklogChanges::default())
}

/// How long one transaction of [`write_flush_in_steps`] writes rows at
/// most: about what a RADIUS commit waits for behind it.
pub const STEP: Duration = Duration::from_millis(20);
/// Rows a step writes at least before it gives way to a waiting commit.
const STEP_MIN_ROWS: usize = 256;
/// How often [`write_flush_in_steps`] syncs the WAL at most.
const SYNC_EVERY: Duration = Duration::from_millis(50);

/// [`write_flush`] in transactions of at most `step` of writing each (less
/// when another writer waits for the gate, once `STEP_MIN_ROWS` are
/// written), each through `gate`, the backlog's changes with the first:
/// between them the RADIUS commits get in. Every `SYNC_EVERY`, outside the gate, the
/// WAL is synced: the flush's connection commits without syncing
/// (`synchronous = NORMAL`), and the next RADIUS commit's sync (`FULL`)
/// would otherwise carry all the flush's pages to disk before its answer
/// could leave. On
/// failure, the rows committed before it (the backlog's changes with them
/// unless none were).
pub fn write_flush_in_steps(
    conn: &mut Connection,
    gate: &super::WriteGate,
    rows: &[UsageRow],
    changes: &BacklogChanges,
    step: Duration,
) -> Result<(), (usize, rusqlite::Error)> {
    let wal = conn
        .path()
        .and_then(|path| std::fs::File::open(format!("{path}-wal")).ok());
    let mut written = 0;
    let mut changes = Some(changes);
    let mut synced = Instant::now();
    while changes.is_some() || written < rows.len() {
        let until = Instant::now() + step;
        let _turn = gate.lock();
        let done = write_some(
            conn,
            &rows[written..],
            changes.take().unwrap_or(&BacklogChanges::default()),
            |n| Instant::now() >= until || (n >= STEP_MIN_ROWS && gate.wanted()),
        );
        drop(_turn);
        written += done.map_err(|err| (written, err))?;
        // A failed sync shows in the next commit that syncs.
        if let Some(wal) = &wal
            && synced.elapsed() >= SYNC_EVERY
        {
            let _ = wal.sync_data();
            synced = Instant::now();
        }
    }
    Ok(())
}

/// [`write_usage`], and the association backlog's `changes` in the same
/// transaction.
pub fn write_flush(
    conn: &mut Connection,
    rows: &[UsageRow],
    changes: &BacklogChanges,
) -> rusqlite::Result<()> {
    write_some(conn, rows, changes, |_| false).map(drop)
}

/// The backlog's `changes` and the first of `rows` in one transaction: all
/// of them, or those written until `enough` (asked now and then, with the
/// rows written so far) says so; returns how many.
fn write_some(
    conn: &mut Connection,
    rows: &[UsageRow],
    changes: &BacklogChanges,
    enough: impl Fn(usize) -> bool,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut written: usize = 0;
    {
        let mut wait = tx.prepare_cached(&format!(
            "INSERT INTO usage_pending (id, give_up_ms, {USAGE_COLUMNS}) VALUES ({})",
            placeholders(USAGE_VALUES + 2)
        ))?;
        for waiting in &changes.entered {
            let key = [waiting.id as i64, waiting.give_up_ms as i64].map(Value::from);
            wait.execute(params_from_iter(
                key.into_iter().chain(values(&waiting.row)),
            ))?;
        }
        let mut done = tx.prepare_cached("DELETE FROM usage_pending WHERE id = ?1")?;
        for id in &changes.left {
            done.execute([*id as i64])?;
        }
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO usage ({USAGE_COLUMNS}) VALUES ({})",
            placeholders(USAGE_VALUES)
        ))?;
        for row in rows {
            insert.execute(params_from_iter(values(row)))?;
            written += 1;
            // The clock now and then: a row takes microseconds.
            if written.is_multiple_of(32) && enough(written) {
                break;
            }
        }
    }
    tx.commit()?;
    Ok(written)
}

/// The backlog a previous run left, to resume.
pub fn read_pending(conn: &Connection) -> rusqlite::Result<Vec<Waiting>> {
    conn.prepare(&format!(
        "SELECT id, give_up_ms, {USAGE_COLUMNS} FROM usage_pending ORDER BY id"
    ))?
    .query_map([], |row| {
        let count = |i| row.get::<_, i64>(i).map(|n| n as u64);
        Ok(Waiting {
            id: count(0)?,
            give_up_ms: count(1)?,
            row: UsageRow {
                bucket_start_ms: count(2)?,
                bucket_width_ms: count(3)?,
                user_name: row.get(4)?,
                session_id: row.get(5)?,
                subscriber_ip: parse(row, 6)?,
                direction: parse::<String>(row, 7)
                    .and_then(|text| direction(&text).ok_or_else(|| bad(7, &text)))?,
                peer_ip: parse_opt(row, 8)?,
                protocol: row.get(9)?,
                subscriber_port: row.get(10)?,
                peer_port: row.get(11)?,
                exporter: parse_opt(row, 12)?,
                bytes: count(13)?,
                packets: count(14)?,
                flows: count(15)?,
                first_ms: count(16)?,
                last_ms: count(17)?,
                class: row.get(18)?,
                unattributed: row
                    .get::<_, Option<String>>(19)?
                    .map(|text| Unattributed::parse(&text).ok_or_else(|| bad(19, &text)))
                    .transpose()?,
            },
        })
    })?
    .collect()
}

const USAGE_VALUES: usize = 18;

/// A usage row's columns in [`USAGE_COLUMNS`] order.
fn values(row: &UsageRow) -> [Value; USAGE_VALUES] {
    let text = |ip: Option<IpAddr>| ip.map(|ip| ip.to_string()).into();
    // SQLite integers are i64; counters beyond 2^63 are not real.
    let int = |n: u64| Value::Integer(n as i64);
    [
        int(row.bucket_start_ms),
        int(row.bucket_width_ms),
        row.user_name.clone().into(),
        row.session_id.clone().into(),
        row.subscriber_ip.to_string().into(),
        row.direction.as_str().to_owned().into(),
        text(row.peer_ip),
        row.protocol.into(),
        row.subscriber_port.into(),
        row.peer_port.into(),
        text(row.exporter),
        int(row.bytes),
        int(row.packets),
        int(row.flows),
        int(row.first_ms),
        int(row.last_ms),
        row.class.clone().into(),
        row.unattributed
            .map(|reason| reason.as_str().to_owned())
            .into(),
    ]
}

fn direction(text: &str) -> Option<Direction> {
    [Direction::Up, Direction::Down, Direction::Transit]
        .into_iter()
        .find(|d| d.as_str() == text)
}

fn parse<T: std::str::FromStr>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    text.parse().map_err(|_| bad(i, &text))
}

fn parse_opt<T: std::str::FromStr>(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => parse(row, i).map(Some),
    }
}

fn bad(i: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unexpected value {text:?}").into(),
    )
}

#[cfg(test)]
mod tests {
    use flowtally_common::agg::Direction;

    use super::*;

    #[test]
    fn usage_rows_are_written_with_nulls_for_masked_fields() {
        let path = temp_db("usage");
        let mut conn = open(&path).unwrap();
        let row = UsageRow {
            bucket_start_ms: 60_000,
            bucket_width_ms: 60_000,
            subscriber_ip: "198.18.100.1".parse().unwrap(),
            direction: Direction::Down,
            user_name: None,
            session_id: None,
            peer_ip: None,
            protocol: Some(6),
            subscriber_port: None,
            peer_port: Some(443),
            exporter: None,
            class: None,
            unattributed: Some(Unattributed::NoSession),
            bytes: 1500,
            packets: 1,
            flows: 1,
            first_ms: 60_001,
            last_ms: 60_002,
        };
        write_usage(&mut conn, &[row.clone(), row]).unwrap();
        let (n, bytes, peer, user, reason): (i64, i64, Option<String>, Option<String>, String) =
            conn.query_row(
                "SELECT count(*), sum(bytes), max(peer_ip), max(user_name), max(unattributed)
                 FROM usage
                 WHERE subscriber_ip = '198.18.100.1' AND direction = 'down' AND peer_port = 443",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            (n, bytes, peer, user, reason.as_str()),
            (2, 3000, None, None, "no_session")
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flowtally-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("flowtally.db")
    }

    #[test]
    fn opening_creates_the_contract_tables_in_wal_mode() {
        let path = temp_db("create");
        let conn = open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        for table in ["sessions", "usage"] {
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table}");
        }
        drop(conn);
        open(&path).expect("reopening an existing database works");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let path = temp_db("migrate");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_name TEXT NOT NULL,
                nas TEXT NOT NULL, session_id TEXT NOT NULL, framed_ip TEXT, framed_prefix TEXT,
                start_ms INTEGER NOT NULL, stop_ms INTEGER, last_update_ms INTEGER NOT NULL,
                nas_port_id TEXT, calling_station_id TEXT, class BLOB, input_octets INTEGER,
                output_octets INTEGER, terminate_cause TEXT, UNIQUE (nas, session_id, start_ms));
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('sessions')
                 WHERE name IN ('interim_interval_s', 'changed')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(n, 2);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_backlog_persists_by_its_changes() {
        let path = temp_db("pending");
        let mut conn = open(&path).unwrap();
        let row = |bytes| UsageRow {
            bucket_start_ms: 60_000,
            bucket_width_ms: 60_000,
            subscriber_ip: "2001:db8::7".parse().unwrap(),
            direction: Direction::Up,
            user_name: None,
            session_id: None,
            peer_ip: Some("198.19.0.1".parse().unwrap()),
            protocol: Some(17),
            subscriber_port: Some(53),
            peer_port: None,
            exporter: Some("198.18.0.1".parse().unwrap()),
            class: Some("ix".into()),
            unattributed: Some(Unattributed::NoSession),
            bytes,
            packets: 1,
            flows: 1,
            first_ms: 60_001,
            last_ms: 60_002,
        };
        let waiting = |id, bytes| Waiting {
            id,
            give_up_ms: 90_000,
            row: row(bytes),
        };
        let entered = BacklogChanges {
            entered: vec![waiting(1, 10), waiting(2, 20)],
            left: Vec::new(),
        };
        write_flush(&mut conn, &[], &entered).unwrap();
        let left = BacklogChanges {
            entered: vec![waiting(3, 30)],
            left: vec![1],
        };
        write_flush(&mut conn, &[row(10)], &left).unwrap();
        assert_eq!(
            read_pending(&conn).unwrap(),
            [waiting(2, 20), waiting(3, 30)]
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_version_2_database_numbers_its_rows_for_delivery() {
        let path = temp_db("migrate2");
        let conn = open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO sessions (id, user_name, nas, session_id, start_ms, last_update_ms)
                VALUES (7, 'alice', '198.18.0.1', 'a1', 1000, 1000);
             INSERT INTO session_addresses (session, net, from_ms) VALUES (7, '198.18.100.7/32', 1000);
             DROP INDEX sessions_by_change;
             DROP INDEX session_addresses_by_change;
             ALTER TABLE sessions DROP COLUMN changed;
             ALTER TABLE session_addresses DROP COLUMN changed;
             DROP TABLE meta;
             DROP TABLE clickhouse_progress;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        let changed: (i64, i64) = conn
            .query_row(
                "SELECT s.changed, a.changed FROM sessions s JOIN session_addresses a
                 ON a.session = s.id",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(changed, (7, 1));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_version_3_database_gains_class_and_reason_columns_with_old_rows_null() {
        let path = temp_db("migrate3");
        let mut conn = open(&path).unwrap();
        let row = |class: Option<&str>| UsageRow {
            class: class.map(str::to_owned),
            unattributed: class.map(|_| Unattributed::NatNoBinding),
            ..UsageRow::bare(
                60_000,
                "198.18.100.7".parse().unwrap(),
                Direction::Down,
                500,
            )
        };
        write_usage(&mut conn, &[row(None)]).unwrap();
        conn.execute_batch(
            "ALTER TABLE usage DROP COLUMN class;
             ALTER TABLE usage_pending DROP COLUMN class;
             ALTER TABLE usage DROP COLUMN unattributed;
             ALTER TABLE usage_pending DROP COLUMN unattributed;
             PRAGMA user_version = 3;",
        )
        .unwrap();
        drop(conn);
        let mut conn = open(&path).unwrap();
        write_usage(&mut conn, &[row(Some("local"))]).unwrap();
        let rows: Vec<(Option<String>, Option<String>, i64)> = conn
            .prepare("SELECT class, unattributed, bytes FROM usage ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (None, None, 500),
                (Some("local".into()), Some("nat_no_binding".into()), 500)
            ]
        );
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_flowtally_is_refused() {
        let path = temp_db("newer");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(open(&path), Err(OpenError::NewerSchema { .. })));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
