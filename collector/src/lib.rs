//! flowtally: per-user network usage from flow exports parsed in XDP and
//! RADIUS accounting.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod flow_socket;
pub mod metrics;
pub mod sink;
pub mod xdp;
