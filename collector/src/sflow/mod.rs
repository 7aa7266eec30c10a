//! sFlow v5 (sans-IO): the datagram's wire format ([`wire`]), its flow
//! samples decoded into flow records by the rules the XDP program shares
//! (`flowtally_common::sflow`, see there), and per-source bookkeeping for
//! the integrity audit ([`sources`]).

pub mod decode;
pub mod fixtures;
pub mod fuzz;
pub mod kernel_model;
pub mod sources;
pub mod wire;

use flowtally_common::agg::Ip;

pub use decode::{Decoded, decode};
pub use wire::InterfaceCounters;

/// A counter sample's interface counters, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCounters {
    pub agent: Ip,
    /// Arrival time, Unix ms.
    pub time_ms: u64,
    pub counters: InterfaceCounters,
}
pub use sources::{SourceHealth, Sources};
pub use wire::{Datagram, Invalid};

#[cfg(test)]
mod tests;
