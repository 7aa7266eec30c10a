//! The I/O around [`super::compute`]: reads the tariff and organisations
//! files and the rows from their source, and renders the report.

use std::path::{Path, PathBuf};

use super::{
    Query, compute,
    filter::Filter,
    group::{By, Grouping},
    orgs::{Orgs, OrgsError},
    percentile::{self, Percentile, PercentileError},
    render::{Format, Units, render},
    source::{Source, SourceError},
    tariff::{Tariff, TariffError},
};
use crate::timestamp::Timestamp;

/// A report as the command line (or any other front end) asks for it.
#[derive(Clone, Debug)]
pub struct Request {
    pub source: Source,
    /// Default: all.
    pub from: Option<Timestamp>,
    /// Default: now.
    pub to: Option<Timestamp>,
    pub by: By,
    pub tariff: Option<PathBuf>,
    /// Required with [`By::Org`].
    pub orgs: Option<PathBuf>,
    pub subnet_prefix_v4: u8,
    pub subnet_prefix_v6: u8,
    /// One user's or one network's part only.
    pub filter: Filter,
    pub format: Format,
    /// How a table writes volumes.
    pub units: Units,
    /// Adds each group's percentile of its 5-minute rates; needs `from`.
    pub percentile: Option<Percentile>,
}

/// A rendered report, and what its reader should be warned of.
pub struct Report {
    pub text: String,
    pub warnings: Vec<String>,
}

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
    #[error("--orgs is required with --by org")]
    OrgsMissing,
    #[error("--percentile needs --from: the start of the billing period whose intervals count")]
    PercentileWithoutFrom,
    #[error(transparent)]
    Percentile(#[from] PercentileError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl Error {
    /// 2 for what the operator wrote (flags, files), 1 for the database.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Source(_) => 1,
            _ => 2,
        }
    }
}

/// The report `args` ask for; `now` ends what is still open and is the
/// default `to`.
pub fn run(args: &Request, now: Timestamp) -> Result<Report, Error> {
    run_with_progress(args, now, &mut |_, _| {})
}

/// [`run`], telling `progress` how much of the reading is done (done,
/// total) as it goes: what a progress bar shows on a terminal.
pub fn run_with_progress(
    args: &Request,
    now: Timestamp,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, Error> {
    if args.percentile.is_some() && args.from.is_none() {
        return Err(Error::PercentileWithoutFrom);
    }
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
        By::Class => Grouping::Class,
        By::Org => {
            let path = args.orgs.as_deref().ok_or(Error::OrgsMissing)?;
            Grouping::Org(
                Orgs::parse(&read("orgs", path)?).map_err(|error| Error::Orgs {
                    path: path.to_owned(),
                    error,
                })?,
            )
        }
    };
    let read = args.source.read(from.0, to.0, progress)?;
    let (usage, sessions, addresses) = &args.filter.apply(read.rows);
    let query = Query {
        from_ms: from.0,
        to_ms: to.0,
        now_ms: now.0,
        grouping: &grouping,
        tariff: tariff.as_ref(),
    };
    let mut report = compute(&query, usage, sessions, addresses);
    if let Some(p) = args.percentile {
        report.percentiles = Some(percentile::compute(usage, &grouping, from.0, to.0, p)?);
    }
    Ok(Report {
        text: render(&report, args.format, args.units),
        warnings: read.warnings,
    })
}

fn read(what: &'static str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read {
        what,
        path: path.to_owned(),
        error,
    })
}
