//! Where usage and sessions are stored.

pub mod sqlite;
