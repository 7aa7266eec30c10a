//! flowtally: per-user network usage from flow exports parsed in XDP and
//! RADIUS accounting.

pub mod aggregate;
pub mod associate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod flow_socket;
pub mod flush;
pub mod ip;
pub mod metrics;
pub mod netflow;
pub mod privileges;
pub mod radius;
pub mod report;
pub mod sessions;
pub mod sink;
pub mod subscribers;
pub mod templates_file;
pub mod timestamp;
pub mod usage;
pub mod whois;
pub mod xdp;
