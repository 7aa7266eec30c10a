//! RADIUS accounting, sans-IO: the codec (datagrams in, packets, verdicts
//! on their authenticators and typed Accounting-Requests out; responses
//! and, for tests and load generation, requests back to bytes) and the
//! server's decisions (`server`); Dynamic Authorization requests to a NAS
//! and its answers (`coa`, RFC 5176). The socket loops are the daemon's.

pub mod accounting;
pub mod attributes;
pub mod auth;
pub mod clients;
pub mod coa;
pub mod codec;
pub mod dedup;
mod fuzz;
pub mod limiter;
pub mod nas_bounds;
pub mod server;

#[cfg(test)]
mod radclient_tests;

pub use accounting::{AccountingError, AccountingRequest, StatusType, VendorSpecific};
pub use auth::AuthError;
pub use codec::{Attribute, Code, DecodeError, EncodeError, Packet};
pub use fuzz::fuzz_decode;
