//! The ClickHouse sink: the `usage` and `sessions` rows SQLite has, in
//! ClickHouse tables of the same names, shared by several instances.
//!
//! SQLite is the spool. Usage rows are delivered in `rowid` order and
//! session rows in `changed` order, with the last delivered number of each
//! kept in `clickhouse_progress`; nothing is in flight only in memory, so a
//! ClickHouse outage, a crash or a restart leaves the undelivered rows where
//! they were written, and delivery resumes from there.
//!
//! Exactly once:
//! - `usage` rows carry `(writer, local_id)`: this database's random writer
//!   id and the row's SQLite `rowid`. After a failed or interrupted INSERT
//!   (which may have landed anyway), the next attempt first asks ClickHouse
//!   which of the batch's ids it has and sends only the others. The table is
//!   a ReplacingMergeTree whose key ends in `(writer, local_id)` as well, so
//!   even a duplicate made by an INSERT that landed after its timeout folds
//!   away, and reports read it with FINAL.
//! - `sessions` and `session_addresses` rows are states: ReplacingMergeTree
//!   by their natural key, the newest `version` wins, so sending one twice,
//!   or from several instances, changes nothing.

mod connect;
mod deliver;
mod metrics;
mod rows;
mod schema;
mod spool;

pub use connect::{Endpoint, client};
pub use deliver::{Deliverer, Stop};
pub use metrics::ClickHouseMetrics;
pub use spool::{Source, Spool};
