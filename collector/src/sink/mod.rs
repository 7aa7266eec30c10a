//! Where usage and sessions are stored.

pub mod session_store;
pub mod sqlite;
