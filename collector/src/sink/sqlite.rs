//! The SQLite sink: one file, WAL mode, the `sessions` and `usage` tables of
//! the external interface.

use std::path::Path;

use rusqlite::Connection;

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

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
    UNIQUE (nas, session_id, start_ms)
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
    exporter         TEXT NOT NULL,
    bytes            INTEGER NOT NULL,
    packets          INTEGER NOT NULL,
    flows            INTEGER NOT NULL,
    first_ms         INTEGER NOT NULL,
    last_ms          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (bucket_start_ms);
CREATE INDEX IF NOT EXISTS usage_by_user ON usage (user_name, bucket_start_ms);
";

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
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema { path: name, found });
    }
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

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
