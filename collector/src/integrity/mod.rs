//! Billing integrity (sans-IO): whether flowtally received everything its
//! exporters sent (`sequence`), and how flow bytes compare with interface
//! counters (`audit`).

pub mod audit;
pub mod command;
pub mod sequence;
