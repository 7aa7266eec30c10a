//! Where usage and sessions are stored.

pub mod clickhouse;
pub mod integrity;
pub mod runs;
pub mod session_store;
pub mod sflow_health;
pub mod sqlite;
