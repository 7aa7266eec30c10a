//! `flowtally quota`: each quota's usage in its period at a moment, per
//! user, against the budget; its state; and the last request sent. Reads
//! the configuration (the quotas) and the database (`usage`,
//! `enforcement`), writes nothing.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::Rule;
use crate::{
    config::{Config, ConfigError, Overrides},
    report::render::Format,
    sink::quota_store::{self, LastAction},
    timestamp::Timestamp,
};

pub struct Request {
    pub config: PathBuf,
    /// Default: the configuration's `db`.
    pub db: Option<PathBuf>,
    pub user: Option<String>,
    pub at: Timestamp,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {error}")]
    Db {
        path: String,
        error: rusqlite::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Db { .. } => 1,
        }
    }
}

/// One user under one quota.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub quota: String,
    pub user: String,
    pub used: u64,
    pub limit: u64,
    /// `over`, `warned` (past a `notify_at` threshold) or `under`.
    pub state: &'static str,
    pub period_start: Timestamp,
    pub last: Option<LastAction>,
}

pub fn run(request: &Request) -> Result<String, Error> {
    let config = Config::load(Some(&request.config), Overrides::default())?;
    let path = request.db.clone().unwrap_or(config.db.clone());
    let db_error = |error| Error::Db {
        path: path.display().to_string(),
        error,
    };
    let conn =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_error)?;
    let mut lines = Vec::new();
    for quota in &config.quotas {
        lines.extend(quota_lines(&conn, &Rule::new(quota), request).map_err(db_error)?);
    }
    Ok(render(&lines, request.format))
}

fn quota_lines(conn: &Connection, rule: &Rule, request: &Request) -> rusqlite::Result<Vec<Line>> {
    let period = rule.calendar.period(request.at.0);
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(users) = &rule.users {
        for user in users {
            used.insert(user.clone(), 0);
        }
    }
    let user = request.user.as_deref();
    for (name, direction, class, bytes) in
        quota_store::usage(conn, period.start_ms, period.end_ms, user)?
    {
        if rule.applies_to(&name) && rule.counts(direction, class.as_deref()) {
            *used.entry(name).or_default() += bytes;
        }
    }
    let mut lines = Vec::new();
    for (name, used) in used {
        if user.is_some_and(|user| user != name) {
            continue;
        }
        let reached = rule.reached(used);
        let state = if used >= rule.bytes {
            "over"
        } else if reached > 0 {
            "warned"
        } else {
            "under"
        };
        // A database older than quotas has no `enforcement`: no action.
        let last =
            quota_store::last_action(conn, &rule.name, &name, period.start_ms).unwrap_or(None);
        lines.push(Line {
            quota: rule.name.clone(),
            user: name,
            used,
            limit: rule.bytes,
            state,
            period_start: Timestamp(period.start_ms),
            last,
        });
    }
    Ok(lines)
}

fn share(line: &Line) -> f64 {
    100.0 * line.used as f64 / line.limit as f64
}

fn last_action(last: &Option<LastAction>) -> String {
    let Some(last) = last else {
        return "-".to_owned();
    };
    let result = match (&last.result, last.error_cause) {
        (None, _) => "pending".to_owned(),
        (Some(result), Some(cause)) => format!("{result} (Error-Cause {cause})"),
        (Some(result), None) => result.clone(),
    };
    format!(
        "{} {} {result} at {}",
        last.action,
        last.session_id,
        Timestamp(last.decided_ms)
    )
}

fn render(lines: &[Line], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Table => {
            let rows: Vec<[String; 8]> = lines
                .iter()
                .map(|l| {
                    [
                        l.quota.clone(),
                        l.user.clone(),
                        l.used.to_string(),
                        l.limit.to_string(),
                        format!("{:.1}%", share(l)),
                        l.state.to_owned(),
                        l.period_start.to_string(),
                        last_action(&l.last),
                    ]
                })
                .collect();
            let header = [
                "QUOTA",
                "USER",
                "USED",
                "LIMIT",
                "SHARE",
                "STATE",
                "PERIOD-START",
                "LAST-ACTION",
            ]
            .map(str::to_owned);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                writeln!(out, "{}", cells.join("  ").trim_end()).unwrap();
            }
        }
        Format::Csv => {
            out.push_str("quota,user,used_bytes,limit_bytes,state,period_start,last_action\n");
            for l in lines {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    csv(&l.quota),
                    csv(&l.user),
                    l.used,
                    l.limit,
                    l.state,
                    l.period_start,
                    csv(&last_action(&l.last))
                )
                .unwrap();
            }
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "quota": l.quota,
                        "user": l.user,
                        "used_bytes": l.used,
                        "limit_bytes": l.limit,
                        "state": l.state,
                        "period_start": l.period_start.to_string(),
                        "last_action": l.last.as_ref().map(|a| serde_json::json!({
                            "action": a.action,
                            "session_id": a.session_id,
                            "decided": Timestamp(a.decided_ms).to_string(),
                            "result": a.result,
                            "error_cause": a.error_cause,
                        })),
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::Value::Array(items)).unwrap();
        }
    }
    out
}

/// A CSV field, quoted when it must be.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
