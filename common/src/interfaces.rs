//! Flow bytes per interface, to compare with the interface's own octet
//! counters (SNMP IF-MIB, sFlow counter samples). Both paths count a
//! record as input on the interface it entered by and, if different, as
//! output on the one it left by, for the interfaces userspace lists (the
//! billed ones).

use crate::{Counter, agg::FlowRecord};

/// Per-CPU cumulative flow counters (`PerCpuHashMap<agg::ScopeKey,
/// InterfaceFlows>`, sampling-scaled per the flags), consulted only when
/// [`crate::agg::FLAG_INTERFACE_FLOWS`] is set. Userspace creates every
/// key; the kernel only adds to them.
pub const INTERFACE_FLOWS_MAP: &str = "INTERFACE_FLOWS";
pub const MAX_INTERFACES: u32 = 4096;

/// Flows in and out of one interface: `count` is packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceFlows {
    pub input: Counter,
    pub output: Counter,
}

impl core::ops::Add for InterfaceFlows {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            input: self.input + other.input,
            output: self.output + other.output,
        }
    }
}

/// Which way a record crossed an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// The interfaces `record` counts on: where it came in, and where it went
/// out when that is another one (a record whose input and output are the
/// same interface, as a probe like softflowd exports them, counts once, as
/// input: it was seen arriving there).
#[inline(always)]
pub fn touched(record: &FlowRecord) -> [Option<(u32, Side)>; 2] {
    let output = if record.output_if != record.input_if {
        Some((record.output_if, Side::Output))
    } else {
        None
    };
    [Some((record.input_if, Side::Input)), output]
}

impl InterfaceFlows {
    /// Adds `record` on `side`.
    #[inline(always)]
    pub fn add(&mut self, side: Side, record: &FlowRecord) {
        let counter = match side {
            Side::Input => &mut self.input,
            Side::Output => &mut self.output,
        };
        counter.count += record.packets;
        counter.bytes += record.bytes;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, four u64s, no padding, any bit pattern valid.
    unsafe impl aya::Pod for super::InterfaceFlows {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_once_per_interface_it_touched() {
        let record = |input_if, output_if| FlowRecord {
            input_if,
            output_if,
            ..FlowRecord::default()
        };
        assert_eq!(
            touched(&record(3, 7)),
            [Some((3, Side::Input)), Some((7, Side::Output))]
        );
        assert_eq!(touched(&record(3, 3)), [Some((3, Side::Input)), None]);
    }
}
