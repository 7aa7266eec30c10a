//! Where usage, sessions and NAT bindings are stored.

pub mod clickhouse;
pub mod integrity;
pub mod nat_store;
pub mod quota_store;
pub mod runs;
pub mod session_store;
pub mod sflow_health;
pub mod sqlite;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use rusqlite::{Connection, ErrorCode};

/// Taken by each of the daemon's SQLite writers (the flush, the RADIUS
/// commits) around a write transaction. SQLite lets one writer in at a
/// time and makes the others poll, sleeping up to 100 ms between tries, so
/// a RADIUS commit behind a flush's write waited for all of it and then
/// some. The gate hands over in arrival order: a commit waits at most for
/// the transaction in progress, and the flush writes in steps
/// ([`sqlite::write_flush_in_steps`]), which ends a step early when a
/// commit waits.
pub type WriteGate = Arc<Gate>;

#[derive(Debug, Default)]
pub struct Gate {
    turn: parking_lot::FairMutex<()>,
    /// Writers waiting for their turn.
    waiting: AtomicUsize,
}

impl Gate {
    /// Waits for this writer's turn, which lasts as long as the guard.
    pub fn lock(&self) -> parking_lot::FairMutexGuard<'_, ()> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let turn = self.turn.lock();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        turn
    }

    /// Whether another writer waits for its turn.
    pub fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }
}

/// How long the daemon's writers wait for a write lock held by another
/// program (the gate keeps them from waiting for each other) before the
/// write fails and an outage begins: the RADIUS answer waits for it, and
/// the writers' waits add up as they take turns.
pub const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checkpoints the WAL into the database without waiting for anyone; the
/// daemon's connections leave automatic checkpoints off, so that no RADIUS
/// commit ends up copying a flush's pages before its answer leaves.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Why SQLite refused a write on `conn`, as a metric label: `disk_full`,
/// `read_only` (the file, or its filesystem), `locked` (another connection
/// held the write lock past the busy timeout), `io` (a write or sync the
/// disk failed), `other`.
pub fn failure_cause(conn: &Connection, err: &rusqlite::Error) -> &'static str {
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "disk_full",
        Some(ErrorCode::ReadOnly) => "read_only",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "locked",
        // A write refused by a filesystem turned read-only reaches SQLite
        // as a failed write: the errno behind it tells.
        Some(ErrorCode::SystemIoFailure) => match system_errno(conn) {
            libc::EROFS => "read_only",
            libc::ENOSPC | libc::EDQUOT => "disk_full",
            _ => "io",
        },
        _ => "other",
    }
}

/// The errno of `conn`'s last failed system call.
fn system_errno(conn: &Connection) -> i32 {
    // SAFETY: the handle is valid while `conn` is borrowed, and
    // sqlite3_system_errno only reads the connection's last error.
    unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) }
}
