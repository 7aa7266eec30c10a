//! Flow export codecs (sans-IO): bytes in, records or a precise error out.

pub mod encode;
pub mod fuzz;
mod layout;
pub mod layouts;
pub mod nat;
mod options;
mod persist;
pub mod sets;
pub mod template;
pub mod v5;

#[cfg(test)]
mod oracle_tests;

pub use template::{
    DecodeError, Expired, Limits, PendingCounts, Rejected, Rejection, Report, RestoreError,
    TemplateCache, TemplateChange, TemplateCounts,
};
