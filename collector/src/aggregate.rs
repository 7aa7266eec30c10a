//! The socket path's aggregation, and the table that both paths' aggregates
//! meet in before they are written. Sans-IO: no sockets, no clock.

use std::collections::{HashMap, HashSet};

use flowtally_common::{
    agg::{AggKey, AggValue, FlowRecord, Ip, Profile, ScopeKey, directions, in_scope, peer},
    interfaces::{self, touched},
    v5::{Header, Invalid},
};

use crate::{classes::ClassNets, netflow::v5::Export, subscribers::SubscriberNets};

/// Aggregates keyed as the kernel keys them.
pub type Table = HashMap<AggKey, AggValue>;

/// Flows in and out of each listed interface.
pub type InterfaceFlows = HashMap<ScopeKey, interfaces::InterfaceFlows>;

/// What one export contributed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub records: u64,
    pub bytes: u64,
    /// Of those, outside the billing scope (not aggregated).
    pub out_of_scope_records: u64,
    pub out_of_scope_bytes: u64,
    /// The export's header (for its sequence number).
    pub header: Header,
}

/// Folds decoded records into a [`Table`] with the same rules as the XDP
/// program (`flowtally_common::agg`).
#[derive(Debug)]
pub struct Aggregator {
    profile: Profile,
    flags: u32,
    subscribers: SubscriberNets,
    /// Destination classes of peers (empty: none configured).
    classes: ClassNets,
    /// `None`: everything counts.
    scope: Option<HashSet<ScopeKey>>,
    table: Table,
    /// Flows per listed interface (keys are the listed ones).
    interfaces: InterfaceFlows,
}

impl Aggregator {
    pub fn new(profile: Profile, flags: u32, subscribers: SubscriberNets) -> Self {
        Self {
            profile,
            flags,
            subscribers,
            classes: ClassNets::default(),
            scope: None,
            table: Table::new(),
            interfaces: InterfaceFlows::new(),
        }
    }

    /// Counts flow bytes on these interfaces (as the kernel does with
    /// `INTERFACE_FLOWS`).
    pub fn with_interfaces(mut self, interfaces: &[ScopeKey]) -> Self {
        self.interfaces = interfaces
            .iter()
            .map(|key| (*key, interfaces::InterfaceFlows::default()))
            .collect();
        self
    }

    /// Keys each aggregate by its peer's destination class too.
    pub fn with_classes(mut self, classes: ClassNets) -> Self {
        self.classes = classes;
        self
    }

    /// Bills only records inside `scope` (none: everything counts).
    pub fn with_scope(mut self, scope: &[ScopeKey]) -> Self {
        self.scope = (!scope.is_empty()).then(|| scope.iter().copied().collect());
        self
    }

    /// Decodes a NetFlow v5 datagram from `exporter` and aggregates all of
    /// its records, or none of them.
    pub fn add_v5(&mut self, exporter: &Ip, datagram: &[u8]) -> Result<Added, Invalid> {
        let export = Export::decode(datagram)?;
        let mut added = Added {
            header: export.header,
            ..Added::default()
        };
        for raw in export.records() {
            let record = export.header.record(&raw, self.flags);
            added.records += 1;
            added.bytes += record.bytes;
            if !self.add(exporter, &record) {
                added.out_of_scope_records += 1;
                added.out_of_scope_bytes += record.bytes;
            }
        }
        Ok(added)
    }

    /// The flags records are decoded with (sampling, record time).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Aggregates one decoded record from `exporter` in every direction it
    /// belongs to; false (and nothing aggregated) when it is outside the
    /// billing scope.
    pub fn add(&mut self, exporter: &Ip, record: &FlowRecord) -> bool {
        if !self.interfaces.is_empty() {
            for (ifindex, side) in touched(record).into_iter().flatten() {
                let key = ScopeKey {
                    exporter: *exporter,
                    ifindex,
                };
                if let Some(flows) = self.interfaces.get_mut(&key) {
                    flows.add(side, record);
                }
            }
        }
        if let Some(scope) = &self.scope
            && !in_scope(|key| scope.contains(key), exporter, record)
        {
            return false;
        }
        let value = record.value();
        let inside = |ip| self.subscribers.contains(ip);
        let [first, second] = directions(inside(&record.src), inside(&record.dst));
        let bucket = self.profile.bucket_start(record.time_ms);
        for dir in [first, second].into_iter().flatten() {
            let class = self.classes.class_of(peer(record, dir));
            let key = self.profile.key(record, dir, exporter, class, bucket);
            merge(&mut self.table, key, &value);
        }
        true
    }

    /// Adds an aggregate the kernel made (read from its overflow ring).
    pub fn absorb(&mut self, key: AggKey, value: &AggValue) {
        merge(&mut self.table, key, value);
    }

    /// Everything aggregated since the last call.
    pub fn take(&mut self) -> Table {
        std::mem::take(&mut self.table)
    }

    /// Flows per listed interface since the last call.
    pub fn take_interfaces(&mut self) -> InterfaceFlows {
        self.interfaces
            .iter_mut()
            .map(|(key, counter)| (*key, std::mem::take(counter)))
            .collect()
    }
}

pub fn merge(table: &mut Table, key: AggKey, value: &AggValue) {
    table.entry(key).or_default().merge(value);
}

#[cfg(test)]
mod tests {
    use flowtally_common::{
        agg::{Direction, FLAG_SCALE_SAMPLING, KEEP_ALL},
        v5::Header,
    };

    use super::*;
    use crate::{
        ip::to_ip,
        netflow::v5::{Record, encode},
    };

    fn aggregator(keep: u32) -> Aggregator {
        Aggregator::new(
            Profile {
                keep,
                bucket_ms: 60_000,
            },
            FLAG_SCALE_SAMPLING,
            SubscriberNets::new(&["198.18.100.0/24".parse().unwrap()]),
        )
    }

    fn export(records: &[Record]) -> Vec<u8> {
        let header = Header {
            version: 5,
            sys_uptime: 10_000,
            unix_secs: 1_700_000_000,
            ..Header::default()
        };
        encode(&header, records)
    }

    fn flow(src: [u8; 4], dst: [u8; 4], octets: u32) -> Record {
        Record {
            src,
            dst,
            octets,
            packets: 1,
            last: 10_000,
            ..Record::default()
        }
    }

    #[test]
    fn records_split_into_up_down_and_transit() {
        let mut agg = aggregator(0);
        let exporter = to_ip("198.18.0.1".parse().unwrap());
        let datagram = export(&[
            flow([198, 18, 100, 1], [198, 19, 0, 1], 100), // up for .1
            flow([198, 19, 0, 1], [198, 18, 100, 1], 1000), // down for .1
            flow([198, 18, 100, 1], [198, 18, 100, 2], 10), // up .1 and down .2
            flow([198, 19, 0, 1], [198, 19, 0, 2], 7),     // transit
        ]);
        let added = agg.add_v5(&exporter, &datagram).unwrap();
        assert_eq!((added.records, added.bytes), (4, 1117));
        assert_eq!(added.out_of_scope_records, 0);
        let table = agg.take();
        let bytes = |ip: &str, dir: Direction| {
            table
                .iter()
                .filter(|(k, _)| {
                    k.subscriber == to_ip(ip.parse().unwrap()) && k.direction == dir as u8
                })
                .map(|(_, v)| v.bytes)
                .sum::<u64>()
        };
        assert_eq!(bytes("198.18.100.1", Direction::Up), 110);
        assert_eq!(bytes("198.18.100.1", Direction::Down), 1000);
        assert_eq!(bytes("198.18.100.2", Direction::Down), 10);
        assert_eq!(bytes("198.19.0.1", Direction::Transit), 7);
        assert!(agg.take().is_empty(), "take empties the table");
    }

    #[test]
    fn the_same_key_adds_up() {
        let mut agg = aggregator(KEEP_ALL);
        let exporter = to_ip("198.18.0.1".parse().unwrap());
        let datagram = export(&[flow([198, 18, 100, 1], [198, 19, 0, 1], 100)]);
        agg.add_v5(&exporter, &datagram).unwrap();
        agg.add_v5(&exporter, &datagram).unwrap();
        let table = agg.take();
        assert_eq!(table.len(), 1);
        let value = table.values().next().unwrap();
        assert_eq!((value.bytes, value.packets, value.flows), (200, 2, 2));
    }

    #[test]
    fn an_invalid_export_adds_nothing() {
        let mut agg = aggregator(KEEP_ALL);
        let mut datagram = export(&[flow([198, 18, 100, 1], [198, 19, 0, 1], 100)]);
        datagram.push(0);
        assert_eq!(
            agg.add_v5(&[0; 16], &datagram),
            Err(Invalid::LengthMismatch)
        );
        assert!(agg.take().is_empty());
    }
}
