//! `flowtally whois IP --at TIME --db PATH` and `/api/v1/whois`: who held
//! an address at a moment, from the session history in the database.

use std::{net::IpAddr, path::Path};

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};

use crate::{
    sessions::{History, Owner},
    sink::session_store,
    timestamp::Timestamp,
};

/// The session that held `ip` at `at`, if any.
pub fn lookup(db: &Path, ip: IpAddr, at: Timestamp) -> anyhow::Result<Option<Owner>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open database {}", db.display()))?;
    let (sessions, addresses) = session_store::read(&conn)
        .with_context(|| format!("cannot read the session history of {}", db.display()))?;
    Ok(History::from_rows(sessions, addresses).whois(ip, at.0))
}

/// The answer, as one line for people.
pub fn whois(db: &Path, ip: IpAddr, at: Timestamp) -> anyhow::Result<String> {
    Ok(match lookup(db, ip, at)? {
        Some(owner) => format!(
            "{ip} at {at}: {} (session {} on NAS {}), held from {} to {}",
            owner.user_name,
            owner.session_id,
            owner.nas,
            Timestamp(owner.from_ms),
            owner
                .to_ms
                .map_or("now (still open)".to_owned(), |ms| Timestamp(ms)
                    .to_string()),
        ),
        None => format!("{ip} at {at}: nobody held this address"),
    })
}
