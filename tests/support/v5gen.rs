//! Generated NetFlow v5 exports with known totals.

use std::collections::BTreeMap;

use flowtally::netflow::v5::{Record, encode};
use flowtally_common::{agg::Direction, v5::Header};

/// The subscriber network the generated traffic is built around.
pub const SUBSCRIBERS: &str = "198.18.100.0/24";
pub const EXPORTERS: [[u8; 4]; 2] = [[198, 18, 0, 1], [198, 18, 0, 5]];

pub use flowtally::rng::Rng;

pub struct Export {
    pub exporter: [u8; 4],
    pub header: Header,
    pub records: Vec<Record>,
}

impl Export {
    pub fn bytes(&self) -> Vec<u8> {
        encode(&self.header, &self.records)
    }

    pub fn sampling(&self) -> u64 {
        u64::from(self.header.sampling & 0x3fff).max(1)
    }
}

/// Exports from two exporters: subscribers up and down, traffic between
/// subscribers, transit, several protocols and ports, times spread over a
/// few minutes (so over several buckets), some sampled 1 in 10.
pub fn exports(n: usize, seed: u64) -> Vec<Export> {
    let mut rng = Rng(seed);
    let address = |rng: &mut Rng| match rng.below(3) {
        0 | 1 => [198, 18, 100, 1 + rng.below(20) as u8],
        _ => [198, 19, 0, 1 + rng.below(10) as u8],
    };
    (0..n)
        .map(|i| {
            let sys_uptime = 600_000 + i as u32 * 1_000;
            let records = (0..1 + rng.below(30))
                .map(|_| {
                    let last = sys_uptime - rng.below(180_000) as u32;
                    Record {
                        src: address(&mut rng),
                        dst: address(&mut rng),
                        packets: 1 + rng.below(100) as u32,
                        octets: 40 + rng.below(100_000) as u32,
                        first: last - rng.below(30_000) as u32,
                        last,
                        src_port: rng.below(65_536) as u16,
                        dst_port: [53, 80, 443][rng.below(3) as usize],
                        protocol: [6, 17, 1][rng.below(3) as usize],
                        ..Record::default()
                    }
                })
                .collect();
            Export {
                exporter: EXPORTERS[i % 2],
                header: Header {
                    version: 5,
                    sys_uptime,
                    unix_secs: 1_700_000_000 + i as u32,
                    unix_nsecs: rng.below(1_000_000_000) as u32,
                    sampling: if i % 5 == 0 { 0x4000 | 10 } else { 0 },
                    ..Header::default()
                },
                records,
            }
        })
        .collect()
}

/// Bytes per direction computed from the records alone, independently of
/// flowtally's code: the expected output.
pub fn expected_bytes(exports: &[Export]) -> BTreeMap<Direction, u64> {
    let inside = |ip: [u8; 4]| ip[..3] == [198, 18, 100];
    let mut bytes = BTreeMap::new();
    for export in exports {
        for r in &export.records {
            let octets = u64::from(r.octets) * export.sampling();
            let (src, dst) = (inside(r.src), inside(r.dst));
            if src {
                *bytes.entry(Direction::Up).or_default() += octets;
            }
            if dst {
                *bytes.entry(Direction::Down).or_default() += octets;
            }
            if !src && !dst {
                *bytes.entry(Direction::Transit).or_default() += octets;
            }
        }
    }
    bytes
}
