//! Where usage, sessions and NAT bindings are stored.

pub mod clickhouse;
pub mod integrity;
pub mod nat_store;
pub mod quota_store;
pub mod runs;
pub mod session_store;
pub mod sflow_health;
pub mod sqlite;
