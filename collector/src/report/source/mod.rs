//! Where a report's rows come from: the SQLite database one instance
//! writes, or the ClickHouse all instances share. Both give the same
//! usage sums, sessions and address intervals.

pub mod clickhouse;
mod sqlite;

use std::path::PathBuf;

pub use self::clickhouse::ClickHouseSource;
use super::Usage;
use crate::sessions::{AddressRow, SessionRow};

/// Usage summed per bucket, user, session, address and direction; every
/// session and its address intervals.
pub type Rows = (Vec<Usage>, Vec<SessionRow>, Vec<AddressRow>);

#[derive(Clone, Debug)]
pub enum Source {
    Sqlite(PathBuf),
    ClickHouse(ClickHouseSource),
}

/// What a source read, and what a reader of the report should know about
/// it (stretches when no collector ran).
pub struct Read {
    pub rows: Rows,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read database {path}: {error}")]
    Database {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("cannot read ClickHouse at {url}: {error:#}")]
    ClickHouse { url: String, error: anyhow::Error },
}

impl Source {
    /// Usage whose bucket starts in `[from_ms, to_ms)`, and all sessions;
    /// `progress` hears (done, total) as the usage is read.
    pub fn read(
        &self,
        from_ms: u64,
        to_ms: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Read, SourceError> {
        match self {
            Self::Sqlite(path) => sqlite::read(path, from_ms, to_ms, progress).map_err(|error| {
                SourceError::Database {
                    path: path.clone(),
                    error,
                }
            }),
            Self::ClickHouse(source) => {
                // One query: nothing to count between its start and end.
                progress(0, 1);
                let read = source
                    .read_blocking(from_ms, to_ms)
                    .map(|rows| Read {
                        rows,
                        warnings: Vec::new(),
                    })
                    .map_err(|error| SourceError::ClickHouse {
                        url: source.url.clone(),
                        error,
                    });
                progress(1, 1);
                read
            }
        }
    }
}
