//! The JSON API under `/api/v1/`. Every figure comes from the code the
//! command line runs: `usage` is `flowtally report --format json` (the same
//! [`command::run`] on the same [`Request`]), `whois` is `flowtally whois`,
//! `series` and `sessions` read the same source the report reads. Times are
//! taken as the CLI takes them (RFC 3339, Unix seconds, `now`, `-1h`) and
//! given as RFC 3339.

use std::{path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::{Shared, error::ApiError, params::Params};
use crate::{
    metrics::talkers::{MAX_WINDOW_MS, TalkerKey},
    report::{
        command::{self, Request},
        filter::Filter,
        group::By,
        render::{Format, Units},
        series::{MAX_STEPS, series as steps},
        source::Source,
    },
    sessions::{AddressRow, Owner, SessionRow},
    sink::session_store,
    timestamp::Timestamp,
    whois::{Answer, PortQuery, Target},
};

/// Warnings of a report (a gap while no collector ran), one header each.
const WARNING: HeaderName = HeaderName::from_static("flowtally-warning");
const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/", get(index))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/series", get(series))
        .route("/api/v1/whois", get(whois))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/exporters", get(exporters))
        .route("/api/v1/top", get(top))
        .route("/api/v1/tariffs", get(tariffs))
}

fn params(pairs: Pairs, allowed: &[&'static str]) -> Result<Params, ApiError> {
    let Query(pairs) = pairs.map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the query string: {err}"),
        )
    })?;
    Params::new(pairs, allowed)
}

/// Runs a database read on the blocking pool, at most [`super::MAX_READS`]
/// at once.
async fn read<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = shared
        .reads
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::internal(format!("a read failed: {err}")))?
}

async fn index() -> Json<Value> {
    Json(json!({
        "endpoints": [
            "/api/v1/usage?by=user|session|subnet|org&from=&to=&user=&ip=&tariff=",
            "/api/v1/series?user=&ip=&from=&to=&step=hour|day|DURATION",
            "/api/v1/whois?ip=IP[:PORT]&at=TIME",
            "/api/v1/sessions?user=&ip=&from=&to=&limit=",
            "/api/v1/exporters",
            "/api/v1/top?by=user|ip&window=5m&limit=",
            "/api/v1/tariffs",
        ]
    }))
}

/// `flowtally report --format json`, byte for byte.
async fn usage(State(shared): State<Arc<Shared>>, pairs: Pairs) -> Result<Response, ApiError> {
    let p = params(
        pairs,
        &[
            "by",
            "from",
            "to",
            "user",
            "ip",
            "tariff",
            "subnet_prefix_v4",
            "subnet_prefix_v6",
            "percentile",
        ],
    )?;
    let now = (shared.clock)();
    let by = by(&p)?;
    if by == By::Org && shared.orgs.is_none() {
        return Err(ApiError::parameter(
            "by",
            "org needs an organisations file (http.orgs) on the server",
        ));
    }
    let request = Request {
        source: Source::Sqlite(shared.db.clone()),
        from: p.time("from", now)?,
        to: p.time("to", now)?,
        by,
        tariff: tariff(&shared, &p)?,
        orgs: shared.orgs.clone(),
        subnet_prefix_v4: p.number("subnet_prefix_v4", 0..=32)?.unwrap_or(24),
        subnet_prefix_v6: p.number("subnet_prefix_v6", 0..=128)?.unwrap_or(64),
        filter: filter(&p)?,
        format: Format::Json,
        units: Units::B,
        percentile: p
            .text("percentile")
            .map(str::parse)
            .transpose()
            .map_err(|message: String| ApiError::parameter("percentile", message))?,
    };
    let report = read(&shared, move || {
        command::run(&request, now).map_err(|err| match err {
            command::Error::EmptyRange { .. } => {
                ApiError::parameter("from", format!("must be before `to`: {err}"))
            }
            command::Error::PercentileWithoutFrom | command::Error::Percentile(_) => {
                ApiError::parameter("percentile", err.to_string())
            }
            err => ApiError::internal(err.to_string()),
        })
    })
    .await?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], report.text).into_response();
    for warning in report.warnings {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(WARNING, value);
        }
    }
    Ok(response)
}

fn by(p: &Params) -> Result<By, ApiError> {
    Ok(p.choice(
        "by",
        &[
            ("user", By::User),
            ("session", By::Session),
            ("subnet", By::Subnet),
            ("org", By::Org),
            ("class", By::Class),
        ],
    )?
    .unwrap_or(By::User))
}

fn filter(p: &Params) -> Result<Filter, ApiError> {
    Ok(Filter {
        user: p.text("user").map(str::to_owned),
        net: p.net("ip")?,
    })
}

/// `tariff=NAME`: `NAME.toml` in the `http.tariffs` directory.
fn tariff(shared: &Shared, p: &Params) -> Result<Option<std::path::PathBuf>, ApiError> {
    let Some(name) = p.text("tariff") else {
        return Ok(None);
    };
    let Some(dir) = &shared.tariffs else {
        return Err(ApiError::parameter(
            "tariff",
            "no tariffs on this server (http.tariffs)",
        ));
    };
    if !valid_name(name) {
        return Err(ApiError::parameter(
            "tariff",
            "a tariff name is letters, digits, '-' and '_'",
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    if !path.is_file() {
        return Err(ApiError::parameter(
            "tariff",
            format!("no tariff {name:?}; see /api/v1/tariffs"),
        ));
    }
    Ok(Some(path))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The tariff names `tariff=` takes.
async fn tariffs(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let names = match &shared.tariffs {
        Some(dir) => tariff_names(dir)
            .map_err(|err| ApiError::internal(format!("http.tariffs {}: {err}", dir.display())))?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "tariffs": names })))
}

fn tariff_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let (Some(name), Some("toml")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) && valid_name(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Up and down bytes per step, from the rows a report reads.
async fn series(State(shared): State<Arc<Shared>>, pairs: Pairs) -> Result<Json<Value>, ApiError> {
    let p = params(pairs, &["user", "ip", "from", "to", "step"])?;
    let now = (shared.clock)();
    let to = p.time("to", now)?.unwrap_or(now);
    let from = p
        .time("from", now)?
        .unwrap_or(Timestamp(to.0.saturating_sub(DAY_MS)));
    if from >= to {
        return Err(ApiError::parameter("from", "must be before `to`"));
    }
    let step_ms = match p.text("step") {
        None if to.0 - from.0 <= 2 * DAY_MS => HOUR_MS,
        None | Some("day") => DAY_MS,
        Some("hour") => HOUR_MS,
        Some(_) => p
            .duration("step")?
            .map_or(0, |d| d.as_millis() as u64)
            .max(1000),
    };
    if (to.0 - from.0).div_ceil(step_ms) > MAX_STEPS {
        return Err(ApiError::parameter(
            "step",
            format!("more than {MAX_STEPS} steps: take a longer step or a shorter range"),
        ));
    }
    let filter = filter(&p)?;
    let db = shared.db.clone();
    let points = read(&shared, move || {
        let read = Source::Sqlite(db)
            .read(from.0, to.0, &mut |_, _| {})
            .map_err(|err| ApiError::internal(err.to_string()))?;
        let (usage, _, _) = filter.apply(read.rows);
        Ok(steps(&usage, from.0, to.0, step_ms).unwrap_or_default())
    })
    .await?;
    let points: Vec<Value> = points
        .iter()
        .map(|s| json!({"start": Timestamp(s.start_ms).to_string(), "up": s.up, "down": s.down}))
        .collect();
    Ok(Json(json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "step_s": step_ms / 1000,
        "steps": points,
    })))
}

/// `flowtally whois`: `ip` is an address, or a CGNAT public IP:PORT
/// (`protocol` and `vrf` then narrow the NAT bindings asked about).
async fn whois(State(shared): State<Arc<Shared>>, pairs: Pairs) -> Result<Json<Value>, ApiError> {
    let p = params(pairs, &["ip", "at", "protocol", "vrf"])?;
    let now = (shared.clock)();
    let Some(text) = p.text("ip") else {
        return Err(ApiError::parameter(
            "ip",
            "required: the address (or public IP:PORT) to look up",
        ));
    };
    let target: Target = text
        .parse()
        .map_err(|err: String| ApiError::parameter("ip", err))?;
    let number = |name: &'static str, what: &str| -> Result<Option<u32>, ApiError> {
        p.text(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::parameter(name, format!("{v:?} is not {what}")))
            })
            .transpose()
    };
    let protocol = match p.text("protocol") {
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmp") => Some(1),
        _ => number("protocol", "tcp, udp, icmp or a protocol number")?
            .map(|n| u8::try_from(n).map_err(|_| ApiError::parameter("protocol", "0 to 255")))
            .transpose()?,
    };
    let query = PortQuery {
        vrf: number("vrf", "a VRF id")?.unwrap_or(0),
        protocol,
    };
    let at = p.time("at", now)?.unwrap_or(now);
    let db = shared.db.clone();
    let answer = read(&shared, move || {
        crate::whois::lookup(&db, target, query, at)
            .map_err(|err| ApiError::internal(format!("{err:#}")))
    })
    .await?;
    let owner = |o: &Owner| {
        json!({
            "user": o.user_name,
            "session_id": o.session_id,
            "nas": o.nas,
            "from": Timestamp(o.from_ms).to_string(),
            "to": o.to_ms.map(|ms| Timestamp(ms).to_string()),
        })
    };
    Ok(Json(match answer {
        Answer::Address { ip, holder, .. } => json!({
            "ip": ip.to_string(),
            "at": at.to_string(),
            "owner": holder.as_ref().map(owner),
        }),
        Answer::Port {
            public,
            vrf,
            bindings,
            ..
        } => json!({
            "ip": public.to_string(),
            "at": at.to_string(),
            "vrf": vrf,
            "bindings": bindings.iter().map(|b| json!({
                "binding": b.binding,
                "from": Timestamp(b.binding.from_ms).to_string(),
                "to": Timestamp(b.binding.to_ms).to_string(),
                "owner": b.holder.as_ref().map(owner),
            })).collect::<Vec<_>>(),
        }),
    }))
}

/// Sessions that were open at some time in `[from, to)`, newest first.
async fn sessions(
    State(shared): State<Arc<Shared>>,
    pairs: Pairs,
) -> Result<Json<Value>, ApiError> {
    let p = params(pairs, &["user", "ip", "from", "to", "limit"])?;
    let now = (shared.clock)();
    let from = p.time("from", now)?.unwrap_or(Timestamp(0));
    let to = p.time("to", now)?.unwrap_or(Timestamp(u64::MAX));
    if from >= to {
        return Err(ApiError::parameter("from", "must be before `to`"));
    }
    let limit = p.number("limit", 1..=10_000usize)?.unwrap_or(100);
    let filter = filter(&p)?;
    let db = shared.db.clone();
    let (rows, addresses) = read(&shared, move || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|conn| session_store::read(&conn))
                .map_err(|err| ApiError::internal(format!("{}: {err}", db.display())))?;
        let (_, sessions, addresses) = filter.apply((Vec::new(), conn.0, conn.1));
        Ok((sessions, addresses))
    })
    .await?;
    let mut rows: Vec<SessionRow> = rows
        .into_iter()
        .filter(|s| s.start_ms < to.0 && s.stop_ms.is_none_or(|stop| stop > from.0))
        .collect();
    rows.sort_unstable_by(|a, b| b.start_ms.cmp(&a.start_ms).then(b.id.cmp(&a.id)));
    let more = rows.len() > limit;
    rows.truncate(limit);
    let sessions: Vec<Value> = rows.iter().map(|s| session(s, &addresses)).collect();
    Ok(Json(json!({ "sessions": sessions, "more": more })))
}

fn session(s: &SessionRow, addresses: &[AddressRow]) -> Value {
    let time = |ms: u64| Timestamp(ms).to_string();
    let held: Vec<Value> = addresses
        .iter()
        .filter(|a| a.session == s.id)
        .map(
            |a| json!({"net": a.net.to_string(), "from": time(a.from_ms), "to": a.to_ms.map(time)}),
        )
        .collect();
    json!({
        "user": s.user_name,
        "session_id": s.session_id,
        "nas": s.nas,
        "start": time(s.start_ms),
        "stop": s.stop_ms.map(time),
        "last_update": time(s.last_update_ms),
        "addresses": held,
        "nas_port_id": s.nas_port_id,
        "calling_station_id": s.calling_station_id,
        "input_octets": s.input_octets,
        "output_octets": s.output_octets,
        "terminate_cause": s.terminate_cause,
    })
}

/// Per exporter: last heard from, what it sent, its templates, and the
/// exports estimated lost on the way since start (sequence tracking).
async fn exporters(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let now = (shared.clock)();
    let (seen, untracked) = shared.metrics.exporters.snapshot();
    let mut templates = (shared.templates)();
    let mut losses = shared.metrics.integrity.totals();
    let mut list: Vec<Value> = seen
        .iter()
        .map(|(ip, e)| {
            let (held, compiled) = templates.remove(ip).unwrap_or_default();
            let loss = losses.remove(ip).unwrap_or_default();
            json!({
                "exporter": ip.to_string(),
                "last_seen": Timestamp(e.last_seen_ms).to_string(),
                "seconds_since": now.0.saturating_sub(e.last_seen_ms) / 1000,
                "datagrams": e.datagrams,
                "records": e.records,
                "bytes": e.bytes,
                "templates": held,
                "templates_compiled": compiled,
                "estimated_loss": { "records": loss.records, "exports": loss.exports },
                "restarts": loss.restarts,
            })
        })
        .collect();
    // Templates restored from disk for exporters not heard from since.
    list.extend(templates.into_iter().map(|(ip, (held, compiled))| {
        json!({
            "exporter": ip.to_string(),
            "last_seen": null,
            "seconds_since": null,
            "datagrams": 0,
            "records": 0,
            "bytes": 0,
            "templates": held,
            "templates_compiled": compiled,
            "estimated_loss": null,
            "restarts": null,
        })
    }));
    Json(json!({ "exporters": list, "untracked_datagrams": untracked }))
}

/// The top talkers of the latest flushes.
async fn top(State(shared): State<Arc<Shared>>, pairs: Pairs) -> Result<Json<Value>, ApiError> {
    let p = params(pairs, &["by", "window", "limit"])?;
    let key = p
        .choice("by", &[("user", TalkerKey::User), ("ip", TalkerKey::Ip)])?
        .unwrap_or(TalkerKey::User);
    let window = p
        .duration("window")?
        .map_or(300_000, |d| d.as_millis() as u64);
    if window == 0 || window > MAX_WINDOW_MS {
        return Err(ApiError::parameter(
            "window",
            format!("from 1s to {}m", MAX_WINDOW_MS / 60_000),
        ));
    }
    let limit = p.number("limit", 1..=1000usize)?.unwrap_or(10);
    let now = (shared.clock)();
    let ranking = shared.metrics.talkers.top(key, window, now.0, limit);
    let column = match key {
        TalkerKey::User => "user",
        TalkerKey::Ip => "ip",
    };
    let talkers: Vec<Value> = ranking
        .talkers
        .iter()
        .map(|t| {
            json!({
                column: t.name,
                "bytes_up": t.bytes[0],
                "bytes_down": t.bytes[1],
                "bytes": t.bytes[0] + t.bytes[1],
            })
        })
        .collect();
    Ok(Json(json!({
        "window_s": window / 1000,
        "flushes": ranking.flushes,
        "since": ranking.since_ms.map(|ms| Timestamp(ms).to_string()),
        "exact": ranking.exact,
        "top": talkers,
    })))
}
