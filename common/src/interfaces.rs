//! Flow bytes per interface, to compare with the interface's own octet
//! counters (SNMP IF-MIB, sFlow counter samples). Both paths count a
//! record on the interface it entered by and, if different, the one it
//! left by, for the interfaces userspace lists (the billed ones).

use crate::agg::FlowRecord;

/// Per-CPU cumulative flow counters (`PerCpuHashMap<agg::ScopeKey,
/// Counter>`: `count` is packets, `bytes` octets, sampling-scaled per the
/// flags), consulted only when [`crate::agg::FLAG_INTERFACE_FLOWS`] is set.
/// Userspace creates every key; the kernel only adds to them.
pub const INTERFACE_FLOWS_MAP: &str = "INTERFACE_FLOWS";
pub const MAX_INTERFACES: u32 = 4096;

/// The interfaces `record` counts on: where it came in, and where it went
/// out when that is another one (a record whose input and output are the
/// same interface, as softflowd exports, counts on it once).
#[inline(always)]
pub fn touched(record: &FlowRecord) -> [Option<u32>; 2] {
    let output = if record.output_if != record.input_if {
        Some(record.output_if)
    } else {
        None
    };
    [Some(record.input_if), output]
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
        assert_eq!(touched(&record(3, 7)), [Some(3), Some(7)]);
        assert_eq!(touched(&record(3, 3)), [Some(3), None]);
    }
}
