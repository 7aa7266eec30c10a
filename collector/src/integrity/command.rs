//! The I/O around [`super::audit::compute`]: reads the rows of a range from
//! the SQLite database and renders the audit.

use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

use super::audit::{Audit, Judgement, compute, render};
use crate::{report::render::Format, sink::integrity::read_audit, timestamp::Timestamp};

/// An audit as the command line asks for it.
#[derive(Clone, Debug)]
pub struct Request {
    pub db: PathBuf,
    /// Default: all.
    pub from: Option<Timestamp>,
    /// Default: now.
    pub to: Option<Timestamp>,
    pub judgement: Judgement,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyRange { from: Timestamp, to: Timestamp },
    #[error("database {path}: {error}")]
    Database {
        path: PathBuf,
        error: rusqlite::Error,
    },
}

impl Error {
    /// 2 for what the operator wrote, 1 for the database.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::EmptyRange { .. } => 2,
            Self::Database { .. } => 1,
        }
    }
}

/// The audit `request` asks for, rendered; `now` is the default `to`.
pub fn run(request: &Request, now: Timestamp) -> Result<(Audit, String), Error> {
    let from = request.from.unwrap_or(Timestamp(0));
    let to = request.to.unwrap_or(now);
    if from >= to {
        return Err(Error::EmptyRange { from, to });
    }
    let database = |error| Error::Database {
        path: request.db.clone(),
        error,
    };
    // Read-only: a mistyped path fails instead of creating a database.
    let conn = Connection::open_with_flags(&request.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(database)?;
    let rows = read_audit(&conn, from.0, to.0).map_err(database)?;
    let audit = compute(&rows, request.judgement);
    let text = render(&audit, request.format);
    Ok((audit, text))
}
