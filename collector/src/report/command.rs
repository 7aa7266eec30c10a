//! The I/O around [`super::compute`]: reads the tariff and organisations
//! files and the database, and renders the report.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use flowtally_common::agg::Direction;
use rusqlite::{Connection, OpenFlags, Row, params};

use super::{
    Query, Usage, compute,
    group::{By, Grouping},
    orgs::{Orgs, OrgsError},
    render::render,
    tariff::{Tariff, TariffError},
};
use crate::{
    cli::ReportArgs,
    sessions::{AddressRow, SessionRow},
    sink::{clickhouse, runs, session_store},
    timestamp::Timestamp,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} file {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("tariff file {path}: {error}")]
    Tariff { path: PathBuf, error: TariffError },
    #[error("orgs file {path}: {error}")]
    Orgs { path: PathBuf, error: OrgsError },
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyRange { from: Timestamp, to: Timestamp },
    #[error("cannot read database {path}: {error}")]
    Database {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("cannot read ClickHouse at {url}: {error:#}")]
    ClickHouse { url: String, error: anyhow::Error },
}

impl Error {
    /// 2 for what the operator wrote (flags, files), 1 for the database.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Database { .. } | Self::ClickHouse { .. } => 1,
            _ => 2,
        }
    }
}

/// The report as `args` ask for it; `now` ends what is still open and is
/// the default `--to`.
pub fn run(args: &ReportArgs, now: Timestamp) -> Result<String, Error> {
    let from = args.from.unwrap_or(Timestamp(0));
    let to = args.to.unwrap_or(now);
    if from >= to {
        return Err(Error::EmptyRange { from, to });
    }
    let tariff = args
        .tariff
        .as_deref()
        .map(|path| {
            Tariff::parse(&read("tariff", path)?).map_err(|error| Error::Tariff {
                path: path.to_owned(),
                error,
            })
        })
        .transpose()?;
    let grouping = match args.by {
        By::User => Grouping::User,
        By::Session => Grouping::Session,
        By::Subnet => Grouping::Subnet {
            v4: args.subnet_prefix_v4,
            v6: args.subnet_prefix_v6,
        },
        By::Org => {
            let path = args
                .orgs
                .as_deref()
                .expect("clap requires --orgs with --by org");
            Grouping::Org(
                Orgs::parse(&read("orgs", path)?).map_err(|error| Error::Orgs {
                    path: path.to_owned(),
                    error,
                })?,
            )
        }
    };
    let (usage, sessions, addresses) = match (&args.clickhouse, &args.db) {
        (Some(url), _) => {
            read_clickhouse(args, url, from.0, to.0).map_err(|error| Error::ClickHouse {
                url: url.clone(),
                error,
            })?
        }
        (None, Some(db)) => read_sqlite(db, from.0, to.0).map_err(|error| Error::Database {
            path: db.clone(),
            error,
        })?,
        (None, None) => unreachable!("clap requires --db or --clickhouse"),
    };
    let query = Query {
        from_ms: from.0,
        to_ms: to.0,
        now_ms: now.0,
        grouping: &grouping,
        tariff: tariff.as_ref(),
    };
    Ok(render(
        &compute(&query, &usage, &sessions, &addresses),
        args.format,
    ))
}

type Rows = (Vec<Usage>, Vec<SessionRow>, Vec<AddressRow>);

fn read_sqlite(db: &Path, from_ms: u64, to_ms: u64) -> rusqlite::Result<Rows> {
    // Read-only: a mistyped path fails instead of creating a database.
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Older databases have no `runs` table, hence no known gaps.
    for gap in runs::gaps(&conn, from_ms, to_ms).unwrap_or_default() {
        eprintln!(
            "warning: flowtally was killed or crashed between {} and {}: usage from then \
             may be missing",
            Timestamp(gap.from_ms),
            Timestamp(gap.to_ms)
        );
    }
    let usage = read_usage(&conn, from_ms, to_ms)?;
    let (sessions, addresses) = session_store::read(&conn)?;
    Ok((usage, sessions, addresses))
}

fn read_clickhouse(args: &ReportArgs, url: &str, from_ms: u64, to_ms: u64) -> anyhow::Result<Rows> {
    let password = std::env::var("FLOWTALLY_CLICKHOUSE_PASSWORD").ok();
    let client = clickhouse::client(
        url,
        &args.clickhouse_database,
        args.clickhouse_user.as_deref(),
        password.as_deref(),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(clickhouse::read::read(&client, from_ms, to_ms))
}

fn read(what: &'static str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// The usage rows whose bucket starts in `[from_ms, to_ms)`, summed in
/// SQLite over peers, ports, protocols and exporters: the detail profile
/// writes a row for each, which a report never shows.
fn read_usage(conn: &Connection, from_ms: u64, to_ms: u64) -> rusqlite::Result<Vec<Usage>> {
    conn.prepare(
        "SELECT bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction, SUM(bytes), SUM(packets), SUM(flows)
         FROM usage WHERE bucket_start_ms >= ?1 AND bucket_start_ms < ?2
         GROUP BY bucket_start_ms, bucket_width_ms, user_name, session_id, subscriber_ip,
            direction",
    )?
    .query_map(params![from_ms as i64, to_ms as i64], |row| {
        let count = |i| row.get::<_, i64>(i).map(|n| n as u64);
        Ok(Usage {
            bucket_start_ms: count(0)?,
            bucket_width_ms: count(1)?,
            user_name: row.get(2)?,
            session_id: row.get(3)?,
            subscriber_ip: parse(row, 4, "an address", |s| s.parse::<IpAddr>().ok())?,
            direction: parse(row, 5, "a direction", |s| match s {
                "up" => Some(Direction::Up),
                "down" => Some(Direction::Down),
                "transit" => Some(Direction::Transit),
                _ => None,
            })?,
            bytes: count(6)?,
            packets: count(7)?,
            flows: count(8)?,
        })
    })?
    .collect()
}

fn parse<T>(
    row: &Row<'_>,
    i: usize,
    what: &str,
    from_text: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    from_text(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not {what}: {text:?}").into(),
        )
    })
}
