//! flowtally: per-user network usage from flow exports parsed in XDP and
//! RADIUS accounting.

pub mod aggregate;
pub mod associate;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod ip;
pub mod metrics;
pub mod netflow;
pub mod radius;
pub mod report;
pub mod sessions;
pub mod sink;
pub mod subscribers;
pub mod timestamp;
pub mod usage;
pub mod whois;
pub mod xdp;
