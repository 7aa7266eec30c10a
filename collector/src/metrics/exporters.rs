//! What the daemon knows of each flow exporter right now, for
//! `/api/v1/exporters`: when it was last heard from and what it sent.
//!
//! Two sources, one table: datagrams, each at the time userspace learns of
//! it (the socket path receives it, or the XDP program aggregated it and
//! noted it in its `EXPORTS` ring); and each flush, which sees the
//! aggregates of both paths, whose key keeps the exporter unless the
//! aggregation profile drops it. Bounded: at most
//! [`MAX_EXPORTERS`] are tracked (datagrams from spoofed sources must not
//! grow it); the rest are counted together.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::usage::UsageRow;

pub const MAX_EXPORTERS: usize = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exporter {
    /// Unix ms of the last datagram or flushed aggregate.
    pub last_seen_ms: u64,
    /// Datagrams received on the socket path (whole or rejected later) or
    /// aggregated by the XDP program (an export the ring had no room to
    /// note went up to the socket path instead).
    pub datagrams: u64,
    /// Flow records and bytes in the flushed aggregates: a record between
    /// two subscribers counts once for each, as in `usage`.
    pub records: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Exporters {
    inner: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    exporters: BTreeMap<IpAddr, Exporter>,
    /// Datagrams from exporters beyond [`MAX_EXPORTERS`].
    untracked_datagrams: u64,
}

impl Exporters {
    /// One datagram from `exporter`, received at `now_ms`.
    pub fn datagram(&self, exporter: IpAddr, now_ms: u64) {
        let mut table = self.inner.lock().expect("exporters lock poisoned");
        match table.entry(exporter) {
            Some(entry) => {
                entry.datagrams += 1;
                entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
            }
            None => table.untracked_datagrams += 1,
        }
    }

    /// The rows of a flush written at `now_ms`.
    pub fn flushed(&self, rows: &[UsageRow], now_ms: u64) {
        let mut table = self.inner.lock().expect("exporters lock poisoned");
        for row in rows {
            let Some(exporter) = row.exporter else {
                continue;
            };
            if let Some(entry) = table.entry(exporter) {
                entry.records += row.flows;
                entry.bytes += row.bytes;
                entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
            }
        }
    }

    /// Every exporter tracked, by address, and the datagrams of those not.
    pub fn snapshot(&self) -> (Vec<(IpAddr, Exporter)>, u64) {
        let table = self.inner.lock().expect("exporters lock poisoned");
        (
            table.exporters.iter().map(|(ip, e)| (*ip, *e)).collect(),
            table.untracked_datagrams,
        )
    }
}

impl Table {
    /// The exporter's entry; none when it is new and the table is full.
    fn entry(&mut self, exporter: IpAddr) -> Option<&mut Exporter> {
        if !self.exporters.contains_key(&exporter) && self.exporters.len() >= MAX_EXPORTERS {
            return None;
        }
        Some(self.exporters.entry(exporter).or_default())
    }
}

#[cfg(test)]
mod tests {
    use flowtally_common::agg::Direction;

    use super::*;

    fn row(exporter: Option<&str>, bytes: u64, flows: u64) -> UsageRow {
        UsageRow {
            exporter: exporter.map(|e| e.parse().unwrap()),
            flows,
            ..UsageRow::bare(0, "100.64.0.1".parse().unwrap(), Direction::Down, bytes)
        }
    }

    #[test]
    fn datagrams_and_flushes_add_up_per_exporter() {
        let exporters = Exporters::default();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        exporters.datagram(a, 1_000);
        exporters.datagram(a, 3_000);
        exporters.flushed(
            &[
                row(Some("198.18.0.1"), 100, 2),
                row(Some("198.18.0.2"), 50, 1),
                row(Some("198.18.0.1"), 10, 1),
                row(None, 7, 1),
            ],
            2_000,
        );
        let (all, untracked) = exporters.snapshot();
        assert_eq!(untracked, 0);
        assert_eq!(
            all,
            vec![
                (
                    a,
                    Exporter {
                        last_seen_ms: 3_000,
                        datagrams: 2,
                        records: 3,
                        bytes: 110,
                    }
                ),
                (
                    "198.18.0.2".parse().unwrap(),
                    Exporter {
                        last_seen_ms: 2_000,
                        datagrams: 0,
                        records: 1,
                        bytes: 50,
                    }
                ),
            ]
        );
    }

    #[test]
    fn beyond_the_bound_datagrams_are_counted_together() {
        let exporters = Exporters::default();
        for i in 0..MAX_EXPORTERS as u32 + 10 {
            exporters.datagram(IpAddr::from(i.to_be_bytes()), 1);
        }
        let (all, untracked) = exporters.snapshot();
        assert_eq!(all.len(), MAX_EXPORTERS);
        assert_eq!(untracked, 10);
    }
}
