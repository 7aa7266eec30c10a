//! Where usage, sessions and NAT bindings are stored.

pub mod clickhouse;
pub mod integrity;
pub mod nat_store;
pub mod runs;
pub mod session_store;
pub mod sflow_health;
pub mod sqlite;

use rusqlite::{Connection, ErrorCode};

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
